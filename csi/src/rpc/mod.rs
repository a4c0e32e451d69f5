//! The gRPC services (identity, controller, node) and the server that serves them. Handlers
//! are thin; every call runs through [`call`]: a span with the operation and volume id, the
//! metric, and the one error → code mapping ([`crate::Error::to_status`]).

pub mod controller;
pub mod identity;
pub mod node;
pub mod server;

use std::time::Instant;

use tonic::{Response, Status};
use tracing::Instrument;

use crate::error::{Error, Result};
use crate::host::step::ms;

pub use controller::ControllerService;
pub use identity::IdentityService;
pub use node::NodeService;

/// A required string field of a request (empty: INVALID_ARGUMENT).
pub(crate) fn required<'a>(value: &'a str, field: &str) -> Result<&'a str> {
    if value.is_empty() {
        Err(Error::invalid(format!("{field} is required")))
    } else {
        Ok(value)
    }
}

/// Runs one call: a span with the operation and volume id on every log line, the metric, and
/// the one error mapping.
pub(crate) async fn call<T>(
    op: &'static str,
    volume: &str,
    fut: impl std::future::Future<Output = Result<T>>,
) -> std::result::Result<Response<T>, Status> {
    let span = tracing::info_span!("csi", op, volume_id = %volume);
    let start = Instant::now();
    let res = fut.instrument(span.clone()).await;
    let code = match &res {
        Ok(_) => tonic::Code::Ok,
        Err(e) => e.kind().code(),
    };
    crate::metrics::operation(op, start.elapsed(), code);
    span.in_scope(|| match &res {
        Ok(_) => tracing::debug!(elapsed_ms = ms(start), "ok"),
        Err(e) => tracing::warn!(code = ?code, error = %e.display_chain(), "failed"),
    });
    res.map(Response::new).map_err(|e| e.to_status())
}

//! Prometheus metrics (`--metrics-address`), through the `metrics` facade and its Prometheus
//! exporter. Names are prefixed `onmetal_csi_`:
//! - `onmetal_csi_operation_duration_seconds{operation,code}`: every CSI call, by result code;
//! - `onmetal_csi_kms_request_duration_seconds{operation}` and
//!   `onmetal_csi_kms_errors_total{operation,class}`: wrap/unwrap round trips and failures by
//!   class (unavailable, denied, not found, integrity, invalid configuration);
//! - `onmetal_csi_staged_encrypted_volumes`: encrypted volumes open on this node.

use std::net::SocketAddr;
use std::time::Duration;

use metrics_exporter_prometheus::PrometheusBuilder;

use crate::error::{Error, Result};

/// Starts the exporter's HTTP listener on `addr` (serves `/metrics`).
pub fn install(addr: SocketAddr) -> Result<()> {
    PrometheusBuilder::new()
        .with_http_listener(addr)
        .install()
        .map_err(|e| Error::invalid(format!("--metrics-address {addr}: {e}")))?;
    describe();
    Ok(())
}

fn describe() {
    metrics::describe_histogram!(
        "onmetal_csi_operation_duration_seconds",
        metrics::Unit::Seconds,
        "CSI call latency by operation and gRPC result code"
    );
    metrics::describe_histogram!(
        "onmetal_csi_kms_request_duration_seconds",
        metrics::Unit::Seconds,
        "KMS wrap/unwrap round trip latency"
    );
    metrics::describe_counter!(
        "onmetal_csi_kms_errors_total",
        "KMS request failures by error class"
    );
    metrics::describe_gauge!(
        "onmetal_csi_staged_encrypted_volumes",
        "Encrypted volumes staged (open) on this node"
    );
}

/// Records one CSI call.
pub fn operation(op: &'static str, elapsed: Duration, code: tonic::Code) {
    metrics::histogram!(
        "onmetal_csi_operation_duration_seconds",
        "operation" => op,
        "code" => format!("{code:?}"),
    )
    .record(elapsed.as_secs_f64());
}

/// Records one KMS request.
pub fn kms_request(op: &'static str, elapsed: Duration, err: Option<&kms::Error>) {
    metrics::histogram!("onmetal_csi_kms_request_duration_seconds", "operation" => op)
        .record(elapsed.as_secs_f64());
    if let Some(e) = err {
        metrics::counter!(
            "onmetal_csi_kms_errors_total",
            "operation" => op,
            "class" => e.kind().as_str(),
        )
        .increment(1);
    }
}

/// Sets the number of encrypted volumes open on this node.
pub fn staged_encrypted(count: usize) {
    metrics::gauge!("onmetal_csi_staged_encrypted_volumes").set(count as f64);
}

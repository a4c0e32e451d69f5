//! `onmetal-csi-driver serve`: the gRPC services on a Unix socket.

use std::net::SocketAddr;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::net::UnixListener;
use tokio_stream::wrappers::UnixListenerStream;
use tracing::{info, warn};

use super::controller::ControllerService;
use super::identity::IdentityService;
use super::node::NodeService;
use crate::driver::Driver;
use crate::error::{Error, Result};
use crate::proto::controller_server::ControllerServer;
use crate::proto::identity_server::IdentityServer;
use crate::proto::node_server::NodeServer;

/// The socket path of a `unix://` endpoint (`unix:///csi/csi.sock` or `unix:/csi/csi.sock`).
pub fn socket_path(endpoint: &str) -> Result<PathBuf> {
    let rest = endpoint
        .strip_prefix("unix://")
        .or_else(|| endpoint.strip_prefix("unix:"))
        .ok_or_else(|| {
            Error::invalid(format!(
                "--endpoint {endpoint:?}: expected unix:///path/to/csi.sock"
            ))
        })?;
    if !rest.starts_with('/') {
        return Err(Error::invalid(format!(
            "--endpoint {endpoint:?}: the socket path must be absolute"
        )));
    }
    Ok(PathBuf::from(rest))
}

/// Binds the socket, replacing a stale socket file left by a killed process; refuses when
/// another process still answers on it.
pub fn bind(path: &Path) -> Result<UnixListener> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|e| Error::io(format!("creating {}", parent.display()), e))?;
    }
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(Error::invalid(format!(
                "{} exists and is not a socket",
                path.display()
            )));
        }
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(Error::new(
                crate::Kind::AlreadyExists,
                format!("another process serves {}", path.display()),
            ));
        }
        warn!(socket = %path.display(), "replacing a stale socket file");
        std::fs::remove_file(path)
            .map_err(|e| Error::io(format!("removing {}", path.display()), e))?;
    }
    UnixListener::bind(path).map_err(|e| Error::io(format!("binding {}", path.display()), e))
}

/// Serves until SIGTERM or SIGINT.
pub async fn serve(
    driver: Driver,
    endpoint: &str,
    metrics_address: Option<SocketAddr>,
) -> Result<()> {
    if let Some(addr) = metrics_address {
        crate::metrics::install(addr)?;
        info!(%addr, "metrics on /metrics");
    }
    let path = socket_path(endpoint)?;
    let listener = bind(&path)?;
    let mode = driver.mode;
    let driver = Arc::new(driver);
    info!(
        socket = %path.display(),
        driver = %driver.name,
        node_id = %driver.node_id,
        mode = ?mode,
        "serving CSI"
    );
    let mut router = tonic::transport::Server::builder()
        .add_service(IdentityServer::new(IdentityService::new(Arc::clone(
            &driver,
        ))))
        .add_optional_service(
            mode.controller()
                .then(|| ControllerServer::new(ControllerService::new(Arc::clone(&driver)))),
        );
    router = router.add_optional_service(
        mode.node()
            .then(|| NodeServer::new(NodeService::new(Arc::clone(&driver)))),
    );
    let shutdown = async {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending::<()>().await } } => {}
        }
        info!("shutting down (staged volumes stay as they are)");
    };
    router
        .serve_with_incoming_shutdown(UnixListenerStream::new(listener), shutdown)
        .await
        .map_err(|e| Error::internal(format!("gRPC server: {e}")))?;
    let _ = std::fs::remove_file(&path);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        assert_eq!(
            socket_path("unix:///csi/csi.sock").unwrap(),
            PathBuf::from("/csi/csi.sock")
        );
        assert_eq!(
            socket_path("unix:/csi/csi.sock").unwrap(),
            PathBuf::from("/csi/csi.sock")
        );
        assert!(socket_path("tcp://1.2.3.4:5").is_err());
        assert!(socket_path("unix://relative").is_err());
    }

    #[tokio::test]
    async fn stale_socket_is_replaced_live_one_is_not() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("csi.sock");
        // A socket file whose process is gone.
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        assert!(path.exists());
        let live = bind(&path).unwrap();
        // A second server on the same socket is refused while the first listens.
        let err = bind(&path).unwrap_err();
        assert!(err.message().contains("another process"), "{err}");
        drop(live);
        let not_socket = tmp.path().join("file");
        std::fs::write(&not_socket, b"x").unwrap();
        assert!(bind(&not_socket).is_err());
    }
}

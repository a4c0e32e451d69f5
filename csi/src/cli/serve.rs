//! `onmetal-csi-driver serve`: the driver's parts from the flags, then the gRPC services
//! ([`crate::rpc::server::serve`]).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use clap::Args;

use super::{Runtime, runtime};
use crate::driver::{Driver, Mode, crash_points_from_env};
use crate::error::{Error, Result};
use crate::host::mount::SystemMounter;

/// `serve` flags.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The socket: unix:///csi/csi.sock.
    #[arg(long, default_value = "unix:///csi/csi.sock")]
    endpoint: String,
    /// This node's ID (NodeGetInfo).
    #[arg(long)]
    node_id: String,
    /// Which services to serve.
    #[arg(long, value_enum, default_value_t = Mode::All)]
    mode: Mode,
    /// The CSI driver name.
    #[arg(long, default_value = "csi.onmetal.de")]
    driver_name: String,
    /// Where volumes come from: local:DIR (sparse files attached as loop devices) or rbd (Ceph
    /// RBD images; the pool is the StorageClass parameter volume_pool; see --ceph-*).
    #[arg(
        long,
        value_name = "local:DIR|rbd",
        default_value = "local:/var/lib/onmetal-csi/volumes"
    )]
    backend: String,
    /// How to reach Ceph (--backend rbd).
    #[command(flatten)]
    ceph: super::args::CephArgs,
    /// Where wrapped keys live: kube (one Secret per volume in --key-namespace) or dir:DIR
    /// (one 0600 file per volume).
    #[arg(
        long,
        value_name = "kube|dir:DIR",
        default_value = "dir:/var/lib/onmetal-csi/keys"
    )]
    key_store: String,
    /// Namespace of the wrapped-key Secrets (--key-store kube).
    #[arg(long, value_name = "NS", default_value = crate::keystore::kube::DEFAULT_NAMESPACE)]
    key_namespace: String,
    /// Serve Prometheus metrics on HOST:PORT (/metrics).
    #[arg(long)]
    metrics_address: Option<SocketAddr>,
    /// kubelet's directory: node requests' staging, target and volume paths must lie under it
    /// (anything else is refused). Repeat for more than one.
    #[arg(long = "kubelet-dir", value_name = "DIR", default_value = crate::host::paths::DEFAULT_KUBELET_DIR)]
    kubelet_dirs: Vec<PathBuf>,
}

/// Keeps the keys in this process's memory out of core dumps and away from other processes
/// of the same user: not dumpable (`PR_SET_DUMPABLE` 0: no core file, no ptrace attach, its
/// `/proc/PID` files owned by root) and a core-file limit of 0.
pub fn harden_process() -> Result<()> {
    use rustix::process::{DumpableBehavior, Resource, Rlimit, set_dumpable_behavior, setrlimit};
    set_dumpable_behavior(DumpableBehavior::NotDumpable)
        .map_err(|e| Error::io("prctl(PR_SET_DUMPABLE, 0)", e.into()))?;
    setrlimit(
        Resource::Core,
        Rlimit {
            current: Some(0),
            maximum: Some(0),
        },
    )
    .map_err(|e| Error::io("setrlimit(RLIMIT_CORE, 0)", e.into()))
}

/// Builds the driver from the flags and serves until a signal.
pub fn run(a: ServeArgs) -> Result<()> {
    harden_process()?;
    if let Some(d) = a.kubelet_dirs.iter().find(|d| !d.is_absolute()) {
        return Err(Error::invalid(format!(
            "--kubelet-dir {}: not an absolute path",
            d.display()
        )));
    }
    let backend: Arc<dyn crate::backend::Backend> =
        Arc::from(crate::backend::open(&a.backend, &a.ceph.config())?);
    let rt = runtime(Runtime::Server)?;
    let store = rt.block_on(crate::keystore::open(
        &a.key_store,
        &a.key_namespace,
        &a.driver_name,
    ))?;
    let driver = Driver::new(
        a.driver_name,
        a.node_id,
        a.mode,
        backend,
        store,
        Arc::new(SystemMounter),
    )
    .with_hooks(crash_points_from_env())
    .with_paths(crate::host::paths::PathRules::new(a.kubelet_dirs));
    rt.block_on(crate::rpc::server::serve(
        driver,
        &a.endpoint,
        a.metrics_address,
    ))
}

#[cfg(test)]
mod tests {
    use rustix::process::{DumpableBehavior, Resource, dumpable_behavior, getrlimit};

    #[test]
    fn serve_is_not_dumpable_and_writes_no_core() {
        // Process-wide, and harmless for the other tests of this binary.
        super::harden_process().unwrap();
        assert_eq!(dumpable_behavior().unwrap(), DumpableBehavior::NotDumpable);
        let core = getrlimit(Resource::Core);
        assert_eq!((core.current, core.maximum), (Some(0), Some(0)));
    }
}

//! The driver's parts, shared by the three gRPC services: the backend, the key store, the
//! mounter and the per-volume locks.

use std::sync::Arc;

use crate::backend::Backend;
use crate::keystore::KeyStore;
use crate::locks::VolumeLocks;
use crate::mount::Mounter;

/// Which services this process serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// Controller and node (single machine, development, tests).
    All,
    /// Identity + controller (the Deployment).
    Controller,
    /// Identity + node (the DaemonSet).
    Node,
}

impl Mode {
    /// Serves the controller service.
    pub fn controller(self) -> bool {
        matches!(self, Mode::All | Mode::Controller)
    }
    /// Serves the node service.
    pub fn node(self) -> bool {
        matches!(self, Mode::All | Mode::Node)
    }
}

/// See the module documentation.
#[derive(Debug)]
pub struct Driver {
    /// The CSI driver name (`csi.onmetal.de`).
    pub name: String,
    /// This node's ID (NodeGetInfo).
    pub node_id: String,
    /// What this process serves.
    pub mode: Mode,
    /// Where volumes come from.
    pub backend: Arc<dyn Backend>,
    /// Where wrapped keys live.
    pub store: Arc<dyn KeyStore>,
    /// Filesystems and mounts.
    pub mounter: Arc<dyn crate::mount::Mounter>,
    /// One operation per volume.
    pub locks: VolumeLocks,
}

impl Driver {
    /// A driver from its parts.
    pub fn new(
        name: impl Into<String>,
        node_id: impl Into<String>,
        mode: Mode,
        backend: Arc<dyn Backend>,
        store: Arc<dyn KeyStore>,
        mounter: Arc<dyn Mounter>,
    ) -> Self {
        Driver {
            name: name.into(),
            node_id: node_id.into(),
            mode,
            backend,
            store,
            mounter,
            locks: VolumeLocks::default(),
        }
    }
}

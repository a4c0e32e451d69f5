//! The driver's parts, shared by the three gRPC services: the backend, the key store, the
//! mounter, device-mapper, the KMS, the per-volume locks, and the stage's test seam
//! ([`StageHooks`]). Each part is a trait object, so tests swap any of them (fakes live in the
//! `testkit` crate, never in the binary).

use std::sync::Arc;

use crate::backend::Backend;
use crate::crypt::keys::{KeyWrapper, KmsKeys};
use crate::crypt::mapper::{DmMapper, Mapper};
use crate::error::Result;
use crate::host::mount::Mounter;
use crate::host::paths::PathRules;
use crate::keystore::KeyStore;
use crate::locks::VolumeLocks;

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

/// The points of a first stage where a crash leaves a state the next stage must converge from
/// (see [`crate::node::open`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StagePoint {
    /// The wrapped-key record is stored (pending); the device is not formatted yet.
    AfterRecord,
    /// The device is formatted; the record still says pending.
    AfterFormat,
    /// The key is unwrapped and checked; the mapping is not active yet.
    BeforeActivate,
}

impl StagePoint {
    /// Every point, in stage order.
    pub const ALL: [StagePoint; 3] = [
        StagePoint::AfterRecord,
        StagePoint::AfterFormat,
        StagePoint::BeforeActivate,
    ];

    /// `after-record`, `after-format`, `before-activate`.
    pub fn as_str(self) -> &'static str {
        match self {
            StagePoint::AfterRecord => "after-record",
            StagePoint::AfterFormat => "after-format",
            StagePoint::BeforeActivate => "before-activate",
        }
    }
}

/// The stage's test seam: called at each [`StagePoint`]. Production uses [`NoHooks`]; host
/// tests return an error (an injected failure: the stage rolls back) or panic (a crash: nothing
/// is rolled back), and test builds of the binary can abort there ([`crash_points_from_env`]).
pub trait StageHooks: Send + Sync + std::fmt::Debug {
    /// The stage reached `point`.
    fn at(&self, point: StagePoint) -> Result<()>;
}

/// No hooks: every point passes.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoHooks;

impl StageHooks for NoHooks {
    fn at(&self, _point: StagePoint) -> Result<()> {
        Ok(())
    }
}

/// Test builds only (feature `crash-points`, enabled by the test kit, never by a release
/// build): `ONMETAL_CSI_CRASH_AT=<point>` aborts the process at that point, for the VM tests'
/// crash convergence.
#[cfg(feature = "crash-points")]
#[derive(Debug, Clone)]
pub struct EnvCrashPoints(String);

#[cfg(feature = "crash-points")]
impl StageHooks for EnvCrashPoints {
    fn at(&self, point: StagePoint) -> Result<()> {
        if self.0 == point.as_str() {
            tracing::warn!(point = point.as_str(), "ONMETAL_CSI_CRASH_AT: aborting");
            std::process::abort();
        }
        Ok(())
    }
}

/// The hooks `serve` installs: with the `crash-points` feature, [`EnvCrashPoints`] when
/// `ONMETAL_CSI_CRASH_AT` is set; otherwise (every release build) [`NoHooks`].
pub fn crash_points_from_env() -> Arc<dyn StageHooks> {
    #[cfg(feature = "crash-points")]
    if let Ok(point) = std::env::var("ONMETAL_CSI_CRASH_AT") {
        return Arc::new(EnvCrashPoints(point));
    }
    Arc::new(NoHooks)
}

/// The driver: its name, node, mode and parts.
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
    pub mounter: Arc<dyn Mounter>,
    /// Device-mapper and the keyring.
    pub mapper: Arc<dyn Mapper>,
    /// Wrapping and unwrapping DEKs.
    pub keys: Arc<dyn KeyWrapper>,
    /// The stage's test seam.
    pub hooks: Arc<dyn StageHooks>,
    /// One operation per volume.
    pub locks: VolumeLocks,
    /// Where node requests' paths may lie (kubelet's directory).
    pub paths: PathRules,
}

/// The topology key of this driver's node-local volumes: the node's ID.
pub const TOPOLOGY_KEY: &str = "topology.csi.onmetal.de/node";

impl Driver {
    /// Where this driver's volumes can be used, when that is not everywhere: with a node-local
    /// backend, this node (`topology.csi.onmetal.de/node` = the node ID); `None` otherwise.
    pub fn topology(&self) -> Option<crate::proto::Topology> {
        self.backend.node_local().then(|| crate::proto::Topology {
            segments: [(TOPOLOGY_KEY.to_owned(), self.node_id.clone())].into(),
        })
    }

    /// A driver from its parts, with the real device-mapper and KMS and no hooks.
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
            mapper: Arc::new(DmMapper),
            keys: Arc::new(KmsKeys),
            hooks: Arc::new(NoHooks),
            locks: VolumeLocks::default(),
            paths: PathRules::default(),
        }
    }

    /// Replaces the directories node requests' paths must lie in.
    pub fn with_paths(mut self, paths: PathRules) -> Self {
        self.paths = paths;
        self
    }

    /// Replaces device-mapper.
    pub fn with_mapper(mut self, mapper: Arc<dyn Mapper>) -> Self {
        self.mapper = mapper;
        self
    }

    /// Replaces the KMS.
    pub fn with_keys(mut self, keys: Arc<dyn KeyWrapper>) -> Self {
        self.keys = keys;
        self
    }

    /// Replaces the stage hooks.
    pub fn with_hooks(mut self, hooks: Arc<dyn StageHooks>) -> Self {
        self.hooks = hooks;
        self
    }
}

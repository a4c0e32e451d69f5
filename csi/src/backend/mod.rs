//! Where volumes come from: a small trait between the driver and the storage provider.
//!
//! The controller side creates, deletes, expands and lists volumes; the node side attaches a
//! volume to this node and names its block device. The driver never assumes more than that: the
//! device it gets may be a loop device (the [`local`] backend), or a provider's disk.
//!
//! # Plugging in a provider backend
//!
//! A cloud block-storage API whose volumes appear on the node as `/dev/disk/by-id/<serial>`
//! implements [`Backend`] like this:
//! - `create`: call the provider's create-volume API with the name-derived [`VolumeId`] as the
//!   idempotency key (or look it up by that name first), passing the provider parameters
//!   (`type`, `volume_pool`, ...) through; store the parameters as the provider's volume labels so
//!   that a repeated `create` can compare them.
//! - `delete`, `expand`, `get`, `list`: the matching provider calls.
//! - `attach`: if the provider attaches volumes from the control plane, advertise
//!   `PUBLISH_UNPUBLISH_VOLUME` and do it in ControllerPublish; on the node, `attach` then only
//!   waits for `/dev/disk/by-id/<serial>` to appear and returns it. `detach` is a no-op on the node.
//! - `refresh_size`: nothing to do (the kernel sees the grown disk after a rescan), or a write to
//!   `/sys/class/block/<dev>/device/rescan`.
//!
//! Everything above the backend (encryption, filesystems, mounts) stays as it is.
//!
//! Two backends ship: [`local`] (development and single-node clusters) and [`rbd`] (Ceph RBD
//! images, for multi-node clusters).

pub mod local;
pub mod rbd;

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use async_trait::async_trait;

use crate::error::Result;
use crate::volume_id::VolumeId;

pub use local::LocalBackend;
pub use rbd::{RbdBackend, RbdConfig};

/// A volume as the backend knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackendVolume {
    /// The volume ID.
    pub id: VolumeId,
    /// Size in bytes.
    pub capacity: u64,
    /// What the volume was created with (StorageClass parameters without the CO's
    /// `csi.storage.k8s.io/` keys), kept so that a repeated CreateVolume can be compared and the
    /// volume context rebuilt.
    pub parameters: BTreeMap<String, String>,
}

/// The attached block device of a volume.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attachment {
    /// The block device on this node.
    pub device: PathBuf,
    /// Whether this call attached it (false: it was attached already). A failed stage detaches
    /// only what it attached itself.
    pub fresh: bool,
}

/// What the driver needs from a storage provider (see the module documentation).
#[async_trait]
pub trait Backend: Send + Sync + fmt::Debug {
    /// The volume ID for a CreateVolume `name` with these provider parameters (deterministic:
    /// the same name and parameters give the same ID). The default is [`VolumeId::from_name`];
    /// a backend whose volumes live in a place the parameters name (an RBD pool) puts that place
    /// into the ID, since DeleteVolume gets nothing but the ID.
    fn volume_id(&self, name: &str, parameters: &BTreeMap<String, String>) -> Result<VolumeId> {
        let _ = parameters;
        VolumeId::from_name(name)
    }
    /// Creates a volume of `capacity` bytes, or returns the existing one of that ID unchanged
    /// (the caller compares it with the request).
    async fn create(
        &self,
        id: &VolumeId,
        capacity: u64,
        parameters: &BTreeMap<String, String>,
    ) -> Result<BackendVolume>;
    /// The volume, if it exists.
    async fn get(&self, id: &VolumeId) -> Result<Option<BackendVolume>>;
    /// Deletes the volume; a missing volume is success.
    async fn delete(&self, id: &VolumeId) -> Result<()>;
    /// Grows the volume to at least `capacity` bytes (never shrinks); returns the new size.
    async fn expand(&self, id: &VolumeId, capacity: u64) -> Result<u64>;
    /// Every volume.
    async fn list(&self) -> Result<Vec<BackendVolume>>;
    /// Bytes available for new volumes of a StorageClass with these provider parameters.
    async fn available(&self, parameters: &BTreeMap<String, String>) -> Result<u64>;

    /// Node side: makes the volume's block device appear on this node and returns it
    /// (idempotent: an attached volume returns the same device, with `fresh` false).
    async fn attach(&self, id: &VolumeId) -> Result<Attachment>;
    /// Node side: the block device of an attached volume, if attached.
    async fn device(&self, id: &VolumeId) -> Result<Option<PathBuf>>;
    /// Node side: detaches (idempotent).
    async fn detach(&self, id: &VolumeId) -> Result<()>;
    /// Node side: makes the attached device show the volume's current size.
    async fn refresh_size(&self, id: &VolumeId) -> Result<()>;

    /// Whether a volume can only be used on the node that created it (a node-local disk, such
    /// as [`local`]): the driver then advertises topology, so that the scheduler puts Pods
    /// where the volume is. Network storage reachable from every node says `false`.
    fn node_local(&self) -> bool {
        false
    }
}

/// Parses a `--backend` value (`local:DIR` or `rbd`, which reaches Ceph as `ceph` says).
pub fn open(spec: &str, ceph: &RbdConfig) -> Result<Box<dyn Backend>> {
    match spec.split_once(':') {
        _ if spec == "rbd" => Ok(Box::new(RbdBackend::open(ceph.clone())?)),
        Some(("local", dir)) if !dir.is_empty() => Ok(Box::new(LocalBackend::open(dir)?)),
        _ => Err(crate::Error::invalid(format!(
            "--backend {spec:?}: expected local:DIR or rbd"
        ))),
    }
}

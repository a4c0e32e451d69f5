//! The node operations: stage and unstage here, [`publish`] (and unpublish), [`expand`],
//! [`stats`]; [`open`] opens an encrypted volume (decide, then do). The gRPC handlers in
//! [`crate::rpc::node`] check the request, take the volume's lock and call one of these.
//! [`stage`] reads top-down as the steps it takes.
//!
//! State comes from the kernel (loop devices, device-mapper mappings, mounts), so a restarted
//! plugin neither disturbs nor forgets staged volumes, and every call is idempotent. A stage
//! that fails undoes what that call set up (its mount, its mapping, its attachment), never
//! what an earlier stage set up: kubelet does not call NodeUnstage after a final error.

pub mod expand;
pub mod open;
pub mod publish;
pub mod stats;

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use kms::KmsConfig;
use tracing::{info, warn};

pub use expand::expand;
pub use publish::{publish, unpublish};
pub use stats::stats;

use crate::capability::Access;
use crate::crypt;
use crate::driver::Driver;
use crate::error::{Error, Kind, Result};
use crate::host::exec::blocking;
use crate::host::fs::{FsType, probe_fs};
use crate::host::step::{ms, step};
use crate::params::Encryption;
use crate::volume_id::VolumeId;

/// NodeStageVolume: KMS configuration → attach → (encrypted: record → KMS unwrap → LUKS2
/// check → dm activate) → (filesystem: mkfs if blank → mount on the staging path). On an
/// error, what this call set up is undone ([`Undo`]).
pub async fn stage(
    d: &Driver,
    id: &VolumeId,
    staging: &Path,
    access: &Access,
    encryption: Option<&Encryption>,
    secrets: &HashMap<String, String>,
) -> Result<()> {
    let t0 = Instant::now();
    let Some(vol) = d.backend.get(id).await? else {
        return Err(Error::not_found(format!("volume {id} does not exist")));
    };
    if encryption.is_none()
        && vol
            .parameters
            .get(crate::params::PARAM_ENCRYPTION_ENABLED)
            .is_some_and(|v| v == "true")
    {
        return Err(Error::precondition(format!(
            "volume {id} was created encrypted (encryptionEnabled=true); its volume context \
             says it is not encrypted: refusing to hand out its LUKS2 device"
        )));
    }
    // Credentials and KMS settings are checked before anything is attached.
    let config = encryption.map(|e| e.kms_config(secrets)).transpose()?;
    let mut undo = Undo::default();
    match stage_steps(d, id, staging, access, config.as_ref(), &mut undo).await {
        Ok(device) => {
            info!(elapsed_ms = ms(t0), device = %device.display(), "staged");
            Ok(())
        }
        Err(e) => {
            undo.roll_back(d, id).await;
            Err(e)
        }
    }
}

async fn stage_steps(
    d: &Driver,
    id: &VolumeId,
    staging: &Path,
    access: &Access,
    config: Option<&KmsConfig>,
    undo: &mut Undo,
) -> Result<PathBuf> {
    let t = Instant::now();
    let attached = d.backend.attach(id).await?;
    undo.attached = attached.fresh;
    step("attach", t);
    let backing = attached.device;
    let device = match config {
        Some(config) => {
            let (dev, activated) = open::open(d, id, &backing, config).await?;
            undo.activated = activated;
            dev
        }
        None => {
            if d.mapper.active(&id.dm_name()).unwrap_or(None).is_some() {
                return Err(Error::precondition(format!(
                    "volume {id} is open as an encrypted volume; its volume context says it is \
                     not encrypted"
                )));
            }
            let b = backing.clone();
            let header = blocking(move || crypt::read_header(&b)).await?;
            if let Some(h) = header
                && crypt::token_record(&h)?.is_some()
            {
                return Err(Error::precondition(format!(
                    "volume {id} carries this driver's LUKS2 header; its volume context says \
                     it is not encrypted: refusing to hand out the encrypted device"
                )));
            }
            backing
        }
    };
    if let Access::Mount { fs, flags } = access
        && mount_staging(d, id, &device, staging, *fs, flags, config.is_some()).await?
    {
        undo.mounted = Some(staging.to_path_buf());
    }
    let t = Instant::now();
    crate::metrics::staged_encrypted(d.mapper.count()?);
    step("count_open", t);
    Ok(device)
}

/// What one stage call set up, undone when the call fails (in reverse order). What existed
/// before the call (an earlier stage's attachment, mapping or mount) is never in here.
#[derive(Debug, Default)]
struct Undo {
    attached: bool,
    activated: bool,
    mounted: Option<PathBuf>,
}

impl Undo {
    /// Undoes everything it holds; a step that fails is logged and the rest still run (the
    /// caller returns the stage's own error).
    async fn roll_back(self, d: &Driver, id: &VolumeId) {
        if !self.attached && !self.activated && self.mounted.is_none() {
            return;
        }
        if let Some(st) = self.mounted {
            let m = Arc::clone(&d.mounter);
            if let Err(e) = blocking(move || m.unmount(&st)).await {
                warn!(error = %e.display_chain(), "rollback of a failed stage: unmount failed");
            }
        }
        if self.activated {
            let (m, name) = (Arc::clone(&d.mapper), id.dm_name());
            if let Err(e) = blocking(move || m.deactivate(&name)).await {
                warn!(error = %e.display_chain(), "rollback of a failed stage: deactivate failed");
            }
        }
        if self.attached
            && let Err(e) = d.backend.detach(id).await
        {
            warn!(error = %e.display_chain(), "rollback of a failed stage: detach failed");
        }
        crate::metrics::staged_encrypted(d.mapper.count().unwrap_or(0));
        info!("rolled back the failed stage");
    }
}

/// Makes the filesystem if the device is blank and mounts it on the staging path; returns
/// whether this call mounted it (false: it was mounted already).
async fn mount_staging(
    d: &Driver,
    id: &VolumeId,
    device: &Path,
    staging: &Path,
    fs: FsType,
    flags: &[String],
    encrypted: bool,
) -> Result<bool> {
    if let Some(m) = d.mounter.mounted(staging)? {
        if d.mounter.shows(&m, device)? {
            return Ok(false);
        }
        return Err(Error::new(
            Kind::AlreadyExists,
            format!(
                "{} is already mounted from {} (device {}), not from volume {id}",
                staging.display(),
                m.source,
                m.dev
            ),
        ));
    }
    fs::create_dir_all(staging)
        .map_err(|e| Error::io(format!("creating {}", staging.display()), e))?;
    let t = Instant::now();
    let dev = device.to_path_buf();
    let found = blocking(move || probe_fs(&dev)).await?;
    step("fs_probe", t);
    match found {
        Some(f) if f == fs => {}
        Some(f) => {
            return Err(Error::precondition(format!(
                "volume {id} holds a {} filesystem, not the requested {}",
                f.as_str(),
                fs.as_str()
            )));
        }
        None => {
            // An unencrypted device must be really blank; an encrypted one reads as random data
            // until it has a filesystem (its LUKS2 header was checked above).
            if !encrypted {
                let dev = device.to_path_buf();
                if let Some(why) = blocking(move || crypt::holds_data(&dev)).await? {
                    return Err(Error::precondition(format!(
                        "volume {id} holds data ({why}) but no ext4/xfs filesystem: refusing \
                         to make one over it"
                    )));
                }
            }
            let t = Instant::now();
            let (m, dev) = (Arc::clone(&d.mounter), device.to_path_buf());
            blocking(move || m.mkfs(&dev, fs)).await?;
            info!(fs = fs.as_str(), elapsed_ms = ms(t), "made filesystem");
            step("mkfs", t);
        }
    }
    let (m, dev, st, fl) = (
        Arc::clone(&d.mounter),
        device.to_path_buf(),
        staging.to_path_buf(),
        flags.to_vec(),
    );
    let t = Instant::now();
    blocking(move || m.mount(&dev, &st, fs, &fl)).await?;
    step("mount", t);
    Ok(true)
}

/// NodeUnstageVolume: unmount the staging path, close the mapping (which drops the key from the
/// keyring), detach.
pub async fn unstage(d: &Driver, id: &VolumeId, staging: &Path) -> Result<()> {
    // Only this volume's staging mount is unmounted: a mount of anything else on the path is
    // left alone (and the volume stays as it is).
    our_mount(d, id, staging).await?;
    let (m, st) = (Arc::clone(&d.mounter), staging.to_path_buf());
    blocking(move || m.unmount(&st)).await?;
    let (m, name) = (Arc::clone(&d.mapper), id.dm_name());
    blocking(move || m.deactivate(&name)).await?;
    d.backend.detach(id).await?;
    crate::metrics::staged_encrypted(d.mapper.count()?);
    info!("unstaged");
    Ok(())
}

/// Whether `path` is mounted; a mount there that does not show volume `id` (its mapping or
/// its device) is FAILED_PRECONDITION, so that nothing of another volume is ever unmounted.
async fn our_mount(d: &Driver, id: &VolumeId, path: &Path) -> Result<bool> {
    let Some(m) = d.mounter.mounted(path)? else {
        return Ok(false);
    };
    let ours = match staged_device(d, id).await? {
        Some(dev) => d.mounter.shows(&m, &dev)?,
        None => false,
    };
    if !ours {
        return Err(Error::precondition(format!(
            "{} is mounted from {} (device {}), not from volume {id}: nothing unmounted",
            path.display(),
            m.source,
            m.dev
        )));
    }
    Ok(true)
}

/// The device a staged volume is used through: the mapping (encrypted) or the attached device.
async fn staged_device(d: &Driver, id: &VolumeId) -> Result<Option<PathBuf>> {
    let (m, name) = (Arc::clone(&d.mapper), id.dm_name());
    if let Some(dev) = blocking(move || m.active(&name)).await? {
        return Ok(Some(dev));
    }
    d.backend.device(id).await
}

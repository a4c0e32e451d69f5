//! NodePublishVolume and NodeUnpublishVolume: bind mounts of a staged volume.

use std::fs;
use std::path::Path;
use std::sync::Arc;

use tracing::info;

use super::staged_device;
use crate::capability::Access;
use crate::driver::Driver;
use crate::error::{Error, Result};
use crate::host::exec::blocking;
use crate::volume_id::VolumeId;

/// NodePublishVolume: bind the staging mount (filesystem) or the device node (block) onto the
/// target path.
pub async fn publish(
    d: &Driver,
    id: &VolumeId,
    staging: &Path,
    target: &Path,
    access: &Access,
    read_only: bool,
) -> Result<()> {
    if d.backend.get(id).await?.is_none() {
        return Err(Error::not_found(format!("volume {id} does not exist")));
    }
    let source = match access {
        Access::Mount { .. } => {
            if d.mounter.mounted(staging)?.is_none() {
                return Err(Error::precondition(format!(
                    "volume {id} is not staged at {}",
                    staging.display()
                )));
            }
            fs::create_dir_all(target)
                .map_err(|e| Error::io(format!("creating {}", target.display()), e))?;
            staging.to_path_buf()
        }
        Access::Block => {
            let dev = staged_device(d, id).await?.ok_or_else(|| {
                Error::precondition(format!("volume {id} is not staged on this node"))
            })?;
            if let Some(parent) = target.parent() {
                fs::create_dir_all(parent)
                    .map_err(|e| Error::io(format!("creating {}", parent.display()), e))?;
            }
            if !target.exists() {
                fs::File::create(target)
                    .map_err(|e| Error::io(format!("creating {}", target.display()), e))?;
            }
            dev
        }
    };
    if d.mounter.mounted(target)?.is_some() {
        return Ok(());
    }
    let (m, src, tgt) = (Arc::clone(&d.mounter), source.clone(), target.to_path_buf());
    let flags = match access {
        Access::Mount { flags, .. } => flags.clone(),
        Access::Block => Vec::new(),
    };
    blocking(move || m.bind(&src, &tgt, read_only, &flags)).await?;
    info!(target = %target.display(), read_only, "published");
    Ok(())
}

/// NodeUnpublishVolume: unmount and remove the target path.
pub async fn unpublish(d: &Driver, id: &VolumeId, target: &Path) -> Result<()> {
    let (m, tgt) = (Arc::clone(&d.mounter), target.to_path_buf());
    blocking(move || m.unmount(&tgt)).await?;
    match fs::symlink_metadata(target) {
        Ok(meta) if meta.is_dir() => fs::remove_dir(target),
        Ok(_) => fs::remove_file(target),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
    .map_err(|e| Error::io(format!("removing {}", target.display()), e))?;
    info!(volume = %id, target = %target.display(), "unpublished");
    Ok(())
}

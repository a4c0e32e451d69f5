//! NodePublishVolume and NodeUnpublishVolume: bind mounts of a staged volume.

use std::fs;
use std::path::Path;
use std::sync::Arc;

use tracing::{info, warn};

use super::{our_mount, staged_device};
use crate::capability::Access;
use crate::driver::Driver;
use crate::error::{Error, Kind, Result};
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
    if let Some(m) = d.mounter.mounted(target)? {
        // Published already (a retry): the same source with the same access is OK; anything
        // else at the target is another publish, left alone.
        let mounted_ro = m.options.split(',').any(|o| o == "ro");
        if !d.mounter.shows(&m, &source)? {
            return Err(Error::new(
                Kind::AlreadyExists,
                format!(
                    "{} is already mounted from {} (device {}), not from volume {id}",
                    target.display(),
                    m.source,
                    m.dev
                ),
            ));
        }
        if mounted_ro != read_only {
            return Err(Error::new(
                Kind::AlreadyExists,
                format!(
                    "volume {id} is already published at {} {}, not {}",
                    target.display(),
                    if mounted_ro {
                        "read-only"
                    } else {
                        "read-write"
                    },
                    if read_only { "read-only" } else { "read-write" },
                ),
            ));
        }
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

/// NodeUnpublishVolume: unmount this volume's publish at the target path and remove what
/// publish made there (an empty directory or an empty file). A mount of anything else at the
/// path is refused and left alone; what is not a mount and not empty is not removed.
pub async fn unpublish(d: &Driver, id: &VolumeId, target: &Path) -> Result<()> {
    if our_mount(d, id, target).await? {
        let (m, tgt) = (Arc::clone(&d.mounter), target.to_path_buf());
        blocking(move || m.unmount(&tgt)).await?;
    }
    let removed = match fs::symlink_metadata(target) {
        Ok(meta) if meta.is_dir() => match fs::remove_dir(target) {
            Err(e) if e.kind() == std::io::ErrorKind::DirectoryNotEmpty => Ok(false),
            r => r.map(|()| true),
        },
        Ok(meta) if meta.is_file() && meta.len() == 0 => fs::remove_file(target).map(|()| true),
        Ok(_) => Ok(false),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(true),
        Err(e) => Err(e),
    }
    .map_err(|e| Error::io(format!("removing {}", target.display()), e))?;
    if !removed {
        warn!(
            volume = %id,
            target = %target.display(),
            "unpublished: the target path holds something this driver did not make; not removed"
        );
    }
    info!(volume = %id, target = %target.display(), "unpublished");
    Ok(())
}

//! NodeExpandVolume: the device, the mapping and the filesystem grow.

use std::fs;
use std::path::Path;
use std::sync::Arc;

use tracing::info;

use super::staged_device;
use crate::driver::Driver;
use crate::error::{Error, Result};
use crate::host::exec::blocking;
use crate::host::fs::FsType;
use crate::volume_id::VolumeId;

/// NodeExpandVolume: the device shows its new size, the mapping grows (key from the keyring: no
/// KMS), the filesystem grows. Returns the usable size.
pub async fn expand(d: &Driver, id: &VolumeId, path: &Path) -> Result<u64> {
    if !path.exists() {
        return Err(Error::not_found(format!(
            "volume path {} does not exist",
            path.display()
        )));
    }
    d.backend.refresh_size(id).await?;
    let device = staged_device(d, id)
        .await?
        .ok_or_else(|| Error::not_found(format!("volume {id} is not staged on this node")))?;
    let name = id.dm_name();
    let mapper = Arc::clone(&d.mapper);
    blocking(move || {
        if mapper.active(&name)?.is_some() {
            mapper.resize(&name)?;
        }
        Ok(())
    })
    .await?;
    // A filesystem volume is published as a directory; a block volume as a device node file.
    if path.is_dir()
        && let Some(m) = d.mounter.mounted(path)?
    {
        let fs = FsType::parse(&m.fstype)?;
        let (mounter, dev, p) = (Arc::clone(&d.mounter), device.clone(), path.to_path_buf());
        blocking(move || mounter.grow(&dev, &p, fs)).await?;
    }
    let size = device_size(&device)?;
    info!(bytes = size, "expanded");
    Ok(size)
}

pub(super) fn device_size(device: &Path) -> Result<u64> {
    use std::io::{Seek, SeekFrom};
    let mut f = fs::File::open(device)
        .map_err(|e| Error::io(format!("opening {}", device.display()), e))?;
    f.seek(SeekFrom::End(0))
        .map_err(|e| Error::io(format!("size of {}", device.display()), e))
}

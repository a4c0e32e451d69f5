//! NodeGetVolumeStats: usage and the volume's condition.

use std::fs;
use std::path::Path;

use super::expand::device_size;
use super::staged_device;
use crate::driver::Driver;
use crate::error::{Error, Result};
use crate::proto;
use crate::volume_id::VolumeId;

/// NodeGetVolumeStats: usage of the mounted filesystem (bytes and inodes) or size of the block
/// device, with a condition that reports a missing mapping or an unreadable device.
pub async fn stats(
    d: &Driver,
    id: &VolumeId,
    path: &Path,
) -> Result<proto::NodeGetVolumeStatsResponse> {
    use proto::volume_usage::Unit;
    let meta = fs::metadata(path)
        .map_err(|e| Error::not_found(format!("volume path {}: {e}", path.display())))?;
    let device = staged_device(d, id).await?;
    let condition = match &device {
        None => proto::VolumeCondition {
            abnormal: true,
            message: format!(
                "volume {id} has no device on this node (mapping or attachment missing)"
            ),
        },
        Some(dev) => match read_probe(dev) {
            Ok(()) => proto::VolumeCondition {
                abnormal: false,
                message: "ok".into(),
            },
            Err(e) => proto::VolumeCondition {
                abnormal: true,
                message: format!("reading {} failed: {e}", dev.display()),
            },
        },
    };
    let as_i64 = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    let usage = if meta.is_dir() {
        let u = d.mounter.usage(path)?;
        vec![
            proto::VolumeUsage {
                total: as_i64(u.bytes.0),
                available: as_i64(u.bytes.1),
                used: as_i64(u.bytes.2),
                unit: Unit::Bytes as i32,
            },
            proto::VolumeUsage {
                total: as_i64(u.inodes.0),
                available: as_i64(u.inodes.1),
                used: as_i64(u.inodes.2),
                unit: Unit::Inodes as i32,
            },
        ]
    } else {
        let size = match &device {
            Some(dev) => device_size(dev)?,
            None => device_size(path)?,
        };
        vec![proto::VolumeUsage {
            total: as_i64(size),
            available: 0,
            used: 0,
            unit: Unit::Bytes as i32,
        }]
    };
    Ok(proto::NodeGetVolumeStatsResponse {
        usage,
        volume_condition: Some(condition),
    })
}

/// Reads the first 4 KiB of the device, bypassing nothing but proving it answers.
fn read_probe(device: &Path) -> std::io::Result<()> {
    use std::io::Read;
    let mut f = fs::File::open(device)?;
    let mut buf = [0u8; 4096];
    f.read(&mut buf).map(|_| ())
}

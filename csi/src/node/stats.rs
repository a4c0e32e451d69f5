//! NodeGetVolumeStats: usage and the volume's condition.
//!
//! Everything that touches the device or the filesystem (metadata, statvfs, the device's size,
//! the read probe) runs on a thread of its own, never on a runtime worker, and the call waits
//! for it at most [`STATS_TIMEOUT`]. A device or filesystem that does not answer in time is
//! reported as an abnormal condition without usage, and while a thread is still stuck on a
//! volume no second one is started for it: one hung device costs one thread, never the
//! runtime's workers or the other volumes' stats.

use std::collections::HashSet;
use std::fs;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::expand::device_size;
use super::staged_device;
use crate::driver::Driver;
use crate::error::{Error, Result};
use crate::proto;
use crate::volume_id::VolumeId;

/// How long NodeGetVolumeStats waits for the device and the filesystem.
pub const STATS_TIMEOUT: Duration = Duration::from_secs(10);

/// Volumes whose stats thread has not come back yet.
static IN_FLIGHT: Mutex<Option<HashSet<VolumeId>>> = Mutex::new(None);

/// NodeGetVolumeStats: usage of the mounted filesystem (bytes and inodes) or size of the block
/// device, with a condition that reports a missing mapping or a device that does not answer
/// a direct read.
pub async fn stats(
    d: &Driver,
    id: &VolumeId,
    path: &Path,
) -> Result<proto::NodeGetVolumeStatsResponse> {
    stats_within(d, id, path, STATS_TIMEOUT).await
}

/// [`stats`] with another time limit (tests).
pub async fn stats_within(
    d: &Driver,
    id: &VolumeId,
    path: &Path,
    timeout: Duration,
) -> Result<proto::NodeGetVolumeStatsResponse> {
    // No answer: no usage, and a condition that says why (kubelet reports it on the Pod's
    // volume health), never a worker blocked on the device.
    let pending = || proto::NodeGetVolumeStatsResponse {
        usage: Vec::new(),
        volume_condition: Some(proto::VolumeCondition {
            abnormal: true,
            message: format!(
                "volume {id}: the device or filesystem did not answer within {:.1} s",
                timeout.as_secs_f64()
            ),
        }),
    };
    let deadline = tokio::time::Instant::now() + timeout;
    let p = path.to_path_buf();
    let Some(meta) = bounded(id, deadline, move || fs::metadata(&p)).await? else {
        return Ok(pending());
    };
    let is_dir = meta
        .map_err(|e| Error::not_found(format!("volume path {}: {e}", path.display())))?
        .is_dir();
    let device = staged_device(d, id).await?;
    let (mounter, p, vid) = (Arc::clone(&d.mounter), path.to_path_buf(), id.clone());
    let measured = bounded(id, deadline, move || {
        measure(&*mounter, &vid, &p, is_dir, device.as_deref())
    });
    match measured.await? {
        Some(res) => res,
        None => Ok(pending()),
    }
}

/// Runs `f` on a thread of its own and waits for it until `deadline`: `None` when it did not
/// finish in time, or when an earlier thread for `id` is still running (then none is started).
async fn bounded<T: Send + 'static>(
    id: &VolumeId,
    deadline: tokio::time::Instant,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<Option<T>> {
    let done = |id: &VolumeId| {
        if let Some(set) = IN_FLIGHT.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
            set.remove(id);
        }
    };
    {
        let mut guard = IN_FLIGHT.lock().unwrap_or_else(|e| e.into_inner());
        if !guard.get_or_insert_with(HashSet::new).insert(id.clone()) {
            return Ok(None);
        }
    }
    let (tx, rx) = tokio::sync::oneshot::channel();
    let vid = id.clone();
    let spawned = std::thread::Builder::new()
        .name(format!("stats-{id}"))
        .spawn(move || {
            let res = f();
            done(&vid);
            let _ = tx.send(res);
        });
    if let Err(e) = spawned {
        done(id);
        return Err(Error::io("starting the stats thread", e));
    }
    match tokio::time::timeout_at(deadline, rx).await {
        Ok(Ok(res)) => Ok(Some(res)),
        Ok(Err(_)) => Err(Error::internal("the stats thread ended without an answer")),
        Err(_) => Ok(None),
    }
}

/// The blocking part: what the path and the device say.
fn measure(
    mounter: &dyn crate::host::mount::Mounter,
    id: &VolumeId,
    path: &Path,
    is_dir: bool,
    device: Option<&Path>,
) -> Result<proto::NodeGetVolumeStatsResponse> {
    use proto::volume_usage::Unit;
    let condition = match device {
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
    let usage = if is_dir {
        let u = mounter.usage(path)?;
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
        let size = device_size(device.unwrap_or(path))?;
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

/// Reads the first 4 KiB of the device with `O_DIRECT`, so that the answer comes from the device
/// and not from the page cache (a buffered open where the device refuses direct I/O).
fn read_probe(device: &Path) -> std::io::Result<()> {
    const BLOCK: usize = 4096;
    let direct = fs::OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::DIRECT.bits() as i32)
        .open(device);
    let f = match direct {
        Ok(f) => f,
        Err(e) if e.raw_os_error() == Some(rustix::io::Errno::INVAL.raw_os_error()) => {
            fs::File::open(device)?
        }
        Err(e) => return Err(e),
    };
    // A block-aligned buffer without unsafe code: a slice at the aligned offset of a larger one.
    let mut buf = vec![0u8; 2 * BLOCK];
    let off = buf.as_ptr().align_offset(BLOCK).min(BLOCK);
    f.read_at(&mut buf[off..off + BLOCK], 0).map(|_| ())
}

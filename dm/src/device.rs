//! Block devices: numbers, sizes (from sysfs), the `/dev/mapper/<name>` node, and the checks
//! that make activation exclusive per backing device.

use std::ffi::CString;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::sys;
use crate::types::{DevNum, DmName, Sectors};

/// Where device-mapper device nodes live.
pub const MAPPER_DIR: &str = "/dev/mapper";

/// The device number of the block device open as `fd`.
pub(crate) fn block_device_of(fd: BorrowedFd<'_>) -> Result<DevNum> {
    let path = fd_path(fd);
    let md = File::from(
        fd.try_clone_to_owned()
            .map_err(|e| Error::io("dup", &path, e))?,
    )
    .metadata()
    .map_err(|e| Error::io("fstat", &path, e))?;
    if !md.file_type().is_block_device() {
        return Err(Error::NotBlockDevice(path));
    }
    Ok(devnum(md.rdev()))
}

/// `/proc/self/fd/<fd>`: reopening it opens the same inode, without resolving any name again.
fn fd_path(fd: BorrowedFd<'_>) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

/// Where activation keeps its per-device lock files.
const ACTIVATION_LOCK_DIR: &str = "/run/onmetal-csi";

/// An exclusive `flock` on `/run/onmetal-csi/activate-<major>:<minor>`: activations of one
/// backing device through this crate run one after the other, so that the "not in use" check and
/// the table load that puts the device in use cannot interleave with another activation. The lock
/// file stays (a few bytes in a tmpfs per device ever activated); removing it would race.
#[derive(Debug)]
pub(crate) struct ActivationLock {
    _file: File,
}

impl ActivationLock {
    pub(crate) fn acquire(dev: DevNum) -> Result<ActivationLock> {
        fs::create_dir_all(ACTIVATION_LOCK_DIR)
            .map_err(|e| Error::io("mkdir", ACTIVATION_LOCK_DIR, e))?;
        let path = Path::new(ACTIVATION_LOCK_DIR).join(format!("activate-{dev}"));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
            .open(&path)
            .map_err(|e| Error::io("open lock", &path, e))?;
        file.lock().map_err(|e| Error::io("lock", &path, e))?;
        Ok(ActivationLock { _file: file })
    }
}

/// Checks that nothing else uses the block device open as `fd` (number `dev`): no
/// device-mapper mapping holds it, it is not mounted, nobody has it open exclusively — by
/// opening it once more with `O_EXCL`, as cryptsetup does before it activates a LUKS device. The
/// reopened device must still be `dev`.
pub(crate) fn ensure_unused(fd: BorrowedFd<'_>, dev: DevNum) -> Result<()> {
    let path = fd_path(fd);
    let excl = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_EXCL | libc::O_CLOEXEC)
        .open(&path);
    let file = match excl {
        Ok(f) => f,
        Err(e) if e.raw_os_error() == Some(libc::EBUSY) => return Err(Error::DeviceInUse(dev)),
        Err(e) => return Err(Error::io("open exclusively", &path, e)),
    };
    let found = block_device_of(file.as_fd())?;
    if found != dev {
        return Err(Error::DeviceChanged {
            expected: dev,
            found,
        });
    }
    Ok(())
}

fn devnum(rdev: u64) -> DevNum {
    DevNum {
        major: libc::major(rdev),
        minor: libc::minor(rdev),
    }
}

/// The current size of block device `dev` in 512-byte sectors.
pub(crate) fn size(dev: DevNum) -> Result<Sectors> {
    let p = PathBuf::from(format!("/sys/dev/block/{dev}/size"));
    let s = fs::read_to_string(&p).map_err(|e| Error::io("read", &p, e))?;
    s.trim()
        .parse()
        .map(Sectors)
        .map_err(|_| Error::Unexpected("sysfs block device size is not a number"))
}

/// `/dev/<kernel name>` of block device `dev`, from sysfs, if the kernel reports one.
pub(crate) fn node_path(dev: DevNum) -> Option<PathBuf> {
    let uevent = fs::read_to_string(format!("/sys/dev/block/{dev}/uevent")).ok()?;
    uevent
        .lines()
        .find_map(|l| l.strip_prefix("DEVNAME="))
        .map(|n| Path::new("/dev").join(n))
}

/// `/dev/mapper/<name>`.
pub fn mapper_path(name: &DmName) -> PathBuf {
    Path::new(MAPPER_DIR).join(name.as_str())
}

/// Whether `path` is (or links to) the block device `dev`.
fn points_to(path: &Path, dev: DevNum) -> bool {
    fs::metadata(path)
        .map(|m| m.file_type().is_block_device() && devnum(m.rdev()) == dev)
        .unwrap_or(false)
}

/// Makes sure `/dev/mapper/<name>` is the block device `dev`. With udev, its rules have made it
/// already (the devicemapper crate waits for udev); without udev (a container, an initramfs) we
/// create the node ourselves.
pub(crate) fn ensure_mapper_node(name: &DmName, dev: DevNum) -> Result<PathBuf> {
    let path = mapper_path(name);
    if points_to(&path, dev) {
        return Ok(path);
    }
    fs::create_dir_all(MAPPER_DIR).map_err(|e| Error::io("mkdir", MAPPER_DIR, e))?;
    match fs::remove_file(&path) {
        Ok(()) => tracing::debug!(path = %path.display(), "replaced a stale device node"),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io("remove stale", &path, e)),
    }
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| Error::Unexpected("device path contains NUL"))?;
    match sys::mknod_block(&c, 0o600, dev.major, dev.minor) {
        Ok(()) => {}
        // udev won the race: fine if it made the right node.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && points_to(&path, dev) => {}
        Err(e) => return Err(Error::io("mknod", &path, e)),
    }
    Ok(path)
}

/// Removes `/dev/mapper/<name>` after the device `dev` is gone, if it is a node for `dev` that
/// nobody else removed (no udev) or a dangling symlink.
pub(crate) fn remove_mapper_node(name: &DmName, dev: DevNum) {
    let path = mapper_path(name);
    let Ok(md) = fs::symlink_metadata(&path) else {
        return;
    };
    let stale = if md.file_type().is_symlink() {
        fs::metadata(&path).is_err()
    } else {
        md.file_type().is_block_device() && devnum(md.rdev()) == dev
    };
    if stale && let Err(e) = fs::remove_file(&path) {
        tracing::warn!(path = %path.display(), error = %e, "cannot remove device node");
    }
}

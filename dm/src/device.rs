//! Block devices: numbers, sizes (from sysfs) and the `/dev/mapper/<name>` node.

use std::ffi::CString;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::sys;
use crate::types::{DevNum, DmName, Sectors};

/// Where device-mapper device nodes live.
pub const MAPPER_DIR: &str = "/dev/mapper";

/// The device number of the block device at `path` (symlinks followed).
pub(crate) fn block_device(path: &Path) -> Result<DevNum> {
    let md = fs::metadata(path).map_err(|e| Error::io("stat", path, e))?;
    if !md.file_type().is_block_device() {
        return Err(Error::NotBlockDevice(path.to_owned()));
    }
    Ok(devnum(md.rdev()))
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

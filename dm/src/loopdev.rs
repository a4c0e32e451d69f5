//! Loop devices through `/dev/loop-control` and the loop ioctls, without `losetup`: attach a file
//! ([`LoopControl::attach`]: `LOOP_CTL_GET_FREE`, then `LOOP_CONFIGURE`, Linux 5.8; before that
//! `LOOP_SET_FD` + `LOOP_SET_STATUS64`), [`detach`] (`LOOP_CLR_FD`), [`set_capacity`]
//! (`LOOP_SET_CAPACITY`) and [`find`] the devices of a file through
//! `/sys/block/loop*/loop/backing_file`. State lives in the kernel: a restarted process finds its
//! devices again with [`find`].
//!
//! `/dev/loopN` is made with mknod (from `/sys/block/loopN/dev`) when no udev daemon made it.
//! The ioctls themselves are in `sys`.

use std::ffi::CString;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::sys;
use crate::types::DevNum;

/// The loop control device.
pub const LOOP_CONTROL: &str = "/dev/loop-control";
/// Where the kernel lists block devices (and a loop device's backing file).
const SYS_BLOCK: &str = "/sys/block";
/// How often [`LoopControl::attach`] asks for another free device when another process bound
/// the one it was offered first (`EBUSY`).
const ATTACH_ATTEMPTS: u32 = 16;
/// What the kernel appends to `backing_file` when the file was deleted (d_path).
const DELETED: &[u8] = b" (deleted)";

/// One loop device: `/dev/loopN`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoopDevice {
    /// `/dev/loopN`.
    pub path: PathBuf,
    /// `N`.
    pub number: u32,
}

impl LoopDevice {
    /// The loop device number `n`.
    pub fn new(number: u32) -> Self {
        LoopDevice {
            path: PathBuf::from(format!("/dev/loop{number}")),
            number,
        }
    }

    /// The device of a `/dev/loopN` path (`None` for any other path).
    pub fn from_path(path: &Path) -> Option<Self> {
        let n = path.to_str()?.strip_prefix("/dev/loop")?;
        n.bytes()
            .all(|b| b.is_ascii_digit())
            .then(|| n.parse().ok())
            .flatten()
            .map(Self::new)
    }

    fn sys_dir(&self) -> PathBuf {
        Path::new(SYS_BLOCK).join(format!("loop{}", self.number))
    }

    /// Whether the kernel does direct I/O on the backing file (`/sys/block/loopN/loop/dio`).
    pub fn direct_io(&self) -> Result<bool> {
        let p = self.sys_dir().join("loop/dio");
        let s = fs::read_to_string(&p).map_err(|e| Error::loop_dev("read", &p, e))?;
        Ok(s.trim() == "1")
    }

    /// The device's size in bytes (`/sys/block/loopN/size`, in 512-byte sectors).
    pub fn size(&self) -> Result<u64> {
        let p = self.sys_dir().join("size");
        let s = fs::read_to_string(&p).map_err(|e| Error::loop_dev("read", &p, e))?;
        let sectors: u64 = s
            .trim()
            .parse()
            .map_err(|_| Error::Unexpected("loop device size is not a number"))?;
        Ok(sectors.saturating_mul(512))
    }

    /// Opens `/dev/loopN` read-write, making the node first if no udev daemon has.
    fn open(&self) -> Result<File> {
        let open = || OpenOptions::new().read(true).write(true).open(&self.path);
        match open() {
            Ok(f) => return Ok(f),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::loop_dev("open", &self.path, e)),
        }
        let devfile = self.sys_dir().join("dev");
        let dev: DevNum = fs::read_to_string(&devfile)
            .map_err(|e| Error::loop_dev("read", &devfile, e))?
            .trim()
            .parse()
            .map_err(|()| Error::Unexpected("a loop device's dev attribute is not major:minor"))?;
        let c = CString::new(self.path.as_os_str().as_bytes())
            .map_err(|_| Error::Unexpected("device path contains NUL"))?;
        match sys::mknod_block(&c, 0o660, dev.major, dev.minor) {
            Ok(()) => tracing::debug!(device = %self.path.display(), "made the loop device node"),
            // udev (or another attach) made it meanwhile.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(Error::loop_dev("mknod", &self.path, e)),
        }
        open().map_err(|e| Error::loop_dev("open", &self.path, e))
    }
}

/// An open `/dev/loop-control`.
#[derive(Debug)]
pub struct LoopControl {
    control: File,
}

impl LoopControl {
    /// Opens `/dev/loop-control` (needs root; no loop driver: an error).
    pub fn open() -> Result<Self> {
        let control = OpenOptions::new()
            .read(true)
            .write(true)
            .open(LOOP_CONTROL)
            .map_err(|e| Error::loop_dev("open", LOOP_CONTROL, e))?;
        Ok(LoopControl { control })
    }

    /// Attaches `backing` (read-write, or read-only where the file cannot be written, as
    /// `losetup` does) to a free loop device; with `direct_io`, asks the kernel for direct I/O on
    /// the file and attaches buffered if the kernel refuses it (`EINVAL`). Another process may
    /// bind the free device first (`EBUSY`): then it asks for another, a bounded number of times.
    pub fn attach(&self, backing: &Path, direct_io: bool) -> Result<LoopDevice> {
        let file = open_backing(backing)?;
        let mut info = sys::LoopInfo64::zeroed();
        let name = canonical(backing);
        let name = name.as_os_str().as_bytes();
        let len = name.len().min(sys::LO_NAME_SIZE - 1);
        info.lo_file_name[..len].copy_from_slice(&name[..len]);
        for _ in 0..ATTACH_ATTEMPTS {
            let number = sys::loop_ctl_get_free(self.control.as_fd())
                .map_err(|e| Error::loop_dev("LOOP_CTL_GET_FREE", LOOP_CONTROL, e))?;
            let dev = LoopDevice::new(number);
            let handle = dev.open()?;
            match configure(&handle, &file, info, direct_io) {
                Ok(()) => {
                    tracing::debug!(device = %dev.path.display(), file = %backing.display(),
                        direct_io, "attached");
                    return Ok(dev);
                }
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                    tracing::debug!(device = %dev.path.display(), "taken meanwhile, next one");
                }
                Err(e) => return Err(Error::loop_dev("LOOP_CONFIGURE", &dev.path, e)),
            }
        }
        Err(Error::LoopRace(backing.to_path_buf()))
    }
}

fn open_backing(backing: &Path) -> Result<File> {
    match OpenOptions::new().read(true).write(true).open(backing) {
        Ok(f) => Ok(f),
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::EROFS | libc::EACCES | libc::EPERM)
            ) =>
        {
            File::open(backing).map_err(|e| Error::loop_dev("open", backing, e))
        }
        Err(e) => Err(Error::loop_dev("open", backing, e)),
    }
}

/// Binds `file` to the loop device `dev`: `LOOP_CONFIGURE`; when that is refused with
/// direct I/O (`EINVAL`), again without; when the kernel has no `LOOP_CONFIGURE` (before 5.8:
/// `EINVAL` or `ENOTTY`), `LOOP_SET_FD` + `LOOP_SET_STATUS64` (+ `LOOP_SET_DIRECT_IO`, best
/// effort). `EBUSY` is returned as is: the device was bound by someone else.
fn configure(dev: &File, file: &File, info: sys::LoopInfo64, direct_io: bool) -> io::Result<()> {
    let unsupported = |e: &io::Error| matches!(e.raw_os_error(), Some(libc::EINVAL | libc::ENOTTY));
    let with = |flags: u32| {
        let mut info = info;
        info.lo_flags = flags;
        sys::loop_configure(dev.as_fd(), &sys::LoopConfig::new(file.as_fd(), info))
    };
    let first = if direct_io {
        match with(sys::LO_FLAGS_DIRECT_IO) {
            Err(e) if unsupported(&e) => {
                tracing::debug!(error = %e, "LOOP_CONFIGURE with direct I/O refused, buffered");
                with(0)
            }
            r => r,
        }
    } else {
        with(0)
    };
    match first {
        Err(e) if unsupported(&e) => legacy(dev, file, info, direct_io),
        r => r,
    }
}

/// `LOOP_SET_FD` + `LOOP_SET_STATUS64` for kernels without `LOOP_CONFIGURE`.
fn legacy(dev: &File, file: &File, info: sys::LoopInfo64, direct_io: bool) -> io::Result<()> {
    sys::loop_set_fd(dev.as_fd(), file.as_fd())?;
    if let Err(e) = sys::loop_set_status64(dev.as_fd(), &info) {
        let _ = sys::loop_clr_fd(dev.as_fd());
        return Err(e);
    }
    if direct_io && let Err(e) = sys::loop_set_direct_io(dev.as_fd(), true) {
        tracing::debug!(error = %e, "LOOP_SET_DIRECT_IO refused, buffered");
    }
    Ok(())
}

/// Detaches `dev` (`LOOP_CLR_FD`). While the device is still open elsewhere the kernel detaches
/// it at the last close, as with `losetup --detach`. A device that is not attached (`ENXIO`,
/// detached meanwhile) is success.
pub fn detach(dev: &LoopDevice) -> Result<()> {
    let handle = dev.open()?;
    match sys::loop_clr_fd(handle.as_fd()) {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::ENXIO) => Ok(()),
        Err(e) => Err(Error::loop_dev("LOOP_CLR_FD", &dev.path, e)),
    }
}

/// Makes `dev` take the current size of its backing file (`LOOP_SET_CAPACITY`).
pub fn set_capacity(dev: &LoopDevice) -> Result<()> {
    let handle = dev.open()?;
    sys::loop_set_capacity(handle.as_fd())
        .map_err(|e| Error::loop_dev("LOOP_SET_CAPACITY", &dev.path, e))
}

/// The loop devices backed by `backing`, by number: every `/sys/block/loopN` whose
/// `loop/backing_file` is `backing`'s canonical path. The kernel shows a deleted backing file as
/// its old path followed by `" (deleted)"`; that counts as a match too (the device still holds
/// the file, so detaching it is what a caller wants), which means a new file made at the path of
/// a deleted but still attached one also finds the old device.
///
/// `backing_file` shows the path as the mount namespace that attached the device sees it (a
/// node plugin's container, or one that is gone: then the path is relative to the mount the file
/// was reached through). A device whose backing file has the same name under another path is
/// `backing`'s too when its status (`LOOP_GET_STATUS64`) names `backing`'s device and inode.
pub fn find(backing: &Path) -> Result<Vec<LoopDevice>> {
    find_in(Path::new(SYS_BLOCK), backing, Match::Verified)
}

/// Every loop device whose backing file has `backing`'s file name, under whatever path (also
/// deleted): what a process that cannot open the loop devices (a controller's container has no
/// `/dev/loop*`) or sees another mount namespace can tell. For "is it still attached anywhere",
/// where a false yes only refuses, never a lookup that acts on the device.
pub fn find_by_name(backing: &Path) -> Result<Vec<LoopDevice>> {
    find_in(Path::new(SYS_BLOCK), backing, Match::Name)
}

/// How [`find_in`] matches a backing file shown under another path.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Match {
    /// Same name, and the device's status names the file's device and inode.
    Verified,
    /// Same name.
    Name,
}

/// Whether loop device `number` is backed by the file `backing` is (device and inode).
fn backed_by(number: u32, backing: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = fs::metadata(backing) else {
        return false;
    };
    let Ok(f) = LoopDevice::new(number).open() else {
        return false;
    };
    sys::loop_get_status64(f.as_fd())
        .is_ok_and(|info| info.backing_id() == (meta.dev(), meta.ino()))
}

/// [`find`] in a sysfs block directory `sys_block` (a fake one in the tests).
fn find_in(sys_block: &Path, backing: &Path, how: Match) -> Result<Vec<LoopDevice>> {
    let canon = canonical(backing);
    let want = canon.as_os_str().as_bytes();
    let file_name = canon.file_name().map(|n| n.as_bytes());
    let entries = fs::read_dir(sys_block).map_err(|e| Error::loop_dev("list", sys_block, e))?;
    let mut out = Vec::new();
    for ent in entries {
        let ent = ent.map_err(|e| Error::loop_dev("list", sys_block, e))?;
        let name = ent.file_name();
        let Some(number) = name
            .to_str()
            .and_then(|n| n.strip_prefix("loop"))
            .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let attr = ent.path().join("loop/backing_file");
        let text = match fs::read(&attr) {
            Ok(t) => t,
            // Not attached (no `loop/` directory), or removed while we looked.
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ENXIO)) => continue,
            Err(e) => return Err(Error::loop_dev("read", &attr, e)),
        };
        let file = text.strip_suffix(b"\n").unwrap_or(&text);
        let file = file.strip_suffix(DELETED).unwrap_or(file);
        let same_name = file_name.is_some_and(|n| {
            file.strip_suffix(n)
                .is_some_and(|dir| dir.is_empty() || dir.ends_with(b"/"))
        });
        let found = file == want
            || (same_name
                && match how {
                    Match::Name => true,
                    Match::Verified => backed_by(number, backing),
                });
        if found {
            out.push(LoopDevice::new(number));
        }
    }
    out.sort_by_key(|d| d.number);
    Ok(out)
}

/// `path` made absolute with symlinks resolved, as the kernel shows it in `backing_file`; for a
/// file that no longer exists, its canonical directory joined with its name.
fn canonical(path: &Path) -> PathBuf {
    if let Ok(p) = fs::canonicalize(path) {
        return p;
    }
    match (path.parent(), path.file_name()) {
        (Some(dir), Some(name)) => fs::canonicalize(if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        })
        .map(|d| d.join(name))
        .unwrap_or_else(|_| path.to_path_buf()),
        _ => path.to_path_buf(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn bytes(p: &Path) -> &[u8] {
        p.as_os_str().as_bytes()
    }

    /// A fake `/sys/block` with `loopN` directories; `backing` `None` = not attached.
    fn fake(entries: &[(&str, Option<&[u8]>)]) -> tempfile::TempDir {
        let t = tempfile::tempdir().unwrap();
        for (name, backing) in entries {
            let d = t.path().join(name);
            fs::create_dir_all(&d).unwrap();
            if let Some(b) = backing {
                fs::create_dir_all(d.join("loop")).unwrap();
                fs::write(d.join("loop/backing_file"), b).unwrap();
            }
        }
        t
    }

    #[test]
    fn find_matches_canonical_paths_in_sysfs() {
        let files = tempfile::tempdir().unwrap();
        let img = files.path().join("a.img");
        fs::write(&img, b"").unwrap();
        let other = files.path().join("b.img");
        fs::write(&other, b"").unwrap();
        let canon = fs::canonicalize(&img).unwrap();
        let line = |p: &Path, tail: &[u8]| [bytes(p), tail].concat();
        let with_nl = line(&canon, b"\n");
        let deleted = line(&canon, b" (deleted)\n");
        let prefix = line(&canon, b".old\n");
        let b_line = line(&fs::canonicalize(&other).unwrap(), b"\n");
        let sys = fake(&[
            ("loop0", Some(&b_line)),
            ("loop3", Some(&deleted)),
            ("loop12", Some(&with_nl)),
            ("loop2", None),
            ("loop4", Some(&prefix)),
            ("sda", Some(&with_nl)),
            ("loopx", Some(&with_nl)),
        ]);
        // Found through a path with `..` and a symlink too: both are canonicalised.
        let link = files.path().join("link.img");
        std::os::unix::fs::symlink(&img, &link).unwrap();
        let dotted = files.path().join("sub/../a.img");
        fs::create_dir(files.path().join("sub")).unwrap();
        for p in [&img, &link, &dotted] {
            let found = find_in(sys.path(), p, Match::Verified).unwrap();
            assert_eq!(
                found,
                vec![LoopDevice::new(3), LoopDevice::new(12)],
                "{p:?}"
            );
        }
        assert_eq!(found_numbers(sys.path(), &other), vec![0]);
        // The deleted file's old path still finds its device.
        fs::remove_file(&img).unwrap();
        assert_eq!(found_numbers(sys.path(), &img), vec![3, 12]);
        assert!(found_numbers(sys.path(), &files.path().join("none.img")).is_empty());
        assert!(find_in(&files.path().join("no-sysfs"), &other, Match::Verified).is_err());
    }

    fn found_numbers(sys: &Path, p: &Path) -> Vec<u32> {
        numbers(sys, p, Match::Verified)
    }

    fn numbers(sys: &Path, p: &Path, how: Match) -> Vec<u32> {
        find_in(sys, p, how)
            .unwrap()
            .iter()
            .map(|d| d.number)
            .collect()
    }

    #[test]
    fn another_namespaces_path_matches_by_name_only_where_unverified_is_safe() {
        let files = tempfile::tempdir().unwrap();
        let img = files.path().join("pvc-1.img");
        fs::write(&img, b"").unwrap();
        // As a container whose root is elsewhere (or a gone one) shows the same file, and a
        // file whose name only ends the same.
        // (Numbers no machine has: the verified lookup tries to open the real /dev/loopN.)
        let sys = fake(&[
            ("loop901", Some(b"/newroot/var/lib/volumes/pvc-1.img\n")),
            ("loop902", Some(b"/pvc-1.img (deleted)\n")),
            ("loop903", Some(b"/elsewhere/xpvc-1.img\n")),
            ("loop904", Some(b"pvc-1.img\n")),
        ]);
        assert_eq!(numbers(sys.path(), &img, Match::Name), vec![901, 902, 904]);
        // The devices cannot be opened to check device and inode: no match.
        assert!(numbers(sys.path(), &img, Match::Verified).is_empty());
    }

    #[test]
    fn device_paths() {
        assert_eq!(
            LoopDevice::from_path(Path::new("/dev/loop7")),
            Some(LoopDevice::new(7))
        );
        assert_eq!(LoopDevice::new(7).path, PathBuf::from("/dev/loop7"));
        for p in ["/dev/loop", "/dev/loop-control", "/dev/loop1p1", "/dev/sda"] {
            assert_eq!(LoopDevice::from_path(Path::new(p)), None, "{p}");
        }
    }
}

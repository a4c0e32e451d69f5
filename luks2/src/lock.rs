//! cryptsetup's metadata lock for block devices, so that our writers and a concurrent
//! `cryptsetup` (an operator's `luksAddKey` on the node, say) exclude each other.
//!
//! The protocol, as libcryptsetup 2.x keeps it:
//! - a regular file (an image) is locked with `flock` on the file itself: [`crate::io::Device`]'s
//!   own lock already does exactly that;
//! - a block device is locked with `flock` on `/run/cryptsetup/L_<major>:<minor>` (the directory
//!   created 0700, the file created 0644, opened without following symlinks): shared for
//!   readers, exclusive for writers;
//! - after taking the lock, the holder checks that the path still names the inode it locked
//!   (a releasing holder may have unlinked it in between) and starts again if not;
//! - on release, a holder that can get the lock exclusively unlinks the file, then closes it.
//!
//! We only ever take the exclusive (writer) lock; readers of ours do not lock, as before.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// Where libcryptsetup keeps its lock files (its compiled-in default on every distribution).
pub const CRYPTSETUP_LOCK_DIR: &str = "/run/cryptsetup";

/// An exclusive cryptsetup-protocol lock on a block device, released on drop.
#[derive(Debug)]
pub struct BlockDeviceLock {
    file: File,
    path: PathBuf,
}

/// The lock file name for a device number: `L_<major>:<minor>` (glibc's dev_t encoding).
pub fn resource_name(rdev: u64) -> String {
    let major = ((rdev >> 8) & 0xfff) | ((rdev >> 32) & 0xffff_f000);
    let minor = (rdev & 0xff) | ((rdev >> 12) & 0xffff_ff00);
    format!("L_{major}:{minor}")
}

impl BlockDeviceLock {
    /// Takes the writer lock of block device `rdev` in [`CRYPTSETUP_LOCK_DIR`], retrying for up
    /// to `budget`; [`Error::Busy`] if another process keeps it.
    pub fn acquire(rdev: u64, budget: Duration) -> Result<BlockDeviceLock> {
        Self::acquire_in(Path::new(CRYPTSETUP_LOCK_DIR), rdev, budget)
    }

    /// As [`BlockDeviceLock::acquire`], with the lock directory given (tests).
    pub fn acquire_in(dir: &Path, rdev: u64, budget: Duration) -> Result<BlockDeviceLock> {
        ensure_lock_dir(dir)?;
        let path = dir.join(resource_name(rdev));
        let ioerr = |e| Error::io("taking cryptsetup's lock file for the device", e);
        let start = Instant::now();
        loop {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .mode(0o644)
                .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                .open(&path)
                .map_err(ioerr)?;
            match file.try_lock() {
                Ok(()) => {
                    // A releasing holder may have unlinked the path between our open and flock;
                    // then the lock we hold is on an orphan inode and protects nothing.
                    if same_inode(&file, &path).map_err(ioerr)? {
                        return Ok(BlockDeviceLock { file, path });
                    }
                }
                Err(std::fs::TryLockError::WouldBlock) => {
                    if start.elapsed() >= budget {
                        return Err(Error::Busy(format!(
                            "another process (cryptsetup?) holds the device's metadata lock {}",
                            path.display()
                        )));
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(std::fs::TryLockError::Error(e)) => return Err(ioerr(e)),
            }
        }
    }

    /// The lock file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for BlockDeviceLock {
    fn drop(&mut self) {
        // We hold the lock exclusively: remove the file if it is still ours, as cryptsetup does,
        // so that /run/cryptsetup does not fill up; closing the file then releases the lock.
        if let Ok(true) = same_inode(&self.file, &self.path) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Does `path` still name the inode `file` has open?
fn same_inode(file: &File, path: &Path) -> io::Result<bool> {
    let held = file.metadata()?;
    match std::fs::symlink_metadata(path) {
        Ok(now) => Ok(now.ino() == held.ino() && now.dev() == held.dev()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// Creates the lock directory (0700) if it is missing; refuses a path that is not a directory
/// (a symlink included), as cryptsetup does ("Locking aborted").
fn ensure_lock_dir(dir: &Path) -> Result<()> {
    match std::fs::symlink_metadata(dir) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(Error::io(
            "locking aborted: the lock path (/run/cryptsetup) is not a directory",
            io::Error::from(io::ErrorKind::NotADirectory),
        )),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            match std::fs::DirBuilder::new().mode(0o700).create(dir) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => ensure_lock_dir(dir),
                Err(e) => Err(Error::io(
                    "locking aborted: cannot create the lock directory (/run/cryptsetup)",
                    e,
                )),
            }
        }
        Err(e) => Err(Error::io(
            "locking aborted: the lock directory (/run/cryptsetup) is unusable",
            e,
        )),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn resource_names_follow_glibc_dev_t() {
        // makedev(7, 3) and makedev(259, 1) as glibc encodes them.
        assert_eq!(resource_name((7 << 8) | 3), "L_7:3");
        assert_eq!(resource_name((259 << 8) | 1), "L_259:1");
        // A minor above 255 and a major above 4095: Python's os.makedev(0x1234, 300).
        assert_eq!(resource_name(17_592_187_237_420), "L_4660:300");
    }

    #[test]
    fn exclusive_then_released_and_unlinked() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("cryptsetup");
        let rdev = (7 << 8) | 9;
        let held = BlockDeviceLock::acquire_in(&dir, rdev, Duration::ZERO).unwrap();
        assert_eq!(held.path(), dir.join("L_7:9"));
        let mode = std::fs::metadata(&dir).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o700);
        let err = BlockDeviceLock::acquire_in(&dir, rdev, Duration::from_millis(60)).unwrap_err();
        assert!(matches!(err, Error::Busy(_)), "{err}");
        // Another device is independent.
        drop(BlockDeviceLock::acquire_in(&dir, rdev + 1, Duration::ZERO).unwrap());
        drop(held);
        assert!(
            !dir.join("L_7:9").exists(),
            "released lock file left behind"
        );
        drop(BlockDeviceLock::acquire_in(&dir, rdev, Duration::ZERO).unwrap());
    }

    #[test]
    fn a_shared_holder_as_cryptsetup_readers_take_it_blocks_us() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("L_7:1");
        let reader = File::create(&path).unwrap();
        reader.lock_shared().unwrap();
        let err = BlockDeviceLock::acquire_in(tmp.path(), (7 << 8) | 1, Duration::from_millis(40))
            .unwrap_err();
        assert!(matches!(err, Error::Busy(_)), "{err}");
        reader.unlock().unwrap();
        drop(BlockDeviceLock::acquire_in(tmp.path(), (7 << 8) | 1, Duration::ZERO).unwrap());
    }

    #[test]
    fn a_lock_dir_that_is_a_symlink_or_file_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("file");
        std::fs::write(&file, b"").unwrap();
        assert!(BlockDeviceLock::acquire_in(&file, 1, Duration::ZERO).is_err());
        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(tmp.path(), &link).unwrap();
        assert!(BlockDeviceLock::acquire_in(&link, 1, Duration::ZERO).is_err());
    }

    #[test]
    fn a_symlinked_lock_file_is_not_followed() {
        let tmp = tempfile::tempdir().unwrap();
        let target = tmp.path().join("elsewhere");
        std::fs::write(&target, b"keep").unwrap();
        std::os::unix::fs::symlink(&target, tmp.path().join("L_7:2")).unwrap();
        assert!(BlockDeviceLock::acquire_in(tmp.path(), (7 << 8) | 2, Duration::ZERO).is_err());
        assert_eq!(std::fs::read(&target).unwrap(), b"keep");
    }
}

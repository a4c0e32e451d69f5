//! [`RecordingMounter`]: mkfs writes the filesystem's superblock magic (so that the driver's
//! probe finds it again), mounts are a table, and every call is recorded. Failures of mkfs and
//! mount are switched on and off.

use std::collections::HashMap;
use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use csi::host::fs::FsType;
use csi::host::mount::{MountInfo, Mounter, Usage, device_number};
use csi::{Error, Result};

/// Mounts in a table; mkfs writes the magic bytes.
#[derive(Debug, Default)]
pub struct RecordingMounter {
    mounts: Mutex<HashMap<PathBuf, MountInfo>>,
    /// Per mount point, the device its filesystem is on (a bind inherits its source's).
    origins: Mutex<HashMap<PathBuf, PathBuf>>,
    mkfs: AtomicUsize,
    fail_mount: AtomicBool,
    fail_mkfs: AtomicBool,
}

impl RecordingMounter {
    /// A mounter with nothing mounted.
    pub fn new() -> Self {
        Self::default()
    }

    /// From now on, mount fails (a bad mount option).
    pub fn fail_mount(&self, on: bool) {
        self.fail_mount.store(on, Ordering::SeqCst);
    }

    /// From now on, mkfs fails.
    pub fn fail_mkfs(&self, on: bool) {
        self.fail_mkfs.store(on, Ordering::SeqCst);
    }

    /// How many filesystems were made.
    pub fn mkfs_count(&self) -> usize {
        self.mkfs.load(Ordering::SeqCst)
    }

    /// The source of the mount at `target`, if mounted.
    pub fn mounted_from(&self, target: &Path) -> Option<PathBuf> {
        self.mounts
            .lock()
            .unwrap()
            .get(target)
            .map(|m| PathBuf::from(&m.source))
    }

    /// How many mounts there are.
    pub fn mount_count(&self) -> usize {
        self.mounts.lock().unwrap().len()
    }
}

impl Mounter for RecordingMounter {
    fn mounted(&self, target: &Path) -> Result<Option<MountInfo>> {
        Ok(self.mounts.lock().unwrap().get(target).cloned())
    }

    fn shows(&self, mount: &MountInfo, source: &Path) -> Result<bool> {
        let origin = self.origins.lock().unwrap().get(&mount.target).cloned();
        Ok(Path::new(&mount.source) == source || origin.as_deref() == Some(source))
    }

    fn mkfs(&self, device: &Path, fs: FsType) -> Result<()> {
        if self.fail_mkfs.load(Ordering::SeqCst) {
            return Err(Error::internal("mkfs.ext4 failed (injected)"));
        }
        let f = OpenOptions::new()
            .write(true)
            .open(device)
            .map_err(|e| Error::io("opening the device for mkfs", e))?;
        match fs {
            FsType::Ext4 => f.write_all_at(&[0x53, 0xef], 1024 + 56),
            FsType::Xfs => f.write_all_at(b"XFSB", 0),
        }
        .map_err(|e| Error::io("writing the superblock", e))?;
        self.mkfs.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    fn mount(&self, device: &Path, target: &Path, fs: FsType, options: &[String]) -> Result<()> {
        if self.fail_mount.load(Ordering::SeqCst) {
            return Err(Error::internal(format!(
                "mount -o {} failed (injected): bad option",
                options.join(",")
            )));
        }
        let info = MountInfo {
            dev: device_number(device)?,
            target: target.to_path_buf(),
            fstype: fs.as_str().to_owned(),
            source: device.display().to_string(),
            options: "rw".into(),
        };
        self.mounts
            .lock()
            .unwrap()
            .insert(target.to_path_buf(), info);
        self.origins
            .lock()
            .unwrap()
            .insert(target.to_path_buf(), device.to_path_buf());
        Ok(())
    }

    fn bind(&self, source: &Path, target: &Path, read_only: bool, _: &[String]) -> Result<()> {
        let info = MountInfo {
            dev: device_number(source).unwrap_or_default(),
            target: target.to_path_buf(),
            fstype: "bind".into(),
            source: source.display().to_string(),
            options: if read_only { "ro" } else { "rw" }.into(),
        };
        let origin = {
            let origins = self.origins.lock().unwrap();
            origins
                .get(source)
                .cloned()
                .unwrap_or_else(|| source.to_path_buf())
        };
        self.mounts
            .lock()
            .unwrap()
            .insert(target.to_path_buf(), info);
        self.origins
            .lock()
            .unwrap()
            .insert(target.to_path_buf(), origin);
        Ok(())
    }

    fn unmount(&self, target: &Path) -> Result<()> {
        self.mounts.lock().unwrap().remove(target);
        self.origins.lock().unwrap().remove(target);
        Ok(())
    }

    fn grow(&self, _device: &Path, _target: &Path, _fs: FsType) -> Result<()> {
        Ok(())
    }

    fn usage(&self, _path: &Path) -> Result<Usage> {
        Ok(Usage {
            bytes: (0, 0, 0),
            inodes: (0, 0, 0),
        })
    }
}

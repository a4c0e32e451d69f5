//! Filesystems and mounts on the node, behind the [`Mounter`] trait: mkfs, mount, bind mounts,
//! unmount, online grow, usage. [`SystemMounter`] runs the util-linux, e2fsprogs and xfsprogs
//! tools (as kubelet's mount-utils does) and reads `/proc/self/mountinfo`; state comes from the
//! kernel, so a restarted driver sees what is mounted.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::exec::run;
use super::fs::FsType;
use crate::error::{Error, Result};

/// One line of `/proc/self/mountinfo`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MountInfo {
    /// `major:minor` of the mounted device.
    pub dev: String,
    /// The mount point.
    pub target: PathBuf,
    /// The filesystem type.
    pub fstype: String,
    /// The mount source (device path).
    pub source: String,
    /// Per-mount options (`rw`/`ro`, ...).
    pub options: String,
}

/// Usage of a mounted filesystem.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Usage {
    /// Total, available and used bytes.
    pub bytes: (u64, u64, u64),
    /// Total, available and used inodes.
    pub inodes: (u64, u64, u64),
}

/// Everything the node does with filesystems and mounts.
pub trait Mounter: Send + Sync + std::fmt::Debug {
    /// The mount at exactly `target`, if any.
    fn mounted(&self, target: &Path) -> Result<Option<MountInfo>>;
    /// Makes a filesystem on `device`.
    fn mkfs(&self, device: &Path, fs: FsType) -> Result<()>;
    /// Mounts `device` (a filesystem of type `fs`) on `target` with `options`.
    fn mount(&self, device: &Path, target: &Path, fs: FsType, options: &[String]) -> Result<()>;
    /// Bind-mounts `source` (a directory or a device node) on `target`, read-only if asked.
    fn bind(&self, source: &Path, target: &Path, read_only: bool, options: &[String])
    -> Result<()>;
    /// Unmounts `target` (not mounted: success).
    fn unmount(&self, target: &Path) -> Result<()>;
    /// Grows the filesystem mounted at `target` on `device` to the device's size.
    fn grow(&self, device: &Path, target: &Path, fs: FsType) -> Result<()>;
    /// Usage of the filesystem at `path`.
    fn usage(&self, path: &Path) -> Result<Usage>;
}

/// The system implementation: util-linux, e2fsprogs and xfsprogs, `/proc/self/mountinfo`.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemMounter;

/// Decodes mountinfo's octal escapes (`\040` for a space).
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && let Some(v) = b
                .get(i + 1..i + 4)
                .and_then(|o| std::str::from_utf8(o).ok())
                .and_then(|o| u8::from_str_radix(o, 8).ok())
        {
            out.push(v);
            i += 4;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parses `/proc/self/mountinfo` text.
pub fn parse_mountinfo(text: &str) -> Vec<MountInfo> {
    text.lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let l: Vec<&str> = left.split(' ').collect();
            let r: Vec<&str> = right.split(' ').collect();
            Some(MountInfo {
                dev: (*l.get(2)?).to_owned(),
                target: PathBuf::from(unescape(l.get(4)?)),
                options: (*l.get(5)?).to_owned(),
                fstype: (*r.first()?).to_owned(),
                source: unescape(r.get(1)?),
            })
        })
        .collect()
}

impl Mounter for SystemMounter {
    fn mounted(&self, target: &Path) -> Result<Option<MountInfo>> {
        let text = fs::read_to_string("/proc/self/mountinfo")
            .map_err(|e| Error::io("reading /proc/self/mountinfo", e))?;
        // The last mount on a path is the visible one.
        Ok(parse_mountinfo(&text)
            .into_iter()
            .rev()
            .find(|m| m.target == target))
    }

    fn mkfs(&self, device: &Path, fs: FsType) -> Result<()> {
        match fs {
            // No discard pass: a fresh LUKS2 volume reads as random data anyway, and a discard
            // through the whole device costs seconds.
            FsType::Ext4 => run(Command::new("mkfs.ext4")
                .args([
                    "-q",
                    "-F",
                    "-E",
                    "nodiscard,lazy_itable_init=1,lazy_journal_init=1",
                ])
                .arg(device))?,
            FsType::Xfs => run(Command::new("mkfs.xfs").args(["-q", "-K"]).arg(device))?,
        };
        Ok(())
    }

    fn mount(&self, device: &Path, target: &Path, fs: FsType, options: &[String]) -> Result<()> {
        let mut cmd = Command::new("mount");
        cmd.args(["-t", fs.as_str()]);
        let mut opts: Vec<String> = options.to_vec();
        if fs == FsType::Xfs && !opts.iter().any(|o| o == "nouuid") {
            // Clones and restored volumes share the filesystem UUID; xfs refuses a second mount
            // of the same UUID otherwise.
            opts.push("nouuid".to_owned());
        }
        if !opts.is_empty() {
            cmd.arg("-o").arg(opts.join(","));
        }
        run(cmd.arg(device).arg(target))?;
        Ok(())
    }

    fn bind(
        &self,
        source: &Path,
        target: &Path,
        read_only: bool,
        options: &[String],
    ) -> Result<()> {
        run(Command::new("mount").arg("--bind").arg(source).arg(target))?;
        let mut remount: Vec<String> = vec!["remount".into(), "bind".into()];
        if read_only {
            remount.push("ro".into());
        }
        remount.extend(options.iter().cloned());
        if remount.len() > 2
            && let Err(e) = run(Command::new("mount")
                .arg("-o")
                .arg(remount.join(","))
                .arg(target))
        {
            let _ = self.unmount(target);
            return Err(e);
        }
        Ok(())
    }

    fn unmount(&self, target: &Path) -> Result<()> {
        while self.mounted(target)?.is_some() {
            run(Command::new("umount").arg(target))?;
        }
        Ok(())
    }

    fn grow(&self, device: &Path, target: &Path, fs: FsType) -> Result<()> {
        match fs {
            FsType::Ext4 => run(Command::new("resize2fs").arg(device))?,
            FsType::Xfs => run(Command::new("xfs_growfs").arg(target))?,
        };
        Ok(())
    }

    fn usage(&self, path: &Path) -> Result<Usage> {
        let st = rustix::fs::statvfs(path)
            .map_err(|e| Error::io(format!("statvfs {}", path.display()), e.into()))?;
        let f = st.f_frsize;
        let total = st.f_blocks.saturating_mul(f);
        let avail = st.f_bavail.saturating_mul(f);
        let used = st.f_blocks.saturating_sub(st.f_bfree).saturating_mul(f);
        Ok(Usage {
            bytes: (total, avail, used),
            inodes: (
                st.f_files,
                st.f_ffree,
                st.f_files.saturating_sub(st.f_ffree),
            ),
        })
    }
}

/// `major:minor` of a block device node, as mountinfo shows it.
pub fn device_number(device: &Path) -> Result<String> {
    use std::os::unix::fs::MetadataExt;
    let rdev = fs::metadata(device)
        .map_err(|e| Error::io(format!("stat {}", device.display()), e))?
        .rdev();
    Ok(format!(
        "{}:{}",
        rustix::fs::major(rdev),
        rustix::fs::minor(rdev)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_lines_parse() {
        let text = "36 35 98:0 /mnt1 /mnt/a\\040b rw,noatime master:1 - ext4 /dev/mapper/x rw\n\
                    37 35 7:1 / /var/lib/kubelet/x ro shared:2 - xfs /dev/loop1 ro,nouuid\n";
        let m = parse_mountinfo(text);
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].target, PathBuf::from("/mnt/a b"));
        assert_eq!(m[0].source, "/dev/mapper/x");
        assert_eq!(m[0].fstype, "ext4");
        assert_eq!(m[0].dev, "98:0");
        assert_eq!(m[1].options, "ro");
        assert_eq!(m[1].target, PathBuf::from("/var/lib/kubelet/x"));
    }
}

//! Filesystems and mounts on the node, behind the [`Mounter`] trait: mkfs, mount, bind mounts,
//! unmount, online grow, usage. [`SystemMounter`] mounts, bind-mounts and unmounts with mount(2)
//! and umount(2) (no `mount` process: the options are translated as mount(8) does, see
//! [`MountOptions`]), runs the e2fsprogs and xfsprogs tools for mkfs and grow, and reads
//! `/proc/self/mountinfo`; state comes from the kernel, so a restarted driver sees what is
//! mounted.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use rustix::fs::StatVfsMountFlags;
use rustix::io::Errno;
use rustix::mount::{MountFlags, UnmountFlags};

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
    /// Whether `mount` (what [`Mounter::mounted`] found) shows `source`: a filesystem on the
    /// block device `source`, a bind of it, or a bind of the directory or device node `source`
    /// itself. What the driver checks before it takes a mount for its own: it never reuses,
    /// unmounts or removes another volume's mount.
    fn shows(&self, mount: &MountInfo, source: &Path) -> Result<bool>;
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

/// The system implementation: mount(2) and umount(2), e2fsprogs and xfsprogs,
/// `/proc/self/mountinfo`.
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

    fn shows(&self, mount: &MountInfo, source: &Path) -> Result<bool> {
        use std::os::unix::fs::{FileTypeExt, MetadataExt};
        let stat =
            |p: &Path| fs::metadata(p).map_err(|e| Error::io(format!("stat {}", p.display()), e));
        let src = stat(source)?;
        if src.file_type().is_block_device() && mount.dev == dev_text(src.rdev()) {
            return Ok(true);
        }
        // A bind mount: the target is the source's own inode.
        let tgt = stat(&mount.target)?;
        Ok(tgt.dev() == src.dev() && tgt.ino() == src.ino())
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
        let mut opts = MountOptions::parse(options);
        if fs == FsType::Xfs && !opts.data.iter().any(|o| o == "nouuid") {
            // Clones and restored volumes share the filesystem UUID; xfs refuses a second mount
            // of the same UUID otherwise.
            opts.data.push("nouuid".to_owned());
        }
        let data = opts.data_string()?;
        rustix::mount::mount(device, target, fs.as_str(), opts.flags(), data.as_deref()).map_err(
            |e| {
                mount_error(
                    format!(
                        "mounting {} on {} (type {}, options {:?})",
                        device.display(),
                        target.display(),
                        fs.as_str(),
                        options.join(",")
                    ),
                    e,
                )
            },
        )
    }

    fn bind(
        &self,
        source: &Path,
        target: &Path,
        read_only: bool,
        options: &[String],
    ) -> Result<()> {
        rustix::mount::mount_bind(source, target).map_err(|e| {
            mount_error(
                format!("bind-mounting {} on {}", source.display(), target.display()),
                e,
            )
        })?;
        if !read_only && options.is_empty() {
            return Ok(());
        }
        // As `mount -o remount,bind,ro,<options>`: the bind mount keeps the per-mount flags it
        // has (its source's) with the asked ones on top; a bind remount takes no data options.
        let remount = || -> Result<()> {
            let current = rustix::fs::statvfs(target)
                .map_err(|e| mount_error(format!("statvfs {}", target.display()), e))?;
            let mut opts = MountOptions::parse(options);
            if read_only {
                opts.set |= MountFlags::RDONLY;
                opts.clear -= MountFlags::RDONLY;
            }
            let flags = MountFlags::BIND | opts.apply(mount_flags_of(current.f_flag));
            rustix::mount::mount_remount(target, flags, c"").map_err(|e| {
                mount_error(
                    format!(
                        "remounting the bind mount {} (read-only: {read_only}, options {:?})",
                        target.display(),
                        options.join(",")
                    ),
                    e,
                )
            })
        };
        if let Err(e) = remount() {
            let _ = self.unmount(target);
            return Err(e);
        }
        Ok(())
    }

    fn unmount(&self, target: &Path) -> Result<()> {
        while self.mounted(target)?.is_some() {
            if let Err(e) = rustix::mount::unmount(target, UnmountFlags::empty()) {
                // Unmounted meanwhile (EINVAL: not a mount point any more): done.
                if self.mounted(target)?.is_none() {
                    break;
                }
                return Err(mount_error(format!("unmounting {}", target.display()), e));
            }
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

/// A mount(2) or umount(2) failure: what was done, the errno's name, mount(8)'s reading of it,
/// and the system's message (in the source chain too). Every one is an internal error, as a failed
/// `mount` process was.
fn mount_error(what: String, e: Errno) -> Error {
    let (name, hint) = match e {
        Errno::BUSY => ("EBUSY", "already mounted or busy"),
        Errno::NOENT => ("ENOENT", "the mount point or the device does not exist"),
        Errno::INVAL => (
            "EINVAL",
            "wrong filesystem type, bad option, bad superblock, or not mounted",
        ),
        Errno::NODEV => ("ENODEV", "filesystem type not supported by the kernel"),
        Errno::NOTBLK => ("ENOTBLK", "not a block device"),
        Errno::NXIO => ("ENXIO", "no such device"),
        Errno::ROFS => ("EROFS", "the device is write-protected"),
        Errno::ACCESS => ("EACCES", "permission denied"),
        Errno::PERM => ("EPERM", "operation not permitted"),
        Errno::NOTDIR => ("ENOTDIR", "the mount point is not a directory"),
        Errno::IO => ("EIO", "I/O error"),
        _ => ("", ""),
    };
    let io = std::io::Error::from(e);
    let msg = if name.is_empty() {
        format!("{what}: {io}")
    } else {
        format!("{what}: {name} ({hint}): {io}")
    };
    Error::internal(msg).with_source(io)
}

/// Mount options as mount(8) reads them: the filesystem-independent ones (`ro`, `nosuid`, `nodev`,
/// `noexec`, the atime family, ...) become per-mount flags (`MS_*`) to set or clear, the last one
/// winning; options only mount(8) itself reads (`defaults`, `auto`, `noauto`, `nofail`,
/// `_netdev`, `x-*`, `comment=*`) are dropped; everything else (`discard`, `nouuid`,
/// `data=ordered`, ...) is the filesystem's data string, comma-joined. An option string may hold
/// several comma-separated options, as in `-o`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MountOptions {
    /// Flags to set.
    pub set: MountFlags,
    /// Flags to clear (`rw`, `suid`, `dev`, `exec`, `async`, `atime`, ...).
    pub clear: MountFlags,
    /// The filesystem's own options, in order.
    pub data: Vec<String>,
}

/// mount(8)'s flag options (util-linux libmount's Linux map): name, flag, and whether the option
/// sets it (`true`) or clears it.
const FLAG_OPTIONS: &[(&str, MountFlags, bool)] = &[
    ("ro", MountFlags::RDONLY, true),
    ("rw", MountFlags::RDONLY, false),
    ("nosuid", MountFlags::NOSUID, true),
    ("suid", MountFlags::NOSUID, false),
    ("nodev", MountFlags::NODEV, true),
    ("dev", MountFlags::NODEV, false),
    ("noexec", MountFlags::NOEXEC, true),
    ("exec", MountFlags::NOEXEC, false),
    ("sync", MountFlags::SYNCHRONOUS, true),
    ("async", MountFlags::SYNCHRONOUS, false),
    ("dirsync", MountFlags::DIRSYNC, true),
    ("mand", MountFlags::PERMIT_MANDATORY_FILE_LOCKING, true),
    ("nomand", MountFlags::PERMIT_MANDATORY_FILE_LOCKING, false),
    ("noatime", MountFlags::NOATIME, true),
    ("atime", MountFlags::NOATIME, false),
    ("nodiratime", MountFlags::NODIRATIME, true),
    ("diratime", MountFlags::NODIRATIME, false),
    ("relatime", MountFlags::RELATIME, true),
    ("norelatime", MountFlags::RELATIME, false),
    ("strictatime", MountFlags::STRICTATIME, true),
    ("nostrictatime", MountFlags::STRICTATIME, false),
    ("lazytime", MountFlags::LAZYTIME, true),
    ("nolazytime", MountFlags::LAZYTIME, false),
    ("nosymfollow", MountFlags::NOSYMFOLLOW, true),
    ("symfollow", MountFlags::NOSYMFOLLOW, false),
    ("silent", MountFlags::SILENT, true),
    ("loud", MountFlags::SILENT, false),
];

impl MountOptions {
    /// No options.
    pub fn none() -> Self {
        MountOptions {
            set: MountFlags::empty(),
            clear: MountFlags::empty(),
            data: Vec::new(),
        }
    }

    /// Reads CSI mount flags (each one option or a comma-separated list of them).
    pub fn parse(options: &[String]) -> Self {
        let mut out = MountOptions::none();
        for opt in options.iter().flat_map(|o| o.split(',')) {
            if let Some(&(_, flag, on)) = FLAG_OPTIONS.iter().find(|(n, _, _)| *n == opt) {
                if on {
                    out.set |= flag;
                    out.clear -= flag;
                } else {
                    out.clear |= flag;
                    out.set -= flag;
                }
            } else if opt.is_empty()
                || matches!(opt, "defaults" | "auto" | "noauto" | "nofail" | "_netdev")
                || opt.starts_with("x-")
                || opt.starts_with("X-")
                || opt.starts_with("comment=")
            {
                // mount(8)'s own options: never passed to the kernel.
            } else {
                out.data.push(opt.to_owned());
            }
        }
        out
    }

    /// The flags of a new mount.
    pub fn flags(&self) -> MountFlags {
        self.set
    }

    /// `current` with these options applied (a remount).
    pub fn apply(&self, current: MountFlags) -> MountFlags {
        (current | self.set) - self.clear
    }

    /// The data string (`None` without data options).
    fn data_string(&self) -> Result<Option<std::ffi::CString>> {
        if self.data.is_empty() {
            return Ok(None);
        }
        std::ffi::CString::new(self.data.join(","))
            .map(Some)
            .map_err(|_| Error::invalid("a mount option contains a NUL byte"))
    }
}

/// The per-mount flags statvfs reports, as the mount flags that keep them on a remount.
fn mount_flags_of(st: StatVfsMountFlags) -> MountFlags {
    [
        (StatVfsMountFlags::RDONLY, MountFlags::RDONLY),
        (StatVfsMountFlags::NOSUID, MountFlags::NOSUID),
        (StatVfsMountFlags::NODEV, MountFlags::NODEV),
        (StatVfsMountFlags::NOEXEC, MountFlags::NOEXEC),
        (StatVfsMountFlags::SYNCHRONOUS, MountFlags::SYNCHRONOUS),
        (
            StatVfsMountFlags::MANDLOCK,
            MountFlags::PERMIT_MANDATORY_FILE_LOCKING,
        ),
        (StatVfsMountFlags::NOATIME, MountFlags::NOATIME),
        (StatVfsMountFlags::NODIRATIME, MountFlags::NODIRATIME),
        (StatVfsMountFlags::RELATIME, MountFlags::RELATIME),
    ]
    .into_iter()
    .filter(|(s, _)| st.contains(*s))
    .fold(MountFlags::empty(), |acc, (_, m)| acc | m)
}

/// `major:minor` of a block device node, as mountinfo shows it.
pub fn device_number(device: &Path) -> Result<String> {
    use std::os::unix::fs::MetadataExt;
    let rdev = fs::metadata(device)
        .map_err(|e| Error::io(format!("stat {}", device.display()), e))?
        .rdev();
    Ok(dev_text(rdev))
}

/// A device number as mountinfo writes it (`major:minor`).
fn dev_text(rdev: u64) -> String {
    format!("{}:{}", rustix::fs::major(rdev), rustix::fs::minor(rdev))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(o: &[&str]) -> MountOptions {
        MountOptions::parse(&o.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>())
    }

    #[test]
    fn mount_options_become_flags_and_data_as_mount8_reads_them() {
        let o = opts(&[
            "ro",
            "nosuid,nodev",
            "noexec",
            "discard",
            "data=ordered",
            "noatime",
        ]);
        assert_eq!(
            o.flags(),
            MountFlags::RDONLY
                | MountFlags::NOSUID
                | MountFlags::NODEV
                | MountFlags::NOEXEC
                | MountFlags::NOATIME
        );
        assert_eq!(o.data, ["discard", "data=ordered"]);
        assert_eq!(
            o.data_string().unwrap().unwrap().as_bytes(),
            b"discard,data=ordered"
        );
        // The last one wins; mount(8)'s own options never reach the kernel.
        let o = opts(&[
            "ro",
            "rw",
            "defaults",
            "x-mount.mkdir",
            "nofail",
            "_netdev",
            "noauto",
        ]);
        assert_eq!(o.flags(), MountFlags::empty());
        assert_eq!(o.clear, MountFlags::RDONLY);
        assert!(o.data.is_empty());
        assert_eq!(o.data_string().unwrap(), None);
        assert_eq!(opts(&[]), MountOptions::none());
        assert!(opts(&["a\0b"]).data_string().is_err());
    }

    #[test]
    fn a_remount_keeps_the_current_flags_and_applies_the_options() {
        let current = mount_flags_of(
            StatVfsMountFlags::NOSUID | StatVfsMountFlags::NODEV | StatVfsMountFlags::RELATIME,
        );
        assert_eq!(
            current,
            MountFlags::NOSUID | MountFlags::NODEV | MountFlags::RELATIME
        );
        let o = opts(&["ro", "dev", "noexec", "discard"]);
        assert_eq!(
            o.apply(current),
            MountFlags::RDONLY | MountFlags::NOSUID | MountFlags::NOEXEC | MountFlags::RELATIME
        );
    }

    #[test]
    fn mount_errors_name_the_call_and_the_errno() {
        let e = mount_error("mounting /dev/x on /t".into(), Errno::BUSY);
        assert_eq!(e.kind(), crate::error::Kind::Internal);
        let m = e.display_chain();
        assert!(
            m.starts_with("mounting /dev/x on /t: EBUSY (already mounted or busy)"),
            "{m}"
        );
        assert!(m.contains("os error 16"), "{m}");
        let m = mount_error("m".into(), Errno::INVAL).display_chain();
        assert!(m.contains("EINVAL (wrong filesystem type"), "{m}");
    }

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

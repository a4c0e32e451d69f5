//! Header backup and restore, repair, erase.
//!
//! - Backup (`luksHeaderBackup`): the first `2 * hdr_size + keyslots_size` bytes of the device
//!   (both header copies and every keyslot area) into a new file of mode 0400.
//! - Restore (`luksHeaderRestore`): the backup (a file of at most [`MAX_BACKUP_SIZE`], 136 MiB)
//!   must be a valid LUKS2 header whose size matches its own geometry; if the device holds a LUKS2 header, its geometry (header and keyslots
//!   sizes, data offset) must be the same.
//! - Repair: rewrites a damaged or stale header copy from the good one (fresh salt). As
//!   `cryptsetup repair`, it proceeds when another known signature (a filesystem, swap) is also
//!   on the device: every other operation refuses such a device (ambiguous signatures).
//! - Erase (`luksErase`): removes every keyslot from the metadata, then wipes the whole keyslots
//!   area with random data.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use crate::error::{Error, Result};
use crate::format::{Signature, detect_signature};
use crate::header::{self, Header, RepairOutcome};
use crate::io::{Device, ReadAt, ReadOnly, with_exclusive_lock};
use crate::keyslot::wipe_area;
use crate::metadata::{HDR_SIZES, MAX_KEYSLOTS_SIZE};

/// The largest header copy (4 MiB).
const MAX_HDR_SIZE: u64 = HDR_SIZES[HDR_SIZES.len() - 1];

fn area_len(h: &Header) -> Result<usize> {
    usize::try_from(h.header_area_size())
        .map_err(|_| Error::InvalidArgument("header area too large".into()))
}

/// Writes the header area of `dev` to a new file at `path` (mode 0400). Fails if it exists.
pub fn header_backup<D: Device + ?Sized>(dev: &D, path: &Path) -> Result<u64> {
    let h = header::read(dev)?;
    let mut buf = vec![0u8; area_len(&h)?];
    dev.read_exact_at(0, &mut buf)
        .map_err(|e| Error::io("reading the header area", e))?;
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o400)
        .open(path)
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                Error::InvalidArgument(format!(
                    "header backup file {} already exists",
                    path.display()
                ))
            } else {
                Error::io("creating the header backup file", e)
            }
        })?;
    f.write_all(&buf)
        .map_err(|e| Error::io("writing the header backup", e))?;
    f.sync_all()
        .map_err(|e| Error::io("syncing the header backup", e))?;
    Ok(buf.len() as u64)
}

/// The largest header area, and so the largest header backup: two 4 MiB header copies and a
/// 128 MiB keyslots area.
pub const MAX_BACKUP_SIZE: u64 = 2 * MAX_HDR_SIZE + MAX_KEYSLOTS_SIZE;

/// Validates a header backup image and returns its header and the bytes to restore. A file
/// larger than [`MAX_BACKUP_SIZE`] is refused without reading it (or, for something without a
/// size such as a pipe or a character device, after reading just past that size).
pub fn read_backup(path: &Path) -> Result<(Header, Vec<u8>)> {
    let too_large = || {
        Error::InvalidArgument(format!(
            "header backup file {} is larger than a LUKS2 header area can be ({MAX_BACKUP_SIZE} \
             bytes)",
            path.display()
        ))
    };
    let file = File::open(path).map_err(|e| Error::io("opening the header backup", e))?;
    let meta = file
        .metadata()
        .map_err(|e| Error::io("inspecting the header backup", e))?;
    if meta.len() > MAX_BACKUP_SIZE {
        return Err(too_large());
    }
    let mut bytes = Vec::new();
    file.take(MAX_BACKUP_SIZE + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| Error::io("reading the header backup", e))?;
    if bytes.len() as u64 > MAX_BACKUP_SIZE {
        return Err(too_large());
    }
    let h = header::read_bytes(&bytes)?;
    let len = area_len(&h)?;
    let area = bytes
        .get(..len)
        .ok_or_else(|| Error::header("backup", "file is shorter than its header area"))?;
    Ok((h, area.to_vec()))
}

/// Restores the header area of `dev` from the backup at `path`.
pub fn header_restore<D: Device + ?Sized>(dev: &mut D, path: &Path) -> Result<()> {
    let (backup, bytes) = read_backup(path)?;
    backup.metadata.ensure_writable()?;
    if let Ok(current) = header::read(&*dev) {
        let same = current.hdr_size() == backup.hdr_size()
            && current.metadata.config.keyslots_size == backup.metadata.config.keyslots_size
            && current.metadata.data_offset() == backup.metadata.data_offset();
        if !same {
            return Err(Error::InvalidArgument(
                "data offset or header geometry differs on device and backup, restore failed"
                    .into(),
            ));
        }
    }
    let size = dev
        .size()
        .map_err(|e| Error::io("reading the device size", e))?;
    if size < bytes.len() as u64 {
        return Err(Error::InvalidArgument(
            "device is too small for the header backup".into(),
        ));
    }
    with_exclusive_lock(dev, |dev| {
        dev.write_all_at(0, &bytes)
            .map_err(|e| Error::io("restoring the header", e))?;
        dev.sync()
            .map_err(|e| Error::io("syncing the restored header", e))
    })?;
    header::read(&*dev).map(|_| ())
}

/// Rewrites a damaged or stale header copy from the valid one. As `cryptsetup repair`, this is
/// the one operation that proceeds on a device that also carries another signature (the
/// operator asked for it); a device without a LUKS2 header is [`Error::NotLuks2`] or the
/// header's error, never busy.
pub fn repair<D: Device + ?Sized>(dev: &mut D) -> Result<RepairOutcome> {
    header::repair(dev)
}

/// A known non-LUKS signature on the device, if any (what cryptsetup's blkid probe before a
/// header auto-recovery looks for, with `crypto_LUKS` filtered out).
pub fn detect_foreign_signature<D: Device + ?Sized>(dev: &D) -> Result<Option<Signature>> {
    // detect_signature reports LUKS first; look for the others with the LUKS magic masked out.
    struct NoLuks<'a, D: ?Sized>(&'a D);
    impl<D: Device + ?Sized> ReadAt for NoLuks<'_, D> {
        fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
            self.0.read_exact_at(offset, buf)?;
            if buf.starts_with(b"LUKS\xba\xbe") || buf.starts_with(b"SKUL\xba\xbe") {
                buf.fill(0);
            }
            Ok(())
        }
        fn size(&self) -> std::io::Result<u64> {
            self.0.size()
        }
    }
    detect_signature(&ReadOnly(NoLuks(dev)))
}

/// Destroys all keyslots and wipes the keyslots area (`luksErase`).
pub fn erase<D: Device + ?Sized>(dev: &mut D, header: &mut Header) -> Result<()> {
    header.metadata.ensure_writable()?;
    let mut updated = header.clone();
    let ids: Vec<_> = updated.metadata.keyslots.keys().copied().collect();
    updated.metadata.keyslots.clear();
    for d in updated.metadata.digests.values_mut() {
        d.keyslots.clear();
    }
    for t in updated.metadata.tokens.values_mut() {
        t.keyslots.retain(|k| !ids.contains(k));
    }
    let (start, end) = updated.metadata.keyslots_area();
    with_exclusive_lock(dev, |dev| {
        header::write_locked(dev, &mut updated)?;
        wipe_area(dev, (start, end - start))
    })?;
    *header = updated;
    Ok(())
}

//! Rebuilding the LUKS2 header of an encrypted volume whose two header copies are both
//! destroyed (`onmetal-csi-driver volume restore-header`; an operator command, never automatic).
//!
//! The driver's volumes use the DEK itself as the LUKS2 volume key ([`crate::crypt`]), so
//! the wrapped-key record alone recovers the data: a fresh header made with the driver's own
//! format options (same data offset, cipher and sector size) and that DEK opens the data area
//! as it was. Before anything is written, the first sectors behind the data offset are
//! decrypted with the DEK, as dm-crypt would decrypt them, and must hold a plausible ext4 or
//! XFS superblock; a device that still has a valid header, or whose data does not decrypt to a
//! filesystem under this key (another volume's device, an unencrypted device, a raw block
//! volume), is refused and left untouched. The rebuild writes only the header area, below the
//! data offset.

use std::fs::File;
use std::path::Path;

use kms::{Dek, WrappedKey};
use luks2::crypto::cipher::KeyslotCipher;
use luks2::format::Layout;
use luks2::header::Header;
use luks2::io::{Device, MemDevice};
use luks2::metadata::{SegmentId, SegmentKind};
use luks2::signature::{Signature, detect_signature};
use zeroize::Zeroizing;

use crate::crypt;
use crate::error::{Error, Kind, Result};
use crate::host::fs::FsType;

/// How much of the data area is decrypted to look for a filesystem (the ext superblock sits at
/// 1 KiB, XFS's at 0).
pub const PROBE_LEN: u64 = 64 * 1024;

/// A filesystem superblock found in the decrypted data area.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filesystem {
    /// Which filesystem.
    pub kind: FsType,
    /// Its block size in bytes.
    pub block_size: u32,
    /// Its size in blocks.
    pub blocks: u64,
    /// Its UUID, formatted as blkid shows it.
    pub uuid: String,
}

impl std::fmt::Display for Filesystem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} (UUID {}, {} blocks of {} bytes)",
            self.kind.as_str(),
            self.uuid,
            self.blocks,
            self.block_size
        )
    }
}

/// The outcome of [`restore_header`].
#[derive(Debug)]
pub struct Restored {
    /// The header as written.
    pub header: Header,
    /// The filesystem found behind it, before and (through the new header) after the write.
    pub filesystem: Filesystem,
    /// Why the device's old header could not be read, when it still had LUKS magic (both
    /// copies damaged rather than zeroed); `None` when no header was there at all.
    pub replaced_damaged: Option<String>,
}

fn open(device: &Path) -> Result<File> {
    File::open(device).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => {
            Error::not_found(format!("{} does not exist", device.display()))
        }
        _ => Error::io(format!("opening {}", device.display()), e),
    })
}

/// Fails when `device` still has a valid LUKS2 header (at least one good copy): there is
/// nothing to restore. `Ok(Some(why))` when a header is there but unusable (both copies
/// damaged), `Ok(None)` when there is none.
pub fn check_no_valid_header(device: &Path) -> Result<Option<String>> {
    match luks2::header::read(&open(device)?) {
        Ok(h) => Err(Error::precondition(format!(
            "{} still has a valid LUKS2 header (UUID {}): there is nothing to restore; `volume \
             inspect` shows it, and `luks2 repair` fixes a damaged copy from the good one",
            device.display(),
            h.uuid()
        ))),
        Err(luks2::Error::NotLuks2) => Ok(None),
        Err(e) => Ok(Some(e.to_string())),
    }
}

/// The layout the driver's format gives `device` (data offset, sector size).
pub fn driver_layout(device: &Path) -> Result<(Layout, u64)> {
    let f = open(device)?;
    let size = f
        .size()
        .map_err(|e| Error::io(format!("reading the size of {}", device.display()), e))?;
    let layout = luks2::format::layout(&crypt::format_options(), size)?;
    if size < layout.data_offset.saturating_add(PROBE_LEN) {
        return Err(Error::precondition(format!(
            "{} is {size} bytes: too small to hold a volume of this driver (data offset {} \
             bytes)",
            device.display(),
            layout.data_offset
        )));
    }
    Ok((layout, size))
}

/// Decrypts the first [`PROBE_LEN`] bytes of the data segment at `offset` (`sector_size`-byte
/// sectors, aes-xts-plain64, IVs from `iv_tweak` as dm-crypt numbers them) and looks for an ext4
/// or XFS superblock that fits in `data_size` bytes.
pub fn decrypted_filesystem(
    device: &Path,
    dek: &Dek,
    offset: u64,
    sector_size: u32,
    iv_tweak: u64,
    data_size: u64,
) -> Result<Option<Filesystem>> {
    let f = open(device)?;
    let len = usize::try_from(PROBE_LEN).unwrap_or(64 * 1024);
    let mut buf = Zeroizing::new(vec![0u8; len]);
    f.read_exact_at(offset, &mut buf).map_err(|e| {
        Error::io(
            format!("reading the data area of {} at {offset}", device.display()),
            e,
        )
    })?;
    KeyslotCipher::AES_XTS_PLAIN64.decrypt_sectors(
        dek.expose(),
        &mut buf,
        sector_size,
        iv_tweak,
    )?;
    let plain = MemDevice::from_vec(buf.to_vec());
    let found = detect_signature(&plain)?;
    let fs = match found {
        Some(Signature::Ext) => ext_superblock(plain.as_slice(), data_size),
        Some(Signature::Xfs) => xfs_superblock(plain.as_slice(), data_size),
        _ => None,
    };
    // The copy held decrypted user data.
    zeroize::Zeroize::zeroize(&mut plain.into_vec());
    Ok(fs)
}

fn le16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}
fn le32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}
fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes(b.get(at..at + 2)?.try_into().ok()?))
}
fn be32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
}
fn be64(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_be_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

fn uuid_text(b: &[u8]) -> String {
    let h = hex::encode(b);
    let part = |r: std::ops::Range<usize>| h.get(r).unwrap_or_default().to_owned();
    format!(
        "{}-{}-{}-{}-{}",
        part(0..8),
        part(8..12),
        part(12..16),
        part(16..20),
        part(20..32)
    )
}

/// An ext2/3/4 superblock (at 1 KiB) whose fields are consistent, not just its 16-bit magic:
/// a random sector carries the magic once in 65536 times, so the block size, group geometry,
/// revision, first data block and size must all make sense too.
fn ext_superblock(plain: &[u8], data_size: u64) -> Option<Filesystem> {
    let sb = plain.get(1024..2048)?;
    if le16(sb, 56)? != 0xef53 {
        return None;
    }
    let log_block = le32(sb, 24)?;
    if log_block > 6 {
        return None;
    }
    let block_size = 1024u32 << log_block;
    let blocks_per_group = le32(sb, 32)?;
    let inodes_per_group = le32(sb, 40)?;
    let first_data_block = le32(sb, 20)?;
    let rev_level = le32(sb, 76)?;
    let inodes = le32(sb, 0)?;
    let incompat = le32(sb, 96)?;
    const INCOMPAT_64BIT: u32 = 0x80;
    let blocks_hi = if incompat & INCOMPAT_64BIT != 0 {
        le32(sb, 0x150)?
    } else {
        0
    };
    let blocks = (u64::from(blocks_hi) << 32) | u64::from(le32(sb, 4)?);
    let fits = blocks
        .checked_mul(u64::from(block_size))
        .is_some_and(|b| b <= data_size);
    let plausible = blocks > 0
        && fits
        && inodes > 0
        && blocks_per_group > 0
        && blocks_per_group <= 8 * block_size
        && inodes_per_group > 0
        && rev_level <= 1
        && first_data_block == u32::from(block_size == 1024);
    plausible.then(|| Filesystem {
        kind: FsType::Ext4,
        block_size,
        blocks,
        uuid: uuid_text(sb.get(104..120).unwrap_or_default()),
    })
}

/// An XFS superblock (at 0) whose block and sector sizes agree with their logs and whose size
/// fits the data area.
fn xfs_superblock(plain: &[u8], data_size: u64) -> Option<Filesystem> {
    if plain.get(0..4)? != b"XFSB" {
        return None;
    }
    let block_size = be32(plain, 4)?;
    let dblocks = be64(plain, 8)?;
    let version = be16(plain, 100)? & 0x000f;
    let sect_size = be16(plain, 102)?;
    let block_log = *plain.get(120)?;
    let sect_log = *plain.get(121)?;
    let pow2_in = |v: u32, lo: u32, hi: u32, log: u8| {
        v.is_power_of_two() && (lo..=hi).contains(&v) && v.trailing_zeros() == u32::from(log)
    };
    let fits = dblocks
        .checked_mul(u64::from(block_size))
        .is_some_and(|b| b <= data_size);
    let plausible = pow2_in(block_size, 512, 65536, block_log)
        && pow2_in(u32::from(sect_size), 512, 32768, sect_log)
        && matches!(version, 4 | 5)
        && dblocks > 0
        && fits;
    plausible.then(|| Filesystem {
        kind: FsType::Xfs,
        block_size,
        blocks: dblocks,
        uuid: uuid_text(plain.get(32..48).unwrap_or_default()),
    })
}

/// Rebuilds the header of `device` from `dek` and its `record` (see the module documentation).
/// Refuses, writing nothing, a device with a valid header or one whose data does not decrypt
/// to an ext4 or XFS filesystem under `dek`.
pub fn restore_header(device: &Path, dek: &Dek, record: &WrappedKey) -> Result<Restored> {
    let replaced_damaged = check_no_valid_header(device)?;
    let (layout, size) = driver_layout(device)?;
    let data_size = size - layout.data_offset;
    let Some(filesystem) = decrypted_filesystem(
        device,
        dek,
        layout.data_offset,
        layout.sector_size,
        0,
        data_size,
    )?
    else {
        return Err(Error::precondition(format!(
            "the data of {} (at the driver's data offset, {} bytes) does not decrypt to an \
             ext4 or xfs filesystem with volume {}'s key: not this volume's device, or not a \
             filesystem volume; nothing was written",
            device.display(),
            layout.data_offset,
            record.volume_id()
        )));
    };

    let header = crypt::format(device, dek, record)?;

    // Read back what is on the device now and check it opens the same filesystem.
    let written = luks2::header::read(&open(device)?)?;
    crypt::verify_dek(&written, dek)?;
    let seg = written
        .metadata
        .segments
        .get(&SegmentId::new(0))
        .ok_or_else(|| Error::internal("the rebuilt header has no segment 0"))?;
    let SegmentKind::Crypt {
        sector_size,
        iv_tweak,
        ..
    } = &seg.kind
    else {
        return Err(Error::internal(
            "the rebuilt header's segment 0 is not crypt",
        ));
    };
    let again = decrypted_filesystem(device, dek, seg.offset, *sector_size, *iv_tweak, data_size)?;
    if again.as_ref() != Some(&filesystem) {
        return Err(Error::new(
            Kind::Internal,
            format!(
                "the rebuilt header of {} does not open the filesystem found before (data \
                 offset {} instead of {}): a bug; the data area was not written",
                device.display(),
                seg.offset,
                layout.data_offset
            ),
        ));
    }
    Ok(Restored {
        header,
        filesystem,
        replaced_damaged,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ext_sb(log_block: u32, blocks: u32) -> Vec<u8> {
        let mut b = vec![0u8; 4096];
        let sb = &mut b[1024..2048];
        sb[0..4].copy_from_slice(&1024u32.to_le_bytes());
        sb[4..8].copy_from_slice(&blocks.to_le_bytes());
        sb[20..24].copy_from_slice(&u32::from(log_block == 0).to_le_bytes());
        sb[24..28].copy_from_slice(&log_block.to_le_bytes());
        sb[32..36].copy_from_slice(&32768u32.to_le_bytes());
        sb[40..44].copy_from_slice(&8192u32.to_le_bytes());
        sb[56..58].copy_from_slice(&0xef53u16.to_le_bytes());
        sb[76..80].copy_from_slice(&1u32.to_le_bytes());
        sb[104..120].copy_from_slice(&[0x11; 16]);
        b
    }

    #[test]
    fn ext_needs_more_than_its_magic() {
        let good = ext_sb(2, 1000);
        let fs = ext_superblock(&good, 1 << 30).unwrap();
        assert_eq!(
            (fs.kind, fs.block_size, fs.blocks),
            (FsType::Ext4, 4096, 1000)
        );
        assert_eq!(fs.uuid, "11111111-1111-1111-1111-111111111111");
        // Bigger than the data area: not ours.
        assert!(ext_superblock(&good, 4096 * 999).is_none());
        // Magic alone, the rest random-looking.
        let mut magic_only = vec![0xa5u8; 4096];
        magic_only[1024 + 56..1024 + 58].copy_from_slice(&0xef53u16.to_le_bytes());
        assert!(ext_superblock(&magic_only, u64::MAX).is_none());
        for (at, v) in [(24usize, 7u32), (76, 2), (20, 1), (32, 0), (40, 0)] {
            let mut bad = good.clone();
            bad[1024 + at..1024 + at + 4].copy_from_slice(&v.to_le_bytes());
            assert!(
                ext_superblock(&bad, 1 << 30).is_none(),
                "field at {at} = {v}"
            );
        }
    }

    #[test]
    fn xfs_needs_consistent_sizes() {
        let mut b = vec![0u8; 4096];
        b[0..4].copy_from_slice(b"XFSB");
        b[4..8].copy_from_slice(&4096u32.to_be_bytes());
        b[8..16].copy_from_slice(&77_000u64.to_be_bytes());
        b[100..102].copy_from_slice(&0xb4a5u16.to_be_bytes());
        b[102..104].copy_from_slice(&512u16.to_be_bytes());
        b[120] = 12;
        b[121] = 9;
        let fs = xfs_superblock(&b, 1 << 30).unwrap();
        assert_eq!(
            (fs.kind, fs.block_size, fs.blocks),
            (FsType::Xfs, 4096, 77_000)
        );
        let mut bad = b.clone();
        bad[120] = 11;
        assert!(xfs_superblock(&bad, 1 << 30).is_none());
        let mut bad = b.clone();
        bad[100..102].copy_from_slice(&0xb4a3u16.to_be_bytes());
        assert!(xfs_superblock(&bad, 1 << 30).is_none());
        assert!(xfs_superblock(&b, 4096 * 76_999).is_none());
    }
}

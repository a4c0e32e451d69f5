//! Formatting a device as LUKS2 with cryptsetup 2.6's defaults (`crypt_format` +
//! `LUKS2_generate_hdr` + the first `crypt_keyslot_add_by_volume_key`).
//!
//! Defaults: aes-xts-plain64, 512-bit volume key, argon2id calibrated to 2000 ms, 16 KiB header
//! copies, keyslots area `16 MiB - 2 * hdr_size`, data offset rounded up to 1 MiB after the
//! keyslots area (16 MiB), sector size 4096 where the device and offsets allow it, else 512.
//!
//! Order of writes: header areas wiped (zeros up to the data offset, random keyslots area), the
//! first keyslot's area written, then the header (which already references the keyslot) — so a
//! crash leaves either no LUKS2 header or a complete one. The header is then rewritten twice so
//! that `seqid` ends at 3 as after `cryptsetup luksFormat`.
//!
//! Without [`FormatOptions::force`], a device on which [`detect_signature`] finds a known
//! signature (LUKS, a filesystem, swap, a partition table, LVM2, mdraid, ...) is refused. The
//! driver's "format if blank" path asks the stricter [`probe_blank`] first (no signature *and*
//! zeros in the first and last MiB); both live in [`crate::signature`].

use std::path::Path;

use crate::crypto::calibrate::PbkdfOptions;
use crate::crypto::cipher::KeyslotCipher;
use crate::error::{Error, Result};
use crate::header::{self, Header, NewHeaderParams};
use crate::io::Device;
use crate::keyslot::{self, NewKeyslot};
use crate::metadata::{
    self, Digest, DigestKind, HDR_SIZES, KeyslotId, MAX_KEYSLOTS_SIZE, Metadata, Segment,
    SegmentId, SegmentKind, SegmentSize,
};
use crate::secret::VolumeKey;

pub use crate::signature::{
    BLANK_PROBE_LEN, Blankness, DataFound, MdVersion, Signature, detect_signature, probe_blank,
};

/// cryptsetup's `LUKS2_DEFAULT_HDR_SIZE`: header copies plus keyslots area by default (16 MiB).
pub const DEFAULT_HEADER_AREA: u64 = 16 * 1024 * 1024;
/// Default data alignment (cryptsetup's `DEFAULT_DISK_ALIGNMENT`, 1 MiB).
pub const DEFAULT_ALIGNMENT: u64 = 1024 * 1024;
/// Default volume key size in bytes (512 bits).
pub const DEFAULT_KEY_SIZE: usize = 64;
/// Default cipher.
pub const DEFAULT_CIPHER: &str = "aes-xts-plain64";

/// Options for [`format`]; `Default` gives cryptsetup 2.6's `luksFormat --type luks2`.
#[derive(Debug, Clone)]
pub struct FormatOptions {
    /// Data segment cipher (`--cipher`); it is also the keyslot cipher.
    pub cipher: String,
    /// Volume key size in bytes (`--key-size` / 8).
    pub key_size: usize,
    /// Encryption sector size (`--sector-size`); `None` chooses as cryptsetup does.
    pub sector_size: Option<u32>,
    /// The sector size the device prefers (4096 for regular files; see [`optimal_sector_size`]),
    /// used when `sector_size` is `None`.
    pub optimal_sector_size: u32,
    /// PBKDF for the first keyslot (and hash for the digest and AF).
    pub pbkdf: PbkdfOptions,
    /// Label (`--label`).
    pub label: String,
    /// Subsystem (`--subsystem`).
    pub subsystem: String,
    /// UUID (`--uuid`); random if `None`.
    pub uuid: Option<String>,
    /// Size of one header copy in bytes (`--luks2-metadata-size`).
    pub metadata_size: Option<u64>,
    /// Keyslots area size in bytes (`--luks2-keyslots-size`).
    pub keyslots_size: Option<u64>,
    /// Data offset in 512-byte sectors (`--offset`).
    pub data_offset_sectors: Option<u64>,
    /// Keyslot number for the passphrase (`--key-slot`).
    pub keyslot: Option<KeyslotId>,
    /// Format even if the device holds a LUKS header or another known signature.
    pub force: bool,
}

impl Default for FormatOptions {
    fn default() -> Self {
        FormatOptions {
            cipher: DEFAULT_CIPHER.to_owned(),
            key_size: DEFAULT_KEY_SIZE,
            sector_size: None,
            optimal_sector_size: 4096,
            pbkdf: PbkdfOptions::default(),
            label: String::new(),
            subsystem: String::new(),
            uuid: None,
            metadata_size: None,
            keyslots_size: None,
            data_offset_sectors: None,
            keyslot: None,
            force: false,
        }
    }
}

/// The sector size cryptsetup would pick for `path` (`device_optimal_encryption_sector_size`):
/// 4096 for regular files; for block devices the physical block size when it is larger than the
/// logical one (a 512e disk), else the logical block size (from sysfs). 512 when unknown.
pub fn optimal_sector_size(path: &Path) -> u32 {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let Ok(meta) = std::fs::metadata(path) else {
        return 512;
    };
    if meta.file_type().is_file() {
        return 4096;
    }
    if !meta.file_type().is_block_device() {
        return 512;
    }
    let rdev = meta.rdev();
    let (major, minor) = (
        ((rdev >> 8) & 0xfff) | ((rdev >> 32) & !0xfff),
        (rdev & 0xff) | ((rdev >> 12) & !0xff),
    );
    let read = |name: &str| -> Option<u32> {
        let p = format!("/sys/dev/block/{major}:{minor}/queue/{name}");
        std::fs::read_to_string(p).ok()?.trim().parse().ok()
    };
    let Some(logical) = read("logical_block_size") else {
        return 512;
    };
    if logical >= 4096 {
        return if logical.is_multiple_of(4096) {
            4096
        } else {
            512
        };
    }
    let physical = read("physical_block_size").unwrap_or(logical);
    if logical >= physical
        || physical <= 512
        || physical > 4096
        || !physical.is_multiple_of(logical)
    {
        logical
    } else {
        physical
    }
}

/// Header geometry chosen for a format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// One header copy (binary header + JSON area).
    pub hdr_size: u64,
    /// Keyslots area size.
    pub keyslots_size: u64,
    /// Data offset in bytes.
    pub data_offset: u64,
    /// Encryption sector size.
    pub sector_size: u32,
}

/// Computes header size, keyslots size, data offset and sector size as cryptsetup 2.6 does for a
/// device of `device_size` bytes.
pub fn layout(opts: &FormatOptions, device_size: u64) -> Result<Layout> {
    let hdr_size = opts.metadata_size.unwrap_or(HDR_SIZES[0]);
    if !HDR_SIZES.contains(&hdr_size) {
        return Err(Error::InvalidArgument(format!(
            "unsupported LUKS2 metadata size {hdr_size} (allowed: 16384, 32768, ..., 4194304)"
        )));
    }
    if let Some(k) = opts.keyslots_size
        && (!k.is_multiple_of(4096) || k > MAX_KEYSLOTS_SIZE)
    {
        return Err(Error::InvalidArgument(format!(
            "unsupported LUKS2 keyslots size {k} (multiple of 4096, at most 128 MiB)"
        )));
    }
    let min_offset = 2 * hdr_size;
    let data_offset_req = match opts.data_offset_sectors {
        Some(s) => Some(
            s.checked_mul(512)
                .ok_or_else(|| Error::InvalidArgument("data offset overflows".into()))?,
        ),
        None => None,
    };
    if let Some(d) = data_offset_req
        && d < min_offset
    {
        return Err(Error::InvalidArgument(
            "requested data offset is too small".into(),
        ));
    }
    let mut keyslots_size = match (opts.keyslots_size, data_offset_req) {
        (Some(k), _) => k,
        (None, Some(d)) => d - min_offset,
        (None, None) => 0,
    };
    keyslots_size -= keyslots_size % 4096;
    keyslots_size = keyslots_size.min(MAX_KEYSLOTS_SIZE);
    if keyslots_size == 0 {
        keyslots_size = DEFAULT_HEADER_AREA - min_offset;
    }
    if let Some(d) = data_offset_req
        && keyslots_size + min_offset > d
    {
        keyslots_size = (d - min_offset) / 4096 * 4096;
    }
    let data_offset = match data_offset_req {
        Some(d) => d,
        None => (min_offset + keyslots_size).div_ceil(DEFAULT_ALIGNMENT) * DEFAULT_ALIGNMENT,
    };
    if keyslots_size == 0 {
        return Err(Error::InvalidArgument(
            "no room for a keyslots area before the data offset".into(),
        ));
    }

    let sector_size = match opts.sector_size {
        Some(s) => {
            if !(512..=4096).contains(&s) || !s.is_power_of_two() {
                return Err(Error::InvalidArgument(format!(
                    "unsupported encryption sector size {s}"
                )));
            }
            s
        }
        None => {
            let mut s = opts.optimal_sector_size;
            if !(512..=4096).contains(&s) || !s.is_power_of_two() {
                s = 512;
            }
            let s64 = u64::from(s);
            // cryptsetup: misaligned data offset, or a device size that is not a multiple of the
            // sector size (checked as device_size - alignment), reverts to 512.
            if !data_offset.is_multiple_of(s64)
                || !device_size
                    .wrapping_sub(DEFAULT_ALIGNMENT)
                    .is_multiple_of(s64)
            {
                s = 512;
            }
            s
        }
    };
    if sector_size > 512
        && data_offset <= device_size
        && !(device_size - data_offset).is_multiple_of(u64::from(sector_size))
    {
        return Err(Error::InvalidArgument(
            "device size is not aligned to requested sector size".into(),
        ));
    }
    Ok(Layout {
        hdr_size,
        keyslots_size,
        data_offset,
        sector_size,
    })
}

/// Formats `dev` with a new random volume key and `passphrase` in the first keyslot.
/// Returns the header as written and the keyslot number used.
pub fn format<D: Device + ?Sized>(
    dev: &mut D,
    passphrase: &[u8],
    opts: &FormatOptions,
) -> Result<(Header, KeyslotId)> {
    let vk =
        VolumeKey::random(opts.key_size).map_err(|e| Error::io("generating the volume key", e))?;
    format_with_volume_key(dev, &vk, passphrase, opts)
}

/// Formats `dev` with the given volume key (`--volume-key-file`).
pub fn format_with_volume_key<D: Device + ?Sized>(
    dev: &mut D,
    vk: &VolumeKey,
    passphrase: &[u8],
    opts: &FormatOptions,
) -> Result<(Header, KeyslotId)> {
    let cipher = KeyslotCipher::parse(&opts.cipher)?;
    if cipher.is_null() {
        return Err(Error::Unsupported("formatting with the null cipher".into()));
    }
    cipher.check_key_len(vk.len())?;
    if vk.len() != opts.key_size {
        return Err(Error::InvalidArgument(
            "volume key size does not match --key-size".into(),
        ));
    }
    opts.pbkdf.validate()?;
    if !opts.force
        && let Some(sig) = detect_signature(&*dev)?
    {
        return Err(Error::Busy(format!(
            "device already contains a {} signature; refusing to format it",
            sig.name()
        )));
    }
    let device_size = dev
        .size()
        .map_err(|e| Error::io("reading the device size", e))?;
    let lay = layout(opts, device_size)?;
    let header_end = 2 * lay.hdr_size + lay.keyslots_size;
    if device_size < header_end {
        return Err(Error::InvalidArgument(format!(
            "device is too small ({device_size} bytes) for the LUKS2 header ({header_end} bytes)"
        )));
    }

    let segment = Segment {
        offset: lay.data_offset,
        size: SegmentSize::Dynamic,
        flags: None,
        kind: SegmentKind::Crypt {
            iv_tweak: 0,
            encryption: opts.cipher.clone(),
            sector_size: lay.sector_size,
            integrity: None,
        },
    };
    let mut md = Metadata::new_empty(lay.hdr_size, lay.keyslots_size, segment)?;
    let digest = keyslot::new_digest(vk, opts.pbkdf.digest_hash(), opts.pbkdf.is_forced())?;
    md.digests.insert(
        metadata::DigestId::new(0),
        Digest {
            keyslots: vec![],
            segments: vec![SegmentId::new(0)],
            kind: DigestKind::Pbkdf2(digest),
        },
    );
    let params = NewHeaderParams {
        uuid: opts.uuid.clone(),
        label: opts.label.clone(),
        subsystem: opts.subsystem.clone(),
    };
    let mut header = Header::new(&params, md)?;

    wipe_header_areas(dev, &lay)?;
    let ks = NewKeyslot {
        id: opts.keyslot,
        pbkdf: opts.pbkdf,
        priority: None,
    };
    let id = keyslot::add_keyslot_to_new_header(dev, &mut header, vk, passphrase, &ks)?;
    // cryptsetup leaves seqid 3 after luksFormat (format, then two writes adding the keyslot).
    header::write(dev, &mut header)?;
    header::write(dev, &mut header)?;
    Ok((header, id))
}

/// cryptsetup's `LUKS2_wipe_header_areas`: zeros from 0 to the data offset (header copies and
/// padding), then random data over the keyslots area. Synced.
fn wipe_header_areas<D: Device + ?Sized>(dev: &mut D, lay: &Layout) -> Result<()> {
    // One static block of zeros (no allocation per format: a node plugin runs many at once).
    static ZEROS: [u8; 64 * 1024] = [0; 64 * 1024];
    let size = dev
        .size()
        .map_err(|e| Error::io("reading the device size", e))?;
    let zero_end = lay.data_offset.min(size);
    let mut off = 0u64;
    while off < zero_end {
        let n = (zero_end - off).min(ZEROS.len() as u64);
        let chunk = ZEROS
            .get(..usize::try_from(n).unwrap_or(0))
            .unwrap_or_default();
        dev.write_all_at(off, chunk)
            .map_err(|e| Error::io("wiping the header area", e))?;
        off += n;
    }
    keyslot::wipe_area(dev, (2 * lay.hdr_size, lay.keyslots_size))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const MIB: u64 = 1024 * 1024;

    #[test]
    fn default_layout_is_cryptsetups() {
        let l = layout(&FormatOptions::default(), 20 * MIB).unwrap();
        assert_eq!(
            l,
            Layout {
                hdr_size: 16384,
                keyslots_size: 16744448,
                data_offset: 16 * MIB,
                sector_size: 4096
            }
        );
    }

    #[test]
    fn layout_variants() {
        let o = |f: fn(&mut FormatOptions)| {
            let mut opts = FormatOptions::default();
            f(&mut opts);
            opts
        };
        // 4 MiB metadata: keyslots = 16 MiB - 8 MiB, offset still 16 MiB.
        let l = layout(&o(|x| x.metadata_size = Some(4 * MIB)), 20 * MIB).unwrap();
        assert_eq!((l.keyslots_size, l.data_offset), (8 * MIB, 16 * MIB));
        // Explicit keyslots size: data offset rounded up to 1 MiB.
        let l = layout(&o(|x| x.keyslots_size = Some(2 * MIB)), 20 * MIB).unwrap();
        assert_eq!((l.keyslots_size, l.data_offset), (2 * MIB, 3 * MIB));
        // --offset in sectors: keyslots fill the gap.
        let l = layout(&o(|x| x.data_offset_sectors = Some(8192)), 20 * MIB).unwrap();
        assert_eq!((l.keyslots_size, l.data_offset), (4 * MIB - 32768, 4 * MIB));
        // A data offset that is not 4 KiB aligned forces 512-byte sectors.
        let l = layout(&o(|x| x.data_offset_sectors = Some(8193)), 20 * MIB).unwrap();
        assert_eq!(l.sector_size, 512);
        // A device size not a multiple of 4096 too.
        let l = layout(&FormatOptions::default(), 20 * MIB + 512).unwrap();
        assert_eq!(l.sector_size, 512);
        // Explicit 4096 with a misaligned size is an error.
        assert!(layout(&o(|x| x.sector_size = Some(4096)), 20 * MIB + 512).is_err());
        assert!(layout(&o(|x| x.metadata_size = Some(12345)), 20 * MIB).is_err());
        assert!(layout(&o(|x| x.keyslots_size = Some(4097)), 20 * MIB).is_err());
        assert!(layout(&o(|x| x.data_offset_sectors = Some(10)), 20 * MIB).is_err());
        assert!(layout(&o(|x| x.sector_size = Some(1000)), 20 * MIB).is_err());
    }

    #[test]
    fn signatures() {
        use crate::io::MemDevice;
        let mut d = MemDevice::new(1 << 20);
        assert_eq!(detect_signature(&d).unwrap(), None);
        d.as_mut_slice()[1080..1082].copy_from_slice(&[0x53, 0xef]);
        assert_eq!(detect_signature(&d).unwrap(), Some(Signature::Ext));
        let mut d = MemDevice::new(1 << 20);
        d.as_mut_slice()[4086..4096].copy_from_slice(b"SWAPSPACE2");
        assert_eq!(detect_signature(&d).unwrap(), Some(Signature::Swap));
        let mut d = MemDevice::new(1 << 20);
        d.as_mut_slice()[65600..65608].copy_from_slice(b"_BHRfS_M");
        assert_eq!(detect_signature(&d).unwrap(), Some(Signature::Btrfs));
        let mut d = MemDevice::new(1 << 20);
        d.as_mut_slice()[..4].copy_from_slice(b"XFSB");
        assert_eq!(detect_signature(&d).unwrap(), Some(Signature::Xfs));
        let mut d = MemDevice::new(1 << 20);
        d.as_mut_slice()[32768..32774].copy_from_slice(b"SKUL\xba\xbe");
        assert_eq!(detect_signature(&d).unwrap(), Some(Signature::Luks));
        // Tiny devices are probed without errors.
        assert_eq!(detect_signature(&MemDevice::new(100)).unwrap(), None);
    }
}

//! What is already on a device: known on-disk signatures ([`detect_signature`], used by
//! [`crate::format::format`] without `force` and by repair) and the strict blank test the driver
//! runs before it formats a volume ([`probe_blank`]).
//!
//! The signatures are checked at the offsets their formats define (as libblkid reads them); every
//! one of them lies in the first or the last MiB of the device. [`probe_blank`] is stricter still:
//! a device is blank only when no signature is found *and* its first and last MiB read as zeros,
//! so an unknown format, or a known one whose magic was damaged, still "holds data".

use std::fmt;

use crate::error::{Error, Result};
use crate::io::Device;
use crate::metadata::HDR_SIZES;

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;

/// The mdraid superblock version found (where it sits on the member).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum MdVersion {
    /// 0.90: 64 KiB-aligned, 64 KiB before the end.
    V0_90,
    /// 1.0: 8 KiB before the end, 4 KiB-aligned.
    V1_0,
    /// 1.1: at the start.
    V1_1,
    /// 1.2: 4 KiB from the start.
    V1_2,
}

/// A known on-disk signature found on a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Signature {
    /// A LUKS (1 or 2) header, primary or secondary.
    Luks,
    /// ext2/3/4.
    Ext,
    /// XFS.
    Xfs,
    /// btrfs.
    Btrfs,
    /// Linux swap (or a hibernation image in a swap area).
    Swap,
    /// A GUID partition table (primary header at LBA 1 or backup header at the last LBA).
    Gpt,
    /// An MBR (DOS) partition table or boot sector: 0x55AA with plausible partition entries.
    Dos,
    /// An LVM2 physical volume label.
    Lvm2,
    /// An mdraid member superblock.
    MdRaid(MdVersion),
    /// FAT12/16/32 (vfat).
    Vfat,
    /// exFAT.
    Exfat,
    /// NTFS.
    Ntfs,
    /// BitLocker.
    BitLocker,
    /// A ZFS pool member (vdev label uberblock).
    Zfs,
    /// A bcache backing or cache device.
    Bcache,
    /// ISO 9660.
    Iso9660,
    /// squashfs.
    Squashfs,
    /// ReiserFS.
    Reiserfs,
    /// F2FS.
    F2fs,
    /// dm-verity hash device.
    Verity,
    /// dm-integrity device.
    Integrity,
    /// A Ceph BlueStore block device.
    Bluestore,
}

impl Signature {
    /// A human name (libblkid's `TYPE` where there is one).
    pub fn name(self) -> &'static str {
        match self {
            Signature::Luks => "LUKS",
            Signature::Ext => "ext2/ext3/ext4",
            Signature::Xfs => "xfs",
            Signature::Btrfs => "btrfs",
            Signature::Swap => "swap",
            Signature::Gpt => "gpt partition table",
            Signature::Dos => "dos (MBR) partition table",
            Signature::Lvm2 => "LVM2_member",
            Signature::MdRaid(MdVersion::V0_90) => "linux_raid_member (mdraid 0.90)",
            Signature::MdRaid(MdVersion::V1_0) => "linux_raid_member (mdraid 1.0)",
            Signature::MdRaid(MdVersion::V1_1) => "linux_raid_member (mdraid 1.1)",
            Signature::MdRaid(MdVersion::V1_2) => "linux_raid_member (mdraid 1.2)",
            Signature::Vfat => "vfat",
            Signature::Exfat => "exfat",
            Signature::Ntfs => "ntfs",
            Signature::BitLocker => "BitLocker",
            Signature::Zfs => "zfs_member",
            Signature::Bcache => "bcache",
            Signature::Iso9660 => "iso9660",
            Signature::Squashfs => "squashfs",
            Signature::Reiserfs => "reiserfs",
            Signature::F2fs => "f2fs",
            Signature::Verity => "DM_verity_hash",
            Signature::Integrity => "DM_integrity",
            Signature::Bluestore => "ceph_bluestore",
        }
    }
}

impl fmt::Display for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Reads at offsets of one device; out-of-range reads are "not there", not errors.
struct Probe<'a, D: ?Sized> {
    dev: &'a D,
    size: u64,
}

impl<D: Device + ?Sized> Probe<'_, D> {
    fn read(&self, offset: u64, len: usize) -> Result<Option<Vec<u8>>> {
        match offset.checked_add(len as u64) {
            Some(end) if end <= self.size => {}
            _ => return Ok(None),
        }
        let mut buf = vec![0u8; len];
        self.dev
            .read_exact_at(offset, &mut buf)
            .map_err(|e| Error::io("probing for signatures", e))?;
        Ok(Some(buf))
    }

    fn is(&self, offset: u64, magic: &[u8]) -> Result<bool> {
        Ok(self.read(offset, magic.len())?.is_some_and(|b| b == magic))
    }

    /// `offset` counted back from the end of the device; `None` if the device is too small.
    fn back_from_end(&self, back: u64) -> Option<u64> {
        self.size.checked_sub(back)
    }
}

/// mdraid's superblock magic (`MD_SB_MAGIC`, 0xa92b4efc), little-endian (1.x always; 0.90 on
/// little-endian hosts) and big-endian (0.90 written on a big-endian host).
const MD_MAGIC_LE: [u8; 4] = 0xa92b_4efc_u32.to_le_bytes();
const MD_MAGIC_BE: [u8; 4] = 0xa92b_4efc_u32.to_be_bytes();

/// ZFS uberblock magic (`UBERBLOCK_MAGIC`, 0x00bab10c), as a u64 either way round.
const ZFS_MAGIC_LE: [u8; 8] = 0x00ba_b10c_u64.to_le_bytes();
const ZFS_MAGIC_BE: [u8; 8] = 0x00ba_b10c_u64.to_be_bytes();

/// bcache's superblock magic (`BCACHE_MAGIC`), at byte 24 of the superblock at 4 KiB.
const BCACHE_MAGIC: [u8; 16] = [
    0xc6, 0x85, 0x73, 0xf6, 0x4e, 0x1a, 0x45, 0xca, 0x82, 0x65, 0xf5, 0x7f, 0x48, 0xba, 0x6d, 0x81,
];

fn md_1x_at<D: Device + ?Sized>(p: &Probe<'_, D>, offset: u64) -> Result<bool> {
    // magic (le32) then major_version (le32) == 1.
    Ok(p.read(offset, 8)?.is_some_and(|b| {
        b.get(..4) == Some(&MD_MAGIC_LE[..]) && b.get(4..8) == Some(&[1, 0, 0, 0])
    }))
}

fn md_signature<D: Device + ?Sized>(p: &Probe<'_, D>) -> Result<Option<MdVersion>> {
    // 0.90: MD_NEW_SIZE_SECTORS(size) = (size & ~(64 KiB - 1)) - 64 KiB.
    if let Some(off) = (p.size & !(64 * KIB - 1)).checked_sub(64 * KIB)
        && (p.is(off, &MD_MAGIC_LE)? || p.is(off, &MD_MAGIC_BE)?)
    {
        return Ok(Some(MdVersion::V0_90));
    }
    // 1.0: ((size in sectors) - 16) & ~7 sectors.
    if let Some(sectors) = (p.size / 512).checked_sub(16)
        && md_1x_at(p, (sectors & !7) * 512)?
    {
        return Ok(Some(MdVersion::V1_0));
    }
    if md_1x_at(p, 0)? {
        return Ok(Some(MdVersion::V1_1));
    }
    if md_1x_at(p, 4 * KIB)? {
        return Ok(Some(MdVersion::V1_2));
    }
    Ok(None)
}

/// ZFS: four 256 KiB vdev labels (two at the start, two at the end of the 256 KiB-aligned size),
/// each with a 128 KiB uberblock ring at 128 KiB; uberblocks are at least 1 KiB apart.
fn zfs_signature<D: Device + ?Sized>(p: &Probe<'_, D>) -> Result<bool> {
    const LABEL: u64 = 256 * KIB;
    let aligned = p.size & !(LABEL - 1);
    let labels = [
        Some(0),
        Some(LABEL),
        aligned.checked_sub(2 * LABEL),
        aligned.checked_sub(LABEL),
    ];
    for label in labels.into_iter().flatten() {
        let Some(ring) = p.read(label + 128 * KIB, usize::try_from(128 * KIB).unwrap_or(0))? else {
            continue;
        };
        for ub in ring.chunks_exact(1024) {
            let magic = ub.get(..8);
            if magic == Some(&ZFS_MAGIC_LE[..]) || magic == Some(&ZFS_MAGIC_BE[..]) {
                return Ok(true);
            }
        }
    }
    Ok(false)
}

/// A FAT boot sector: an x86 jump, a power-of-two sector size, a FAT type string and 0x55AA.
fn is_fat(boot: &[u8]) -> bool {
    let jump = matches!(boot.first(), Some(0xeb | 0xe9));
    let sector_size = match (boot.get(11), boot.get(12)) {
        (Some(&lo), Some(&hi)) => u16::from_le_bytes([lo, hi]),
        _ => 0,
    };
    let fat_type = [
        (54usize, &b"FAT12   "[..]),
        (54, b"FAT16   "),
        (54, b"FAT     "),
        (82, b"FAT32   "),
    ]
    .iter()
    .any(|&(off, s)| boot.get(off..off + s.len()) == Some(s));
    jump && sector_size.is_power_of_two()
        && (512..=4096).contains(&sector_size)
        && fat_type
        && boot.get(510..512) == Some(&[0x55, 0xaa])
}

/// An MBR: 0x55AA and four partition entries whose boot indicator is 0x00 or 0x80 (libblkid's
/// check; random data passes it with a chance of about 2^-44).
fn is_mbr(boot: &[u8]) -> bool {
    boot.get(510..512) == Some(&[0x55, 0xaa])
        && (0..4).all(|i| matches!(boot.get(446 + 16 * i), Some(0x00 | 0x80)))
}

/// Looks for a known signature: LUKS (primary at 0, secondary at any of the nine header sizes),
/// ext, XFS, btrfs, swap, GPT (primary or backup header, 512 or 4096-byte LBAs), LVM2 (label in
/// sectors 0-3), mdraid (0.90, 1.0, 1.1, 1.2), vfat, exFAT, NTFS, BitLocker, ZFS, bcache,
/// ISO 9660, squashfs, ReiserFS, F2FS, dm-verity, dm-integrity, BlueStore, and an MBR partition
/// table or boot sector (checked last: the filesystems above carry 0x55AA too). All zeros or
/// random data find nothing.
pub fn detect_signature<D: Device + ?Sized>(dev: &D) -> Result<Option<Signature>> {
    let size = dev
        .size()
        .map_err(|e| Error::io("reading the device size", e))?;
    let p = Probe { dev, size };
    if p.is(0, b"LUKS\xba\xbe")? {
        return Ok(Some(Signature::Luks));
    }
    for off in HDR_SIZES {
        if p.is(off, b"SKUL\xba\xbe")? {
            return Ok(Some(Signature::Luks));
        }
    }
    // ext2/3/4: superblock at 1024, s_magic (le16 0xEF53) at offset 56.
    if p.is(1024 + 56, &[0x53, 0xef])? {
        return Ok(Some(Signature::Ext));
    }
    if p.is(0, b"XFSB")? {
        return Ok(Some(Signature::Xfs));
    }
    // btrfs: superblock at 64 KiB, magic at offset 64.
    if p.is(64 * KIB + 64, b"_BHRfS_M")? {
        return Ok(Some(Signature::Btrfs));
    }
    // swap: magic in the last 10 bytes of the first page (4 KiB pages; also 8/16/64 KiB); a
    // hibernation image replaces it with its own.
    for page in [4 * KIB, 8 * KIB, 16 * KIB, 64 * KIB] {
        for magic in [
            &b"SWAPSPACE2"[..],
            b"SWAP-SPACE",
            b"S1SUSPEND\0",
            b"S2SUSPEND\0",
            b"ULSUSPEND\0",
            b"LINHIB0001",
        ] {
            if p.is(page - 10, magic)? {
                return Ok(Some(Signature::Swap));
            }
        }
    }
    // GPT header ("EFI PART") at LBA 1 and the backup at the last LBA, for 512 and 4096-byte LBAs.
    for lba in [512, 4 * KIB] {
        if p.is(lba, b"EFI PART")? {
            return Ok(Some(Signature::Gpt));
        }
        if let Some(off) = p.back_from_end(lba)
            && p.is(off, b"EFI PART")?
        {
            return Ok(Some(Signature::Gpt));
        }
    }
    // LVM2: "LABELONE" in one of the first four sectors, "LVM2 001" at offset 24 of it.
    for sector in 0..4u64 {
        if p.is(sector * 512, b"LABELONE")? && p.is(sector * 512 + 24, b"LVM2 001")? {
            return Ok(Some(Signature::Lvm2));
        }
    }
    if let Some(v) = md_signature(&p)? {
        return Ok(Some(Signature::MdRaid(v)));
    }
    if p.is(4 * KIB + 24, &BCACHE_MAGIC)? {
        return Ok(Some(Signature::Bcache));
    }
    if zfs_signature(&p)? {
        return Ok(Some(Signature::Zfs));
    }
    if p.is(32 * KIB + 1, b"CD001")? {
        return Ok(Some(Signature::Iso9660));
    }
    if p.is(0, b"hsqs")? || p.is(0, b"sqsh")? {
        return Ok(Some(Signature::Squashfs));
    }
    // ReiserFS: superblock at 64 KiB (8 KiB for 3.5 made by old tools), magic at offset 52.
    for sb in [64 * KIB, 8 * KIB] {
        for magic in [&b"ReIsErFs"[..], b"ReIsEr2Fs", b"ReIsEr3Fs"] {
            if p.is(sb + 52, magic)? {
                return Ok(Some(Signature::Reiserfs));
            }
        }
    }
    // F2FS: superblock at 1 KiB, magic le32 0xF2F52010.
    if p.is(KIB, &0xf2f5_2010_u32.to_le_bytes())? {
        return Ok(Some(Signature::F2fs));
    }
    if p.is(0, b"verity\0\0")? {
        return Ok(Some(Signature::Verity));
    }
    if p.is(0, b"integrt\0")? {
        return Ok(Some(Signature::Integrity));
    }
    if p.is(0, b"bluestore block device")? {
        return Ok(Some(Signature::Bluestore));
    }
    if let Some(boot) = p.read(0, 512)? {
        match boot.get(3..11) {
            Some(b"NTFS    ") => return Ok(Some(Signature::Ntfs)),
            Some(b"EXFAT   ") => return Ok(Some(Signature::Exfat)),
            Some(b"-FVE-FS-") => return Ok(Some(Signature::BitLocker)),
            _ => {}
        }
        if is_fat(&boot) {
            return Ok(Some(Signature::Vfat));
        }
        if is_mbr(&boot) {
            return Ok(Some(Signature::Dos));
        }
    }
    Ok(None)
}

/// Why [`probe_blank`] found a device not blank.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DataFound {
    /// A known signature.
    Signature(Signature),
    /// A non-zero byte in the first MiB.
    NonZeroFirstMib,
    /// A non-zero byte in the last MiB.
    NonZeroLastMib,
}

impl fmt::Display for DataFound {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DataFound::Signature(s) => write!(f, "a {} signature", s.name()),
            DataFound::NonZeroFirstMib => f.write_str("non-zero data in the first MiB"),
            DataFound::NonZeroLastMib => f.write_str("non-zero data in the last MiB"),
        }
    }
}

/// The verdict of [`probe_blank`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Blankness {
    /// No known signature, and the first and last MiB read as zeros: safe to format.
    Blank,
    /// Something is there; do not format without an explicit decision.
    HoldsData(DataFound),
}

/// How much of each end [`probe_blank`] requires to be zeros.
pub const BLANK_PROBE_LEN: u64 = MIB;

/// The strict test before a "format if blank": [`Blankness::Blank`] only when
/// [`detect_signature`] finds nothing and the first and the last [`BLANK_PROBE_LEN`] bytes of the
/// device (all of it, if smaller) read as zeros; otherwise [`Blankness::HoldsData`] with what was
/// found (the signature first, as the most useful name).
pub fn probe_blank<D: Device + ?Sized>(dev: &D) -> Result<Blankness> {
    if let Some(sig) = detect_signature(dev)? {
        return Ok(Blankness::HoldsData(DataFound::Signature(sig)));
    }
    let size = dev
        .size()
        .map_err(|e| Error::io("reading the device size", e))?;
    let head = size.min(BLANK_PROBE_LEN);
    let tail_start = size.saturating_sub(BLANK_PROBE_LEN).max(head);
    if !range_is_zero(dev, 0, head)? {
        return Ok(Blankness::HoldsData(DataFound::NonZeroFirstMib));
    }
    if !range_is_zero(dev, tail_start, size)? {
        return Ok(Blankness::HoldsData(DataFound::NonZeroLastMib));
    }
    Ok(Blankness::Blank)
}

fn range_is_zero<D: Device + ?Sized>(dev: &D, start: u64, end: u64) -> Result<bool> {
    const CHUNK: u64 = 64 * KIB;
    let mut buf = vec![0u8; usize::try_from(CHUNK).unwrap_or(65536)];
    let mut off = start;
    while off < end {
        let n = usize::try_from((end - off).min(CHUNK)).unwrap_or(0);
        let chunk = buf
            .get_mut(..n)
            .ok_or_else(|| Error::InvalidArgument("probe chunk".into()))?;
        dev.read_exact_at(off, chunk)
            .map_err(|e| Error::io("reading the device to check it is blank", e))?;
        if chunk.iter().any(|&b| b != 0) {
            return Ok(false);
        }
        off += n as u64;
    }
    Ok(true)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::io::MemDevice;

    fn with(size: usize, at: usize, bytes: &[u8]) -> MemDevice {
        let mut d = MemDevice::new(size);
        d.as_mut_slice()[at..at + bytes.len()].copy_from_slice(bytes);
        d
    }

    fn sig(d: &MemDevice) -> Option<Signature> {
        detect_signature(d).unwrap()
    }

    const SIZE: usize = 3 << 20;

    #[test]
    fn signatures_at_their_offsets() {
        assert_eq!(sig(&MemDevice::new(SIZE)), None);
        let cases: &[(usize, &[u8], Signature)] = &[
            (1080, &[0x53, 0xef], Signature::Ext),
            (4086, b"SWAPSPACE2", Signature::Swap),
            (4086, b"S1SUSPEND\0", Signature::Swap),
            (65600, b"_BHRfS_M", Signature::Btrfs),
            (0, b"XFSB", Signature::Xfs),
            (32768, b"SKUL\xba\xbe", Signature::Luks),
            (512, b"EFI PART", Signature::Gpt),
            (4096, b"EFI PART", Signature::Gpt),
            (SIZE - 512, b"EFI PART", Signature::Gpt),
            (4096 + 24, &BCACHE_MAGIC, Signature::Bcache),
            (32769, b"CD001", Signature::Iso9660),
            (0, b"hsqs", Signature::Squashfs),
            (65536 + 52, b"ReIsEr2Fs", Signature::Reiserfs),
            (1024, &[0x10, 0x20, 0xf5, 0xf2], Signature::F2fs),
            (0, b"verity\0\0", Signature::Verity),
            (0, b"integrt\0", Signature::Integrity),
            (3, b"NTFS    ", Signature::Ntfs),
            (3, b"EXFAT   ", Signature::Exfat),
            (3, b"-FVE-FS-", Signature::BitLocker),
            // ZFS uberblocks in label 0, label 1 and the last label (256 KiB-aligned end).
            (128 << 10, &ZFS_MAGIC_LE, Signature::Zfs),
            ((256 + 128 + 5) << 10, &ZFS_MAGIC_BE, Signature::Zfs),
            (SIZE - (128 << 10), &ZFS_MAGIC_LE, Signature::Zfs),
        ];
        for &(at, bytes, want) in cases {
            assert_eq!(sig(&with(SIZE, at, bytes)), Some(want), "{want:?} at {at}");
        }
    }

    #[test]
    fn lvm2_label_needs_both_magics() {
        let mut d = with(SIZE, 512, b"LABELONE");
        assert_eq!(sig(&d), None);
        d.as_mut_slice()[512 + 24..512 + 32].copy_from_slice(b"LVM2 001");
        assert_eq!(sig(&d), Some(Signature::Lvm2));
    }

    #[test]
    fn md_magic_needs_major_version_1_for_1x() {
        let mut d = with(SIZE, 4096, &MD_MAGIC_LE);
        assert_eq!(sig(&d), None);
        d.as_mut_slice()[4100] = 1;
        assert_eq!(sig(&d), Some(Signature::MdRaid(MdVersion::V1_2)));
        // 0.90 on an odd size: the offset rounds down to 64 KiB first.
        let size = SIZE + 12345;
        let at = (size & !0xffff) - 0x10000;
        assert_eq!(
            sig(&with(size, at, &MD_MAGIC_BE)),
            Some(Signature::MdRaid(MdVersion::V0_90))
        );
    }

    #[test]
    fn mbr_needs_plausible_entries_and_comes_after_filesystems() {
        let mut d = with(SIZE, 510, &[0x55, 0xaa]);
        assert_eq!(sig(&d), Some(Signature::Dos));
        d.as_mut_slice()[446] = 0x12;
        assert_eq!(sig(&d), None);
        let mut fat = with(SIZE, 510, &[0x55, 0xaa]);
        let s = fat.as_mut_slice();
        s[0] = 0xeb;
        s[11..13].copy_from_slice(&512u16.to_le_bytes());
        s[82..90].copy_from_slice(b"FAT32   ");
        assert_eq!(sig(&fat), Some(Signature::Vfat));
    }

    #[test]
    fn random_data_and_tiny_devices_find_nothing() {
        let mut d = MemDevice::new(SIZE);
        getrandom::fill(d.as_mut_slice()).unwrap();
        // Keep the (deliberately weak) 2-byte ext magic and the MBR trailer out of the way.
        d.as_mut_slice()[1080] = 0;
        d.as_mut_slice()[510] = 0;
        assert_eq!(sig(&d), None);
        for n in [0, 1, 100, 4095, 70000] {
            assert_eq!(sig(&MemDevice::new(n)), None);
            assert_eq!(probe_blank(&MemDevice::new(n)).unwrap(), Blankness::Blank);
        }
    }

    #[test]
    fn blank_only_when_both_ends_are_zero() {
        assert_eq!(
            probe_blank(&MemDevice::new(SIZE)).unwrap(),
            Blankness::Blank
        );
        let d = with(SIZE, (1 << 20) - 1, &[1]);
        assert_eq!(
            probe_blank(&d).unwrap(),
            Blankness::HoldsData(DataFound::NonZeroFirstMib)
        );
        let d = with(SIZE, SIZE - (1 << 20), &[1]);
        assert_eq!(
            probe_blank(&d).unwrap(),
            Blankness::HoldsData(DataFound::NonZeroLastMib)
        );
        // The middle is not looked at.
        assert_eq!(
            probe_blank(&with(SIZE, 1 << 20, &[1])).unwrap(),
            Blankness::Blank
        );
        let d = with(SIZE, 0, b"XFSB");
        let got = probe_blank(&d).unwrap();
        assert_eq!(
            got,
            Blankness::HoldsData(DataFound::Signature(Signature::Xfs))
        );
        if let Blankness::HoldsData(why) = got {
            assert_eq!(why.to_string(), "a xfs signature");
        }
    }
}

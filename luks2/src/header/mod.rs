//! The LUKS2 header on a device: reading both copies, choosing one, writing crash-safely.
//!
//! Layout: primary binary header + JSON area at 0, the secondary copy at `hdr_size`, the
//! keyslots area from `2 * hdr_size`. A primary magic with a version other than 2 (or 0, a
//! damaged header) means another format and is refused outright, as cryptsetup's loader does.
//! Reading then follows cryptsetup's `LUKS2_disk_hdr_read`: the
//! primary at 0, the secondary at the primary's `hdr_size` (or, when the primary is unusable, at
//! the first of the nine allowed offsets that holds a secondary header), the higher `seqid` wins.
//! Unlike cryptsetup, reading never writes: [`ReadReport`] says which copy is bad or stale and
//! [`repair`] rewrites it; the next update also rewrites it first ([`begin_update_locked`]).
//! As in cryptsetup, a copy that needs recovery on a device that also carries another known
//! signature makes reading fail with [`Error::AmbiguousSignatures`]; only [`repair`] proceeds.
//!
//! Writing ([`write()`]) takes the device lock, checks that the on-disk header did not change since
//! it was read (same UUID and `seqid`), repairs a stale copy, bumps `seqid`, then for the primary and then the secondary copy: binary header
//! with a zero checksum, JSON area, binary header with the checksum, fsync. A crash at any point
//! leaves at least one valid copy holding either the old or the new metadata.

pub mod binary;

use std::borrow::Cow;

use crate::error::{Error, Result};
use crate::io::{Device, ReadOnly, with_exclusive_lock};
use crate::metadata::{HDR_SIZES, Metadata};

use binary::{BIN_HEADER_LEN, BinaryHeader, ChecksumAlg, Copy, SALT_LEN};

/// The validated header: binary header fields plus the metadata.
#[derive(Debug, Clone, PartialEq)]
pub struct Header {
    seqid: u64,
    /// The label, subsystem and UUID fields as stored: the bytes before the first NUL (at most
    /// N-1), zero-padded, as cryptsetup keeps them. They are written back as they are, so a
    /// field that is not UTF-8 survives a rewrite; the accessors give their text.
    label: [u8; binary::LABEL_LEN],
    subsystem: [u8; binary::LABEL_LEN],
    uuid: [u8; binary::UUID_LEN],
    checksum_alg: ChecksumAlg,
    /// The JSON metadata. Modify it, then [`write()`] the header.
    pub metadata: Metadata,
}

/// A NUL-padded field as cryptsetup reads it: the bytes before the first NUL, at most N-1 of
/// them, the rest zeros.
fn normalized<const N: usize>(field: &[u8; N]) -> [u8; N] {
    let mut out = [0u8; N];
    let usable = field.get(..N.saturating_sub(1)).unwrap_or_default();
    let end = usable.iter().position(|&b| b == 0).unwrap_or(usable.len());
    if let (Some(dst), Some(src)) = (out.get_mut(..end), usable.get(..end)) {
        dst.copy_from_slice(src);
    }
    out
}

/// State of one header copy after reading.
#[derive(Debug)]
pub enum CopyStatus {
    /// Valid and chosen.
    Valid,
    /// Valid but with a lower `seqid` than the other copy: it needs rewriting.
    Stale {
        /// Its sequence id.
        seqid: u64,
    },
    /// Not usable (missing, bad checksum, invalid metadata...).
    Invalid(Error),
}

impl CopyStatus {
    /// Whether this copy is the valid, current one.
    pub fn is_valid(&self) -> bool {
        matches!(self, CopyStatus::Valid)
    }
}

/// What reading found.
#[derive(Debug)]
pub struct ReadReport {
    /// The primary copy.
    pub primary: CopyStatus,
    /// The secondary copy.
    pub secondary: CopyStatus,
    /// Where the secondary copy was looked for (or found, after a scan).
    pub secondary_offset: Option<u64>,
}

impl ReadReport {
    /// Whether one copy needs to be rewritten (`repair`).
    pub fn needs_repair(&self) -> bool {
        !(self.primary.is_valid() && self.secondary.is_valid())
    }
}

/// One copy read from disk, checksum verified.
struct RawCopy {
    bin: BinaryHeader,
    json_area: Vec<u8>,
}

fn read_copy<D: Device + ?Sized>(dev: &D, copy: Copy, offset: u64) -> Result<RawCopy> {
    let mut raw = vec![0u8; BIN_HEADER_LEN];
    dev.read_exact_at(offset, &mut raw)
        .map_err(|e| io_or_short(e, copy))?;
    let bin = BinaryHeader::parse(&raw)?;
    let json_len = bin.sanity_check(copy, offset)?;
    let mut json_area = vec![0u8; json_len];
    dev.read_exact_at(offset + BIN_HEADER_LEN as u64, &mut json_area)
        .map_err(|e| io_or_short(e, copy))?;
    binary::verify_checksum(copy, &bin, &raw, &json_area)?;
    Ok(RawCopy { bin, json_area })
}

fn io_or_short(e: std::io::Error, copy: Copy) -> Error {
    if e.kind() == std::io::ErrorKind::UnexpectedEof {
        Error::header(
            if copy == Copy::Primary {
                "primary header"
            } else {
                "secondary header"
            },
            "device too short",
        )
    } else {
        Error::io("reading the header", e)
    }
}

enum Slot {
    Ok(RawCopy, Box<Metadata>),
    /// Binary header and checksum fine, metadata invalid (cryptsetup's HDR_OBSOLETE).
    BadJson(RawCopy, Error),
    Fail(Error),
}

fn load_copy<D: Device + ?Sized>(dev: &D, copy: Copy, offset: u64) -> Slot {
    match read_copy(dev, copy, offset) {
        Ok(raw) => match Metadata::parse(&raw.json_area, raw.bin.hdr_size) {
            Ok(m) => Slot::Ok(raw, Box::new(m)),
            Err(e) => Slot::BadJson(raw, e),
        },
        Err(e) => Slot::Fail(e),
    }
}

impl Slot {
    fn status(&self) -> CopyStatus {
        match self {
            Slot::Ok(..) => CopyStatus::Valid,
            Slot::BadJson(_, e) | Slot::Fail(e) => CopyStatus::Invalid(clone_error(e)),
        }
    }
}

/// A copy of an error for reporting (errors hold `io::Error`, which is not `Clone`).
fn clone_error(e: &Error) -> Error {
    match e {
        Error::Io { context, source } => Error::io(
            context,
            std::io::Error::new(source.kind(), source.to_string()),
        ),
        Error::NotLuks2 => Error::NotLuks2,
        Error::InvalidHeader { field, reason } => Error::header(field, reason.clone()),
        Error::Checksum { copy } => Error::Checksum { copy },
        Error::Json(s) => Error::Json(s.clone()),
        other => Error::header("header", other.to_string()),
    }
}

/// Everything reading found, with the raw bytes of the chosen copy (for repair).
struct Loaded {
    header: Header,
    report: ReadReport,
    chosen: Copy,
    json_area: Vec<u8>,
    bin: BinaryHeader,
}

/// What cryptsetup decides from the first 8 bytes before reading any LUKS2 header: a primary
/// magic with a version other than 2 is another format (1 is LUKS1) or an unsupported version,
/// and the device is refused without looking for a secondary header. Version 0 (or no magic)
/// counts as a damaged LUKS2 primary.
fn check_primary_version<D: Device + ?Sized>(dev: &D) -> Result<()> {
    let mut head = [0u8; 8];
    if dev.read_exact_at(0, &mut head).is_err() {
        return Ok(());
    }
    let mut r = binary::Reader::new(&head);
    let magic: [u8; 6] = r.array("magic")?;
    let version = r.u16("version")?;
    if magic == binary::MAGIC_PRIMARY && version != 0 && version != 2 {
        return Err(if version == 1 {
            Error::NotLuks2
        } else {
            Error::header("version", format!("unsupported LUKS version {version}"))
        });
    }
    Ok(())
}

/// Reads the header as cryptsetup's loader does. When one copy needs recovery (damaged or stale),
/// cryptsetup first probes the device for signatures other than LUKS and refuses it with
/// "Device contains ambiguous signatures, cannot auto-recover LUKS2." if it finds one (another
/// format was probably written over the LUKS2 header); so do we, for every operation. Only an
/// explicit [`repair`] skips the probe ([`load_unprobed`]).
fn load<D: Device + ?Sized>(dev: &D) -> Result<Loaded> {
    let loaded = load_unprobed(dev)?;
    if loaded.report.needs_repair()
        && let Some(sig) = crate::backup::detect_foreign_signature(dev)?
    {
        return Err(Error::AmbiguousSignatures {
            signature: sig.name(),
        });
    }
    Ok(loaded)
}

fn load_unprobed<D: Device + ?Sized>(dev: &D) -> Result<Loaded> {
    check_primary_version(dev)?;
    let primary = load_copy(dev, Copy::Primary, 0);
    let (secondary, secondary_offset) = match &primary {
        Slot::Ok(raw, _) | Slot::BadJson(raw, _) => {
            let off = raw.bin.hdr_size;
            (load_copy(dev, Copy::Secondary, off), Some(off))
        }
        Slot::Fail(_) => {
            let mut found = (
                Slot::Fail(Error::header(
                    "secondary header",
                    "not found at any allowed offset",
                )),
                None,
            );
            for off in HDR_SIZES {
                let s = load_copy(dev, Copy::Secondary, off);
                if !matches!(s, Slot::Fail(_)) {
                    found = (s, Some(off));
                    break;
                }
            }
            found
        }
    };
    let mut report = ReadReport {
        primary: primary.status(),
        secondary: secondary.status(),
        secondary_offset,
    };
    let (chosen, raw, metadata) = match (primary, secondary) {
        (Slot::Ok(p, pm), Slot::Ok(s, sm)) => {
            if p.bin.seqid >= s.bin.seqid {
                if p.bin.seqid > s.bin.seqid {
                    report.secondary = CopyStatus::Stale { seqid: s.bin.seqid };
                }
                (Copy::Primary, p, pm)
            } else {
                report.primary = CopyStatus::Stale { seqid: p.bin.seqid };
                (Copy::Secondary, s, sm)
            }
        }
        (Slot::Ok(p, pm), _) => (Copy::Primary, p, pm),
        (_, Slot::Ok(s, sm)) => (Copy::Secondary, s, sm),
        (p, _) => {
            return Err(match p {
                Slot::Fail(e) | Slot::BadJson(_, e) => e,
                Slot::Ok(..) => Error::NotLuks2,
            });
        }
    };
    let need = metadata.header_area_size();
    let size = dev
        .size()
        .map_err(|e| Error::io("getting the device size", e))?;
    if size < need {
        return Err(Error::header(
            "device size",
            format!("device is too small: {size} bytes, the header and keyslots need {need}"),
        ));
    }
    let header = Header {
        seqid: raw.bin.seqid,
        label: normalized(&raw.bin.label),
        subsystem: normalized(&raw.bin.subsystem),
        uuid: normalized(&raw.bin.uuid),
        checksum_alg: raw.bin.checksum_algorithm()?,
        metadata: *metadata,
    };
    Ok(Loaded {
        header,
        report,
        chosen,
        json_area: raw.json_area,
        bin: raw.bin,
    })
}

/// Reads and validates the header; see [`read_with_report`] for the state of each copy.
pub fn read<D: Device + ?Sized>(dev: &D) -> Result<Header> {
    load(dev).map(|l| l.header)
}

/// Reads and validates the header and reports the state of both copies.
pub fn read_with_report<D: Device + ?Sized>(dev: &D) -> Result<(Header, ReadReport)> {
    load(dev).map(|l| (l.header, l.report))
}

/// Reads the header from a byte buffer (a header backup, a fuzz input).
pub fn read_bytes(bytes: &[u8]) -> Result<Header> {
    read(&ReadOnly(bytes))
}

/// Options for a brand-new header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewHeaderParams {
    /// UUID; `None` for a random one. Must parse as a UUID; stored lowercase and hyphenated.
    pub uuid: Option<String>,
    /// Label (at most 47 bytes).
    pub label: String,
    /// Subsystem (at most 47 bytes).
    pub subsystem: String,
}

impl Header {
    /// A header that has never been written, for `metadata` (whose `config.json_size` sets the
    /// header size). Its `seqid` is 0, so the first [`write_new`] stores 1, as cryptsetup's
    /// format does.
    pub fn new(params: &NewHeaderParams, metadata: Metadata) -> Result<Self> {
        let uuid = match &params.uuid {
            Some(u) => uuid::Uuid::parse_str(u).map_err(|e| {
                Error::InvalidArgument(format!("wrong LUKS UUID format {u:?}: {e}"))
            })?,
            None => {
                let mut bytes = [0u8; 16];
                getrandom::fill(&mut bytes)
                    .map_err(|e| Error::io("generating a UUID", std::io::Error::other(e)))?;
                uuid::Builder::from_random_bytes(bytes).into_uuid()
            }
        };
        let mut h = Header {
            seqid: 0,
            label: [0; binary::LABEL_LEN],
            subsystem: [0; binary::LABEL_LEN],
            uuid: binary::to_c_field(&uuid.hyphenated().to_string(), "uuid")?,
            checksum_alg: ChecksumAlg::Sha256,
            metadata,
        };
        h.set_label(&params.label)?;
        h.set_subsystem(&params.subsystem)?;
        if !HDR_SIZES.contains(&h.hdr_size()) {
            return Err(Error::InvalidArgument(format!(
                "unsupported LUKS2 metadata size {}",
                h.hdr_size()
            )));
        }
        Ok(h)
    }

    /// Sequence id of the copy this header was read from (or last written).
    pub fn seqid(&self) -> u64 {
        self.seqid
    }

    /// The label.
    pub fn label(&self) -> Cow<'_, str> {
        binary::c_text(&self.label)
    }

    /// The subsystem.
    pub fn subsystem(&self) -> Cow<'_, str> {
        binary::c_text(&self.subsystem)
    }

    /// The UUID text as stored (bytes that are not UTF-8 shown as U+FFFD).
    pub fn uuid(&self) -> Cow<'_, str> {
        binary::c_text(&self.uuid)
    }

    /// The checksum algorithm.
    pub fn checksum_alg(&self) -> ChecksumAlg {
        self.checksum_alg
    }

    /// Size of one header copy (binary header + JSON area).
    pub fn hdr_size(&self) -> u64 {
        self.metadata.hdr_size()
    }

    /// Bytes taken by both header copies and the keyslots area (the size of a header backup).
    pub fn header_area_size(&self) -> u64 {
        self.metadata.header_area_size()
    }

    /// Sets the label (at most 47 bytes, no NUL).
    pub fn set_label(&mut self, label: &str) -> Result<()> {
        self.label = binary::to_c_field(label, "label")?;
        Ok(())
    }

    /// Sets the subsystem (at most 47 bytes, no NUL).
    pub fn set_subsystem(&mut self, subsystem: &str) -> Result<()> {
        self.subsystem = binary::to_c_field(subsystem, "subsystem")?;
        Ok(())
    }

    fn binary(&self, copy: Copy, seqid: u64) -> Result<BinaryHeader> {
        let hdr_size = self.hdr_size();
        let mut salt = [0u8; SALT_LEN];
        getrandom::fill(&mut salt)
            .map_err(|e| Error::io("generating a header salt", std::io::Error::other(e)))?;
        Ok(BinaryHeader {
            magic: copy.magic(),
            version: 2,
            hdr_size,
            seqid,
            label: self.label,
            checksum_alg: binary::to_c_field(self.checksum_alg.name(), "checksum_alg")?,
            salt,
            uuid: self.uuid,
            subsystem: self.subsystem,
            hdr_offset: if copy == Copy::Primary { 0 } else { hdr_size },
            csum: [0u8; binary::CSUM_LEN],
        })
    }
}

/// Writes one copy: binary header without checksum, JSON area, binary header with checksum, sync.
fn write_copy<D: Device + ?Sized>(dev: &mut D, bin: &BinaryHeader, json_area: &[u8]) -> Result<()> {
    let ctx = if bin.hdr_offset == 0 {
        "writing the primary header"
    } else {
        "writing the secondary header"
    };
    let offset = bin.hdr_offset;
    dev.write_all_at(offset, &bin.to_bytes())
        .map_err(|e| Error::io(ctx, e))?;
    dev.write_all_at(offset + BIN_HEADER_LEN as u64, json_area)
        .map_err(|e| Error::io(ctx, e))?;
    let sealed = binary::seal(bin, json_area)?;
    dev.write_all_at(offset, &sealed)
        .map_err(|e| Error::io(ctx, e))?;
    dev.sync().map_err(|e| Error::io(ctx, e))
}

/// The JSON area for `header`, after checking the metadata is writable and passes the same
/// validation as reading.
fn prepare(header: &Header) -> Result<Vec<u8>> {
    header.metadata.ensure_writable()?;
    prepare_unrestricted(header)
}

/// [`prepare`] without the requirements check, for the one update libcryptsetup allows on a
/// header with unknown mandatory requirements: destroying a keyslot.
fn prepare_unrestricted(header: &Header) -> Result<Vec<u8>> {
    let area = header.metadata.to_json_area()?;
    Metadata::parse(&area, header.hdr_size())
        .map_err(|e| Error::InvalidArgument(format!("refusing to write invalid metadata: {e}")))?;
    Ok(area)
}

fn write_both<D: Device + ?Sized>(dev: &mut D, header: &mut Header, area: &[u8]) -> Result<()> {
    let seqid = header
        .seqid
        .checked_add(1)
        .ok_or_else(|| Error::InvalidArgument("seqid overflow".into()))?;
    write_copy(dev, &header.binary(Copy::Primary, seqid)?, area)?;
    write_copy(dev, &header.binary(Copy::Secondary, seqid)?, area)?;
    header.seqid = seqid;
    // What is on disk now is the stored JSON: an entry removed by this write must not lend its
    // unknown members to a later entry of the same number.
    header.metadata.refresh_stored();
    Ok(())
}

/// Writes an updated header: takes the device lock, aborts with [`Error::Busy`] if the on-disk
/// header (same UUID) changed since `header` was read, then writes both copies with `seqid + 1`.
/// Refuses headers with mandatory requirements ([`Error::ReadOnlyRequirements`]) and metadata
/// that does not validate.
pub fn write<D: Device + ?Sized>(dev: &mut D, header: &mut Header) -> Result<()> {
    with_exclusive_lock(dev, |dev| write_locked(dev, header))
}

/// [`write()`] for a caller that already holds the device lock (e.g. across a keyslot-area write
/// and the header update). Runs [`begin_update_locked`] first, so it also refuses a header that
/// changed on disk and repairs a stale copy before writing.
pub fn write_locked<D: Device + ?Sized>(dev: &mut D, header: &mut Header) -> Result<()> {
    let area = prepare(header)?;
    begin_update_locked(dev, header)?;
    write_both(dev, header, &area)
}

/// [`write_locked`] for a header whose unknown mandatory requirements make it otherwise
/// read-only: libcryptsetup lets `luksKillSlot` / `luksRemoveKey` destroy a keyslot there (the
/// requirements are kept as they are), so only [`crate::keyslot::kill_keyslot`] uses this.
pub(crate) fn write_locked_keyslot_removal<D: Device + ?Sized>(
    dev: &mut D,
    header: &mut Header,
) -> Result<()> {
    let area = prepare_unrestricted(header)?;
    begin_update_locked(dev, header)?;
    write_both(dev, header, &area)
}

/// The first step of every update, under the device lock and before anything belonging to the
/// update (a keyslot area included) is written:
///
/// 1. the on-disk header must still be the one `header` was read from: same UUID and `seqid`
///    (cryptsetup compares the `seqid`; we also compare the UUID, so that a concurrent re-format
///    is never written over, and refuse a device whose header no longer reads at all). Any
///    difference is [`Error::Busy`], and nothing has been written.
/// 2. a header copy that is stale (lower `seqid`, left by a crash between the two copy writes) or
///    damaged is rewritten from the current one first, as cryptsetup's auto-recovery does on
///    load. Otherwise the update would write the primary while the secondary still holds an
///    older generation, whose keyslots may point at areas this update reuses: a torn primary
///    write would then leave only that older copy.
pub fn begin_update_locked<D: Device + ?Sized>(dev: &mut D, header: &Header) -> Result<()> {
    let on_disk = match load(&*dev) {
        Ok(l) => l,
        Err(e) => {
            return Err(Error::Busy(format!(
                "the LUKS2 header on the device no longer reads ({e}); concurrent change?"
            )));
        }
    };
    if on_disk.header.uuid != header.uuid {
        return Err(Error::Busy(format!(
            "concurrent LUKS2 re-format detected (on-disk UUID {}, expected {})",
            on_disk.header.uuid(),
            header.uuid()
        )));
    }
    if on_disk.header.seqid != header.seqid {
        return Err(Error::Busy(format!(
            "concurrent LUKS2 metadata update detected (on-disk seqid {}, expected {})",
            on_disk.header.seqid, header.seqid
        )));
    }
    if on_disk.report.needs_repair() {
        rewrite_other_copy(dev, &on_disk)?;
    }
    Ok(())
}

/// Writes a brand-new header (format), without comparing with whatever is on the device.
/// Takes the device lock.
pub fn write_new<D: Device + ?Sized>(dev: &mut D, header: &mut Header) -> Result<()> {
    with_exclusive_lock(dev, |dev| {
        let area = prepare(header)?;
        write_both(dev, header, &area)
    })
}

/// What [`repair`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RepairOutcome {
    /// Both copies were valid and current.
    NothingToDo,
    /// This copy was rewritten from the other.
    Rewrote(Copy),
}

/// Rewrites a bad or stale header copy from the good one (same JSON bytes and seqid, fresh salt),
/// under the device lock. Fails if neither copy is valid, and refuses a header with mandatory
/// requirements ([`Error::ReadOnlyRequirements`]: an online reencryption in progress, a feature
/// we do not know), whether a copy needs repair or not, without writing: cryptsetup's `repair`
/// fails for it too (exit 1).
pub fn repair<D: Device + ?Sized>(dev: &mut D) -> Result<RepairOutcome> {
    with_exclusive_lock(dev, |dev| {
        let loaded = load_unprobed(&*dev)?;
        loaded.header.metadata.ensure_writable()?;
        if !loaded.report.needs_repair() {
            return Ok(RepairOutcome::NothingToDo);
        }
        rewrite_other_copy(dev, &loaded).map(RepairOutcome::Rewrote)
    })
}

/// Rewrites the copy that was not chosen from the chosen one (same JSON bytes and seqid, fresh
/// salt, the chosen copy's binary fields kept exactly). Returns the copy written.
fn rewrite_other_copy<D: Device + ?Sized>(dev: &mut D, loaded: &Loaded) -> Result<Copy> {
    let target = match loaded.chosen {
        Copy::Primary => Copy::Secondary,
        Copy::Secondary => Copy::Primary,
    };
    let mut bin = loaded.header.binary(target, loaded.bin.seqid)?;
    // Keep the good copy's binary fields exactly (label bytes, checksum algorithm).
    bin.label = loaded.bin.label;
    bin.subsystem = loaded.bin.subsystem;
    bin.uuid = loaded.bin.uuid;
    bin.checksum_alg = loaded.bin.checksum_alg;
    write_copy(dev, &bin, &loaded.json_area)?;
    Ok(target)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;

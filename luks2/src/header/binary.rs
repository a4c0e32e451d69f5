//! The raw 4096-byte LUKS2 binary header, big-endian, exactly as on disk.
//!
//! Parsing is total: no indexing into untrusted data, every field read through [`Reader`], each
//! error naming the field. What to reject follows cryptsetup (`hdr_disk_sanity_check_pre` in
//! `lib/luks2/luks2_disk_metadata.c`): magic, version 2, `hdr_offset` equal to where the copy was
//! read, `hdr_size` within 16 KiB..=4 MiB and, for the secondary copy, equal to its offset.
//! Padding bytes and the text fields are not checked (cryptsetup ignores them too).

use sha1::Sha1;
use sha2::{Sha224, Sha256, Sha384, Sha512};

use crate::error::{Error, Result};

/// Size of the binary header.
pub const BIN_HEADER_LEN: usize = 4096;
/// Magic of the primary copy.
pub const MAGIC_PRIMARY: [u8; 6] = *b"LUKS\xba\xbe";
/// Magic of the secondary copy.
pub const MAGIC_SECONDARY: [u8; 6] = *b"SKUL\xba\xbe";
/// Length of the label and subsystem fields (NUL padded, at most 47 usable bytes).
pub const LABEL_LEN: usize = 48;
/// Length of the checksum algorithm field.
pub const CHECKSUM_ALG_LEN: usize = 32;
/// Length of the salt field.
pub const SALT_LEN: usize = 64;
/// Length of the UUID field.
pub const UUID_LEN: usize = 40;
/// Length of the checksum field.
pub const CSUM_LEN: usize = 64;
/// Offset of the checksum field.
pub const CSUM_OFFSET: usize = 448;
/// Smallest header copy (binary header + JSON area).
pub const MIN_HDR_SIZE: u64 = 16 * 1024;
/// Largest header copy.
pub const MAX_HDR_SIZE: u64 = 4 * 1024 * 1024;

/// A total big-endian reader over untrusted bytes.
#[derive(Debug)]
pub struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    /// Reads from `bytes`.
    pub fn new(bytes: &'a [u8]) -> Self {
        Reader { rest: bytes }
    }

    /// Takes `n` bytes, or fails naming `field`.
    pub fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8]> {
        if self.rest.len() < n {
            return Err(Error::header(field, "header truncated"));
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    /// Takes a fixed-size array.
    pub fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N]> {
        let bytes = self.take(N, field)?;
        let mut out = [0u8; N];
        out.copy_from_slice(bytes);
        Ok(out)
    }

    /// A big-endian u16.
    pub fn u16(&mut self, field: &'static str) -> Result<u16> {
        Ok(u16::from_be_bytes(self.array(field)?))
    }

    /// A big-endian u64.
    pub fn u64(&mut self, field: &'static str) -> Result<u64> {
        Ok(u64::from_be_bytes(self.array(field)?))
    }

    /// Bytes left.
    pub fn remaining(&self) -> usize {
        self.rest.len()
    }
}

/// Which of the two header copies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Copy {
    /// At offset 0, magic `LUKS\xba\xbe`.
    Primary,
    /// At offset `hdr_size`, magic `SKUL\xba\xbe`.
    Secondary,
}

impl Copy {
    /// The magic this copy carries.
    pub fn magic(self) -> [u8; 6] {
        match self {
            Copy::Primary => MAGIC_PRIMARY,
            Copy::Secondary => MAGIC_SECONDARY,
        }
    }

    /// "primary" or "secondary".
    pub fn name(self) -> &'static str {
        match self {
            Copy::Primary => "primary",
            Copy::Secondary => "secondary",
        }
    }
}

/// Hash algorithms accepted for the header checksum.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChecksumAlg {
    /// SHA-1 (20 bytes).
    Sha1,
    /// SHA-224.
    Sha224,
    /// SHA-256 (cryptsetup's default).
    Sha256,
    /// SHA-384.
    Sha384,
    /// SHA-512.
    Sha512,
}

impl ChecksumAlg {
    /// Parses the NUL-terminated name as cryptsetup stores it.
    /// Case-insensitive, as cryptsetup's crypto backend looks hashes up.
    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name.to_ascii_lowercase().as_str() {
            "sha1" => ChecksumAlg::Sha1,
            "sha224" => ChecksumAlg::Sha224,
            "sha256" => ChecksumAlg::Sha256,
            "sha384" => ChecksumAlg::Sha384,
            "sha512" => ChecksumAlg::Sha512,
            _ => return None,
        })
    }

    /// The name written to the header.
    pub fn name(self) -> &'static str {
        match self {
            ChecksumAlg::Sha1 => "sha1",
            ChecksumAlg::Sha224 => "sha224",
            ChecksumAlg::Sha256 => "sha256",
            ChecksumAlg::Sha384 => "sha384",
            ChecksumAlg::Sha512 => "sha512",
        }
    }

    /// Digest length in bytes.
    pub fn digest_len(self) -> usize {
        match self {
            ChecksumAlg::Sha1 => 20,
            ChecksumAlg::Sha224 => 28,
            ChecksumAlg::Sha256 => 32,
            ChecksumAlg::Sha384 => 48,
            ChecksumAlg::Sha512 => 64,
        }
    }

    /// Hashes the concatenation of `parts`.
    pub fn hash(self, parts: &[&[u8]]) -> Vec<u8> {
        fn run<H: sha2::Digest>(parts: &[&[u8]]) -> Vec<u8> {
            let mut h = H::new();
            for p in parts {
                h.update(p);
            }
            h.finalize().to_vec()
        }
        match self {
            ChecksumAlg::Sha1 => run::<Sha1>(parts),
            ChecksumAlg::Sha224 => run::<Sha224>(parts),
            ChecksumAlg::Sha256 => run::<Sha256>(parts),
            ChecksumAlg::Sha384 => run::<Sha384>(parts),
            ChecksumAlg::Sha512 => run::<Sha512>(parts),
        }
    }
}

/// The binary header fields, raw (fixed-size, NUL-padded byte arrays as on disk).
#[derive(Clone, PartialEq, Eq)]
pub struct BinaryHeader {
    /// The magic (`LUKS\xba\xbe` or `SKUL\xba\xbe`).
    pub magic: [u8; 6],
    /// Format version (2).
    pub version: u16,
    /// Size of this copy: binary header plus JSON area.
    pub hdr_size: u64,
    /// Sequence id, incremented on every update.
    pub seqid: u64,
    /// Label, NUL padded.
    pub label: [u8; LABEL_LEN],
    /// Checksum algorithm name, NUL padded.
    pub checksum_alg: [u8; CHECKSUM_ALG_LEN],
    /// Per-copy random salt.
    pub salt: [u8; SALT_LEN],
    /// UUID text, NUL padded.
    pub uuid: [u8; UUID_LEN],
    /// Subsystem, NUL padded.
    pub subsystem: [u8; LABEL_LEN],
    /// Offset of this copy on the device.
    pub hdr_offset: u64,
    /// Checksum (first `ChecksumAlg::len` bytes used).
    pub csum: [u8; CSUM_LEN],
}

impl std::fmt::Debug for BinaryHeader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BinaryHeader")
            .field("magic", &self.magic)
            .field("version", &self.version)
            .field("hdr_size", &self.hdr_size)
            .field("seqid", &self.seqid)
            .field("label", &c_str(&self.label))
            .field("checksum_alg", &c_str(&self.checksum_alg))
            .field("uuid", &c_str(&self.uuid))
            .field("subsystem", &c_str(&self.subsystem))
            .field("hdr_offset", &self.hdr_offset)
            .finish_non_exhaustive()
    }
}

/// The text of a NUL-padded field: bytes up to the first NUL, the last byte always treated as NUL
/// (cryptsetup forces it), lossily decoded.
pub fn c_str(field: &[u8]) -> String {
    c_text(field).into_owned()
}

/// As [`c_str`], borrowing when the bytes are UTF-8.
pub fn c_text(field: &[u8]) -> std::borrow::Cow<'_, str> {
    let usable = field.len().saturating_sub(1);
    let bytes = field.get(..usable).unwrap_or_default();
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(bytes.get(..end).unwrap_or_default())
}

/// Fills a NUL-padded field from text; fails if it does not fit with a terminating NUL.
pub fn to_c_field<const N: usize>(text: &str, field: &'static str) -> Result<[u8; N]> {
    let bytes = text.as_bytes();
    if bytes.len() >= N || bytes.contains(&0) {
        return Err(Error::InvalidArgument(format!(
            "{field} must be at most {} bytes without NUL",
            N - 1
        )));
    }
    let mut out = [0u8; N];
    if let Some(dst) = out.get_mut(..bytes.len()) {
        dst.copy_from_slice(bytes);
    }
    Ok(out)
}

impl BinaryHeader {
    /// Parses the fields from (at least) 4096 bytes, without any validation.
    pub fn parse(bytes: &[u8]) -> Result<Self> {
        let mut r = Reader::new(bytes);
        if r.remaining() < BIN_HEADER_LEN {
            return Err(Error::header("binary header", "shorter than 4096 bytes"));
        }
        let magic = r.array("magic")?;
        let version = r.u16("version")?;
        let hdr_size = r.u64("hdr_size")?;
        let seqid = r.u64("seqid")?;
        let label = r.array("label")?;
        let checksum_alg = r.array("checksum_alg")?;
        let salt = r.array("salt")?;
        let uuid = r.array("uuid")?;
        let subsystem = r.array("subsystem")?;
        let hdr_offset = r.u64("hdr_offset")?;
        r.take(184, "padding")?;
        let csum = r.array("csum")?;
        Ok(BinaryHeader {
            magic,
            version,
            hdr_size,
            seqid,
            label,
            checksum_alg,
            salt,
            uuid,
            subsystem,
            hdr_offset,
            csum,
        })
    }

    /// Checks the fields cryptsetup checks before the checksum, for a copy read at `offset`.
    /// Returns the JSON area length.
    pub fn sanity_check(&self, copy: Copy, offset: u64) -> Result<usize> {
        if self.magic != copy.magic() {
            return Err(if copy == Copy::Primary {
                Error::NotLuks2
            } else {
                Error::header("magic", "no secondary header magic")
            });
        }
        if self.version != 2 {
            return Err(Error::header(
                "version",
                format!("unsupported version {}", self.version),
            ));
        }
        if self.hdr_offset != offset {
            return Err(Error::header(
                "hdr_offset",
                format!(
                    "{} does not match the copy's offset {offset}",
                    self.hdr_offset
                ),
            ));
        }
        if !(MIN_HDR_SIZE..=MAX_HDR_SIZE).contains(&self.hdr_size) {
            return Err(Error::header(
                "hdr_size",
                format!("bogus size {}", self.hdr_size),
            ));
        }
        if copy == Copy::Secondary && self.hdr_size != offset {
            return Err(Error::header(
                "hdr_size",
                format!(
                    "secondary header size {} differs from its offset {offset}",
                    self.hdr_size
                ),
            ));
        }
        self.checksum_algorithm()?;
        usize::try_from(self.hdr_size - BIN_HEADER_LEN as u64)
            .map_err(|_| Error::header("hdr_size", "too large for this platform"))
    }

    /// The checksum algorithm, if supported.
    pub fn checksum_algorithm(&self) -> Result<ChecksumAlg> {
        let name = c_str(&self.checksum_alg);
        ChecksumAlg::from_name(&name).ok_or_else(|| {
            Error::header(
                "checksum_alg",
                format!("unsupported checksum algorithm {name:?}"),
            )
        })
    }

    /// Serializes to 4096 bytes (padding zero).
    pub fn to_bytes(&self) -> [u8; BIN_HEADER_LEN] {
        let mut out = [0u8; BIN_HEADER_LEN];
        let mut w = Writer {
            buf: &mut out,
            pos: 0,
        };
        w.put(&self.magic);
        w.put(&self.version.to_be_bytes());
        w.put(&self.hdr_size.to_be_bytes());
        w.put(&self.seqid.to_be_bytes());
        w.put(&self.label);
        w.put(&self.checksum_alg);
        w.put(&self.salt);
        w.put(&self.uuid);
        w.put(&self.subsystem);
        w.put(&self.hdr_offset.to_be_bytes());
        w.pos = CSUM_OFFSET;
        w.put(&self.csum);
        out
    }
}

struct Writer<'a> {
    buf: &'a mut [u8],
    pos: usize,
}

impl Writer<'_> {
    fn put(&mut self, bytes: &[u8]) {
        // Positions are compile-time layout constants well inside 4096 bytes.
        if let Some(dst) = self.buf.get_mut(self.pos..self.pos + bytes.len()) {
            dst.copy_from_slice(bytes);
        }
        self.pos += bytes.len();
    }
}

/// Computes the checksum of a copy: hash(binary header with `csum` zeroed ‖ whole JSON area).
/// `bin` is the raw 4096-byte header as on disk (padding included, as cryptsetup hashes it).
pub fn compute_checksum(alg: ChecksumAlg, bin: &[u8], json_area: &[u8]) -> Result<Vec<u8>> {
    let head = bin
        .get(..CSUM_OFFSET)
        .ok_or_else(|| Error::header("binary header", "truncated"))?;
    let tail = bin
        .get(CSUM_OFFSET + CSUM_LEN..BIN_HEADER_LEN)
        .ok_or_else(|| Error::header("binary header", "truncated"))?;
    let zero = [0u8; CSUM_LEN];
    Ok(alg.hash(&[head, &zero, tail, json_area]))
}

/// Verifies the stored checksum of raw header bytes against the JSON area.
pub fn verify_checksum(copy: Copy, hdr: &BinaryHeader, bin: &[u8], json_area: &[u8]) -> Result<()> {
    let alg = hdr.checksum_algorithm()?;
    let expect = compute_checksum(alg, bin, json_area)?;
    let stored = hdr.csum.get(..alg.digest_len()).unwrap_or_default();
    if subtle::ConstantTimeEq::ct_eq(stored, expect.as_slice()).into() {
        Ok(())
    } else {
        Err(Error::Checksum { copy: copy.name() })
    }
}

/// Serializes `hdr` with its checksum computed over `json_area` (the csum field of `hdr` is
/// ignored).
pub fn seal(hdr: &BinaryHeader, json_area: &[u8]) -> Result<[u8; BIN_HEADER_LEN]> {
    let mut h = hdr.clone();
    h.csum = [0u8; CSUM_LEN];
    let alg = h.checksum_algorithm()?;
    let sum = compute_checksum(alg, &h.to_bytes(), json_area)?;
    if let Some(dst) = h.csum.get_mut(..sum.len()) {
        dst.copy_from_slice(&sum);
    }
    Ok(h.to_bytes())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn sample() -> BinaryHeader {
        BinaryHeader {
            magic: MAGIC_PRIMARY,
            version: 2,
            hdr_size: 16384,
            seqid: 7,
            label: to_c_field("my label", "label").unwrap(),
            checksum_alg: to_c_field("sha256", "checksum_alg").unwrap(),
            salt: [0x5a; SALT_LEN],
            uuid: to_c_field("0f3c3b0e-8d3f-4f0e-9a55-2c4e1d9b7a11", "uuid").unwrap(),
            subsystem: to_c_field("sub", "subsystem").unwrap(),
            hdr_offset: 0,
            csum: [0; CSUM_LEN],
        }
    }

    #[test]
    fn layout_matches_the_specification() {
        let b = sample().to_bytes();
        assert_eq!(&b[0..6], b"LUKS\xba\xbe");
        assert_eq!(&b[6..8], &[0, 2]);
        assert_eq!(&b[8..16], &16384u64.to_be_bytes());
        assert_eq!(&b[16..24], &7u64.to_be_bytes());
        assert_eq!(&b[24..32], b"my label");
        assert_eq!(&b[72..78], b"sha256");
        assert_eq!(b[104], 0x5a);
        assert_eq!(b[167], 0x5a);
        assert_eq!(&b[168..172], b"0f3c");
        assert_eq!(&b[208..211], b"sub");
        assert_eq!(&b[256..264], &0u64.to_be_bytes());
        assert!(b[264..].iter().all(|&x| x == 0));
    }

    #[test]
    fn round_trip() {
        let h = sample();
        assert_eq!(BinaryHeader::parse(&h.to_bytes()).unwrap(), h);
        assert_eq!(h.sanity_check(Copy::Primary, 0).unwrap(), 16384 - 4096);
    }

    #[test]
    fn truncation_is_an_error_naming_the_header() {
        let b = sample().to_bytes();
        for len in [0, 5, 100, 447, 4095] {
            let e = BinaryHeader::parse(&b[..len]).unwrap_err();
            assert!(matches!(e, Error::InvalidHeader { .. }), "{len}: {e}");
        }
    }

    #[test]
    fn sanity_checks() {
        let mut h = sample();
        h.magic = *b"LUKS\xba\xbf";
        assert!(matches!(
            h.sanity_check(Copy::Primary, 0),
            Err(Error::NotLuks2)
        ));
        let mut h = sample();
        h.version = 1;
        assert!(h.sanity_check(Copy::Primary, 0).is_err());
        let mut h = sample();
        h.hdr_offset = 4096;
        assert!(h.sanity_check(Copy::Primary, 0).is_err());
        for bad in [0, 4096, 16383, 4 * 1024 * 1024 + 1, u64::MAX] {
            let mut h = sample();
            h.hdr_size = bad;
            assert!(h.sanity_check(Copy::Primary, 0).is_err(), "{bad}");
        }
        let mut h = sample();
        h.magic = MAGIC_SECONDARY;
        h.hdr_offset = 16384;
        assert!(h.sanity_check(Copy::Secondary, 16384).is_ok());
        assert!(h.sanity_check(Copy::Primary, 16384).is_err());
        h.hdr_offset = 32768;
        assert!(h.sanity_check(Copy::Secondary, 32768).is_err());
        let mut h = sample();
        h.checksum_alg = to_c_field("md5", "checksum_alg").unwrap();
        assert!(h.sanity_check(Copy::Primary, 0).is_err());
    }

    #[test]
    fn checksum_detects_any_flipped_byte() {
        let json = vec![b'{'; 12288];
        for alg in ["sha1", "sha224", "sha256", "sha384", "sha512"] {
            let mut h = sample();
            h.checksum_alg = to_c_field(alg, "checksum_alg").unwrap();
            let sealed = seal(&h, &json).unwrap();
            let parsed = BinaryHeader::parse(&sealed).unwrap();
            verify_checksum(Copy::Primary, &parsed, &sealed, &json).unwrap();
            for pos in [0usize, 24, 104, 300, 448, 600, 4095] {
                let mut bad = sealed;
                bad[pos] ^= 1;
                let p = BinaryHeader::parse(&bad).unwrap();
                assert!(
                    verify_checksum(Copy::Primary, &p, &bad, &json).is_err(),
                    "{alg} {pos}"
                );
            }
            let mut bad_json = json.clone();
            bad_json[12287] = 0;
            assert!(verify_checksum(Copy::Primary, &parsed, &sealed, &bad_json).is_err());
        }
    }

    #[test]
    fn nonzero_padding_is_hashed_and_accepted() {
        let json = vec![0u8; 12288];
        let h = sample();
        let mut raw = h.to_bytes();
        raw[300] = 0xff;
        raw[4000] = 0xee;
        let alg = ChecksumAlg::Sha256;
        let sum = compute_checksum(alg, &raw, &json).unwrap();
        raw[CSUM_OFFSET..CSUM_OFFSET + 32].copy_from_slice(&sum);
        let parsed = BinaryHeader::parse(&raw).unwrap();
        parsed.sanity_check(Copy::Primary, 0).unwrap();
        verify_checksum(Copy::Primary, &parsed, &raw, &json).unwrap();
    }

    #[test]
    fn c_strings() {
        let mut f = [b'a'; 48];
        assert_eq!(c_str(&f).len(), 47);
        f[3] = 0;
        assert_eq!(c_str(&f), "aaa");
        assert!(to_c_field::<48>(&"x".repeat(48), "label").is_err());
        assert!(to_c_field::<48>(&"x".repeat(47), "label").is_ok());
    }
}

//! The checks behind the fuzz targets in `fuzz_targets/`: each target is one call into a
//! function here, and each function is a thin wrapper around one library entry point that
//! states the properties we want: no panic, bounded memory and time, and, where the input
//! parses, write -> parse gives an equal value.
//!
//! The functions are plain library code so that a crash found by the fuzzer can be replayed
//! from a regression test, and so that `cargo test` in this crate runs them over the seeds.

use base64::Engine as _;
use luks2::header::{
    self,
    binary::{self, BIN_HEADER_LEN, BinaryHeader, CSUM_OFFSET, Copy},
};
use luks2::io::{Device, MemDevice};
use luks2::keyslot;
use luks2::metadata::{DigestKind, HDR_SIZES, Kdf, Keyslot, Metadata};

/// The passphrase of `testdata/luks2-pbkdf2-small.img` and of every image `seed-corpus.sh`
/// makes, so that the keyslot target reaches the success path on unmutated seeds.
pub const PASSPHRASE: &[u8] = b"correct horse battery staple";

/// Largest PBKDF2 iteration count the keyslot target runs (keyslot KDF and digest).
pub const MAX_FUZZ_PBKDF2_ITERATIONS: i64 = 1000;
/// Largest Argon2 time cost the keyslot target runs.
pub const MAX_FUZZ_ARGON2_TIME: i64 = 4;
/// Largest Argon2 memory (KiB) the keyslot target runs.
pub const MAX_FUZZ_ARGON2_MEMORY_KIB: i64 = 256;

/// Binary header: parse; if it parses, serialize and parse again (equal value, and every field
/// byte preserved); run the sanity checks for both copies at a few offsets.
pub fn binary_header(data: &[u8]) {
    let Ok(h) = BinaryHeader::parse(data) else {
        assert!(data.len() < BIN_HEADER_LEN, "4096 bytes always parse");
        return;
    };
    let bytes = h.to_bytes();
    let again = BinaryHeader::parse(&bytes).expect("a serialized binary header parses");
    assert_eq!(h, again, "binary header round trip");
    // Everything but the padding is preserved byte for byte.
    assert_eq!(
        bytes.get(..264),
        data.get(..264),
        "fields before the padding"
    );
    assert_eq!(
        bytes.get(CSUM_OFFSET..CSUM_OFFSET + binary::CSUM_LEN),
        data.get(CSUM_OFFSET..CSUM_OFFSET + binary::CSUM_LEN),
        "checksum field"
    );
    for copy in [Copy::Primary, Copy::Secondary] {
        for offset in [0, h.hdr_size, 16 * 1024] {
            let _ = h.sanity_check(copy, offset);
        }
    }
    if let Ok(alg) = h.checksum_algorithm() {
        let json = data.get(BIN_HEADER_LEN..).unwrap_or_default();
        let raw = data.get(..BIN_HEADER_LEN).unwrap_or_default();
        let _ = binary::verify_checksum(Copy::Primary, &h, raw, json);
        let sealed = binary::seal(&h, json).expect("seal with a known algorithm");
        let sealed_hdr = BinaryHeader::parse(&sealed).expect("a sealed header parses");
        binary::verify_checksum(Copy::Primary, &sealed_hdr, &sealed, json)
            .expect("a sealed header verifies");
        assert_eq!(sealed_hdr.checksum_algorithm().ok(), Some(alg));
    }
    let _ = (binary::c_str(&h.label), binary::c_str(&h.uuid));
}

/// JSON metadata: the input is the JSON area text, NUL-padded to the JSON area of the smallest
/// header size it fits. If it validates, it re-serializes into its own area and validates to an
/// equal value.
pub fn json_metadata(data: &[u8]) {
    let Some(hdr_size) = HDR_SIZES
        .iter()
        .copied()
        .find(|&s| (data.len() as u64) < s - BIN_HEADER_LEN as u64)
    else {
        return;
    };
    let mut area = data.to_vec();
    area.resize(usize::try_from(hdr_size).unwrap_or(0) - BIN_HEADER_LEN, 0);
    let Ok(md) = Metadata::parse(&area, hdr_size) else {
        return;
    };
    check_metadata_round_trip(&md, hdr_size);
    exercise_metadata(&md);
}

/// Serializes `md` into its JSON area and parses it back: it must fit and give an equal value.
pub fn check_metadata_round_trip(md: &Metadata, hdr_size: u64) {
    let area = md
        .to_json_area()
        .expect("validated metadata fits its own JSON area");
    assert_eq!(area.len() as u64, hdr_size - BIN_HEADER_LEN as u64);
    let again = Metadata::parse(&area, hdr_size).expect("re-serialized metadata validates");
    assert_eq!(md, &again, "metadata round trip");
    assert_eq!(md.to_json(), again.to_json(), "serialization is stable");
}

/// Calls the cheap accessors a caller would use on validated metadata.
fn exercise_metadata(md: &Metadata) {
    let _ = (md.data_offset(), md.header_area_size(), md.keyslots_area());
    let _ = (md.is_read_only(), md.requirements().len());
    let _ = (
        md.next_free_keyslot(),
        md.next_free_token(),
        md.next_free_digest(),
    );
    let _ = md.find_free_area(258_048);
    for (&id, ks) in &md.keyslots {
        let _ = (md.digest_of_keyslot(id), ks.area_range());
        if let Some(k) = ks.as_luks2() {
            let _ = (k.kdf_params(), k.area_key_len(), k.af_stripes());
        }
    }
    for &id in md.segments.keys() {
        let _ = md.digest_of_segment(id);
    }
}

/// Recomputes the checksum of every header copy found in `buf` (the primary at 0, a secondary
/// at the primary's `hdr_size` and at each allowed offset), so that mutations reach validation
/// instead of stopping at the checksum. Copies whose size or algorithm are unusable are left.
pub fn fix_checksums(buf: &mut [u8]) {
    let mut offsets = vec![0u64];
    if let Some(h) = buf
        .get(..BIN_HEADER_LEN)
        .and_then(|b| BinaryHeader::parse(b).ok())
    {
        offsets.push(h.hdr_size);
    }
    offsets.extend(HDR_SIZES);
    offsets.sort_unstable();
    offsets.dedup();
    for off in offsets {
        let Ok(start) = usize::try_from(off) else {
            continue;
        };
        let Some(h) = buf
            .get(start..)
            .and_then(|b| b.get(..BIN_HEADER_LEN))
            .and_then(|b| BinaryHeader::parse(b).ok())
        else {
            continue;
        };
        let (Ok(alg), Ok(size)) = (h.checksum_algorithm(), usize::try_from(h.hdr_size)) else {
            continue;
        };
        if !(BIN_HEADER_LEN..=4 << 20).contains(&size) {
            continue;
        }
        let Some(copy) = start.checked_add(size).and_then(|end| buf.get(start..end)) else {
            continue;
        };
        let (bin, json) = copy.split_at(BIN_HEADER_LEN);
        let Ok(sum) = binary::compute_checksum(alg, bin, json) else {
            continue;
        };
        let at = start + CSUM_OFFSET;
        if let Some(dst) = buf.get_mut(at..at + sum.len()) {
            dst.copy_from_slice(&sum);
        }
    }
}

/// Size the [`ZeroExtended`] device reports: more than any header area (2 x 4 MiB + 128 MiB).
pub const VIRTUAL_DEVICE_SIZE: u64 = 1 << 30;

/// A device holding `data` followed by zeros up to [`VIRTUAL_DEVICE_SIZE`] bytes, so that inputs
/// need only the header copies and not the keyslots area the size check wants. Writes grow
/// `data` (they stay within the header copies).
#[derive(Debug, Clone)]
pub struct ZeroExtended {
    /// The stored bytes (everything after them reads as zero).
    pub data: Vec<u8>,
}

impl Device for ZeroExtended {
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        let end = offset
            .checked_add(buf.len() as u64)
            .filter(|&e| e <= VIRTUAL_DEVICE_SIZE)
            .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::UnexpectedEof))?;
        buf.fill(0);
        let len = self.data.len() as u64;
        if offset < len {
            let start = usize::try_from(offset).map_err(std::io::Error::other)?;
            let stop = usize::try_from(end.min(len)).map_err(std::io::Error::other)?;
            let src = self.data.get(start..stop).unwrap_or_default();
            if let Some(dst) = buf.get_mut(..src.len()) {
                dst.copy_from_slice(src);
            }
        }
        Ok(())
    }

    fn write_all_at(&mut self, offset: u64, buf: &[u8]) -> std::io::Result<()> {
        let start = usize::try_from(offset).map_err(std::io::Error::other)?;
        let end = start
            .checked_add(buf.len())
            .filter(|&e| e as u64 <= VIRTUAL_DEVICE_SIZE)
            .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
        if self.data.len() < end {
            self.data.resize(end, 0);
        }
        if let Some(dst) = self.data.get_mut(start..end) {
            dst.copy_from_slice(buf);
        }
        Ok(())
    }

    fn sync(&mut self) -> std::io::Result<()> {
        Ok(())
    }

    fn size(&self) -> std::io::Result<u64> {
        Ok(VIRTUAL_DEVICE_SIZE.max(self.data.len() as u64))
    }
}

/// Whole header area: checksums recomputed, then read both copies as `header::read` does (the
/// input is followed by zeros, see [`ZeroExtended`]). If a header is read, the metadata round-trips, the header writes back (unless it carries unknown
/// requirements, which make it read-only) and reads back equal with `seqid + 1`, and repair
/// leaves a device that still reads.
pub fn header_area(data: &[u8]) {
    let mut buf = data.to_vec();
    fix_checksums(&mut buf);
    let mut dev = ZeroExtended { data: buf };
    let Ok((h, report)) = header::read_with_report(&dev) else {
        return;
    };
    check_metadata_round_trip(&h.metadata, h.hdr_size());
    exercise_metadata(&h.metadata);
    let _ = report.needs_repair();

    if report.needs_repair() {
        let mut repaired = dev.clone();
        header::repair(&mut repaired).expect("repair of a readable header");
        let after = header::read_with_report(&repaired).expect("a repaired header reads");
        assert!(!after.1.needs_repair(), "repair leaves both copies valid");
        assert_eq!(after.0, h, "repair does not change the header");
    }

    if h.metadata.is_read_only() || h.seqid() == u64::MAX {
        return;
    }
    let mut written = h.clone();
    if let Err(e) = header::write(&mut dev, &mut written) {
        panic!("a header read from the device cannot be written back: {e}");
    }
    let back = header::read(&dev).expect("a written header reads back");
    assert_eq!(back.seqid(), h.seqid() + 1);
    assert_eq!(back.metadata, h.metadata);
    assert_eq!(
        (
            back.label(),
            back.subsystem(),
            back.uuid(),
            back.checksum_alg()
        ),
        (h.label(), h.subsystem(), h.uuid(), h.checksum_alg())
    );
}

/// Clamps the KDF and digest costs of every keyslot so that one fuzz input costs at most a
/// few milliseconds; values below the library's own bounds are left for it to reject.
pub fn clamp_costs(md: &mut Metadata) {
    for ks in md.keyslots.values_mut() {
        let Keyslot::Luks2(k) = ks else { continue };
        match &mut k.kdf {
            Kdf::Pbkdf2 { iterations, .. } => {
                *iterations = (*iterations).min(MAX_FUZZ_PBKDF2_ITERATIONS);
            }
            Kdf::Argon2 { time, memory, .. } => {
                *time = (*time).min(MAX_FUZZ_ARGON2_TIME);
                *memory = (*memory).min(MAX_FUZZ_ARGON2_MEMORY_KIB);
            }
            Kdf::Other(_) => {}
        }
    }
    for d in md.digests.values_mut() {
        if let DigestKind::Pbkdf2(p) = &mut d.kind {
            p.iterations = p.iterations.min(MAX_FUZZ_PBKDF2_ITERATIONS);
        }
    }
}

/// Keyslot decrypt and AF merge: the input is a whole header area with its keyslots (checksums
/// recomputed); with costs clamped, every keyslot is opened with [`PASSPHRASE`]. A key that
/// opens must verify against its digest again.
pub fn keyslot_open(data: &[u8]) {
    let mut buf = data.to_vec();
    fix_checksums(&mut buf);
    let dev = MemDevice::from_vec(buf);
    let Ok(h) = header::read(&dev) else {
        return;
    };
    let mut md = h.metadata;
    clamp_costs(&mut md);
    let ids: Vec<_> = md.keyslots.keys().copied().collect();
    for id in ids {
        if let Ok(vk) = keyslot::open_keyslot(&dev, &md, id, PASSPHRASE) {
            let (digest, _) = md
                .digest_of_keyslot(id)
                .expect("an opened keyslot has a digest");
            assert!(
                keyslot::verify_digest(&md, digest, vk.as_bytes()).expect("digest usable"),
                "an opened key verifies"
            );
        }
        let _ = keyslot::open_keyslot(&dev, &md, id, b"");
    }
}

/// KMIP TTLV: decode; if it decodes, encode gives the same length (padding kept) and decodes to
/// an equal item, and the 8-byte header announces exactly the input's length.
pub fn kmip_ttlv(data: &[u8]) {
    use kms::kmip::ttlv;
    let Ok(item) = ttlv::decode(data) else {
        return;
    };
    let enc = ttlv::encode(&item);
    assert_eq!(enc.len(), data.len(), "encoding keeps the length");
    let again = ttlv::decode(&enc).expect("an encoded item decodes");
    assert_eq!(item, again, "TTLV round trip");
    let head: [u8; 8] = data
        .get(..8)
        .and_then(|h| h.try_into().ok())
        .expect("an item has an 8-byte header");
    assert_eq!(ttlv::message_len(&head), Ok(data.len()));
}

/// HTTP statuses the Transit target picks from (its second input byte).
const STATUSES: [u16; 16] = [
    200, 200, 200, 200, 200, 204, 301, 307, 400, 401, 403, 404, 418, 429, 500, 503,
];

/// Transit response parser: byte 0 picks the operation, byte 1 the HTTP status, the rest is
/// the body. A parsed answer, re-serialized as the server would send it, parses to the same.
pub fn transit_response(data: &[u8]) {
    use kms::transit::{Operation, Response, parse_response};
    let [op, status, body @ ..] = data else {
        return;
    };
    let op = match op % 3 {
        0 => Operation::Encrypt,
        1 => Operation::Decrypt,
        _ => Operation::Rewrap,
    };
    let status = STATUSES
        .get(usize::from(status % 16))
        .copied()
        .unwrap_or(200);
    let Ok(resp) = parse_response(op, status, body) else {
        return;
    };
    assert_eq!(status, 200, "only HTTP 200 is a success");
    let rebuilt = match &resp {
        Response::Ciphertext {
            ciphertext,
            key_version,
        } => serde_json::json!({"data": {"ciphertext": ciphertext, "key_version": key_version}}),
        Response::Plaintext(p) => serde_json::json!({"data": {
            "plaintext": base64::engine::general_purpose::STANDARD.encode(p.as_slice())
        }}),
    };
    let again = parse_response(op, 200, rebuilt.to_string().as_bytes())
        .expect("a re-serialized answer parses");
    match (resp, again) {
        (
            Response::Ciphertext {
                ciphertext: a,
                key_version: va,
            },
            Response::Ciphertext {
                ciphertext: b,
                key_version: vb,
            },
        ) => assert_eq!((a, va), (b, vb)),
        (Response::Plaintext(a), Response::Plaintext(b)) => assert_eq!(a, b),
        _ => panic!("re-parse changed the kind of answer"),
    }
}

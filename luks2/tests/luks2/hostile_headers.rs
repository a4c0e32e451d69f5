//! Bounded work on hostile headers: the largest JSON area (4 MiB) filled with as many entries as
//! fit, shaped to hit every check that compares entries with each other (keyslot area overlaps,
//! segment overlaps, segment-digest and keyslot-digest references). Each must parse (they are
//! valid for cryptsetup too) and list quickly; the times are printed, not asserted (run with
//! `--nocapture` to see them). Before the fix these checks were quadratic: the area case took
//! minutes.
//!
//! Also: a header backup larger than any header area is refused without being read.
#![allow(clippy::unwrap_used)]

use std::fmt::Write as _;
use std::time::Instant;

use luks2::crypto::HashAlgorithm;
use luks2::crypto::calibrate::PbkdfOptions;
use luks2::crypto::kdf::KdfKind;
use luks2::format::FormatOptions;
use luks2::header::{self, binary};
use luks2::io::MemDevice;
use luks2::{ErrorKind, Luks2Device, Passphrase};

const HDR: usize = 4 << 20;
const KS: usize = 1 << 20;
const DATA: u64 = (2 * HDR + KS) as u64;

/// A LUKS2 header area with 4 MiB header copies and a 1 MiB keyslots area, made by our format.
fn base() -> Vec<u8> {
    let opts = FormatOptions {
        pbkdf: PbkdfOptions::fast_for_tests(KdfKind::Pbkdf2(HashAlgorithm::Sha256), 0),
        metadata_size: Some(HDR as u64),
        keyslots_size: Some(KS as u64),
        key_size: 32,
        ..Default::default()
    };
    let pass = Passphrase::from_bytes(b"pw");
    let (d, _) =
        Luks2Device::format(MemDevice::new(2 * HDR + KS + (1 << 20)), &pass, &opts).unwrap();
    d.into_inner().as_slice()[..2 * HDR + KS].to_vec()
}

/// `base` with `json` as the JSON area of both copies, resealed.
fn with_json(base: &[u8], json: &str) -> Vec<u8> {
    assert!(json.len() < HDR - 4096, "JSON too large: {}", json.len());
    let mut img = base.to_vec();
    for off in [0, HDR] {
        let area = &mut img[off + 4096..off + HDR];
        area.fill(0);
        area[..json.len()].copy_from_slice(json.as_bytes());
        let bin = binary::BinaryHeader::parse(&img[off..off + 4096]).unwrap();
        let sealed = binary::seal(&bin, &img[off + 4096..off + HDR]).unwrap();
        img[off..off + 4096].copy_from_slice(&sealed);
    }
    img
}

const SALT: &str = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
/// Room left for the fixed parts of the JSON.
const BUDGET: usize = HDR - 4096 - 4096;

fn crypt_segment(offset: u64, size: &str) -> String {
    format!(
        r#"{{"type":"crypt","offset":"{offset}","size":"{size}","iv_tweak":"0","encryption":"aes-xts-plain64","sector_size":512}}"#
    )
}

fn document(
    keyslots: &str,
    segments: &str,
    digest_keyslots: &str,
    digest_segments: &str,
) -> String {
    format!(
        r#"{{"keyslots":{{{keyslots}}},"tokens":{{}},"segments":{{{segments}}},"digests":{{"0":{{"type":"pbkdf2","keyslots":[{digest_keyslots}],"segments":[{digest_segments}],"hash":"sha256","iterations":1000,"salt":"{SALT}","digest":"{SALT}"}}}},"config":{{"json_size":"{}","keyslots_size":"{KS}"}}}}"#,
        HDR - 4096
    )
}

/// Keyslots of a type we keep verbatim, each with a 1-byte area: the most areas that fit.
fn many_areas() -> String {
    let mut ks = String::new();
    let mut i = 0u64;
    while ks.len() < BUDGET {
        if i > 0 {
            ks.push(',');
        }
        let off = 2 * HDR as u64 + i;
        write!(
            ks,
            r#""{i}":{{"type":"x","key_size":1,"area":{{"type":"raw","offset":"{off}","size":"1"}}}}"#
        )
        .unwrap();
        i += 1;
    }
    let seg = format!(r#""0":{}"#, crypt_segment(DATA, "dynamic"));
    document(&ks, &seg, "", r#""0""#)
}

/// Crypt segments of 512 bytes each, every one in the digest.
fn many_segments() -> String {
    let (mut segs, mut refs) = (String::new(), String::new());
    let mut i = 0u64;
    while segs.len() + refs.len() < BUDGET {
        if i > 0 {
            segs.push(',');
            refs.push(',');
        }
        write!(segs, r#""{i}":{}"#, crypt_segment(DATA + 512 * i, "512")).unwrap();
        write!(refs, r#""{i}""#).unwrap();
        i += 1;
    }
    document("", &segs, "", &refs)
}

/// luks2 keyslots (16-byte areas), every one in the digest.
fn many_keyslots() -> String {
    let (mut ks, mut refs) = (String::new(), String::new());
    let mut i = 0u64;
    while ks.len() + refs.len() < BUDGET {
        if i > 0 {
            ks.push(',');
            refs.push(',');
        }
        let off = 2 * HDR as u64 + 16 * i;
        write!(
            ks,
            r#""{i}":{{"type":"luks2","key_size":32,"af":{{"type":"luks1","stripes":4000,"hash":"sha256"}},"area":{{"type":"raw","offset":"{off}","size":"16","encryption":"aes-xts-plain64","key_size":64}},"kdf":{{"type":"pbkdf2","hash":"sha256","iterations":1000,"salt":"{SALT}"}}}}"#
        )
        .unwrap();
        write!(refs, r#""{i}""#).unwrap();
        i += 1;
    }
    let seg = format!(r#""0":{}"#, crypt_segment(DATA, "dynamic"));
    document(&ks, &seg, &refs, r#""0""#)
}

#[test]
fn worst_case_headers_parse_and_list_in_bounded_time() {
    let base = base();
    for (name, json) in [
        ("keyslot areas", many_areas()),
        ("segments", many_segments()),
        ("luks2 keyslots", many_keyslots()),
    ] {
        let img = with_json(&base, &json);
        let start = Instant::now();
        let h = header::read(&MemDevice::from_vec(img)).unwrap();
        let md = &h.metadata;
        // What `luks2 dump` walks: every keyslot with its digest, segments, tokens, digests.
        let mut listed = md.segments.len() + md.tokens.len() + md.digests.len();
        for id in md.keyslots.keys() {
            listed += 1 + usize::from(md.digest_of_keyslot(*id).is_some());
        }
        eprintln!(
            "{name}: {} keyslots, {} segments, JSON {} bytes: parsed and listed in {:?}",
            md.keyslots.len(),
            md.segments.len(),
            json.len(),
            start.elapsed()
        );
        assert!(listed > 1000, "{name}: only {listed} entries");
    }
}

/// A "backup" larger than any header area (here a sparse file) is refused before being read;
/// a device file without a size (/dev/zero) after reading just past the bound.
#[test]
fn oversized_backup_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.img");
    let f = std::fs::File::create(&path).unwrap();
    f.set_len(luks2::backup::MAX_BACKUP_SIZE + 1).unwrap();
    let e = luks2::backup::read_backup(&path).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
    assert!(
        e.to_string().contains("larger than a LUKS2 header area"),
        "{e}"
    );
    let zero = std::path::Path::new("/dev/zero");
    if zero.exists() {
        let e = luks2::backup::read_backup(zero).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
    }
    // A backup of exactly the maximum size is read (and then judged on its content).
    f.set_len(luks2::backup::MAX_BACKUP_SIZE).unwrap();
    let e = luks2::backup::read_backup(&path).unwrap_err();
    assert_ne!(e.kind(), ErrorKind::InvalidArgument, "{e}");
}

//! What cryptsetup refuses on headers from its own test images, refused alike: `repair` of a
//! header with mandatory requirements we do not know (an online reencryption in progress, a
//! future feature) never writes.
#![allow(clippy::unwrap_used)]
use luks2::crypto::calibrate::PbkdfOptions;
use luks2::crypto::kdf::{Argon2Variant, KdfKind};
use luks2::format::FormatOptions;
use luks2::header::{self, binary};
use luks2::io::MemDevice;
use luks2::{ErrorKind, Luks2Device, Passphrase};
use serde_json::Value;
use testkit::cryptsetup::{Image, cryptsetup, run, run_ok};

const MIB: usize = 1024 * 1024;

/// A fresh image formatted by us (one fast keyslot for `passphrase`) and its header size.
fn formatted(passphrase: &[u8]) -> (Vec<u8>, usize) {
    let opts = FormatOptions {
        pbkdf: PbkdfOptions::fast_for_tests(KdfKind::Argon2(Argon2Variant::Argon2id), 64),
        ..Default::default()
    };
    let (d, _) = Luks2Device::format(
        MemDevice::new(20 * MIB),
        &Passphrase::from_bytes(passphrase),
        &opts,
    )
    .unwrap();
    let hdr = usize::try_from(d.header().hdr_size()).unwrap();
    (d.into_inner().into_vec(), hdr)
}

/// `img` with its JSON changed by `f` in both copies, both resealed.
fn with_json(img: &[u8], hdr: usize, f: impl Fn(&mut Value)) -> Vec<u8> {
    let end = img[4096..hdr].iter().position(|&b| b == 0).unwrap();
    let mut json: Value = serde_json::from_slice(&img[4096..4096 + end]).unwrap();
    f(&mut json);
    let text = json.to_string();
    let mut out = img.to_vec();
    for off in [0, hdr] {
        let area = &mut out[off + 4096..off + hdr];
        area.fill(0);
        area[..text.len()].copy_from_slice(text.as_bytes());
        let bin = binary::BinaryHeader::parse(&out[off..off + 4096]).unwrap();
        let sealed = binary::seal(&bin, &out[off + 4096..off + hdr]).unwrap();
        out[off..off + 4096].copy_from_slice(&sealed);
    }
    out
}

/// `repair` of a header whose mandatory requirements we do not understand is refused, whether
/// a copy needs repair or not, and the device is left byte for byte as it was. cryptsetup
/// 2.6.1's `repair` fails too, exit 1 ("wrong or missing parameters"), for such a header; it
/// has already rewritten a damaged copy by then (its loader's auto-recovery), we write nothing.
#[test]
fn repair_of_a_header_with_unknown_requirements_is_refused_and_writes_nothing() {
    let (base, hdr) = formatted(b"one");
    let cs = cryptsetup();
    let dir = tempfile::tempdir().unwrap();
    for req in ["made-up-requirement", "online-reencrypt-v9"] {
        let marked = with_json(&base, hdr, |j| {
            j["config"]["requirements"] = serde_json::json!({ "mandatory": [req] });
        });
        // The header reads (read-only) with the requirement.
        let h = header::read(&MemDevice::from_vec(marked.clone())).unwrap();
        assert!(h.metadata.is_read_only(), "{req}");
        let mut damaged = marked.clone();
        damaged[hdr + binary::CSUM_OFFSET] ^= 1;
        for (what, bytes) in [("intact", &marked), ("secondary damaged", &damaged)] {
            let mut dev = MemDevice::from_vec(bytes.clone());
            let err = luks2::device::repair(&mut dev).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Unsupported, "{req}, {what}: {err}");
            assert_eq!(err.kind().exit_code(), 1);
            assert!(err.to_string().contains(req), "{req}, {what}: {err}");
            assert!(
                dev.as_slice() == bytes.as_slice(),
                "{req}, {what}: a refused repair changed the device"
            );
            if let Some(cs) = &cs {
                let file = dir.path().join("r.img");
                std::fs::write(&file, bytes).unwrap();
                let out = run(cs, &["repair", "-q", file.to_str().unwrap()]);
                assert_eq!(
                    out.status.code(),
                    Some(1),
                    "cryptsetup repair: {req}, {what}"
                );
            }
        }
    }
}

/// The same for a real online reencryption in progress (`cryptsetup reencrypt --init-only`:
/// requirement `online-reencrypt-v2` and a `reencrypt` keyslot): cryptsetup's `repair` would run
/// the reencryption recovery, which needs the passphrase (without one it fails, exit 1); we do
/// not implement reencryption and refuse without writing.
#[test]
fn repair_during_an_online_reencryption_is_refused_and_writes_nothing() {
    let Some(cs) = cryptsetup() else { return };
    let img = Image::format(&cs, 20 * MIB as u64, &[]);
    run_ok(
        &cs,
        &[
            "reencrypt",
            "--init-only",
            "--batch-mode",
            "--pbkdf",
            "pbkdf2",
            "--pbkdf-force-iterations",
            "1000",
            "--key-file",
            img.k(),
            img.p(),
        ],
    );
    let before = img.bytes();
    let err = luks2::device::repair(&mut img.open_rw()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unsupported, "{err}");
    assert!(err.to_string().contains("online-reencrypt-v2"), "{err}");
    assert!(img.bytes() == before, "a refused repair changed the device");
    let out = run(&cs, &["repair", "-q", img.p()]);
    assert_eq!(out.status.code(), Some(1));
}

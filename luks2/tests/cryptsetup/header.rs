//! The header layer against the reference: images made by cryptsetup at test time are read by
//! us (and our re-serialization matches cryptsetup's JSON byte for byte), and headers we write
//! are accepted by cryptsetup.
#![allow(clippy::unwrap_used, clippy::cast_possible_truncation)]

use luks2::header::{self, CopyStatus, RepairOutcome, binary::Copy};
use luks2::io::Device;
use luks2::metadata::{
    HDR_SIZES, Kdf, KdfParams, KeyslotId, SegmentId, SegmentKind, SegmentSize, TokenId,
};
use testkit::cryptsetup::{Image, cryptsetup, run, run_ok};

const MIB: u64 = 1024 * 1024;

fn dump_field(dump: &str, name: &str) -> String {
    dump.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}:")))
        .map(|v| v.trim().to_owned())
        .unwrap_or_else(|| panic!("no {name} in dump:\n{dump}"))
}

/// The JSON text cryptsetup stored in the primary copy (up to the first NUL).
fn on_disk_json(bytes: &[u8]) -> String {
    let area = &bytes[4096..];
    let end = area.iter().position(|&b| b == 0).unwrap();
    String::from_utf8(area[..end].to_vec()).unwrap()
}

#[test]
fn reads_every_metadata_size_and_reserializes_identically() {
    let Some(cs) = cryptsetup() else { return };
    for size in HDR_SIZES {
        let s = size.to_string();
        let img = Image::format(&cs, 24 * MIB, &["--luks2-metadata-size", &s]);
        let dev = std::fs::File::open(&img.path).unwrap();
        let (h, report) = header::read_with_report(&dev).unwrap_or_else(|e| panic!("{s}: {e}"));
        assert!(!report.needs_repair(), "{s}: {report:?}");
        assert_eq!(h.hdr_size(), size);
        assert_eq!(report.secondary_offset, Some(size));
        let dump = run_ok(&cs, &["luksDump", img.p()]);
        assert_eq!(h.uuid(), dump_field(&dump, "UUID"));
        assert_eq!(h.seqid().to_string(), dump_field(&dump, "Epoch"));
        let m = &h.metadata;
        assert_eq!(
            m.config.keyslots_size.to_string() + " [bytes]",
            dump_field(&dump, "Keyslots area")
        );
        let ks = m.keyslots[&KeyslotId::new(0)].as_luks2().unwrap();
        assert_eq!(ks.key_size, 64);
        assert!(ks.area.offset >= 2 * size);
        assert!(matches!(
            ks.kdf_params().unwrap(),
            KdfParams::Pbkdf2 {
                iterations: 1000,
                ..
            }
        ));
        assert_eq!(m.to_json(), on_disk_json(&img.bytes()), "{s}");
    }
}

#[test]
fn keyslots_size_label_subsystem_sector_size_and_argon2() {
    let Some(cs) = cryptsetup() else { return };
    let img = Image::format(
        &cs,
        20 * MIB,
        &[
            "--luks2-keyslots-size",
            "1048576",
            "--label",
            "data-volume",
            "--subsystem",
            "csi",
            "--sector-size",
            "512",
            "--key-size",
            "256",
        ],
    );
    let h = header::read(&std::fs::File::open(&img.path).unwrap()).unwrap();
    assert_eq!(h.metadata.config.keyslots_size, MIB);
    assert_eq!(h.label(), "data-volume");
    assert_eq!(h.subsystem(), "csi");
    assert_eq!(h.header_area_size(), 2 * 16384 + MIB);
    let seg = &h.metadata.segments[&SegmentId::new(0)];
    assert_eq!(seg.size, SegmentSize::Dynamic);
    assert!(matches!(
        seg.kind,
        SegmentKind::Crypt {
            sector_size: 512,
            ..
        }
    ));

    // An argon2id keyslot added in slot 5.
    let new_key = img.dir.path().join("key2");
    std::fs::write(&new_key, b"second").unwrap();
    run_ok(
        &cs,
        &[
            "luksAddKey",
            "--batch-mode",
            "--key-file",
            img.k(),
            "--key-slot",
            "5",
            "--pbkdf",
            "argon2id",
            "--pbkdf-force-iterations",
            "4",
            "--pbkdf-memory",
            "64",
            "--pbkdf-parallel",
            "2",
            img.p(),
            new_key.to_str().unwrap(),
        ],
    );
    let h = header::read(&std::fs::File::open(&img.path).unwrap()).unwrap();
    let ks = h.metadata.keyslots[&KeyslotId::new(5)].as_luks2().unwrap();
    assert!(matches!(
        ks.kdf,
        Kdf::Argon2 {
            time: 4,
            memory: 64,
            cpus: 2,
            ..
        }
    ));
    assert!(matches!(
        ks.kdf_params().unwrap(),
        KdfParams::Argon2 {
            time: 4,
            memory_kib: 64,
            lanes: 2,
            ..
        }
    ));
    assert_eq!(
        h.metadata
            .digest_of_keyslot(KeyslotId::new(5))
            .unwrap()
            .0
            .get(),
        0
    );
    assert_eq!(h.metadata.to_json(), on_disk_json(&img.bytes()));
}

#[test]
fn tokens_are_preserved_verbatim() {
    let Some(cs) = cryptsetup() else { return };
    let img = Image::format(&cs, 20 * MIB, &[]);
    let token = r#"{"type":"onmetal-test","keyslots":["0"],"tpm2-blob":"AAEC","tpm2-pcrs":[7,11],"nested":{"a":null,"b":[true,1.5,"\/x"]}}"#;
    let json_path = img.dir.path().join("token.json");
    std::fs::write(&json_path, token).unwrap();
    run_ok(
        &cs,
        &[
            "token",
            "import",
            "--json-file",
            json_path.to_str().unwrap(),
            "--token-id",
            "3",
            img.p(),
        ],
    );
    let mut f = img.open_rw();
    let mut h = header::read(&f).unwrap();
    let t = &h.metadata.tokens[&TokenId::new(3)];
    assert_eq!(t.type_name, "onmetal-test");
    assert_eq!(t.keyslots, [KeyslotId::new(0)]);
    assert_eq!(h.metadata.to_json(), on_disk_json(&img.bytes()));
    let exported = run_ok(&cs, &["token", "export", "--token-id", "3", img.p()]);
    let exported: serde_json::Value = serde_json::from_str(&exported).unwrap();
    assert_eq!(exported, t.to_json());

    // We remove it; cryptsetup agrees it is gone.
    h.metadata.tokens.clear();
    header::write(&mut f, &mut h).unwrap();
    let out = run(&cs, &["token", "export", "--token-id", "3", img.p()]);
    assert!(!out.status.success());
}

#[test]
fn cryptsetup_accepts_what_we_write() {
    let Some(cs) = cryptsetup() else { return };
    let img = Image::format(&cs, 20 * MIB, &[]);
    let before = dump_field(&run_ok(&cs, &["luksDump", img.p()]), "Epoch");
    let mut f = img.open_rw();
    let mut h = header::read(&f).unwrap();
    h.set_label("written-by-us").unwrap();
    h.metadata.config.flags = Some(vec!["allow-discards".into()]);
    header::write(&mut f, &mut h).unwrap();
    let dump = run_ok(&cs, &["luksDump", img.p()]);
    assert_eq!(dump_field(&dump, "Label"), "written-by-us");
    assert_eq!(dump_field(&dump, "Flags"), "allow-discards");
    assert_eq!(
        dump_field(&dump, "Epoch"),
        (before.parse::<u64>().unwrap() + 1).to_string()
    );
    run_ok(
        &cs,
        &["open", "--test-passphrase", "--key-file", img.k(), img.p()],
    );
    // Both copies are valid for cryptsetup: destroy either one and it still opens.
    for copy_offset in [0u64, 16384] {
        let img2 = Image::sparse(0);
        std::fs::copy(&img.path, &img2.path).unwrap();
        let mut g = img2.open_rw();
        g.write_all_at(copy_offset + 5000, b"garbage").unwrap();
        let dump = run_ok(&cs, &["luksDump", img2.p()]);
        assert_eq!(dump_field(&dump, "Label"), "written-by-us");
    }
}

#[test]
fn corrupt_primary_uses_secondary_and_our_repair_satisfies_cryptsetup() {
    let Some(cs) = cryptsetup() else { return };
    for meta in ["16384", "65536", "1048576"] {
        let img = Image::format(&cs, 20 * MIB, &["--luks2-metadata-size", meta]);
        let hdr_size = meta.parse::<u64>().unwrap();
        let original = header::read(&std::fs::File::open(&img.path).unwrap()).unwrap();
        let mut f = img.open_rw();
        f.write_all_at(0, &[0u8; 4096]).unwrap(); // wipe the primary binary header
        let (h, report) = header::read_with_report(&f).unwrap();
        assert_eq!(h.metadata, original.metadata);
        assert!(matches!(report.primary, CopyStatus::Invalid(_)));
        assert_eq!(report.secondary_offset, Some(hdr_size), "found by scanning");
        assert_eq!(
            header::repair(&mut f).unwrap(),
            RepairOutcome::Rewrote(Copy::Primary)
        );
        // Now wipe the secondary: cryptsetup must be able to use the primary we rebuilt.
        f.write_all_at(hdr_size, &[0u8; 4096]).unwrap();
        drop(f);
        let dump = run_ok(&cs, &["luksDump", img.p()]);
        assert_eq!(dump_field(&dump, "UUID"), original.uuid());
        run_ok(
            &cs,
            &["open", "--test-passphrase", "--key-file", img.k(), img.p()],
        );
    }
}

#[test]
fn seqid_choice_matches_cryptsetup() {
    let Some(cs) = cryptsetup() else { return };
    let img = Image::format(&cs, 20 * MIB, &["--label", "old"]);
    let old = img.bytes();
    run_ok(&cs, &["config", "--label", "new", img.p()]);
    // Put the old secondary back: the newer primary must win for both implementations.
    let mut f = img.open_rw();
    f.write_all_at(16384, &old[16384..32768]).unwrap();
    let (h, report) = header::read_with_report(&f).unwrap();
    assert_eq!(h.label(), "new");
    assert!(matches!(report.secondary, CopyStatus::Stale { .. }));
    drop(f);
    assert_eq!(
        dump_field(&run_ok(&cs, &["luksDump", img.p()]), "Label"),
        "new"
    );
}

/// The committed fixture (see testdata/README.md) reads without cryptsetup.
#[test]
fn committed_fixture() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../testdata/luks2-pbkdf2-small.img"
    );
    let bytes = std::fs::read(path).unwrap();
    let h = header::read_bytes(&bytes).unwrap();
    assert_eq!(h.uuid(), "5d8a3f27-9a4e-4c7b-8f51-2a0c6e1b9d34");
    assert_eq!(h.label(), "fixture");
    assert_eq!(h.seqid(), 3);
    assert_eq!(h.header_area_size(), 163840);
    assert_eq!(h.metadata.data_offset(), 163840);
    let ks = h.metadata.keyslots[&KeyslotId::new(0)].as_luks2().unwrap();
    assert_eq!(
        (ks.key_size, ks.area.offset, ks.area.size),
        (32, 32768, 131072)
    );
    assert_eq!(h.metadata.to_json(), on_disk_json(&bytes));
    // Every single-byte corruption of the primary binary header is either harmless padding or
    // detected, and the secondary then takes over.
    for pos in (0..4096).step_by(97) {
        let mut b = bytes.clone();
        b[pos] ^= 0x55;
        let back = header::read_bytes(&b).unwrap();
        assert_eq!(back.metadata, h.metadata, "{pos}");
    }
    // Truncated images are rejected, never a panic.
    for len in [0, 100, 4096, 16384, 20000, 32768, 163839] {
        assert!(header::read_bytes(&bytes[..len]).is_err(), "{len}");
    }
}

/// A header in the middle of an online reencryption (made by `cryptsetup reencrypt --init-only`)
/// is read, re-serialized byte for byte, and refused for writing.
#[test]
fn reencryption_in_progress_is_read_only() {
    let Some(cs) = cryptsetup() else { return };
    let img = Image::format(&cs, 20 * MIB, &[]);
    run_ok(
        &cs,
        &[
            "reencrypt",
            "--init-only",
            "--batch-mode",
            "--key-file",
            img.k(),
            "--pbkdf",
            "pbkdf2",
            "--pbkdf-force-iterations",
            "1000",
            img.p(),
        ],
    );
    let mut f = img.open_rw();
    let mut h = header::read(&f).unwrap();
    assert!(h.metadata.is_read_only());
    assert!(
        h.metadata
            .requirements()
            .iter()
            .any(|r| r.starts_with("online-reencrypt"))
    );
    let reenc = h
        .metadata
        .keyslots
        .values()
        .filter(|k| k.type_name() == "reencrypt")
        .count();
    assert_eq!(reenc, 1);
    assert_eq!(
        h.metadata
            .segments
            .values()
            .filter(|s| s.is_backup())
            .count(),
        2
    );
    assert_eq!(h.metadata.to_json(), on_disk_json(&img.bytes()));
    h.set_label("nope").unwrap();
    assert!(matches!(
        header::write(&mut f, &mut h),
        Err(luks2::Error::ReadOnlyRequirements(_))
    ));
}

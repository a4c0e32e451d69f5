//! us -> cryptsetup: every option combination formatted by this library passes
//! `cryptsetup luksDump` and `cryptsetup open --test-passphrase`, and cryptsetup dumps the same
//! volume key; keys we add, change and remove are seen as such by cryptsetup; tokens we add
//! appear in `cryptsetup token export`.
#![allow(clippy::unwrap_used, clippy::cast_possible_truncation)]

use luks2::crypto::HashAlgorithm;
use luks2::crypto::calibrate::PbkdfOptions;
use luks2::crypto::kdf::{Argon2Variant, KdfKind};
use luks2::format::FormatOptions;
use luks2::keyslot::NewKeyslot;
use luks2::metadata::{KeyslotId, Priority, TokenId};
use luks2::{Luks2Device, Passphrase};
use testkit::cryptsetup::{Scratch, cryptsetup};
use testkit::fixtures::{open_rw, passphrase, run_cases};

const MIB: u64 = 1024 * 1024;

fn kdf(kind: &str) -> PbkdfOptions {
    let k = match kind {
        "pbkdf2-sha1" => KdfKind::Pbkdf2(HashAlgorithm::Sha1),
        "pbkdf2-sha256" => KdfKind::Pbkdf2(HashAlgorithm::Sha256),
        "pbkdf2-sha512" => KdfKind::Pbkdf2(HashAlgorithm::Sha512),
        "argon2i" => KdfKind::Argon2(Argon2Variant::Argon2i),
        "argon2id" => KdfKind::Argon2(Argon2Variant::Argon2id),
        other => panic!("{other}"),
    };
    let mut o = PbkdfOptions::fast_for_tests(k, 128);
    if kind == "argon2id" {
        o.parallel = Some(4);
    }
    o
}

#[derive(Debug, Clone)]
struct Case {
    opts: FormatOptions,
    size: u64,
}

fn base(kind: &str) -> Case {
    Case {
        opts: FormatOptions {
            pbkdf: kdf(kind),
            ..Default::default()
        },
        size: 20 * MIB,
    }
}

fn matrix() -> (Vec<Case>, Vec<(&'static str, usize)>) {
    let mut cases = Vec::new();
    let mut groups = Vec::new();
    let mut group = |name: &'static str, cases: &mut Vec<Case>, new: Vec<Case>| {
        groups.push((name, new.len()));
        cases.extend(new);
    };
    let mut v = Vec::new();
    for kind in [
        "pbkdf2-sha1",
        "pbkdf2-sha256",
        "pbkdf2-sha512",
        "argon2i",
        "argon2id",
    ] {
        for key_size in [32, 64] {
            for sector in [512, 4096] {
                let mut c = base(kind);
                c.opts.key_size = key_size;
                c.opts.sector_size = Some(sector);
                v.push(c);
            }
        }
    }
    group("kdf x key x sector", &mut cases, v);
    let v = [16u64, 32, 64, 128, 256, 512, 1024, 2048, 4096]
        .into_iter()
        .map(|kib| {
            let mut c = base("pbkdf2-sha256");
            c.opts.metadata_size = Some(kib * 1024);
            c
        })
        .collect();
    group("metadata sizes", &mut cases, v);
    let mut v: Vec<Case> = [262144u64, MIB, 4161536, 8 * MIB]
        .into_iter()
        .map(|ks| {
            let mut c = base("pbkdf2-sha256");
            c.opts.keyslots_size = Some(ks);
            c
        })
        .collect();
    for off in [8192u64, 8193, 40960] {
        let mut c = base("argon2i");
        c.opts.data_offset_sectors = Some(off);
        v.push(c);
    }
    group("keyslots sizes / offsets", &mut cases, v);
    let v = [1u32, 9, 31]
        .into_iter()
        .map(|s| {
            let mut c = base("pbkdf2-sha1");
            c.opts.keyslot = Some(KeyslotId::new(s));
            c
        })
        .collect();
    group("key slots", &mut cases, v);
    let mut v = Vec::new();
    for (label, sub, uuid) in [
        ("data", "", None),
        ("", "csi", Some("0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0")),
        (
            "label 0123456789012345678901234567890123456789",
            "subsystem name",
            None,
        ),
    ] {
        let mut c = base("pbkdf2-sha256");
        c.opts.label = label.into();
        c.opts.subsystem = sub.into();
        c.opts.uuid = uuid.map(Into::into);
        v.push(c);
    }
    group("labels/subsystem/uuid", &mut cases, v);
    let mut v = Vec::new();
    for (cipher, ks) in [("aes-xts-plain", 64), ("aes-cbc-essiv:sha256", 32)] {
        let mut c = base("pbkdf2-sha256");
        c.opts.cipher = cipher.into();
        c.opts.key_size = ks;
        v.push(c);
    }
    // Auto sector size with an odd device size: 512.
    let mut c = base("pbkdf2-sha256");
    c.size = 20 * MIB + 512;
    v.push(c);
    group("ciphers / auto sector", &mut cases, v);
    (cases, groups)
}

/// Field value of a `cryptsetup luksDump` line like "Label:         \tdata".
fn dump_field<'a>(dump: &'a str, name: &str) -> Option<&'a str> {
    dump.lines()
        .find_map(|l| l.strip_prefix(name))
        .map(|v| v.trim_start_matches([' ', '\t', ':']).trim())
}

#[test]
fn our_images_pass_cryptsetup() {
    let Some(cs) = cryptsetup() else { return };
    let scratch = Scratch::new(&cs);
    let (cases, groups) = matrix();
    eprintln!("us->cryptsetup matrix: {} cases {groups:?}", cases.len());
    run_cases(&cases, |i, c| {
        let img = scratch.image(&format!("us{i}.img"), c.size);
        let pw = passphrase(i as u32);
        let key = scratch.key(&format!("us{i}.key"), &pw);
        let (dev, slot) =
            Luks2Device::format(open_rw(&img), &Passphrase::from_bytes(&pw), &c.opts).unwrap();
        let (_, vk) = dev.unlock(&Passphrase::from_bytes(&pw), None).unwrap();
        let dump = scratch.ok(&["luksDump", img.to_str().unwrap()]);
        assert_eq!(
            scratch.test_passphrase(&img, &key, None),
            0,
            "test-passphrase failed"
        );
        assert_eq!(scratch.test_passphrase(&img, &key, Some(slot.get())), 0);
        let wrong = scratch.key(&format!("us{i}.wrong"), b"wrong");
        assert_eq!(scratch.test_passphrase(&img, &wrong, None), 2);
        assert_eq!(scratch.volume_key(&img, &key, None), vk.as_bytes());
        let h = dev.header();
        assert_eq!(dump_field(&dump, "Epoch"), Some("3"));
        assert_eq!(dump_field(&dump, "UUID"), Some(&*h.uuid()));
        if let Some(u) = &c.opts.uuid {
            assert_eq!(&*h.uuid(), u.as_str());
        }
        let label = if c.opts.label.is_empty() {
            "(no label)"
        } else {
            c.opts.label.as_str()
        };
        assert_eq!(dump_field(&dump, "Label"), Some(label));
        let sub = if c.opts.subsystem.is_empty() {
            "(no subsystem)"
        } else {
            c.opts.subsystem.as_str()
        };
        assert_eq!(dump_field(&dump, "Subsystem"), Some(sub));
        assert_eq!(
            dump_field(&dump, "Metadata area"),
            Some(format!("{} [bytes]", h.hdr_size()).as_str())
        );
        assert_eq!(
            dump_field(&dump, "Keyslots area"),
            Some(format!("{} [bytes]", h.metadata.config.keyslots_size).as_str())
        );
        if let Some(s) = c.opts.sector_size {
            assert!(dump.contains(&format!("sector: {s} [bytes]")), "{dump}");
        }
        if c.size % 4096 != 0 {
            assert!(dump.contains("sector: 512 [bytes]"), "{dump}");
        }
        if let Some(off) = c.opts.data_offset_sectors {
            assert!(
                dump.contains(&format!("offset: {} [bytes]", off * 512)),
                "{dump}"
            );
        }
        assert!(dump.contains(&format!("  {}: luks2", slot.get())), "{dump}");
    });
}

#[test]
fn default_format_matches_cryptsetup_layout() {
    // Defaults (calibrated argon2id is slow: use forced costs but default everything else) give
    // the same geometry as `cryptsetup luksFormat` on a file of the same size.
    let Some(cs) = cryptsetup() else { return };
    let scratch = Scratch::new(&cs);
    let ours = scratch.image("ours.img", 40 * MIB);
    let theirs = scratch.image("theirs.img", 40 * MIB);
    let key = scratch.key("k", b"pw");
    let opts = FormatOptions {
        pbkdf: kdf("argon2id"),
        ..Default::default()
    };
    Luks2Device::format(open_rw(&ours), &Passphrase::from_bytes(b"pw"), &opts).unwrap();
    scratch.ok(&[
        "luksFormat",
        "--type",
        "luks2",
        "--batch-mode",
        "--pbkdf-force-iterations",
        "4",
        "--pbkdf-memory",
        "128",
        "--pbkdf-parallel",
        "4",
        "--key-file",
        key.to_str().unwrap(),
        theirs.to_str().unwrap(),
    ]);
    let strip = |d: String| -> Vec<String> {
        d.lines()
            .filter(|l| {
                !l.contains("UUID")
                    && !l.contains("Salt")
                    && !l.contains("Digest:")
                    && !l.starts_with("\t            ")
            })
            .filter(|l| !l.contains("Iterations") || l.contains("Iterations: 1000"))
            .map(str::to_owned)
            .collect()
    };
    let a = strip(scratch.ok(&["luksDump", ours.to_str().unwrap()]));
    let b = strip(scratch.ok(&["luksDump", theirs.to_str().unwrap()]));
    assert_eq!(a, b);
}

#[test]
fn key_changes_and_tokens_seen_by_cryptsetup() {
    let Some(cs) = cryptsetup() else { return };
    let scratch = Scratch::new(&cs);
    let img = scratch.image("ops.img", 20 * MIB);
    let (p0, p1, p2, p3) = (passphrase(0), passphrase(1), passphrase(2), passphrase(3));
    let (k0, k1, k2, k3) = (
        scratch.key("k0", &p0),
        scratch.key("k1", &p1),
        scratch.key("k2", &p2),
        scratch.key("k3", &p3),
    );
    let pb = |b: &[u8]| Passphrase::from_bytes(b);
    let opts = FormatOptions {
        pbkdf: kdf("argon2id"),
        ..Default::default()
    };
    let (mut dev, _) = Luks2Device::format(open_rw(&img), &pb(&p0), &opts).unwrap();
    let vk = dev.unlock(&pb(&p0), None).unwrap().1;
    let ks = |id: Option<u32>, kind: &str| NewKeyslot {
        id: id.map(KeyslotId::new),
        pbkdf: kdf(kind),
        priority: None,
    };

    // Add in slot 4 (pbkdf2) and the next free slot (argon2i).
    assert_eq!(
        dev.add_key(&pb(&p0), &pb(&p1), &ks(Some(4), "pbkdf2-sha512"))
            .unwrap(),
        KeyslotId::new(4)
    );
    assert_eq!(
        dev.add_key(&pb(&p1), &pb(&p2), &ks(None, "argon2i"))
            .unwrap(),
        KeyslotId::new(1)
    );
    assert_eq!(scratch.test_passphrase(&img, &k1, Some(4)), 0);
    assert_eq!(scratch.test_passphrase(&img, &k2, Some(1)), 0);
    assert_eq!(scratch.volume_key(&img, &k2, None), vk.as_bytes());
    // cryptsetup adds a key; we open it.
    scratch.ok(&[
        "luksAddKey",
        "--batch-mode",
        "--pbkdf",
        "pbkdf2",
        "--pbkdf-force-iterations",
        "1000",
        "--key-slot",
        "7",
        "--key-file",
        k0.to_str().unwrap(),
        img.to_str().unwrap(),
        k3.to_str().unwrap(),
    ]);
    dev.reload().unwrap();
    assert_eq!(dev.unlock(&pb(&p3), None).unwrap().0, KeyslotId::new(7));

    // Change key 4 -> p2b: old passphrase gone for cryptsetup, new one works, same slot.
    let p4 = passphrase(4);
    let k4 = scratch.key("k4", &p4);
    assert_eq!(
        dev.change_key(&pb(&p1), &pb(&p4), None, &kdf("pbkdf2-sha256"))
            .unwrap(),
        KeyslotId::new(4)
    );
    assert_eq!(scratch.test_passphrase(&img, &k1, None), 2);
    assert_eq!(scratch.test_passphrase(&img, &k4, Some(4)), 0);

    // Remove by passphrase, kill by number.
    assert_eq!(dev.remove_key(&pb(&p2)).unwrap(), KeyslotId::new(1));
    assert_eq!(scratch.test_passphrase(&img, &k2, None), 2);
    dev.kill_slot(KeyslotId::new(7)).unwrap();
    assert_eq!(scratch.test_passphrase(&img, &k3, None), 2);
    let dump = scratch.ok(&["luksDump", img.to_str().unwrap()]);
    assert!(
        dump.contains("  0: luks2") && dump.contains("  4: luks2"),
        "{dump}"
    );
    assert!(
        !dump.contains("  1: luks2") && !dump.contains("  7: luks2"),
        "{dump}"
    );

    // Priority: cryptsetup shows it.
    dev.set_priority(KeyslotId::new(4), Priority::Prefer)
        .unwrap();
    let dump = scratch.ok(&["luksDump", img.to_str().unwrap()]);
    assert!(dump.contains("Priority:   preferred"), "{dump}");

    // Tokens.
    let json = r#"{"type":"onmetal-kms","keyslots":[],"kms":"kmip","id":"0123"}"#;
    let t = dev
        .add_token(json, Some(TokenId::new(2)), Some(KeyslotId::new(4)))
        .unwrap();
    let exported = scratch.ok(&[
        "token",
        "export",
        "--token-id",
        &t.to_string(),
        img.to_str().unwrap(),
    ]);
    let a: serde_json::Value = serde_json::from_str(exported.trim()).unwrap();
    let b: serde_json::Value = serde_json::from_str(&dev.export_token(t).unwrap()).unwrap();
    assert_eq!(a, b);
    assert_eq!(a["keyslots"], serde_json::json!(["4"]));
    // cryptsetup's import is seen by us.
    let tf = scratch.key("tok.json", br#"{"type":"other","keyslots":["0"],"x":1}"#);
    scratch.ok(&[
        "token",
        "import",
        "--json-file",
        tf.to_str().unwrap(),
        "--token-id",
        "5",
        img.to_str().unwrap(),
    ]);
    dev.reload().unwrap();
    assert_eq!(dev.tokens().len(), 2);
    dev.remove_token(t).unwrap();
    let out = scratch.run(&["token", "export", "--token-id", "2", img.to_str().unwrap()]);
    assert!(!out.status.success());

    // Erase: cryptsetup sees no keyslots.
    dev.erase().unwrap();
    // cryptsetup: "No usable keyslot is available." exit 1; we say the same.
    assert_eq!(scratch.test_passphrase(&img, &k0, None), 1);
    assert_eq!(
        dev.unlock(&pb(&p0), None).unwrap_err().kind(),
        luks2::ErrorKind::InvalidArgument
    );
    let dump = scratch.ok(&["luksDump", img.to_str().unwrap()]);
    assert!(!dump.contains(": luks2"), "{dump}");
}

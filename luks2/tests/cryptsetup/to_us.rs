//! cryptsetup -> us: images made by `cryptsetup luksFormat --type luks2 --batch-mode` over a
//! matrix of options open with this library and yield exactly the volume key that
//! `cryptsetup luksDump --dump-volume-key` prints.
//!
//! KDF costs are forced small (`--pbkdf-force-iterations`, `--pbkdf-memory 32..256`) so the
//! whole matrix runs in seconds; images are sparse files in a temporary directory.
#![allow(clippy::unwrap_used, clippy::cast_possible_truncation)]

use luks2::metadata::KeyslotId;
use luks2::{ErrorKind, Luks2Device, Passphrase};
use testkit::cryptsetup::{Scratch, cryptsetup};
use testkit::fixtures::{open_rw, passphrase, run_cases};

#[derive(Debug, Clone)]
struct Case {
    /// Extra luksFormat arguments.
    format: Vec<String>,
    /// Image size in MiB.
    size_mib: u64,
    /// Keyslot the format puts the first key in (None: 0).
    slot: Option<u32>,
    /// Extra keys added with luksAddKey: (slot, extra args).
    add: Vec<(u32, Vec<String>)>,
    /// A token to import.
    token: Option<String>,
}

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| (*x).to_owned()).collect()
}

fn pbkdf_args(kind: &str) -> Vec<String> {
    match kind {
        "pbkdf2-sha1" => s(&[
            "--pbkdf",
            "pbkdf2",
            "--hash",
            "sha1",
            "--pbkdf-force-iterations",
            "1000",
        ]),
        "pbkdf2-sha256" => s(&[
            "--pbkdf",
            "pbkdf2",
            "--hash",
            "sha256",
            "--pbkdf-force-iterations",
            "1000",
        ]),
        "pbkdf2-sha512" => s(&[
            "--pbkdf",
            "pbkdf2",
            "--hash",
            "sha512",
            "--pbkdf-force-iterations",
            "1000",
        ]),
        "argon2i" => s(&[
            "--pbkdf",
            "argon2i",
            "--pbkdf-force-iterations",
            "4",
            "--pbkdf-memory",
            "64",
            "--pbkdf-parallel",
            "1",
        ]),
        "argon2id" => s(&[
            "--pbkdf",
            "argon2id",
            "--pbkdf-force-iterations",
            "4",
            "--pbkdf-memory",
            "256",
            "--pbkdf-parallel",
            "4",
        ]),
        other => panic!("{other}"),
    }
}

fn base(kind: &str) -> Case {
    Case {
        format: pbkdf_args(kind),
        size_mib: 20,
        slot: None,
        add: vec![],
        token: None,
    }
}

fn matrix() -> (Vec<Case>, [usize; 7]) {
    let mut cases = Vec::new();
    let mut sizes = [0usize; 7];
    // 1. KDF x key size x sector size.
    for kind in [
        "pbkdf2-sha1",
        "pbkdf2-sha256",
        "pbkdf2-sha512",
        "argon2i",
        "argon2id",
    ] {
        for bits in ["256", "512"] {
            for sector in ["512", "4096"] {
                let mut c = base(kind);
                c.format
                    .extend(s(&["--key-size", bits, "--sector-size", sector]));
                cases.push(c);
            }
        }
    }
    sizes[0] = cases.len();
    // 2. All nine metadata sizes.
    for kib in [16, 32, 64, 128, 256, 512, 1024, 2048, 4096] {
        let mut c = base("pbkdf2-sha256");
        c.format
            .extend(s(&["--luks2-metadata-size", &format!("{}", kib * 1024)]));
        cases.push(c);
    }
    sizes[1] = cases.len() - sizes[0];
    // 3. Non-default keyslots sizes (and one with a 4 MiB data offset, the old default).
    let before = cases.len();
    for ks in ["262144", "1048576", "4161536", "8388608"] {
        let mut c = base("pbkdf2-sha256");
        c.format.extend(s(&["--luks2-keyslots-size", ks]));
        cases.push(c);
    }
    let mut c = base("argon2id");
    c.format.extend(s(&["--offset", "8192"]));
    cases.push(c);
    sizes[2] = cases.len() - before;
    // 4. Keys in non-first slots, several keyslots.
    let before = cases.len();
    for slot in [1, 7, 31] {
        let mut c = base("pbkdf2-sha256");
        c.slot = Some(slot);
        cases.push(c);
    }
    let mut c = base("argon2id");
    c.slot = Some(2);
    c.add = vec![
        (0, pbkdf_args("pbkdf2-sha512")),
        (5, pbkdf_args("argon2i")),
        (31, pbkdf_args("pbkdf2-sha1")),
    ];
    cases.push(c);
    sizes[3] = cases.len() - before;
    // 5. Labels and subsystems.
    let before = cases.len();
    for (label, subsystem) in [
        ("data", ""),
        ("", "csi"),
        ("a label with spaces 0123456789012345678901234567", "sub"),
    ] {
        let mut c = base("pbkdf2-sha256");
        if !label.is_empty() {
            c.format.extend(s(&["--label", label]));
        }
        if !subsystem.is_empty() {
            c.format.extend(s(&["--subsystem", subsystem]));
        }
        cases.push(c);
    }
    sizes[4] = cases.len() - before;
    // 6. Tokens.
    let before = cases.len();
    let mut c = base("argon2id");
    c.token =
        Some(r#"{"type":"onmetal-kms","keyslots":["0"],"kms":"vault","wrapped":"AAEC"}"#.into());
    cases.push(c);
    sizes[5] = cases.len() - before;
    // 7. Other keyslot ciphers and a UUID.
    let before = cases.len();
    for (cipher, bits) in [("aes-xts-plain", "512"), ("aes-cbc-essiv:sha256", "256")] {
        let mut c = base("pbkdf2-sha256");
        c.format
            .extend(s(&["--cipher", cipher, "--key-size", bits]));
        cases.push(c);
    }
    let mut c = base("pbkdf2-sha256");
    c.format
        .extend(s(&["--uuid", "12345678-9abc-def0-1234-56789abcdef0"]));
    cases.push(c);
    sizes[6] = cases.len() - before;
    (cases, sizes)
}

#[test]
fn cryptsetup_images_open_with_our_library() {
    let Some(cs) = cryptsetup() else { return };
    let scratch = Scratch::new(&cs);
    let (cases, sizes) = matrix();
    eprintln!(
        "cryptsetup->us matrix: {} cases (kdf x key x sector {}, metadata sizes {}, keyslots sizes/offset {}, \
         slots {}, labels {}, tokens {}, ciphers/uuid {})",
        cases.len(),
        sizes[0],
        sizes[1],
        sizes[2],
        sizes[3],
        sizes[4],
        sizes[5],
        sizes[6]
    );
    run_cases(&cases, |i, c| {
        let img = scratch.image(&format!("cs{i}.img"), c.size_mib << 20);
        let pw = passphrase(i as u32);
        let key = scratch.key(&format!("cs{i}.key"), &pw);
        let mut args = s(&[
            "luksFormat",
            "--type",
            "luks2",
            "--batch-mode",
            "--key-file",
        ]);
        args.push(key.to_str().unwrap().into());
        args.extend(c.format.clone());
        if let Some(slot) = c.slot {
            args.extend(s(&["--key-slot", &slot.to_string()]));
        }
        args.push(img.to_str().unwrap().into());
        scratch.ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
        let mut extra_keys = Vec::new();
        for (n, (slot, kdf)) in c.add.iter().enumerate() {
            let pw2 = passphrase(1000 + i as u32 * 10 + n as u32);
            let key2 = scratch.key(&format!("cs{i}-{n}.key"), &pw2);
            let mut a = s(&["luksAddKey", "--batch-mode", "--key-file"]);
            a.push(key.to_str().unwrap().into());
            a.extend(kdf.clone());
            a.extend(s(&["--key-slot", &slot.to_string()]));
            a.push(img.to_str().unwrap().into());
            a.push(key2.to_str().unwrap().into());
            scratch.ok(&a.iter().map(String::as_str).collect::<Vec<_>>());
            extra_keys.push((*slot, pw2, key2));
        }
        if let Some(tok) = &c.token {
            let tf = scratch.key(&format!("cs{i}.token"), tok.as_bytes());
            scratch.ok(&[
                "token",
                "import",
                "--json-file",
                tf.to_str().unwrap(),
                img.to_str().unwrap(),
            ]);
        }

        let expected = scratch.volume_key(&img, &key, None);
        let dev = Luks2Device::open(open_rw(&img)).unwrap();
        let (id, vk) = dev.unlock(&Passphrase::from_bytes(&pw), None).unwrap();
        assert_eq!(vk.as_bytes(), &expected[..], "volume key differs");
        assert_eq!(id, KeyslotId::new(c.slot.unwrap_or(0)));
        for (slot, pw2, _) in &extra_keys {
            let (id2, vk2) = dev.unlock(&Passphrase::from_bytes(pw2), None).unwrap();
            assert_eq!(id2, KeyslotId::new(*slot));
            assert_eq!(vk2.as_bytes(), &expected[..]);
            let (_, vk3) = dev
                .unlock(&Passphrase::from_bytes(pw2), Some(KeyslotId::new(*slot)))
                .unwrap();
            assert_eq!(vk3.as_bytes(), &expected[..]);
        }
        let wrong = dev
            .unlock(&Passphrase::from_bytes(b"wrong"), None)
            .unwrap_err();
        assert_eq!(wrong.kind(), ErrorKind::BadPassphrase);
        if let Some(tok) = &c.token {
            let ours = dev.export_token(luks2::metadata::TokenId::new(0)).unwrap();
            let a: serde_json::Value = serde_json::from_str(&ours).unwrap();
            let b: serde_json::Value = serde_json::from_str(tok).unwrap();
            assert_eq!(a, b);
        }
        // The header fields we report match what cryptsetup wrote.
        let dump = scratch.ok(&["luksDump", img.to_str().unwrap()]);
        let h = dev.header();
        assert!(
            dump.contains(&format!("UUID:          \t{}", h.uuid())),
            "{dump}"
        );
        if !h.label().is_empty() {
            assert!(
                dump.contains(&format!("Label:         \t{}", h.label())),
                "{dump}"
            );
        }
    });
}

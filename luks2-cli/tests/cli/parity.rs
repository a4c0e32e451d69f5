//! The `luks2` command where it used to differ from cryptsetup 2.6,
//! each case run through both on the same image file: ambiguous signatures, "no usable
//! keyslot", repair of a device without LUKS, kill-slot on a header with unknown mandatory
//! requirements, and the `dump` lines for a legacy `argon2` KDF, an unbound keyslot and a
//! keyring token.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use luks2::header::binary::{self, BinaryHeader};
use testkit::cmd::tool;
use testkit::cryptsetup::cryptsetup;

const MIB: u64 = 1024 * 1024;
const FAST: [&str; 4] = ["--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000"];
const AMBIGUOUS: &str = "Device contains ambiguous signatures, cannot auto-recover LUKS2.";

struct T {
    dir: tempfile::TempDir,
    cs: PathBuf,
}

impl T {
    fn new() -> Option<T> {
        Some(T {
            dir: tempfile::tempdir().unwrap(),
            cs: cryptsetup()?,
        })
    }
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
    fn file(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let p = self.path(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }
    fn img(&self, name: &str, size: u64) -> PathBuf {
        let p = self.path(name);
        std::fs::File::create(&p).unwrap().set_len(size).unwrap();
        p
    }
    fn cs(&self, args: &[&str]) -> Output {
        testkit::cryptsetup::run(&self.cs, args)
    }
    fn cs_ok(&self, args: &[&str]) -> String {
        testkit::cryptsetup::run_ok(&self.cs, args)
    }
    /// A cryptsetup LUKS2 image (16 MiB data offset) with keyslot 0 = `k0`, keyslot 1 = `k1`.
    fn luks(&self, name: &str, k0: &Path, k1: &Path) -> PathBuf {
        let img = self.img(name, 24 * MIB);
        let mut f = vec!["luksFormat", "--type", "luks2", "-q", "--key-file", s(k0)];
        f.extend(FAST);
        f.push(s(&img));
        self.cs_ok(&f);
        let mut a = vec!["luksAddKey", "-q", "--key-file", s(k0)];
        a.extend(FAST);
        a.extend([s(&img), s(k1)]);
        self.cs_ok(&a);
        img
    }
}

fn luks2(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_luks2"))
        .args(args)
        .output()
        .unwrap()
}

fn code(o: &Output) -> i32 {
    o.status.code().unwrap()
}

fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Rewrites the JSON metadata of both header copies of `img` (checksums resealed, seqid kept).
fn patch_json(img: &Path, f: impl Fn(&mut serde_json::Value)) {
    let mut bytes = std::fs::read(img).unwrap();
    let primary = BinaryHeader::parse(&bytes[..binary::BIN_HEADER_LEN]).unwrap();
    let hdr_size = usize::try_from(primary.hdr_size).unwrap();
    let json_area = &bytes[binary::BIN_HEADER_LEN..hdr_size];
    let end = json_area.iter().position(|&b| b == 0).unwrap();
    let mut v: serde_json::Value = serde_json::from_slice(&json_area[..end]).unwrap();
    f(&mut v);
    let mut area = serde_json::to_vec(&v).unwrap();
    area.resize(hdr_size - binary::BIN_HEADER_LEN, 0);
    for off in [0, hdr_size] {
        let bin = BinaryHeader::parse(&bytes[off..off + binary::BIN_HEADER_LEN]).unwrap();
        let sealed = binary::seal(&bin, &area).unwrap();
        bytes[off..off + binary::BIN_HEADER_LEN].copy_from_slice(&sealed);
        bytes[off + binary::BIN_HEADER_LEN..off + hdr_size].copy_from_slice(&area);
    }
    std::fs::write(img, bytes).unwrap();
}

/// Bytes 1024..4096 of a freshly made filesystem or swap image: an ext4 superblock or a swap
/// header, which land in the padding of the LUKS2 primary binary header (breaking its checksum,
/// as writing such a signature over a LUKS2 device does).
fn foreign_signatures(t: &T) -> Vec<(&'static str, Vec<u8>)> {
    let mut out = Vec::new();
    for (name, bin, package, args) in [
        (
            "ext4",
            "/usr/sbin/mkfs.ext4",
            "e2fsprogs",
            &["-q", "-F"][..],
        ),
        ("swap", "/usr/sbin/mkswap", "util-linux", &[][..]),
    ] {
        let Some(bin) = tool(bin, package) else {
            continue;
        };
        let fs = t.img(&format!("{name}.fs"), 2 * MIB);
        let o = Command::new(bin).args(args).arg(&fs).output().unwrap();
        assert!(o.status.success(), "{name}: {}", err(&o));
        out.push((name, std::fs::read(&fs).unwrap()[1024..4096].to_vec()));
    }
    out
}

#[test]
fn ambiguous_signatures_are_refused_like_cryptsetup_and_repair_proceeds() {
    let Some(t) = T::new() else { return };
    let (k0, k1) = (t.file("k0", b"zero"), t.file("k1", b"one"));
    let backup = t.path("backup");
    let vkf = t.path("vk");
    for (name, sig) in foreign_signatures(&t) {
        let img = t.luks(&format!("{name}.img"), &k0, &k1);
        let mut bytes = std::fs::read(&img).unwrap();
        bytes[1024..4096].copy_from_slice(&sig);
        std::fs::write(&img, &bytes).unwrap();
        let i = s(&img);

        let cases: [(&[&str], &[&str]); 8] = [
            (&["dump", i], &["luksDump", i]),
            (
                &["dump", "--json", i],
                &["luksDump", "--dump-json-metadata", i],
            ),
            (
                &["test-passphrase", "--key-file", s(&k0), i],
                &["open", "--test-passphrase", "--key-file", s(&k0), i],
            ),
            (
                &["volume-key", "--key-file", s(&k0), i],
                &[
                    "luksDump",
                    "--dump-volume-key",
                    "--batch-mode",
                    "--volume-key-file",
                    s(&vkf),
                    "--key-file",
                    s(&k0),
                    i,
                ],
            ),
            (&["kill-slot", "1", i], &["luksKillSlot", "-q", i, "1"]),
            (
                &["remove-key", "--key-file", s(&k1), i],
                &["luksRemoveKey", "-q", i, s(&k1)],
            ),
            (
                &["token", "export", "0", i],
                &["token", "export", "--token-id", "0", i],
            ),
            (
                &["header-backup", "--header-backup-file", s(&backup), i],
                &["luksHeaderBackup", "--header-backup-file", s(&backup), i],
            ),
        ];
        for (ours, theirs) in cases {
            let cs = t.cs(theirs);
            assert_eq!(code(&cs), 1, "{name}: cryptsetup {theirs:?}: {}", err(&cs));
            assert!(err(&cs).contains(AMBIGUOUS), "{}", err(&cs));
            let o = luks2(ours);
            assert_eq!(code(&o), 1, "{name}: luks2 {ours:?}: {}", err(&o));
            assert!(
                err(&o).contains(AMBIGUOUS),
                "{name}: luks2 {ours:?}: {}",
                err(&o)
            );
            assert!(!backup.exists() && !vkf.exists());
        }
        assert!(
            std::fs::read(&img).unwrap() == bytes,
            "{name}: a refused operation changed the device"
        );

        // repair proceeds, as `cryptsetup repair` does; afterwards both read the header again.
        let theirs = t.file(&format!("{name}-cs.img"), &bytes);
        t.cs_ok(&["repair", "-q", s(&theirs)]);
        let o = luks2(&["repair", i]);
        assert_eq!(code(&o), 0, "{name}: {}", err(&o));
        t.cs_ok(&["open", "--test-passphrase", "--key-file", s(&k1), i]);
        assert_eq!(
            code(&luks2(&["test-passphrase", "--key-file", s(&k1), i])),
            0
        );
    }
}

#[test]
fn no_usable_keyslot_is_exit_1_with_cryptsetups_message() {
    let Some(t) = T::new() else { return };
    let (k0, k1, k2) = (
        t.file("k0", b"zero"),
        t.file("k1", b"one"),
        t.file("k2", b"two"),
    );
    let img = t.luks("u.img", &k0, &k1);
    let i = s(&img);
    // Keyslot 2 holds an unbound key; then the bound keyslots go.
    let mut a = vec!["luksAddKey", "-q", "--unbound", "-s", "512"];
    a.extend(FAST);
    a.extend([i, s(&k2)]);
    t.cs_ok(&a);
    t.cs_ok(&["luksKillSlot", "-q", i, "0"]);
    t.cs_ok(&["luksKillSlot", "-q", i, "1"]);

    for k in [&k2, &k0] {
        let cs = t.cs(&["open", "--test-passphrase", "--key-file", s(k), i]);
        assert_eq!(code(&cs), 1);
        assert!(
            err(&cs).contains("No usable keyslot is available."),
            "{}",
            err(&cs)
        );
        let o = luks2(&["test-passphrase", "--key-file", s(k), i]);
        assert_eq!(code(&o), 1, "{}", err(&o));
        assert!(
            err(&o).contains("No usable keyslot is available."),
            "{}",
            err(&o)
        );
        // cryptsetup 2.6.1's `luksDump --dump-volume-key` fails here too, but with a bare exit
        // code 3 (a zero volume key size read as -ENOMEM); we keep the accurate message.
        let o = luks2(&["volume-key", "--key-file", s(k), i]);
        assert_eq!(code(&o), 1, "{}", err(&o));
        assert!(
            err(&o).contains("No usable keyslot is available."),
            "{}",
            err(&o)
        );
        assert!(o.stdout.is_empty());
    }
    // Naming the unbound keyslot works in both.
    t.cs_ok(&[
        "open",
        "--test-passphrase",
        "-S",
        "2",
        "--key-file",
        s(&k2),
        i,
    ]);
    let o = luks2(&[
        "test-passphrase",
        "--key-slot",
        "2",
        "--key-file",
        s(&k2),
        i,
    ]);
    assert_eq!(code(&o), 0, "{}", err(&o));
}

#[test]
fn repair_of_a_device_without_luks_is_not_a_valid_luks_device() {
    let Some(t) = T::new() else { return };
    let mut images = vec![t.img("zeros.img", 8 * MIB)];
    if let Some(mkfs) = tool("/usr/sbin/mkfs.ext4", "e2fsprogs") {
        let img = t.img("ext4.img", 8 * MIB);
        let o = Command::new(mkfs)
            .args(["-q", "-F"])
            .arg(&img)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", err(&o));
        images.push(img);
    }
    for img in images {
        let before = std::fs::read(&img).unwrap();
        let cs = t.cs(&["repair", "-q", s(&img)]);
        assert_eq!(code(&cs), 1);
        assert!(
            err(&cs).contains("is not a valid LUKS device"),
            "{}",
            err(&cs)
        );
        let o = luks2(&["repair", s(&img)]);
        assert_eq!(code(&o), 1, "{}", err(&o));
        assert!(err(&o).contains("not a valid LUKS device"), "{}", err(&o));
        assert!(std::fs::read(&img).unwrap() == before);
    }
}

#[test]
fn kill_slot_is_allowed_with_unknown_mandatory_requirements() {
    let Some(t) = T::new() else { return };
    let (k0, k1, k2) = (
        t.file("k0", b"zero"),
        t.file("k1", b"one"),
        t.file("k2", b"two"),
    );
    let req = |v: &mut serde_json::Value| {
        v["config"]["requirements"] = serde_json::json!({"mandatory": ["future-feature"]});
    };
    let ours = t.luks("ours.img", &k0, &k1);
    patch_json(&ours, req);
    let theirs = t.file("theirs.img", &std::fs::read(&ours).unwrap());

    t.cs_ok(&["luksKillSlot", "-q", s(&theirs), "1"]);
    let o = luks2(&["kill-slot", "1", s(&ours)]);
    assert_eq!(code(&o), 0, "{}", err(&o));
    for img in [&ours, &theirs] {
        let json: serde_json::Value =
            serde_json::from_str(&t.cs_ok(&["luksDump", "--dump-json-metadata", s(img)])).unwrap();
        assert_eq!(
            json["config"]["requirements"]["mandatory"][0],
            "future-feature"
        );
        assert!(json["keyslots"].get("1").is_none(), "{json}");
        assert!(json["keyslots"].get("0").is_some());
    }
    // Our dump of such a header is cryptsetup's (its Requirements line included).
    let o = luks2(&["dump", s(&ours)]);
    assert_eq!(code(&o), 0, "{}", err(&o));
    assert_eq!(
        String::from_utf8(o.stdout).unwrap(),
        t.cs_ok(&["luksDump", s(&ours)])
    );
    // Adding a key stays refused by both (exit 1).
    let mut a = vec!["luksAddKey", "-q", "--key-file", s(&k0)];
    a.extend(FAST);
    a.extend([s(&theirs), s(&k2)]);
    assert_eq!(code(&t.cs(&a)), 1);
    let o = luks2(&[
        "add-key",
        "--key-file",
        s(&k0),
        "--new-key-file",
        s(&k2),
        "--pbkdf",
        "pbkdf2",
        "--pbkdf-force-iterations",
        "1000",
        s(&ours),
    ]);
    assert_eq!(code(&o), 1, "{}", err(&o));
}

#[test]
fn dump_text_for_legacy_argon2_unbound_keyslot_and_keyring_token() {
    let Some(t) = T::new() else { return };
    let (k0, k1) = (t.file("k0", b"zero"), t.file("k1", b"one"));
    let img = t.img("d.img", 24 * MIB);
    let i = s(&img);
    t.cs_ok(&[
        "luksFormat",
        "--type",
        "luks2",
        "-q",
        "--pbkdf",
        "argon2id",
        "--pbkdf-force-iterations",
        "4",
        "--pbkdf-memory",
        "64",
        "--pbkdf-parallel",
        "1",
        "--key-file",
        s(&k0),
        i,
    ]);
    let mut a = vec!["luksAddKey", "-q", "--unbound", "-s", "512"];
    a.extend(FAST);
    a.extend([i, s(&k1)]);
    t.cs_ok(&a);
    t.cs_ok(&[
        "token",
        "add",
        "--key-description",
        "onmetal:test",
        "--key-slot",
        "0",
        i,
    ]);
    // The legacy KDF type name cryptsetup still loads.
    patch_json(&img, |v| {
        v["keyslots"]["0"]["kdf"]["type"] = "argon2".into()
    });

    let theirs = t.cs_ok(&["luksDump", i]);
    assert!(
        theirs.contains("\tPBKDF:      argon2\n\tTime cost:  4\n"),
        "{theirs}"
    );
    assert!(theirs.contains("  1: luks2 (unbound)\n"), "{theirs}");
    assert!(
        theirs.contains("\tKey description: onmetal:test\n"),
        "{theirs}"
    );
    let o = luks2(&["dump", i]);
    assert_eq!(code(&o), 0, "{}", err(&o));
    assert_eq!(String::from_utf8(o.stdout).unwrap(), theirs);
}

/// JSON text re-serialized compactly in its own member order (serde_json keeps the order here;
/// `Value` equality would ignore it).
fn canonical(text: &str) -> String {
    serde_json::from_str::<serde_json::Value>(text)
        .unwrap()
        .to_string()
}

#[test]
fn unknown_json_members_and_member_order_survive_like_cryptsetup() {
    let Some(t) = T::new() else { return };
    let (k0, k1, k2) = (
        t.file("k0", b"zero"),
        t.file("k1", b"one"),
        t.file("k2", b"two"),
    );
    let ours = t.luks("ours.img", &k0, &k1);
    patch_json(&ours, |v| {
        v["config"]["x-onmetal"] = serde_json::json!({"b": 1, "a": [1, 2]});
        v["keyslots"]["0"]["x-vendor"] = "kept".into();
    });
    // A token whose members are not in cryptsetup's usual order.
    let token = t.file(
        "token.json",
        br#"{"keyslots":["0"],"z":1,"type":"onmetal-kms","a":{"y":2,"x":1}}"#,
    );
    t.cs_ok(&["token", "import", "--json-file", s(&token), s(&ours)]);
    let theirs = t.file("theirs.img", &std::fs::read(&ours).unwrap());
    let cs_json = |img: &Path| canonical(&t.cs_ok(&["luksDump", "--dump-json-metadata", s(img)]));

    // dump --json and token export print what cryptsetup prints.
    let before = cs_json(&ours);
    assert!(
        before.contains(r#""x-onmetal":{"b":1,"a":[1,2]}"#),
        "{before}"
    );
    assert_eq!(
        canonical(&String::from_utf8(luks2(&["dump", "--json", s(&ours)]).stdout).unwrap()),
        before
    );
    let exported = t.cs_ok(&["token", "export", "--token-id", "0", s(&ours)]);
    assert_eq!(
        canonical(&String::from_utf8(luks2(&["token", "export", "0", s(&ours)]).stdout).unwrap()),
        canonical(&exported)
    );
    assert_eq!(
        canonical(&exported),
        r#"{"keyslots":["0"],"z":1,"type":"onmetal-kms","a":{"y":2,"x":1}}"#
    );

    // A header write (kill-slot) by each: the same JSON afterwards.
    t.cs_ok(&["luksKillSlot", "-q", s(&theirs), "1"]);
    let o = luks2(&["kill-slot", "1", s(&ours)]);
    assert_eq!(code(&o), 0, "{}", err(&o));
    assert_eq!(cs_json(&ours), cs_json(&theirs));

    // add-key and a token import of ours keep them too; the imported token keeps its order.
    let o = luks2(&[
        "add-key",
        "--key-file",
        s(&k0),
        "--new-key-file",
        s(&k2),
        "--pbkdf",
        "pbkdf2",
        "--pbkdf-force-iterations",
        "1000",
        s(&ours),
    ]);
    assert_eq!(code(&o), 0, "{}", err(&o));
    let o = luks2(&["token", "add", "--json-file", s(&token), s(&ours)]);
    assert_eq!(code(&o), 0, "{}", err(&o));
    let after = cs_json(&ours);
    assert!(
        after.contains(r#""x-onmetal":{"b":1,"a":[1,2]}"#),
        "{after}"
    );
    assert!(after.contains(r#""x-vendor":"kept""#), "{after}");
    assert_eq!(
        canonical(&t.cs_ok(&["token", "export", "--token-id", "1", s(&ours)])),
        r#"{"keyslots":["0"],"z":1,"type":"onmetal-kms","a":{"y":2,"x":1}}"#
    );
}

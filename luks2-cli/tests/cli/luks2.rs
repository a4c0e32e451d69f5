//! The `luks2` command against cryptsetup 2.6 on plain image files (no device-mapper needed):
//! output of `dump` equals `cryptsetup luksDump` byte for byte, `volume-key` equals the key
//! cryptsetup dumps, key and token verbs are seen by cryptsetup, and exit codes match
//! cryptsetup's (0 ok, 1 wrong parameters or not a LUKS device, 2 bad passphrase, 4 no such
//! device, 5 busy).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use testkit::cryptsetup::cryptsetup;

const MIB: u64 = 1024 * 1024;
const FAST: [&str; 4] = ["--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000"];
const FAST_ARGON: [&str; 8] = [
    "--pbkdf",
    "argon2id",
    "--pbkdf-force-iterations",
    "4",
    "--pbkdf-memory",
    "64",
    "--pbkdf-parallel",
    "2",
];

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
    fn img(&self, name: &str, size: u64) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::File::create(&p).unwrap().set_len(size).unwrap();
        p
    }
    fn file(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }
    fn cs(&self, args: &[&str]) -> Output {
        testkit::cryptsetup::run(&self.cs, args)
    }
    fn cs_ok(&self, args: &[&str]) -> String {
        testkit::cryptsetup::run_ok(&self.cs, args)
    }
}

fn luks2(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_luks2"))
        .args(args)
        .output()
        .unwrap()
}

fn luks2_stdin(args: &[&str], input: &[u8]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_luks2"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap()
}

fn code(o: &Output) -> i32 {
    o.status.code().unwrap()
}

fn ok(args: &[&str]) -> String {
    let o = luks2(args);
    assert!(
        o.status.success(),
        "luks2 {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn cs_volume_key_hex(t: &T, img: &Path, key: &Path) -> String {
    let vkf = t.dir.path().join("vk.bin");
    let _ = std::fs::remove_file(&vkf);
    t.cs_ok(&[
        "luksDump",
        "--dump-volume-key",
        "--volume-key-file",
        s(&vkf),
        "--batch-mode",
        "--key-file",
        s(key),
        s(img),
    ]);
    let vk = std::fs::read(&vkf).unwrap();
    vk.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn format_dump_volume_key_match_cryptsetup() {
    let Some(t) = T::new() else { return };
    let key = t.file("k", b"secret\n");
    for (i, extra) in [
        vec!["--label", "data", "--subsystem", "csi"],
        vec![
            "--key-size",
            "256",
            "--sector-size",
            "512",
            "--luks2-metadata-size",
            "65536",
            "--key-slot",
            "3",
        ],
        vec![
            "--luks2-keyslots-size",
            "1048576",
            "--offset",
            "4096",
            "--hash",
            "sha512",
        ],
    ]
    .into_iter()
    .enumerate()
    {
        let img = t.img(&format!("f{i}.img"), 20 * MIB);
        let mut args = vec!["format", "--key-file", s(&key)];
        args.extend(if i == 0 {
            FAST_ARGON.to_vec()
        } else {
            FAST.to_vec()
        });
        args.extend(extra);
        args.push(s(&img));
        ok(&args);
        let ours = ok(&["dump", s(&img)]);
        let theirs = t.cs_ok(&["luksDump", s(&img)]);
        assert_eq!(ours, theirs);
        let vk = ok(&["volume-key", "--key-file", s(&key), s(&img)]);
        assert_eq!(vk.trim_end(), cs_volume_key_hex(&t, &img, &key));
        assert!(vk.ends_with('\n') && vk.lines().count() == 1);
        assert_eq!(
            code(&t.cs(&["open", "--test-passphrase", "--key-file", s(&key), s(&img)])),
            0
        );
        // --json is the raw metadata, equal to cryptsetup's.
        let j: serde_json::Value = serde_json::from_str(&ok(&["dump", "--json", s(&img)])).unwrap();
        let c: serde_json::Value =
            serde_json::from_str(&t.cs_ok(&["luksDump", "--dump-json-metadata", s(&img)])).unwrap();
        assert_eq!(j, c);
    }
}

#[test]
fn dump_of_cryptsetup_image_with_token_matches() {
    let Some(t) = T::new() else { return };
    let key = t.file("k", b"pw");
    let img = t.img("cs.img", 20 * MIB);
    let mut args = vec![
        "luksFormat",
        "--type",
        "luks2",
        "--batch-mode",
        "--key-file",
        s(&key),
    ];
    args.extend(FAST_ARGON);
    args.extend(["--label", "lab", s(&img)]);
    t.cs_ok(&args);
    let tok = t.file("tok.json", br#"{"type":"x-kms","keyslots":["0"],"a":1}"#);
    t.cs_ok(&["token", "import", "--json-file", s(&tok), s(&img)]);
    t.cs_ok(&["config", "--priority", "prefer", "--key-slot", "0", s(&img)]);
    assert_eq!(ok(&["dump", s(&img)]), t.cs_ok(&["luksDump", s(&img)]));
    assert_eq!(
        ok(&["volume-key", "--key-file", s(&key), s(&img)]).trim_end(),
        cs_volume_key_hex(&t, &img, &key)
    );
}

#[test]
fn key_verbs_and_exit_codes() {
    let Some(t) = T::new() else { return };
    let (k0, k1, k2) = (
        t.file("k0", b"zero"),
        t.file("k1", b"one"),
        t.file("k2", b"two"),
    );
    let wrong = t.file("wrong", b"nope");
    let img = t.img("k.img", 20 * MIB);
    let mut f = vec!["format", "--key-file", s(&k0)];
    f.extend(FAST);
    f.push(s(&img));
    ok(&f);

    // Exit codes.
    assert_eq!(
        code(&luks2(&["test-passphrase", "--key-file", s(&k0), s(&img)])),
        0
    );
    let o = luks2(&["test-passphrase", "--key-file", s(&wrong), s(&img)]);
    assert_eq!(code(&o), 2);
    assert_eq!(
        String::from_utf8_lossy(&o.stderr).lines().count(),
        1,
        "one line on stderr"
    );
    assert_eq!(
        code(&luks2(&[
            "test-passphrase",
            "--key-file",
            s(&k0),
            "/nonexistent/dev"
        ])),
        4
    );
    let plain = t.img("plain.img", MIB);
    // Not LUKS: cryptsetup's -EINVAL "Device ... is not a valid LUKS device.", exit 1.
    assert_eq!(code(&luks2(&["dump", s(&plain)])), 1);
    assert_eq!(code(&t.cs(&["luksDump", s(&plain)])), 1);
    assert_eq!(
        code(&luks2(&[
            "test-passphrase",
            "--key-file",
            "/nonexistent/key",
            s(&img)
        ])),
        1
    );
    assert_eq!(code(&luks2(&["dump", "--bogus", s(&img)])), 1);
    assert_eq!(
        code(&luks2(&[
            "format",
            "--key-file",
            s(&k0),
            "--key-size",
            "12",
            s(&plain)
        ])),
        1
    );
    assert_eq!(
        code(&luks2(&[
            "format",
            "--key-file",
            s(&k0),
            "--pbkdf",
            "scrypt",
            s(&plain)
        ])),
        1
    );
    // Formatting over a LUKS header is refused (busy).
    assert_eq!(code(&luks2(&f)), 5);
    assert_eq!(code(&luks2(&["kill-slot", "9", s(&img)])), 1);

    // add-key (stdin for the existing key), change-key, remove-key, kill-slot.
    let mut a = vec![
        "add-key",
        "--key-file",
        "-",
        "--new-key-file",
        s(&k1),
        "--key-slot",
        "4",
    ];
    a.extend(FAST);
    a.push(s(&img));
    let o = luks2_stdin(&a, b"zero");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(
        code(&t.cs(&[
            "open",
            "--test-passphrase",
            "--key-slot",
            "4",
            "--key-file",
            s(&k1),
            s(&img)
        ])),
        0
    );
    let mut c = vec!["change-key", "--key-file", s(&k1), "--new-key-file", s(&k2)];
    c.extend(FAST);
    c.push(s(&img));
    ok(&c);
    assert_eq!(
        code(&t.cs(&["open", "--test-passphrase", "--key-file", s(&k1), s(&img)])),
        2
    );
    assert_eq!(
        code(&t.cs(&[
            "open",
            "--test-passphrase",
            "--key-slot",
            "4",
            "--key-file",
            s(&k2),
            s(&img)
        ])),
        0
    );
    ok(&["remove-key", "--key-file", s(&k2), s(&img)]);
    assert_eq!(
        code(&t.cs(&["open", "--test-passphrase", "--key-file", s(&k2), s(&img)])),
        2
    );
    assert_eq!(
        code(&luks2(&["remove-key", "--key-file", s(&wrong), s(&img)])),
        2
    );
    ok(&["kill-slot", "0", s(&img)]);
    // No keyslot left: cryptsetup and we both say exit 1.
    assert_eq!(
        code(&t.cs(&["open", "--test-passphrase", "--key-file", s(&k0), s(&img)])),
        1
    );
    assert_eq!(
        code(&luks2(&["test-passphrase", "--key-file", s(&k0), s(&img)])),
        1
    );
}

#[test]
fn tokens_backup_restore_repair_erase() {
    let Some(t) = T::new() else { return };
    let key = t.file("k", b"pw");
    let img = t.img("t.img", 20 * MIB);
    let mut f = vec!["format", "--key-file", s(&key)];
    f.extend(FAST);
    f.push(s(&img));
    ok(&f);

    let tok = t.file(
        "tok.json",
        br#"{"type":"onmetal-kms","keyslots":[],"ref":"vault:k1"}"#,
    );
    assert_eq!(
        ok(&[
            "token",
            "add",
            "--json-file",
            s(&tok),
            "--key-slot",
            "0",
            s(&img)
        ])
        .trim(),
        "0"
    );
    let ours = ok(&["token", "export", "0", s(&img)]);
    let theirs = t.cs_ok(&["token", "export", "--token-id", "0", s(&img)]);
    assert_eq!(ours.trim(), theirs.trim());
    let o = luks2_stdin(
        &["token", "add", "--json-file", "-", s(&img)],
        br#"{"type":"luks2-evil","keyslots":[]}"#,
    );
    assert_eq!(code(&o), 1, "reserved luks2- prefix");
    ok(&["token", "remove", "0", s(&img)]);
    assert!(
        !t.cs(&["token", "export", "--token-id", "0", s(&img)])
            .status
            .success()
    );

    // Backup; cryptsetup restores our backup and we restore cryptsetup's.
    let bak = t.dir.path().join("ours.bak");
    ok(&["header-backup", "--header-backup-file", s(&bak), s(&img)]);
    let cs_bak = t.dir.path().join("theirs.bak");
    t.cs_ok(&[
        "luksHeaderBackup",
        "--header-backup-file",
        s(&cs_bak),
        s(&img),
    ]);
    assert_eq!(
        std::fs::read(&bak).unwrap(),
        std::fs::read(&cs_bak).unwrap()
    );
    ok(&["kill-slot", "0", s(&img)]);
    ok(&[
        "header-restore",
        "--header-backup-file",
        s(&cs_bak),
        s(&img),
    ]);
    assert_eq!(
        code(&luks2(&["test-passphrase", "--key-file", s(&key), s(&img)])),
        0
    );
    ok(&["kill-slot", "0", s(&img)]);
    t.cs_ok(&[
        "luksHeaderRestore",
        "--batch-mode",
        "--header-backup-file",
        s(&bak),
        s(&img),
    ]);
    assert_eq!(
        code(&t.cs(&["open", "--test-passphrase", "--key-file", s(&key), s(&img)])),
        0
    );

    // Repair a broken secondary copy; cryptsetup then sees two good copies (no repair warning).
    {
        use std::os::unix::fs::FileExt;
        let file = std::fs::OpenOptions::new().write(true).open(&img).unwrap();
        file.write_all_at(b"garbage", 16384 + 4096 + 10).unwrap();
    }
    ok(&["repair", s(&img)]);
    let o = t.cs(&["luksDump", "--debug", s(&img)]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        !text.contains("Header corrupted") && !text.contains("will be repaired"),
        "{text}"
    );

    ok(&["erase", s(&img)]);
    assert_eq!(
        code(&t.cs(&["open", "--test-passphrase", "--key-file", s(&key), s(&img)])),
        1
    );
}

/// `luks2 open` uses the cryptsetup activation policy: a volume with the null cipher or ECB mode
/// is refused (exit 1) before any passphrase is tried or device-mapper is touched, so this runs
/// on a plain image file; a cipher the policy accepts gets past the policy (and then fails here
/// only for want of a block device or device-mapper).
#[test]
fn open_refuses_ecb_by_policy() {
    let Some(t) = T::new() else { return };
    let key = t.file("key", b"pw");
    for (cipher, refused) in [("aes-ecb", true), ("aes-cbc-plain64", false)] {
        let img = t.img(&format!("{cipher}.img"), 32 * MIB);
        let mut args = vec![
            "luksFormat",
            "-q",
            "--type",
            "luks2",
            "--cipher",
            cipher,
            "--key-size",
            "256",
            // A keyslot cipher we can unlock: only the data segment's cipher is in question.
            "--keyslot-cipher",
            "aes-xts-plain64",
            "--keyslot-key-size",
            "512",
            "--key-file",
            s(&key),
        ];
        args.extend(FAST);
        args.push(s(&img));
        t.cs_ok(&args);
        let o = luks2(&["open", "--key-file", s(&key), s(&img), "ecb_delme"]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(
            err.contains("activation policy refuses this volume"),
            refused,
            "{cipher}: {err}"
        );
        if refused {
            assert_eq!(code(&o), 1, "{cipher}: {err}");
            assert!(err.contains("ECB"), "{cipher}: {err}");
        } else {
            assert_ne!(code(&o), 0, "a plain file cannot be activated");
        }
    }
}

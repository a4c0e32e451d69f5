//! The `luks2` command where it used to differ from cryptsetup 2.6 (issue 9, items 7 and 9),
//! each case run through both on the same image file: ambiguous signatures.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const MIB: u64 = 1024 * 1024;
const FAST: [&str; 4] = ["--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000"];
const AMBIGUOUS: &str = "Device contains ambiguous signatures, cannot auto-recover LUKS2.";

fn tool(path: &str, package: &str) -> Option<PathBuf> {
    let p = PathBuf::from(path);
    if p.is_file() {
        return Some(p);
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{path} is required in CI (Debian package {package}) but was not found");
    }
    eprintln!("SKIP: {path} not found; install {package}");
    None
}

struct T {
    dir: tempfile::TempDir,
    cs: PathBuf,
}

impl T {
    fn new() -> Option<T> {
        Some(T {
            dir: tempfile::tempdir().unwrap(),
            cs: tool("/usr/sbin/cryptsetup", "cryptsetup-bin")?,
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
        Command::new(&self.cs)
            .args(args)
            .env("LC_ALL", "C")
            .output()
            .unwrap()
    }
    fn cs_ok(&self, args: &[&str]) -> String {
        let o = self.cs(args);
        assert!(o.status.success(), "cryptsetup {args:?}: {}", err(&o));
        String::from_utf8(o.stdout).unwrap()
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

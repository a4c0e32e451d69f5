//! cryptsetup 2.6, the reference: finding it, running it, making images with it ([`Image`]),
//! scratch directories of images and key files with volume-key dumps ([`Scratch`]).
//!
//! Tests that need cryptsetup call [`cryptsetup`] first: when it is missing they print a skip
//! note and return, except under CI (`CI=true`), where a missing prerequisite is a failure.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The passphrase written to key files by [`Image::format`].
pub const PASSPHRASE: &[u8] = b"correct horse battery staple";

/// The cryptsetup binary, or `None` (after printing why) when it is not installed and we are not
/// in CI. Panics in CI if it is missing.
pub fn cryptsetup() -> Option<PathBuf> {
    let candidates = [
        "/usr/sbin/cryptsetup",
        "/sbin/cryptsetup",
        "/usr/bin/cryptsetup",
    ];
    let found = candidates
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .or_else(|| {
            std::env::var_os("PATH").and_then(|paths| {
                std::env::split_paths(&paths)
                    .map(|d| d.join("cryptsetup"))
                    .find(|p| p.is_file())
            })
        });
    if found.is_none() {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("cryptsetup is required in CI (install cryptsetup-bin) but was not found");
        }
        eprintln!("SKIP: cryptsetup not found; install cryptsetup-bin to run this test");
    }
    found
}

/// Runs cryptsetup with `args`, returning its output (never panics on a non-zero exit).
pub fn run(cs: &Path, args: &[&str]) -> Output {
    Command::new(cs)
        .args(args)
        .env("LC_ALL", "C")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", cs.display()))
}

/// Runs cryptsetup and panics with its stderr if it fails.
pub fn run_ok(cs: &Path, args: &[&str]) -> String {
    let out = run(cs, args);
    assert!(
        out.status.success(),
        "cryptsetup {args:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A sparse image file in a temporary directory, with a key file next to it.
pub struct Image {
    /// The temporary directory (deleted on drop).
    pub dir: tempfile::TempDir,
    /// The image file.
    pub path: PathBuf,
    /// The key file holding [`PASSPHRASE`].
    pub key_file: PathBuf,
}

impl Image {
    /// A sparse file of `size` bytes.
    pub fn sparse(size: u64) -> Image {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("disk.img");
        let f = std::fs::File::create(&path).expect("create image");
        f.set_len(size).expect("size image");
        let key_file = dir.path().join("key");
        std::fs::write(&key_file, PASSPHRASE).expect("write key file");
        Image {
            dir,
            path,
            key_file,
        }
    }

    /// A sparse file of `size` bytes formatted by `cryptsetup luksFormat --type luks2` with a fast
    /// PBKDF2 keyslot and `extra` options.
    pub fn format(cs: &Path, size: u64, extra: &[&str]) -> Image {
        let img = Image::sparse(size);
        let mut args = vec![
            "luksFormat",
            "--type",
            "luks2",
            "--batch-mode",
            "--pbkdf",
            "pbkdf2",
            "--pbkdf-force-iterations",
            "1000",
            "--key-file",
        ];
        let key = img.key_file.to_str().expect("utf-8 path").to_owned();
        let path = img.path.to_str().expect("utf-8 path").to_owned();
        args.push(&key);
        args.extend_from_slice(extra);
        args.push(&path);
        run_ok(cs, &args);
        img
    }

    /// A 4 MiB image formatted as [`Image::format`] with a 1 MiB keyslots area, data at 2 MiB
    /// (sector 4096), a 256-bit key and `extra` options: small enough to mutate and dump quickly.
    pub fn small(cs: &Path, extra: &[&str]) -> Image {
        let mut args = vec![
            "--luks2-keyslots-size",
            "1048576",
            "--offset",
            "4096",
            "--key-size",
            "256",
        ];
        args.extend_from_slice(extra);
        Image::format(cs, 4 * 1024 * 1024, &args)
    }

    /// Imports token `json` with `cryptsetup token import` (from a file `t.json` next to the
    /// image); panics if cryptsetup refuses it.
    pub fn import_token(&self, cs: &Path, json: &str) {
        let tok = self.dir.path().join("t.json");
        std::fs::write(&tok, json).expect("write token file");
        run_ok(
            cs,
            &[
                "token",
                "import",
                "--json-file",
                tok.to_str().expect("utf-8 path"),
                self.p(),
            ],
        );
    }

    /// The image path as a string.
    pub fn p(&self) -> &str {
        self.path.to_str().expect("utf-8 path")
    }

    /// The key file path as a string.
    pub fn k(&self) -> &str {
        self.key_file.to_str().expect("utf-8 path")
    }

    /// Opens the image read-write.
    pub fn open_rw(&self) -> std::fs::File {
        std::fs::File::options()
            .read(true)
            .write(true)
            .open(&self.path)
            .expect("open image")
    }

    /// Reads the image.
    pub fn bytes(&self) -> Vec<u8> {
        std::fs::read(&self.path).expect("read image")
    }
}

/// A scratch directory with sparse images and key files.
pub struct Scratch {
    pub dir: tempfile::TempDir,
    pub cs: PathBuf,
}

impl Scratch {
    pub fn new(cs: &Path) -> Self {
        Scratch {
            dir: tempfile::tempdir().unwrap(),
            cs: cs.to_owned(),
        }
    }

    /// A sparse file of `size` bytes.
    pub fn image(&self, name: &str, size: u64) -> PathBuf {
        let p = self.dir.path().join(name);
        let f = File::create(&p).unwrap();
        f.set_len(size).unwrap();
        p
    }

    /// A key file with these exact bytes (cryptsetup reads the whole file, newlines included).
    pub fn key(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Runs cryptsetup (never panics on failure), as [`run`].
    pub fn run(&self, args: &[&str]) -> Output {
        run(&self.cs, args)
    }

    /// Runs cryptsetup and panics with its stderr on failure; returns stdout, as [`run_ok`].
    pub fn ok(&self, args: &[&str]) -> String {
        run_ok(&self.cs, args)
    }

    /// The volume key cryptsetup recovers from `img` with key file `key` (optionally from one
    /// keyslot).
    pub fn volume_key(&self, img: &Path, key: &Path, slot: Option<u32>) -> Vec<u8> {
        let vkf = self.dir.path().join(format!(
            "vk-{}-{}",
            img.file_name().unwrap().to_string_lossy(),
            std::process::id()
        ));
        let _ = std::fs::remove_file(&vkf);
        let slot_s = slot.map(|s| s.to_string());
        let mut args = vec![
            "luksDump",
            "--dump-volume-key",
            "--volume-key-file",
            vkf.to_str().unwrap(),
            "--batch-mode",
            "--key-file",
            key.to_str().unwrap(),
        ];
        if let Some(s) = &slot_s {
            args.extend(["--key-slot", s.as_str()]);
        }
        args.push(img.to_str().unwrap());
        self.ok(&args);
        let vk = std::fs::read(&vkf).unwrap();
        std::fs::remove_file(&vkf).unwrap();
        vk
    }

    /// `cryptsetup open --test-passphrase`: exit code (0 ok, 2 bad passphrase...).
    pub fn test_passphrase(&self, img: &Path, key: &Path, slot: Option<u32>) -> i32 {
        let slot_s = slot.map(|s| s.to_string());
        let mut args = vec![
            "open",
            "--test-passphrase",
            "--batch-mode",
            "--key-file",
            key.to_str().unwrap(),
        ];
        if let Some(s) = &slot_s {
            args.extend(["--key-slot", s.as_str()]);
        }
        args.push(img.to_str().unwrap());
        self.run(&args).status.code().unwrap_or(-1)
    }
}

//! Helpers shared by the integration tests: finding the reference `cryptsetup`, running it,
//! making images with it ([`Image`]), scratch directories of images and key files with volume-key
//! dumps ([`Scratch`], for the `compat_*.rs` tests), awkward passphrases, and running a list of
//! cases on a small worker pool ([`run_cases`]).
//!
//! Tests that need cryptsetup call [`cryptsetup`] first: when it is missing they print a skip
//! note and return, except under CI (`CI=true`), where a missing prerequisite is a failure.

#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Mutex;

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

/// Opens an image read-write.
pub fn open_rw(p: &Path) -> File {
    OpenOptions::new().read(true).write(true).open(p).unwrap()
}

/// A passphrase with awkward bytes (newline, NUL, high bytes), distinct per `n`.
pub fn passphrase(n: u32) -> Vec<u8> {
    let mut v = format!("pass {n}\n").into_bytes();
    v.extend_from_slice(&[0, 0xff, 0x80, b'\t', b'x']);
    v.extend_from_slice(&n.to_le_bytes());
    v
}

/// Runs `f` over `cases` on 2 worker threads; collects failures and panics listing them all.
pub fn run_cases<T: Sync + std::fmt::Debug>(cases: &[T], f: impl Fn(usize, &T) + Sync) {
    let next = Mutex::new(0usize);
    let failures = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| {
                loop {
                    let i = {
                        let mut n = next.lock().unwrap();
                        let i = *n;
                        *n += 1;
                        i
                    };
                    let Some(case) = cases.get(i) else { break };
                    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(i, case)));
                    if let Err(e) = r {
                        let msg = e
                            .downcast_ref::<String>()
                            .cloned()
                            .or_else(|| e.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                            .unwrap_or_default();
                        failures
                            .lock()
                            .unwrap()
                            .push(format!("case {i} {case:?}: {msg}"));
                    }
                }
            });
        }
    });
    let failures = failures.into_inner().unwrap();
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

pub fn u64_of(v: &serde_json::Value) -> Option<u64> {
    v.as_str().and_then(luks2::metadata::parse_u64_field)
}

/// Numbers as f64: json-c prints a double parsed from `2e+` as `2`, which reads back as an
/// integer; the value is what must agree, not its spelling.
pub fn numbers_as_f64(v: &serde_json::Value) -> serde_json::Value {
    match v {
        serde_json::Value::Number(n) => serde_json::json!(n.as_f64()),
        serde_json::Value::Array(a) => {
            serde_json::Value::Array(a.iter().map(numbers_as_f64).collect())
        }
        serde_json::Value::Object(m) => serde_json::Value::Object(
            m.iter()
                .map(|(k, v)| (k.clone(), numbers_as_f64(v)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// What both implementations must agree on after parsing: entry numbers, token contents,
/// segment placement, digest bindings, config sizes, flags and requirements.
pub fn projection(v: &serde_json::Value) -> serde_json::Value {
    let keys = |s: &str| {
        let mut k: Vec<String> = v[s]
            .as_object()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
        k.sort();
        k
    };
    let segments: serde_json::Map<String, serde_json::Value> = v["segments"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, s)| {
                    (
                        k.clone(),
                        serde_json::json!([
                            s["type"],
                            u64_of(&s["offset"]),
                            s["size"].as_str().map(|z| if z == "dynamic" {
                                None
                            } else {
                                u64_of(&s["size"])
                            })
                        ]),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let digests: serde_json::Map<String, serde_json::Value> = v["digests"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, d)| {
                    (
                        k.clone(),
                        serde_json::json!([d["type"], d["keyslots"], d["segments"]]),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    serde_json::json!({
        "keyslots": keys("keyslots"),
        "tokens": numbers_as_f64(&v["tokens"]),
        "segments": segments,
        "digests": digests,
        "config": [u64_of(&v["config"]["json_size"]), u64_of(&v["config"]["keyslots_size"]),
                   v["config"]["flags"], v["config"]["requirements"]["mandatory"]],
    })
}

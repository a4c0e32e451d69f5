//! Helpers shared by the integration tests: finding the reference `cryptsetup`, making images
//! with it, running it.
//!
//! Tests that need cryptsetup call [`cryptsetup`] first: when it is missing they print a skip
//! note and return, except under CI (`CI=true`), where a missing prerequisite is a failure.

#![allow(dead_code, unreachable_pub)]

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

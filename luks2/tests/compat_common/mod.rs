//! Helpers for the cryptsetup compatibility tests (`compat_*.rs`): finding cryptsetup, sparse
//! images in a temporary directory, key files, running cryptsetup, dumping its volume key, and
//! running a list of cases on a small worker pool (2 threads: the CI machines have 2 cores).

#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Mutex;

/// The cryptsetup binary, or `None` after a skip note; in CI (`CI=true`) a missing cryptsetup
/// is a failure.
pub fn cryptsetup() -> Option<PathBuf> {
    let found = [
        "/usr/sbin/cryptsetup",
        "/sbin/cryptsetup",
        "/usr/bin/cryptsetup",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.is_file());
    if found.is_none() {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!(
                "cryptsetup is required in CI (Debian package cryptsetup-bin) but was not found"
            );
        }
        eprintln!(
            "SKIP: cryptsetup not found; install cryptsetup-bin to run the compatibility tests"
        );
    }
    found
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

    /// Runs cryptsetup (never panics on failure).
    pub fn run(&self, args: &[&str]) -> Output {
        Command::new(&self.cs)
            .args(args)
            .env("LC_ALL", "C")
            .output()
            .unwrap_or_else(|e| panic!("cannot run cryptsetup: {e}"))
    }

    /// Runs cryptsetup and panics with its stderr on failure; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "cryptsetup {args:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
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

//! Small fixtures of the format and compatibility tests: awkward passphrases, images opened
//! read-write, and a list of cases run on a small worker pool ([`run_cases`]) that reports every
//! failing case, not only the first.

use std::fs::{File, OpenOptions};
use std::path::Path;
use std::sync::Mutex;

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

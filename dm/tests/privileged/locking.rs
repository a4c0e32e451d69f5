//! Privileged (VM) test: while our header writer holds cryptsetup's lock file
//! `/run/cryptsetup/L_<major>:<minor>` (`luks2::lock`) on a block device, stock cryptsetup
//! waits. The other direction (a cryptsetup lock holder keeps the `luks2` command out) is
//! `luks2-cli/tests/privileged/locking.rs`. Run by `scripts/vm-test`.
#![allow(missing_docs, clippy::unwrap_used)]

use std::fs::OpenOptions;
use std::process::{Command, Stdio};

use testkit::vm::*;

/// While our writer holds the lock, `cryptsetup luksDump` (which takes cryptsetup's read lock)
/// waits; once we release it, it runs, and the lock file is gone again.
#[test]
fn cryptsetup_waits_for_our_writer() {
    require_privileged!();
    let lo = LoopDev::new(32);
    cryptsetup_format(lo.path(), 512, 512, Kdf::Pbkdf2);
    let lock = cryptsetup_lock_file(lo.path());
    let mut dev = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&lo.dev)
        .unwrap();
    luks2::io::with_exclusive_lock(&mut dev, |_| {
        assert!(lock.exists(), "{} not created", lock.display());
        // luksDump blocks on the lock: `timeout` ends it (exit 124). Without our lock it
        // finishes in well under a second.
        let out = Command::new("timeout")
            .args(["5", "cryptsetup", "luksDump", lo.path()])
            .stdout(Stdio::null())
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(124),
            "cryptsetup luksDump did not wait for our lock: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(())
    })
    .unwrap();
    assert!(!lock.exists(), "lock file left behind after release");
    run("cryptsetup", &["luksDump", lo.path()]);
}

//! The `luks2` command and a cryptsetup lock holder on a block device: cryptsetup's lock file
//! `/run/cryptsetup/L_<major>:<minor>` (`luks2::lock`) keeps our writer out until it is free
//! (the library side: `dm/tests/privileged/locking.rs`).

use std::process::Command;
use std::time::{Duration, Instant};

use testkit::vm::*;

const LUKS2: &str = env!("CARGO_BIN_EXE_luks2");

/// While a cryptsetup-protocol holder keeps the lock (util-linux `flock` on the same file, as
/// libcryptsetup does), `luks2 add-key` gives up after its retry budget with exit 5 and writes
/// nothing; after the holder leaves, it succeeds and cryptsetup opens the new passphrase.
#[test]
fn our_writer_waits_for_a_cryptsetup_lock_holder() {
    require_privileged!();
    let lo = LoopDev::new(32);
    cryptsetup_format(lo.path(), 512, 512, Kdf::Pbkdf2);
    let lock = cryptsetup_lock_file(lo.path());
    std::fs::create_dir_all(luks2::lock::CRYPTSETUP_LOCK_DIR).unwrap();
    let before = read_at(&lo.dev, 0, 32 << 10);
    let mut holder = Command::new("flock")
        // --no-fork: `sleep` is the holder itself, so killing it releases the lock.
        .args([
            "--exclusive",
            "--no-fork",
            lock.to_str().unwrap(),
            "sleep",
            "30",
        ])
        .spawn()
        .unwrap();
    // Wait until the holder has the lock.
    let start = Instant::now();
    while !lock.exists() || flock_free(&lock) {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "flock never took the lock"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let dir = tempfile::tempdir().unwrap();
    let old = dir.path().join("old");
    let new = dir.path().join("new");
    std::fs::write(&old, PASSPHRASE).unwrap();
    std::fs::write(&new, b"second passphrase").unwrap();
    let add = |slot: &str| {
        Command::new(LUKS2)
            .args(["add-key", "--key-file", old.to_str().unwrap()])
            .args(["--new-key-file", new.to_str().unwrap(), "--key-slot", slot])
            .args(["--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000"])
            .arg(lo.path())
            .output()
            .unwrap()
    };
    let out = add("3");
    assert_eq!(
        out.status.code(),
        Some(5),
        "add-key under a held lock: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("lock"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(read_at(&lo.dev, 0, 32 << 10), before, "header changed");
    holder.kill().unwrap();
    holder.wait().unwrap();
    let out = add("3");
    assert!(
        out.status.success(),
        "add-key after release: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    run_with_stdin(
        "cryptsetup",
        &[
            "open",
            "--test-passphrase",
            "--key-slot",
            "3",
            "--key-file",
            "-",
            lo.path(),
        ],
        Some(b"second passphrase"),
    );
}

/// Can we take (and at once drop) an exclusive flock on `path`?
fn flock_free(path: &std::path::Path) -> bool {
    let f = std::fs::File::open(path).unwrap();
    match f.try_lock() {
        Ok(()) => {
            f.unlock().unwrap();
            true
        }
        Err(_) => false,
    }
}

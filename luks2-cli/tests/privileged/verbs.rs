//! Privileged (VM) tests of the `luks2` command's device-mapper verbs against cryptsetup:
//! `luks2 format` + `luks2 open` data that `cryptsetup open` reads and the reverse (512/4096
//! sectors, 256/512-bit keys, PBKDF2 and Argon2id); `status`, `resize` (from a process with its
//! own session keyring, then `resize2fs`), busy `close`, `--readonly`, `--allow-discards`, the
//! `--perf-*` flags, and exit codes. Run by `scripts/vm-test`.
#![allow(missing_docs, clippy::unwrap_used)]

use std::path::Path;
use std::process::Output;

use dm::DmName;
use testkit::vm::*;

const LUKS2: &str = env!("CARGO_BIN_EXE_luks2");

/// Runs `luks2 ARGS` with `stdin`; returns the output whatever the status.
fn luks2(args: &[&str], stdin: Option<&[u8]>) -> Output {
    try_run(LUKS2, args, stdin)
}

fn luks2_ok(args: &[&str], stdin: Option<&[u8]>) -> String {
    let out = luks2(args, stdin);
    assert!(
        out.status.success(),
        "luks2 {args:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn code(out: &Output) -> i32 {
    out.status.code().unwrap_or(-1)
}

fn kdf_args(kdf: Kdf) -> Vec<&'static str> {
    match kdf {
        Kdf::Pbkdf2 => vec!["--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000"],
        Kdf::Argon2id => vec![
            "--pbkdf",
            "argon2id",
            "--pbkdf-force-iterations",
            "4",
            "--pbkdf-memory",
            "8192",
            "--pbkdf-parallel",
            "1",
        ],
    }
}

/// `luks2 format` with the test passphrase.
fn our_format(dev: &str, key_bits: u32, sector_size: u32, kdf: Kdf) {
    let bits = key_bits.to_string();
    let sector = sector_size.to_string();
    let mut args = vec![
        "format",
        "--key-file",
        "-",
        "--key-size",
        &bits,
        "--sector-size",
        &sector,
    ];
    args.extend(kdf_args(kdf));
    args.push(dev);
    luks2_ok(&args, Some(PASSPHRASE));
}

fn our_open(dev: &str, name: &DmName, extra: &[&str]) -> Output {
    let mut args = vec!["open", "--key-file", "-"];
    args.extend_from_slice(extra);
    args.extend([dev, name.as_str()]);
    luks2(&args, Some(PASSPHRASE))
}

fn our_open_ok(dev: &str, name: &DmName, extra: &[&str]) {
    let out = our_open(dev, name, extra);
    assert!(
        out.status.success(),
        "luks2 open failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(is_block_device(&dm::mapper_path(name)));
}

fn regions(size: u64) -> [u64; 2] {
    [0, size - (1 << 20)]
}

/// Ours formats and writes, cryptsetup reads and writes, we read.
fn ours_then_cryptsetup(key_bits: u32, sector_size: u32, kdf: Kdf) {
    let lo = LoopDev::new(48);
    our_format(lo.path(), key_bits, sector_size, kdf);
    let name = unique_name("cli");
    let _g = MappingGuard(name.clone());
    let path = dm::mapper_path(&name);

    our_open_ok(lo.path(), &name, &[]);
    let status = luks2_ok(&["status", name.as_str()], None);
    for want in [
        "is active".to_owned(),
        "type:    LUKS2".to_owned(),
        format!("keysize: {key_bits} bits"),
        "key location: keyring".to_owned(),
        format!("sector size:  {sector_size}"),
        format!("device:  {}", lo.path()),
        "mode:    read/write".to_owned(),
    ] {
        assert!(
            status.contains(&want),
            "luks2 status lacks {want:?}:\n{status}"
        );
    }
    let size = blockdev_size(&path);
    for (i, off) in regions(size).into_iter().enumerate() {
        write_at(&path, off, &pattern(20 + i as u64, 1 << 20));
    }
    luks2_ok(&["close", name.as_str()], None);
    assert!(!mapping_exists(&name));

    cryptsetup_open(lo.path(), &name, &[]);
    assert_eq!(blockdev_size(&path), size);
    for (i, off) in regions(size).into_iter().enumerate() {
        assert!(
            read_at(&path, off, 1 << 20) == pattern(20 + i as u64, 1 << 20),
            "cryptsetup reads what we wrote ({key_bits}-bit, {sector_size}, {kdf:?})"
        );
        write_at(&path, off, &pattern(30 + i as u64, 1 << 20));
    }
    run("cryptsetup", &["close", name.as_str()]);

    our_open_ok(lo.path(), &name, &[]);
    for (i, off) in regions(size).into_iter().enumerate() {
        assert!(
            read_at(&path, off, 1 << 20) == pattern(30 + i as u64, 1 << 20),
            "we read what cryptsetup wrote ({key_bits}-bit, {sector_size}, {kdf:?})"
        );
    }
    luks2_ok(&["close", name.as_str()], None);
}

#[test]
fn vm_cli_512_sectors_256_bit_pbkdf2() {
    require_privileged!();
    ours_then_cryptsetup(256, 512, Kdf::Pbkdf2);
}

#[test]
fn vm_cli_4096_sectors_512_bit_argon2id() {
    require_privileged!();
    ours_then_cryptsetup(512, 4096, Kdf::Argon2id);
}

#[test]
fn vm_cli_4096_sectors_256_bit_argon2id() {
    require_privileged!();
    ours_then_cryptsetup(256, 4096, Kdf::Argon2id);
}

#[test]
fn vm_cli_512_sectors_512_bit_pbkdf2() {
    require_privileged!();
    ours_then_cryptsetup(512, 512, Kdf::Pbkdf2);
}

/// cryptsetup formats and writes (Argon2id keyslot); `luks2 open` reads.
#[test]
fn vm_cli_opens_a_cryptsetup_volume() {
    require_privileged!();
    let lo = LoopDev::new(48);
    cryptsetup_format(lo.path(), 512, 4096, Kdf::Argon2id);
    let name = unique_name("clics");
    let _g = MappingGuard(name.clone());
    let path = dm::mapper_path(&name);
    cryptsetup_open(lo.path(), &name, &[]);
    write_at(&path, 4096, &pattern(40, 1 << 20));
    run("cryptsetup", &["close", name.as_str()]);

    our_open_ok(lo.path(), &name, &[]);
    assert!(read_at(&path, 4096, 1 << 20) == pattern(40, 1 << 20));
    // A wrong passphrase: exit 2, nothing activated.
    luks2_ok(&["close", name.as_str()], None);
    let out = luks2(
        &["open", "--key-file", "-", lo.path(), name.as_str()],
        Some(b"wrong"),
    );
    assert_eq!(code(&out), 2, "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!mapping_exists(&name));
}

/// Resize from another process with a fresh session keyring (as in a container), then the
/// filesystem; a busy close fails with 5 and the mapping stays; exit codes of unknown names.
#[test]
fn vm_cli_resize_busy_close_and_status() {
    require_privileged!();
    let lo = LoopDev::new(48);
    our_format(lo.path(), 512, 4096, Kdf::Pbkdf2);
    let name = unique_name("clirsz");
    let _g = MappingGuard(name.clone());
    let path = dm::mapper_path(&name);
    our_open_ok(lo.path(), &name, &[]);
    run("mkfs.ext4", &["-q", path.to_str().unwrap()]);
    let m = Mount::new(&path, "ext4");
    std::fs::write(m.dir.join("keep"), b"kept").unwrap();
    let before = blockdev_size(&path);

    lo.grow(96);
    run("keyctl", &["session", "-", LUKS2, "resize", name.as_str()]);
    let after = blockdev_size(&path);
    assert_eq!(
        after,
        before + (48 << 20),
        "the mapping grew with the device"
    );
    run("resize2fs", &[path.to_str().unwrap()]);
    let df = run("df", &["-B1", "--output=size", m.dir.to_str().unwrap()]);
    let fs_size: u64 = df.lines().nth(1).unwrap().trim().parse().unwrap();
    assert!(
        fs_size > before,
        "the filesystem grew: {fs_size} > {before}"
    );

    let out = luks2(&["close", name.as_str()], None);
    assert_eq!(
        code(&out),
        5,
        "busy close: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(mapping_exists(&name), "the mapping stays");
    let status = luks2_ok(&["status", name.as_str()], None);
    assert!(status.contains("is active and is in use"), "{status}");
    assert_eq!(std::fs::read(m.dir.join("keep")).unwrap(), b"kept");
    m.unmount();
    luks2_ok(&["close", name.as_str()], None);

    let out = luks2(&["status", name.as_str()], None);
    assert_eq!(code(&out), 4);
    assert!(String::from_utf8_lossy(&out.stdout).contains("is inactive"));
    assert_eq!(code(&luks2(&["close", name.as_str()], None)), 4);
    assert_eq!(code(&luks2(&["resize", name.as_str()], None)), 4);
    assert_eq!(code(&luks2(&["close", "bad/name"], None)), 1);
}

/// `--readonly`, `--allow-discards`, `--perf-no_read_workqueue`, `--perf-no_write_workqueue`.
#[test]
fn vm_cli_open_options() {
    require_privileged!();
    let lo = LoopDev::new(48);
    our_format(lo.path(), 256, 4096, Kdf::Pbkdf2);
    let name = unique_name("cliopt");
    let _g = MappingGuard(name.clone());
    let path = dm::mapper_path(&name);

    our_open_ok(lo.path(), &name, &["--readonly"]);
    assert_eq!(
        run("blockdev", &["--getro", path.to_str().unwrap()]).trim(),
        "1"
    );
    let status = luks2_ok(&["status", name.as_str()], None);
    assert!(status.contains("mode:    readonly"), "{status}");
    // Opening an active name again: busy (5).
    assert_eq!(code(&our_open(lo.path(), &name, &[])), 5);
    luks2_ok(&["close", name.as_str()], None);

    our_open_ok(
        lo.path(),
        &name,
        &[
            "--allow-discards",
            "--perf-no_read_workqueue",
            "--perf-no_write_workqueue",
        ],
    );
    let table = dmsetup_table_showkeys(&name);
    for opt in ["allow_discards", "no_read_workqueue", "no_write_workqueue"] {
        assert!(table.contains(opt), "table lacks {opt}: {table}");
    }
    assert!(
        table.contains(":32:logon:onmetal-csi:CRYPT-LUKS2-"),
        "{table}"
    );
    write_at(&path, 0, &pattern(50, 4 << 20));
    let full = lo.allocated();
    run("blkdiscard", &[path.to_str().unwrap()]);
    assert!(
        lo.allocated() + (2 << 20) < full,
        "discards reached the file"
    );
    let cs = run("cryptsetup", &["status", name.as_str()]);
    assert!(cs.contains("discards"), "{cs}");
    luks2_ok(&["close", name.as_str()], None);
    assert!(!Path::new(&path).exists());
}

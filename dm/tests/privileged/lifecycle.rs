//! Privileged (VM) tests of a mapping's life: resize without the key (from another process with
//! its own session keyring), busy close, read-only, discards, header and caller flags, status and
//! list, and clean failure. Run by `scripts/vm-test`.
#![allow(missing_docs, clippy::unwrap_used)]

use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;
use std::time::Instant;

use dm::{ActivateOptions, CryptFlags, CryptVolume, DeviceMapper, DmName, Error, SegmentSize};
use testkit::vm::*;

/// A cryptsetup-formatted loop device with its volume key and segment description.
struct Fixture {
    lo: LoopDev,
    key: Vec<u8>,
    volume: CryptVolume,
}

fn fixture(mib: u64, sector_size: u32) -> Fixture {
    let lo = LoopDev::new(mib);
    cryptsetup_format(lo.path(), 512, sector_size, Kdf::Pbkdf2);
    let key = cryptsetup_volume_key(lo.path());
    let volume = cryptsetup_volume(lo.path());
    Fixture { lo, key, volume }
}

fn activate(f: &Fixture, name: &DmName, options: ActivateOptions) -> dm::MappingStatus {
    DeviceMapper::new()
        .unwrap()
        .activate(name, &f.lo.handle(), &f.volume, &f.key, &options)
        .unwrap()
}

fn key_description(name: &DmName, volume: &CryptVolume) -> String {
    format!(
        "onmetal-csi:CRYPT-LUKS2-{}-{}",
        volume.uuid.simple(),
        name.as_str()
    )
}

fn fs_bytes(dir: &Path) -> u64 {
    let out = run("stat", &["-f", "-c", "%b %S", dir.to_str().unwrap()]);
    let mut it = out.split_whitespace().map(|x| x.parse::<u64>().unwrap());
    it.next().unwrap() * it.next().unwrap()
}

/// Resize in a child process that has a fresh anonymous session keyring (like a container): it
/// must find the key in the user keyring without being given it.
#[test]
#[ignore = "helper run by vm_resize_grows_the_mapping_then_the_filesystem in a child process"]
fn child_resize_helper() {
    let Ok(name) = std::env::var("DM_VM_TEST_RESIZE") else {
        return;
    };
    let size = DeviceMapper::new()
        .unwrap()
        .resize(&DmName::new(&name).unwrap())
        .unwrap();
    println!("RESIZED-TO={}", size.0);
}

fn resize_in_fresh_session(name: &DmName) -> String {
    let exe = std::env::current_exe().unwrap();
    // The helper's full name in the binary (module path without the crate), or --exact matches
    // nothing and the child runs no test.
    let module = module_path!().split_once("::").map_or("", |(_, rest)| rest);
    let helper = format!("{module}::child_resize_helper");
    let out = std::process::Command::new("keyctl")
        .args(["session", "-"])
        .arg(&exe)
        .args(["--exact", helper.as_str(), "--ignored", "--nocapture"])
        .env("DM_VM_TEST_RESIZE", name.as_str())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success() && stdout.contains("RESIZED-TO="),
        "child resize failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[test]
fn vm_resize_grows_the_mapping_then_the_filesystem() {
    require_privileged!();
    let f = fixture(64, 4096);
    let name = unique_name("rsz");
    let _g = MappingGuard(name.clone());
    let st = activate(&f, &name, ActivateOptions::default());
    assert_eq!(blockdev_size(&st.path), 48 << 20);
    run("mkfs.ext4", &["-q", st.path.to_str().unwrap()]);
    let m = Mount::new(&st.path, "ext4");
    std::fs::write(m.dir.join("data"), pattern(7, 100_000)).unwrap();
    let before = fs_bytes(&m.dir);

    f.lo.grow(128);
    let out = resize_in_fresh_session(&name);
    assert!(
        out.contains(&format!("RESIZED-TO={}", (112u64 << 20) / 512)),
        "{out}"
    );
    assert_eq!(blockdev_size(&st.path), 112 << 20, "the mapping grew");
    let table = dmsetup_table_showkeys(&name);
    assert!(
        table.starts_with(&format!("0 {} crypt", (112u64 << 20) / 512)),
        "{table}"
    );
    assert!(table.contains(":64:logon:onmetal-csi:"), "{table}");

    run("resize2fs", &[st.path.to_str().unwrap()]);
    let after = fs_bytes(&m.dir);
    assert!(
        after > before + (50 << 20),
        "filesystem grew: {before} -> {after}"
    );
    assert_eq!(
        std::fs::read(m.dir.join("data")).unwrap(),
        pattern(7, 100_000)
    );

    // Resizing to the same size is a no-op.
    assert_eq!(
        DeviceMapper::new().unwrap().resize(&name).unwrap().0,
        (112u64 << 20) / 512
    );
    m.unmount();
    DeviceMapper::new().unwrap().deactivate(&name).unwrap();
}

#[test]
fn vm_grow_never_shrinks_a_mapping_whose_device_reports_less() {
    require_privileged!();
    let f = fixture(64, 4096);
    let name = unique_name("shr");
    let _g = MappingGuard(name.clone());
    let st = activate(&f, &name, ActivateOptions::default());
    assert_eq!(blockdev_size(&st.path), 48 << 20);
    // The backing device now reports 16 MiB less than the mapping needs.
    f.lo.set_size(48);
    let dm = DeviceMapper::new().unwrap();
    match dm.grow(&name) {
        Err(Error::WouldShrink {
            current, device, ..
        }) => {
            assert_eq!(
                (current, device),
                ((48u64 << 20) / 512, (32u64 << 20) / 512)
            );
        }
        other => panic!("grow of a shrunken device: {other:?}"),
    }
    assert_eq!(
        blockdev_size(&st.path),
        48 << 20,
        "the mapping is unchanged"
    );
    assert!(dmsetup_table_showkeys(&name).starts_with(&format!("0 {} crypt", (48u64 << 20) / 512)));
    // Grown back, grow works; `resize` (cryptsetup's semantics) is the one that may shrink.
    f.lo.set_size(64);
    assert_eq!(dm.grow(&name).unwrap().0, (48u64 << 20) / 512);
    f.lo.set_size(48);
    assert_eq!(dm.resize(&name).unwrap().0, (32u64 << 20) / 512);
    assert_eq!(blockdev_size(&st.path), 32 << 20);
    dm.deactivate(&name).unwrap();
}

#[test]
fn vm_resize_without_the_keyring_key_fails_cleanly() {
    require_privileged!();
    let f = fixture(64, 512);
    let name = unique_name("rsznokey");
    let _g = MappingGuard(name.clone());
    let st = activate(&f, &name, ActivateOptions::default());
    write_at(&st.path, 0, &pattern(1, 4096));
    let desc = key_description(&name, &f.volume);
    let id = run("keyctl", &["search", "@u", "logon", &desc]);
    run("keyctl", &["unlink", id.trim(), "@u"]);

    f.lo.grow(96);
    let dm = DeviceMapper::new().unwrap();
    match dm.resize(&name) {
        Err(Error::KeyUnavailable(n)) => assert_eq!(n, name.as_str()),
        other => panic!("expected KeyUnavailable, got {other:?}"),
    }
    assert_eq!(blockdev_size(&st.path), 48 << 20, "size unchanged");
    assert_eq!(
        read_at(&st.path, 0, 4096),
        pattern(1, 4096),
        "mapping still works"
    );
    dm.deactivate(&name).unwrap();
}

#[test]
fn vm_busy_close_fails_cleanly_and_the_mapping_stays() {
    require_privileged!();
    let f = fixture(64, 4096);
    let name = unique_name("busy");
    let _g = MappingGuard(name.clone());
    let st = activate(&f, &name, ActivateOptions::default());
    run("mkfs.ext4", &["-q", st.path.to_str().unwrap()]);
    let m = Mount::new(&st.path, "ext4");
    std::fs::write(m.dir.join("f"), b"still here").unwrap();

    let dm = DeviceMapper::new().unwrap();
    let t = Instant::now();
    match dm.deactivate(&name) {
        Err(Error::Busy(n)) => assert_eq!(n, name.as_str()),
        other => panic!("expected Busy, got {other:?}"),
    }
    assert!(t.elapsed().as_secs() < 15, "busy is reported promptly");
    let status = dm.status(&name).unwrap().expect("mapping stays");
    assert!(status.open_count >= 1);
    assert!(is_block_device(&st.path), "node stays");
    let desc = key_description(&name, &f.volume);
    assert!(key_in_user_keyring(&desc), "key stays with the mapping");
    assert_eq!(std::fs::read(m.dir.join("f")).unwrap(), b"still here");

    m.unmount();
    dm.deactivate(&name).unwrap();
    assert!(!mapping_exists(&name));
    assert!(!key_in_user_keyring(&desc));
}

#[test]
fn vm_read_only_open_is_read_only() {
    require_privileged!();
    let f = fixture(64, 4096);
    // Data written through cryptsetup first.
    let cs = unique_name("rocs");
    let _g1 = MappingGuard(cs.clone());
    cryptsetup_open(f.lo.path(), &cs, &[]);
    write_at(&dm::mapper_path(&cs), 8192, &pattern(3, 65536));
    run("cryptsetup", &["close", cs.as_str()]);

    let name = unique_name("ro");
    let _g2 = MappingGuard(name.clone());
    let st = activate(
        &f,
        &name,
        ActivateOptions {
            read_only: true,
            ..Default::default()
        },
    );
    assert!(st.read_only);
    assert_eq!(
        run("blockdev", &["--getro", st.path.to_str().unwrap()]).trim(),
        "1"
    );
    assert_eq!(read_at(&st.path, 8192, 65536), pattern(3, 65536));
    // Root may open a read-only block device for writing; the write itself must fail.
    let written = OpenOptions::new()
        .write(true)
        .open(&st.path)
        .and_then(|mut f| {
            f.write_all(&[0u8; 4096])?;
            f.sync_all()
        });
    assert!(written.is_err(), "writing to a read-only mapping must fail");
    assert_eq!(
        read_at(&st.path, 8192, 65536),
        pattern(3, 65536),
        "data unchanged"
    );
    let status = run("dmsetup", &["info", name.as_str()]);
    assert!(status.contains("READ-ONLY"), "{status}");
    DeviceMapper::new().unwrap().deactivate(&name).unwrap();
}

#[test]
fn vm_discards_pass_only_when_allowed() {
    require_privileged!();
    let f = fixture(64, 4096);
    let dm = DeviceMapper::new().unwrap();

    // Without allow_discards: the mapping refuses discards, the backing file keeps its blocks.
    let name = unique_name("nodiscard");
    let _g1 = MappingGuard(name.clone());
    let st = activate(&f, &name, ActivateOptions::default());
    assert!(!dmsetup_table_showkeys(&name).contains("allow_discards"));
    write_at(&st.path, 0, &pattern(4, 16 << 20));
    let full = f.lo.allocated();
    assert!(full >= 16 << 20, "allocated {full}");
    let out = try_run("blkdiscard", &[st.path.to_str().unwrap()], None);
    assert!(
        !out.status.success(),
        "blkdiscard must fail without allow_discards"
    );
    assert!(f.lo.allocated() >= full - (1 << 20));
    dm.deactivate(&name).unwrap();

    // With allow_discards: they reach the loop device, which punches holes in its file.
    let name = unique_name("discard");
    let _g2 = MappingGuard(name.clone());
    let st = activate(
        &f,
        &name,
        ActivateOptions {
            flags: CryptFlags {
                allow_discards: true,
                ..Default::default()
            },
            ..Default::default()
        },
    );
    assert!(st.crypt.flags.allow_discards);
    let table = dmsetup_table_showkeys(&name);
    assert!(table.contains(" allow_discards"), "{table}");
    run("blkdiscard", &[st.path.to_str().unwrap()]);
    let after = f.lo.allocated();
    assert!(
        after + (12 << 20) < full,
        "discard freed space: {full} -> {after}"
    );
    dm.deactivate(&name).unwrap();
}

#[test]
fn vm_header_and_caller_flags_are_honoured() {
    require_privileged!();
    let f = fixture(64, 4096);
    // cryptsetup stores allow-discards persistently in the header.
    let cs = unique_name("persist");
    let _g1 = MappingGuard(cs.clone());
    cryptsetup_open(f.lo.path(), &cs, &["--persistent", "--allow-discards"]);
    run("cryptsetup", &["close", cs.as_str()]);
    let volume = cryptsetup_volume(f.lo.path());
    assert!(volume.flags.allow_discards, "header flag read back");

    let name = unique_name("flags");
    let _g2 = MappingGuard(name.clone());
    let dm = DeviceMapper::new().unwrap();
    let st = dm
        .activate(
            &name,
            &f.lo.handle(),
            &volume,
            &f.key,
            &ActivateOptions {
                read_only: false,
                flags: CryptFlags {
                    no_read_workqueue: true,
                    no_write_workqueue: true,
                    ..Default::default()
                },
            },
        )
        .unwrap();
    let table = dmsetup_table_showkeys(&name);
    for opt in [
        "allow_discards",
        "no_read_workqueue",
        "no_write_workqueue",
        "sector_size:4096",
    ] {
        assert!(table.contains(opt), "table lacks {opt}: {table}");
    }
    let cs_status = run("cryptsetup", &["status", name.as_str()]);
    assert!(cs_status.contains("discards"), "{cs_status}");
    assert!(st.crypt.flags.no_read_workqueue && st.crypt.flags.no_write_workqueue);
    write_at(&st.path, 0, &pattern(9, 8192));
    assert_eq!(read_at(&st.path, 0, 8192), pattern(9, 8192));
    dm.deactivate(&name).unwrap();
}

#[test]
fn vm_status_and_list() {
    require_privileged!();
    let f1 = fixture(64, 4096);
    let f2 = fixture(64, 512);
    let dm = DeviceMapper::new().unwrap();
    let a = unique_name("lista");
    let b = unique_name("listb");
    let c = unique_name("listcs");
    let _ga = MappingGuard(a.clone());
    let _gb = MappingGuard(b.clone());
    let _gc = MappingGuard(c.clone());
    activate(&f1, &a, ActivateOptions::default());
    activate(&f2, &b, ActivateOptions::default());
    // A third, cryptsetup's own mapping of another device, is not ours to list.
    let f3 = fixture(64, 512);
    cryptsetup_open(f3.lo.path(), &c, &[]);

    let list = dm.list().unwrap();
    assert!(list.contains(&a) && list.contains(&b), "{list:?}");
    assert!(!list.contains(&c), "{list:?}");

    let st = dm.status(&a).unwrap().expect("active");
    assert_eq!(st.crypt.cipher, "aes-xts-plain64");
    assert_eq!(st.crypt.sector_size, dm::SectorSize::S4096);
    assert_eq!(st.crypt.offset.0, f1.volume.segment.offset.0 / 512);
    assert_eq!(st.size.0, (48u64 << 20) / 512);
    assert_eq!(st.backing_path.as_deref(), Some(f1.lo.dev.as_path()));
    assert!(!st.read_only);
    assert_eq!(st.open_count, 0);
    assert_eq!(st.keyring_key().map(|k| k.key_size), Some(64));
    let stb = dm.status(&b).unwrap().expect("active");
    assert_eq!(stb.crypt.sector_size, dm::SectorSize::S512);
    // cryptsetup's mapping is readable through status too.
    let stc = dm.status(&c).unwrap().expect("active");
    assert_eq!(stc.backing_path.as_deref(), Some(f3.lo.dev.as_path()));

    dm.deactivate(&a).unwrap();
    dm.deactivate(&b).unwrap();
    assert!(dm.status(&a).unwrap().is_none());
    let list = dm.list().unwrap();
    assert!(!list.contains(&a) && !list.contains(&b));
    match dm.deactivate(&a) {
        Err(Error::NotFound(_)) => {}
        other => panic!("expected NotFound, got {other:?}"),
    }
    run("cryptsetup", &["close", c.as_str()]);
}

#[test]
fn vm_failed_activation_leaves_nothing_behind() {
    require_privileged!();
    let f = fixture(64, 4096);
    let dm = DeviceMapper::new().unwrap();
    let name = unique_name("fail");
    let _g = MappingGuard(name.clone());
    let desc = key_description(&name, &f.volume);

    // The kernel refuses the table (unknown cipher): no mapping, no node, no key.
    let mut bad = f.volume.clone();
    bad.segment.encryption = "nosuchcipher-xts-plain64".into();
    let r = dm.activate(
        &name,
        &f.lo.handle(),
        &bad,
        &f.key,
        &ActivateOptions::default(),
    );
    assert!(matches!(r, Err(Error::Ioctl { .. })), "{r:?}");
    assert!(!mapping_exists(&name));
    assert!(!dm::mapper_path(&name).exists());
    assert!(!key_in_user_keyring(&desc));

    // A segment larger than the device.
    let mut big = f.volume.clone();
    big.segment.size = SegmentSize::Fixed(dm::Bytes(1 << 30));
    let r = dm.activate(
        &name,
        &f.lo.handle(),
        &big,
        &f.key,
        &ActivateOptions::default(),
    );
    assert!(matches!(r, Err(Error::DeviceTooSmall { .. })), "{r:?}");
    assert!(!mapping_exists(&name));

    // Not a block device.
    let r = dm.activate(
        &name,
        &std::fs::File::open(&f.lo.file).unwrap(),
        &f.volume,
        &f.key,
        &ActivateOptions::default(),
    );
    assert!(matches!(r, Err(Error::NotBlockDevice(_))), "{r:?}");

    // A second activation of an active name fails and leaves the first one working.
    let st = activate(&f, &name, ActivateOptions::default());
    write_at(&st.path, 0, &pattern(5, 4096));
    let r = dm.activate(
        &name,
        &f.lo.handle(),
        &f.volume,
        &f.key,
        &ActivateOptions::default(),
    );
    assert!(matches!(r, Err(Error::AlreadyExists(_))), "{r:?}");
    assert_eq!(read_at(&st.path, 0, 4096), pattern(5, 4096));
    assert!(key_in_user_keyring(&desc));
    dm.deactivate(&name).unwrap();
    assert!(!key_in_user_keyring(&desc));
}

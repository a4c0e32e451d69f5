//! Privileged (VM) tests: ext4 and xfs made on our mapping survive close and reopen, and
//! cryptsetup opens them too. Run by `scripts/vm-test`.
#![allow(missing_docs, clippy::unwrap_used)]

use dm::{ActivateOptions, DeviceMapper};
use testkit::vm::*;

fn filesystem_survives_close_and_reopen(fstype: &str, mib: u64) {
    let lo = LoopDev::new(mib);
    cryptsetup_format(lo.path(), 512, 4096, Kdf::Pbkdf2);
    let key = cryptsetup_volume_key(lo.path());
    let volume = cryptsetup_volume(lo.path());
    let dm = DeviceMapper::new().unwrap();
    let name = unique_name(fstype);
    let _g = MappingGuard(name.clone());

    let st = dm
        .activate(
            &name,
            &lo.handle(),
            &volume,
            &key,
            &ActivateOptions::default(),
        )
        .unwrap();
    let mkfs = format!("mkfs.{fstype}");
    run(&mkfs, &["-q", st.path.to_str().unwrap()]);
    let m = Mount::new(&st.path, fstype);
    let big = pattern(11, 3 << 20);
    std::fs::create_dir(m.dir.join("d")).unwrap();
    std::fs::write(m.dir.join("d/big"), &big).unwrap();
    std::fs::write(m.dir.join("small"), b"hello from our mapping").unwrap();
    m.unmount();
    dm.deactivate(&name).unwrap();

    // Reopened by us.
    let st = dm
        .activate(
            &name,
            &lo.handle(),
            &volume,
            &key,
            &ActivateOptions::default(),
        )
        .unwrap();
    let m = Mount::new(&st.path, fstype);
    assert!(
        std::fs::read(m.dir.join("d/big")).unwrap() == big,
        "{fstype}: big file intact"
    );
    assert_eq!(
        std::fs::read(m.dir.join("small")).unwrap(),
        b"hello from our mapping"
    );
    std::fs::write(m.dir.join("second"), b"second session").unwrap();
    m.unmount();
    dm.deactivate(&name).unwrap();

    // And by cryptsetup.
    cryptsetup_open(lo.path(), &name, &[]);
    let m = Mount::new(&dm::mapper_path(&name), fstype);
    assert!(std::fs::read(m.dir.join("d/big")).unwrap() == big);
    assert_eq!(
        std::fs::read(m.dir.join("second")).unwrap(),
        b"second session"
    );
    m.unmount();
    run("cryptsetup", &["close", name.as_str()]);
    // fsck agrees the filesystem is clean.
    let st = dm
        .activate(
            &name,
            &lo.handle(),
            &volume,
            &key,
            &ActivateOptions::default(),
        )
        .unwrap();
    let check = match fstype {
        "xfs" => run("xfs_repair", &["-n", st.path.to_str().unwrap()]),
        _ => run("fsck.ext4", &["-n", "-f", st.path.to_str().unwrap()]),
    };
    drop(check);
    dm.deactivate(&name).unwrap();
}

#[test]
fn vm_ext4_survives_close_and_reopen() {
    require_privileged!();
    filesystem_survives_close_and_reopen("ext4", 64);
}

#[test]
fn vm_xfs_survives_close_and_reopen() {
    require_privileged!();
    // mkfs.xfs needs at least 300 MB.
    filesystem_survives_close_and_reopen("xfs", 400);
}

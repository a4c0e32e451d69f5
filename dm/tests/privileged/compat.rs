//! Privileged (VM) tests: our dm-crypt mappings and cryptsetup's read and write the same bytes,
//! and cryptsetup's tools recognise our mappings. Run by `scripts/vm-test`.
#![allow(missing_docs, clippy::unwrap_used)]

use dm::{ActivateOptions, DeviceMapper, SectorSize};
use testkit::vm::*;

/// Regions written and compared: start, middle and end of the mapped area.
fn regions(size: u64) -> [u64; 3] {
    [0, (size / 2) & !4095, size - (1 << 20)]
}

/// cryptsetup writes, we read; we write, cryptsetup reads — on one device.
fn data_round_trip(key_bits: u32, sector_size: u32, kdf: Kdf) {
    let lo = LoopDev::new(64);
    cryptsetup_format(lo.path(), key_bits, sector_size, kdf);
    let key = cryptsetup_volume_key(lo.path());
    assert_eq!(key.len() * 8, key_bits as usize);
    let volume = cryptsetup_volume(lo.path());
    assert_eq!(
        volume.segment.sector_size,
        SectorSize::new(sector_size).unwrap()
    );

    // 1. cryptsetup writes.
    let theirs = unique_name("cs");
    let _g1 = MappingGuard(theirs.clone());
    cryptsetup_open(lo.path(), &theirs, &[]);
    let cs_path = dm::mapper_path(&theirs);
    let size = blockdev_size(&cs_path);
    for (i, off) in regions(size).into_iter().enumerate() {
        write_at(&cs_path, off, &pattern(i as u64, 1 << 20));
    }
    run("cryptsetup", &["close", theirs.as_str()]);

    // 2. We read what cryptsetup wrote, then write our own pattern.
    let dm = DeviceMapper::new().unwrap();
    let ours = unique_name("ours");
    let _g2 = MappingGuard(ours.clone());
    let st = dm
        .activate(
            &ours,
            &lo.handle(),
            &volume,
            &key,
            &ActivateOptions::default(),
        )
        .unwrap();
    assert!(
        is_block_device(&st.path),
        "{} must exist",
        st.path.display()
    );
    assert_eq!(
        blockdev_size(&st.path),
        size,
        "same mapped size as cryptsetup"
    );
    for (i, off) in regions(size).into_iter().enumerate() {
        assert!(
            read_at(&st.path, off, 1 << 20) == pattern(i as u64, 1 << 20),
            "our mapping reads cryptsetup's data at {off} ({key_bits}-bit key, {sector_size}-byte sectors)"
        );
        write_at(&st.path, off, &pattern(100 + i as u64, 1 << 20));
    }
    dm.deactivate(&ours).unwrap();
    assert!(!mapping_exists(&ours));
    assert!(!st.path.exists(), "our node is gone after deactivate");

    // 3. cryptsetup reads what we wrote.
    cryptsetup_open(lo.path(), &theirs, &[]);
    for (i, off) in regions(size).into_iter().enumerate() {
        assert!(
            read_at(&cs_path, off, 1 << 20) == pattern(100 + i as u64, 1 << 20),
            "cryptsetup reads our data at {off} ({key_bits}-bit key, {sector_size}-byte sectors)"
        );
    }
    run("cryptsetup", &["close", theirs.as_str()]);
}

#[test]
fn vm_compat_512_sectors_256_bit_key() {
    require_privileged!();
    data_round_trip(256, 512, Kdf::Pbkdf2);
}

#[test]
fn vm_compat_4096_sectors_256_bit_key() {
    require_privileged!();
    data_round_trip(256, 4096, Kdf::Argon2id);
}

#[test]
fn vm_compat_512_sectors_512_bit_key() {
    require_privileged!();
    data_round_trip(512, 512, Kdf::Argon2id);
}

#[test]
fn vm_compat_4096_sectors_512_bit_key() {
    require_privileged!();
    data_round_trip(512, 4096, Kdf::Pbkdf2);
}

/// The kernel's table names the keyring key, never the key; the DM UUID is cryptsetup's; the key
/// lives in the user keyring exactly as long as the mapping.
#[test]
fn vm_table_shows_only_the_keyring_reference() {
    require_privileged!();
    let lo = LoopDev::new(64);
    cryptsetup_format(lo.path(), 512, 4096, Kdf::Pbkdf2);
    let key = cryptsetup_volume_key(lo.path());
    let volume = cryptsetup_volume(lo.path());
    let dm = DeviceMapper::new().unwrap();
    let name = unique_name("tbl");
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

    let uuid = format!("CRYPT-LUKS2-{}-{}", volume.uuid.simple(), name.as_str());
    assert_eq!(st.dm_uuid.as_deref(), Some(uuid.as_str()));
    let info = run(
        "dmsetup",
        &["info", "-c", "--noheadings", "-o", "uuid", name.as_str()],
    );
    assert_eq!(info.trim(), uuid);

    let table = dmsetup_table_showkeys(&name);
    let desc = format!("onmetal-csi:{uuid}");
    let expected_key = format!(" :64:logon:{desc} ");
    assert!(
        table.contains(&expected_key),
        "table {table:?} lacks {expected_key:?}"
    );
    let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
    for window in hex.as_bytes().chunks(16) {
        let w = std::str::from_utf8(window).unwrap();
        assert!(
            !table.contains(w),
            "the table must not contain key material"
        );
    }
    assert!(table.contains(" sector_size:4096"), "{table}");
    assert!(
        key_in_user_keyring(&desc),
        "the key is in @u while the mapping lives"
    );

    dm.deactivate(&name).unwrap();
    assert!(
        !key_in_user_keyring(&desc),
        "the key is dropped with the mapping"
    );
}

/// `cryptsetup status` describes our mapping and `cryptsetup close` removes it.
#[test]
fn vm_cryptsetup_status_and_close_recognise_our_mapping() {
    require_privileged!();
    let lo = LoopDev::new(64);
    cryptsetup_format(lo.path(), 512, 4096, Kdf::Pbkdf2);
    let key = cryptsetup_volume_key(lo.path());
    let volume = cryptsetup_volume(lo.path());
    let dm = DeviceMapper::new().unwrap();
    let name = unique_name("cst");
    let _g = MappingGuard(name.clone());
    dm.activate(
        &name,
        &lo.handle(),
        &volume,
        &key,
        &ActivateOptions::default(),
    )
    .unwrap();

    let status = run("cryptsetup", &["status", name.as_str()]);
    for want in [
        "is active",
        "type:    LUKS2",
        "cipher:  aes-xts-plain64",
        "keysize: 512 bits",
        "key location: keyring",
        "sector size:  4096",
        "offset:  32768 sectors",
    ] {
        assert!(
            status.contains(want),
            "cryptsetup status lacks {want:?}:\n{status}"
        );
    }
    assert!(
        status.contains(&format!("device:  {}", lo.path())),
        "{status}"
    );

    run("cryptsetup", &["close", name.as_str()]);
    assert!(!mapping_exists(&name));
    assert!(dm.status(&name).unwrap().is_none());
}

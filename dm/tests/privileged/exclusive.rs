//! Privileged (VM) tests: activation is exclusive per name and per backing device, never
//! disturbs another mapping's key, cleans up only what it created, and maps the device the
//! caller has open (not whatever a path names later). Run by `scripts/vm-test`.
#![allow(missing_docs, clippy::unwrap_used)]

use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::sync::{Arc, Barrier};

use dm::{ActivateOptions, CryptVolume, DeviceMapper, DmName, Error, MappingStatus};
use testkit::vm::*;

/// Activates `volume` from the device open as `handle`.
fn activate_on(
    name: &DmName,
    handle: &File,
    volume: &CryptVolume,
    key: &[u8],
) -> dm::Result<MappingStatus> {
    DeviceMapper::new()
        .unwrap()
        .activate(name, handle, volume, key, &ActivateOptions::default())
}

fn key_description(name: &DmName, volume: &CryptVolume) -> String {
    format!(
        "onmetal-csi:CRYPT-LUKS2-{}-{}",
        volume.uuid.simple(),
        name.as_str()
    )
}

/// `n` loop devices with the same LUKS2 header (copied from the first), so the same volume key
/// and UUID open each: activations of one name on them all compete for one key description.
fn twins(n: usize) -> (Vec<LoopDev>, Vec<u8>, CryptVolume) {
    let first = LoopDev::new(48);
    cryptsetup_format(first.path(), 512, 4096, Kdf::Pbkdf2);
    let key = cryptsetup_volume_key(first.path());
    let volume = cryptsetup_volume(first.path());
    let header = read_at(&first.dev, 0, 16 << 20);
    let mut devs = vec![first];
    for _ in 1..n {
        let d = LoopDev::new(48);
        write_at(&d.dev, 0, &header);
        devs.push(d);
    }
    (devs, key, volume)
}

/// Many activations of one name race (each on its own device, so only the name is shared):
/// exactly one wins, and its key survives the losers — the mapping reloads its table (resize)
/// from the keyring afterwards.
#[test]
fn vm_racing_activations_of_one_name_leave_the_winner_its_key() {
    require_privileged!();
    const RACERS: usize = 4;
    let (devs, key, volume) = twins(RACERS);
    for round in 0..3 {
        let name = unique_name("race");
        let _g = MappingGuard(name.clone());
        let barrier = Arc::new(Barrier::new(RACERS));
        let results: Vec<_> = devs
            .iter()
            .map(|d| {
                let (name, volume, key, barrier) =
                    (name.clone(), volume.clone(), key.clone(), barrier.clone());
                let handle = d.handle();
                std::thread::spawn(move || {
                    barrier.wait();
                    activate_on(&name, &handle, &volume, &key)
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|t| t.join().unwrap())
            .collect();
        let winners: Vec<&MappingStatus> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
        assert_eq!(winners.len(), 1, "round {round}: {results:?}");
        for r in &results {
            if let Err(e) = r {
                assert!(matches!(e, Error::AlreadyExists(_)), "round {round}: {e:?}");
            }
        }
        let st = winners[0];
        let desc = key_description(&name, &volume);
        assert!(
            key_in_user_keyring(&desc),
            "round {round}: the winner's key is gone"
        );
        write_at(&st.path, 0, &pattern(round, 8192));
        assert_eq!(read_at(&st.path, 0, 8192), pattern(round, 8192));
        // A table reload needs the key from the keyring.
        let lo = devs
            .iter()
            .find(|d| Some(d.dev.as_path()) == st.backing_path.as_deref())
            .unwrap();
        lo.grow(64 + 16 * round);
        let dm = DeviceMapper::new().unwrap();
        let size = dm.resize(&name).unwrap();
        assert_eq!(size.0, ((48 + 16 * round) << 20) / 512, "round {round}");
        dm.deactivate(&name).unwrap();
        assert!(!key_in_user_keyring(&desc));
    }
}

/// A second activation of a device that is mapped already — under another name, by us or by
/// cryptsetup — is refused, and the first mapping and its key stay as they were.
#[test]
fn vm_second_mapping_of_one_device_is_refused() {
    require_privileged!();
    let lo = LoopDev::new(48);
    cryptsetup_format(lo.path(), 512, 4096, Kdf::Pbkdf2);
    let key = cryptsetup_volume_key(lo.path());
    let volume = cryptsetup_volume(lo.path());
    let a = unique_name("first");
    let b = unique_name("second");
    let _ga = MappingGuard(a.clone());
    let _gb = MappingGuard(b.clone());

    let st = activate_on(&a, &lo.handle(), &volume, &key).unwrap();
    write_at(&st.path, 0, &pattern(70, 8192));
    let r = activate_on(&b, &lo.handle(), &volume, &key);
    assert!(matches!(r, Err(Error::DeviceInUse(_))), "{r:?}");
    assert!(!mapping_exists(&b));
    assert!(!key_in_user_keyring(&key_description(&b, &volume)));
    assert!(key_in_user_keyring(&key_description(&a, &volume)));
    assert_eq!(read_at(&st.path, 0, 8192), pattern(70, 8192));
    DeviceMapper::new().unwrap().deactivate(&a).unwrap();

    // cryptsetup's mapping of the device.
    cryptsetup_open(lo.path(), &a, &[]);
    let r = activate_on(&b, &lo.handle(), &volume, &key);
    assert!(matches!(r, Err(Error::DeviceInUse(_))), "{r:?}");
    assert!(!mapping_exists(&b));
    run("cryptsetup", &["close", a.as_str()]);

    // Free again: activation works.
    activate_on(&b, &lo.handle(), &volume, &key).unwrap();
    assert_eq!(read_at(&dm::mapper_path(&b), 0, 8192), pattern(70, 8192));
    DeviceMapper::new().unwrap().deactivate(&b).unwrap();
}

/// The mapping is made of the device the caller has open, even when the path it was opened by
/// names another device by the time of activation.
#[test]
fn vm_activation_maps_the_open_device_not_the_path() {
    require_privileged!();
    let (devs, key, volume) = twins(2);
    let link = std::env::temp_dir().join(format!("dm-vm-link-{}", std::process::id()));
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(&devs[0].dev, &link).unwrap();
    let handle = File::open(&link).unwrap();
    // The path now names the other device.
    std::fs::remove_file(&link).unwrap();
    std::os::unix::fs::symlink(&devs[1].dev, &link).unwrap();

    let name = unique_name("handle");
    let _g = MappingGuard(name.clone());
    let st = activate_on(&name, &handle, &volume, &key).unwrap();
    let rdev = std::fs::metadata(&devs[0].dev).unwrap().rdev();
    assert_eq!(
        (st.crypt.device.major, st.crypt.device.minor),
        (libc::major(rdev), libc::minor(rdev))
    );
    assert_eq!(st.backing_path.as_deref(), Some(devs[0].dev.as_path()));
    let table = dmsetup_table_showkeys(&name);
    assert!(
        table.contains(&format!(" {}:{} ", libc::major(rdev), libc::minor(rdev))),
        "{table}"
    );
    DeviceMapper::new().unwrap().deactivate(&name).unwrap();
    std::fs::remove_file(&link).unwrap();
}

/// A leftover key of the mapping's description (a crash between activation steps) is replaced;
/// a failed activation takes back its own key and device but leaves other mappings' keys alone.
#[test]
fn vm_leftover_key_is_replaced_and_failures_clean_up_only_their_own() {
    require_privileged!();
    let lo = LoopDev::new(48);
    cryptsetup_format(lo.path(), 512, 4096, Kdf::Pbkdf2);
    let key = cryptsetup_volume_key(lo.path());
    let volume = cryptsetup_volume(lo.path());
    let name = unique_name("leftover");
    let _g = MappingGuard(name.clone());
    let desc = key_description(&name, &volume);
    run_with_stdin(
        "keyctl",
        &["padd", "logon", &desc, "@u"],
        Some(&[0x11u8; 64]),
    );
    assert!(key_in_user_keyring(&desc));

    // The cryptsetup mapping that wrote the data shares nothing with ours but the device.
    let cs = unique_name("writer");
    let _gc = MappingGuard(cs.clone());
    cryptsetup_open(lo.path(), &cs, &[]);
    write_at(&dm::mapper_path(&cs), 0, &pattern(80, 8192));
    run("cryptsetup", &["close", cs.as_str()]);

    let st = activate_on(&name, &lo.handle(), &volume, &key).unwrap();
    assert_eq!(
        read_at(&st.path, 0, 8192),
        pattern(80, 8192),
        "the real key, not the leftover, is in use"
    );

    // Another name on another device fails in the kernel (unknown cipher): its own key and
    // device are gone, ours stay.
    let other = LoopDev::new(48);
    cryptsetup_format(other.path(), 512, 4096, Kdf::Pbkdf2);
    let other_key = cryptsetup_volume_key(other.path());
    let mut bad = cryptsetup_volume(other.path());
    bad.segment.encryption = "nosuchcipher-xts-plain64".into();
    let failing = unique_name("failing");
    let _gf = MappingGuard(failing.clone());
    let r = activate_on(&failing, &other.handle(), &bad, &other_key);
    assert!(matches!(r, Err(Error::Ioctl { .. })), "{r:?}");
    assert!(!mapping_exists(&failing));
    assert!(!key_in_user_keyring(&key_description(&failing, &bad)));
    assert!(key_in_user_keyring(&desc));
    let dm = DeviceMapper::new().unwrap();
    lo.grow(64);
    assert_eq!(dm.resize(&name).unwrap().0, (48u64 << 20) / 512);
    dm.deactivate(&name).unwrap();
    assert!(!key_in_user_keyring(&desc));
}

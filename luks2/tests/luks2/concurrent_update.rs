//! A writer whose header is out of date (another writer updated or re-formatted the device
//! between its read and its write, e.g. while its KDF ran outside the lock) must be refused
//! before it writes anything, a keyslot area included: the other writer's keyslot and a new
//! format survive intact.
#![allow(clippy::unwrap_used)]

use luks2::crypto::{Argon2Variant, KdfKind, PbkdfOptions};
use luks2::format::FormatOptions;
use luks2::header::{self, Header};
use luks2::io::{Device, MemDevice};
use luks2::keyslot::{self, NewKeyslot};
use luks2::metadata::KeyslotId;
use luks2::{ErrorKind, Luks2Device, Passphrase};

const MIB: usize = 1024 * 1024;

fn fast() -> PbkdfOptions {
    PbkdfOptions::fast_for_tests(KdfKind::Argon2(Argon2Variant::Argon2id), 32)
}

fn opts() -> FormatOptions {
    FormatOptions {
        pbkdf: fast(),
        keyslots_size: Some(MIB as u64),
        ..Default::default()
    }
}

fn pw(s: &str) -> Passphrase {
    Passphrase::from_bytes(s.as_bytes())
}

fn new_slot() -> NewKeyslot {
    NewKeyslot {
        pbkdf: fast(),
        ..Default::default()
    }
}

/// A formatted device with keyslot 0 ("p0").
fn formatted() -> MemDevice {
    Luks2Device::format(MemDevice::new(4 * MIB), &pw("p0"), &opts())
        .unwrap()
        .0
        .into_inner()
}

fn opens(dev: &MemDevice, pass: &str) -> bool {
    Luks2Device::open(dev.clone())
        .unwrap()
        .unlock(&pw(pass), None)
        .is_ok()
}

/// The other writer: adds "p1" through its own, current header; returns the keyslot's area
/// offset (the one the stale writer will also pick).
fn concurrent_add_key(dev: &mut MemDevice) -> u64 {
    let mut h = header::read(&*dev).unwrap();
    let (_, vk) = keyslot::unlock(&*dev, &h.metadata, b"p0", None).unwrap();
    let id = keyslot::add_keyslot(dev, &mut h, &vk, b"p1", &new_slot()).unwrap();
    h.metadata.keyslots[&id].area_range().0
}

fn stale_header_and_key(dev: &MemDevice) -> (Header, luks2::VolumeKey) {
    let h = header::read(dev).unwrap();
    let (_, vk) = keyslot::unlock(dev, &h.metadata, b"p0", None).unwrap();
    (h, vk)
}

#[test]
fn add_key_with_a_stale_header_writes_no_keyslot_area() {
    let mut dev = formatted();
    let (mut stale, vk) = stale_header_and_key(&dev);
    let free_then = stale.metadata.find_free_area(258_048).unwrap();
    let area = concurrent_add_key(&mut dev);
    assert_eq!(area, free_then, "both writers pick the same free area");
    let before = dev.clone();

    let err = keyslot::add_keyslot(&mut dev, &mut stale, &vk, b"p2", &new_slot()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Busy, "{err}");
    assert!(
        opens(&dev, "p1"),
        "the concurrent writer's keyslot was overwritten"
    );
    assert!(!opens(&dev, "p2"));
    assert!(dev == before, "a refused update changed the device");
}

#[test]
fn change_key_with_a_stale_header_writes_no_keyslot_area() {
    let mut dev = formatted();
    let (mut stale, vk) = stale_header_and_key(&dev);
    concurrent_add_key(&mut dev);
    let before = dev.clone();

    let err =
        keyslot::replace_keyslot(&mut dev, &mut stale, KeyslotId::new(0), &vk, b"p2", &fast())
            .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Busy, "{err}");
    assert!(
        opens(&dev, "p1"),
        "the concurrent writer's keyslot was overwritten"
    );
    assert!(opens(&dev, "p0"));
    assert!(dev == before, "a refused update changed the device");
}

#[test]
fn a_concurrent_reformat_is_never_written_over() {
    let mut dev = formatted();
    let (mut stale, vk) = stale_header_and_key(&dev);
    // Someone re-formats the device (new UUID, new volume key) in the meantime.
    let reformat = FormatOptions {
        force: true,
        ..opts()
    };
    luks2::format::format(&mut dev, b"p9", &reformat).unwrap();
    let new_uuid = header::read(&dev).unwrap().uuid().into_owned();
    assert_ne!(new_uuid, stale.uuid());
    let before = dev.clone();

    let err = keyslot::add_keyslot(&mut dev, &mut stale, &vk, b"p2", &new_slot()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Busy, "{err}");
    assert!(dev == before, "the new format was written over");
    assert!(opens(&dev, "p9"));

    // Header-only updates (kill-slot, tokens, labels) are refused the same way.
    let err = keyslot::kill_keyslot(&mut dev, &mut stale, KeyslotId::new(0)).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Busy, "{err}");
    stale.set_label("stale").unwrap();
    let err = header::write(&mut dev, &mut stale).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Busy, "{err}");
    assert!(dev == before);
}

#[test]
fn a_device_whose_header_vanished_is_not_written() {
    let mut dev = formatted();
    let (mut stale, vk) = stale_header_and_key(&dev);
    let hdr = usize::try_from(stale.header_area_size()).unwrap();
    dev.write_all_at(0, &vec![0u8; hdr]).unwrap();
    let err = keyslot::add_keyslot(&mut dev, &mut stale, &vk, b"p2", &new_slot()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Busy, "{err}");
    assert!(dev.as_slice()[..hdr].iter().all(|&b| b == 0));
}

#[test]
fn two_threads_adding_keys_never_lose_one() {
    // Two writers race with headers read at the same time: one wins, the other is refused
    // (Busy) without touching the winner's keyslot.
    let dev = std::sync::Arc::new(std::sync::Mutex::new(formatted()));
    let (h, _) = stale_header_and_key(&dev.lock().unwrap());
    let results: Vec<_> = ["p1", "p2"]
        .into_iter()
        .map(|pass| {
            let dev = std::sync::Arc::clone(&dev);
            let mut h = h.clone();
            std::thread::spawn(move || {
                let (_, vk) = {
                    let d = dev.lock().unwrap();
                    keyslot::unlock(&*d, &h.metadata, b"p0", None).unwrap()
                };
                let mut d = dev.lock().unwrap();
                keyslot::add_keyslot(&mut *d, &mut h, &vk, pass.as_bytes(), &new_slot())
                    .map(|_| pass)
                    .map_err(|e| e.kind())
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|t| t.join().unwrap())
        .collect();
    let won: Vec<_> = results.iter().filter_map(|r| r.ok()).collect();
    assert_eq!(won.len(), 1, "{results:?}");
    assert!(results.contains(&Err(ErrorKind::Busy)), "{results:?}");
    let dev = dev.lock().unwrap();
    assert!(opens(&dev, won[0]));
    assert!(opens(&dev, "p0"));
}

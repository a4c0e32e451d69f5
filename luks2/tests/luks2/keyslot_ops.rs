//! Keyslot, token, backup and erase operations on in-memory and file devices, with small KDF
//! costs.
#![allow(clippy::unwrap_used, clippy::cast_possible_truncation)]

use luks2::crypto::HashAlgorithm;
use luks2::crypto::calibrate::PbkdfOptions;
use luks2::crypto::kdf::{Argon2Variant, KdfKind};
use luks2::format::FormatOptions;
use luks2::io::MemDevice;
use luks2::keyslot::NewKeyslot;
use luks2::metadata::{KeyslotId, Priority, TokenId};
use luks2::{ErrorKind, Luks2Device, Passphrase};

const MIB: usize = 1024 * 1024;

fn fast() -> PbkdfOptions {
    PbkdfOptions::fast_for_tests(KdfKind::Argon2(Argon2Variant::Argon2id), 64)
}

fn opts() -> FormatOptions {
    FormatOptions {
        pbkdf: fast(),
        ..Default::default()
    }
}

fn pw(s: &str) -> Passphrase {
    Passphrase::from_bytes(s.as_bytes())
}

fn formatted() -> Luks2Device<MemDevice> {
    let (d, id) = Luks2Device::format(MemDevice::new(20 * MIB), &pw("one"), &opts()).unwrap();
    assert_eq!(id, KeyslotId::new(0));
    d
}

#[test]
fn format_then_unlock() {
    let d = formatted();
    assert_eq!(d.header().seqid(), 3);
    let (id, vk) = d.unlock(&pw("one"), None).unwrap();
    assert_eq!((id, vk.len()), (KeyslotId::new(0), 64));
    assert_eq!(
        d.unlock(&pw("two"), None).unwrap_err().kind(),
        ErrorKind::BadPassphrase
    );
    // Re-read from the device.
    let d2 = Luks2Device::open(d.into_inner()).unwrap();
    let (_, vk2) = d2.unlock(&pw("one"), Some(KeyslotId::new(0))).unwrap();
    assert_eq!(vk.as_bytes(), vk2.as_bytes());
}

#[test]
fn refuses_to_format_over_luks() {
    let d = formatted();
    let e = Luks2Device::format(d.into_inner(), &pw("x"), &opts()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Busy);
}

#[test]
fn add_change_remove_kill() {
    let mut d = formatted();
    let (_, vk) = d.unlock(&pw("one"), None).unwrap();
    let params = NewKeyslot {
        pbkdf: fast(),
        ..Default::default()
    };
    let two = d.add_key(&pw("one"), &pw("two"), &params).unwrap();
    assert_eq!(two, KeyslotId::new(1));
    let five = d
        .add_key(
            &pw("two"),
            &pw("five"),
            &NewKeyslot {
                id: Some(KeyslotId::new(5)),
                ..params.clone()
            },
        )
        .unwrap();
    assert_eq!(five, KeyslotId::new(5));
    assert_eq!(
        d.unlock(&pw("five"), None).unwrap().1.as_bytes(),
        vk.as_bytes()
    );
    // A wrong slot for a right passphrase fails.
    assert!(d.unlock(&pw("five"), Some(KeyslotId::new(1))).is_err());
    // Slot in use.
    assert!(
        d.add_key(
            &pw("one"),
            &pw("x"),
            &NewKeyslot {
                id: Some(two),
                ..params.clone()
            }
        )
        .is_err()
    );

    let changed = d
        .change_key(&pw("two"), &pw("deux"), None, &fast())
        .unwrap();
    assert_eq!(changed, two);
    assert!(d.unlock(&pw("two"), None).is_err());
    assert_eq!(d.unlock(&pw("deux"), None).unwrap().0, two);

    assert_eq!(d.remove_key(&pw("deux")).unwrap(), two);
    assert!(d.unlock(&pw("deux"), None).is_err());
    d.kill_slot(five).unwrap();
    assert!(d.unlock(&pw("five"), None).is_err());
    assert!(d.kill_slot(five).is_err());
    let d = Luks2Device::open(d.into_inner()).unwrap();
    assert_eq!(d.header().metadata.keyslots.len(), 1);
    assert_eq!(
        d.unlock(&pw("one"), None).unwrap().1.as_bytes(),
        vk.as_bytes()
    );
}

#[test]
fn priorities() {
    let mut d = formatted();
    let params = NewKeyslot {
        pbkdf: fast(),
        ..Default::default()
    };
    // The same passphrase in slots 0 and 1: slot 0 is tried first, unless 1 is preferred.
    let one = d.add_key(&pw("one"), &pw("one"), &params).unwrap();
    assert_eq!(d.unlock(&pw("one"), None).unwrap().0, KeyslotId::new(0));
    d.set_priority(one, Priority::Prefer).unwrap();
    assert_eq!(d.unlock(&pw("one"), None).unwrap().0, one);
    // Ignored slots are skipped unless named.
    d.set_priority(KeyslotId::new(0), Priority::Ignore).unwrap();
    d.set_priority(one, Priority::Ignore).unwrap();
    // No usable keyslot: cryptsetup's exit code 1, not a bad passphrase.
    assert_eq!(
        d.unlock(&pw("one"), None).unwrap_err().kind(),
        ErrorKind::InvalidArgument
    );
    assert!(d.unlock(&pw("one"), Some(one)).is_ok());
}

#[test]
fn pbkdf2_keyslots_and_hashes() {
    for hash in HashAlgorithm::ALL {
        let pbkdf = PbkdfOptions::fast_for_tests(KdfKind::Pbkdf2(hash), 0);
        let o = FormatOptions {
            pbkdf,
            key_size: 32,
            ..Default::default()
        };
        let (d, _) = Luks2Device::format(MemDevice::new(20 * MIB), &pw("p"), &o).unwrap();
        let (_, vk) = d.unlock(&pw("p"), None).unwrap();
        assert_eq!(vk.len(), 32);
        let md = &d.header().metadata;
        let ks = md.keyslots[&KeyslotId::new(0)].as_luks2().unwrap();
        assert_eq!(ks.af.hash, hash.name());
        assert_eq!(ks.area.size, 128 * 1024);
    }
}

#[test]
fn tokens() {
    let mut d = formatted();
    let t = d
        .add_token(
            r#"{"type":"onmetal-kms","keyslots":[],"key":"k1"}"#,
            None,
            Some(KeyslotId::new(0)),
        )
        .unwrap();
    assert_eq!(t, TokenId::new(0));
    let json = d.export_token(t).unwrap();
    assert_eq!(
        json,
        r#"{"type":"onmetal-kms","keyslots":["0"],"key":"k1"}"#
    );
    assert_eq!(d.tokens(), vec![(t, "onmetal-kms".to_owned())]);
    for bad in [
        r#"{"type":"luks2-tpm","keyslots":[]}"#,
        r#"{"keyslots":[]}"#,
        r#"{"type":"x","keyslots":["7"]}"#,
        r#"{"type":"luks2-keyring","keyslots":[]}"#,
        "not json",
    ] {
        assert_eq!(
            d.add_token(bad, None, None).unwrap_err().kind(),
            ErrorKind::InvalidArgument,
            "{bad}"
        );
    }
    d.add_token(
        r#"{"type":"luks2-keyring","keyslots":[],"key_description":"d"}"#,
        Some(TokenId::new(3)),
        None,
    )
    .unwrap();
    assert!(
        d.add_token(r#"{"type":"x","keyslots":[]}"#, Some(TokenId::new(3)), None)
            .is_err()
    );
    d.remove_token(t).unwrap();
    assert!(d.export_token(t).is_err());
    let d = Luks2Device::open(d.into_inner()).unwrap();
    assert_eq!(d.tokens().len(), 1);
}

#[test]
fn erase_destroys_all_keyslots() {
    let mut d = formatted();
    d.erase().unwrap();
    assert!(d.header().metadata.keyslots.is_empty());
    let d = Luks2Device::open(d.into_inner()).unwrap();
    assert_eq!(
        d.unlock(&pw("one"), None).unwrap_err().kind(),
        ErrorKind::InvalidArgument
    );
}

#[test]
fn null_cipher_keyslot_never_opens_with_a_passphrase() {
    // CVE-2025-59054: rewrite keyslot 0 to claim cipher_null; even the right passphrase must not
    // open it, and no KDF must run for it.
    let d = formatted();
    let mut md = d.header().metadata.clone();
    if let Some(luks2::metadata::Keyslot::Luks2(k)) = md.keyslots.get_mut(&KeyslotId::new(0)) {
        k.area.encryption = "cipher_null-ecb".into();
    }
    let e = luks2::keyslot::unlock(d.device(), &md, b"one", Some(KeyslotId::new(0))).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::BadPassphrase);
    let e = luks2::keyslot::unlock(d.device(), &md, b"one", None).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::BadPassphrase);
}

#[test]
fn backup_and_restore() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("img");
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&img)
        .unwrap();
    f.set_len(20 * MIB as u64).unwrap();
    let (mut d, _) = Luks2Device::format(f, &pw("one"), &opts()).unwrap();
    let bak = dir.path().join("hdr.bak");
    let n = d.header_backup(&bak).unwrap();
    assert_eq!(n, 16 * MIB as u64);
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&bak).unwrap().permissions().mode() & 0o777,
        0o400
    );
    assert!(
        d.header_backup(&bak).is_err(),
        "must not overwrite an existing backup"
    );
    // Lose the keyslot, restore, it opens again.
    d.kill_slot(KeyslotId::new(0)).unwrap();
    assert!(d.unlock(&pw("one"), None).is_err());
    let mut f = d.into_inner();
    luks2::device::header_restore(&mut f, &bak).unwrap();
    let d = Luks2Device::open(f).unwrap();
    assert!(d.unlock(&pw("one"), None).is_ok());
    // A corrupted backup is refused.
    let bad = dir.path().join("bad.bak");
    let mut bytes = std::fs::read(&bak).unwrap();
    bytes[200] ^= 1;
    std::fs::write(&bad, bytes).unwrap();
    let mut f = d.into_inner();
    // Both copies are checked; break the secondary too.
    let mut bytes = std::fs::read(&bad).unwrap();
    bytes[16384 + 200] ^= 1;
    std::fs::write(&bad, bytes).unwrap();
    assert!(luks2::device::header_restore(&mut f, &bad).is_err());
}

#[test]
fn repair_rewrites_a_damaged_copy() {
    let d = formatted();
    let mut dev = d.into_inner();
    dev.as_mut_slice()[300] ^= 0xff; // inside the primary's salt: checksum breaks
    let (_, report) = Luks2Device::open_with_report(dev.clone()).unwrap();
    assert!(report.needs_repair());
    luks2::device::repair(&mut dev).unwrap();
    let (d, report) = Luks2Device::open_with_report(dev).unwrap();
    assert!(!report.needs_repair());
    assert!(d.unlock(&pw("one"), None).is_ok());
    // With a foreign signature too (swap magic at the end of the first page), every operation
    // refuses the device as cryptsetup does ("ambiguous signatures", exit 1), but an explicit
    // repair proceeds, as `cryptsetup repair` does.
    let mut dev = d.into_inner();
    dev.as_mut_slice()[300] ^= 0xff;
    dev.as_mut_slice()[4086..4096].copy_from_slice(b"SWAPSPACE2");
    let e = Luks2Device::open(dev.clone()).unwrap_err();
    assert!(matches!(e, luks2::Error::AmbiguousSignatures { .. }), "{e}");
    assert_eq!(e.kind().exit_code(), 1);
    luks2::device::repair(&mut dev).unwrap();
    assert!(Luks2Device::open(dev).is_ok());
}

#[test]
fn truncated_or_damaged_keyslot_areas_fail_cleanly() {
    let d = formatted();
    let full = d.into_inner().into_vec();
    // Cut the device inside the keyslot area: refused as a wrong device (as cryptsetup does).
    let cut = MemDevice::from_vec(full[..64 * 1024].to_vec());
    assert_eq!(
        Luks2Device::open(cut).unwrap_err().kind(),
        ErrorKind::WrongDevice
    );
    // Flip a bit of the encrypted key material: the digest no longer matches.
    let mut damaged = full.clone();
    damaged[32768 + 1000] ^= 1;
    let d = Luks2Device::open(MemDevice::from_vec(damaged)).unwrap();
    assert_eq!(
        d.unlock(&pw("one"), None).unwrap_err().kind(),
        ErrorKind::BadPassphrase
    );
    // An unsupported area cipher or AF hash in the metadata is reported, not a panic.
    let d = Luks2Device::open(MemDevice::from_vec(full)).unwrap();
    for (cipher, hash) in [
        ("serpent-xts-plain64", "sha256"),
        ("aes-xts-plain64", "whirlpool"),
    ] {
        let mut md = d.header().metadata.clone();
        if let Some(luks2::metadata::Keyslot::Luks2(k)) = md.keyslots.get_mut(&KeyslotId::new(0)) {
            k.area.encryption = cipher.into();
            k.af.hash = hash.into();
        }
        let e =
            luks2::keyslot::unlock(d.device(), &md, b"one", Some(KeyslotId::new(0))).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Unsupported, "{cipher} {hash}");
        let e = luks2::keyslot::unlock(d.device(), &md, b"one", None).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Unsupported, "{cipher} {hash}");
    }
}

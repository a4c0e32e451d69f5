//! Caller-set KDF limits (`KdfLimits`): the driver's preset opens the driver's own kind of volume
//! and refuses, before any KDF runs, what a crafted header could use to pin a CPU or exhaust
//! memory: costly PBKDF2 (keyslot or digest), any Argon2, too many keyslots to try.
#![allow(clippy::unwrap_used)]

use luks2::crypto::HashAlgorithm;
use luks2::crypto::calibrate::PbkdfOptions;
use luks2::crypto::kdf::{Argon2Variant, KdfKind, KdfLimits};
use luks2::format::FormatOptions;
use luks2::io::MemDevice;
use luks2::keyslot::{self, NewKeyslot};
use luks2::metadata::{DigestId, DigestKind, Kdf, Keyslot, KeyslotId, Metadata};
use luks2::{ErrorKind, Luks2Device, Passphrase};

const MIB: usize = 1024 * 1024;

fn pw(s: &str) -> Passphrase {
    Passphrase::from_bytes(s.as_bytes())
}

fn pbkdf2() -> PbkdfOptions {
    PbkdfOptions::fast_for_tests(KdfKind::Pbkdf2(HashAlgorithm::Sha256), 0)
}

fn argon2() -> PbkdfOptions {
    PbkdfOptions::fast_for_tests(KdfKind::Argon2(Argon2Variant::Argon2id), 64)
}

fn formatted(pbkdf: PbkdfOptions) -> Luks2Device<MemDevice> {
    let opts = FormatOptions {
        pbkdf,
        ..Default::default()
    };
    Luks2Device::format(MemDevice::new(20 * MIB), &pw("one"), &opts)
        .unwrap()
        .0
}

fn driver(d: Luks2Device<MemDevice>) -> Luks2Device<MemDevice> {
    d.with_kdf_limits(KdfLimits::driver())
}

#[test]
fn driver_limits_open_the_drivers_own_volume() {
    let d = driver(formatted(pbkdf2()));
    assert_eq!(d.unlock(&pw("one"), None).unwrap().0, KeyslotId::new(0));
    assert_eq!(
        d.unlock(&pw("two"), None).unwrap_err().kind(),
        ErrorKind::BadPassphrase
    );
}

#[test]
fn driver_limits_refuse_argon2_as_not_our_volume() {
    let d = formatted(argon2());
    // The command-line default (cryptsetup's limits) opens it...
    assert!(d.unlock(&pw("one"), None).is_ok());
    // ...the driver's refuses it, with or without a keyslot number.
    let d = driver(d);
    for slot in [None, Some(KeyslotId::new(0))] {
        let e = d.unlock(&pw("one"), slot).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Unsupported, "{e}");
        assert!(
            e.to_string().contains("not a volume made by this driver"),
            "{e}"
        );
    }
}

fn keyslot_iterations(md: &mut Metadata, id: KeyslotId, n: i64) {
    match md.keyslots.get_mut(&id) {
        Some(Keyslot::Luks2(k)) => match &mut k.kdf {
            Kdf::Pbkdf2 { iterations, .. } => *iterations = n,
            other => panic!("not pbkdf2: {other:?}"),
        },
        _ => panic!("no luks2 keyslot {id}"),
    }
}

fn digest_iterations(md: &mut Metadata, n: i64) {
    match &mut md.digests.get_mut(&DigestId::new(0)).unwrap().kind {
        DigestKind::Pbkdf2(p) => p.iterations = n,
        other => panic!("not pbkdf2: {other:?}"),
    }
}

/// A header claiming u32::MAX PBKDF2 iterations (hours of CPU under cryptsetup's limits) is
/// refused at once under the driver's, for the keyslot KDF and for the digest alike.
#[test]
fn hostile_iteration_counts_are_refused_before_any_kdf_runs() {
    let d = formatted(pbkdf2());
    let limits = KdfLimits::driver();
    let max = i64::from(u32::MAX);

    let mut md = d.header().metadata.clone();
    keyslot_iterations(&mut md, KeyslotId::new(0), max);
    for slot in [None, Some(KeyslotId::new(0))] {
        let e = keyslot::unlock_with_limits(d.device(), &md, b"one", slot, &limits).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Unsupported, "{e}");
        assert!(e.to_string().contains("exceeds the limit of 10000"), "{e}");
    }

    // The digest is checked before the keyslot's KDF runs, too: with a wrong passphrase the
    // merged key would otherwise be hashed u32::MAX times.
    let mut md = d.header().metadata.clone();
    digest_iterations(&mut md, max);
    let e = keyslot::unlock_with_limits(d.device(), &md, b"wrong", None, &limits).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unsupported, "{e}");
    assert!(e.to_string().contains("digest"), "{e}");

    // Just at the bound still opens (and shows the bound is inclusive).
    let mut md = d.header().metadata.clone();
    digest_iterations(&mut md, 10_000);
    let e = keyslot::unlock_with_limits(d.device(), &md, b"one", None, &limits).unwrap_err();
    // (The stored digest was computed with 1000 iterations, so it no longer matches.)
    assert_eq!(e.kind(), ErrorKind::BadPassphrase, "{e}");
}

#[test]
fn argon2_time_and_memory_limits_are_the_callers() {
    let d = formatted(argon2());
    let md = &d.header().metadata;
    let strict_time = KdfLimits {
        argon2_max_time: 3,
        ..KdfLimits::UNLOCK
    };
    let e = keyslot::unlock_with_limits(d.device(), md, b"one", None, &strict_time).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unsupported, "{e}");
    let strict_memory = KdfLimits {
        argon2_max_memory_kib: 63,
        ..KdfLimits::UNLOCK
    };
    let e = keyslot::unlock_with_limits(d.device(), md, b"one", None, &strict_memory).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::OutOfMemory, "{e}");
    let exact = KdfLimits {
        argon2_max_time: 4,
        argon2_max_memory_kib: 64,
        argon2_max_lanes: 1,
        ..KdfLimits::UNLOCK
    };
    assert!(keyslot::unlock_with_limits(d.device(), md, b"one", None, &exact).is_ok());
}

#[test]
fn too_many_keyslots_to_try_is_refused_up_front() {
    let mut d = formatted(pbkdf2());
    for i in 1..5 {
        let params = NewKeyslot {
            pbkdf: pbkdf2(),
            ..Default::default()
        };
        let id = d
            .add_key(&pw("one"), &pw(&format!("k{i}")), &params)
            .unwrap();
        assert_eq!(id, KeyslotId::new(i));
    }
    // Five candidates: cryptsetup's limits try them all...
    assert_eq!(d.unlock(&pw("k4"), None).unwrap().0, KeyslotId::new(4));
    // ...the driver's refuse the header before running any KDF, even for the first keyslot's
    // passphrase; naming the keyslot still works.
    let d = driver(d);
    let e = d.unlock(&pw("one"), None).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unsupported, "{e}");
    assert!(e.to_string().contains("5 keyslots"), "{e}");
    assert!(d.unlock(&pw("k4"), Some(KeyslotId::new(4))).is_ok());
}

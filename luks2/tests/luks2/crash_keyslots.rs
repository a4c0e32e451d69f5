//! Crash safety of format, add-key, change-key, remove-key and token updates: a failure injected
//! at every write/sync step (clean, and torn: half of the failing write lands) leaves a device
//! that opens to the old or the new state, never neither. For add-key and remove-key each
//! crashed image is also judged by cryptsetup (when installed), which must agree with us.
//! Crash after crash: an update that starts from an image a crash left with the two header
//! copies one generation apart must not be able to fall back to the older copy.
#![allow(clippy::unwrap_used, clippy::cast_possible_truncation)]

use luks2::crypto::calibrate::PbkdfOptions;
use luks2::crypto::kdf::{Argon2Variant, KdfKind};
use luks2::format::FormatOptions;
use luks2::io::{FaultyDevice, MemDevice, Op};
use luks2::keyslot::NewKeyslot;
use luks2::metadata::{KeyslotId, TokenId};
use luks2::{ErrorKind, Luks2Device, Passphrase};

const MIB: u64 = 1024 * 1024;

fn fast() -> PbkdfOptions {
    PbkdfOptions::fast_for_tests(KdfKind::Argon2(Argon2Variant::Argon2id), 32)
}

fn opts() -> FormatOptions {
    FormatOptions {
        pbkdf: fast(),
        keyslots_size: Some(MIB),
        ..Default::default()
    }
}

fn pw(s: &str) -> Passphrase {
    Passphrase::from_bytes(s.as_bytes())
}

/// Which passphrases open `dev` (None: the header does not even read).
fn opens(dev: &MemDevice, passes: &[&str]) -> Option<Vec<bool>> {
    let d = Luks2Device::open(dev.clone()).ok()?;
    Some(
        passes
            .iter()
            .map(|p| match d.unlock(&pw(p), None) {
                Ok(_) => true,
                Err(e) => {
                    assert!(
                        matches!(
                            e.kind(),
                            ErrorKind::BadPassphrase | ErrorKind::InvalidArgument
                        ),
                        "unexpected error {e}"
                    );
                    false
                }
            })
            .collect(),
    )
}

/// Runs `op` with a crash at every step (clean and torn); `judge` classifies each result.
fn crash_everywhere(
    name: &str,
    base: &MemDevice,
    op: impl Fn(&mut FaultyDevice<MemDevice>) -> luks2::Result<()>,
    judge: impl Fn(&MemDevice) -> Result<&'static str, String>,
) -> usize {
    let mut counting = FaultyDevice::counting(base.clone());
    op(&mut counting).unwrap();
    let steps = counting.ops().len();
    assert_eq!(
        judge(&counting.into_inner()),
        Ok("new"),
        "{name}: uncrashed run"
    );
    let mut seen = std::collections::BTreeMap::new();
    for n in 0..steps {
        for torn in [false, true] {
            let mut dev = if torn {
                FaultyDevice::torn_at(base.clone(), n)
            } else {
                FaultyDevice::failing_at(base.clone(), n)
            };
            assert!(op(&mut dev).is_err(), "{name}: step {n} did not fail");
            let after = dev.into_inner();
            match judge(&after) {
                Ok(state) => *seen.entry(state).or_insert(0) += 1,
                Err(e) => panic!("{name}: crash at step {n} (torn {torn}) left neither state: {e}"),
            }
        }
    }
    eprintln!(
        "{name}: {steps} write steps, {} crash cases, outcomes {seen:?}",
        2 * steps
    );
    2 * steps
}

fn formatted() -> MemDevice {
    let (d, _) = Luks2Device::format(MemDevice::new(4 * MIB as usize), &pw("p0"), &opts()).unwrap();
    let mut d = d;
    d.add_key(
        &pw("p0"),
        &pw("p1"),
        &NewKeyslot {
            id: Some(KeyslotId::new(1)),
            pbkdf: fast(),
            priority: None,
        },
    )
    .unwrap();
    d.into_inner()
}

/// Cryptsetup's verdict on an image: which key files open it.
fn cryptsetup_opens(dev: &MemDevice, passes: &[&str]) -> Option<Vec<bool>> {
    let cs = testkit::cryptsetup::cryptsetup()?;
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("img");
    std::fs::write(&img, dev.as_slice()).unwrap();
    let sc = testkit::cryptsetup::Scratch::new(&cs);
    Some(
        passes
            .iter()
            .map(|p| {
                let k = sc.key("k", p.as_bytes());
                sc.test_passphrase(&img, &k, None) == 0
            })
            .collect(),
    )
}

#[test]
fn format_crashes_leave_no_header_or_a_complete_one() {
    let base = MemDevice::new(4 * MIB as usize);
    crash_everywhere(
        "format",
        &base,
        |dev| {
            luks2::format::format(dev, b"p0", &opts())?;
            Ok(())
        },
        |dev| match opens(dev, &["p0"]) {
            None => Ok("old (no LUKS2 header)"),
            Some(v) if v == [true] => Ok("new"),
            Some(v) => Err(format!("header present but p0 opens: {v:?}")),
        },
    );
}

#[test]
fn add_key_crashes() {
    let (d, _) = Luks2Device::format(MemDevice::new(4 * MIB as usize), &pw("p0"), &opts()).unwrap();
    let base = d.into_inner();
    let n = crash_everywhere(
        "add-key",
        &base,
        |dev| {
            let mut h = luks2::header::read(&*dev)?;
            let (_, vk) = luks2::keyslot::unlock(&*dev, &h.metadata, b"p0", None)?;
            luks2::keyslot::add_keyslot(
                dev,
                &mut h,
                &vk,
                b"p1",
                &NewKeyslot {
                    pbkdf: fast(),
                    ..Default::default()
                },
            )?;
            Ok(())
        },
        |dev| {
            let ours = opens(dev, &["p0", "p1"]).ok_or("header unreadable")?;
            if let Some(theirs) = cryptsetup_opens(dev, &["p0", "p1"])
                && theirs != ours
            {
                return Err(format!("cryptsetup {theirs:?} vs us {ours:?}"));
            }
            match ours.as_slice() {
                [true, false] => Ok("old"),
                [true, true] => Ok("new"),
                other => Err(format!("{other:?}")),
            }
        },
    );
    assert!(n > 10);
}

#[test]
fn remove_and_change_key_crashes() {
    let base = formatted();
    crash_everywhere(
        "remove-key",
        &base,
        |dev| {
            let mut h = luks2::header::read(&*dev)?;
            let (id, _) = luks2::keyslot::unlock(&*dev, &h.metadata, b"p1", None)?;
            luks2::keyslot::kill_keyslot(dev, &mut h, id)
        },
        |dev| {
            let ours = opens(dev, &["p0", "p1"]).ok_or("header unreadable")?;
            if let Some(theirs) = cryptsetup_opens(dev, &["p0", "p1"])
                && theirs != ours
            {
                return Err(format!("cryptsetup {theirs:?} vs us {ours:?}"));
            }
            match ours.as_slice() {
                [true, true] => Ok("old"),
                [true, false] => Ok("new"),
                other => Err(format!("{other:?}")),
            }
        },
    );
    crash_everywhere(
        "change-key",
        &base,
        |dev| {
            let mut h = luks2::header::read(&*dev)?;
            let (id, vk) = luks2::keyslot::unlock(&*dev, &h.metadata, b"p1", None)?;
            luks2::keyslot::replace_keyslot(dev, &mut h, id, &vk, b"p2", &fast())
        },
        |dev| match opens(dev, &["p0", "p1", "p2"])
            .ok_or("header unreadable")?
            .as_slice()
        {
            [true, true, false] => Ok("old"),
            [true, false, true] => Ok("new"),
            other => Err(format!("{other:?}")),
        },
    );
}

#[test]
fn token_update_crashes() {
    let base = formatted();
    let json = r#"{"type":"onmetal-kms","keyslots":["0"],"ref":"k"}"#;
    let state = |dev: &MemDevice| -> Result<&'static str, String> {
        let d = Luks2Device::open(dev.clone()).map_err(|e| e.to_string())?;
        if d.unlock(&pw("p0"), None).is_err() {
            return Err("p0 no longer opens".into());
        }
        Ok(if d.tokens().is_empty() {
            "no token"
        } else {
            "token"
        })
    };
    crash_everywhere(
        "token add",
        &base,
        |dev| {
            let mut h = luks2::header::read(&*dev)?;
            luks2::token::add_token(dev, &mut h, json, None, None)?;
            Ok(())
        },
        |dev| state(dev).map(|s| if s == "token" { "new" } else { "old" }),
    );
    let mut with_token = FaultyDevice::counting(base.clone());
    {
        let mut h = luks2::header::read(&with_token).unwrap();
        luks2::token::add_token(&mut with_token, &mut h, json, None, None).unwrap();
    }
    let with_token = with_token.into_inner();
    crash_everywhere(
        "token remove",
        &with_token,
        |dev| {
            let mut h = luks2::header::read(&*dev)?;
            luks2::token::remove_token(dev, &mut h, TokenId::new(0))
        },
        |dev| state(dev).map(|s| if s == "token" { "old" } else { "new" }),
    );
}

/// Runs `op` on `base` and crashes it right after the primary copy was written, before the
/// secondary: the primary then holds generation N, the secondary N-1.
fn crash_between_copies(
    base: &MemDevice,
    op: impl Fn(&mut FaultyDevice<MemDevice>) -> luks2::Result<()>,
) -> MemDevice {
    let hdr_size = luks2::header::read(base).unwrap().hdr_size();
    let mut counting = FaultyDevice::counting(base.clone());
    op(&mut counting).unwrap();
    let first_secondary_write = counting
        .ops()
        .iter()
        .position(|o| matches!(o, Op::Write { offset, .. } if *offset == hdr_size))
        .unwrap();
    let mut dev = FaultyDevice::failing_at(base.clone(), first_secondary_write);
    assert!(op(&mut dev).is_err());
    let dev = dev.into_inner();
    let (h, report) = luks2::header::read_with_report(&dev).unwrap();
    assert!(
        matches!(report.secondary, luks2::header::CopyStatus::Stale { .. }),
        "{report:?}"
    );
    assert_eq!(h.seqid(), luks2::header::read(base).unwrap().seqid() + 1);
    dev
}

/// Judge for crash-after-crash: the header reads, every keyslot in it opens with the passphrase
/// it was made with (`slots[i]` for keyslot i), and the keyslot set is `old` or `new`.
fn judge_slots(
    dev: &MemDevice,
    passes: &[(u32, &str)],
    old: &[u32],
    new: &[u32],
) -> Result<&'static str, String> {
    let d = Luks2Device::open(dev.clone()).map_err(|e| e.to_string())?;
    let ids: Vec<u32> = d
        .header()
        .metadata
        .keyslots
        .keys()
        .map(|k| k.get())
        .collect();
    for &id in &ids {
        let pass = passes
            .iter()
            .find(|(i, _)| *i == id)
            .map(|(_, p)| *p)
            .ok_or_else(|| format!("unexpected keyslot {id}"))?;
        d.unlock(&pw(pass), Some(KeyslotId::new(id))).map_err(|e| {
            format!("keyslot {id} in the header no longer opens with its passphrase: {e}")
        })?;
    }
    if ids == old {
        Ok("old")
    } else if ids == new {
        Ok("new")
    } else {
        Err(format!("keyslots {ids:?}"))
    }
}

#[test]
fn remove_key_crash_then_add_key_crashes() {
    // Generation N-1: keyslots 0 (p0) and 1 (p1). A remove-key of keyslot 1 crashes between the
    // copies: primary N (no keyslot 1), secondary N-1 (keyslot 1, area not yet wiped).
    let base = crash_between_copies(&formatted(), |dev| {
        let mut h = luks2::header::read(&*dev)?;
        luks2::keyslot::kill_keyslot(dev, &mut h, KeyslotId::new(1))
    });
    // The next add-key reuses keyslot 1's area (free in N) for p2 as keyslot 1. A crash while it
    // writes the primary must not leave the N-1 copy, whose keyslot 1 points at p2's material.
    crash_everywhere(
        "remove-key crash, then add-key",
        &base,
        |dev| {
            let mut h = luks2::header::read(&*dev)?;
            let (_, vk) = luks2::keyslot::unlock(&*dev, &h.metadata, b"p0", None)?;
            luks2::keyslot::add_keyslot(
                dev,
                &mut h,
                &vk,
                b"p2",
                &NewKeyslot {
                    pbkdf: fast(),
                    ..Default::default()
                },
            )?;
            Ok(())
        },
        |dev| judge_slots(dev, &[(0, "p0"), (1, "p2")], &[0], &[0, 1]),
    );
}

#[test]
fn add_key_crash_then_change_key_crashes() {
    // A crash between the copies of an add-key (keyslot 1, p1), then a change-key of keyslot 0
    // crashing at every step: the header never goes back to the generation without keyslot 1.
    let (d, _) = Luks2Device::format(MemDevice::new(4 * MIB as usize), &pw("p0"), &opts()).unwrap();
    let base = crash_between_copies(&d.into_inner(), |dev| {
        let mut h = luks2::header::read(&*dev)?;
        let (_, vk) = luks2::keyslot::unlock(&*dev, &h.metadata, b"p0", None)?;
        luks2::keyslot::add_keyslot(
            dev,
            &mut h,
            &vk,
            b"p1",
            &NewKeyslot {
                id: Some(KeyslotId::new(1)),
                pbkdf: fast(),
                priority: None,
            },
        )?;
        Ok(())
    });
    crash_everywhere(
        "add-key crash, then change-key",
        &base,
        |dev| {
            let mut h = luks2::header::read(&*dev)?;
            let (id, vk) = luks2::keyslot::unlock(&*dev, &h.metadata, b"p0", None)?;
            luks2::keyslot::replace_keyslot(dev, &mut h, id, &vk, b"p2", &fast())
        },
        |dev| {
            let d = Luks2Device::open(dev.clone()).map_err(|e| e.to_string())?;
            let ids: Vec<u32> = d
                .header()
                .metadata
                .keyslots
                .keys()
                .map(|k| k.get())
                .collect();
            if ids != [0, 1] {
                return Err(format!("keyslots {ids:?}: the add-key was lost"));
            }
            d.unlock(&pw("p1"), Some(KeyslotId::new(1)))
                .map_err(|e| format!("p1: {e}"))?;
            match (
                d.unlock(&pw("p0"), Some(KeyslotId::new(0))).is_ok(),
                d.unlock(&pw("p2"), Some(KeyslotId::new(0))).is_ok(),
            ) {
                (true, false) => Ok("old"),
                (false, true) => Ok("new"),
                other => Err(format!("keyslot 0 opens with (p0, p2) = {other:?}")),
            }
        },
    );
}

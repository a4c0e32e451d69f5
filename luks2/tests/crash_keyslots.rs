//! Crash safety of format, add-key, change-key, remove-key and token updates: a failure injected
//! at every write/sync step (clean, and torn: half of the failing write lands) leaves a device
//! that opens to the old or the new state, never neither. For add-key and remove-key each
//! crashed image is also judged by cryptsetup (when installed), which must agree with us.
#![allow(clippy::unwrap_used, clippy::cast_possible_truncation)]

mod common;

use luks2::crypto::calibrate::PbkdfOptions;
use luks2::crypto::kdf::{Argon2Variant, KdfKind};
use luks2::format::FormatOptions;
use luks2::io::{FaultyDevice, MemDevice};
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
    let cs = common::cryptsetup()?;
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("img");
    std::fs::write(&img, dev.as_slice()).unwrap();
    let sc = common::Scratch::new(&cs);
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

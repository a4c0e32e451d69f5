//! JSON members the model does not interpret are data: they survive every
//! header write in place, and a keyslot number reused after a removal starts clean.
#![allow(clippy::unwrap_used)]

use luks2::crypto::{Argon2Variant, KdfKind, PbkdfOptions};
use luks2::format::FormatOptions;
use luks2::header::binary::{self, BinaryHeader};
use luks2::io::{Device, MemDevice};
use luks2::keyslot::NewKeyslot;
use luks2::metadata::KeyslotId;
use luks2::{Luks2Device, Passphrase};

const MIB: usize = 1024 * 1024;

fn fast() -> PbkdfOptions {
    PbkdfOptions::fast_for_tests(KdfKind::Argon2(Argon2Variant::Argon2id), 32)
}

fn pw(s: &str) -> Passphrase {
    Passphrase::from_bytes(s.as_bytes())
}

fn slot(id: u32) -> NewKeyslot {
    NewKeyslot {
        id: Some(KeyslotId::new(id)),
        pbkdf: fast(),
        priority: None,
    }
}

/// Rewrites both copies' JSON with `f` applied (checksums resealed).
fn patch_json(dev: &mut MemDevice, f: impl Fn(&mut serde_json::Value)) {
    let bytes = dev.as_slice().to_vec();
    let hdr = usize::try_from(
        BinaryHeader::parse(&bytes[..binary::BIN_HEADER_LEN])
            .unwrap()
            .hdr_size,
    )
    .unwrap();
    let json = &bytes[binary::BIN_HEADER_LEN..hdr];
    let end = json.iter().position(|&b| b == 0).unwrap();
    let mut v: serde_json::Value = serde_json::from_slice(&json[..end]).unwrap();
    f(&mut v);
    let mut area = serde_json::to_vec(&v).unwrap();
    area.resize(hdr - binary::BIN_HEADER_LEN, 0);
    for off in [0, hdr] {
        let bin = BinaryHeader::parse(&bytes[off..off + binary::BIN_HEADER_LEN]).unwrap();
        let sealed = binary::seal(&bin, &area).unwrap();
        dev.write_all_at(off as u64, &sealed).unwrap();
        dev.write_all_at((off + binary::BIN_HEADER_LEN) as u64, &area)
            .unwrap();
    }
}

fn stored_json(dev: &MemDevice) -> serde_json::Value {
    Luks2Device::open(dev.clone())
        .unwrap()
        .header()
        .metadata
        .to_value()
}

#[test]
fn unknown_members_survive_writes_and_a_reused_keyslot_number_starts_clean() {
    let opts = FormatOptions {
        pbkdf: fast(),
        keyslots_size: Some(MIB as u64),
        ..Default::default()
    };
    let (mut d, _) = Luks2Device::format(MemDevice::new(4 * MIB), &pw("p0"), &opts).unwrap();
    d.add_key(&pw("p0"), &pw("p1"), &slot(1)).unwrap();
    let mut dev = d.into_inner();
    patch_json(&mut dev, |v| {
        v["config"]["x-onmetal"] = serde_json::json!({"b": 1, "a": 2});
        v["keyslots"]["1"]["x-vendor"] = "slot one".into();
        v["x-top"] = serde_json::json!([1]);
    });

    let mut d = Luks2Device::open(dev).unwrap();
    // One handle: remove keyslot 1, then add a new keyslot 1 without re-reading.
    d.kill_slot(KeyslotId::new(1)).unwrap();
    d.add_key(&pw("p0"), &pw("p2"), &slot(1)).unwrap();
    let v = stored_json(d.device());
    assert_eq!(v["config"]["x-onmetal"].to_string(), r#"{"b":1,"a":2}"#);
    assert_eq!(v["x-top"], serde_json::json!([1]));
    assert!(
        v["keyslots"]["1"].get("x-vendor").is_none(),
        "the removed keyslot's member went to the new one: {}",
        v["keyslots"]["1"]
    );
    // The unknown config member keeps its place after json_size and keyslots_size.
    let config: Vec<_> = v["config"].as_object().unwrap().keys().cloned().collect();
    assert_eq!(config, ["json_size", "keyslots_size", "x-onmetal"]);
    assert!(d.unlock(&pw("p2"), None).is_ok());
}

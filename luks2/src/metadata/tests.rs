//! Unit tests: round trips, rejection of malformed metadata, allocator.

use super::*;
use serde_json::json;

/// The JSON cryptsetup 2.6.1 wrote for `luksFormat --type luks2 --pbkdf pbkdf2
/// --pbkdf-force-iterations 1000` on a 20 MiB file, followed by `token import`.
const CRYPTSETUP_JSON: &str = r#"{"keyslots":{"0":{"type":"luks2","key_size":64,"af":{"type":"luks1","stripes":4000,"hash":"sha256"},"area":{"type":"raw","offset":"32768","size":"258048","encryption":"aes-xts-plain64","key_size":64},"kdf":{"type":"pbkdf2","hash":"sha256","iterations":1000,"salt":"7OFauQQ6gbweVG84cGo/vyoBeVHQW6w7bGP9w4/yuA0="}}},"tokens":{"0":{"type":"x","keyslots":["0"],"b":1,"a":[1,2]}},"segments":{"0":{"type":"crypt","offset":"16777216","size":"dynamic","iv_tweak":"0","encryption":"aes-xts-plain64","sector_size":4096}},"digests":{"0":{"type":"pbkdf2","keyslots":["0"],"segments":["0"],"hash":"sha256","iterations":1000,"salt":"nQ4lfjb8IP0xHF2OqX6WyH2nycE9bW60wNRIce8QaGA=","digest":"8rifaC/dOip4bohcCmwnJQFw/F+DuKiBvSxToZ3JjPA="}},"config":{"json_size":"12288","keyslots_size":"16744448"}}"#;

const HDR: u64 = 16384;

fn area(text: &str) -> Vec<u8> {
    let mut a = text.as_bytes().to_vec();
    a.resize(12288, 0);
    a
}

fn sample() -> Value {
    serde_json::from_str(CRYPTSETUP_JSON).unwrap()
}

fn check(v: Value) -> Result<Metadata> {
    Metadata::from_value(v, HDR)
}

#[test]
fn parses_cryptsetup_output_and_serializes_it_byte_for_byte() {
    let m = Metadata::parse(&area(CRYPTSETUP_JSON), HDR).unwrap();
    assert_eq!(m.to_json(), CRYPTSETUP_JSON);
    assert_eq!(m.to_json_area().unwrap(), area(CRYPTSETUP_JSON));
    let ks = m.keyslots[&KeyslotId::new(0)].as_luks2().unwrap();
    assert_eq!(ks.key_size, 64);
    assert_eq!(ks.area.offset, 32768);
    assert_eq!(ks.area.size, 258048);
    match ks.kdf_params().unwrap() {
        KdfParams::Pbkdf2 {
            hash,
            iterations,
            salt,
        } => {
            assert_eq!(
                (hash.as_str(), iterations, salt.len()),
                ("sha256", 1000, 32)
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(m.data_offset(), 16 * 1024 * 1024);
    assert_eq!(m.header_area_size(), 16 * 1024 * 1024);
    assert_eq!(
        m.tokens[&TokenId::new(0)].fields.keys().collect::<Vec<_>>(),
        ["b", "a"]
    );
    assert!(!m.is_read_only());
}

#[test]
fn round_trip_parse_serialize_parse() {
    let mut v = sample();
    v["keyslots"]["0"]["priority"] = json!(2);
    v["config"]["flags"] = json!(["allow-discards"]);
    v["config"]["requirements"] = json!({"mandatory": [], "other": 5});
    v["segments"]["0"]["flags"] = json!(["x"]);
    v["digests"]["1"] = json!({"type":"weird","keyslots":[],"segments":[],"z":null});
    let m = check(v).unwrap();
    let again = Metadata::parse(&m.to_json_area().unwrap(), HDR).unwrap();
    assert_eq!(again, m);
    assert_eq!(again.to_json(), m.to_json());
}

#[test]
fn accepts_escaped_slashes() {
    let text = CRYPTSETUP_JSON.replace("/", "\\/");
    let m = Metadata::parse(&area(&text), HDR).unwrap();
    assert_eq!(m.to_json(), CRYPTSETUP_JSON);
}

#[test]
fn json_area_framing() {
    // Leading byte must be '{'.
    assert!(Metadata::parse(&area(&format!(" {CRYPTSETUP_JSON}")), HDR).is_err());
    // Garbage after the JSON text.
    let mut a = area(CRYPTSETUP_JSON);
    a[CRYPTSETUP_JSON.len() + 10] = b'x';
    assert!(Metadata::parse(&a, HDR).is_err());
    // No NUL at all after it.
    let mut full = CRYPTSETUP_JSON.as_bytes().to_vec();
    full.resize(12288, b' ');
    assert!(Metadata::parse(&full, HDR).is_err());
    // JSON whitespace after the text is consumed (json-c does), other bytes are not.
    assert!(Metadata::parse(&area(&format!("{CRYPTSETUP_JSON} \t\r\n")), HDR).is_ok());
    assert!(Metadata::parse(&area(&format!("{CRYPTSETUP_JSON}\u{b}")), HDR).is_err());
    // Every truncation of the text fails.
    for cut in (0..CRYPTSETUP_JSON.len()).step_by(37) {
        assert!(
            Metadata::parse(&area(&CRYPTSETUP_JSON[..cut]), HDR).is_err(),
            "{cut}"
        );
    }
}

#[test]
fn u64_strings_follow_strtoull() {
    assert_eq!(parse_u64_field("18446744073709551615"), Some(u64::MAX));
    assert_eq!(parse_u64_field("18446744073709551616"), None);
    assert_eq!(parse_u64_field(""), Some(0));
    assert_eq!(parse_u64_field(" 12"), Some(12));
    assert_eq!(parse_u64_field("-1"), Some(u64::MAX));
    assert_eq!(parse_u64_field("12a"), None);
    assert_eq!(parse_u64_field(" "), None);
    assert_eq!(parse_u64_field("0x10"), None);
}

fn rejects(f: impl FnOnce(&mut Value)) {
    let mut v = sample();
    f(&mut v);
    let text = v.to_string();
    assert!(check(v).is_err(), "accepted {text}");
}

#[test]
fn rejects_malformed_metadata() {
    rejects(|v| {
        v.as_object_mut().unwrap().remove("tokens");
    });
    rejects(|v| v["segments"] = json!({}));
    rejects(|v| v["keyslots"]["x"] = v["keyslots"]["0"].clone());
    rejects(|v| v["keyslots"]["0"]["key_size"] = json!(-1));
    rejects(|v| v["keyslots"]["0"]["key_size"] = json!(4294967296u64));
    rejects(|v| v["keyslots"]["0"]["key_size"] = json!("64"));
    rejects(|v| v["keyslots"]["0"]["area"]["offset"] = json!("18446744073709551616"));
    rejects(|v| v["keyslots"]["0"]["area"]["offset"] = json!("4096"));
    rejects(|v| v["keyslots"]["0"]["area"]["offset"] = json!("+32768"));
    rejects(|v| v["keyslots"]["0"]["area"]["size"] = json!("0"));
    rejects(|v| v["keyslots"]["0"]["area"]["size"] = json!("16744449"));
    rejects(|v| v["keyslots"]["0"]["kdf"]["iterations"] = json!("1000"));
    rejects(|v| v["keyslots"]["0"]["af"]["type"] = json!("luks2"));
    rejects(|v| v["keyslots"]["0"]["area"]["type"] = json!("journal"));
    rejects(|v| {
        v["keyslots"]["1"] = v["keyslots"]["0"].clone();
        v["digests"]["0"]["keyslots"] = json!(["0", "1"]);
    });
    rejects(|v| v["digests"]["0"]["keyslots"] = json!([]));
    rejects(|v| v["digests"]["0"]["keyslots"] = json!(["0", "5"]));
    rejects(|v| v["digests"]["0"]["segments"] = json!([]));
    rejects(|v| v["tokens"]["0"]["keyslots"] = json!(["3"]));
    rejects(|v| v["tokens"]["0"]["keyslots"] = json!([0]));
    rejects(|v| {
        v["tokens"]["0"].as_object_mut().unwrap().remove("type");
    });
    rejects(|v| v["segments"]["1"] = v["segments"]["0"].clone());
    rejects(|v| v["segments"]["0"]["offset"] = json!("16777217"));
    rejects(|v| v["segments"]["0"]["sector_size"] = json!(1000));
    rejects(|v| v["segments"]["0"]["size"] = json!("0"));
    rejects(|v| v["segments"]["0"]["offset"] = json!("1048576"));
    rejects(|v| {
        let s = v["segments"]["0"].clone();
        v["segments"] = json!({ "1": s });
        v["digests"]["0"]["segments"] = json!(["1"]);
    });
    rejects(|v| v["config"]["json_size"] = json!("12289"));
    rejects(|v| v["config"]["json_size"] = json!(12288));
    rejects(|v| v["config"]["keyslots_size"] = json!("4097"));
    rejects(|v| v["config"]["flags"] = json!([1]));
    rejects(|v| v["config"]["requirements"] = json!({"mandatory": "x"}));
}

#[test]
fn kdf_glitch_repair_and_unknown_types_are_accepted() {
    let mut v = sample();
    v["keyslots"]["0"]["kdf"]["time"] = json!(4);
    let m = check(v).unwrap();
    assert!(matches!(
        m.keyslots[&KeyslotId::new(0)].as_luks2().unwrap().kdf,
        Kdf::Pbkdf2 { .. }
    ));

    let mut v = sample();
    v["keyslots"]["0"]["kdf"] = json!({"type": "scrypt", "n": 5});
    let m = check(v).unwrap();
    let ks = m.keyslots[&KeyslotId::new(0)].as_luks2().unwrap();
    assert!(matches!(ks.kdf_params(), Err(Error::Unsupported(_))));
}

#[test]
fn huge_kdf_costs_load_but_are_bounded_before_use() {
    let mut v = sample();
    v["keyslots"]["0"]["kdf"] =
        json!({"type":"argon2id","time":4,"memory":4294967295u64,"cpus":4,"salt":"AAAA"});
    let m = check(v).unwrap();
    let ks = m.keyslots[&KeyslotId::new(0)].as_luks2().unwrap();
    assert!(ks.kdf_params().is_err());
    let limits = KdfLimits {
        max_argon2_memory_kib: u32::MAX,
        ..KdfLimits::default()
    };
    assert!(ks.kdf_params_with(&limits).is_ok());

    for (field, value) in [
        ("cpus", json!(0)),
        ("cpus", json!(64)),
        ("time", json!(0)),
        ("memory", json!(-5)),
    ] {
        let mut v = sample();
        v["keyslots"]["0"]["kdf"] =
            json!({"type":"argon2i","time":4,"memory":1024,"cpus":1,"salt":"AAAA"});
        v["keyslots"]["0"]["kdf"][field] = value;
        let m = check(v).unwrap();
        assert!(
            m.keyslots[&KeyslotId::new(0)]
                .as_luks2()
                .unwrap()
                .kdf_params()
                .is_err(),
            "{field}"
        );
    }
    let mut v = sample();
    v["keyslots"]["0"]["kdf"]["iterations"] = json!(0);
    let m = check(v).unwrap();
    assert!(
        m.keyslots[&KeyslotId::new(0)]
            .as_luks2()
            .unwrap()
            .kdf_params()
            .is_err()
    );
}

#[test]
fn requirements_make_it_read_only() {
    let mut v = sample();
    v["config"]["requirements"] = json!({"mandatory": ["future-feature"]});
    let m = check(v).unwrap();
    assert!(m.is_read_only());
    assert_eq!(m.requirements(), ["future-feature".to_string()]);
    assert!(matches!(
        m.ensure_writable(),
        Err(Error::ReadOnlyRequirements(_))
    ));
}

#[test]
fn allocator_finds_first_aligned_gap() {
    let m = check(sample()).unwrap();
    let area = keyslot_area_size(64, 4000).unwrap();
    assert_eq!(area, 258048);
    // Slot 0 occupies [32768, 290816).
    assert_eq!(m.find_free_area(area), Some(290816));
    let mut m2 = m.clone();
    if let Some(Keyslot::Luks2(k)) = m2.keyslots.get_mut(&KeyslotId::new(0)) {
        k.area.offset = 32768 + 2 * area;
    }
    assert_eq!(m2.find_free_area(area), Some(32768));
    assert_eq!(m2.find_free_area(2 * area + 1), Some(32768 + 3 * area));
    assert_eq!(m.find_free_area(m.config.keyslots_size), None);
    assert_eq!(m.find_free_area(0), None);
    assert_eq!(m.next_free_keyslot(), Some(KeyslotId::new(1)));
    assert_eq!(m.next_free_token(), Some(TokenId::new(1)));
    assert_eq!(m.next_free_digest(), Some(DigestId::new(1)));
}

#[test]
fn new_empty_metadata_validates_once_it_has_a_digest() {
    let seg = Segment {
        offset: 16 * 1024 * 1024,
        size: SegmentSize::Dynamic,
        flags: None,
        kind: SegmentKind::Crypt {
            iv_tweak: 0,
            encryption: "aes-xts-plain64".into(),
            sector_size: 4096,
            integrity: None,
        },
    };
    let mut m = Metadata::new_empty(HDR, 16744448, seg).unwrap();
    assert!(Metadata::parse(&m.to_json_area().unwrap(), HDR).is_err());
    m.digests.insert(
        DigestId::new(0),
        Digest {
            keyslots: vec![],
            segments: vec![SegmentId::new(0)],
            kind: DigestKind::Pbkdf2(Pbkdf2Digest {
                hash: "sha256".into(),
                iterations: 1000,
                salt: B64::encode(&[1; 32]),
                digest: B64::encode(&[2; 32]),
            }),
        },
    );
    let parsed = Metadata::parse(&m.to_json_area().unwrap(), HDR).unwrap();
    assert_eq!(parsed, m);
    assert!(
        Metadata::new_empty(20000, 16744448, parsed.segments[&SegmentId::new(0)].clone()).is_err()
    );
}

#[test]
fn token_from_json() {
    let t =
        Token::from_json(&json!({"type":"systemd-tpm2","keyslots":["1"],"tpm2-pcrs":[7]})).unwrap();
    assert_eq!(t.keyslots, [KeyslotId::new(1)]);
    assert_eq!(
        t.to_json(),
        json!({"type":"systemd-tpm2","keyslots":["1"],"tpm2-pcrs":[7]})
    );
    assert!(Token::from_json(&json!({"keyslots":[]})).is_err());
    assert!(Token::from_json(&json!({"type":"x","keyslots":[1]})).is_err());
}

#[test]
fn deep_nesting_is_rejected() {
    let mut v = sample();
    let mut deep = json!(1);
    for _ in 0..40 {
        deep = json!([deep]);
    }
    v["tokens"]["0"]["deep"] = deep;
    assert!(check(v).is_err());
}

#[test]
fn json_area_size_is_checked_before_allocating() {
    let mut m = check(sample()).unwrap();
    m.config.json_size = 1 << 40;
    assert!(matches!(m.to_json_area(), Err(Error::InvalidArgument(_))));
    m.config.json_size = 12288 + 1;
    assert!(m.to_json_area().is_err());
}

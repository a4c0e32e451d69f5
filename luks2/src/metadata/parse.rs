//! Validation of the JSON area, following cryptsetup 2.6 (`lib/luks2/luks2_json_metadata.c`,
//! `luks2_disk_metadata.c`, `luks2_keyslot.c`, `luks2_keyslot_luks2.c`): the same checks, the
//! same leniency. Rules, in cryptsetup's order:
//!
//! * area: first byte `{`, one JSON value as json-c reads it (see `json.rs`), optional
//!   whitespace and comments, then only NULs (at least one);
//! * known KDF glitches repaired first (extra fields in a pbkdf2/argon2 `kdf` object are dropped);
//! * tokens: decimal keys, `type` string, `keyslots` array of strings naming existing keyslots;
//! * digests: decimal keys, `type` string, `keyslots`/`segments` arrays naming existing objects;
//! * segments: at least one; decimal keys; `type`, `offset`, `size` strings; offset and size
//!   decimal u64, size non-zero or `"dynamic"`, both 512-aligned; optional `flags` array of
//!   strings; `crypt`: `iv_tweak` decimal u64 string, `encryption` string, `sector_size` a
//!   non-zero multiple of 512 dividing the size, optional `integrity` object, covered by a digest;
//!   regular segments keyed 0..n-1 without overlaps, only the last dynamic, backups after them;
//! * keyslots: decimal keys, `type` string, `key_size` integer in u32 range;
//! * config: `json_size`/`keyslots_size` strings (parsed like `strtoull`), header size one of the
//!   nine allowed, keyslots size 4 KiB aligned and at most 128 MiB, first data offset (if not 0)
//!   after the keyslots area; optional `flags` and `requirements.mandatory` arrays of strings;
//! * keyslot areas: `type`, `offset`, `size` strings; inside the keyslots area; non-empty; no
//!   overlaps;
//! * `json_size` equals the JSON area size of the binary header;
//! * `luks2` keyslots: `kdf` (pbkdf2: exactly type/salt/hash/iterations; argon2i/argon2id: exactly
//!   type/salt/time/memory/cpus; other types unchecked), `af` of type `luks1` with `hash` string
//!   and `stripes` integer, `area` of type `raw` with `encryption`, `key_size`, `offset`, `size`;
//!   each in exactly one digest. `reencrypt` keyslots: `key_size` 1, `mode`
//!   reencrypt/encrypt/decrypt, `direction` forward/backward, checksum areas with a `hash` and a
//!   power-of-two `sector_size` >= 512, datashift areas with a non-zero 512-aligned
//!   `shift_size`; at most one, only with an `online-reencrypt*` requirement, and a known
//!   online-reencrypt requirement needs one.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde_json::Value;

use super::{
    Af, Argon2Variant, B64, BIN_HEADER_SIZE, Config, Digest, DigestId, DigestKind, HDR_SIZES,
    JsonMap, Kdf, Keyslot, KeyslotId, Luks2Keyslot, MAX_KEYSLOTS_SIZE, Metadata, OtherKeyslot,
    Pbkdf2Digest, Priority, RawArea, Requirements, Segment, SegmentId, SegmentKind, SegmentSize,
    Token, TokenId, Unindexed,
};
use crate::error::{Error, Result};

type R<T> = Result<T>;

fn bad(field: &'static str, reason: impl Into<String>) -> Error {
    Error::header(field, reason)
}

/// Deepest value json-c accepts by default (the top-level value is at depth 0).
const MAX_DEPTH: usize = 31;

pub(super) fn parse_area(area: &[u8], hdr_size: u64) -> R<Metadata> {
    if hdr_size <= BIN_HEADER_SIZE || hdr_size > 4 * 1024 * 1024 {
        return Err(bad("hdr_size", format!("bogus header size {hdr_size}")));
    }
    if area.first() != Some(&b'{') {
        return Err(bad("json area", "must start with '{'"));
    }
    let parsed = super::json::parse_prefix(area)?;
    // The parser consumed trailing whitespace and comments; only NULs may follow (at least one).
    let tail = area.get(parsed.end..).unwrap_or_default();
    if tail.is_empty() {
        return Err(bad("json area", "missing trailing NUL after the JSON text"));
    }
    if tail.iter().any(|&b| b != 0) {
        return Err(bad("json area", "non-NUL bytes after the JSON text"));
    }
    validate(parsed.value, hdr_size, parsed.lossy_extra)
}

/// json-c's depth of the deepest value below `v` (`v` itself at 0; an empty container adds
/// nothing).
fn depth(v: &Value) -> usize {
    match v {
        Value::Array(a) if !a.is_empty() => 1 + a.iter().map(depth).max().unwrap_or(0),
        Value::Object(o) if !o.is_empty() => 1 + o.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

pub(super) fn from_value(root: Value, hdr_size: u64) -> R<Metadata> {
    validate(root, hdr_size, 0)
}

/// Validates and builds; `lossy_extra` is subtracted from the serialized size when checking that
/// the JSON fits its area (see `json::Parsed`).
fn validate(mut root: Value, hdr_size: u64, lossy_extra: usize) -> R<Metadata> {
    if depth(&root) > MAX_DEPTH {
        return Err(Error::Json("JSON nested too deeply".into()));
    }
    match &mut root {
        Value::Object(m) => repair_kdf_glitches(m),
        _ => return Err(Error::Json("top level is not an object".into())),
    }
    let Value::Object(root_map) = &root else {
        return Err(Error::Json("top level is not an object".into()));
    };
    let json_area_size = hdr_size
        .checked_sub(BIN_HEADER_SIZE)
        .ok_or_else(|| bad("hdr_size", "smaller than the binary header"))?;

    let keyslots = section(root_map, "keyslots")?;
    let tokens = section(root_map, "tokens")?;
    let segments = section(root_map, "segments")?;
    let digests = section(root_map, "digests")?;
    let config = section(root_map, "config")?;

    validate_tokens(tokens, keyslots)?;
    validate_digests(digests, keyslots, segments)?;
    validate_segments(segments, digests)?;
    validate_keyslots(keyslots)?;
    let (json_size, keyslots_size) = validate_config(config, segments)?;
    validate_areas(keyslots, json_size, keyslots_size)?;
    if json_size != json_area_size {
        return Err(bad(
            "config.json_size",
            format!("{json_size} does not match the header's JSON area size {json_area_size}"),
        ));
    }
    let text_len = root.to_string().len().saturating_sub(lossy_extra) as u64;
    if text_len > json_area_size {
        return Err(bad("json area", "JSON does not fit in the designated area"));
    }
    validate_keyslot_types(keyslots, digests, config)?;

    let mut m = build(
        keyslots,
        tokens,
        segments,
        digests,
        config,
        json_size,
        keyslots_size,
    )?;
    m.stored = super::stored::StoredJson(Some(root));
    Ok(m)
}

/// The top-level sections must exist and be objects.
fn section<'a>(root: &'a JsonMap, name: &'static str) -> R<&'a JsonMap> {
    match root.get(name) {
        Some(Value::Object(m)) => Ok(m),
        Some(_) => Err(bad(name, "is not an object")),
        None => Err(bad(name, "missing section")),
    }
}

/// cryptsetup's `LUKS2_keyslots_repair`: extra fields in pbkdf2/argon2 KDF objects of `luks2`
/// keyslots (written by early 2.0 releases) are dropped before validation is retried.
fn repair_kdf_glitches(root: &mut JsonMap) {
    let Some(Value::Object(keyslots)) = root.get_mut("keyslots") else {
        return;
    };
    for ks in keyslots.values_mut() {
        let Value::Object(ks) = ks else { continue };
        if ks.get("type").and_then(Value::as_str) != Some("luks2") {
            continue;
        }
        let Some(Value::Object(kdf)) = ks.get_mut("kdf") else {
            continue;
        };
        let keep: &[&str] = match kdf.get("type").and_then(Value::as_str) {
            Some("pbkdf2") => &["type", "salt", "hash", "iterations"],
            Some("argon2i" | "argon2id") => &["type", "salt", "time", "memory", "cpus"],
            _ => continue,
        };
        kdf.retain(|k, _| keep.contains(&k.as_str()));
    }
}

/// All characters decimal digits (cryptsetup's `numbered`; note the empty string passes).
fn numbered(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_digit())
}

/// `strtoull(s, &end, 10)` with `*end == 0 && errno == 0`, as cryptsetup converts 64-bit strings:
/// leading whitespace and a sign are accepted, a minus negates modulo 2^64, the empty string is 0,
/// overflow is rejected.
pub fn parse_u64_field(s: &str) -> Option<u64> {
    let b = s.as_bytes();
    let mut i = 0;
    while matches!(
        b.get(i),
        Some(b' ' | b'\t' | b'\n' | b'\x0b' | b'\x0c' | b'\r')
    ) {
        i += 1;
    }
    let mut negative = false;
    if let Some(&c @ (b'+' | b'-')) = b.get(i) {
        negative = c == b'-';
        i += 1;
    }
    let digits = b.get(i..).unwrap_or_default();
    let n_digits = digits.iter().take_while(|c| c.is_ascii_digit()).count();
    if n_digits == 0 {
        // No conversion: the end pointer is the start of the string.
        return s.is_empty().then_some(0);
    }
    if n_digits != digits.len() {
        return None;
    }
    let mut v: u64 = 0;
    for &c in digits {
        v = v.checked_mul(10)?.checked_add(u64::from(c - b'0'))?;
    }
    Some(if negative { v.wrapping_neg() } else { v })
}

/// A decimal-digit string converted to u64 (`numbered` and `json_str_to_uint64`).
fn numbered_u64(s: &str) -> Option<u64> {
    if numbered(s) {
        parse_u64_field(s)
    } else {
        None
    }
}

/// JSON integer (json-c `json_type_int`) as `json_object_get_int64` gives it: values above
/// `i64::MAX` saturate; floats are not integers.
fn json_int(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64().or_else(|| n.as_u64().map(|_| i64::MAX)),
        _ => None,
    }
}

fn get_str<'a>(m: &'a JsonMap, key: &str) -> Option<&'a str> {
    m.get(key).and_then(Value::as_str)
}

/// A string that is not empty (cryptsetup 2.6's `json_contains_string`).
fn get_nstr<'a>(m: &'a JsonMap, key: &str) -> Option<&'a str> {
    get_str(m, key).filter(|s| !s.is_empty())
}

fn get_int(m: &JsonMap, key: &str) -> Option<i64> {
    m.get(key).and_then(json_int)
}

fn get_obj<'a>(m: &'a JsonMap, key: &str) -> Option<&'a JsonMap> {
    m.get(key).and_then(Value::as_object)
}

fn get_arr<'a>(m: &'a JsonMap, key: &str) -> Option<&'a Vec<Value>> {
    m.get(key).and_then(Value::as_array)
}

fn as_obj<'a>(v: &'a Value, field: &'static str) -> R<&'a JsonMap> {
    v.as_object()
        .ok_or_else(|| bad(field, "entry is not an object"))
}

fn strings(arr: &[Value], field: &'static str) -> R<Vec<String>> {
    arr.iter()
        .map(|v| {
            v.as_str()
                .map(str::to_owned)
                .ok_or_else(|| bad(field, "array member is not a string"))
        })
        .collect()
}

/// Every member a string naming an object in `section`.
fn validate_refs(arr: &[Value], section: &JsonMap, field: &'static str) -> R<()> {
    for v in arr {
        let name = v
            .as_str()
            .ok_or_else(|| bad(field, "array member is not a string"))?;
        if !matches!(section.get(name), Some(Value::Object(_))) {
            return Err(bad(field, format!("references missing entry {name:?}")));
        }
    }
    Ok(())
}

fn validate_tokens(tokens: &JsonMap, keyslots: &JsonMap) -> R<()> {
    for (key, val) in tokens {
        if !numbered(key) {
            return Err(bad("tokens", format!("key {key:?} is not a number")));
        }
        let t = as_obj(val, "tokens")?;
        get_nstr(t, "type").ok_or_else(|| bad("tokens.type", "missing or not a string"))?;
        let arr = get_arr(t, "keyslots")
            .ok_or_else(|| bad("tokens.keyslots", "missing or not an array"))?;
        validate_refs(arr, keyslots, "tokens.keyslots")?;
    }
    Ok(())
}

fn validate_digests(digests: &JsonMap, keyslots: &JsonMap, segments: &JsonMap) -> R<()> {
    for (key, val) in digests {
        if !numbered(key) {
            return Err(bad("digests", format!("key {key:?} is not a number")));
        }
        let d = as_obj(val, "digests")?;
        get_nstr(d, "type").ok_or_else(|| bad("digests.type", "missing or not a string"))?;
        let ks = get_arr(d, "keyslots")
            .ok_or_else(|| bad("digests.keyslots", "missing or not an array"))?;
        let ss = get_arr(d, "segments")
            .ok_or_else(|| bad("digests.segments", "missing or not an array"))?;
        validate_refs(ks, keyslots, "digests.keyslots")?;
        validate_refs(ss, segments, "digests.segments")?;
    }
    Ok(())
}

fn segment_is_backup(s: &JsonMap) -> bool {
    get_arr(s, "flags").is_some_and(|f| {
        f.iter()
            .any(|v| v.as_str().is_some_and(|s| s.starts_with("backup-")))
    })
}

/// The names listed in the `field` arrays of every digest, with how many digests list each
/// (a digest listing a name twice counts once): one pass instead of a scan per keyslot or
/// segment.
fn digest_refs<'a>(digests: &'a JsonMap, field: &str) -> HashMap<&'a str, usize> {
    let mut counts = HashMap::new();
    for d in digests.values().filter_map(Value::as_object) {
        let names: HashSet<&str> = get_arr(d, field)
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        for name in names {
            *counts.entry(name).or_insert(0) += 1;
        }
    }
    counts
}

/// Offset and size (0 for dynamic) of an already validated segment.
fn segment_bounds(s: &JsonMap) -> (u64, u64) {
    let offset = get_str(s, "offset").and_then(parse_u64_field).unwrap_or(0);
    let size = get_str(s, "size").and_then(parse_u64_field).unwrap_or(0);
    (offset, size)
}

fn validate_crypt_segment(
    key: &str,
    s: &JsonMap,
    size: u64,
    digested: &HashMap<&str, usize>,
) -> R<()> {
    let iv = get_nstr(s, "iv_tweak")
        .ok_or_else(|| bad("segments.iv_tweak", "missing or not a string"))?;
    get_nstr(s, "encryption")
        .ok_or_else(|| bad("segments.encryption", "missing or not a string"))?;
    let sector = get_int(s, "sector_size")
        .ok_or_else(|| bad("segments.sector_size", "missing or not an integer"))?;
    if let Some(integrity) = s.get("integrity") {
        let i = integrity
            .as_object()
            .ok_or_else(|| bad("segments.integrity", "not an object"))?;
        for f in ["type", "journal_encryption", "journal_integrity"] {
            get_nstr(i, f)
                .ok_or_else(|| bad("segments.integrity", format!("{f} missing or not a string")))?;
        }
    }
    let sector = u32::try_from(sector)
        .map_err(|_| bad("segments.sector_size", format!("{sector} out of range")))?;
    if sector == 0 || !sector.is_multiple_of(512) {
        return Err(bad(
            "segments.sector_size",
            format!("illegal sector size {sector}"),
        ));
    }
    numbered_u64(iv).ok_or_else(|| bad("segments.iv_tweak", format!("illegal value {iv:?}")))?;
    if !size.is_multiple_of(u64::from(sector)) {
        return Err(bad("segments.size", "not aligned to the sector size"));
    }
    if !digested.contains_key(key) {
        return Err(bad("segments", format!("segment {key} has no digest")));
    }
    Ok(())
}

fn validate_segments(segments: &JsonMap, digests: &JsonMap) -> R<()> {
    let count = segments.len();
    if count < 1 {
        return Err(bad("segments", "empty section"));
    }
    let mut first_backup: Option<u64> = None;
    let digested = digest_refs(digests, "segments");
    for (key, val) in segments {
        if !numbered(key) {
            return Err(bad("segments", format!("key {key:?} is not a number")));
        }
        let s = as_obj(val, "segments")?;
        let ty =
            get_nstr(s, "type").ok_or_else(|| bad("segments.type", "missing or not a string"))?;
        let off = get_nstr(s, "offset")
            .ok_or_else(|| bad("segments.offset", "missing or not a string"))?;
        let sz =
            get_nstr(s, "size").ok_or_else(|| bad("segments.size", "missing or not a string"))?;
        let offset = numbered_u64(off)
            .ok_or_else(|| bad("segments.offset", format!("illegal value {off:?}")))?;
        let size = if sz == "dynamic" {
            0
        } else {
            match numbered_u64(sz) {
                Some(v) if v != 0 => v,
                _ => return Err(bad("segments.size", format!("illegal value {sz:?}"))),
            }
        };
        if !offset.is_multiple_of(512) {
            return Err(bad("segments.offset", "not aligned to 512 bytes"));
        }
        if !size.is_multiple_of(512) {
            return Err(bad("segments.size", "not aligned to 512 bytes"));
        }
        if let Some(flags) = s.get("flags") {
            let flags = flags
                .as_array()
                .ok_or_else(|| bad("segments.flags", "not an array"))?;
            strings(flags, "segments.flags")?;
        }
        let index = parse_u64_field(key).unwrap_or(u64::MAX);
        if segment_is_backup(s) {
            if first_backup.is_none_or(|fb| index < fb) {
                first_backup = Some(index);
            }
        } else if first_backup.is_some_and(|fb| index >= fb) {
            return Err(bad("segments", "regular segment after a backup segment"));
        }
        if ty == "crypt" {
            validate_crypt_segment(key, s, size, &digested)?;
        }
    }
    let count = count as u64;
    let regular = match first_backup {
        Some(0) => return Err(bad("segments", "no regular segment")),
        Some(fb) if fb >= count => return Err(bad("segments", "gap before the backup segments")),
        Some(fb) => fb,
        None => count,
    };
    let mut intervals = Vec::new();
    for i in 0..regular {
        let s = segments
            .get(&i.to_string())
            .and_then(Value::as_object)
            .ok_or_else(|| bad("segments", format!("gap at key {i}")))?;
        let (offset, size) = segment_bounds(s);
        intervals.push((offset, if size == 0 { u64::MAX } else { size }));
    }
    let n = intervals.len();
    // A dynamic segment reaches to the end of the device.
    let ends: Vec<(u64, u64)> = intervals
        .iter()
        .map(|&(o, l)| {
            (
                o,
                if l == u64::MAX {
                    u64::MAX
                } else {
                    o.wrapping_add(l)
                },
            )
        })
        .collect();
    let covered = covered_by_another(&ends);
    for (i, (&(_, li), &cov)) in intervals.iter().zip(&covered).enumerate() {
        if li == u64::MAX && i + 1 != n {
            return Err(bad(
                "segments.size",
                "only the last regular segment may be dynamic",
            ));
        }
        if cov {
            return Err(bad(
                "segments",
                format!("segment {i} overlaps another segment"),
            ));
        }
    }
    for i in regular..count {
        if !matches!(segments.get(&i.to_string()), Some(Value::Object(_))) {
            return Err(bad("segments", format!("gap at key {i}")));
        }
    }
    Ok(())
}

fn validate_keyslots(keyslots: &JsonMap) -> R<()> {
    for (key, val) in keyslots {
        if !numbered(key) {
            return Err(bad("keyslots", format!("key {key:?} is not a number")));
        }
        let k = as_obj(val, "keyslots")?;
        get_nstr(k, "type").ok_or_else(|| bad("keyslots.type", "missing or not a string"))?;
        let ks = get_int(k, "key_size")
            .ok_or_else(|| bad("keyslots.key_size", "missing or not an integer"))?;
        if u32::try_from(ks).is_err() {
            return Err(bad("keyslots.key_size", format!("{ks} out of range")));
        }
    }
    Ok(())
}

fn validate_config(config: &JsonMap, segments: &JsonMap) -> R<(u64, u64)> {
    let js = get_nstr(config, "json_size")
        .ok_or_else(|| bad("config.json_size", "missing or not a string"))?;
    let json_size = parse_u64_field(js)
        .ok_or_else(|| bad("config.json_size", format!("illegal value {js:?}")))?;
    let ks = get_nstr(config, "keyslots_size")
        .ok_or_else(|| bad("config.keyslots_size", "missing or not a string"))?;
    let keyslots_size = parse_u64_field(ks)
        .ok_or_else(|| bad("config.keyslots_size", format!("illegal value {ks:?}")))?;
    let metadata_size = json_size.wrapping_add(BIN_HEADER_SIZE);
    if !HDR_SIZES.contains(&metadata_size) {
        return Err(bad(
            "config.json_size",
            format!("unsupported header size {metadata_size}"),
        ));
    }
    if !keyslots_size.is_multiple_of(4096) || keyslots_size > MAX_KEYSLOTS_SIZE {
        return Err(bad(
            "config.keyslots_size",
            format!("unsupported keyslots size {keyslots_size}"),
        ));
    }
    let mut min_offset = u64::MAX;
    for s in segments.values().filter_map(Value::as_object) {
        if segment_is_backup(s) {
            continue;
        }
        let (offset, _) = segment_bounds(s);
        min_offset = min_offset.min(offset);
    }
    if min_offset != 0
        && (min_offset < keyslots_size || min_offset - keyslots_size < 2 * metadata_size)
    {
        return Err(bad(
            "config.keyslots_size",
            format!("keyslots area ends after the data offset {min_offset}"),
        ));
    }
    if let Some(flags) = config.get("flags") {
        let flags = flags
            .as_array()
            .ok_or_else(|| bad("config.flags", "not an array"))?;
        strings(flags, "config.flags")?;
    }
    if let Some(req) = config.get("requirements") {
        let req = req
            .as_object()
            .ok_or_else(|| bad("config.requirements", "not an object"))?;
        if let Some(m) = req.get("mandatory") {
            let m = m
                .as_array()
                .ok_or_else(|| bad("config.requirements.mandatory", "not an array"))?;
            let reqs = strings(m, "config.requirements.mandatory")?;
            if reqs.iter().filter(|r| reencrypt_candidate(r)).count() > 1 {
                return Err(bad(
                    "config.requirements.mandatory",
                    "more than one online reencryption requirement",
                ));
            }
        }
    }
    Ok((json_size, keyslots_size))
}

fn validate_areas(keyslots: &JsonMap, json_size: u64, keyslots_size: u64) -> R<()> {
    let metadata_size = json_size.wrapping_add(BIN_HEADER_SIZE);
    let start = metadata_size.wrapping_mul(2);
    let end = start.wrapping_add(keyslots_size);
    let mut intervals = Vec::with_capacity(keyslots.len());
    for val in keyslots.values() {
        let k = as_obj(val, "keyslots")?;
        let area =
            get_obj(k, "area").ok_or_else(|| bad("keyslots.area", "missing or not an object"))?;
        get_nstr(area, "type")
            .ok_or_else(|| bad("keyslots.area.type", "missing or not a string"))?;
        let off = get_nstr(area, "offset")
            .ok_or_else(|| bad("keyslots.area.offset", "missing or not a string"))?;
        let sz = get_nstr(area, "size")
            .ok_or_else(|| bad("keyslots.area.size", "missing or not a string"))?;
        let off = numbered_u64(off)
            .ok_or_else(|| bad("keyslots.area.offset", format!("illegal value {off:?}")))?;
        let sz = numbered_u64(sz)
            .ok_or_else(|| bad("keyslots.area.size", format!("illegal value {sz:?}")))?;
        intervals.push((off, sz));
    }
    let ends: Vec<(u64, u64)> = intervals
        .iter()
        .map(|&(o, l)| (o, o.wrapping_add(l)))
        .collect();
    let covered = covered_by_another(&ends);
    for (&(oi, li), &cov) in intervals.iter().zip(&covered) {
        if oi < start {
            return Err(bad(
                "keyslots.area.offset",
                format!("{oi} is inside the metadata"),
            ));
        }
        if li == 0 {
            return Err(bad("keyslots.area.size", "zero"));
        }
        let area_end = oi
            .checked_add(li)
            .ok_or_else(|| bad("keyslots.area", "offset + size overflows"))?;
        if area_end > end {
            return Err(bad(
                "keyslots.area",
                format!("[{oi}, {area_end}) exceeds the keyslots area end {end}"),
            ));
        }
        if cov {
            return Err(bad("keyslots.area", "keyslot areas overlap"));
        }
    }
    Ok(())
}

/// For each interval `(start, end)` (end exclusive, as cryptsetup computes it: `offset + length`
/// wrapping, or `u64::MAX` for "to the end"), whether another interval starts at or before its
/// start and ends after it. That is cryptsetup's pairwise overlap test (`validate_intervals`,
/// `hdr_validate_segments`) with the same answers, in O(n log n) instead of O(n²): a 4 MiB JSON
/// area holds tens of thousands of entries.
fn covered_by_another(intervals: &[(u64, u64)]) -> Vec<bool> {
    let mut sorted: Vec<(u64, u64, usize)> = intervals
        .iter()
        .enumerate()
        .map(|(i, &(start, end))| (start, end, i))
        .collect();
    sorted.sort_unstable();
    let mut covered = vec![false; intervals.len()];
    // The largest end among intervals starting strictly before the current group.
    let mut before: Option<u64> = None;
    for group in sorted.chunk_by(|a, b| a.0 == b.0) {
        let Some(&(start, _, _)) = group.first() else {
            continue;
        };
        // The two largest ends in the group (sorted ascending by end): any member but the
        // largest is covered by the largest, the largest by the runner-up.
        let mut ends = group.iter().rev().map(|&(_, end, i)| (end, i));
        let top = ends.next();
        let runner_up = ends.next().map(|(end, _)| end);
        for &(_, _, i) in group {
            let other = match top {
                Some((_, top_i)) if top_i == i => runner_up,
                top => top.map(|(end, _)| end),
            };
            if let Some(c) = covered.get_mut(i) {
                *c = before.max(other).is_some_and(|end| start < end);
            }
        }
        before = before.max(top.map(|(end, _)| end));
    }
    covered
}

/// cryptsetup's checks of a `reencrypt` keyslot (`reenc_keyslot_validate`).
fn validate_reencrypt_keyslot(k: &JsonMap) -> R<()> {
    let field = "keyslots (reencrypt)";
    let area = get_obj(k, "area").ok_or_else(|| bad(field, "area missing"))?;
    let area_type = get_str(area, "type").ok_or_else(|| bad(field, "area type missing"))?;
    let key_size = get_int(k, "key_size").ok_or_else(|| bad(field, "key_size missing"))?;
    let mode = get_nstr(k, "mode").ok_or_else(|| bad(field, "mode missing or not a string"))?;
    let direction =
        get_nstr(k, "direction").ok_or_else(|| bad(field, "direction missing or not a string"))?;
    if key_size != 1 {
        return Err(bad(field, format!("key_size {key_size} is not 1")));
    }
    if !matches!(mode, "reencrypt" | "encrypt" | "decrypt") {
        return Err(bad(field, format!("illegal mode {mode:?}")));
    }
    if !matches!(direction, "forward" | "backward") {
        return Err(bad(field, format!("illegal direction {direction:?}")));
    }
    if matches!(area_type, "checksum" | "datashift-checksum") {
        get_nstr(area, "hash").ok_or_else(|| bad(field, "checksum hash missing"))?;
        let sector = get_int(area, "sector_size")
            .and_then(|v| u32::try_from(v).ok())
            .ok_or_else(|| bad(field, "checksum sector_size missing or invalid"))?;
        if sector < 512 || !sector.is_power_of_two() {
            return Err(bad(field, format!("checksum sector_size {sector} invalid")));
        }
    }
    if matches!(
        area_type,
        "datashift" | "datashift-checksum" | "datashift-journal"
    ) {
        let shift = get_nstr(area, "shift_size").ok_or_else(|| bad(field, "shift_size missing"))?;
        let shift = parse_u64_field(shift).unwrap_or(0);
        if shift == 0 || !shift.is_multiple_of(512) {
            return Err(bad(field, format!("illegal shift_size {shift}")));
        }
    }
    Ok(())
}

/// `online-reencrypt` or `online-reencrypt-v<digits>` (cryptsetup's `reencrypt_candidate_flag`).
fn reencrypt_candidate(req: &str) -> bool {
    req == "online-reencrypt"
        || req
            .strip_prefix("online-reencrypt-v")
            .is_some_and(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
}

fn known_online_reencrypt(req: &str) -> bool {
    matches!(
        req,
        "online-reencrypt" | "online-reencrypt-v2" | "online-reencrypt-v3"
    )
}

fn validate_luks2_keyslot(k: &JsonMap) -> R<()> {
    let (Some(kdf), Some(af), Some(area)) = (k.get("kdf"), k.get("af"), k.get("area")) else {
        return Err(bad("keyslots", "luks2 keyslot lacks kdf, af or area"));
    };
    let kdf = kdf
        .as_object()
        .ok_or_else(|| bad("keyslots.kdf", "not an object"))?;
    let ty =
        get_nstr(kdf, "type").ok_or_else(|| bad("keyslots.kdf.type", "missing or not a string"))?;
    let kdf_ok = match ty {
        "pbkdf2" => {
            kdf.len() == 4
                && get_nstr(kdf, "hash").is_some()
                && get_int(kdf, "iterations").is_some()
                && get_nstr(kdf, "salt").is_some()
        }
        "argon2i" | "argon2id" => {
            kdf.len() == 5
                && get_int(kdf, "time").is_some()
                && get_int(kdf, "memory").is_some()
                && get_int(kdf, "cpus").is_some()
                && get_nstr(kdf, "salt").is_some()
        }
        _ => true,
    };
    if !kdf_ok {
        return Err(bad(
            "keyslots.kdf",
            "pbkdf2 needs exactly type, hash, iterations, salt; argon2 exactly type, time, memory, cpus, salt",
        ));
    }
    let af = af
        .as_object()
        .ok_or_else(|| bad("keyslots.af", "not an object"))?;
    if get_str(af, "type") != Some("luks1") {
        return Err(bad("keyslots.af.type", "must be luks1"));
    }
    if get_nstr(af, "hash").is_none() || get_int(af, "stripes").is_none() {
        return Err(bad(
            "keyslots.af",
            "hash or stripes missing or of the wrong type",
        ));
    }
    let area = area
        .as_object()
        .ok_or_else(|| bad("keyslots.area", "not an object"))?;
    if get_str(area, "type") != Some("raw") {
        return Err(bad("keyslots.area.type", "must be raw"));
    }
    if get_nstr(area, "encryption").is_none()
        || get_int(area, "key_size").is_none()
        || get_nstr(area, "offset").is_none()
        || get_nstr(area, "size").is_none()
    {
        return Err(bad(
            "keyslots.area",
            "encryption, key_size, offset or size missing or of the wrong type",
        ));
    }
    Ok(())
}

fn validate_keyslot_types(keyslots: &JsonMap, digests: &JsonMap, config: &JsonMap) -> R<()> {
    let mandatory: Vec<&str> = get_obj(config, "requirements")
        .and_then(|r| get_arr(r, "mandatory"))
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let online = mandatory.iter().any(|r| known_online_reencrypt(r));
    let mut reencrypt = 0usize;
    let digest_counts = digest_refs(digests, "keyslots");
    for (key, val) in keyslots {
        let k = as_obj(val, "keyslots")?;
        match get_str(k, "type") {
            Some("luks2") => {
                validate_luks2_keyslot(k)?;
                let name = parse_u64_field(key).unwrap_or(0).to_string();
                let n = digest_counts.get(name.as_str()).copied().unwrap_or(0);
                if n != 1 {
                    return Err(bad(
                        "keyslots",
                        format!("keyslot {key} is in {n} digests, not exactly one"),
                    ));
                }
            }
            Some("reencrypt") => {
                validate_reencrypt_keyslot(k)?;
                reencrypt += 1;
            }
            _ => {}
        }
    }
    if online && reencrypt == 0 {
        return Err(bad(
            "keyslots",
            "online reencryption requirement without a reencrypt keyslot",
        ));
    }
    let candidate = mandatory.iter().any(|r| reencrypt_candidate(r));
    if reencrypt > 0 && !candidate {
        return Err(bad(
            "keyslots",
            "reencrypt keyslot without a reencryption requirement",
        ));
    }
    if reencrypt > 1 {
        return Err(bad("keyslots", "more than one reencrypt keyslot"));
    }
    Ok(())
}

/// `(offset, size)` of the area of a raw (already validated) keyslot object.
pub(super) fn raw_area_range(v: &Value) -> Option<(u64, u64)> {
    let area = v.as_object().and_then(|k| get_obj(k, "area"))?;
    Some((
        get_str(area, "offset").and_then(parse_u64_field)?,
        get_str(area, "size").and_then(parse_u64_field)?,
    ))
}

/// The number of a canonical decimal key (`"0"`, `"17"`; no leading zeros, fits u32).
fn canonical_id(key: &str) -> Option<u32> {
    key.parse::<u32>().ok().filter(|n| n.to_string() == key)
}

/// A canonical decimal id (`"0"`, `"17"`; no leading zeros).
fn id_of(key: &str, field: &'static str) -> R<u32> {
    match key.parse::<u32>() {
        Ok(n) if n.to_string() == key => Ok(n),
        _ => Err(bad(field, format!("id {key:?} is not a canonical number"))),
    }
}

fn ids<T>(arr: Option<&Vec<Value>>, field: &'static str, make: fn(u32) -> T) -> R<Vec<T>> {
    arr.map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|v| {
            let s = v
                .as_str()
                .ok_or_else(|| bad(field, "array member is not a string"))?;
            id_of(s, field).map(make)
        })
        .collect()
}

fn rest(m: &JsonMap, skip: &[&str]) -> JsonMap {
    m.iter()
        .filter(|(k, _)| !skip.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

fn u64_of(m: &JsonMap, key: &str, field: &'static str) -> R<u64> {
    get_str(m, key)
        .and_then(parse_u64_field)
        .ok_or_else(|| bad(field, "missing or invalid"))
}

fn build_keyslot(k: &JsonMap) -> R<Keyslot> {
    let type_name = get_str(k, "type").unwrap_or_default();
    let area = get_obj(k, "area").ok_or_else(|| bad("keyslots.area", "missing"))?;
    let offset = u64_of(area, "offset", "keyslots.area.offset")?;
    let size = u64_of(area, "size", "keyslots.area.size")?;
    if type_name != "luks2" {
        return Ok(Keyslot::Other(OtherKeyslot {
            type_name: type_name.to_owned(),
            area_offset: offset,
            area_size: size,
            raw: k.clone(),
        }));
    }
    let key_size = get_int(k, "key_size")
        .and_then(|v| u32::try_from(v).ok())
        .ok_or_else(|| bad("keyslots.key_size", "invalid"))?;
    let priority = k
        .get("priority")
        .map(|p| Priority::from_number(json_int(p).unwrap_or(1)));
    let kdf_map = get_obj(k, "kdf").ok_or_else(|| bad("keyslots.kdf", "missing"))?;
    let salt = || B64::from_text(get_str(kdf_map, "salt").unwrap_or_default());
    let int = |f: &str| get_int(kdf_map, f).unwrap_or(0);
    let kdf = match get_str(kdf_map, "type") {
        Some("pbkdf2") => Kdf::Pbkdf2 {
            hash: get_str(kdf_map, "hash").unwrap_or_default().to_owned(),
            iterations: int("iterations"),
            salt: salt(),
        },
        Some(t @ ("argon2i" | "argon2id")) => Kdf::Argon2 {
            variant: if t == "argon2i" {
                Argon2Variant::Argon2i
            } else {
                Argon2Variant::Argon2id
            },
            time: int("time"),
            memory: int("memory"),
            cpus: int("cpus"),
            salt: salt(),
        },
        _ => Kdf::Other(kdf_map.clone()),
    };
    let af = get_obj(k, "af").ok_or_else(|| bad("keyslots.af", "missing"))?;
    Ok(Keyslot::Luks2(Luks2Keyslot {
        key_size,
        priority,
        kdf,
        af: Af {
            hash: get_str(af, "hash").unwrap_or_default().to_owned(),
            stripes: get_int(af, "stripes").unwrap_or(0),
        },
        area: RawArea {
            encryption: get_str(area, "encryption").unwrap_or_default().to_owned(),
            key_size: get_int(area, "key_size").unwrap_or(0),
            offset,
            size,
        },
    }))
}

pub(super) fn token_from_json(value: &Value) -> R<Token> {
    let t = value
        .as_object()
        .ok_or_else(|| bad("token", "not a JSON object"))?;
    let type_name =
        get_nstr(t, "type").ok_or_else(|| bad("token.type", "missing or not a string"))?;
    let arr =
        get_arr(t, "keyslots").ok_or_else(|| bad("token.keyslots", "missing or not an array"))?;
    Ok(Token {
        type_name: type_name.to_owned(),
        keyslots: ids(Some(arr), "token.keyslots", KeyslotId::new)?,
        fields: rest(t, &["type", "keyslots"]),
    })
}

fn build_digest(d: &JsonMap) -> R<Digest> {
    let keyslots = ids(get_arr(d, "keyslots"), "digests.keyslots", KeyslotId::new)?;
    let segments = ids(get_arr(d, "segments"), "digests.segments", SegmentId::new)?;
    let type_name = get_str(d, "type").unwrap_or_default();
    let fields = rest(d, &["type", "keyslots", "segments"]);
    let typed = (type_name == "pbkdf2" && fields.len() == 4)
        .then(|| {
            Some(Pbkdf2Digest {
                hash: get_str(&fields, "hash")?.to_owned(),
                iterations: get_int(&fields, "iterations")?,
                salt: B64::from_text(get_str(&fields, "salt")?),
                digest: B64::from_text(get_str(&fields, "digest")?),
            })
        })
        .flatten();
    let kind = match typed {
        Some(p) => DigestKind::Pbkdf2(p),
        None => DigestKind::Other {
            type_name: type_name.to_owned(),
            fields,
        },
    };
    Ok(Digest {
        keyslots,
        segments,
        kind,
    })
}

fn build_segment(s: &JsonMap) -> R<Segment> {
    let offset = u64_of(s, "offset", "segments.offset")?;
    let size = match get_str(s, "size") {
        Some("dynamic") => SegmentSize::Dynamic,
        _ => SegmentSize::Bytes(u64_of(s, "size", "segments.size")?),
    };
    let flags = get_arr(s, "flags")
        .map(|a| strings(a, "segments.flags"))
        .transpose()?;
    let type_name = get_str(s, "type").unwrap_or_default();
    let kind = if type_name == "crypt" {
        SegmentKind::Crypt {
            iv_tweak: u64_of(s, "iv_tweak", "segments.iv_tweak")?,
            encryption: get_str(s, "encryption").unwrap_or_default().to_owned(),
            sector_size: get_int(s, "sector_size")
                .and_then(|v| u32::try_from(v).ok())
                .ok_or_else(|| bad("segments.sector_size", "invalid"))?,
            integrity: get_obj(s, "integrity").cloned(),
        }
    } else {
        SegmentKind::Other {
            type_name: type_name.to_owned(),
            fields: rest(s, &["type", "offset", "size", "flags"]),
        }
    };
    Ok(Segment {
        offset,
        size,
        flags,
        kind,
    })
}

fn build(
    keyslots: &JsonMap,
    tokens: &JsonMap,
    segments: &JsonMap,
    digests: &JsonMap,
    config: &JsonMap,
    json_size: u64,
    keyslots_size: u64,
) -> R<Metadata> {
    let mut m = Metadata {
        keyslots: BTreeMap::new(),
        tokens: BTreeMap::new(),
        segments: BTreeMap::new(),
        digests: BTreeMap::new(),
        config: Config {
            json_size,
            keyslots_size,
            flags: None,
            requirements: None,
        },
        unindexed: Unindexed::default(),
        stored: super::stored::StoredJson::default(),
    };
    for (key, val) in keyslots {
        match canonical_id(key) {
            Some(id) => {
                m.keyslots
                    .insert(KeyslotId::new(id), build_keyslot(as_obj(val, "keyslots")?)?);
            }
            None => {
                m.unindexed.keyslots.insert(key.clone(), val.clone());
            }
        }
    }
    for (key, val) in tokens {
        match canonical_id(key) {
            Some(id) => {
                m.tokens.insert(TokenId::new(id), token_from_json(val)?);
            }
            None => {
                m.unindexed.tokens.insert(key.clone(), val.clone());
            }
        }
    }
    for (key, val) in segments {
        let id = SegmentId::new(id_of(key, "segments")?);
        m.segments
            .insert(id, build_segment(as_obj(val, "segments")?)?);
    }
    for (key, val) in digests {
        match canonical_id(key) {
            Some(id) => {
                m.digests
                    .insert(DigestId::new(id), build_digest(as_obj(val, "digests")?)?);
            }
            None => {
                m.unindexed.digests.insert(key.clone(), val.clone());
            }
        }
    }
    m.config.flags = get_arr(config, "flags")
        .map(|a| strings(a, "config.flags"))
        .transpose()?;
    m.config.requirements = get_obj(config, "requirements")
        .map(|r| -> R<Requirements> {
            Ok(Requirements {
                mandatory: get_arr(r, "mandatory")
                    .map(|a| strings(a, "config.requirements.mandatory"))
                    .transpose()?,
                fields: rest(r, &["mandatory"]),
            })
        })
        .transpose()?;
    Ok(m)
}

#[cfg(test)]
mod overlap_tests {
    use super::covered_by_another;

    /// cryptsetup's pairwise test, as the validation did it before.
    fn naive(iv: &[(u64, u64)]) -> Vec<bool> {
        iv.iter()
            .enumerate()
            .map(|(i, &(si, _))| {
                iv.iter()
                    .enumerate()
                    .any(|(j, &(sj, ej))| i != j && si >= sj && si < ej)
            })
            .collect()
    }

    #[test]
    fn same_answers_as_the_pairwise_test() {
        // A small xorshift: many random sets of short intervals on a small line, so that equal
        // starts, nesting, touching ends, empty and wrapped intervals all occur.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = |n: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % n
        };
        for _ in 0..20_000 {
            let n = usize::try_from(next(7)).unwrap_or(0);
            let iv: Vec<(u64, u64)> = (0..n)
                .map(|_| {
                    let start = next(12);
                    let end = match next(10) {
                        0 => u64::MAX,
                        1 => start.wrapping_sub(1), // a wrapped `offset + length`
                        _ => start + next(5),
                    };
                    (start, end)
                })
                .collect();
            assert_eq!(covered_by_another(&iv), naive(&iv), "{iv:?}");
        }
    }
}

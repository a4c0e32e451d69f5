//! Random mutations of a real header -- its JSON text, its JSON structure, its binary header
//! fields (checksums recomputed unless the case says otherwise) -- judged by our reader and by
//! `cryptsetup luksDump`: the verdicts must match, what both accept must parse to the same
//! metadata (cryptsetup's `--dump-json-metadata`), our reader must never panic, and whatever we
//! accept must survive parse -> serialize -> parse unchanged.
//! The generator is a fixed-seed xorshift; the base image is made fresh (new salts), so failures
//! print the mutated header itself.
//! `MUT_SEED=<u64> MUT_CASES=<n>` run a different or longer sequence (for hunting, not CI).
#![allow(clippy::unwrap_used, clippy::cast_possible_truncation)]

use super::dump::projection;
use luks2::header::{self, binary};
use luks2::io::MemDevice;
use luks2::metadata::Metadata;
use testkit::cryptsetup::{Image, cryptsetup, run};

const HDR: usize = 16384;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Bytes that tend to matter to a JSON parser and to the validator.
const INTERESTING: &[u8] = b"{}[]\",:0123456789-+.eE/* \n\t\\'abcdfnrtuxNTI\0\x01\xff";

fn mutate(rng: &mut Rng, json: &[u8]) -> Vec<u8> {
    let mut t = json.to_vec();
    for _ in 0..1 + rng.below(3) {
        let pos = rng.below(t.len());
        let byte = INTERESTING[rng.below(INTERESTING.len())];
        match rng.below(4) {
            0 => t[pos] = byte,
            1 => {
                t.remove(pos);
            }
            2 => t.insert(pos, byte),
            _ => {
                // Replace a digit run with another number (sizes, offsets, counts).
                let start = pos;
                let end = (start..t.len())
                    .find(|&i| !t[i].is_ascii_digit())
                    .unwrap_or(t.len());
                if end > start {
                    let n = match rng.below(5) {
                        0 => "0".to_owned(),
                        1 => u64::MAX.to_string(),
                        2 => "18446744073709551616".to_owned(),
                        3 => (rng.next() % 100_000_000).to_string(),
                        _ => "4096".to_owned(),
                    };
                    t.splice(start..end, n.bytes());
                }
            }
        }
    }
    t
}

/// On a header both accept, what cryptsetup parsed (`--dump-json-metadata`) must match ours.
fn compare_parsed(
    cs: &std::path::Path,
    file: &std::path::Path,
    h: &header::Header,
    case: usize,
    problems: &mut Vec<String>,
) {
    let dump = run(
        cs,
        &["luksDump", "--dump-json-metadata", file.to_str().unwrap()],
    );
    // json-c prints some values no strict parser reads (NaN, "1.", invalid UTF-8): skip those.
    if let Ok(theirs) = serde_json::from_slice::<serde_json::Value>(&dump.stdout) {
        let (a, b) = (projection(&theirs), projection(&h.metadata.to_value()));
        if a != b {
            problems.push(format!(
                "case {case}: parsed differently\n  cryptsetup {a}\n  ours       {b}"
            ));
        }
    }
}

/// Verdicts of a run of JSON mutations.
#[derive(Default)]
struct Tally {
    total: usize,
    agreed: usize,
    accepted: usize,
    disagreements: Vec<String>,
}

/// Judges one mutated image (`bytes`, from mutation `text`): our verdict (an accepted header must
/// survive our own round trip) against cryptsetup's on `file`, and on a header both accept, what
/// each parsed.
fn judge_json(
    cs: &std::path::Path,
    file: &std::path::Path,
    bytes: Vec<u8>,
    case: usize,
    text: &str,
    t: &mut Tally,
) {
    let ours = header::read(&MemDevice::from_vec(bytes.clone()));
    if let Ok(h) = &ours {
        let again = Metadata::parse(&h.metadata.to_json_area().unwrap(), h.hdr_size())
            .unwrap_or_else(|e| panic!("case {case}: our own output does not parse: {e}"));
        assert_eq!(
            again, h.metadata,
            "case {case}: round trip changed the metadata"
        );
        t.accepted += 1;
    }
    std::fs::write(file, &bytes).unwrap();
    let theirs = run(cs, &["luksDump", file.to_str().unwrap()])
        .status
        .success();
    t.total += 1;
    if let (true, Ok(h)) = (theirs, &ours) {
        compare_parsed(cs, file, h, case, &mut t.disagreements);
    }
    if theirs == ours.is_ok() {
        t.agreed += 1;
    } else {
        t.disagreements.push(format!(
            "case {case}: cryptsetup {theirs}, ours {:?}\n  {text}",
            ours.err().map(|e| e.to_string())
        ));
    }
}

/// Writes `json` as the JSON area of both copies of `base` and reseals them.
fn with_json(base: &[u8], json: &[u8]) -> Option<Vec<u8>> {
    if json.len() >= HDR - 4096 {
        return None;
    }
    let mut img = base.to_vec();
    for off in [0, HDR] {
        let area = &mut img[off + 4096..off + HDR];
        area.fill(0);
        area[..json.len()].copy_from_slice(json);
        let bin = binary::BinaryHeader::parse(&img[off..off + 4096]).unwrap();
        let sealed = binary::seal(&bin, &img[off + 4096..off + HDR]).unwrap();
        img[off..off + 4096].copy_from_slice(&sealed);
    }
    Some(img)
}

#[test]
fn random_json_mutations_agree_with_cryptsetup() {
    let Some(cs) = cryptsetup() else { return };
    let img = Image::small(&cs, &[]);
    img.import_token(
        &cs,
        r#"{"type":"onmetal-test","keyslots":["0"],"n":[1,2.5,true,null]}"#,
    );
    let base = img.bytes();
    let end = base[4096..HDR].iter().position(|&b| b == 0).unwrap();
    let json = base[4096..4096 + end].to_vec();

    let mut rng = Rng(std::env::var("MUT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x9e37_79b9_7f4a_7c15));
    let mut t = Tally::default();
    let file = img.dir.path().join("case.img");
    for case in 0..std::env::var("MUT_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(400)
    {
        let text = mutate(&mut rng, &json);
        let Some(bytes) = with_json(&base, &text) else {
            continue;
        };
        judge_json(
            &cs,
            &file,
            bytes,
            case,
            &String::from_utf8_lossy(&text),
            &mut t,
        );
    }
    let Tally {
        total,
        agreed,
        accepted,
        disagreements,
    } = t;
    println!("random mutations: {total}, agreed: {agreed}, accepted by us: {accepted}");
    assert!(
        total > 300 && accepted > 20 && total - accepted > 20,
        "{total} {accepted}"
    );
    assert!(
        disagreements.is_empty(),
        "verdicts differ:\n{}",
        disagreements.join("\n")
    );
}

/// Paths of every value in `v` (object keys and array indices).
fn paths(v: &serde_json::Value, prefix: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    out.push(prefix.clone());
    match v {
        serde_json::Value::Object(m) => {
            for (k, child) in m {
                prefix.push(k.clone());
                paths(child, prefix, out);
                prefix.pop();
            }
        }
        serde_json::Value::Array(a) => {
            for (i, child) in a.iter().enumerate() {
                prefix.push(i.to_string());
                paths(child, prefix, out);
                prefix.pop();
            }
        }
        _ => {}
    }
}

fn at<'a>(v: &'a mut serde_json::Value, path: &[String]) -> &'a mut serde_json::Value {
    path.iter().fold(v, |v, k| match v {
        serde_json::Value::Array(a) => &mut a[k.parse::<usize>().unwrap()],
        other => &mut other[k.as_str()],
    })
}

/// One structural change: replace a value, delete an entry, or copy an entry under a new key.
fn mutate_value(rng: &mut Rng, root: &mut serde_json::Value) {
    use serde_json::json;
    let mut all = Vec::new();
    paths(root, &mut Vec::new(), &mut all);
    let path = all[1 + rng.below(all.len() - 1)].clone();
    let replacements = [
        json!(""),
        json!("0"),
        json!("4096"),
        json!("dynamic"),
        json!("x"),
        json!("1"),
        json!("18446744073709551615"),
        json!("2097152"),
        json!("32768"),
        json!(0),
        json!(-1),
        json!(1),
        json!(4096),
        json!(4294967296u64),
        json!(1.5),
        json!(true),
        json!(null),
        json!([]),
        json!({}),
        json!(["0"]),
        json!(["1"]),
        json!("sha1"),
        json!("pbkdf2"),
        json!("argon2id"),
        json!("luks2"),
        json!("crypt"),
        json!("raw"),
        json!(512),
    ];
    match rng.below(3) {
        0 => *at(root, &path) = replacements[rng.below(replacements.len())].clone(),
        1 => {
            let (last, parent) = path.split_last().unwrap();
            match at(root, parent) {
                serde_json::Value::Object(m) => {
                    m.shift_remove(last);
                }
                serde_json::Value::Array(a) => {
                    a.remove(last.parse::<usize>().unwrap());
                }
                _ => {}
            }
        }
        _ => {
            let (last, parent) = path.split_last().unwrap();
            let value = at(root, &path).clone();
            if let serde_json::Value::Object(m) = at(root, parent) {
                let keys = ["1", "2", "31", "32", "01", "7"];
                let key = keys[rng.below(keys.len())];
                if key != last {
                    m.insert(key.to_owned(), value);
                }
            }
        }
    }
}

#[test]
fn random_structural_mutations_agree_with_cryptsetup() {
    let Some(cs) = cryptsetup() else { return };
    let img = Image::small(&cs, &[]);
    let key2 = img.dir.path().join("key2");
    std::fs::write(&key2, b"other").unwrap();
    let add = [
        "luksAddKey",
        "--batch-mode",
        "--pbkdf",
        "argon2id",
        "--pbkdf-force-iterations",
        "4",
        "--pbkdf-memory",
        "32",
        "--key-file",
        img.k(),
        img.p(),
        key2.to_str().unwrap(),
    ];
    assert!(run(&cs, &add).status.success());
    img.import_token(&cs, r#"{"type":"onmetal-test","keyslots":["1"],"n":[1]}"#);
    let base = img.bytes();
    let end = base[4096..HDR].iter().position(|&b| b == 0).unwrap();
    let json: serde_json::Value = serde_json::from_slice(&base[4096..4096 + end]).unwrap();

    let seed = std::env::var("MUT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x2545_f491_4f6c_dd1d);
    let cases: usize = std::env::var("MUT_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(300);
    let mut rng = Rng(seed);
    let mut t = Tally::default();
    let file = img.dir.path().join("case.img");
    for case in 0..cases {
        let mut v = json.clone();
        for _ in 0..1 + rng.below(2) {
            mutate_value(&mut rng, &mut v);
        }
        let text = v.to_string();
        let Some(bytes) = with_json(&base, text.as_bytes()) else {
            continue;
        };
        judge_json(&cs, &file, bytes, case, &text, &mut t);
    }
    let Tally {
        total,
        agreed,
        accepted,
        disagreements,
    } = t;
    println!("structural mutations: {total}, agreed: {agreed}, accepted by us: {accepted}");
    assert!(
        total > cases / 2 && accepted > total / 10 && total - accepted > total / 10,
        "{total} {accepted}"
    );
    assert!(
        disagreements.is_empty(),
        "verdicts differ:\n{}",
        disagreements.join("\n")
    );
}

/// Reseals the copy at `off` (checksum over its binary header and JSON area) if its checksum
/// algorithm is one we can compute; returns whether it did.
fn reseal(img: &mut [u8], off: usize, hdr_size: usize) -> bool {
    let Ok(bin) = binary::BinaryHeader::parse(&img[off..off + 4096]) else {
        return false;
    };
    let Ok(alg) = bin.checksum_algorithm() else {
        return false;
    };
    let mut raw = img[off..off + 4096].to_vec();
    raw[binary::CSUM_OFFSET..binary::CSUM_OFFSET + binary::CSUM_LEN].fill(0);
    let sum = binary::compute_checksum(alg, &raw, &img[off + 4096..off + hdr_size]).unwrap();
    raw[binary::CSUM_OFFSET..binary::CSUM_OFFSET + sum.len()].copy_from_slice(&sum);
    img[off..off + 4096].copy_from_slice(&raw);
    true
}

#[test]
fn random_binary_header_mutations_agree_with_cryptsetup() {
    let Some(cs) = cryptsetup() else { return };
    let img = Image::small(&cs, &["--label", "L"]);
    let base = img.bytes();
    let seed = std::env::var("MUT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x1234_5678_9abc_def1);
    let cases: usize = std::env::var("MUT_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(300);
    let mut rng = Rng(seed);
    // Field starts (and a few inside fields) of the binary header.
    let spots = [
        0usize, 5, 6, 7, 8, 14, 15, 16, 23, 24, 71, 72, 75, 78, 103, 104, 167, 168, 200, 207, 208,
        255, 256, 262, 263, 264, 447, 500, 4095,
    ];
    let values = [
        0u8, 1, 0x10, 0x20, 0x40, 0x7f, 0x80, 0xff, b'S', b'L', b'0', b'a',
    ];
    let (mut total, mut agreed, mut accepted) = (0, 0, 0);
    let mut disagreements = Vec::new();
    let file = img.dir.path().join("case.img");
    for case in 0..cases {
        let mut bytes = base.clone();
        let which = rng.below(3); // 0: primary, 1: secondary, 2: both
        for _ in 0..1 + rng.below(2) {
            let pos = spots[rng.below(spots.len())];
            let val = values[rng.below(values.len())];
            if which != 1 {
                bytes[pos] = val;
            }
            if which != 0 {
                bytes[HDR + pos] = val;
            }
        }
        if rng.below(4) != 0 {
            reseal(&mut bytes, 0, HDR);
            reseal(&mut bytes, HDR, HDR);
        }
        let ours = header::read(&MemDevice::from_vec(bytes.clone()));
        accepted += usize::from(ours.is_ok());
        std::fs::write(&file, &bytes).unwrap();
        let theirs = run(&cs, &["luksDump", file.to_str().unwrap()])
            .status
            .success();
        total += 1;
        if let (true, Ok(h)) = (theirs, &ours) {
            compare_parsed(&cs, &file, h, case, &mut disagreements);
        }
        if theirs == ours.is_ok() {
            agreed += 1;
        } else {
            disagreements.push(format!(
                "case {case}: cryptsetup {theirs}, ours {:?}; primary {:02x?}, secondary {:02x?}",
                ours.err().map(|e| e.to_string()),
                &bytes[..264],
                &bytes[HDR..HDR + 264]
            ));
        }
    }
    println!("binary mutations: {total}, agreed: {agreed}, accepted by us: {accepted}");
    assert!(
        accepted > total / 10 && total - accepted > total / 10,
        "{total} {accepted}"
    );
    assert!(
        disagreements.is_empty(),
        "verdicts differ:\n{}",
        disagreements.join("\n")
    );
}

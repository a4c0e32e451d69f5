//! Random mutations of a real header's JSON text (checksums recomputed, both copies identical),
//! judged by our reader and by `cryptsetup luksDump`: the verdicts must match, our reader must
//! never panic, and whatever we accept must survive parse -> serialize -> parse unchanged.
//! The generator is a fixed-seed xorshift, so a failure is reproducible from its case number.
//! `MUT_SEED=<u64> MUT_CASES=<n>` run a different or longer sequence (for hunting, not CI).
#![allow(clippy::unwrap_used, clippy::cast_possible_truncation)]

mod common;

use common::{Image, cryptsetup, run};
use luks2::header::{self, binary};
use luks2::io::MemDevice;
use luks2::metadata::Metadata;

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
    let img = Image::format(
        &cs,
        4 * 1024 * 1024,
        &[
            "--luks2-keyslots-size",
            "1048576",
            "--offset",
            "4096",
            "--key-size",
            "256",
        ],
    );
    let tok = img.dir.path().join("t.json");
    std::fs::write(
        &tok,
        r#"{"type":"onmetal-test","keyslots":["0"],"n":[1,2.5,true,null]}"#,
    )
    .unwrap();
    let out = run(
        &cs,
        &[
            "token",
            "import",
            "--json-file",
            tok.to_str().unwrap(),
            img.p(),
        ],
    );
    assert!(out.status.success());
    let base = img.bytes();
    let end = base[4096..HDR].iter().position(|&b| b == 0).unwrap();
    let json = base[4096..4096 + end].to_vec();

    let mut rng = Rng(std::env::var("MUT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x9e37_79b9_7f4a_7c15));
    let (mut total, mut agreed, mut accepted) = (0, 0, 0);
    let mut disagreements = Vec::new();
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
        let ours = header::read(&MemDevice::from_vec(bytes.clone()));
        if let Ok(h) = &ours {
            let again = Metadata::parse(&h.metadata.to_json_area().unwrap(), h.hdr_size())
                .unwrap_or_else(|e| panic!("case {case}: our own output does not parse: {e}"));
            assert_eq!(
                again, h.metadata,
                "case {case}: round trip changed the metadata"
            );
            accepted += 1;
        }
        std::fs::write(&file, &bytes).unwrap();
        let theirs = run(&cs, &["luksDump", file.to_str().unwrap()])
            .status
            .success();
        total += 1;
        if theirs == ours.is_ok() {
            agreed += 1;
        } else {
            disagreements.push(format!(
                "case {case}: cryptsetup {theirs}, ours {:?}\n  {}",
                ours.err().map(|e| e.to_string()),
                String::from_utf8_lossy(&text)
            ));
        }
    }
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

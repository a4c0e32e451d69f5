//! Replays every input under `fuzz/regressions/<target>/` (crashes found by fuzzing, kept after
//! the fix) through its target's checks, without libFuzzer or sanitizers: `cargo test
//! --manifest-path fuzz/Cargo.toml`. `scripts/fuzz-smoke` also feeds them to the real targets.

use std::path::Path;

#[test]
fn regressions_replay_cleanly() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("regressions");
    let mut n = 0;
    for t in std::fs::read_dir(&root).unwrap() {
        let t = t.unwrap().path();
        let name = t.file_name().unwrap().to_str().unwrap().to_owned();
        let f: fn(&[u8]) = match name.as_str() {
            "binary_header" => onmetal_csi_luks_fuzz::binary_header,
            "json_metadata" => onmetal_csi_luks_fuzz::json_metadata,
            "header_area" => onmetal_csi_luks_fuzz::header_area,
            "keyslot_open" => onmetal_csi_luks_fuzz::keyslot_open,
            "kmip_ttlv" => onmetal_csi_luks_fuzz::kmip_ttlv,
            "transit_response" => onmetal_csi_luks_fuzz::transit_response,
            other => panic!("regressions/{other}: no such fuzz target"),
        };
        for input in std::fs::read_dir(&t).unwrap() {
            let input = input.unwrap().path();
            eprintln!("replaying {}", input.display());
            f(&std::fs::read(&input).unwrap());
            n += 1;
        }
    }
    assert!(n > 0, "no regression inputs under {}", root.display());
    eprintln!("{n} regression inputs replayed");
}

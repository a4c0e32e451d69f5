#![no_main]
//! Fuzz target `keyslot_open`: see `onmetal_csi_luks_fuzz::keyslot_open` for the properties checked.

libfuzzer_sys::fuzz_target!(|data: &[u8]| onmetal_csi_luks_fuzz::keyslot_open(data));

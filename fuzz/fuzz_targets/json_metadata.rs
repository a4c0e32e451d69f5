#![no_main]
//! Fuzz target `json_metadata`: see `onmetal_csi_luks_fuzz::json_metadata` for the properties checked.

libfuzzer_sys::fuzz_target!(|data: &[u8]| onmetal_csi_luks_fuzz::json_metadata(data));

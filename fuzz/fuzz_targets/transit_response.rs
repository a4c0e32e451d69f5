#![no_main]
//! Fuzz target `transit_response`: see `onmetal_csi_luks_fuzz::transit_response` for the properties checked.

libfuzzer_sys::fuzz_target!(|data: &[u8]| onmetal_csi_luks_fuzz::transit_response(data));

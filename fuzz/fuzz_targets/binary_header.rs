#![no_main]
//! Fuzz target `binary_header`: see `onmetal_csi_luks_fuzz::binary_header` for the properties checked.

libfuzzer_sys::fuzz_target!(|data: &[u8]| onmetal_csi_luks_fuzz::binary_header(data));

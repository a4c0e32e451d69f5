#![no_main]
//! Fuzz target `header_area`: see `onmetal_csi_luks_fuzz::header_area` for the properties checked.

libfuzzer_sys::fuzz_target!(|data: &[u8]| onmetal_csi_luks_fuzz::header_area(data));

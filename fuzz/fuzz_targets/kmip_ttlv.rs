#![no_main]
//! Fuzz target `kmip_ttlv`: see `onmetal_csi_luks_fuzz::kmip_ttlv` for the properties checked.

libfuzzer_sys::fuzz_target!(|data: &[u8]| onmetal_csi_luks_fuzz::kmip_ttlv(data));

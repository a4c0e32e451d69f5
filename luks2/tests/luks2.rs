//! The LUKS2 library on its own terms: known answers, bounded KDF costs, keyslot operations,
//! crash safety of every write, concurrent writers, hostile and unknown headers, signature
//! probing (cryptsetup, where installed, judges a few of them too). One module per behaviour,
//! mapped in `luks2/tests/README.md`; agreement with cryptsetup itself is `tests/cryptsetup.rs`.
#![allow(missing_docs)]

mod luks2 {
    mod argon2_parallel;
    mod concurrent_update;
    mod crash_keyslots;
    mod header_crash;
    mod hostile_headers;
    mod kat;
    mod kdf_limits;
    mod keyslot_ops;
    mod probe_signatures;
    mod unknown_json;
}

//! The LUKS2 library against cryptsetup 2.6, the reference, in both directions: images
//! cryptsetup made open with us (`to_us`), ours open with cryptsetup (`from_us`), the binary
//! header (`header`), and the verdict on valid and invalid metadata (`validation`, `mutation`), and what cryptsetup refuses refused alike (`refusals`).
//! Needs cryptsetup (`testkit::cryptsetup`: a skip without it, a failure under `CI=true`).
//! Mapped in `luks2/tests/README.md`.
#![allow(missing_docs)]

mod cryptsetup {
    mod dump;
    mod from_us;
    mod header;
    mod mutation;
    mod refusals;
    mod to_us;
    mod validation;
}

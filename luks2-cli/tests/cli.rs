//! The `luks2` command against cryptsetup 2.6 on plain image files, no device-mapper needed:
//! `luks2.rs` the verbs, their output and exit codes; `parity.rs` the cases where it used to
//! differ from cryptsetup, each run through both.
#![allow(clippy::unwrap_used, missing_docs)]

mod cli {
    mod luks2;
    mod parity;
}

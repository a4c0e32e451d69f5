//! Pure-Rust LUKS2.
//!
//! This crate reads, validates and writes LUKS2 headers and keyslots exactly as cryptsetup 2.6
//! does, so that a volume formatted here opens with stock cryptsetup and vice versa.
//!
//! It is sans-IO at its core: parsing works on byte slices, device access goes through a small
//! read-at/write-at trait. It must never depend on tokio, the network or device-mapper (that is
//! the `dm` crate's job) and contains no unsafe code.
//!
//! Every header write runs under cryptsetup's own writer lock ([`io::with_exclusive_lock`]):
//! `flock` on an image file, and for a block device `flock` on
//! `/run/cryptsetup/L_<major>:<minor>` ([`lock`]), so our writers and a concurrent cryptsetup
//! never interleave.
#![forbid(unsafe_code)]

pub mod backup;
pub mod crypto;
pub mod device;
pub mod error;
pub mod format;
pub mod header;
pub mod io;
pub mod keyslot;
pub mod lock;
pub mod metadata;
pub mod secret;
pub mod signature;
pub mod token;

pub use device::Luks2Device;
pub use error::{Error, ErrorKind, Result};
pub use secret::{Passphrase, VolumeKey};

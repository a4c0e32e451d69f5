//! Cryptographic building blocks of LUKS2 keyslots, all pure Rust (RustCrypto):
//!
//! - [`hash`]: the hash algorithms LUKS2 metadata names (sha1, sha256, sha512);
//! - [`kdf`]: PBKDF2 and Argon2i/Argon2id with cost bounds checked before any allocation;
//! - [`af`]: the anti-forensic splitter;
//! - [`cipher`]: keyslot area encryption (aes-xts-plain64 and friends, 512-byte units);
//! - [`digest`]: the PBKDF2 volume key digest, compared in constant time;
//! - [`calibrate`]: PBKDF calibration for new keyslots, equivalent to cryptsetup 2.6.

pub mod af;
pub mod calibrate;
pub mod cipher;
pub mod digest;
pub mod hash;
pub mod kdf;
mod sys;

pub use af::LUKS_STRIPES;
pub use calibrate::PbkdfOptions;
pub use cipher::KeyslotCipher;
pub use hash::HashAlgorithm;
pub use kdf::{Argon2Variant, Kdf, KdfKind, KdfLimits};

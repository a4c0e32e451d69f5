//! Hash algorithms LUKS2 names in its metadata (`af.hash`, `kdf.hash`, `digests.*.hash`).
//!
//! Only the ones cryptsetup 2.6 formats with are supported: sha1, sha256 and sha512. Anything
//! else (ripemd160, whirlpool, sha3, stribog...) is refused with [`Error::Unsupported`].

use std::fmt;
use std::str::FromStr;

use sha1::Sha1;
use sha2::{Digest, Sha256, Sha512};
use zeroize::Zeroize;

use crate::error::{Error, Result};

/// A hash algorithm usable for PBKDF2, the AF splitter and volume key digests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HashAlgorithm {
    /// SHA-1 (LUKS1 era, still accepted by cryptsetup).
    Sha1,
    /// SHA-256, cryptsetup's default.
    Sha256,
    /// SHA-512.
    Sha512,
}

impl HashAlgorithm {
    /// All supported algorithms.
    pub const ALL: [HashAlgorithm; 3] = [
        HashAlgorithm::Sha1,
        HashAlgorithm::Sha256,
        HashAlgorithm::Sha512,
    ];

    /// Parses a hash name as it appears in LUKS2 metadata (lowercase, e.g. `sha256`).
    pub fn from_name(name: &str) -> Result<Self> {
        match name {
            "sha1" => Ok(HashAlgorithm::Sha1),
            "sha256" => Ok(HashAlgorithm::Sha256),
            "sha512" => Ok(HashAlgorithm::Sha512),
            other => Err(Error::Unsupported(format!(
                "hash algorithm {other:?} (supported: sha1, sha256, sha512)"
            ))),
        }
    }

    /// The name used in LUKS2 metadata.
    pub fn name(self) -> &'static str {
        match self {
            HashAlgorithm::Sha1 => "sha1",
            HashAlgorithm::Sha256 => "sha256",
            HashAlgorithm::Sha512 => "sha512",
        }
    }

    /// The digest length in bytes.
    pub fn output_size(self) -> usize {
        match self {
            HashAlgorithm::Sha1 => 20,
            HashAlgorithm::Sha256 => 32,
            HashAlgorithm::Sha512 => 64,
        }
    }

    /// Hashes the concatenation of `parts` and writes the first `out.len()` bytes of the digest
    /// into `out` (a truncated digest, as cryptsetup's `crypt_hash_final` does for short outputs).
    ///
    /// `out` must not be longer than [`output_size`](Self::output_size).
    pub(crate) fn hash_parts_into(self, parts: &[&[u8]], out: &mut [u8]) -> Result<()> {
        fn run<D: Digest>(parts: &[&[u8]], out: &mut [u8]) -> Result<()> {
            let mut h = D::new();
            for p in parts {
                h.update(p);
            }
            let mut full = h.finalize();
            let n = out.len();
            let res = match full.get(..n) {
                Some(src) => {
                    out.copy_from_slice(src);
                    Ok(())
                }
                None => Err(Error::InvalidArgument(format!(
                    "hash output of {n} bytes is longer than the digest"
                ))),
            };
            full.as_mut_slice().zeroize();
            res
        }
        match self {
            HashAlgorithm::Sha1 => run::<Sha1>(parts, out),
            HashAlgorithm::Sha256 => run::<Sha256>(parts, out),
            HashAlgorithm::Sha512 => run::<Sha512>(parts, out),
        }
    }

    /// PBKDF2-HMAC with this hash (RFC 8018) into `out`. `iterations` must be at least 1.
    pub(crate) fn pbkdf2_into(
        self,
        password: &[u8],
        salt: &[u8],
        iterations: u32,
        out: &mut [u8],
    ) -> Result<()> {
        if iterations == 0 {
            return Err(Error::InvalidArgument(
                "PBKDF2 iterations must not be zero".into(),
            ));
        }
        match self {
            HashAlgorithm::Sha1 => pbkdf2::pbkdf2_hmac::<Sha1>(password, salt, iterations, out),
            HashAlgorithm::Sha256 => pbkdf2::pbkdf2_hmac::<Sha256>(password, salt, iterations, out),
            HashAlgorithm::Sha512 => pbkdf2::pbkdf2_hmac::<Sha512>(password, salt, iterations, out),
        }
        Ok(())
    }
}

impl FromStr for HashAlgorithm {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        HashAlgorithm::from_name(s)
    }
}

impl fmt::Display for HashAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::cast_possible_truncation)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    #[test]
    fn names_round_trip() {
        for h in HashAlgorithm::ALL {
            assert_eq!(HashAlgorithm::from_name(h.name()).unwrap(), h);
            assert_eq!(h.to_string().parse::<HashAlgorithm>().unwrap(), h);
        }
    }

    #[test]
    fn unknown_hashes_are_unsupported_not_panics() {
        for name in [
            "ripemd160",
            "whirlpool",
            "SHA256",
            "sha3-256",
            "",
            "sha256\0",
        ] {
            let e = HashAlgorithm::from_name(name).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Unsupported, "{name:?}");
        }
    }

    #[test]
    fn truncated_output_is_prefix_of_full_digest() {
        // SHA-256("abc") from FIPS 180-2 appendix B.1.
        let full = hex::decode("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
            .unwrap();
        let mut out = [0u8; 32];
        HashAlgorithm::Sha256
            .hash_parts_into(&[b"a", b"bc"], &mut out)
            .unwrap();
        assert_eq!(&out[..], &full[..]);
        let mut short = [0u8; 7];
        HashAlgorithm::Sha256
            .hash_parts_into(&[b"abc"], &mut short)
            .unwrap();
        assert_eq!(&short[..], &full[..7]);
        let mut long = [0u8; 33];
        assert!(
            HashAlgorithm::Sha256
                .hash_parts_into(&[b"abc"], &mut long)
                .is_err()
        );
    }

    #[test]
    fn output_sizes() {
        for h in HashAlgorithm::ALL {
            let mut out = vec![0u8; h.output_size()];
            h.hash_parts_into(&[b"x"], &mut out).unwrap();
            assert!(out.iter().any(|&b| b != 0));
        }
    }
}

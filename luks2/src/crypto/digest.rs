//! Volume key digests (`digests.*`, type `pbkdf2`): PBKDF2 over the volume key, compared in
//! constant time.

use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use super::hash::HashAlgorithm;
use crate::error::{Error, Result};

/// Salt length of a LUKS2 digest (cryptsetup's `LUKS_SALTSIZE`).
pub const DIGEST_SALT_LEN: usize = 32;

/// The LUKS1-era digest length cryptsetup still accepts for any hash.
pub const LEGACY_DIGEST_LEN: usize = 20;

/// Minimum digest iterations (cryptsetup's PBKDF2 minimum).
pub const MIN_DIGEST_ITERATIONS: u32 = 1000;

/// Computes a new digest of `volume_key`: PBKDF2-`hash`, full hash length output.
pub fn compute_digest(
    hash: HashAlgorithm,
    iterations: u32,
    salt: &[u8],
    volume_key: &[u8],
) -> Result<Vec<u8>> {
    if iterations < MIN_DIGEST_ITERATIONS {
        return Err(Error::InvalidArgument(format!(
            "digest iterations {iterations} below the minimum of {MIN_DIGEST_ITERATIONS}"
        )));
    }
    let mut out = vec![0u8; hash.output_size()];
    hash.pbkdf2_into(volume_key, salt, iterations, &mut out)?;
    Ok(out)
}

/// Checks `volume_key` against a stored digest in constant time.
///
/// As cryptsetup's `PBKDF2_digest_verify`: the salt must be 32 bytes and the stored digest either
/// 20 bytes or the hash's full length. `Ok(false)` means "wrong key"; `Err` means the digest
/// itself is malformed.
pub fn verify_digest(
    hash: HashAlgorithm,
    iterations: u32,
    salt: &[u8],
    expected: &[u8],
    volume_key: &[u8],
) -> Result<bool> {
    if salt.len() != DIGEST_SALT_LEN {
        return Err(Error::header(
            "digest salt",
            format!("{} bytes, expected 32", salt.len()),
        ));
    }
    let len = expected.len();
    if len != LEGACY_DIGEST_LEN && len != hash.output_size() {
        return Err(Error::header(
            "digest",
            format!("{len} bytes does not fit {hash}"),
        ));
    }
    if iterations == 0 {
        return Err(Error::header("digest iterations", "zero"));
    }
    let mut computed = Zeroizing::new(vec![0u8; len]);
    hash.pbkdf2_into(volume_key, salt, iterations, &mut computed)?;
    Ok(bool::from(computed.as_slice().ct_eq(expected)))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::cast_possible_truncation)]
mod tests {
    use super::*;

    #[test]
    fn compute_then_verify() {
        let salt = [1u8; 32];
        for h in HashAlgorithm::ALL {
            let d = compute_digest(h, 1000, &salt, b"volume key").unwrap();
            assert_eq!(d.len(), h.output_size());
            assert!(verify_digest(h, 1000, &salt, &d, b"volume key").unwrap());
            assert!(!verify_digest(h, 1000, &salt, &d, b"volume kez").unwrap());
            assert!(!verify_digest(h, 1001, &salt, &d, b"volume key").unwrap());
            // A 20-byte (LUKS1-style) digest is a prefix of the full PBKDF2 output.
            assert!(verify_digest(h, 1000, &salt, &d[..20], b"volume key").unwrap());
        }
    }

    #[test]
    fn malformed_digests_are_errors() {
        let salt = [1u8; 32];
        let d = compute_digest(HashAlgorithm::Sha256, 1000, &salt, b"k").unwrap();
        assert!(verify_digest(HashAlgorithm::Sha256, 1000, &salt[..16], &d, b"k").is_err());
        assert!(verify_digest(HashAlgorithm::Sha256, 1000, &salt, &d[..31], b"k").is_err());
        assert!(verify_digest(HashAlgorithm::Sha256, 0, &salt, &d, b"k").is_err());
        assert!(compute_digest(HashAlgorithm::Sha256, 999, &salt, b"k").is_err());
    }
}

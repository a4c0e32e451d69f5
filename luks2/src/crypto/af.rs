//! The anti-forensic information splitter (LUKS1 "AF", used unchanged by LUKS2 keyslots).
//!
//! A key of `n` bytes is expanded to `n * stripes` bytes: `stripes - 1` random stripes, and a
//! last stripe that is the key XORed with the diffused XOR-accumulation of the others. Losing any
//! part of any stripe loses the key.
//!
//! Diffusion hashes each digest-sized chunk of the buffer as `H(be32(chunk index) || chunk)`;
//! a trailing partial chunk is hashed the same way (with the next index) and the digest is
//! truncated to the chunk's length — the behaviour of cryptsetup's `lib/luks1/af.c`.

use zeroize::Zeroizing;

use super::hash::HashAlgorithm;
use crate::error::{Error, Result};

/// The stripe count every LUKS1/LUKS2 keyslot uses.
pub const LUKS_STRIPES: u32 = 4000;

/// Largest key the splitter accepts (cryptsetup caps volume keys at 512 bytes).
pub const MAX_KEY_LEN: usize = 512;

/// Size in bytes of the split material for a key of `key_len` bytes: `key_len * stripes`.
pub fn split_len(key_len: usize, stripes: u32) -> Result<usize> {
    usize::try_from(stripes)
        .ok()
        .and_then(|s| key_len.checked_mul(s))
        .ok_or_else(|| Error::InvalidArgument("AF split size overflows".into()))
}

fn check(key_len: usize, stripes: u32) -> Result<()> {
    if key_len == 0 || key_len > MAX_KEY_LEN {
        return Err(Error::InvalidArgument(format!(
            "AF key length {key_len} out of range (1..={MAX_KEY_LEN})"
        )));
    }
    if stripes == 0 {
        return Err(Error::InvalidArgument("AF stripes must not be zero".into()));
    }
    Ok(())
}

/// In-place diffusion of `buf` (cryptsetup's `diffuse`).
fn diffuse(buf: &mut [u8], hash: HashAlgorithm) -> Result<()> {
    let ds = hash.output_size();
    let mut input = Zeroizing::new([0u8; 64]);
    for (i, chunk) in buf.chunks_mut(ds).enumerate() {
        let index = u32::try_from(i)
            .map_err(|_| Error::InvalidArgument("AF block too large".into()))?
            .to_be_bytes();
        let n = chunk.len();
        let saved = input
            .get_mut(..n)
            .ok_or_else(|| Error::InvalidArgument("AF chunk larger than digest".into()))?;
        saved.copy_from_slice(chunk);
        hash.hash_parts_into(&[&index, saved], chunk)?;
    }
    Ok(())
}

fn xor_into(acc: &mut [u8], src: &[u8]) {
    for (a, s) in acc.iter_mut().zip(src) {
        *a ^= *s;
    }
}

/// Splits `key` into `stripes` stripes with fresh random data from the OS CSPRNG.
pub fn split(key: &[u8], stripes: u32, hash: HashAlgorithm) -> Result<Zeroizing<Vec<u8>>> {
    split_with(key, stripes, hash, |buf| {
        getrandom::fill(buf)
            .map_err(|e| Error::io("reading random data for AF split", std::io::Error::other(e)))
    })
}

/// Splits `key` with the random stripes supplied by `fill_random` (used by [`split`]; exposed so
/// known-answer tests can fix the randomness).
pub fn split_with(
    key: &[u8],
    stripes: u32,
    hash: HashAlgorithm,
    mut fill_random: impl FnMut(&mut [u8]) -> Result<()>,
) -> Result<Zeroizing<Vec<u8>>> {
    check(key.len(), stripes)?;
    let n = key.len();
    let total = split_len(n, stripes)?;
    let mut out = Zeroizing::new(vec![0u8; total]);
    let mut acc = Zeroizing::new(vec![0u8; n]);
    let random_len = total - n;
    let (random, last) = out.split_at_mut(random_len);
    fill_random(random)?;
    for stripe in random.chunks_exact(n) {
        xor_into(&mut acc, stripe);
        diffuse(&mut acc, hash)?;
    }
    last.copy_from_slice(key);
    xor_into(last, &acc);
    Ok(out)
}

/// Recovers a key of `key_len` bytes from `material` (at least `key_len * stripes` bytes; any
/// sector padding after that is ignored).
pub fn merge(
    material: &[u8],
    key_len: usize,
    stripes: u32,
    hash: HashAlgorithm,
) -> Result<Zeroizing<Vec<u8>>> {
    check(key_len, stripes)?;
    let total = split_len(key_len, stripes)?;
    let material = material.get(..total).ok_or_else(|| {
        Error::InvalidArgument(format!(
            "AF material is {} bytes, need {total}",
            material.len()
        ))
    })?;
    let (random, last) = material.split_at(total - key_len);
    let mut acc = Zeroizing::new(vec![0u8; key_len]);
    for stripe in random.chunks_exact(key_len) {
        xor_into(&mut acc, stripe);
        diffuse(&mut acc, hash)?;
    }
    xor_into(&mut acc, last);
    Ok(acc)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::cast_possible_truncation)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_all_hashes_and_odd_lengths() {
        for hash in HashAlgorithm::ALL {
            for len in [1usize, 16, 20, 31, 32, 33, 64, 65, 128] {
                let key: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
                let s = split(&key, 17, hash).unwrap();
                assert_eq!(s.len(), len * 17);
                assert_eq!(&merge(&s, len, 17, hash).unwrap()[..], &key[..]);
                // Damage the last stripe: it enters the key by XOR alone, so the key changes.
                let mut d = s.clone();
                d[s.len() - 1] ^= 1;
                assert_ne!(&merge(&d, len, 17, hash).unwrap()[..], &key[..]);
                // Damage an earlier stripe: it reaches the key through the diffusion hash. For
                // a 1-byte key an unchanged result is a 1-in-256 event (the stripes are random),
                // so only keys of 16 bytes and more, where it is 2^-128, are checked.
                if len >= 16 {
                    let mut d = s.clone();
                    d[3] ^= 1;
                    assert_ne!(&merge(&d, len, 17, hash).unwrap()[..], &key[..]);
                }
            }
        }
    }

    #[test]
    fn single_stripe_is_identity() {
        let key = [9u8; 32];
        let s = split(&key, 1, HashAlgorithm::Sha256).unwrap();
        assert_eq!(&s[..], &key[..]);
    }

    #[test]
    fn rejects_bad_sizes() {
        assert!(split(&[], 4000, HashAlgorithm::Sha1).is_err());
        assert!(split(&[1; 32], 0, HashAlgorithm::Sha1).is_err());
        assert!(merge(&[0; 100], 32, 4, HashAlgorithm::Sha1).is_err());
        assert!(merge(&[0; 128], 32, 4, HashAlgorithm::Sha1).is_ok());
        assert!(merge(&[0; 129], 32, 4, HashAlgorithm::Sha1).is_ok());
    }
}

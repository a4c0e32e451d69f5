//! Keyslot area encryption (`area.encryption`), and the same ciphers over data-segment sectors.
//!
//! The keyslot area is always processed in 512-byte units with the IV counting those units from
//! 0 at the start of the area, whatever the data segment's sector size (cryptsetup's
//! `luks2_encrypt_to_storage` uses `SECTOR_SIZE` and IV offset 0).
//!
//! A data segment is processed as dm-crypt processes it ([`KeyslotCipher::encrypt_sectors`],
//! [`KeyslotCipher::decrypt_sectors`]): in units of the segment's `sector_size`, each unit's IV
//! being the number of its first 512-byte sector (plus the segment's `iv_tweak`). dm-crypt counts
//! IVs in 512-byte sectors unless its `iv_large_sectors` option is set, which cryptsetup never
//! sets for LUKS2, so the 4096-byte sector `n` of a segment has IV `iv_tweak + 8 n`. Userspace
//! uses this only to read or write a few sectors (a known-answer check of a restored header);
//! the kernel does the volume's I/O.
//!
//! Supported: `aes-xts-plain64` (the default), `aes-xts-plain` (a 32-bit sector IV: identical to
//! plain64 below 2^32 sectors, i.e. for every keyslot area, which is at most 128 MiB),
//! `aes-cbc-essiv:sha256`, `aes-cbc-plain64`, `aes-cbc-plain`, and the null cipher
//! (`cipher_null-ecb`), which must never open with a non-empty passphrase (CVE-2025-59054;
//! enforced by the keyslot code through [`KeyslotCipher::is_null`]). Anything else is
//! [`Error::Unsupported`].

use std::fmt;

use aes::cipher::consts::U16;
use aes::cipher::{Array, BlockCipherDecrypt, BlockCipherEncrypt, BlockSizeUser, KeyInit};
use aes::{Aes128, Aes192, Aes256};
use xts_mode::Xts128;
use zeroize::{Zeroize, Zeroizing};

use super::hash::HashAlgorithm;
use crate::error::{Error, Result};

/// The unit of keyslot area encryption.
pub const KEYSLOT_SECTOR_SIZE: usize = 512;

/// How the per-sector IV is formed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IvMode {
    /// Little-endian 32-bit sector number (`plain`).
    Plain,
    /// Little-endian 64-bit sector number (`plain64`).
    Plain64,
    /// ESSIV with SHA-256: the plain64 IV encrypted with AES under SHA-256(key).
    EssivSha256,
}

/// Block cipher mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CipherMode {
    /// XTS (key = two AES keys).
    Xts,
    /// CBC.
    Cbc,
}

/// A keyslot area cipher.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyslotCipher {
    /// AES in the given mode with the given IV.
    Aes {
        /// XTS or CBC.
        mode: CipherMode,
        /// The IV generator.
        iv: IvMode,
    },
    /// No encryption (`cipher_null`). Only opens with an empty passphrase.
    Null,
}

impl KeyslotCipher {
    /// The default: `aes-xts-plain64`.
    pub const AES_XTS_PLAIN64: KeyslotCipher = KeyslotCipher::Aes {
        mode: CipherMode::Xts,
        iv: IvMode::Plain64,
    };

    /// Parses a cipher specification such as `aes-xts-plain64`.
    pub fn parse(spec: &str) -> Result<Self> {
        // cryptsetup's crypt_is_cipher_null(): contains "cipher_null" or is exactly "null".
        if spec.contains("cipher_null") || spec == "null" {
            return Ok(KeyslotCipher::Null);
        }
        let (mode, iv) = match spec {
            "aes-xts-plain64" => (CipherMode::Xts, IvMode::Plain64),
            "aes-xts-plain" => (CipherMode::Xts, IvMode::Plain),
            "aes-cbc-essiv:sha256" => (CipherMode::Cbc, IvMode::EssivSha256),
            "aes-cbc-plain64" => (CipherMode::Cbc, IvMode::Plain64),
            "aes-cbc-plain" => (CipherMode::Cbc, IvMode::Plain),
            other => {
                return Err(Error::Unsupported(format!(
                    "cipher {other:?} (supported: aes-xts-plain64, aes-xts-plain, \
                     aes-cbc-essiv:sha256, aes-cbc-plain64, aes-cbc-plain)"
                )));
            }
        };
        Ok(KeyslotCipher::Aes { mode, iv })
    }

    /// The canonical specification string (as written into LUKS2 metadata).
    pub fn spec(&self) -> &'static str {
        match self {
            KeyslotCipher::Null => "cipher_null-ecb",
            KeyslotCipher::Aes {
                mode: CipherMode::Xts,
                iv: IvMode::Plain64,
            } => "aes-xts-plain64",
            KeyslotCipher::Aes {
                mode: CipherMode::Xts,
                iv: IvMode::Plain,
            } => "aes-xts-plain",
            KeyslotCipher::Aes {
                mode: CipherMode::Xts,
                iv: IvMode::EssivSha256,
            } => "aes-xts-essiv:sha256",
            KeyslotCipher::Aes {
                mode: CipherMode::Cbc,
                iv: IvMode::EssivSha256,
            } => "aes-cbc-essiv:sha256",
            KeyslotCipher::Aes {
                mode: CipherMode::Cbc,
                iv: IvMode::Plain64,
            } => "aes-cbc-plain64",
            KeyslotCipher::Aes {
                mode: CipherMode::Cbc,
                iv: IvMode::Plain,
            } => "aes-cbc-plain",
        }
    }

    /// Whether this is the null cipher (which never protects anything).
    pub fn is_null(&self) -> bool {
        matches!(self, KeyslotCipher::Null)
    }

    /// Checks that `len` is a valid key length in bytes for this cipher.
    pub fn check_key_len(&self, len: usize) -> Result<()> {
        let ok = match self {
            KeyslotCipher::Null => true,
            KeyslotCipher::Aes {
                mode: CipherMode::Xts,
                ..
            } => matches!(len, 32 | 48 | 64),
            KeyslotCipher::Aes {
                mode: CipherMode::Cbc,
                ..
            } => matches!(len, 16 | 24 | 32),
        };
        if ok {
            Ok(())
        } else {
            Err(Error::InvalidArgument(format!(
                "key size of {} bits is not valid for {}",
                len.saturating_mul(8),
                self.spec()
            )))
        }
    }

    /// Encrypts `buf` in place: 512-byte units, IV starting at sector 0 (a keyslot area).
    pub fn encrypt(&self, key: &[u8], buf: &mut [u8]) -> Result<()> {
        self.process(key, buf, Units::KEYSLOT, 0, true)
    }

    /// Decrypts `buf` in place: 512-byte units, IV starting at sector 0 (a keyslot area).
    pub fn decrypt(&self, key: &[u8], buf: &mut [u8]) -> Result<()> {
        self.process(key, buf, Units::KEYSLOT, 0, false)
    }

    /// Encrypts `buf` in place in 512-byte units, the first having IV sector `first_sector`.
    pub fn encrypt_at(&self, key: &[u8], buf: &mut [u8], first_sector: u64) -> Result<()> {
        self.process(key, buf, Units::KEYSLOT, first_sector, true)
    }

    /// Decrypts `buf` in place in 512-byte units, the first having IV sector `first_sector`.
    pub fn decrypt_at(&self, key: &[u8], buf: &mut [u8], first_sector: u64) -> Result<()> {
        self.process(key, buf, Units::KEYSLOT, first_sector, false)
    }

    /// Encrypts data-segment bytes in place as dm-crypt does: `sector_size`-byte units (512,
    /// 1024, 2048 or 4096), the first having IV `first_iv` and each next one the IV of its first
    /// 512-byte sector (`first_iv + k * sector_size / 512`). For the start of a LUKS2 segment,
    /// `first_iv` is the segment's `iv_tweak`; see the module documentation.
    pub fn encrypt_sectors(
        &self,
        key: &[u8],
        buf: &mut [u8],
        sector_size: u32,
        first_iv: u64,
    ) -> Result<()> {
        self.process(key, buf, Units::data(sector_size)?, first_iv, true)
    }

    /// Decrypts data-segment bytes in place; the inverse of [`KeyslotCipher::encrypt_sectors`].
    pub fn decrypt_sectors(
        &self,
        key: &[u8],
        buf: &mut [u8],
        sector_size: u32,
        first_iv: u64,
    ) -> Result<()> {
        self.process(key, buf, Units::data(sector_size)?, first_iv, false)
    }

    fn process(
        &self,
        key: &[u8],
        buf: &mut [u8],
        units: Units,
        first: u64,
        encrypt: bool,
    ) -> Result<()> {
        self.check_key_len(key.len())?;
        if !buf.len().is_multiple_of(units.len) {
            return Err(Error::InvalidArgument(format!(
                "{} length {} is not a multiple of {}",
                units.what,
                buf.len(),
                units.len
            )));
        }
        let sectors = u64::try_from(buf.len() / KEYSLOT_SECTOR_SIZE).unwrap_or(u64::MAX);
        if first.checked_add(sectors).is_none() {
            return Err(Error::InvalidArgument("sector number overflows".into()));
        }
        let KeyslotCipher::Aes { mode, iv } = *self else {
            return Ok(());
        };
        match mode {
            CipherMode::Xts => {
                let (k1, k2) = key.split_at(key.len() / 2);
                match k1.len() {
                    16 => xts::<Aes128>(k1, k2, iv, buf, units, first, encrypt),
                    24 => xts::<Aes192>(k1, k2, iv, buf, units, first, encrypt),
                    _ => xts::<Aes256>(k1, k2, iv, buf, units, first, encrypt),
                }
            }
            CipherMode::Cbc => match key.len() {
                16 => cbc::<Aes128>(key, iv, buf, units, first, encrypt),
                24 => cbc::<Aes192>(key, iv, buf, units, first, encrypt),
                _ => cbc::<Aes256>(key, iv, buf, units, first, encrypt),
            },
        }
    }
}

impl fmt::Display for KeyslotCipher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.spec())
    }
}

/// The unit a buffer is processed in, and how far the IV advances per unit.
#[derive(Clone, Copy)]
struct Units {
    /// Bytes per unit.
    len: usize,
    /// IV increment per unit (the unit's length in 512-byte sectors).
    iv_step: u64,
    /// What the buffer is, for errors.
    what: &'static str,
}

impl Units {
    const KEYSLOT: Units = Units {
        len: KEYSLOT_SECTOR_SIZE,
        iv_step: 1,
        what: "keyslot area",
    };

    /// dm-crypt's `sector_size` units with IVs counted in 512-byte sectors.
    fn data(sector_size: u32) -> Result<Units> {
        if !matches!(sector_size, 512 | 1024 | 2048 | 4096) {
            return Err(Error::InvalidArgument(format!(
                "sector size {sector_size} is not one of 512, 1024, 2048, 4096"
            )));
        }
        Ok(Units {
            len: sector_size as usize,
            iv_step: u64::from(sector_size) / 512,
            what: "data",
        })
    }

    /// The IV sector of each unit of `buf`, from `first`.
    fn ivs(self, first: u64) -> impl Iterator<Item = u64> {
        (0u64..).map(move |k| first.wrapping_add(k.wrapping_mul(self.iv_step)))
    }
}

fn bad_key() -> Error {
    Error::InvalidArgument("invalid AES key length".into())
}

/// The plain/plain64 IV of `sector`.
fn plain_iv(iv: IvMode, sector: u64) -> [u8; 16] {
    let mut out = [0u8; 16];
    let n = match iv {
        IvMode::Plain => sector & 0xFFFF_FFFF,
        IvMode::Plain64 | IvMode::EssivSha256 => sector,
    };
    out[..8].copy_from_slice(&n.to_le_bytes());
    out
}

fn xts<C>(
    k1: &[u8],
    k2: &[u8],
    iv: IvMode,
    buf: &mut [u8],
    units: Units,
    first: u64,
    encrypt: bool,
) -> Result<()>
where
    C: KeyInit + BlockCipherEncrypt + BlockCipherDecrypt + BlockSizeUser<BlockSize = U16>,
{
    if iv == IvMode::EssivSha256 {
        return Err(Error::Unsupported("aes-xts with essiv".into()));
    }
    let c1 = C::new_from_slice(k1).map_err(|_| bad_key())?;
    let c2 = C::new_from_slice(k2).map_err(|_| bad_key())?;
    let xts = Xts128::new(c1, c2);
    for (sector, chunk) in units.ivs(first).zip(buf.chunks_exact_mut(units.len)) {
        let tweak = Array(plain_iv(iv, sector));
        if encrypt {
            xts.encrypt_sector(chunk, tweak);
        } else {
            xts.decrypt_sector(chunk, tweak);
        }
    }
    Ok(())
}

fn cbc<C>(
    key: &[u8],
    iv: IvMode,
    buf: &mut [u8],
    units: Units,
    first: u64,
    encrypt: bool,
) -> Result<()>
where
    C: KeyInit + BlockCipherEncrypt + BlockCipherDecrypt + BlockSizeUser<BlockSize = U16>,
{
    let cipher = C::new_from_slice(key).map_err(|_| bad_key())?;
    let essiv = if iv == IvMode::EssivSha256 {
        let mut salt = Zeroizing::new([0u8; 32]);
        HashAlgorithm::Sha256.hash_parts_into(&[key], &mut salt[..])?;
        Some(Aes256::new_from_slice(&salt[..]).map_err(|_| bad_key())?)
    } else {
        None
    };
    let mut block = Array::<u8, U16>::default();
    let mut chain = Zeroizing::new([0u8; 16]);
    let mut saved = Zeroizing::new([0u8; 16]);
    for (sector, chunk) in units.ivs(first).zip(buf.chunks_exact_mut(units.len)) {
        let mut ivb = Array(plain_iv(iv, sector));
        if let Some(e) = &essiv {
            e.encrypt_block(&mut ivb);
        }
        chain.copy_from_slice(&ivb);
        for b in chunk.chunks_exact_mut(16) {
            if encrypt {
                for ((o, p), c) in block.iter_mut().zip(b.iter()).zip(chain.iter()) {
                    *o = p ^ c;
                }
                cipher.encrypt_block(&mut block);
                b.copy_from_slice(&block);
                chain.copy_from_slice(&block);
            } else {
                saved.copy_from_slice(b);
                block.copy_from_slice(b);
                cipher.decrypt_block(&mut block);
                for ((o, p), c) in b.iter_mut().zip(block.iter()).zip(chain.iter()) {
                    *o = p ^ c;
                }
                chain.copy_from_slice(&saved[..]);
            }
        }
    }
    block.as_mut_slice().zeroize();
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::cast_possible_truncation)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    #[test]
    fn parse_and_spec_round_trip() {
        for s in [
            "aes-xts-plain64",
            "aes-xts-plain",
            "aes-cbc-essiv:sha256",
            "aes-cbc-plain64",
            "aes-cbc-plain",
            "cipher_null-ecb",
        ] {
            assert_eq!(KeyslotCipher::parse(s).unwrap().spec(), s);
        }
        assert!(KeyslotCipher::parse("null").unwrap().is_null());
        for s in [
            "serpent-xts-plain64",
            "aes-xts-benbi",
            "aes",
            "",
            "twofish-cbc-plain",
        ] {
            assert_eq!(
                KeyslotCipher::parse(s).unwrap_err().kind(),
                ErrorKind::Unsupported,
                "{s}"
            );
        }
    }

    #[test]
    fn round_trips_and_key_sizes() {
        let data: Vec<u8> = (0..4096u32).map(|i| (i % 251) as u8).collect();
        for (spec, lens) in [
            ("aes-xts-plain64", &[32usize, 48, 64][..]),
            ("aes-xts-plain", &[32, 64][..]),
            ("aes-cbc-essiv:sha256", &[16, 24, 32][..]),
            ("aes-cbc-plain64", &[16, 32][..]),
        ] {
            let c = KeyslotCipher::parse(spec).unwrap();
            for &len in lens {
                let key = vec![0x42u8; len];
                let mut buf = data.clone();
                c.encrypt(&key, &mut buf).unwrap();
                assert_ne!(buf, data);
                // Each 512-byte unit gets its own IV: identical plaintext sectors differ.
                let mut same = vec![0u8; 1024];
                c.encrypt(&key, &mut same).unwrap();
                assert_ne!(same[..512], same[512..], "{spec}");
                c.decrypt(&key, &mut buf).unwrap();
                assert_eq!(buf, data, "{spec} {len}");
            }
            assert!(c.encrypt(&[0u8; 17], &mut vec![0u8; 512]).is_err());
            assert!(c.encrypt(&[0u8; 32], &mut vec![0u8; 500]).is_err());
        }
    }

    #[test]
    fn plain_equals_plain64_below_2_32_sectors() {
        let key = [7u8; 64];
        let mut a = vec![1u8; 8192];
        let mut b = a.clone();
        KeyslotCipher::parse("aes-xts-plain")
            .unwrap()
            .encrypt(&key, &mut a)
            .unwrap();
        KeyslotCipher::parse("aes-xts-plain64")
            .unwrap()
            .encrypt(&key, &mut b)
            .unwrap();
        assert_eq!(a, b);
        assert_ne!(
            plain_iv(IvMode::Plain, 1 << 32),
            plain_iv(IvMode::Plain64, 1 << 32)
        );
    }

    #[test]
    fn data_sectors_of_512_are_keyslot_units_and_larger_ones_step_the_iv() {
        let key = [9u8; 64];
        let c = KeyslotCipher::AES_XTS_PLAIN64;
        let data: Vec<u8> = (0..8192u32).map(|i| (i % 253) as u8).collect();
        let mut a = data.clone();
        let mut b = data.clone();
        c.encrypt_sectors(&key, &mut a, 512, 5).unwrap();
        c.encrypt_at(&key, &mut b, 5).unwrap();
        assert_eq!(a, b);
        // A 4096-byte sector is one XTS data unit, not eight 512-byte ones, and the second has
        // IV 8 (dm-crypt without iv_large_sectors).
        let mut big = data.clone();
        c.encrypt_sectors(&key, &mut big, 4096, 0).unwrap();
        assert_ne!(big[..4096], b[..4096]);
        let mut second = data[4096..].to_vec();
        c.encrypt_sectors(&key, &mut second, 4096, 8).unwrap();
        assert_eq!(second, big[4096..]);
        let mut wrong = data[4096..].to_vec();
        c.encrypt_sectors(&key, &mut wrong, 4096, 1).unwrap();
        assert_ne!(wrong, big[4096..]);
        c.decrypt_sectors(&key, &mut big, 4096, 0).unwrap();
        assert_eq!(big, data);
        for bad in [0, 256, 3000, 8192] {
            assert!(
                c.encrypt_sectors(&key, &mut vec![0u8; 8192], bad, 0)
                    .is_err()
            );
        }
        assert!(
            c.encrypt_sectors(&key, &mut vec![0u8; 1024], 4096, 0)
                .is_err()
        );
    }

    #[test]
    fn null_cipher_is_identity() {
        let mut buf = vec![5u8; 1024];
        KeyslotCipher::Null.encrypt(&[], &mut buf).unwrap();
        assert_eq!(buf, vec![5u8; 1024]);
    }

    #[test]
    fn cbc_plain64_first_block_matches_manual_computation() {
        // Sector 1, first block: C = AES_k(P xor le64(1)).
        let key = [3u8; 16];
        let mut buf = vec![0u8; 1024];
        KeyslotCipher::parse("aes-cbc-plain64")
            .unwrap()
            .encrypt(&key, &mut buf)
            .unwrap();
        let aes = Aes128::new_from_slice(&key).unwrap();
        let mut b = Array(plain_iv(IvMode::Plain64, 1));
        aes.encrypt_block(&mut b);
        assert_eq!(&buf[512..528], &b[..]);
    }
}

//! Which LUKS2 volumes may be activated at all: an explicit allowlist chosen by the caller.
//!
//! A [`CryptVolume`] can only be built with an [`ActivationPolicy`]
//! ([`CryptVolume::from_luks2`], [`CryptVolume::new`]); it keeps the policy, and
//! [`crate::DeviceMapper::activate`] checks the volume and the key length against it again, so a
//! volume changed after it was built cannot slip through.
//!
//! - [`ActivationPolicy::driver`]: exactly what our format writes for the CSI driver's volumes
//!   (`aes-xts-plain64`, a 512-bit key, 512- or 4096-byte sectors, data at 16 MiB, no IV tweak,
//!   size to the end of the device). Anything else is not one of the driver's volumes.
//! - [`ActivationPolicy::cryptsetup`]: what the `luks2` command opens: cryptsetup's broad set of
//!   ciphers and layouts, but never the null cipher (no encryption) and never ECB mode (no IV:
//!   equal plaintext sectors give equal ciphertext sectors).

use crate::error::{Error, Result};
use crate::segment::{CryptVolume, SectorSize, SegmentSize};
use crate::types::Bytes;

/// The driver's cipher (luks2's default).
const DRIVER_CIPHER: &str = luks2::format::DEFAULT_CIPHER;
/// The driver's volume key length in bytes (512 bits: AES-256 in XTS mode).
const DRIVER_KEY_BYTES: usize = luks2::format::DEFAULT_KEY_SIZE;
/// The data offset of the volumes we format with the default layout (header area of 16 MiB,
/// which is already 1 MiB aligned).
const DRIVER_DATA_OFFSET: Bytes = Bytes(luks2::format::DEFAULT_HEADER_AREA);

/// Volume key lengths the kernel's dm-crypt accepts at all.
const KEY_BYTES_MIN: usize = 16;
const KEY_BYTES_MAX: usize = 128;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Rules {
    Driver,
    Cryptsetup,
}

/// The set of volumes a caller is willing to activate (see the module documentation).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ActivationPolicy {
    rules: Rules,
}

impl ActivationPolicy {
    /// The CSI driver's policy: exactly the layout our format writes for its volumes.
    pub fn driver() -> Self {
        ActivationPolicy {
            rules: Rules::Driver,
        }
    }

    /// The `luks2` command's policy: cryptsetup's set, without null ciphers and ECB.
    pub fn cryptsetup() -> Self {
        ActivationPolicy {
            rules: Rules::Cryptsetup,
        }
    }

    /// The policy's name, for messages (`driver`, `cryptsetup`).
    pub fn name(&self) -> &'static str {
        match self.rules {
            Rules::Driver => "driver",
            Rules::Cryptsetup => "cryptsetup",
        }
    }

    fn refuse(&self, field: &'static str, reason: &'static str) -> Error {
        Error::Refused {
            policy: self.name(),
            field,
            reason,
        }
    }

    /// Checks the volume's data segment (its structural validity first).
    pub(crate) fn check_volume(&self, volume: &CryptVolume) -> Result<()> {
        volume.segment.validate()?;
        let seg = &volume.segment;
        match self.rules {
            Rules::Driver => {
                if seg.encryption != DRIVER_CIPHER {
                    return Err(self.refuse("encryption", "only aes-xts-plain64 is accepted"));
                }
                if seg.sector_size != SectorSize::S512 && seg.sector_size != SectorSize::S4096 {
                    return Err(self.refuse("sector_size", "only 512 or 4096 bytes are accepted"));
                }
                if seg.offset != DRIVER_DATA_OFFSET {
                    return Err(self.refuse("offset", "the data offset must be 16 MiB"));
                }
                if seg.iv_tweak != 0 {
                    return Err(self.refuse("iv_tweak", "must be 0"));
                }
                if seg.size != SegmentSize::Dynamic {
                    return Err(self.refuse("size", "must be dynamic (to the end of the device)"));
                }
            }
            Rules::Cryptsetup => {
                if is_null_cipher(&seg.encryption) {
                    return Err(self.refuse("encryption", "the null cipher does not encrypt"));
                }
                if is_ecb(&seg.encryption) {
                    return Err(self.refuse("encryption", "ECB mode is refused"));
                }
            }
        }
        Ok(())
    }

    /// Checks a volume key length (bytes).
    pub(crate) fn check_key_len(&self, len: usize) -> Result<()> {
        if !(KEY_BYTES_MIN..=KEY_BYTES_MAX).contains(&len) {
            return Err(Error::InvalidKeyLength(len));
        }
        if self.rules == Rules::Driver && len != DRIVER_KEY_BYTES {
            return Err(self.refuse("key_size", "only 512-bit keys are accepted"));
        }
        Ok(())
    }
}

/// cryptsetup's `crypt_is_cipher_null()`: the spec contains `cipher_null`, or is `null`.
fn is_null_cipher(spec: &str) -> bool {
    spec.contains("cipher_null") || spec == "null"
}

/// Whether the dm-crypt cipher spec uses ECB: `<cipher>-ecb[-<iv>]`, or a kernel crypto API
/// spec `capi:ecb(<cipher>)[-<iv>]`.
fn is_ecb(spec: &str) -> bool {
    let lower = spec.to_ascii_lowercase();
    if let Some(capi) = lower.strip_prefix("capi:") {
        return capi.contains("ecb(");
    }
    lower.split('-').skip(1).any(|part| part == "ecb")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::segment::{CryptFlags, CryptSegment};

    fn volume(policy: &ActivationPolicy, f: impl FnOnce(&mut CryptSegment)) -> Result<CryptVolume> {
        let mut segment = CryptSegment {
            offset: Bytes(16 << 20),
            size: SegmentSize::Dynamic,
            iv_tweak: 0,
            encryption: "aes-xts-plain64".into(),
            sector_size: SectorSize::S4096,
        };
        f(&mut segment);
        CryptVolume::new(uuid::Uuid::nil(), segment, CryptFlags::default(), policy)
    }

    fn refused_field(r: Result<CryptVolume>) -> &'static str {
        match r {
            Err(Error::Refused { field, .. }) => field,
            other => panic!("expected a policy refusal, got {other:?}"),
        }
    }

    #[test]
    fn driver_accepts_exactly_its_layout() {
        let p = ActivationPolicy::driver();
        assert!(volume(&p, |_| {}).is_ok());
        assert!(volume(&p, |s| s.sector_size = SectorSize::S512).is_ok());
        type Case = (&'static str, fn(&mut CryptSegment));
        let cases: [Case; 8] = [
            ("encryption", |s| {
                s.encryption = "aes-cbc-essiv:sha256".into()
            }),
            ("encryption", |s| {
                s.encryption = "serpent-xts-plain64".into()
            }),
            ("encryption", |s| s.encryption = "aes-xts-plain".into()),
            ("sector_size", |s| {
                s.sector_size = SectorSize::new(2048).expect("valid")
            }),
            ("offset", |s| s.offset = Bytes(2 << 20)),
            ("offset", |s| s.offset = Bytes(32 << 20)),
            ("iv_tweak", |s| s.iv_tweak = 8),
            ("size", |s| s.size = SegmentSize::Fixed(Bytes(1 << 30))),
        ];
        for (field, f) in cases {
            assert_eq!(refused_field(volume(&p, f)), field);
        }
        assert!(p.check_key_len(64).is_ok());
        for len in [32, 48, 128] {
            assert!(matches!(
                p.check_key_len(len),
                Err(Error::Refused {
                    field: "key_size",
                    ..
                })
            ));
        }
    }

    #[test]
    fn cryptsetup_refuses_null_and_ecb_only() {
        let p = ActivationPolicy::cryptsetup();
        for ok in [
            "aes-xts-plain64",
            "aes-cbc-essiv:sha256",
            "serpent-xts-plain64",
            "aes-cbc-plain",
            "capi:xts(aes)-plain64",
        ] {
            assert!(volume(&p, |s| s.encryption = ok.into()).is_ok(), "{ok}");
        }
        assert!(
            volume(&p, |s| {
                s.offset = Bytes(2 << 20);
                s.sector_size = SectorSize::new(1024).expect("valid");
                s.iv_tweak = 2;
            })
            .is_ok()
        );
        for bad in [
            "cipher_null-ecb",
            "cipher_null",
            "null",
            "aes-ecb",
            "aes-ecb-plain",
            "AES-ECB",
            "capi:ecb(aes)-plain",
            "serpent-ecb",
        ] {
            assert_eq!(
                refused_field(volume(&p, |s| s.encryption = bad.into())),
                "encryption",
                "{bad}"
            );
        }
        for len in [32, 64, 128] {
            assert!(p.check_key_len(len).is_ok());
        }
        assert!(matches!(
            p.check_key_len(8),
            Err(Error::InvalidKeyLength(8))
        ));
    }

    #[test]
    fn a_volume_changed_after_the_check_is_checked_again() {
        let mut v = volume(&ActivationPolicy::driver(), |_| {}).expect("accepted");
        assert_eq!(v.policy(), &ActivationPolicy::driver());
        v.segment.encryption = "aes-cbc-plain".into();
        assert!(matches!(
            v.policy().check_volume(&v),
            Err(Error::Refused {
                field: "encryption",
                ..
            })
        ));
    }
}

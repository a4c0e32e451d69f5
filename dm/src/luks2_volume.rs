//! From a parsed LUKS2 header (the `luks2` crate's validated model) to the [`CryptVolume`] this
//! crate activates. Refuses what cryptsetup would not activate as a plain crypt mapping, and what
//! the caller's [`ActivationPolicy`] does not accept.

use luks2::header::Header;
use luks2::metadata::{SegmentKind, SegmentSize as Luks2Size};

use crate::error::{Error, Result};
use crate::policy::ActivationPolicy;
use crate::segment::{CryptFlags, CryptSegment, CryptVolume, SectorSize, SegmentSize};
use crate::types::Bytes;

fn unsupported(field: &'static str, reason: &'static str) -> Error {
    Error::InvalidSegment { field, reason }
}

impl CryptVolume {
    /// The volume described by a LUKS2 header: UUID, its single `crypt` data segment and the
    /// persistent flags of `config.flags`, if `policy` accepts it.
    ///
    /// Refused: headers with mandatory requirements (online reencryption, unknown features),
    /// more or fewer than one segment, a segment that is not `crypt`, dm-integrity
    /// (authenticated encryption) segments, and whatever `policy` does not accept — including,
    /// before any keyslot is tried, a volume key size (of the keyslots that open the segment)
    /// that the policy would refuse at activation.
    pub fn from_luks2(header: &Header, policy: &ActivationPolicy) -> Result<CryptVolume> {
        let md = &header.metadata;
        if md
            .config
            .requirements
            .as_ref()
            .and_then(|r| r.mandatory.as_ref())
            .is_some_and(|m| !m.is_empty())
        {
            return Err(unsupported(
                "config.requirements",
                "the header has mandatory requirements (e.g. reencryption in progress)",
            ));
        }
        let mut segments = md.segments.iter();
        let (&segment_id, segment) = segments
            .next()
            .ok_or(unsupported("segments", "no data segment"))?;
        if segments.next().is_some() {
            return Err(unsupported(
                "segments",
                "more than one segment (reencryption) is not supported",
            ));
        }
        let SegmentKind::Crypt {
            iv_tweak,
            encryption,
            sector_size,
            integrity,
        } = &segment.kind
        else {
            return Err(unsupported("segments.type", "not a crypt segment"));
        };
        if integrity.is_some() {
            return Err(unsupported(
                "segments.integrity",
                "authenticated encryption (dm-integrity) is not supported",
            ));
        }
        let uuid = header
            .uuid()
            .parse()
            .map_err(|_| unsupported("uuid", "not a UUID"))?;
        let flags = md
            .config
            .flags
            .as_ref()
            .map(|f| CryptFlags::from_luks2_names(f.iter().map(String::as_str)))
            .unwrap_or_default();
        let volume = CryptVolume::new(
            uuid,
            CryptSegment {
                offset: Bytes(segment.offset),
                size: match segment.size {
                    Luks2Size::Dynamic => SegmentSize::Dynamic,
                    Luks2Size::Bytes(b) => SegmentSize::Fixed(Bytes(b)),
                },
                iv_tweak: *iv_tweak,
                encryption: encryption.clone(),
                sector_size: SectorSize::new(*sector_size)?,
            },
            flags,
            policy,
        )?;
        if let Some((_, digest)) = md.digest_of_segment(segment_id) {
            for id in &digest.keyslots {
                if let Some(k) = md.keyslots.get(id).and_then(|k| k.as_luks2()) {
                    let len = usize::try_from(k.key_size).unwrap_or(usize::MAX);
                    policy.check_key_len(len)?;
                }
            }
        }
        Ok(volume)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use luks2::metadata::{Requirements, SegmentId};

    /// `testdata/luks2-pbkdf2-small.img`: made by cryptsetup 2.6.1 (see testdata/README.md).
    fn fixture() -> Header {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../testdata/luks2-pbkdf2-small.img"
        );
        let img = std::fs::read(path).expect("fixture");
        luks2::header::read(&luks2::io::MemDevice::from_vec(img)).expect("valid header")
    }

    #[test]
    fn converts_the_cryptsetup_fixture() {
        let v =
            CryptVolume::from_luks2(&fixture(), &ActivationPolicy::cryptsetup()).expect("convert");
        assert_eq!(v.uuid.to_string(), "5d8a3f27-9a4e-4c7b-8f51-2a0c6e1b9d34");
        assert_eq!(v.segment.offset, Bytes(320 * 512));
        assert_eq!(v.segment.size, SegmentSize::Dynamic);
        assert_eq!(v.segment.iv_tweak, 0);
        assert_eq!(v.segment.encryption, "aes-xts-plain64");
        // `cryptsetup luksDump` of the fixture: "sector: 512 [bytes]".
        assert_eq!(v.segment.sector_size, SectorSize::S512);
        assert_eq!(v.flags, CryptFlags::default());
    }

    #[test]
    fn honours_persistent_flags() {
        let mut h = fixture();
        h.metadata.config.flags = Some(vec!["allow-discards".into(), "no-read-workqueue".into()]);
        let v = CryptVolume::from_luks2(&h, &ActivationPolicy::cryptsetup()).expect("convert");
        assert!(v.flags.allow_discards && v.flags.no_read_workqueue);
        assert!(!v.flags.no_write_workqueue);
    }

    #[test]
    fn refuses_what_is_not_a_plain_crypt_volume() {
        let field_of =
            |h: &Header| match CryptVolume::from_luks2(h, &ActivationPolicy::cryptsetup()) {
                Err(Error::InvalidSegment { field, .. }) => field,
                other => panic!("expected a refusal, got {other:?}"),
            };

        let mut h = fixture();
        h.metadata.config.requirements = Some(Requirements {
            mandatory: Some(vec!["online-reencrypt-v2".into()]),
            ..Default::default()
        });
        assert_eq!(field_of(&h), "config.requirements");

        let mut h = fixture();
        let seg = h.metadata.segments[&SegmentId::new(0)].clone();
        h.metadata.segments.insert(SegmentId::new(1), seg);
        assert_eq!(field_of(&h), "segments");

        let mut h = fixture();
        if let Some(s) = h.metadata.segments.get_mut(&SegmentId::new(0))
            && let SegmentKind::Crypt { integrity, .. } = &mut s.kind
        {
            *integrity = Some(Default::default());
        }
        assert_eq!(field_of(&h), "segments.integrity");

        let mut h = fixture();
        h.metadata.segments.clear();
        assert_eq!(field_of(&h), "segments");
    }

    #[test]
    fn the_driver_policy_accepts_only_the_driver_layout() {
        let driver = ActivationPolicy::driver();
        let refused_field = |h: &Header| match CryptVolume::from_luks2(h, &driver) {
            Err(Error::Refused { field, .. }) => field,
            other => panic!("expected a policy refusal, got {other:?}"),
        };
        // cryptsetup's fixture: data at 160 KiB, a 256-bit key.
        let mut h = fixture();
        assert_eq!(refused_field(&h), "offset");
        for s in h.metadata.segments.values_mut() {
            s.offset = 16 << 20;
        }
        assert_eq!(refused_field(&h), "key_size");
        for k in h.metadata.keyslots.values_mut() {
            if let luks2::metadata::Keyslot::Luks2(k) = k {
                k.key_size = 64;
            }
        }
        let v = CryptVolume::from_luks2(&h, &driver).expect("the driver's layout");
        assert_eq!(v.policy(), &driver);
        assert_eq!(v.segment.offset, Bytes(16 << 20));
    }

    #[test]
    fn the_cryptsetup_policy_refuses_null_and_ecb() {
        for (cipher, refused) in [
            ("aes-ecb", true),
            ("cipher_null-ecb", true),
            ("aes-cbc-essiv:sha256", false),
            ("aes-xts-plain64", false),
        ] {
            let mut h = fixture();
            if let Some(s) = h.metadata.segments.get_mut(&SegmentId::new(0))
                && let SegmentKind::Crypt { encryption, .. } = &mut s.kind
            {
                *encryption = cipher.into();
            }
            let r = CryptVolume::from_luks2(&h, &ActivationPolicy::cryptsetup());
            assert_eq!(
                matches!(
                    r,
                    Err(Error::Refused {
                        field: "encryption",
                        ..
                    })
                ),
                refused,
                "{cipher}: {r:?}"
            );
        }
    }
}

//! From a parsed LUKS2 header (the `luks2` crate's validated model) to the [`CryptVolume`] this
//! crate activates. Refuses what cryptsetup would not activate as a plain crypt mapping.

use luks2::header::Header;
use luks2::metadata::{SegmentKind, SegmentSize as Luks2Size};

use crate::error::{Error, Result};
use crate::segment::{CryptFlags, CryptSegment, CryptVolume, SectorSize, SegmentSize};
use crate::types::Bytes;

fn unsupported(field: &'static str, reason: &'static str) -> Error {
    Error::InvalidSegment { field, reason }
}

impl CryptVolume {
    /// The volume described by a LUKS2 header: UUID, its single `crypt` data segment and the
    /// persistent flags of `config.flags`.
    ///
    /// Refused: headers with mandatory requirements (online reencryption, unknown features),
    /// more or fewer than one segment, a segment that is not `crypt`, and dm-integrity
    /// (authenticated encryption) segments.
    pub fn from_luks2(header: &Header) -> Result<CryptVolume> {
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
        let mut segments = md.segments.values();
        let segment = segments
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
        let volume = CryptVolume {
            uuid,
            segment: CryptSegment {
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
        };
        volume.segment.validate()?;
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
        let v = CryptVolume::from_luks2(&fixture()).expect("convert");
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
        let v = CryptVolume::from_luks2(&h).expect("convert");
        assert!(v.flags.allow_discards && v.flags.no_read_workqueue);
        assert!(!v.flags.no_write_workqueue);
    }

    #[test]
    fn refuses_what_is_not_a_plain_crypt_volume() {
        let field_of = |h: &Header| match CryptVolume::from_luks2(h) {
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
}

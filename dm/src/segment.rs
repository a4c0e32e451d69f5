//! What to activate: a description of one LUKS2 `crypt` data segment, the header's persistent
//! activation flags, and the caller's options.
//!
//! This is deliberately a small struct of its own so that this crate does not need the whole
//! LUKS2 header model; `from_luks2` style constructors convert a parsed header into it.

use crate::error::{Error, Result};
use crate::policy::ActivationPolicy;
use crate::types::Bytes;

/// The size of the data segment: a fixed byte count, or "to the end of the device".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SegmentSize {
    /// Exactly this many bytes.
    Fixed(Bytes),
    /// Everything from the segment offset to the end of the backing device (LUKS2 `"dynamic"`).
    Dynamic,
}

/// The encryption sector size: a power of two from 512 to 4096 bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SectorSize(u32);

impl SectorSize {
    /// 512-byte encryption sectors (the LUKS1 and small-device default).
    pub const S512: SectorSize = SectorSize(512);
    /// 4096-byte encryption sectors (cryptsetup 2.6's default where the device allows it).
    pub const S4096: SectorSize = SectorSize(4096);

    /// Checks `bytes`: a power of two in 512..=4096.
    pub fn new(bytes: u32) -> Result<Self> {
        if (512..=4096).contains(&bytes) && bytes.is_power_of_two() {
            Ok(SectorSize(bytes))
        } else {
            Err(Error::InvalidSegment {
                field: "sector_size",
                reason: "must be a power of two from 512 to 4096",
            })
        }
    }

    /// The size in bytes.
    pub fn bytes(self) -> u32 {
        self.0
    }

    /// The size in 512-byte sectors (1..=8).
    pub fn sectors(self) -> u64 {
        u64::from(self.0 / 512)
    }
}

/// dm-crypt performance and discard flags. The same set is stored persistently in a LUKS2 header
/// (`config.flags`) and given by callers per activation; activation uses the union of both.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CryptFlags {
    /// Pass discards (TRIM) down to the backing device (`allow_discards`).
    pub allow_discards: bool,
    /// Do encryption on the CPU that issued the I/O (`same_cpu_crypt`).
    pub same_cpu_crypt: bool,
    /// Submit writes from the encrypting CPU (`submit_from_crypt_cpus`).
    pub submit_from_crypt_cpus: bool,
    /// Decrypt reads synchronously instead of in a workqueue (`no_read_workqueue`).
    pub no_read_workqueue: bool,
    /// Encrypt writes synchronously instead of in a workqueue (`no_write_workqueue`).
    pub no_write_workqueue: bool,
}

impl CryptFlags {
    /// Flags set in either `self` or `other`.
    pub fn union(self, other: CryptFlags) -> CryptFlags {
        CryptFlags {
            allow_discards: self.allow_discards || other.allow_discards,
            same_cpu_crypt: self.same_cpu_crypt || other.same_cpu_crypt,
            submit_from_crypt_cpus: self.submit_from_crypt_cpus || other.submit_from_crypt_cpus,
            no_read_workqueue: self.no_read_workqueue || other.no_read_workqueue,
            no_write_workqueue: self.no_write_workqueue || other.no_write_workqueue,
        }
    }

    /// The flags named in a LUKS2 header's `config.flags` (unknown names, such as `no-journal`
    /// which concerns dm-integrity, are ignored as cryptsetup does for crypt activation).
    pub fn from_luks2_names<'a>(names: impl IntoIterator<Item = &'a str>) -> CryptFlags {
        let mut f = CryptFlags::default();
        for n in names {
            match n {
                "allow-discards" => f.allow_discards = true,
                "same-cpu-crypt" => f.same_cpu_crypt = true,
                "submit-from-crypt-cpus" => f.submit_from_crypt_cpus = true,
                "no-read-workqueue" => f.no_read_workqueue = true,
                "no-write-workqueue" => f.no_write_workqueue = true,
                _ => {}
            }
        }
        f
    }

    /// The dm-crypt optional table arguments for these flags, in cryptsetup's order.
    pub(crate) fn table_words(self) -> impl Iterator<Item = &'static str> {
        [
            (self.allow_discards, "allow_discards"),
            (self.same_cpu_crypt, "same_cpu_crypt"),
            (self.submit_from_crypt_cpus, "submit_from_crypt_cpus"),
            (self.no_read_workqueue, "no_read_workqueue"),
            (self.no_write_workqueue, "no_write_workqueue"),
        ]
        .into_iter()
        .filter_map(|(on, w)| on.then_some(w))
    }

    /// Parses one dm-crypt optional argument into the flags; false if it is not a flag.
    pub(crate) fn set_from_table_word(&mut self, word: &str) -> bool {
        match word {
            "allow_discards" => self.allow_discards = true,
            "same_cpu_crypt" => self.same_cpu_crypt = true,
            "submit_from_crypt_cpus" => self.submit_from_crypt_cpus = true,
            "no_read_workqueue" => self.no_read_workqueue = true,
            "no_write_workqueue" => self.no_write_workqueue = true,
            _ => return false,
        }
        true
    }
}

/// One LUKS2 `crypt` segment, as the header describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CryptSegment {
    /// Start of the encrypted data on the backing device (LUKS2 `offset`), a multiple of 512.
    pub offset: Bytes,
    /// Length of the encrypted data (LUKS2 `size`).
    pub size: SegmentSize,
    /// The IV of the segment's first sector, in 512-byte units (LUKS2 `iv_tweak`).
    pub iv_tweak: u64,
    /// The dm-crypt cipher specification, e.g. `aes-xts-plain64` (LUKS2 `encryption`).
    pub encryption: String,
    /// The encryption sector size (LUKS2 `sector_size`).
    pub sector_size: SectorSize,
}

impl CryptSegment {
    /// Checks what the kernel would otherwise reject with a bare `EINVAL`.
    pub fn validate(&self) -> Result<()> {
        let bad = |field, reason| Err(Error::InvalidSegment { field, reason });
        let enc = &self.encryption;
        if enc.is_empty() || enc.len() > 128 || !enc.bytes().all(|b| b.is_ascii_graphic()) {
            return bad("encryption", "must be 1..=128 printable characters");
        }
        if !self.offset.0.is_multiple_of(512) {
            return bad("offset", "not a multiple of 512 bytes");
        }
        if let SegmentSize::Fixed(size) = self.size {
            if size.0 == 0 || !size.0.is_multiple_of(u64::from(self.sector_size.bytes())) {
                return bad("size", "not a positive multiple of the sector size");
            }
            if self.offset.0.checked_add(size.0).is_none() {
                return bad("size", "offset + size overflows");
            }
        }
        if !self.iv_tweak.is_multiple_of(self.sector_size.sectors()) {
            return bad("iv_tweak", "not a multiple of the sector size");
        }
        Ok(())
    }
}

/// A LUKS2 volume to activate: header UUID, data segment and persistent flags, accepted by an
/// [`ActivationPolicy`] that it keeps (activation checks the volume against it again).
///
/// Built only through [`CryptVolume::from_luks2`] or [`CryptVolume::new`], both of which take the
/// policy: there is no way to activate a volume without choosing one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CryptVolume {
    /// The LUKS2 header UUID; the DM UUID is `CRYPT-LUKS2-<uuid without dashes>-<name>`.
    pub uuid: uuid::Uuid,
    /// The data segment.
    pub segment: CryptSegment,
    /// Flags stored in the header (`config.flags`).
    pub flags: CryptFlags,
    policy: ActivationPolicy,
}

impl CryptVolume {
    /// A volume from its parts (for example from another tool's description of a LUKS2 header),
    /// if `policy` accepts its segment.
    pub fn new(
        uuid: uuid::Uuid,
        segment: CryptSegment,
        flags: CryptFlags,
        policy: &ActivationPolicy,
    ) -> Result<CryptVolume> {
        let volume = CryptVolume {
            uuid,
            segment,
            flags,
            policy: *policy,
        };
        policy.check_volume(&volume)?;
        Ok(volume)
    }

    /// The policy this volume was accepted by (and is checked against again on activation).
    pub fn policy(&self) -> &ActivationPolicy {
        &self.policy
    }
}

/// Per-activation options chosen by the caller.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ActivateOptions {
    /// Create a read-only mapping.
    pub read_only: bool,
    /// Flags added to the header's persistent flags for this activation.
    pub flags: CryptFlags,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg() -> CryptSegment {
        CryptSegment {
            offset: Bytes(16 << 20),
            size: SegmentSize::Dynamic,
            iv_tweak: 0,
            encryption: "aes-xts-plain64".into(),
            sector_size: SectorSize::S4096,
        }
    }

    #[test]
    fn sector_sizes() {
        for ok in [512, 1024, 2048, 4096] {
            assert_eq!(SectorSize::new(ok).expect("valid").bytes(), ok);
        }
        for bad in [0, 256, 768, 8192] {
            assert!(SectorSize::new(bad).is_err(), "{bad}");
        }
        assert_eq!(SectorSize::S4096.sectors(), 8);
    }

    #[test]
    fn segment_validation_names_the_field() {
        assert!(seg().validate().is_ok());
        let field_of = |s: CryptSegment| match s.validate() {
            Err(Error::InvalidSegment { field, .. }) => field,
            other => panic!("expected InvalidSegment, got {other:?}"),
        };
        assert_eq!(
            field_of(CryptSegment {
                offset: Bytes(100),
                ..seg()
            }),
            "offset"
        );
        assert_eq!(
            field_of(CryptSegment {
                iv_tweak: 3,
                ..seg()
            }),
            "iv_tweak"
        );
        assert_eq!(
            field_of(CryptSegment {
                size: SegmentSize::Fixed(Bytes(512)),
                ..seg()
            }),
            "size"
        );
        assert_eq!(
            field_of(CryptSegment {
                encryption: "aes xts".into(),
                ..seg()
            }),
            "encryption"
        );
        let small = CryptSegment {
            sector_size: SectorSize::S512,
            iv_tweak: 3,
            ..seg()
        };
        assert!(small.validate().is_ok());
    }

    #[test]
    fn flags_union_and_names() {
        let header = CryptFlags::from_luks2_names(["allow-discards", "no-journal"]);
        assert_eq!(
            header,
            CryptFlags {
                allow_discards: true,
                ..Default::default()
            }
        );
        let caller = CryptFlags {
            no_read_workqueue: true,
            ..Default::default()
        };
        let all = header.union(caller);
        assert_eq!(
            all.table_words().collect::<Vec<_>>(),
            ["allow_discards", "no_read_workqueue"]
        );
        let mut parsed = CryptFlags::default();
        for w in all.table_words() {
            assert!(parsed.set_from_table_word(w));
        }
        assert!(!parsed.set_from_table_word("sector_size:4096"));
        assert_eq!(parsed, all);
    }
}

//! The dm-crypt table line: built from a segment description, parsed back from the kernel.
//!
//! Format (kernel `Documentation/admin-guide/device-mapper/dm-crypt.rst`):
//! `<cipher> <key> <iv_offset> <device> <offset> [<#opt_params> <opt_params>...]`, where the key is
//! always a keyring reference `:<key_size>:logon:<description>` when we build it. Nothing in this
//! module ever sees key bytes.

use crate::error::{Error, Result};
use crate::segment::{CryptFlags, CryptVolume, SectorSize, SegmentSize};
use crate::types::{DevNum, Sectors};

/// A reference to a key in the kernel keyring, as written in a table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyringKey {
    /// Key length in bytes.
    pub key_size: usize,
    /// Key type (`logon` for ours).
    pub key_type: String,
    /// Key description (`prefix:rest`).
    pub description: String,
}

impl KeyringKey {
    pub(crate) fn table_word(&self) -> String {
        format!(":{}:{}:{}", self.key_size, self.key_type, self.description)
    }
}

/// One crypt target: its length and its parameter string.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct CryptTarget {
    pub(crate) length: Sectors,
    pub(crate) params: String,
}

/// The number of 512-byte sectors a segment maps on a device of `device_size`.
pub(crate) fn mapped_length(volume: &CryptVolume, device_size: Sectors) -> Result<Sectors> {
    let seg = &volume.segment;
    let offset = seg.offset.sectors().0;
    let unit = seg.sector_size.sectors();
    let available = device_size.0.saturating_sub(offset);
    let length = match seg.size {
        SegmentSize::Fixed(size) => size.sectors().0,
        SegmentSize::Dynamic => available - available % unit,
    };
    if length == 0 || length > available {
        return Err(Error::DeviceTooSmall {
            needed: offset.saturating_add(length.max(unit)),
            available: device_size.0,
        });
    }
    Ok(Sectors(length))
}

/// Builds the crypt target for `volume` on `backing` (of `device_size`) with the key at `key`.
pub(crate) fn build(
    volume: &CryptVolume,
    key: &KeyringKey,
    backing: DevNum,
    device_size: Sectors,
    extra_flags: CryptFlags,
) -> Result<CryptTarget> {
    volume.segment.validate()?;
    let seg = &volume.segment;
    let length = mapped_length(volume, device_size)?;
    let mut opts: Vec<String> = volume
        .flags
        .union(extra_flags)
        .table_words()
        .map(str::to_owned)
        .collect();
    if seg.sector_size != SectorSize::S512 {
        opts.push(format!("sector_size:{}", seg.sector_size.bytes()));
    }
    let mut params = format!(
        "{} {} {} {} {}",
        seg.encryption,
        key.table_word(),
        seg.iv_tweak,
        backing,
        seg.offset.sectors().0
    );
    if !opts.is_empty() {
        params.push_str(&format!(" {} {}", opts.len(), opts.join(" ")));
    }
    Ok(CryptTarget { length, params })
}

/// How a table names its key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TableKey {
    /// A kernel keyring reference.
    Keyring(KeyringKey),
    /// The key inline in the table (hex): not ours; the bytes are deliberately not kept.
    Inline,
}

/// A crypt target's parameters as the kernel reports them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParsedCrypt {
    /// Cipher specification.
    pub cipher: String,
    /// Where the key is.
    pub key: TableKey,
    /// IV offset (`iv_tweak`), 512-byte units.
    pub iv_offset: u64,
    /// Backing device.
    pub device: DevNum,
    /// Data offset on the backing device.
    pub offset: Sectors,
    /// Encryption sector size.
    pub sector_size: SectorSize,
    /// Flags.
    pub flags: CryptFlags,
    /// Optional arguments that are neither flags nor `sector_size` (e.g. `iv_large_sectors`).
    pub other_options: Vec<String>,
}

/// Parses the parameter string of a `crypt` target (as from `DM_TABLE_STATUS` with
/// `DM_STATUS_TABLE`).
pub(crate) fn parse(params: &str) -> Result<ParsedCrypt> {
    let bad = Error::Unexpected;
    let mut words = params.split_ascii_whitespace();
    let cipher = words
        .next()
        .ok_or(bad("crypt table: no cipher"))?
        .to_owned();
    let key_word = words.next().ok_or(bad("crypt table: no key"))?;
    let key = if let Some(rest) = key_word.strip_prefix(':') {
        let mut parts = rest.splitn(3, ':');
        let size = parts.next().and_then(|s| s.parse::<usize>().ok());
        let ktype = parts.next();
        let desc = parts.next();
        match (size, ktype, desc) {
            (Some(key_size), Some(t), Some(d)) if !t.is_empty() && !d.is_empty() => {
                TableKey::Keyring(KeyringKey {
                    key_size,
                    key_type: t.to_owned(),
                    description: d.to_owned(),
                })
            }
            _ => return Err(bad("crypt table: malformed keyring key reference")),
        }
    } else {
        TableKey::Inline
    };
    let iv_offset = words
        .next()
        .and_then(|w| w.parse().ok())
        .ok_or(bad("crypt table: bad iv_offset"))?;
    let device = words
        .next()
        .and_then(|w| w.parse().ok())
        .ok_or(bad("crypt table: bad device"))?;
    let offset = words
        .next()
        .and_then(|w| w.parse().ok())
        .map(Sectors)
        .ok_or(bad("crypt table: bad offset"))?;
    let mut flags = CryptFlags::default();
    let mut sector_size = SectorSize::S512;
    let mut other_options = Vec::new();
    if let Some(n) = words.next() {
        let n: usize = n
            .parse()
            .map_err(|_| bad("crypt table: bad option count"))?;
        let opts: Vec<&str> = words.by_ref().take(n).collect();
        if opts.len() != n {
            return Err(bad("crypt table: fewer options than counted"));
        }
        for o in opts {
            if let Some(v) = o.strip_prefix("sector_size:") {
                sector_size = v
                    .parse()
                    .ok()
                    .and_then(|v| SectorSize::new(v).ok())
                    .ok_or(bad("crypt table: bad sector_size"))?;
            } else if !flags.set_from_table_word(o) {
                other_options.push(o.to_owned());
            }
        }
    }
    if words.next().is_some() {
        return Err(bad("crypt table: trailing words"));
    }
    Ok(ParsedCrypt {
        cipher,
        key,
        iv_offset,
        device,
        offset,
        sector_size,
        flags,
        other_options,
    })
}

/// The length a crypt target should have on a backing device of `device_size` (resize).
pub(crate) fn grown_length(parsed: &ParsedCrypt, device_size: Sectors) -> Result<Sectors> {
    let unit = parsed.sector_size.sectors();
    let available = device_size.0.saturating_sub(parsed.offset.0);
    let length = available - available % unit;
    if length == 0 {
        return Err(Error::DeviceTooSmall {
            needed: parsed.offset.0.saturating_add(unit),
            available: device_size.0,
        });
    }
    Ok(Sectors(length))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::segment::CryptSegment;
    use crate::types::Bytes;

    fn volume(sector: SectorSize, size: SegmentSize) -> CryptVolume {
        CryptVolume::new(
            uuid::Uuid::nil(),
            CryptSegment {
                offset: Bytes(16 << 20),
                size,
                iv_tweak: 0,
                encryption: "aes-xts-plain64".into(),
                sector_size: sector,
            },
            CryptFlags::default(),
            &crate::ActivationPolicy::cryptsetup(),
        )
        .expect("accepted")
    }

    fn key() -> KeyringKey {
        KeyringKey {
            key_size: 64,
            key_type: "logon".into(),
            description: "onmetal-csi:CRYPT-LUKS2-00-v".into(),
        }
    }

    const DEV: DevNum = DevNum { major: 7, minor: 3 };

    #[test]
    fn builds_cryptsetup_style_lines() {
        let t = build(
            &volume(SectorSize::S512, SegmentSize::Dynamic),
            &key(),
            DEV,
            Sectors(65536 + 1000),
            CryptFlags::default(),
        )
        .expect("build");
        assert_eq!(t.length, Sectors(32768 + 1000));
        assert_eq!(
            t.params,
            "aes-xts-plain64 :64:logon:onmetal-csi:CRYPT-LUKS2-00-v 0 7:3 32768"
        );

        let mut v = volume(SectorSize::S4096, SegmentSize::Dynamic);
        v.flags.allow_discards = true;
        let extra = CryptFlags {
            no_read_workqueue: true,
            no_write_workqueue: true,
            ..Default::default()
        };
        let t = build(&v, &key(), DEV, Sectors(65536 + 1001), extra).expect("build");
        // Rounded down to whole 4096-byte sectors.
        assert_eq!(t.length, Sectors(32768 + 1000));
        assert_eq!(
            t.params,
            "aes-xts-plain64 :64:logon:onmetal-csi:CRYPT-LUKS2-00-v 0 7:3 32768 \
             4 allow_discards no_read_workqueue no_write_workqueue sector_size:4096"
        );
    }

    #[test]
    fn fixed_size_must_fit() {
        let v = volume(SectorSize::S512, SegmentSize::Fixed(Bytes(1 << 20)));
        let t = build(
            &v,
            &key(),
            DEV,
            Sectors(32768 + 2048),
            CryptFlags::default(),
        );
        assert_eq!(t.expect("fits").length, Sectors(2048));
        let t = build(
            &v,
            &key(),
            DEV,
            Sectors(32768 + 2047),
            CryptFlags::default(),
        );
        assert!(matches!(t, Err(Error::DeviceTooSmall { .. })));
        let d = volume(SectorSize::S4096, SegmentSize::Dynamic);
        let t = build(&d, &key(), DEV, Sectors(32768 + 7), CryptFlags::default());
        assert!(matches!(t, Err(Error::DeviceTooSmall { .. })));
    }

    #[test]
    fn parses_what_it_builds_and_what_the_kernel_prints() {
        let mut v = volume(SectorSize::S4096, SegmentSize::Dynamic);
        v.flags.same_cpu_crypt = true;
        let t = build(&v, &key(), DEV, Sectors(1 << 20), CryptFlags::default()).expect("build");
        let p = parse(&t.params).expect("parse");
        assert_eq!(p.cipher, "aes-xts-plain64");
        assert_eq!(p.key, TableKey::Keyring(key()));
        assert_eq!(p.device, DEV);
        assert_eq!(p.offset, Sectors(32768));
        assert_eq!(p.sector_size, SectorSize::S4096);
        assert!(p.flags.same_cpu_crypt && !p.flags.allow_discards);
        assert!(p.other_options.is_empty());

        // cryptsetup with a hex key and an option we do not model.
        let p =
            parse("aes-cbc-essiv:sha256 0011aabb 8 253:1 4096 1 iv_large_sectors").expect("parse");
        assert_eq!(p.key, TableKey::Inline);
        assert_eq!(p.iv_offset, 8);
        assert_eq!(p.other_options, ["iv_large_sectors"]);

        // A description may itself contain colons.
        let p = parse("aes-xts-plain64 :32:logon:cryptsetup:abc-d0 0 7:0 2048").expect("parse");
        match p.key {
            TableKey::Keyring(k) => assert_eq!(k.description, "cryptsetup:abc-d0"),
            TableKey::Inline => panic!("keyring expected"),
        }
    }

    #[test]
    fn rejects_malformed_tables() {
        for bad in [
            "",
            "aes-xts-plain64",
            "aes-xts-plain64 :64:logon 0 7:0 0",
            "aes-xts-plain64 :x:logon:a:b 0 7:0 0",
            "aes-xts-plain64 :64:logon:a:b zero 7:0 0",
            "aes-xts-plain64 :64:logon:a:b 0 7 0",
            "aes-xts-plain64 :64:logon:a:b 0 7:0",
            "aes-xts-plain64 :64:logon:a:b 0 7:0 0 2 allow_discards",
            "aes-xts-plain64 :64:logon:a:b 0 7:0 0 1 sector_size:3000",
            "aes-xts-plain64 :64:logon:a:b 0 7:0 0 1 allow_discards extra",
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn grows_to_the_device() {
        let p =
            parse("aes-xts-plain64 :64:logon:a:b 0 7:0 32768 1 sector_size:4096").expect("parse");
        assert_eq!(
            grown_length(&p, Sectors(32768 + 8 * 100 + 5)).expect("grow"),
            Sectors(800)
        );
        assert!(grown_length(&p, Sectors(32768 + 7)).is_err());
    }
}

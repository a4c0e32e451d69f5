//! Typed names and units: device-mapper names, byte and sector counts.

use std::fmt;

use crate::error::{Error, Result};

/// Longest device-mapper name the kernel accepts (`DM_NAME_LEN` minus the terminating NUL).
pub const DM_NAME_MAX: usize = 127;

/// A device-mapper device name (`/dev/mapper/<name>`), checked when constructed.
///
/// Beyond the kernel's rules (1..=127 bytes, no `/`, not `.` or `..`) we accept only printable
/// ASCII without spaces: the name becomes part of a dm table key reference and of a kernel key
/// description, where whitespace would split fields.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DmName(String);

impl DmName {
    /// Checks and wraps `name`.
    pub fn new(name: &str) -> Result<Self> {
        let reject = |reason| {
            Err(Error::InvalidName {
                name: name.to_owned(),
                reason,
            })
        };
        if name.is_empty() {
            return reject("empty");
        }
        if name.len() > DM_NAME_MAX {
            return reject("longer than 127 bytes");
        }
        if name == "." || name == ".." {
            return reject("reserved");
        }
        if name.contains('/') {
            return reject("contains '/'");
        }
        if !name.bytes().all(|b| b.is_ascii_graphic()) {
            return reject("only printable ASCII without spaces is allowed");
        }
        Ok(DmName(name.to_owned()))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub(crate) fn as_dm(&self) -> Result<&devicemapper::DmName> {
        devicemapper::DmName::new(&self.0).map_err(|_| Error::InvalidName {
            name: self.0.clone(),
            reason: "rejected by devicemapper",
        })
    }
}

impl fmt::Display for DmName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for DmName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DmName({:?})", self.0)
    }
}

impl std::str::FromStr for DmName {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        DmName::new(s)
    }
}

/// A count of bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Bytes(pub u64);

/// A count of 512-byte sectors, the unit of dm tables and of `/sys/block/*/size`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Sectors(pub u64);

impl Sectors {
    /// The size in bytes (saturating: a device never has 2^55 sectors).
    pub fn bytes(self) -> Bytes {
        Bytes(self.0.saturating_mul(512))
    }
}

impl Bytes {
    /// Whole 512-byte sectors in this many bytes (rounded down).
    pub fn sectors(self) -> Sectors {
        Sectors(self.0 / 512)
    }
}

impl fmt::Display for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} bytes", self.0)
    }
}

impl fmt::Display for Sectors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} sectors", self.0)
    }
}

/// A block device number (`major:minor`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DevNum {
    /// Major number.
    pub major: u32,
    /// Minor number.
    pub minor: u32,
}

impl fmt::Display for DevNum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.major, self.minor)
    }
}

impl std::str::FromStr for DevNum {
    type Err = ();

    fn from_str(s: &str) -> std::result::Result<Self, ()> {
        let (a, b) = s.split_once(':').ok_or(())?;
        Ok(DevNum {
            major: a.parse().map_err(|_| ())?,
            minor: b.parse().map_err(|_| ())?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_kernel_rules() {
        assert!(DmName::new("pvc-0a1b_2.x+y-z").is_ok());
        assert!(DmName::new(&"a".repeat(127)).is_ok());
        for bad in ["", ".", "..", "a/b", "a b", "tab\t", "é", &"a".repeat(128)] {
            assert!(
                matches!(DmName::new(bad), Err(Error::InvalidName { .. })),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn devnum_round_trips() {
        let d: DevNum = "253:17".parse().expect("parse");
        assert_eq!(
            d,
            DevNum {
                major: 253,
                minor: 17
            }
        );
        assert_eq!(d.to_string(), "253:17");
        assert!("253".parse::<DevNum>().is_err());
        assert!("x:1".parse::<DevNum>().is_err());
    }

    #[test]
    fn units_convert() {
        assert_eq!(Bytes(4096).sectors(), Sectors(8));
        assert_eq!(Bytes(4095).sectors(), Sectors(7));
        assert_eq!(Sectors(8).bytes(), Bytes(4096));
    }
}

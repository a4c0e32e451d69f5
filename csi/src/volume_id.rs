//! Volume IDs: derived deterministically from the CreateVolume name (so a repeated
//! CreateVolume finds the same volume), and valid everywhere the ID is used: as the suffix of the
//! Secret name `onmetal-csi-luks-<volume-id>` (a DNS subdomain), in the dm name
//! `onmetal-csi-<volume-id>` and in backend file names.

use std::fmt;

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// The prefix of every wrapped-key record's name (the Secret, or the file of the `dir` store).
pub const RECORD_PREFIX: &str = "onmetal-csi-luks-";
/// The prefix of every device-mapper name the driver creates.
pub const DM_PREFIX: &str = "onmetal-csi-";
/// Longest volume ID: one DNS label.
pub const MAX_LEN: usize = 63;
/// IDs derived by hashing start with this, so no valid name maps onto a hashed one by accident.
const HASHED_PREFIX: &str = "vol-";

/// A validated volume ID: 1 to 63 characters of `[a-z0-9-]`, starting and ending with a letter
/// or digit (a DNS label).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VolumeId(String);

impl VolumeId {
    /// Validates an ID received from the CO.
    pub fn parse(id: &str) -> Result<Self> {
        if is_dns_label(id) {
            Ok(VolumeId(id.to_owned()))
        } else {
            Err(Error::not_found(format!(
                "volume id {id:?} is not one this driver creates (1-63 characters of a-z, 0-9 \
                 and '-')"
            )))
        }
    }

    /// The ID for a CreateVolume `name`: the name itself when it is a DNS label that does not
    /// start with `vol-` (csi-provisioner's `pvc-<uid>` names stay readable), otherwise `vol-`
    /// and 40 hex digits of the name's SHA-256.
    pub fn from_name(name: &str) -> Result<Self> {
        if name.is_empty() {
            return Err(Error::invalid("name is required"));
        }
        if is_dns_label(name) && !name.starts_with(HASHED_PREFIX) {
            return Ok(VolumeId(name.to_owned()));
        }
        let digest = Sha256::digest(name.as_bytes());
        Ok(VolumeId(format!(
            "{HASHED_PREFIX}{}",
            &hex::encode(digest)[..40]
        )))
    }

    /// The ID as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `onmetal-csi-luks-<id>`: the Secret (or file) that holds the wrapped key.
    pub fn record_name(&self) -> String {
        format!("{RECORD_PREFIX}{}", self.0)
    }

    /// `onmetal-csi-<id>`: the device-mapper name of the opened volume.
    pub fn dm_name(&self) -> dm::DmName {
        #[allow(clippy::expect_used)]
        dm::DmName::new(&format!("{DM_PREFIX}{}", self.0))
            .expect("a DNS label with the prefix is a valid dm name")
    }

    /// The same ID for the `kms` crate, which binds wrapped keys to it.
    pub fn kms(&self) -> kms::VolumeId {
        #[allow(clippy::expect_used)]
        kms::VolumeId::new(self.0.clone()).expect("a DNS label is a valid kms volume id")
    }
}

impl fmt::Display for VolumeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for VolumeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "VolumeId({})", self.0)
    }
}

fn is_dns_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= MAX_LEN
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b.first().is_some_and(u8::is_ascii_alphanumeric)
        && b.last().is_some_and(u8::is_ascii_alphanumeric)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provisioner_names_stay_readable() {
        let id = VolumeId::from_name("pvc-0a1b2c3d-1111-2222-3333-444455556666").unwrap();
        assert_eq!(id.as_str(), "pvc-0a1b2c3d-1111-2222-3333-444455556666");
        assert_eq!(
            id.record_name(),
            "onmetal-csi-luks-pvc-0a1b2c3d-1111-2222-3333-444455556666"
        );
        assert_eq!(
            id.dm_name().as_str(),
            "onmetal-csi-pvc-0a1b2c3d-1111-2222-3333-444455556666"
        );
    }

    #[test]
    fn other_names_hash_deterministically() {
        let a = VolumeId::from_name("My Volume/1").unwrap();
        let b = VolumeId::from_name("My Volume/1").unwrap();
        let c = VolumeId::from_name("My Volume/2").unwrap();
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert!(a.as_str().starts_with("vol-") && a.as_str().len() == 44);
        assert!(VolumeId::parse(a.as_str()).is_ok());
        // A name that looks like a hashed ID is hashed too, so it cannot alias another name.
        let d = VolumeId::from_name(a.as_str()).unwrap();
        assert_ne!(a, d);
        let long = "x".repeat(64);
        assert!(
            VolumeId::from_name(&long)
                .unwrap()
                .as_str()
                .starts_with("vol-")
        );
        assert!(VolumeId::from_name("").is_err());
    }

    #[test]
    fn parse_rejects_what_we_never_create() {
        for bad in ["", "-a", "a-", "A", "a_b", "a.b", &"a".repeat(64), "a/b"] {
            assert!(VolumeId::parse(bad).is_err(), "{bad:?}");
        }
    }
}

//! Volume IDs: derived deterministically from the CreateVolume name (so a repeated
//! CreateVolume finds the same volume), and valid everywhere the ID is used: as the suffix of the
//! Secret name `onmetal-csi-luks-<volume-id>` (a DNS subdomain), in the dm name
//! `onmetal-csi-<volume-id>` and in backend file names.
//!
//! Two forms:
//! - `<name-id>`: one DNS label (the `local` backend, and every ID from before the `rbd`
//!   backend), exactly as [`VolumeId::from_name`] makes it;
//! - `<pool>.<name-id>`: a pool-qualified ID ([`VolumeId::in_pool`], the `rbd` backend: RBD
//!   pool `<pool>`, image `<name-id>`), two DNS labels joined by a dot, at most
//!   [`MAX_POOLED_LEN`] characters so that `onmetal-csi-<volume-id>` stays a valid dm name
//!   (127 bytes). A pool whose name is not a DNS label cannot hold volumes of this driver.
//!   `onmetal-csi-luks-<volume-id>` is then a DNS subdomain of at most 132 characters.

use std::fmt;

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// The prefix of every wrapped-key record's name (the Secret, or the file of the `dir` store).
pub const RECORD_PREFIX: &str = "onmetal-csi-luks-";
/// The prefix of every device-mapper name the driver creates.
pub const DM_PREFIX: &str = "onmetal-csi-";
/// Longest volume ID of the one-label form: one DNS label.
pub const MAX_LEN: usize = 63;
/// Longest pool-qualified volume ID: what keeps `onmetal-csi-<volume-id>` within the kernel's
/// 127-byte dm names.
pub const MAX_POOLED_LEN: usize = 127 - DM_PREFIX.len();
/// IDs derived by hashing start with this, so no valid name maps onto a hashed one by accident.
const HASHED_PREFIX: &str = "vol-";

/// A validated volume ID: 1 to 63 characters of `[a-z0-9-]`, starting and ending with a letter
/// or digit (a DNS label), or a pool and such a label joined by a dot (see the module docs).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VolumeId(String);

impl VolumeId {
    /// Validates an ID received from the CO.
    pub fn parse(id: &str) -> Result<Self> {
        let pooled = || {
            id.len() <= MAX_POOLED_LEN
                && id
                    .split_once('.')
                    .is_some_and(|(pool, name)| is_dns_label(pool) && is_dns_label(name))
        };
        if is_dns_label(id) || pooled() {
            Ok(VolumeId(id.to_owned()))
        } else {
            Err(Error::not_found(format!(
                "volume id {id:?} is not one this driver creates (1-63 characters of a-z, 0-9 \
                 and '-', optionally after a pool name and a '.')"
            )))
        }
    }

    /// The pool-qualified ID for a CreateVolume `name` in `pool` (the `rbd` backend):
    /// `<pool>.<name-id>`, where `<name-id>` is what [`VolumeId::from_name`] makes, or its hashed
    /// form when the readable name would make the ID longer than [`MAX_POOLED_LEN`]. `pool` must
    /// be a DNS label (INVALID_ARGUMENT naming `parameter`, the StorageClass parameter it came
    /// from).
    pub fn in_pool(pool: &str, name: &str, parameter: &str) -> Result<Self> {
        if !is_dns_label(pool) {
            return Err(Error::invalid(format!(
                "parameter {parameter}: pool {pool:?} cannot hold volumes of this driver: its \
                 name must be 1-63 characters of a-z, 0-9 and '-' (a DNS label), since it is part \
                 of the volume ID"
            )));
        }
        let mut local = Self::from_name(name)?;
        if pool.len() + 1 + local.0.len() > MAX_POOLED_LEN {
            local = Self::hashed(name);
        }
        Ok(VolumeId(format!("{pool}.{}", local.0)))
    }

    /// The pool of a pool-qualified ID.
    pub fn pool(&self) -> Option<&str> {
        self.0.split_once('.').map(|(pool, _)| pool)
    }

    /// The ID without its pool: the image name of a pool-qualified ID, the whole ID otherwise.
    pub fn local_name(&self) -> &str {
        self.0.split_once('.').map_or(self.0.as_str(), |(_, n)| n)
    }

    fn hashed(name: &str) -> Self {
        let digest = Sha256::digest(name.as_bytes());
        VolumeId(format!("{HASHED_PREFIX}{}", &hex::encode(digest)[..40]))
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
        Ok(Self::hashed(name))
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
        dm::DmName::new(&format!("{DM_PREFIX}{}", self.0)).expect(
            "an ID of at most MAX_POOLED_LEN graphic ASCII with the prefix is a valid dm name",
        )
    }

    /// The same ID for the `kms` crate, which binds wrapped keys to it.
    pub fn kms(&self) -> kms::VolumeId {
        #[allow(clippy::expect_used)]
        kms::VolumeId::new(self.0.clone()).expect("a checked volume id is a valid kms volume id")
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
        let too_long = format!("{}.{}", "p".repeat(63), "a".repeat(52));
        for bad in [
            "",
            "-a",
            "a-",
            "A",
            "a_b",
            ".b",
            "a.",
            "a.b.c",
            "a..b",
            "A.b",
            "a.-b",
            &"a".repeat(64),
            &format!("{}.b", "p".repeat(64)),
            &too_long,
            "a/b",
        ] {
            assert!(VolumeId::parse(bad).is_err(), "{bad:?}");
        }
        let longest = format!("{}.{}", "p".repeat(63), "a".repeat(51));
        assert_eq!(longest.len(), MAX_POOLED_LEN);
        let id = VolumeId::parse(&longest).unwrap();
        assert_eq!(id.dm_name().as_str().len(), 127);
    }

    /// Local IDs stay exactly what they were: one label, no pool.
    #[test]
    fn one_label_ids_have_no_pool() {
        let id = VolumeId::from_name("pvc-1").unwrap();
        assert_eq!(id.pool(), None);
        assert_eq!(id.local_name(), "pvc-1");
        assert_eq!(VolumeId::parse("pvc-1").unwrap(), id);
    }

    #[test]
    fn pooled_ids_round_trip_and_fit_every_use() {
        let name = "pvc-0a1b2c3d-1111-2222-3333-444455556666";
        let id = VolumeId::in_pool("rbd", name, "volume_pool").unwrap();
        assert_eq!(id.as_str(), format!("rbd.{name}"));
        assert_eq!(VolumeId::in_pool("rbd", name, "volume_pool").unwrap(), id);
        assert_ne!(VolumeId::in_pool("ssd", name, "volume_pool").unwrap(), id);
        let back = VolumeId::parse(id.as_str()).unwrap();
        assert_eq!(back, id);
        assert_eq!(back.pool(), Some("rbd"));
        assert_eq!(back.local_name(), name);
        assert_eq!(id.record_name(), format!("onmetal-csi-luks-rbd.{name}"));
        assert_eq!(id.dm_name().as_str(), format!("onmetal-csi-rbd.{name}"));
        assert_eq!(id.kms().as_str(), id.as_str());

        // The longest pool and the longest readable name: the name part is hashed so the ID
        // still fits a dm name; deterministic, and parseable.
        let pool = "p".repeat(63);
        let long_name = "n".repeat(63);
        let a = VolumeId::in_pool(&pool, &long_name, "volume_pool").unwrap();
        assert_eq!(
            a,
            VolumeId::in_pool(&pool, &long_name, "volume_pool").unwrap()
        );
        assert!(a.local_name().starts_with("vol-"), "{a}");
        assert!(a.as_str().len() <= MAX_POOLED_LEN);
        assert_eq!(VolumeId::parse(a.as_str()).unwrap(), a);
        assert!(a.record_name().len() <= 253);
        assert!(dm::DmName::new(&format!("{DM_PREFIX}{a}")).is_ok());
        // Any name, any DNS-label pool: a valid ID.
        for name in ["My Volume/1", &"x".repeat(300), "vol-abc", "a"] {
            let id = VolumeId::in_pool(&pool, name, "volume_pool").unwrap();
            assert_eq!(VolumeId::parse(id.as_str()).unwrap(), id, "{name:?}");
        }
    }

    #[test]
    fn a_pool_that_is_not_a_dns_label_is_refused_by_name() {
        for pool in ["", "Rbd", "my_pool", "a.b", &"p".repeat(64)] {
            let e = VolumeId::in_pool(pool, "pvc-1", "volume_pool").unwrap_err();
            assert_eq!(e.kind(), crate::error::Kind::InvalidArgument, "{pool:?}");
            assert!(e.message().contains("volume_pool"), "{e}");
        }
        assert!(VolumeId::in_pool("rbd", "", "volume_pool").is_err());
    }
}

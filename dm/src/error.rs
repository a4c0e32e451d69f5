//! The crate's one error type.

use std::io;
use std::path::PathBuf;

use crate::types::DevNum;

/// Result alias for this crate.
pub type Result<T> = std::result::Result<T, Error>;

/// Everything that can go wrong activating, resizing, inspecting or removing a mapping.
///
/// No variant ever carries key material: keys only travel through the kernel keyring.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A device-mapper name that the kernel (or our key descriptions) would not accept.
    #[error("invalid device-mapper name {name:?}: {reason}")]
    InvalidName {
        /// The rejected name.
        name: String,
        /// Why.
        reason: &'static str,
    },
    /// A segment description that cannot be turned into a dm-crypt table.
    #[error("invalid crypt segment: {field}: {reason}")]
    InvalidSegment {
        /// The offending field.
        field: &'static str,
        /// Why.
        reason: &'static str,
    },
    /// The caller's [`crate::ActivationPolicy`] does not accept this volume (for the driver's
    /// policy: it is not one of the driver's volumes).
    #[error("the {policy} activation policy refuses this volume: {field}: {reason}")]
    Refused {
        /// The policy's name.
        policy: &'static str,
        /// The offending field.
        field: &'static str,
        /// Why.
        reason: &'static str,
    },
    /// The backing device is in use: mapped by another device-mapper device, mounted, or opened
    /// exclusively. Nothing was changed.
    #[error("backing device {0} is in use (already mapped or mounted)")]
    DeviceInUse(DevNum),
    /// The device handle given for activation is not the device expected.
    #[error("device changed: expected {expected}, found {found}")]
    DeviceChanged {
        /// The device number the caller's handle has.
        expected: DevNum,
        /// The device number found.
        found: DevNum,
    },
    /// The volume key has an impossible length.
    #[error("invalid volume key length {0} (expected 16..=128 bytes)")]
    InvalidKeyLength(usize),
    /// `/dev/mapper/control` cannot be opened: no device-mapper in this kernel, or no privilege.
    #[error("device-mapper is not available")]
    Unavailable(#[source] devicemapper::DmError),
    /// A mapping of this name exists already.
    #[error("mapping {0} already exists")]
    AlreadyExists(String),
    /// No mapping of this name exists.
    #[error("mapping {0} does not exist")]
    NotFound(String),
    /// The mapping is open (mounted, held by another mapping or a process) and was left in place.
    #[error("mapping {0} is in use and was not removed")]
    Busy(String),
    /// The mapping exists but is not a LUKS2 dm-crypt mapping this crate can manage.
    #[error("mapping {name} is not a LUKS2 crypt mapping: {reason}")]
    NotCrypt {
        /// The mapping.
        name: String,
        /// Why.
        reason: &'static str,
    },
    /// The mapping's key is not (or no longer) in the kernel keyring, so its table cannot be
    /// reloaded without the key.
    #[error("the volume key of mapping {0} is not in the kernel keyring")]
    KeyUnavailable(String),
    /// The backing path is not a block device.
    #[error("{0}: not a block device")]
    NotBlockDevice(PathBuf),
    /// The backing device is too small for the segment.
    #[error("backing device too small: {needed} sectors needed, {available} available")]
    DeviceTooSmall {
        /// 512-byte sectors the segment needs (data offset plus at least one encryption sector).
        needed: u64,
        /// 512-byte sectors the device has.
        available: u64,
    },
    /// [`crate::DeviceMapper::grow`]: the backing device now holds less than the mapping, and
    /// the mapping is left as it is (shrinking it would cut off the end of a filesystem).
    #[error(
        "mapping {name} would shrink from {current} to {device} sectors (its backing device \
         reports less): refused, nothing changed"
    )]
    WouldShrink {
        /// The mapping.
        name: String,
        /// Its length now, 512-byte sectors.
        current: u64,
        /// The length the backing device allows.
        device: u64,
    },
    /// A kernel key management call failed.
    #[error("kernel keyring: {op} failed")]
    Keyring {
        /// The operation.
        op: &'static str,
        /// The system error.
        #[source]
        source: io::Error,
    },
    /// A device-mapper ioctl failed.
    #[error("device-mapper {op} of {name} failed")]
    Ioctl {
        /// The operation.
        op: &'static str,
        /// The mapping.
        name: String,
        /// The ioctl error.
        #[source]
        source: devicemapper::DmError,
    },
    /// Reading the active table of a mapping (our own `DM_TABLE_STATUS` ioctl) failed.
    #[error("device-mapper table status of {name} failed")]
    TableStatus {
        /// The mapping.
        name: String,
        /// The system error.
        #[source]
        source: io::Error,
    },
    /// A file system operation (device node, sysfs) failed.
    #[error("{op} {path}")]
    Io {
        /// The operation.
        op: &'static str,
        /// The path.
        path: PathBuf,
        /// The system error.
        #[source]
        source: io::Error,
    },
    /// A loop device call (`/dev/loop-control`, a `LOOP_*` ioctl, its sysfs attributes) failed.
    #[error("loop device: {op} {path}")]
    Loop {
        /// The operation (the ioctl's name, or what was read or opened).
        op: &'static str,
        /// The loop device, the control device or the backing file.
        path: PathBuf,
        /// The system error.
        #[source]
        source: io::Error,
    },
    /// Every free loop device the kernel offered was taken by another process first.
    #[error("no free loop device for {0}: each one offered was taken by another process first")]
    LoopRace(PathBuf),
    /// The kernel returned something this crate cannot interpret.
    #[error("unexpected kernel answer: {0}")]
    Unexpected(&'static str),
}

impl Error {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }

    pub(crate) fn loop_dev(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Error::Loop {
            op,
            path: path.into(),
            source,
        }
    }

    pub(crate) fn ioctl(op: &'static str, name: &str, source: devicemapper::DmError) -> Self {
        Error::Ioctl {
            op,
            name: name.to_owned(),
            source,
        }
    }
}

/// The errno of a failed device-mapper ioctl, if that is what `e` is.
pub(crate) fn ioctl_errno(e: &devicemapper::DmError) -> Option<i32> {
    match e {
        devicemapper::DmError::Core(devicemapper::errors::Error::Ioctl(_, _, _, errno)) => {
            Some(**errno as i32)
        }
        _ => None,
    }
}

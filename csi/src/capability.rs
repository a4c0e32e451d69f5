//! Volume capabilities: what a request asks for (block or filesystem, access mode), checked once.

use crate::error::{Error, Result};
use crate::host::fs::FsType;
use crate::proto::volume_capability::access_mode::Mode;
use crate::proto::volume_capability::{AccessType, MountVolume};
use crate::proto::{VolumeCapability, volume_capability};

/// How the volume is consumed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Access {
    /// Raw block device.
    Block,
    /// A filesystem of `fs`, mounted with `flags`.
    Mount {
        /// ext4 or xfs.
        fs: FsType,
        /// Mount options from the StorageClass (`mountOptions`).
        flags: Vec<String>,
    },
}

impl Access {
    /// From a volume capability; unsupported access modes or filesystems are INVALID_ARGUMENT.
    pub fn parse(cap: &VolumeCapability) -> Result<Self> {
        let mode = cap
            .access_mode
            .as_ref()
            .ok_or_else(|| Error::invalid("volume capability has no access mode"))?;
        match Mode::try_from(mode.mode).unwrap_or(Mode::Unknown) {
            // SINGLE_NODE_SINGLE/MULTI_WRITER are only valid with the SINGLE_NODE_MULTI_WRITER
            // capability, which the driver does not advertise.
            Mode::SingleNodeWriter | Mode::SingleNodeReaderOnly => {}
            other => {
                return Err(Error::invalid(format!(
                    "access mode {} is not supported: volumes attach to one node at a time",
                    other.as_str_name()
                )));
            }
        }
        match &cap.access_type {
            Some(AccessType::Block(_)) => Ok(Access::Block),
            Some(AccessType::Mount(MountVolume {
                fs_type,
                mount_flags,
                ..
            })) => Ok(Access::Mount {
                fs: FsType::parse(fs_type)?,
                flags: mount_flags.clone(),
            }),
            None => Err(Error::invalid(
                "volume capability has neither block nor mount access type",
            )),
        }
    }

    /// Whether the access mode is read-only.
    pub fn read_only_mode(cap: &VolumeCapability) -> bool {
        cap.access_mode
            .as_ref()
            .is_some_and(|m| m.mode == Mode::SingleNodeReaderOnly as i32)
    }
}

/// A capability for tests and the client.
pub fn capability(block: bool, fs_type: &str, mode: Mode) -> VolumeCapability {
    VolumeCapability {
        access_type: Some(if block {
            AccessType::Block(volume_capability::BlockVolume {})
        } else {
            AccessType::Mount(MountVolume {
                fs_type: fs_type.to_owned(),
                mount_flags: vec![],
                volume_mount_group: String::new(),
            })
        }),
        access_mode: Some(volume_capability::AccessMode { mode: mode as i32 }),
    }
}

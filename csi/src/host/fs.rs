//! The filesystems of the driver's volumes: the one [`FsType`] that the volume capability
//! asks for, mkfs makes, mount takes and a header restore accepts as proof, and the probe that
//! finds one on a device.

use std::path::Path;

use crate::error::{Error, Result};

/// Filesystems the driver makes (and recognises: ext2/3/4 count as ext4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FsType {
    /// ext4 (the default).
    Ext4,
    /// XFS.
    Xfs,
}

impl FsType {
    /// From the volume capability's `fs_type` (empty: ext4).
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "" | "ext4" => Ok(FsType::Ext4),
            "xfs" => Ok(FsType::Xfs),
            other => Err(Error::invalid(format!(
                "fs_type {other:?} is not supported: use ext4 or xfs"
            ))),
        }
    }

    /// The name `mount -t` takes: `ext4` or `xfs`.
    pub fn as_str(self) -> &'static str {
        match self {
            FsType::Ext4 => "ext4",
            FsType::Xfs => "xfs",
        }
    }
}

/// The filesystem type found on a block device (ext2/3/4 or xfs), if any.
pub fn probe_fs(device: &Path) -> Result<Option<FsType>> {
    let f = std::fs::File::open(device)
        .map_err(|e| Error::io(format!("opening {}", device.display()), e))?;
    Ok(match luks2::signature::detect_signature(&f)? {
        Some(luks2::signature::Signature::Ext) => Some(FsType::Ext4),
        Some(luks2::signature::Signature::Xfs) => Some(FsType::Xfs),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fs_types() {
        assert_eq!(FsType::parse("").unwrap(), FsType::Ext4);
        assert_eq!(FsType::parse("xfs").unwrap(), FsType::Xfs);
        assert_eq!(
            FsType::parse("btrfs").unwrap_err().kind(),
            crate::Kind::InvalidArgument
        );
    }
}

//! Device-mapper and the kernel keyring behind a small trait: activate, look up, deactivate and
//! grow an encrypted volume's mapping, and count the driver's mappings on the node. The
//! driver's node operations use only this trait ([`crate::driver::Driver::mapper`]), so the
//! whole NodeStage runs on a host without device-mapper against a fake ([`DmMapper`] is the real
//! thing).

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::time::Instant;

use kms::Dek;

use super::verify_dek;
use crate::error::{Error, Result};
use crate::host::step::step;

/// Everything the node does with device-mapper (blocking calls: run them on the blocking pool).
pub trait Mapper: Send + Sync + std::fmt::Debug {
    /// Activates the LUKS2 volume on `device` as mapping `name` with `dek` (the volume key) in
    /// the kernel keyring; returns the mapped device (`/dev/mapper/<name>`). The header is read
    /// and the DEK checked against its digest before anything is activated.
    fn activate(&self, name: &dm::DmName, device: &Path, dek: &Dek) -> Result<PathBuf>;
    /// The device of an active mapping `name`, if there is one.
    fn active(&self, name: &dm::DmName) -> Result<Option<PathBuf>>;
    /// Removes mapping `name` and its key (not active: success).
    fn deactivate(&self, name: &dm::DmName) -> Result<()>;
    /// Grows mapping `name` to its device's size (the key is still in the keyring: no KMS);
    /// returns the new size in bytes. Never shrinks: a device that reports less than the
    /// mapping is FAILED_PRECONDITION, the mapping unchanged.
    fn resize(&self, name: &dm::DmName) -> Result<u64>;
    /// How many of the driver's mappings are open on this node (0 when device-mapper does not
    /// answer).
    fn count(&self) -> Result<usize>;
    /// Whether device-mapper answers (the node's readiness probe).
    fn ready(&self) -> bool;
}

/// The real device-mapper, through the `dm` crate's ioctls.
#[derive(Debug, Default, Clone, Copy)]
pub struct DmMapper;

impl Mapper for DmMapper {
    /// Only what the driver's [`dm::ActivationPolicy::driver`] allows is activated; the header
    /// is read from the very handle the mapping is built on.
    fn activate(&self, name: &dm::DmName, device: &Path, dek: &Dek) -> Result<PathBuf> {
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .open(device)
            .map_err(|e| Error::io(format!("opening {}", device.display()), e))?;
        let t = Instant::now();
        let header = luks2::header::read(&f)?;
        verify_dek(&header, dek)?;
        step("activate_check", t);
        let t = Instant::now();
        let volume = dm::CryptVolume::from_luks2(&header, &dm::ActivationPolicy::driver())
            .map_err(|e| Error::precondition(format!("not a volume of this driver: {e}")))?;
        let mapper = dm::DeviceMapper::new()?;
        mapper.activate(
            name,
            &f,
            &volume,
            dek.expose(),
            &dm::ActivateOptions::default(),
        )?;
        step("dm_activate", t);
        Ok(dm::mapper_path(name))
    }

    fn active(&self, name: &dm::DmName) -> Result<Option<PathBuf>> {
        let mapper = dm::DeviceMapper::new()?;
        Ok(mapper.status(name)?.map(|_| dm::mapper_path(name)))
    }

    fn deactivate(&self, name: &dm::DmName) -> Result<()> {
        let mapper = dm::DeviceMapper::new()?;
        if mapper.status(name)?.is_some() {
            mapper.deactivate(name)?;
        }
        Ok(())
    }

    fn resize(&self, name: &dm::DmName) -> Result<u64> {
        let mapper = dm::DeviceMapper::new()?;
        Ok(mapper.grow(name)?.bytes().0)
    }

    fn count(&self) -> Result<usize> {
        match dm::DeviceMapper::new() {
            Ok(m) => Ok(m
                .list()?
                .iter()
                .filter(|n| n.as_str().starts_with(crate::volume_id::DM_PREFIX))
                .count()),
            Err(_) => Ok(0),
        }
    }

    fn ready(&self) -> bool {
        dm::DeviceMapper::new().is_ok()
    }
}

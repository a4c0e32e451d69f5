//! [`FakeMapper`]: device-mapper and the keyring as a table. Activation does what the real one
//! does before the ioctls (reads the header from the device, checks the DEK against its digest
//! and the driver's activation policy); the "mapped device" is a plain file per LUKS2 volume
//! (by header UUID) that keeps its contents across deactivations, as the data area would.

use std::collections::HashMap;
use std::fs::{self, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use csi::crypt::mapper::Mapper;
use csi::{Error, Result};
use kms::Dek;

/// A mapping: the device it is built on and the plain device it shows.
#[derive(Debug, Clone)]
struct Mapping {
    backing: PathBuf,
    plain: PathBuf,
}

/// Active mappings by name; the plain devices live in a directory.
#[derive(Debug)]
pub struct FakeMapper {
    dir: PathBuf,
    active: Mutex<HashMap<String, Mapping>>,
    fail_activate: AtomicBool,
}

impl FakeMapper {
    /// A mapper whose plain devices live in `dir` (created).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        let dir = dir.into();
        fs::create_dir_all(&dir).unwrap();
        FakeMapper {
            dir,
            active: Mutex::new(HashMap::new()),
            fail_activate: AtomicBool::new(false),
        }
    }

    /// From now on, activation fails (as a kernel without dm-crypt would).
    pub fn fail_activate(&self, on: bool) {
        self.fail_activate.store(on, Ordering::SeqCst);
    }

    /// Whether mapping `name` is active (its key "in the keyring").
    pub fn is_active(&self, name: &str) -> bool {
        self.active.lock().unwrap().contains_key(name)
    }

    /// How many mappings are active.
    pub fn active_count(&self) -> usize {
        self.active.lock().unwrap().len()
    }

    /// The device mapping `name` is built on.
    pub fn backing(&self, name: &str) -> Option<PathBuf> {
        self.active
            .lock()
            .unwrap()
            .get(name)
            .map(|m| m.backing.clone())
    }
}

impl Mapper for FakeMapper {
    fn activate(&self, name: &dm::DmName, device: &Path, dek: &Dek) -> Result<PathBuf> {
        if self.fail_activate.load(Ordering::SeqCst) {
            return Err(Error::unavailable("fake device-mapper: activation failed"));
        }
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .open(device)
            .map_err(|e| Error::io(format!("opening {}", device.display()), e))?;
        let header = luks2::header::read(&f)?;
        csi::crypt::verify_dek(&header, dek)?;
        let volume = dm::CryptVolume::from_luks2(&header, &dm::ActivationPolicy::driver())
            .map_err(|e| Error::precondition(format!("not a volume of this driver: {e}")))?;
        let mut active = self.active.lock().unwrap();
        if active.contains_key(name.as_str()) {
            return Err(Error::from(dm::Error::AlreadyExists(name.to_string())));
        }
        let size = f.metadata().map_err(|e| Error::io("size", e))?.len();
        let plain = self.dir.join(format!("{}.plain", header.uuid()));
        let p = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&plain)
            .map_err(|e| Error::io("creating the plain device", e))?;
        p.set_len(size.saturating_sub(volume.segment.offset.0))
            .map_err(|e| Error::io("sizing the plain device", e))?;
        active.insert(
            name.as_str().to_owned(),
            Mapping {
                backing: device.to_path_buf(),
                plain: plain.clone(),
            },
        );
        Ok(plain)
    }

    fn active(&self, name: &dm::DmName) -> Result<Option<PathBuf>> {
        Ok(self
            .active
            .lock()
            .unwrap()
            .get(name.as_str())
            .map(|m| m.plain.clone()))
    }

    fn deactivate(&self, name: &dm::DmName) -> Result<()> {
        self.active.lock().unwrap().remove(name.as_str());
        Ok(())
    }

    fn resize(&self, name: &dm::DmName) -> Result<u64> {
        let plain = self
            .active(name)?
            .ok_or_else(|| Error::not_found(format!("no mapping {name}")))?;
        Ok(fs::metadata(plain).map_err(|e| Error::io("size", e))?.len())
    }

    fn count(&self) -> Result<usize> {
        Ok(self.active_count())
    }

    fn ready(&self) -> bool {
        true
    }
}

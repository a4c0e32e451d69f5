//! Activating, resizing, inspecting and removing dm-crypt mappings through device-mapper ioctls.

use std::os::fd::AsFd;
use std::path::PathBuf;

use devicemapper::{DM, DevId, DmFlags, DmOptions, DmUuid};

use crate::active_table::{self, ActiveTable};
use crate::device;
use crate::error::{Error, Result, ioctl_errno};
use crate::keyring;
use crate::segment::{ActivateOptions, CryptVolume};
use crate::sys::KeySerial;
use crate::table::{self, KeyringKey, ParsedCrypt, TableKey};
use crate::types::{DevNum, DmName, Sectors};

/// The DM UUID prefix cryptsetup gives LUKS2 mappings; `cryptsetup status/close` rely on it.
pub const DM_UUID_PREFIX: &str = "CRYPT-LUKS2-";

/// Longest DM UUID the kernel accepts (`DM_UUID_LEN` minus the terminating NUL).
const DM_UUID_MAX: usize = 128;

/// The DM UUID cryptsetup would give mapping `name` of the LUKS2 volume `uuid`.
pub fn dm_uuid(uuid: &uuid::Uuid, name: &DmName) -> Result<String> {
    let s = format!("{DM_UUID_PREFIX}{}-{name}", uuid.simple());
    if s.len() > DM_UUID_MAX {
        return Err(Error::InvalidName {
            name: name.to_string(),
            reason: "too long for a LUKS2 DM UUID (at most 83 bytes)",
        });
    }
    Ok(s)
}

/// The state of an active crypt mapping.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MappingStatus {
    /// The mapping's name.
    pub name: DmName,
    /// Its DM UUID (`CRYPT-LUKS2-…` for LUKS2 mappings).
    pub dm_uuid: Option<String>,
    /// Its device number.
    pub device: DevNum,
    /// `/dev/mapper/<name>`.
    pub path: PathBuf,
    /// Its size.
    pub size: Sectors,
    /// Whether the active table is read-only.
    pub read_only: bool,
    /// How many openers the mapping has (mounts, other mappings, processes).
    pub open_count: u32,
    /// The crypt target's parameters.
    pub crypt: ParsedCrypt,
    /// The backing device's node, when sysfs names one.
    pub backing_path: Option<PathBuf>,
}

impl MappingStatus {
    /// The key reference, when the key is in the kernel keyring.
    pub fn keyring_key(&self) -> Option<&KeyringKey> {
        match &self.crypt.key {
            TableKey::Keyring(k) => Some(k),
            TableKey::Inline => None,
        }
    }
}

/// A handle on the kernel's device-mapper (`/dev/mapper/control`).
pub struct DeviceMapper {
    dm: DM,
}

impl std::fmt::Debug for DeviceMapper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DeviceMapper")
    }
}

/// How many times (and how long apart) removal is retried while the device is briefly busy, e.g.
/// while udev or blkid still holds it open after a close.
const REMOVE_ATTEMPTS: u32 = 2;
const REMOVE_PAUSE: std::time::Duration = std::time::Duration::from_millis(250);

impl DeviceMapper {
    /// Opens `/dev/mapper/control`.
    pub fn new() -> Result<Self> {
        DM::new()
            .map(|dm| DeviceMapper { dm })
            .map_err(Error::Unavailable)
    }

    /// Activates `volume` on the block device open as `device` — the handle the LUKS2 header was
    /// read from, so that no path is resolved again between reading and activating — as
    /// `/dev/mapper/<name>`, with `key` (the volume key, which goes to the kernel keyring and
    /// nowhere else).
    ///
    /// First the volume and the key length are checked against the volume's
    /// [`crate::ActivationPolicy`] (again: the volume may have been changed since it was built).
    /// Activation is exclusive:
    /// - per name: the kernel creates the device first, which fails for an existing name
    ///   ([`Error::AlreadyExists`]); only then is the key installed, so a second activation of a
    ///   name never touches the first one's key;
    /// - per backing device: a device that is mapped already, mounted or opened exclusively is
    ///   refused ([`Error::DeviceInUse`]), checked (by an `O_EXCL` open of the same inode) under a
    ///   per-device lock that serialises this crate's activations of that device.
    ///
    /// The mapping is created with DM UUID `CRYPT-LUKS2-<uuid>-<name>`; its table is loaded with
    /// `DM_SECURE_DATA`, names the backing device by its number and the key as
    /// `:<len>:logon:onmetal-csi:<DM UUID>`. On any failure exactly what this call created (the
    /// device, its node, the key it installed) is removed again. The returned status is built
    /// from what was created, not read back, so a successful activation returns `Ok`.
    pub fn activate(
        &self,
        name: &DmName,
        device: &impl AsFd,
        volume: &CryptVolume,
        key: &[u8],
        options: &ActivateOptions,
    ) -> Result<MappingStatus> {
        let policy = volume.policy();
        policy.check_key_len(key.len())?;
        policy.check_volume(volume)?;
        let uuid = dm_uuid(&volume.uuid, name)?;
        let dm_name = name.as_dm()?;
        let id = DevId::Name(dm_name);
        let device = device.as_fd();
        let backing = device::block_device_of(device)?;
        let device_size = device::size(backing)?;
        let key_ref = KeyringKey {
            key_size: key.len(),
            key_type: keyring::KEY_TYPE.to_owned(),
            description: keyring::description(&uuid),
        };
        let target = table::build(volume, &key_ref, backing, device_size, options.flags)?;
        let crypt = table::parse(&target.params)?;
        let dm_uuid = DmUuid::new(&uuid).map_err(|e| Error::ioctl("uuid", name.as_str(), e))?;
        let ro = if options.read_only {
            DmFlags::DM_READONLY
        } else {
            DmFlags::empty()
        };

        let _lock = device::ActivationLock::acquire(backing)?;
        match self.dm.device_info(&id) {
            Ok(_) => return Err(Error::AlreadyExists(name.to_string())),
            Err(e) if ioctl_errno(&e) == Some(libc::ENXIO) => {}
            Err(e) => return Err(Error::ioctl("info", name.as_str(), e)),
        }
        device::ensure_unused(device, backing)?;

        // 1. The name: the kernel refuses a second device of this name (or DM UUID).
        let created = self
            .dm
            .device_create(dm_name, Some(dm_uuid), DmOptions::default().set_flags(ro))
            .map_err(|e| match ioctl_errno(&e) {
                Some(libc::EBUSY) => Error::AlreadyExists(name.to_string()),
                _ => Error::ioctl("create", name.as_str(), e),
            })?;
        let dev = DevNum {
            major: created.device().major,
            minor: created.device().minor,
        };
        let mut undo = Undo {
            mapper: self,
            name,
            dev,
            key: None,
            armed: true,
        };
        // 2. The key, now that the name is ours.
        let staged = keyring::install(&key_ref.description, key)?;
        undo.key = Some(staged.serial());
        // 3. The table and the node.
        self.dm
            .table_load(
                &id,
                &[(0, target.length.0, "crypt".to_owned(), target.params)],
                DmOptions::default().set_flags(DmFlags::DM_SECURE_DATA | ro),
            )
            .map_err(|e| Error::ioctl("table load", name.as_str(), e))?;
        self.dm
            .device_suspend(&id, DmOptions::default())
            .map_err(|e| Error::ioctl("resume", name.as_str(), e))?;
        drop(staged);
        let path = device::ensure_mapper_node(name, dev)?;
        undo.disarm();
        tracing::info!(mapping = %name, "activated");
        Ok(MappingStatus {
            name: name.clone(),
            dm_uuid: Some(uuid),
            device: dev,
            path,
            size: target.length,
            read_only: options.read_only,
            open_count: 0,
            backing_path: device::node_path(crypt.device),
            crypt,
        })
    }

    /// Removes mapping `name` and drops its key from the keyring. A mapping that stays in use
    /// after a few short retries is left as it is and reported as [`Error::Busy`].
    pub fn deactivate(&self, name: &DmName) -> Result<()> {
        let status = self
            .status(name)?
            .ok_or_else(|| Error::NotFound(name.to_string()))?;
        // The key this mapping uses, found before the mapping goes: after the removal, a new
        // activation of the same name may install a key of the same description.
        let key = match status.keyring_key() {
            Some(k) if keyring::is_ours(&k.description) => keyring::find(&k.description)
                .unwrap_or_else(|e| {
                    tracing::warn!(mapping = %name, error = %e, "cannot find the volume key");
                    None
                }),
            _ => None,
        };
        let id = DevId::Name(name.as_dm()?);
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.dm.device_remove(&id, DmOptions::default()) {
                Ok(_) => break,
                Err(e) if ioctl_errno(&e) == Some(libc::EBUSY) => {
                    if attempt >= REMOVE_ATTEMPTS {
                        return Err(Error::Busy(name.to_string()));
                    }
                    std::thread::sleep(REMOVE_PAUSE);
                }
                Err(e) if ioctl_errno(&e) == Some(libc::ENXIO) => {
                    return Err(Error::NotFound(name.to_string()));
                }
                Err(e) => return Err(Error::ioctl("remove", name.as_str(), e)),
            }
        }
        device::remove_mapper_node(name, status.device);
        if let Some(serial) = key {
            keyring::remove_serial(serial);
        }
        tracing::info!(mapping = %name, "deactivated");
        Ok(())
    }

    /// Grows (or shrinks) mapping `name` to its backing device's current size, without the key:
    /// the reloaded table references the key that is still in the kernel keyring. Returns the
    /// new size. (`cryptsetup resize` without `--size`.)
    pub fn resize(&self, name: &DmName) -> Result<Sectors> {
        self.resize_to_device(name, true)
    }

    /// Like [`DeviceMapper::resize`], but never shrinks: a backing device that reports less than
    /// the mapping (a provider's glitch, a truncated file) is [`Error::WouldShrink`] and the
    /// mapping stays as it is. What a driver under a mounted filesystem wants.
    pub fn grow(&self, name: &DmName) -> Result<Sectors> {
        self.resize_to_device(name, false)
    }

    fn resize_to_device(&self, name: &DmName, shrink: bool) -> Result<Sectors> {
        let id = DevId::Name(name.as_dm()?);
        let (info, params) = self.crypt_table(name)?;
        let parsed = table::parse(&params)?;
        // Only a keyring reference can be reloaded (an inline key was never copied).
        let TableKey::Keyring(key) = &parsed.key else {
            return Err(Error::KeyUnavailable(name.to_string()));
        };
        let length = table::grown_length(&parsed, device::size(parsed.device)?)?;
        let current = self.status(name)?.map(|s| s.size);
        if current == Some(length) {
            return Ok(length);
        }
        if let Some(now) = current
            && length < now
            && !shrink
        {
            return Err(Error::WouldShrink {
                name: name.to_string(),
                current: now.0,
                device: length.0,
            });
        }
        let Some(staged) = keyring::stage_existing(&key.description)? else {
            return Err(Error::KeyUnavailable(name.to_string()));
        };
        let ro = if info.read_only {
            DmFlags::DM_READONLY
        } else {
            DmFlags::empty()
        };
        let loaded = self.dm.table_load(
            &id,
            &[(0, length.0, "crypt".to_owned(), params)],
            DmOptions::default().set_flags(DmFlags::DM_SECURE_DATA | ro),
        );
        drop(staged);
        if let Err(e) = loaded {
            return Err(match ioctl_errno(&e) {
                Some(libc::ENOKEY | libc::EKEYREJECTED | libc::EKEYREVOKED) => {
                    Error::KeyUnavailable(name.to_string())
                }
                _ => Error::ioctl("table load", name.as_str(), e),
            });
        }
        if let Err(e) = self.dm.device_suspend(&id, DmOptions::default()) {
            if let Err(e2) = self.dm.table_clear(&id) {
                tracing::warn!(mapping = %name, error = %e2, "clearing the inactive table");
            }
            return Err(Error::ioctl("resume", name.as_str(), e));
        }
        tracing::info!(mapping = %name, sectors = length.0, "resized");
        Ok(length)
    }

    /// The state of mapping `name`, or `None` if there is no such mapping.
    pub fn status(&self, name: &DmName) -> Result<Option<MappingStatus>> {
        let (info, params) = match self.crypt_table(name) {
            Ok(t) => t,
            Err(Error::NotFound(_)) => return Ok(None),
            Err(e) => return Err(e),
        };
        let crypt = table::parse(&params)?;
        let size = device::size(info.device)?;
        Ok(Some(MappingStatus {
            name: name.clone(),
            dm_uuid: info.uuid,
            device: info.device,
            path: device::mapper_path(name),
            size,
            read_only: info.read_only,
            open_count: info.open_count,
            backing_path: device::node_path(crypt.device),
            crypt,
        }))
    }

    /// The names of the active LUKS2 crypt mappings whose keys this crate manages.
    pub fn list(&self) -> Result<Vec<DmName>> {
        let devices = self
            .dm
            .list_devices()
            .map_err(|e| Error::ioctl("list", "all devices", e))?;
        let mut ours = Vec::new();
        for (dm_name, _, _) in devices {
            let Ok(name) = DmName::new(&dm_name.to_string()) else {
                continue;
            };
            let status = match self.status(&name) {
                Ok(Some(s)) => s,
                // Gone meanwhile, not a crypt mapping, or a crypt table we do not understand
                // (then it is not one of ours either).
                Ok(None)
                | Err(Error::NotFound(_) | Error::NotCrypt { .. } | Error::Unexpected(_)) => {
                    continue;
                }
                Err(e) => return Err(e),
            };
            let luks2 = status
                .dm_uuid
                .as_deref()
                .is_some_and(|u| u.starts_with(DM_UUID_PREFIX));
            if luks2
                && status
                    .keyring_key()
                    .is_some_and(|k| keyring::is_ours(&k.description))
            {
                ours.push(name);
            }
        }
        ours.sort();
        Ok(ours)
    }

    /// The state and the single crypt target's parameters of mapping `name`, read with
    /// `DM_SECURE_DATA`; an inline key in the parameters is redacted ([`active_table`]).
    fn crypt_table(&self, name: &DmName) -> Result<(ActiveTable, String)> {
        let Some(mut info) = active_table::read(self.dm.file().as_fd(), name)? else {
            return Err(Error::NotFound(name.to_string()));
        };
        let not_crypt = |reason| Error::NotCrypt {
            name: name.to_string(),
            reason,
        };
        let mut targets = std::mem::take(&mut info.targets).into_iter();
        let target = targets.next().ok_or(not_crypt("no active table"))?;
        if targets.next().is_some() {
            return Err(not_crypt("more than one target"));
        }
        let Some(params) = target.crypt_params else {
            return Err(not_crypt("not a single crypt target"));
        };
        if target.start != 0 || target.kind != "crypt" {
            return Err(not_crypt("not a single crypt target"));
        }
        Ok((info, params))
    }
}

/// What a failing activation must take back: the device it created, its node, the key it
/// installed — nothing else (not a key of the same description that another activation owns).
struct Undo<'a> {
    mapper: &'a DeviceMapper,
    name: &'a DmName,
    dev: DevNum,
    key: Option<KeySerial>,
    armed: bool,
}

impl Undo<'_> {
    fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for Undo<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let name = self.name;
        if let Ok(dm_name) = name.as_dm() {
            let id = DevId::Name(dm_name);
            for attempt in 1..=REMOVE_ATTEMPTS {
                match self.mapper.dm.device_remove(&id, DmOptions::default()) {
                    Ok(_) => break,
                    Err(e) if ioctl_errno(&e) == Some(libc::EBUSY) && attempt < REMOVE_ATTEMPTS => {
                        std::thread::sleep(REMOVE_PAUSE);
                    }
                    Err(e) => {
                        tracing::warn!(mapping = %name, error = %e, "cleanup after failed activation");
                        break;
                    }
                }
            }
        }
        device::remove_mapper_node(name, self.dev);
        if let Some(serial) = self.key.take() {
            keyring::remove_serial(serial);
        }
    }
}

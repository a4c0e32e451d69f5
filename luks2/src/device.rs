//! [`Luks2Device`]: a LUKS2 device opened for keyslot and token management — the library's
//! high-level entry point (the `luks2` command and the csi layer use this).

use std::path::Path;

use crate::backup;
use crate::crypto::calibrate::PbkdfOptions;
use crate::crypto::kdf::KdfLimits;
use crate::error::Result;
use crate::format::{self, FormatOptions};
use crate::header::{self, Header, ReadReport, RepairOutcome};
use crate::io::Device;
use crate::keyslot::{self, NewKeyslot};
use crate::metadata::{KeyslotId, Priority, TokenId};
use crate::secret::{Passphrase, VolumeKey};
use crate::token;

/// A device with a valid LUKS2 header.
///
/// Every unlock through it (including those inside `add_key`, `change_key` and `remove_key`)
/// honours its [`KdfLimits`]: [`KdfLimits::UNLOCK`] (cryptsetup's) unless set with
/// [`Luks2Device::with_kdf_limits`]; the CSI driver sets [`KdfLimits::driver`].
#[derive(Debug)]
pub struct Luks2Device<D: Device> {
    dev: D,
    header: Header,
    kdf_limits: KdfLimits,
}

impl<D: Device> Luks2Device<D> {
    fn new(dev: D, header: Header) -> Self {
        Luks2Device {
            dev,
            header,
            kdf_limits: KdfLimits::UNLOCK,
        }
    }

    /// Bounds the KDF costs (and the number of keyslots tried) of every later unlock by
    /// `limits`, checked before any KDF runs.
    pub fn with_kdf_limits(mut self, limits: KdfLimits) -> Self {
        self.kdf_limits = limits;
        self
    }

    /// The KDF limits unlocks honour.
    pub fn kdf_limits(&self) -> &KdfLimits {
        &self.kdf_limits
    }

    /// Reads and validates the header of `dev`.
    pub fn open(dev: D) -> Result<Self> {
        let header = header::read(&dev)?;
        Ok(Luks2Device::new(dev, header))
    }

    /// Reads the header and reports the state of both copies.
    pub fn open_with_report(dev: D) -> Result<(Self, ReadReport)> {
        let (header, report) = header::read_with_report(&dev)?;
        Ok((Luks2Device::new(dev, header), report))
    }

    /// Formats `dev` (see [`format::format`]) and returns it opened, with the keyslot used.
    pub fn format(
        mut dev: D,
        passphrase: &Passphrase,
        opts: &FormatOptions,
    ) -> Result<(Self, KeyslotId)> {
        let (header, id) = format::format(&mut dev, passphrase.as_bytes(), opts)?;
        Ok((Luks2Device::new(dev, header), id))
    }

    /// The header as last read or written.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The underlying device.
    pub fn device(&self) -> &D {
        &self.dev
    }

    /// Gives the device back.
    pub fn into_inner(self) -> D {
        self.dev
    }

    /// Re-reads the header from the device.
    pub fn reload(&mut self) -> Result<()> {
        self.header = header::read(&self.dev)?;
        Ok(())
    }

    /// Unlocks the volume key with `passphrase`: from keyslot `slot`, or from any keyslot in
    /// priority order (see [`keyslot::unlock_with_limits`]), under this device's KDF limits.
    pub fn unlock(
        &self,
        passphrase: &Passphrase,
        slot: Option<KeyslotId>,
    ) -> Result<(KeyslotId, VolumeKey)> {
        keyslot::unlock_with_limits(
            &self.dev,
            &self.header.metadata,
            passphrase.as_bytes(),
            slot,
            &self.kdf_limits,
        )
    }

    /// Adds a keyslot for `new_passphrase`, after unlocking with `passphrase` (any keyslot).
    pub fn add_key(
        &mut self,
        passphrase: &Passphrase,
        new_passphrase: &Passphrase,
        params: &NewKeyslot,
    ) -> Result<KeyslotId> {
        let (_, vk) = self.unlock(passphrase, None)?;
        self.add_key_by_volume_key(&vk, new_passphrase, params)
    }

    /// Adds a keyslot for `new_passphrase` holding `vk` (which must match the volume's digest).
    pub fn add_key_by_volume_key(
        &mut self,
        vk: &VolumeKey,
        new_passphrase: &Passphrase,
        params: &NewKeyslot,
    ) -> Result<KeyslotId> {
        keyslot::add_keyslot(
            &mut self.dev,
            &mut self.header,
            vk,
            new_passphrase.as_bytes(),
            params,
        )
    }

    /// Changes the passphrase of the keyslot `passphrase` opens (keyslot `slot` if given),
    /// keeping the keyslot number (`luksChangeKey`). Returns that number.
    pub fn change_key(
        &mut self,
        passphrase: &Passphrase,
        new_passphrase: &Passphrase,
        slot: Option<KeyslotId>,
        pbkdf: &PbkdfOptions,
    ) -> Result<KeyslotId> {
        let (id, vk) = self.unlock(passphrase, slot)?;
        keyslot::replace_keyslot(
            &mut self.dev,
            &mut self.header,
            id,
            &vk,
            new_passphrase.as_bytes(),
            pbkdf,
        )?;
        Ok(id)
    }

    /// Removes the keyslot `passphrase` opens (`luksRemoveKey`). Returns its number.
    pub fn remove_key(&mut self, passphrase: &Passphrase) -> Result<KeyslotId> {
        let (id, _) = self.unlock(passphrase, None)?;
        self.kill_slot(id)?;
        Ok(id)
    }

    /// Destroys keyslot `id` without asking for a passphrase (`luksKillSlot`).
    pub fn kill_slot(&mut self, id: KeyslotId) -> Result<()> {
        keyslot::kill_keyslot(&mut self.dev, &mut self.header, id)
    }

    /// Sets the priority of keyslot `id`.
    pub fn set_priority(&mut self, id: KeyslotId, priority: Priority) -> Result<()> {
        let p = if priority == Priority::Normal {
            None
        } else {
            Some(priority)
        };
        keyslot::set_priority(&mut self.dev, &mut self.header, id, p)
    }

    /// Imports a token; see [`token::add_token`].
    pub fn add_token(
        &mut self,
        json: &str,
        id: Option<TokenId>,
        keyslot: Option<KeyslotId>,
    ) -> Result<TokenId> {
        token::add_token(&mut self.dev, &mut self.header, json, id, keyslot)
    }

    /// Removes token `id`.
    pub fn remove_token(&mut self, id: TokenId) -> Result<()> {
        token::remove_token(&mut self.dev, &mut self.header, id)
    }

    /// Token `id` as compact JSON.
    pub fn export_token(&self, id: TokenId) -> Result<String> {
        token::export_token(&self.header.metadata, id)
    }

    /// All tokens (number, type).
    pub fn tokens(&self) -> Vec<(TokenId, String)> {
        token::list_tokens(&self.header.metadata)
    }

    /// Saves the header area to a new file (mode 0400).
    pub fn header_backup(&self, path: &Path) -> Result<u64> {
        backup::header_backup(&self.dev, path)
    }

    /// Destroys all keyslots and wipes the keyslots area.
    pub fn erase(&mut self) -> Result<()> {
        backup::erase(&mut self.dev, &mut self.header)
    }
}

/// Repairs the header of `dev` (see [`backup::repair`]).
pub fn repair<D: Device>(dev: &mut D) -> Result<RepairOutcome> {
    backup::repair(dev)
}

/// Restores the header of `dev` from a backup file (see [`backup::header_restore`]).
pub fn header_restore<D: Device>(dev: &mut D, path: &Path) -> Result<()> {
    backup::header_restore(dev, path)
}

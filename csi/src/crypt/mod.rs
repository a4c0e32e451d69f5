//! The steps of an encrypted volume on the node, each a call into the crate that owns it:
//! key store (record), `kms` (wrap/unwrap), `luks2` (header, format, token), `dm` (activation).
//!
//! The LUKS2 volume key *is* the DEK. The header gets one keyslot whose passphrase is the DEK
//! (PBKDF2 at cryptsetup's minimum: a random 512-bit key needs no memory-hard KDF), so stock
//! cryptsetup opens the device with `--key-file` (the DEK) or `--volume-key-file`; the attach
//! path itself runs no keyslot KDF at all: it checks the unwrapped DEK against the header's
//! digest and hands it to dm-crypt through the kernel keyring. A LUKS2 token keeps a copy of the
//! wrapped-key record, from which a lost record is restored.
//!
//! - [`mapper`]: device-mapper and the keyring behind the [`mapper::Mapper`] trait.
//! - [`keys`]: new DEKs, wrap and unwrap through the KMS, behind the [`keys::KeyWrapper`] trait.
//! - [`restore_header`]: rebuilding a destroyed header from the record (`volume
//!   restore-header`).

pub mod keys;
pub mod mapper;
pub mod restore_header;

use std::fs::{File, OpenOptions};
use std::path::Path;

use kms::{Dek, WrappedKey};
use luks2::crypto::{HashAlgorithm, KdfKind, KdfLimits, PbkdfOptions};
use luks2::format::FormatOptions;
use luks2::header::Header;
use luks2::metadata::{DigestKind, SegmentId};
use luks2::{VolumeKey, token};

use crate::error::{Error, Kind, Result};

/// The LUKS2 token type holding the wrapped-key record.
pub const TOKEN_TYPE: &str = "onmetal-csi-wrapped-key";
/// DEK length: 512 bits, two AES-256 keys for XTS.
pub const DEK_LEN: usize = 64;
/// The PBKDF2 iterations of our keyslot and digest (cryptsetup's minimum).
pub const PBKDF2_ITERATIONS: u32 = 1000;
/// The LUKS2 encryption sector size of our volumes.
pub const SECTOR_SIZE: u32 = 4096;

/// Reads the LUKS2 header of `device`: `None` when there is none (no LUKS magic in either
/// copy); a damaged header is an error (never "no header").
pub fn read_header(device: &Path) -> Result<Option<Header>> {
    let f =
        File::open(device).map_err(|e| Error::io(format!("opening {}", device.display()), e))?;
    match luks2::header::read(&f) {
        Ok(h) => Ok(Some(h)),
        Err(luks2::Error::NotLuks2) => Ok(None),
        Err(e) => Err(Error::new(
            Kind::FailedPrecondition,
            format!(
                "{} has a LUKS2 header that cannot be used: {e}",
                device.display()
            ),
        )),
    }
}

/// What the strict probe says about a device with no LUKS2 header.
pub fn holds_data(device: &Path) -> Result<Option<String>> {
    let f =
        File::open(device).map_err(|e| Error::io(format!("opening {}", device.display()), e))?;
    Ok(match luks2::signature::probe_blank(&f)? {
        luks2::signature::Blankness::Blank => None,
        luks2::signature::Blankness::HoldsData(found) => Some(found.to_string()),
    })
}

/// A known signature (filesystem, partition table, RAID, LVM, ...) on the device, if any.
pub fn foreign_signature(device: &Path) -> Result<Option<&'static str>> {
    let f =
        File::open(device).map_err(|e| Error::io(format!("opening {}", device.display()), e))?;
    Ok(luks2::signature::detect_signature(&f)?.map(|s| s.name()))
}

/// The wrapped-key record kept in the header's token, if there is one.
pub fn token_record(header: &Header) -> Result<Option<(luks2::metadata::TokenId, WrappedKey)>> {
    for (id, tok) in &header.metadata.tokens {
        if tok.type_name != TOKEN_TYPE {
            continue;
        }
        let Some(rec) = tok.fields.get("record") else {
            return Err(Error::precondition(format!(
                "LUKS2 token {id} of type {TOKEN_TYPE} has no record"
            )));
        };
        let rec = WrappedKey::from_json(rec.to_string().as_bytes())?;
        return Ok(Some((*id, rec)));
    }
    Ok(None)
}

fn token_json(record: &WrappedKey) -> String {
    let rec: serde_json::Value =
        serde_json::from_str(&record.to_json()).unwrap_or(serde_json::Value::Null);
    serde_json::json!({
        "type": TOKEN_TYPE,
        "keyslots": [],
        "record": rec,
    })
    .to_string()
}

/// Checks the DEK against the header's digest of the data segment (PBKDF2 with the header's
/// iterations, bounded by [`KdfLimits::driver`]: our own volumes use [`PBKDF2_ITERATIONS`], a
/// costlier digest is refused before any PBKDF2 runs).
pub fn verify_dek(header: &Header, dek: &Dek) -> Result<()> {
    let seg = SegmentId::new(0);
    let (id, digest) = header
        .metadata
        .digests
        .iter()
        .find(|(_, d)| d.segments.contains(&seg))
        .ok_or_else(|| Error::precondition("the LUKS2 header has no digest for segment 0"))?;
    let DigestKind::Pbkdf2(_) = &digest.kind else {
        return Err(Error::precondition(
            "the LUKS2 header's digest is not PBKDF2: not a volume of this driver",
        ));
    };
    if luks2::keyslot::verify_digest_with_limits(
        &header.metadata,
        *id,
        dek.expose(),
        &KdfLimits::driver(),
    )
    .map_err(|e| {
        Error::precondition(format!("the LUKS2 header is not one of this driver's: {e}"))
    })? {
        Ok(())
    } else {
        Err(Error::new(
            Kind::DataLoss,
            "the unwrapped key does not open this volume's LUKS2 header (record and device do \
             not belong together)",
        ))
    }
}

/// Formats `device` as LUKS2 with `dek` as the volume key and as the passphrase of keyslot 0,
/// and stores `record` in a token. The caller has established that the device is ours to
/// format. Returns the header as written.
pub fn format(device: &Path, dek: &Dek, record: &WrappedKey) -> Result<Header> {
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(device)
        .map_err(|e| Error::io(format!("opening {} for writing", device.display()), e))?;
    let opts = format_options();
    let vk = VolumeKey::from_bytes(dek.expose());
    let (mut header, slot) =
        luks2::format::format_with_volume_key(&mut f, &vk, dek.expose(), &opts)?;
    token::add_token(&mut f, &mut header, &token_json(record), None, Some(slot))?;
    f.sync_all()
        .map_err(|e| Error::io(format!("syncing {}", device.display()), e))?;
    Ok(header)
}

/// The LUKS2 format options of the driver's volumes (see the module documentation); the layout
/// they give a device (data offset, sector size) is `luks2::format::layout(&format_options(),
/// size)`.
pub fn format_options() -> FormatOptions {
    FormatOptions {
        key_size: DEK_LEN,
        sector_size: Some(SECTOR_SIZE),
        pbkdf: PbkdfOptions {
            kind: KdfKind::Pbkdf2(HashAlgorithm::Sha256),
            hash: HashAlgorithm::Sha256,
            max_memory_kib: None,
            parallel: None,
            force_iterations: Some(PBKDF2_ITERATIONS),
            ..PbkdfOptions::default()
        },
        // The driver's own probe (stricter than luks2's) decided already.
        force: true,
        ..FormatOptions::default()
    }
}

/// Replaces the token's record (after a rewrap) so that a restore from the token works with the
/// current KEK version.
pub fn refresh_token(device: &Path, header: &mut Header, record: &WrappedKey) -> Result<()> {
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(device)
        .map_err(|e| Error::io(format!("opening {} for writing", device.display()), e))?;
    let slots: Vec<_> = header.metadata.keyslots.keys().copied().collect();
    if let Some((id, _)) = token_record(header)? {
        token::remove_token(&mut f, header, id)?;
    }
    token::add_token(
        &mut f,
        header,
        &token_json(record),
        None,
        slots.first().copied(),
    )?;
    f.sync_all()
        .map_err(|e| Error::io(format!("syncing {}", device.display()), e))?;
    Ok(())
}

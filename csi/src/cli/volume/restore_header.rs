//! `volume restore-header`: rebuilds the LUKS2 header of a device whose both header copies are
//! destroyed, from the volume's wrapped-key record (see [`crate::crypt::restore_header`]). In order: a device
//! that still has a valid header is refused (before any KMS request); the DEK is unwrapped (the
//! record checked against the flags); the data behind the driver's data offset must decrypt to
//! an ext4 or XFS filesystem under it, else nothing is written; then a header like the driver's
//! is written below the data offset, with the record in its token. The key store is not
//! changed. Raw block volumes (no filesystem) cannot be checked and are refused.

use std::path::PathBuf;

use crate::Result;
use crate::crypt::restore_header;
use crate::host::exec::blocking;
use clap::Args;

use super::VolumeKms;

/// `volume restore-header` flags.
#[derive(Debug, Args)]
pub struct RestoreArgs {
    #[command(flatten)]
    volume: VolumeKms,
    /// The volume's device (or image file), unstaged.
    #[arg(long, value_name = "DEVICE")]
    device: PathBuf,
}

/// Runs `volume restore-header`.
pub async fn run(a: RestoreArgs) -> Result<()> {
    let volume = a.volume.volume()?;
    // Cheap refusals first: no KMS request for a device that has a header or is too small.
    restore_header::check_no_valid_header(&a.device)?;
    restore_header::driver_layout(&a.device)?;
    let stored = a.volume.entry(&volume).await?;
    let dek = a.volume.unwrap(&volume, &stored).await?;
    let device = a.device.clone();
    let record = stored.entry.record.clone();
    let restored = blocking(move || restore_header::restore_header(&device, &dek, &record)).await?;
    if let Some(why) = &restored.replaced_damaged {
        eprintln!(
            "note: {} had a damaged LUKS2 header ({why}); it was replaced",
            a.device.display()
        );
    }
    let offset = restored
        .header
        .metadata
        .segments
        .values()
        .next()
        .map_or(0, |s| s.offset);
    println!(
        "restored the LUKS2 header of {} for volume {volume}: {} found behind the data offset \
         ({offset} bytes) under the volume's key; new header UUID {}, keyslot 0 opens with the \
         key (`volume key`), the token holds the wrapped-key record",
        a.device.display(),
        restored.filesystem,
        restored.header.uuid()
    );
    Ok(())
}

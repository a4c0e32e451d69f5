//! `volume key`: the escape hatch. Unwraps the volume's DEK with its KMS into a new file (mode
//! 0600; an existing path, a terminal included, is never written), with a loud warning on
//! stderr. The DEK is the LUKS2 volume key and the passphrase of keyslot 0, so stock
//! `cryptsetup open --key-file FILE DEVICE NAME` (or `--volume-key-file FILE`) opens the device.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::{Error, Result};
use clap::Args;

use super::VolumeKms;

/// `volume key` flags.
#[derive(Debug, Args)]
pub struct KeyArgs {
    #[command(flatten)]
    volume: VolumeKms,
    /// The file to create (mode 0600) with the raw key bytes; must not exist.
    #[arg(long, value_name = "FILE")]
    output: PathBuf,
}

fn refuse_existing(output: &Path) -> Result<()> {
    match fs::symlink_metadata(output) {
        Ok(_) => Err(Error::invalid(format!(
            "--output {} exists: refusing to overwrite it (the key goes only into a new file, \
             never to a terminal)",
            output.display()
        ))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(format!("checking {}", output.display()), e)),
    }
}

/// Creates `output` (which must not exist) with mode 0600 and writes `bytes`; removes it again
/// if the write fails.
fn write_new_file(output: &Path, bytes: &[u8]) -> Result<()> {
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(output)
        .map_err(|e| Error::io(format!("creating {}", output.display()), e))?;
    let res = f
        // Whatever the umask: readable and writable by the owner only.
        .set_permissions(fs::Permissions::from_mode(0o600))
        .and_then(|()| f.write_all(bytes))
        .and_then(|()| f.sync_all());
    if let Err(e) = res {
        drop(f);
        let _ = fs::remove_file(output);
        return Err(Error::io(format!("writing {}", output.display()), e));
    }
    Ok(())
}

/// Runs `volume key`.
pub async fn run(a: KeyArgs) -> Result<()> {
    let volume = a.volume.volume()?;
    // Fail before any KMS request when the file could not be written anyway.
    refuse_existing(&a.output)?;
    let stored = a.volume.entry(&volume).await?;
    let dek = a.volume.unwrap(&volume, &stored).await?;
    write_new_file(&a.output, dek.expose())?;
    eprintln!(
        "WARNING: {file} now holds the data encryption key of volume {volume} ({bits}-bit, raw \
         bytes). Whoever can read this file can decrypt the volume: `cryptsetup open --key-file \
         {file} DEVICE NAME` opens it. Keep it on this machine, never copy it anywhere, and \
         delete it (shred -u {file}) as soon as you are done.",
        file = a.output.display(),
        bits = dek.len() * 8,
    );
    Ok(())
}

//! `onmetal-csi-driver volume ...`: operator commands on the driver's encrypted volumes.
//!
//! - `key` ([`key`]): unwraps a volume's DEK into a new 0600 file, so that stock
//!   `cryptsetup open --key-file FILE DEVICE NAME` opens the device by hand (the escape hatch).
//! - `inspect` ([`inspect`]): the LUKS2 header and the record in its token, never any key.
//! - `restore-header` ([`restore`]): rebuilds a header whose two copies are destroyed, from the
//!   record, after checking that the data decrypts to a filesystem under the key.
//!
//! `key` and `restore-header` take the volume's KMS settings as flags (`--type`, `--endpoint`,
//! `--key-id`, `--namespace`, as in its StorageClass) and the credentials as files in
//! `--secret-dir` (`token`, `ca.crt`, `tls.crt`, `tls.key`, as Kubernetes mounts a Secret). The
//! record comes from `--key-store` and must name exactly these settings: it never decides where
//! the credentials are sent. Errors: one line on stderr and an exit status by class
//! ([`exit_code`]).

mod inspect;
mod key;
mod restore;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Subcommand};
use csi::keystore::Stored;
use csi::volume_id::VolumeId;
use csi::{Error, Kind, Result};
use kms::{Dek, KmsConfig, KmsType};
use zeroize::Zeroizing;

/// The `volume` subcommands.
#[derive(Subcommand)]
pub(crate) enum VolumeCommand {
    /// Unwrap a volume's data key into a new 0600 file (for `cryptsetup open --key-file`).
    Key(key::KeyArgs),
    /// Show a device's LUKS2 header and the wrapped-key record in its token (no key material).
    Inspect(inspect::InspectArgs),
    /// Rebuild the LUKS2 header of a device whose both header copies are destroyed.
    RestoreHeader(restore::RestoreArgs),
}

/// A volume, where its record is, and how to reach its KMS.
#[derive(Args)]
pub(crate) struct VolumeKms {
    /// The volume ID.
    #[arg(long, value_name = "V")]
    volume_id: String,
    /// Where the wrapped-key records live: dir:DIR.
    #[arg(long, value_name = "dir:DIR")]
    key_store: String,
    /// KMS interface: transit or kmip (the volume's encryptionKMSType).
    #[arg(long = "type", value_name = "transit|kmip")]
    kind: String,
    /// The volume's encryptionKMSEndpoint: http(s)://host:port (transit) or host:port (kmip).
    #[arg(long, value_name = "E")]
    endpoint: String,
    /// The volume's encryptionKMSKeyID: Transit key name or KMIP Unique Identifier.
    #[arg(long, value_name = "K")]
    key_id: String,
    /// Directory with files named like the Secret's keys: token, ca.crt, tls.crt, tls.key.
    #[arg(long, value_name = "D")]
    secret_dir: PathBuf,
    /// The volume's encryptionKMSNamespace (OpenBao/Vault namespace, transit only).
    #[arg(long)]
    namespace: Option<String>,
}

impl VolumeKms {
    fn volume(&self) -> Result<VolumeId> {
        VolumeId::parse(&self.volume_id).map_err(|e| Error::invalid(format!("--volume-id: {e}")))
    }

    /// The KMS configuration from the flags and the secret directory (wiped after use).
    fn config(&self) -> Result<KmsConfig> {
        let kind: KmsType = self.kind.parse()?;
        let secrets = read_secret_dir(&self.secret_dir)?;
        let config = KmsConfig::new(
            kind,
            &self.endpoint,
            &self.key_id,
            self.namespace.as_deref(),
            &secrets,
        );
        drop(secrets);
        Ok(config?)
    }

    /// The volume's stored entry (a missing one is NOT_FOUND).
    async fn entry(&self, volume: &VolumeId) -> Result<Stored> {
        let store = csi::keystore::open(&self.key_store).await?;
        store
            .get(volume)
            .await
            .map_err(Error::from)?
            .ok_or_else(|| {
                Error::not_found(format!(
                    "the key store {} has no wrapped-key record {} for volume {volume}",
                    self.key_store,
                    volume.record_name()
                ))
            })
    }

    /// The record, checked against the flags, and the DEK it unwraps to.
    async fn unwrap(&self, volume: &VolumeId, stored: &Stored) -> Result<Dek> {
        let config = self.config()?;
        csi::encrypted::unwrap(&config, &stored.entry.record, volume).await
    }
}

/// Reads `token`, `ca.crt`, `tls.crt` and `tls.key` from `dir` (absent files are skipped); the
/// values are wiped when the map is dropped.
fn read_secret_dir(dir: &Path) -> Result<SecretMap> {
    if !dir.is_dir() {
        return Err(Error::invalid(format!(
            "--secret-dir {} is not a directory",
            dir.display()
        )));
    }
    let mut map = SecretMap(HashMap::new());
    for key in [
        kms::SECRET_TOKEN,
        kms::SECRET_CA,
        kms::SECRET_TLS_CERT,
        kms::SECRET_TLS_KEY,
    ] {
        let path = dir.join(key);
        match std::fs::read(&path) {
            Ok(bytes) => {
                let bytes = Zeroizing::new(bytes);
                let text = std::str::from_utf8(&bytes)
                    .map_err(|_| Error::invalid(format!("{} is not UTF-8 text", path.display())))?;
                map.0.insert(key.to_owned(), text.to_owned());
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(format!("reading {}", path.display()), e)),
        }
    }
    Ok(map)
}

/// Secret files' contents, wiped on drop.
struct SecretMap(HashMap<String, String>);

impl std::ops::Deref for SecretMap {
    type Target = HashMap<String, String>;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl Drop for SecretMap {
    fn drop(&mut self) {
        for v in self.0.values_mut() {
            zeroize::Zeroize::zeroize(v);
        }
    }
}

/// Exit status by error class (sysexits values, as `kms`): unavailable 69, permission denied
/// 77, not found 66, refused because of what is on the device or in the record (failed
/// precondition, data loss, already exists) 65, invalid flags or configuration 78, anything
/// else 1; clap usage errors 2.
pub(crate) fn exit_code(kind: Kind) -> u8 {
    match kind {
        Kind::Unavailable => 69,
        Kind::PermissionDenied => 77,
        Kind::NotFound => 66,
        Kind::FailedPrecondition | Kind::DataLoss | Kind::AlreadyExists => 65,
        Kind::InvalidArgument => 78,
        _ => 1,
    }
}

pub(crate) fn run(cmd: VolumeCommand) -> ExitCode {
    let name = match &cmd {
        VolumeCommand::Key(_) => "key",
        VolumeCommand::Inspect(_) => "inspect",
        VolumeCommand::RestoreHeader(_) => "restore-header",
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("onmetal-csi-driver volume {name}: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let res = rt.block_on(async {
        match cmd {
            VolumeCommand::Key(a) => key::run(a).await,
            VolumeCommand::Inspect(a) => inspect::run(a),
            VolumeCommand::RestoreHeader(a) => restore::run(a).await,
        }
    });
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!(
                "onmetal-csi-driver volume {name}: {}",
                e.display_chain().replace(['\n', '\r'], " ")
            );
            ExitCode::from(exit_code(e.kind()))
        }
    }
}

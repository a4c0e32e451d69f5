//! `onmetal-csi-driver volume ...`: operator commands on the driver's encrypted volumes (never
//! run by the driver itself).
//!
//! - `list --key-store kube|dir:DIR` ([`list`]): every wrapped-key record, without keys.
//! - `rewrap --key-store kube|dir:DIR --type T --endpoint E --key-id K --secret-dir D
//!   (--volume-id V | --all) [--to-key-id NEW] [--dry-run]` ([`rewrap`]): KEK rotation across
//!   volumes.
//! - `key` ([`key`]): unwraps a volume's DEK into a new 0600 file, so that stock
//!   `cryptsetup open --key-file FILE DEVICE NAME` opens the device by hand (the escape hatch).
//! - `inspect` ([`inspect`]): the LUKS2 header and the record in its token, never any key.
//! - `restore-header` ([`restore`]): rebuilds a header whose two copies are destroyed, from the
//!   record, after checking that the data decrypts to a filesystem under the key.
//!
//! The KMS settings come from flags (`--type`, `--endpoint`, `--key-id`, `--kms-namespace`, as in
//! the volume's StorageClass) and the credentials from files in `--secret-dir` (`token`,
//! `ca.crt`, `tls.crt`, `tls.key`, as Kubernetes mounts a Secret). A record must name exactly
//! these settings: it never decides where the credentials are sent. Each verb is one variant of
//! [`VolumeCommand`] with its own argument struct and module. Errors: one line on stderr and an
//! exit status by class ([`exit_code`]).

pub mod inspect;
pub mod key;
pub mod list;
pub mod restore;
pub mod rewrap;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Subcommand};
use kms::{Dek, Kms, KmsConfig, KmsType, Timeouts};
use zeroize::Zeroizing;

use crate::error::{Error, Kind, Result};
use crate::keystore::{self, KeyStore, Stored};
use crate::volume_id::VolumeId;

/// The `volume` subcommands.
#[derive(Debug, Subcommand)]
pub enum VolumeCommand {
    /// List every encrypted volume's wrapped-key record (volume id, KMS type, endpoint, key id
    /// and version, state, created), without keys.
    List(list::ListArgs),
    /// Move wrapped keys to a new KEK version (Transit) or a new KEK (--to-key-id), verifying
    /// each new record by an unwrap before it replaces the old one.
    Rewrap(rewrap::RewrapArgs),
    /// Unwrap a volume's data key into a new 0600 file (for `cryptsetup open --key-file`).
    Key(key::KeyArgs),
    /// Show a device's LUKS2 header and the wrapped-key record in its token (no key material).
    Inspect(inspect::InspectArgs),
    /// Rebuild the LUKS2 header of a device whose both header copies are destroyed.
    RestoreHeader(restore::RestoreArgs),
}

/// Which key store, as `serve` takes it.
#[derive(Debug, Clone, Args)]
pub struct StoreArgs {
    /// Where wrapped keys live: kube (Secrets in --key-namespace) or dir:DIR.
    #[arg(long, value_name = "kube|dir:DIR")]
    pub key_store: String,
    /// Namespace of the wrapped-key Secrets (kube store).
    #[arg(long, value_name = "NS", default_value = keystore::kube::DEFAULT_NAMESPACE)]
    pub key_namespace: String,
    /// The CSI driver name (annotation of Secrets this command writes).
    #[arg(long, default_value = "csi.onmetal.de")]
    pub driver_name: String,
}

impl StoreArgs {
    /// Opens the store (the kube store reads KUBECONFIG or the in-cluster configuration).
    pub async fn open(&self) -> Result<Arc<dyn KeyStore>> {
        keystore::open(&self.key_store, &self.key_namespace, &self.driver_name).await
    }
}

/// Where the KMS is and how to authenticate (as `kms` takes it).
#[derive(Debug, Clone, Args)]
pub struct KmsArgs {
    /// KMS interface: transit or kmip.
    #[arg(long = "type", value_name = "transit|kmip")]
    pub kind: String,
    /// Endpoint: http(s)://host:port (transit) or host:port (kmip).
    #[arg(long, value_name = "E")]
    pub endpoint: String,
    /// Transit key name or KMIP Unique Identifier of the key encryption key.
    #[arg(long, value_name = "K")]
    pub key_id: String,
    /// Directory with files named like the credentials Secret's keys: token, ca.crt, tls.crt,
    /// tls.key.
    #[arg(long, value_name = "D")]
    pub secret_dir: PathBuf,
    /// OpenBao/Vault namespace (transit only; `encryptionKMSNamespace`).
    #[arg(long, value_name = "NS")]
    pub kms_namespace: Option<String>,
    /// Request timeout in seconds (connect timeout is the smaller of 5 and this).
    #[arg(long, value_name = "SECONDS", default_value_t = 15)]
    pub timeout: u64,
}

impl KmsArgs {
    /// The configuration for `key_id` (the same endpoint and credentials) and its client.
    pub fn client(&self, key_id: &str) -> Result<(KmsConfig, Kms)> {
        let kind: KmsType = self.kind.parse()?;
        let secrets = read_secret_dir(&self.secret_dir)?;
        let config = KmsConfig::new(
            kind,
            &self.endpoint,
            key_id,
            self.kms_namespace.as_deref(),
            &secrets,
        );
        // The map held a token or a private key: wiped here, before anything else can fail.
        drop(secrets);
        let request = Duration::from_secs(self.timeout.max(1));
        let config = config?.with_timeouts(Timeouts {
            connect: request.min(Duration::from_secs(5)),
            request,
        });
        let kms = Kms::new(&config)?;
        Ok((config, kms))
    }
}

/// A volume, where its record is, and how to reach its KMS.
#[derive(Debug, Args)]
pub struct VolumeKms {
    /// The volume ID.
    #[arg(long, value_name = "V")]
    volume_id: String,
    /// Where the wrapped-key records live.
    #[command(flatten)]
    store: StoreArgs,
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
    #[arg(long, value_name = "NS")]
    kms_namespace: Option<String>,
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
            self.kms_namespace.as_deref(),
            &secrets,
        );
        drop(secrets);
        Ok(config?)
    }

    /// The volume's stored entry (a missing one is NOT_FOUND).
    async fn entry(&self, volume: &VolumeId) -> Result<Stored> {
        let store = self.store.open().await?;
        store
            .get(volume)
            .await
            .map_err(Error::from)?
            .ok_or_else(|| {
                Error::not_found(format!(
                    "the key store {} has no wrapped-key record {} for volume {volume}",
                    self.store.key_store,
                    volume.record_name()
                ))
            })
    }

    /// The record, checked against the flags, and the DEK it unwraps to.
    async fn unwrap(&self, volume: &VolumeId, stored: &Stored) -> Result<Dek> {
        let config = self.config()?;
        crate::encrypted::unwrap(&config, &stored.entry.record, volume).await
    }
}

/// Reads `token`, `ca.crt`, `tls.crt` and `tls.key` from `dir` (absent files are skipped); the
/// values are wiped when the map is dropped.
pub fn read_secret_dir(dir: &Path) -> Result<SecretMap> {
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

/// Secret files' contents, wiped on drop (no `Debug`: it holds tokens and private keys).
pub struct SecretMap(HashMap<String, String>);

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
pub fn exit_code(kind: Kind) -> u8 {
    match kind {
        Kind::Unavailable => 69,
        Kind::PermissionDenied => 77,
        Kind::NotFound => 66,
        Kind::FailedPrecondition | Kind::DataLoss | Kind::AlreadyExists => 65,
        Kind::InvalidArgument => 78,
        _ => 1,
    }
}

/// Runs a `volume` subcommand on its own runtime; the exit status of the process.
pub fn run(cmd: VolumeCommand) -> ExitCode {
    let name = match &cmd {
        VolumeCommand::List(_) => "list",
        VolumeCommand::Rewrap(_) => "rewrap",
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
            return ExitCode::FAILURE;
        }
    };
    let mut stdout = std::io::stdout().lock();
    let res = rt.block_on(async {
        match cmd {
            VolumeCommand::List(args) => list::run(&args, &mut stdout).await.map(|()| true),
            VolumeCommand::Rewrap(args) => {
                rewrap::run(&args, &mut stdout).await.map(|t| t.failed == 0)
            }
            VolumeCommand::Key(a) => key::run(a).await.map(|()| true),
            VolumeCommand::Inspect(a) => inspect::run(a).map(|()| true),
            VolumeCommand::RestoreHeader(a) => restore::run(a).await.map(|()| true),
        }
    });
    match res {
        Ok(true) => ExitCode::SUCCESS,
        // Some volumes failed (rewrap): each was reported with its cause.
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!(
                "onmetal-csi-driver volume {name}: {}",
                e.display_chain().replace(['\n', '\r'], " ")
            );
            ExitCode::from(exit_code(e.kind()))
        }
    }
}

//! `onmetal-csi-driver volume ...`: operator commands on the encrypted volumes' wrapped-key
//! records (never run by the driver itself).
//!
//! - `volume list --key-store kube|dir:DIR`: every record, without keys ([`list`]).
//! - `volume rewrap --key-store kube|dir:DIR --type T --endpoint E --key-id K --secret-dir D
//!   (--volume-id V | --all) [--to-key-id NEW] [--dry-run]`: KEK rotation across volumes
//!   ([`rewrap`]).
//!
//! Each verb is one variant of [`VolumeCommand`] with its own argument struct and module; a new
//! verb adds a variant, a module and one arm in [`run`].

pub mod list;
pub mod rewrap;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Subcommand};
use kms::{Kms, KmsConfig, KmsType, Timeouts};
use zeroize::{Zeroize, Zeroizing};

use crate::error::{Error, Result};
use crate::keystore::{self, KeyStore};

/// The `volume` subcommands.
#[derive(Debug, Subcommand)]
pub enum VolumeCommand {
    /// List every encrypted volume's wrapped-key record (volume id, KMS type, endpoint, key id
    /// and version, state, created), without keys.
    List(list::ListArgs),
    /// Move wrapped keys to a new KEK version (Transit) or a new KEK (--to-key-id), verifying
    /// each new record by an unwrap before it replaces the old one.
    Rewrap(rewrap::RewrapArgs),
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
        let mut secrets = read_secret_dir(&self.secret_dir)?;
        let config = KmsConfig::new(
            kind,
            &self.endpoint,
            key_id,
            self.kms_namespace.as_deref(),
            &secrets,
        );
        // The map held a token or a private key: wipe it before anything else can fail.
        for v in secrets.values_mut() {
            v.zeroize();
        }
        let request = Duration::from_secs(self.timeout.max(1));
        let config = config?.with_timeouts(Timeouts {
            connect: request.min(Duration::from_secs(5)),
            request,
        });
        let kms = Kms::new(&config)?;
        Ok((config, kms))
    }
}

/// The credential files of `dir` (a mounted Secret), keyed by file name.
fn read_secret_dir(dir: &Path) -> Result<HashMap<String, String>> {
    if !dir.is_dir() {
        return Err(Error::invalid(format!(
            "--secret-dir {} is not a directory",
            dir.display()
        )));
    }
    let mut map = HashMap::new();
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
                map.insert(key.to_owned(), text.to_owned());
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(format!("reading {}", path.display()), e)),
        }
    }
    Ok(map)
}

/// Runs a `volume` subcommand on its own runtime; the exit status of the process.
pub fn run(cmd: VolumeCommand) -> ExitCode {
    let name = match &cmd {
        VolumeCommand::List(_) => "list",
        VolumeCommand::Rewrap(_) => "rewrap",
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
        }
    });
    match res {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!(
                "onmetal-csi-driver volume {name}: {}",
                e.display_chain().replace(['\n', '\r'], " ")
            );
            ExitCode::FAILURE
        }
    }
}

//! The flags the subcommands share: the key store ([`StoreArgs`]), the one set of KMS flags
//! ([`KmsKey`]: `--type`, `--key-id`, `--secret-dir`, `--kms-namespace`, `--timeout`; with the
//! endpoint: [`KmsArgs`]), how to reach Ceph for the `rbd` backend ([`CephArgs`]), and the reader
//! of a mounted Secret directory ([`read_secret_dir`]).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub use crate::secrets::SecretMap;

use clap::Args;
use kms::{Kms, KmsConfig, KmsType, Timeouts};
use zeroize::Zeroizing;

use crate::error::{Error, Result};
use crate::keystore::{self, KeyStore};

/// How the `rbd` backend reaches Ceph (`serve --backend rbd`, `volume release`). The Ceph
/// credentials are the storage provider's, mounted from a Secret of the cluster admin.
#[derive(Debug, Clone, Args)]
pub struct CephArgs {
    /// The Ceph configuration (monitor addresses; the keyring setting).
    #[arg(long, value_name = "FILE", default_value = "/etc/ceph/ceph.conf")]
    pub ceph_conf: PathBuf,
    /// The cephx user, without `client.` (`csi`: client.csi).
    #[arg(long, value_name = "NAME", default_value = "csi")]
    pub ceph_id: String,
    /// The user's keyring (default: the conf's `keyring` setting).
    #[arg(long, value_name = "FILE")]
    pub ceph_keyring: Option<PathBuf>,
    /// The bound of each Ceph call, in seconds (connect, monitor and OSD operations, map).
    #[arg(long, value_name = "SECONDS", default_value_t = 10)]
    pub ceph_timeout: u64,
}

impl CephArgs {
    /// The backend's configuration.
    pub fn config(&self) -> crate::backend::RbdConfig {
        crate::backend::RbdConfig {
            conf: self.ceph_conf.clone(),
            client: self.ceph_id.clone(),
            keyring: self.ceph_keyring.clone(),
            timeout: Duration::from_secs(self.ceph_timeout.max(1)),
        }
    }
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

/// The KMS key and how to authenticate, as a volume's StorageClass names them (everything but
/// the endpoint, which the `kms` verbs may take from a record).
#[derive(Debug, Clone, Args)]
pub struct KmsKey {
    /// KMS interface: transit or kmip (the volume's encryptionKMSType).
    #[arg(long = "type", value_name = "transit|kmip")]
    pub kind: String,
    /// Transit key name or KMIP Unique Identifier of the key encryption key (the volume's
    /// encryptionKMSKeyID).
    #[arg(long, value_name = "K")]
    pub key_id: String,
    /// Directory with files named like the credentials Secret's keys: token, ca.crt, tls.crt,
    /// tls.key.
    #[arg(long, value_name = "D")]
    pub secret_dir: PathBuf,
    /// OpenBao/Vault namespace (transit only; the volume's encryptionKMSNamespace).
    #[arg(long, value_name = "NS", alias = "namespace")]
    pub kms_namespace: Option<String>,
    /// Request timeout in seconds (connect timeout is the smaller of 5 and this).
    #[arg(long, value_name = "SECONDS", default_value_t = 15)]
    pub timeout: u64,
}

impl KmsKey {
    /// The configuration of key `key_id` at `endpoint` with these credentials (the secret
    /// directory is read here and wiped before this returns).
    pub fn config(&self, endpoint: &str, key_id: &str) -> Result<KmsConfig> {
        let kind: KmsType = self.kind.parse()?;
        let secrets = read_secret_dir(&self.secret_dir)?;
        Ok(self.config_with(kind, endpoint, key_id, &secrets)?)
    }

    /// [`KmsKey::config`] with the secrets already read, and the KMS's own error (the `kms`
    /// verbs report its class).
    pub fn config_with(
        &self,
        kind: KmsType,
        endpoint: &str,
        key_id: &str,
        secrets: &HashMap<String, String>,
    ) -> kms::Result<KmsConfig> {
        let config = KmsConfig::new(
            kind,
            endpoint,
            key_id,
            self.kms_namespace.as_deref(),
            secrets,
        )?;
        let request = Duration::from_secs(self.timeout.max(1));
        Ok(config.with_timeouts(Timeouts {
            connect: request.min(Duration::from_secs(5)),
            request,
        }))
    }
}

/// Where the KMS is and how to authenticate: `--endpoint` and the [`KmsKey`] flags.
#[derive(Debug, Clone, Args)]
pub struct KmsArgs {
    /// Endpoint: http(s)://host:port (transit) or host:port (kmip); the volume's
    /// encryptionKMSEndpoint.
    #[arg(long, value_name = "E")]
    pub endpoint: String,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub key: KmsKey,
}

impl KmsArgs {
    /// The configuration of `--key-id`.
    pub fn config(&self) -> Result<KmsConfig> {
        self.key.config(&self.endpoint, &self.key.key_id)
    }

    /// The configuration for `key_id` (the same endpoint and credentials) and its client.
    pub fn client(&self, key_id: &str) -> Result<(KmsConfig, Kms)> {
        let config = self.key.config(&self.endpoint, key_id)?;
        let kms = Kms::new(&config)?;
        Ok((config, kms))
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
    let mut map = SecretMap::default();
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

//! The `kube` key store: one Secret `onmetal-csi-luks-<volume-id>` per encrypted volume, in one
//! namespace (`kube-system` unless `--key-namespace` says otherwise), through the API server
//! (`kube` client, rustls, in-cluster configuration or `KUBECONFIG`).
//!
//! The Secret:
//!
//! ```yaml
//! apiVersion: v1
//! kind: Secret
//! type: csi.onmetal.de/luks-wrapped-key
//! metadata:
//!   name: onmetal-csi-luks-pvc-1234
//!   namespace: kube-system
//!   labels:
//!     app.kubernetes.io/managed-by: onmetal-csi
//!     csi.onmetal.de/volume-id: pvc-1234
//!   annotations:
//!     csi.onmetal.de/driver: csi.onmetal.de
//! data:
//!   record: <the wrapped-key record, JSON of kms/README.md>
//!   state: <pending | formatted>
//! ```
//!
//! Type: our own, [`SECRET_TYPE`], not `Opaque`. A Secret's type cannot change after creation,
//! so a Secret of that name made by someone else (an `Opaque` one, say) is refused with a clear
//! error instead of being read as a record or overwritten, and `kubectl get secrets
//! --field-selector type=csi.onmetal.de/luks-wrapped-key` finds every record. The record keeps
//! its own data key so that `kubectl get secret ... -o jsonpath='{.data.record}' | base64 -d`
//! prints exactly the `kms/README.md` JSON; the state sits beside it.
//!
//! Semantics (those of [`KeyStore`]): create is a POST; a 409 is read back, and the same entry
//! counts as success (an earlier attempt whose response was lost), a different one is
//! [`StoreError::Exists`] and is never overwritten. get: 404 is `None`. update: PUT with the
//! revision as `metadata.resourceVersion` (409 or 404: [`StoreError::Conflict`]; the caller
//! re-reads). delete: 404 is success. Each call has a time limit; 429, 5xx, time-outs and
//! connection errors are retried with exponential backoff (honouring a 429's `retryAfterSeconds`
//! up to the backoff ceiling), and when the retries are used up the error is
//! [`Kind::Unavailable`] (the CO retries; nothing is formatted and no record is lost).

use std::future::Future;
use std::time::Duration;

use ::kube::api::{Api, DeleteParams, ListParams, PostParams};
use ::kube::core::Status;
use ::kube::{Client, Config};
use async_trait::async_trait;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use tracing::warn;

use super::{KeyEntry, KeyStore, Revision, StoreError, Stored, VolumeState};
use crate::error::{Error, Kind, Result};
use crate::volume_id::{RECORD_PREFIX, VolumeId};

/// The Secret type of every record (see the module documentation for why not `Opaque`).
pub const SECRET_TYPE: &str = "csi.onmetal.de/luks-wrapped-key";
/// Data key holding the wrapped-key record (`kms/README.md` JSON).
pub const DATA_RECORD: &str = "record";
/// Data key holding the [`VolumeState`] (`pending` or `formatted`).
pub const DATA_STATE: &str = "state";
/// Label key and value on every record; `list` selects by it.
pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// Value of [`LABEL_MANAGED_BY`].
pub const MANAGED_BY: &str = "onmetal-csi";
/// Label with the volume id.
pub const LABEL_VOLUME_ID: &str = "csi.onmetal.de/volume-id";
/// Annotation with the CSI driver name that wrote the record.
pub const ANNOTATION_DRIVER: &str = "csi.onmetal.de/driver";
/// The namespace when `--key-namespace` is not given.
pub const DEFAULT_NAMESPACE: &str = "kube-system";
/// Field manager sent with every write.
const FIELD_MANAGER: &str = "onmetal-csi-driver";
/// Page size of `list`.
const LIST_PAGE: u32 = 250;

/// Time limits and retries of each store call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts per call (at least 1).
    pub attempts: u32,
    /// Sleep after the first failed attempt; doubled after each further one.
    pub first_backoff: Duration,
    /// Longest sleep between attempts.
    pub max_backoff: Duration,
    /// Time limit of one attempt (request and response).
    pub attempt_timeout: Duration,
}

impl Default for RetryPolicy {
    /// 5 attempts, 200 ms doubling up to 3 s between them, 10 s per attempt.
    fn default() -> Self {
        RetryPolicy {
            attempts: 5,
            first_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(3),
            attempt_timeout: Duration::from_secs(10),
        }
    }
}

/// See the module documentation.
#[derive(Clone)]
pub struct KubeStore {
    api: Api<Secret>,
    namespace: String,
    driver: String,
    retry: RetryPolicy,
}

impl std::fmt::Debug for KubeStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeStore")
            .field("namespace", &self.namespace)
            .field("driver", &self.driver)
            .finish_non_exhaustive()
    }
}

/// Why one attempt failed.
enum Failure {
    /// The API server answered with a status the caller interprets (404, 409, ...).
    Status(Box<Status>),
    /// Anything else, already mapped to the driver's error (`Unavailable` after the retries).
    Fatal(Error),
}

impl KubeStore {
    /// A store from the in-cluster configuration (the pod's ServiceAccount) or `KUBECONFIG` /
    /// `~/.kube/config`, with the default [`RetryPolicy`].
    pub async fn connect(namespace: &str, driver: &str) -> Result<Self> {
        let config = Config::infer().await.map_err(|e| {
            Error::new(
                Kind::InvalidArgument,
                format!(
                    "--key-store kube: no Kubernetes configuration (in-cluster or KUBECONFIG): \
                     {e}"
                ),
            )
        })?;
        Self::with_config(config, namespace, driver, RetryPolicy::default())
    }

    /// A store from an explicit client configuration (its time limits are set from `retry`).
    pub fn with_config(
        mut config: Config,
        namespace: &str,
        driver: &str,
        retry: RetryPolicy,
    ) -> Result<Self> {
        config.connect_timeout = Some(retry.attempt_timeout.min(Duration::from_secs(5)));
        config.read_timeout = Some(retry.attempt_timeout);
        config.write_timeout = Some(retry.attempt_timeout);
        // kube's own retry layer (up to 15 retries, honouring Retry-After up to 1000 s) would
        // hide failures inside one attempt and outlast every CSI deadline: retries are ours.
        config.default_retry = false;
        let client = Client::try_from(config).map_err(|e| {
            Error::new(
                Kind::InvalidArgument,
                format!("--key-store kube: cannot build the Kubernetes client: {e}"),
            )
        })?;
        Self::with_client(client, namespace, driver, retry)
    }

    /// A store on an existing client.
    pub fn with_client(
        client: Client,
        namespace: &str,
        driver: &str,
        retry: RetryPolicy,
    ) -> Result<Self> {
        if VolumeId::parse(namespace).is_err() {
            return Err(Error::invalid(format!(
                "--key-namespace {namespace:?} is not a valid namespace name"
            )));
        }
        Ok(KubeStore {
            api: Api::namespaced(client, namespace),
            namespace: namespace.to_owned(),
            driver: driver.to_owned(),
            retry: RetryPolicy {
                attempts: retry.attempts.max(1),
                ..retry
            },
        })
    }

    /// The namespace of the records.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    fn post_params() -> PostParams {
        PostParams {
            dry_run: false,
            field_manager: Some(FIELD_MANAGER.to_owned()),
        }
    }

    /// The Secret for `entry`.
    fn secret(&self, volume: &VolumeId, entry: &KeyEntry, revision: Option<&Revision>) -> Secret {
        let labels = [
            (LABEL_MANAGED_BY.to_owned(), MANAGED_BY.to_owned()),
            (LABEL_VOLUME_ID.to_owned(), volume.as_str().to_owned()),
        ];
        let data = [
            (
                DATA_RECORD.to_owned(),
                ByteString(entry.record.to_json().into_bytes()),
            ),
            (
                DATA_STATE.to_owned(),
                ByteString(entry.state.as_str().as_bytes().to_vec()),
            ),
        ];
        Secret {
            metadata: ObjectMeta {
                name: Some(volume.record_name()),
                namespace: Some(self.namespace.clone()),
                labels: Some(labels.into_iter().collect()),
                annotations: Some(
                    [(ANNOTATION_DRIVER.to_owned(), self.driver.clone())]
                        .into_iter()
                        .collect(),
                ),
                resource_version: revision.map(|r| r.0.clone()),
                ..ObjectMeta::default()
            },
            type_: Some(SECRET_TYPE.to_owned()),
            data: Some(data.into_iter().collect()),
            ..Secret::default()
        }
    }

    /// Runs one API call with the time limit and retries. The flag says whether an earlier
    /// attempt failed in a way that may have left the write done (time-out, 5xx, lost
    /// connection).
    async fn call<T, F, Fut>(&self, what: &str, mut f: F) -> (Result<T, Failure>, bool)
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, ::kube::Error>>,
    {
        let mut backoff = self.retry.first_backoff;
        let mut uncertain = false;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let (why, hint) = match tokio::time::timeout(self.retry.attempt_timeout, f()).await {
                Ok(Ok(v)) => return (Ok(v), uncertain),
                Ok(Err(::kube::Error::Api(status))) if !retryable_status(&status) => {
                    return (Err(Failure::Status(status)), uncertain);
                }
                Ok(Err(::kube::Error::Api(status))) => {
                    let hint = status
                        .details
                        .as_ref()
                        .map(|d| d.retry_after_seconds)
                        .filter(|s| *s > 0)
                        .map(|s| Duration::from_secs(u64::from(s)));
                    (
                        format!("API server answered {} {}", status.code, status.reason),
                        hint,
                    )
                }
                Ok(Err(e)) if transient(&e) => (format!("API server unreachable: {e}"), None),
                Ok(Err(e)) => {
                    return (
                        Err(Failure::Fatal(Error::internal(format!(
                            "key store: {what}: {e}"
                        )))),
                        uncertain,
                    );
                }
                Err(_) => (
                    format!(
                        "no answer from the API server within {} ms",
                        self.retry.attempt_timeout.as_millis()
                    ),
                    None,
                ),
            };
            uncertain = true;
            if attempt >= self.retry.attempts {
                return (
                    Err(Failure::Fatal(Error::unavailable(format!(
                        "key store: {what}: {why} (gave up after {attempt} attempts)"
                    )))),
                    uncertain,
                );
            }
            let sleep = hint.unwrap_or(backoff).min(self.retry.max_backoff);
            warn!(
                operation = what,
                attempt,
                retry_in_ms = sleep.as_millis(),
                "key store call failed, retrying: {why}"
            );
            tokio::time::sleep(sleep).await;
            backoff = (backoff * 2).min(self.retry.max_backoff);
        }
    }

    /// Reads and parses the Secret; `None` on 404.
    async fn read(&self, volume: &VolumeId) -> Result<Option<Stored>> {
        let name = volume.record_name();
        let what = format!("get Secret {}/{name}", self.namespace);
        match self.call(&what, || self.api.get(&name)).await.0 {
            Ok(secret) => parse_secret(volume, &secret).map(Some),
            Err(Failure::Status(s)) if s.code == 404 => Ok(None),
            Err(Failure::Status(s)) => Err(status_error(&what, &s)),
            Err(Failure::Fatal(e)) => Err(e),
        }
    }
}

/// 429 and every 5xx are worth another attempt.
fn retryable_status(status: &Status) -> bool {
    status.code == 429 || status.code >= 500
}

/// Connection-level failures (refused, reset, TLS handshake cut short, hyper time-outs).
fn transient(e: &::kube::Error) -> bool {
    matches!(
        e,
        ::kube::Error::HyperError(_) | ::kube::Error::Service(_) | ::kube::Error::ReadEvents(_)
    )
}

/// The driver's error for an API status the caller did not expect.
fn status_error(what: &str, s: &Status) -> Error {
    let hint = match s.code {
        401 | 403 => ": check the RBAC of the driver's ServiceAccount (deploy/rbac-*.yaml)",
        _ => "",
    };
    Error::internal(format!(
        "key store: {what}: API server answered {} {}: {}{hint}",
        s.code, s.reason, s.message
    ))
}

/// A stored Secret back to an entry; anything that is not one of our records is an error.
fn parse_secret(volume: &VolumeId, secret: &Secret) -> Result<Stored> {
    let name = volume.record_name();
    if secret.type_.as_deref() != Some(SECRET_TYPE) {
        return Err(Error::precondition(format!(
            "Secret {name} has type {:?}, not {SECRET_TYPE:?}: it is not a record of this \
             driver; refusing to use or overwrite it",
            secret.type_.as_deref().unwrap_or("")
        )));
    }
    let field = |key: &str| {
        secret
            .data
            .as_ref()
            .and_then(|d| d.get(key))
            .map(|b| b.0.as_slice())
            .ok_or_else(|| Error::precondition(format!("Secret {name} has no data key {key:?}")))
    };
    let state = std::str::from_utf8(field(DATA_STATE)?)
        .map_err(|_| Error::precondition(format!("Secret {name}: {DATA_STATE} is not text")))?;
    let entry = KeyEntry::from_parts(volume, field(DATA_RECORD)?, VolumeState::parse(state)?)?;
    let revision = secret
        .metadata
        .resource_version
        .clone()
        .filter(|r| !r.is_empty())
        .ok_or_else(|| Error::internal(format!("Secret {name} came without resourceVersion")))?;
    Ok(Stored {
        entry,
        revision: Revision(revision),
    })
}

fn revision_of(name: &str, secret: &Secret) -> Result<Revision> {
    secret
        .metadata
        .resource_version
        .clone()
        .filter(|r| !r.is_empty())
        .map(Revision)
        .ok_or_else(|| Error::internal(format!("Secret {name} came without resourceVersion")))
}

#[async_trait]
impl KeyStore for KubeStore {
    async fn create(&self, volume: &VolumeId, entry: &KeyEntry) -> Result<Revision, StoreError> {
        let name = volume.record_name();
        let what = format!("create Secret {}/{name}", self.namespace);
        let secret = self.secret(volume, entry, None);
        let pp = Self::post_params();
        match self.call(&what, || self.api.create(&pp, &secret)).await.0 {
            Ok(created) => Ok(revision_of(&name, &created)?),
            Err(Failure::Status(s)) if s.code == 409 => match self.read(volume).await? {
                // Our own earlier attempt (its answer was lost) or an identical writer.
                Some(existing) if existing.entry == *entry => Ok(existing.revision),
                Some(existing) => Err(StoreError::Exists(Box::new(existing))),
                None => Err(StoreError::Conflict(format!(
                    "Secret {name} existed during create and is gone now"
                ))),
            },
            Err(Failure::Status(s)) => Err(status_error(&what, &s).into()),
            Err(Failure::Fatal(e)) => Err(e.into()),
        }
    }

    async fn get(&self, volume: &VolumeId) -> Result<Option<Stored>, StoreError> {
        Ok(self.read(volume).await?)
    }

    async fn update(
        &self,
        volume: &VolumeId,
        entry: &KeyEntry,
        expected: &Revision,
    ) -> Result<Revision, StoreError> {
        let name = volume.record_name();
        let what = format!("update Secret {}/{name}", self.namespace);
        let secret = self.secret(volume, entry, Some(expected));
        let pp = Self::post_params();
        let (res, uncertain) = self
            .call(&what, || self.api.replace(&name, &pp, &secret))
            .await;
        match res {
            Ok(updated) => Ok(revision_of(&name, &updated)?),
            Err(Failure::Status(s)) if s.code == 409 || s.code == 404 => {
                if uncertain && s.code == 409 {
                    // An earlier attempt may have been applied with its answer lost: if the
                    // Secret now holds exactly our entry, that attempt is the one that counted.
                    if let Some(cur) = self.read(volume).await?
                        && cur.entry == *entry
                    {
                        return Ok(cur.revision);
                    }
                }
                Err(StoreError::Conflict(if s.code == 404 {
                    format!("Secret {name} was deleted")
                } else {
                    format!(
                        "Secret {name} changed since revision {expected}: {}",
                        s.message
                    )
                }))
            }
            Err(Failure::Status(s)) => Err(status_error(&what, &s).into()),
            Err(Failure::Fatal(e)) => Err(e.into()),
        }
    }

    async fn delete(&self, volume: &VolumeId) -> Result<(), StoreError> {
        let name = volume.record_name();
        let what = format!("delete Secret {}/{name}", self.namespace);
        let dp = DeleteParams::default();
        match self.call(&what, || self.api.delete(&name, &dp)).await.0 {
            Ok(_) => Ok(()),
            Err(Failure::Status(s)) if s.code == 404 => Ok(()),
            Err(Failure::Status(s)) => Err(status_error(&what, &s).into()),
            Err(Failure::Fatal(e)) => Err(e.into()),
        }
    }

    async fn list(&self) -> Result<Vec<(VolumeId, Result<Stored>)>, StoreError> {
        let what = format!("list Secrets in {}", self.namespace);
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut lp = ListParams::default()
                .labels(&format!("{LABEL_MANAGED_BY}={MANAGED_BY}"))
                .limit(LIST_PAGE);
            if let Some(t) = &token {
                lp = lp.continue_token(t);
            }
            let page = match self.call(&what, || self.api.list(&lp)).await.0 {
                Ok(p) => p,
                Err(Failure::Status(s)) => return Err(status_error(&what, &s).into()),
                Err(Failure::Fatal(e)) => return Err(e.into()),
            };
            for secret in &page.items {
                let Some(id) = secret
                    .metadata
                    .name
                    .as_deref()
                    .and_then(|n| n.strip_prefix(RECORD_PREFIX))
                else {
                    continue;
                };
                let Ok(volume) = VolumeId::parse(id) else {
                    continue;
                };
                let entry = parse_secret(&volume, secret);
                out.push((volume, entry));
            }
            token = page.metadata.continue_.filter(|t| !t.is_empty());
            if token.is_none() {
                break;
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }
}

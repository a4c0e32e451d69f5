//! Where the wrapped-key record of every encrypted volume lives: the Secret
//! `onmetal-csi-luks-<volume-id>` in `kube-system` (the `kube` store), or one 0600 file of that
//! name in a directory (the `dir` store, for development, tests and single machines).
//!
//! The trait has the semantics of a Kubernetes Secret so that both stores behave alike:
//! `create` fails when the entry exists, `get` returns the entry with its revision (the
//! resourceVersion), `update` carries the revision as a precondition, `delete` of a missing entry
//! is success. Entries are small (a record is at most [`kms::MAX_RECORD_LEN`] bytes).

mod dir;
pub mod kube;

use std::fmt;

use async_trait::async_trait;
use kms::WrappedKey;
use serde::{Deserialize, Serialize};

pub use dir::DirStore;
pub use kube::KubeStore;

use crate::error::{Error, Kind, Result};
use crate::volume_id::VolumeId;

/// How far the first stage of a volume got. Stored beside the record so that a volume is never
/// formatted twice, and an interrupted first stage resumes where it stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VolumeState {
    /// The key is wrapped and stored; the device was blank when the entry was created and only
    /// this driver has written to it since (the LUKS2 format may have been interrupted).
    Pending,
    /// The device carries the LUKS2 header made with this record's key. From now on a device
    /// that reads blank is an error, never a reason to format.
    Formatted,
}

impl VolumeState {
    /// Lower-case name as stored.
    pub fn as_str(self) -> &'static str {
        match self {
            VolumeState::Pending => "pending",
            VolumeState::Formatted => "formatted",
        }
    }

    /// Parses the stored name.
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "pending" => Ok(VolumeState::Pending),
            "formatted" => Ok(VolumeState::Formatted),
            other => Err(Error::new(
                Kind::FailedPrecondition,
                format!("unknown volume state {other:?} in the key store"),
            )),
        }
    }
}

/// One volume's entry: its wrapped key and how far its first stage got.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyEntry {
    /// The wrapped DEK (`kms/README.md` format).
    pub record: WrappedKey,
    /// See [`VolumeState`].
    pub state: VolumeState,
}

/// An opaque version of a stored entry, used as the precondition of an update (a Secret's
/// resourceVersion).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Revision(pub String);

impl fmt::Display for Revision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A stored entry with its revision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stored {
    /// The entry.
    pub entry: KeyEntry,
    /// Its current revision.
    pub revision: Revision,
}

/// Why a store call failed, beyond the generic error kinds.
#[derive(Debug)]
pub enum StoreError {
    /// `create`: an entry exists already (it is returned so the caller can compare).
    Exists(Box<Stored>),
    /// `update`: the revision changed (someone else wrote), or the entry is gone.
    Conflict(String),
    /// Any other failure (store unreachable: `Unavailable`; unreadable entry; ...).
    Other(Error),
}

impl From<Error> for StoreError {
    fn from(e: Error) -> Self {
        StoreError::Other(e)
    }
}

impl From<StoreError> for Error {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Exists(s) => Error::new(
                Kind::Aborted,
                format!(
                    "the key store already holds an entry (revision {})",
                    s.revision
                ),
            ),
            StoreError::Conflict(m) => Error::new(Kind::Aborted, format!("key store: {m}")),
            StoreError::Other(e) => e,
        }
    }
}

/// The key store: one entry per encrypted volume, named `onmetal-csi-luks-<volume-id>`.
///
/// Only the node writes (create on first stage, update of the state, restore from the LUKS2
/// token); only the controller deletes (DeleteVolume); `list` is for operator commands.
#[async_trait]
pub trait KeyStore: Send + Sync + fmt::Debug {
    /// Creates the entry; [`StoreError::Exists`] with the stored entry if there is one. A store
    /// whose create may be retried after a lost answer (`kube`) returns success instead when the
    /// stored entry equals `entry`; a different entry is never overwritten.
    async fn create(&self, volume: &VolumeId, entry: &KeyEntry) -> Result<Revision, StoreError>;
    /// The entry, or `None` when there is none.
    async fn get(&self, volume: &VolumeId) -> Result<Option<Stored>, StoreError>;
    /// Replaces the entry if its revision is still `expected`; [`StoreError::Conflict`]
    /// otherwise (also when it was deleted meanwhile).
    async fn update(
        &self,
        volume: &VolumeId,
        entry: &KeyEntry,
        expected: &Revision,
    ) -> Result<Revision, StoreError>;
    /// Deletes the entry; a missing entry is success.
    async fn delete(&self, volume: &VolumeId) -> Result<(), StoreError>;
    /// Every entry, in volume order (operator commands only: the driver itself never lists).
    /// An entry that cannot be read or is not a valid record (edited, of another Secret type, a
    /// state this version does not know) is an `Err` in its place, so that one bad entry hides
    /// no other; the outer error is the store itself failing (unreachable, not listable).
    async fn list(&self) -> Result<Vec<(VolumeId, Result<Stored>)>, StoreError>;
}

/// The serialized form shared by the stores: `{"state":"formatted","record":{...}}`.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct EntryDoc {
    pub(crate) state: VolumeState,
    pub(crate) record: serde_json::Value,
}

impl KeyEntry {
    /// The stored JSON document.
    pub fn to_json(&self) -> String {
        let record: serde_json::Value =
            serde_json::from_str(&self.record.to_json()).unwrap_or(serde_json::Value::Null);
        let doc = EntryDoc {
            state: self.state,
            record,
        };
        serde_json::to_string(&doc).unwrap_or_default()
    }

    /// Parses a stored JSON document; the record inside must belong to `volume`.
    pub fn from_json(volume: &VolumeId, text: &[u8]) -> Result<Self> {
        let doc: EntryDoc = serde_json::from_slice(text).map_err(|e| {
            Error::new(
                Kind::FailedPrecondition,
                format!("the key store entry of {volume} is not valid: {e}"),
            )
        })?;
        Self::from_parts(volume, doc.record.to_string().as_bytes(), doc.state)
    }

    /// An entry from the record's JSON (`kms/README.md`) and the state; the record must belong
    /// to `volume`.
    pub fn from_parts(volume: &VolumeId, record: &[u8], state: VolumeState) -> Result<Self> {
        let record = WrappedKey::from_json(record)?;
        if record.volume_id().as_str() != volume.as_str() {
            return Err(Error::new(
                Kind::FailedPrecondition,
                format!(
                    "the key store entry of {volume} holds the record of volume {}",
                    record.volume_id()
                ),
            ));
        }
        Ok(KeyEntry { record, state })
    }
}

/// Opens the store a `--key-store` value names: `kube` (Secrets in `namespace`, written with
/// the annotation `driver`) or `dir:DIR`.
pub async fn open(
    spec: &str,
    namespace: &str,
    driver: &str,
) -> Result<std::sync::Arc<dyn KeyStore>> {
    if spec == "kube" {
        return Ok(std::sync::Arc::new(
            KubeStore::connect(namespace, driver).await?,
        ));
    }
    match open_dir(spec)? {
        Some(s) => Ok(std::sync::Arc::new(s)),
        None => Err(Error::invalid(format!(
            "--key-store {spec:?}: expected kube or dir:DIR"
        ))),
    }
}

/// Parses a `--key-store` value: `dir:DIR` (or `kube`, handled by the caller).
pub fn open_dir(spec: &str) -> Result<Option<DirStore>> {
    match spec.strip_prefix("dir:") {
        Some(dir) if !dir.is_empty() => Ok(Some(DirStore::open(dir)?)),
        Some(_) => Err(Error::invalid("--key-store dir: needs a directory")),
        None => Ok(None),
    }
}

#[cfg(test)]
pub(crate) mod tests;

//! Wrapping and unwrapping of per-volume data encryption keys (DEKs) with the user's KMS:
//! OpenBao/HashiCorp Vault Transit ([`transit`]) or any KMIP 1.2+ server ([`kmip`]).
//!
//! Envelope encryption: each volume gets a random [`Dek`]; the KMS wraps it with a key
//! encryption key that never leaves the KMS; the result, a [`WrappedKey`] record (format in
//! [`record`](WrappedKey) and `kms/README.md`), is what the csi layer stores in the Secret
//! `onmetal-csi-luks-<volume-id>`. Every failure carries an [`ErrorKind`] the csi layer maps to
//! one gRPC code.
//!
//! This crate never depends on `luks2`, `dm` or device-mapper, never logs or formats a DEK, a
//! token or a private key, and holds them in zeroizing types.
#![forbid(unsafe_code)]
#![cfg_attr(test, allow(clippy::unwrap_used))]

mod config;
mod error;
pub mod kmip;
mod record;
mod secret;
mod timestamp;
mod tls;
pub mod transit;

use std::time::{Duration, Instant};

pub use config::{
    Endpoint, HostPort, KmsConfig, PARAM_KMS_ENDPOINT, PARAM_KMS_KEY_ID, PARAM_KMS_NAMESPACE,
    PARAM_KMS_TYPE, Timeouts,
};
pub use error::{Error, ErrorKind, Result};
pub use record::{KmsType, MAX_RECORD_LEN, RECORD_VERSION, WrapMode, WrappedKey};
pub use secret::{Dek, SECRET_CA, SECRET_TLS_CERT, SECRET_TLS_KEY, SECRET_TOKEN, Token, VolumeId};
pub use tls::CertInfo;

/// A configured KMS client of either kind. Build one per StorageClass/credentials pair and
/// reuse it: connections are kept open between calls.
#[derive(Debug)]
pub enum Kms {
    /// OpenBao / Vault Transit.
    Transit(transit::TransitClient),
    /// KMIP over mutual TLS.
    Kmip(Box<kmip::KmipClient>),
}

impl Kms {
    /// A client for a validated configuration (no network I/O yet).
    pub fn new(config: &KmsConfig) -> Result<Self> {
        Ok(match config.kind() {
            KmsType::Transit => Self::Transit(transit::TransitClient::new(config)?),
            KmsType::Kmip => Self::Kmip(Box::new(kmip::KmipClient::new(config)?)),
        })
    }

    /// Wraps `dek` for `volume`.
    pub async fn wrap(&self, dek: &Dek, volume: &VolumeId) -> Result<WrappedKey> {
        match self {
            Self::Transit(c) => c.wrap(dek, volume).await,
            Self::Kmip(c) => c.wrap(dek, volume).await,
        }
    }

    /// Unwraps `key`, which must belong to `volume` and name this client's KMS type, endpoint,
    /// key id and namespace ([`KmsConfig::check_record`], checked before any request; else
    /// [`ErrorKind::Integrity`]).
    pub async fn unwrap(&self, key: &WrappedKey, volume: &VolumeId) -> Result<Dek> {
        match self {
            Self::Transit(c) => c.unwrap(key, volume).await,
            Self::Kmip(c) => c.unwrap(key, volume).await,
        }
    }

    /// Moves a wrapped key to the KEK's latest version without exposing the DEK (Transit only;
    /// KMIP has no such operation: [`ErrorKind::InvalidConfig`]). The record is checked as in
    /// [`Kms::unwrap`] first.
    pub async fn rewrap(&self, key: &WrappedKey) -> Result<WrappedKey> {
        match self {
            Self::Transit(c) => c.rewrap(key).await,
            Self::Kmip(c) => {
                c.check_record(key)?;
                Err(Error::new(
                    ErrorKind::InvalidConfig,
                    "rewrap is a Transit operation; KMIP servers have none",
                ))
            }
        }
    }

    /// Wraps and unwraps a random key; returns the round-trip time. One implementation for both
    /// interfaces: it only uses [`Kms::wrap`] and [`Kms::unwrap`].
    pub async fn check(&self) -> Result<Duration> {
        let start = Instant::now();
        let dek = Dek::generate(32)?;
        let vol = VolumeId::new("onmetal-csi-kms-check")?;
        let wrapped = self.wrap(&dek, &vol).await?;
        let back = self.unwrap(&wrapped, &vol).await?;
        if !back.ct_eq(&dek) {
            return Err(Error::integrity(
                "check: the unwrapped key differs from the wrapped one",
            ));
        }
        Ok(start.elapsed())
    }
}

/// The error of a wrap whose verifying unwrap failed.
pub(crate) fn verify_failed(e: &Error) -> Error {
    Error::new(
        e.kind(),
        format!(
            "checking the new wrapped key by unwrapping it failed (nothing to store): {}",
            e.message()
        ),
    )
}

/// Integrity unless the key unwrapped from a fresh record is `dek` (constant time).
pub(crate) fn check_same_key(unwrapped: &Dek, dek: &Dek) -> Result<()> {
    if unwrapped.ct_eq(dek) {
        Ok(())
    } else {
        Err(Error::integrity(
            "the KMS's answer to the wrap does not unwrap to the same key (a crossed or corrupted answer): nothing to store",
        ))
    }
}

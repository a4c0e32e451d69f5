//! Data keys: a new DEK wrapped by the KMS, and unwrapping a record, behind the
//! [`KeyWrapper`] trait ([`crate::driver::Driver::keys`]; [`KmsKeys`] is the real KMS, host
//! tests use a fake). A record is always checked against the volume's configuration before
//! any request: no credential ever goes to an endpoint taken from a record.

use std::time::Instant;

use async_trait::async_trait;
use kms::{Dek, Kms, KmsConfig, WrappedKey};

use super::DEK_LEN;
use crate::error::Result;
use crate::host::step::step;
use crate::volume_id::VolumeId;

/// Wrapping and unwrapping DEKs with the KMS that `config` names.
#[async_trait]
pub trait KeyWrapper: Send + Sync + std::fmt::Debug {
    /// Wraps `dek` for `volume` with the configured KEK.
    async fn wrap(&self, config: &KmsConfig, dek: &Dek, volume: &VolumeId) -> Result<WrappedKey>;
    /// Unwraps `record` for `volume` (the caller checked it against `config`).
    async fn unwrap(
        &self,
        config: &KmsConfig,
        record: &WrappedKey,
        volume: &VolumeId,
    ) -> Result<Dek>;
}

/// The real KMS (Transit or KMIP), with the request metrics and step timings.
#[derive(Debug, Default, Clone, Copy)]
pub struct KmsKeys;

#[async_trait]
impl KeyWrapper for KmsKeys {
    async fn wrap(&self, config: &KmsConfig, dek: &Dek, volume: &VolumeId) -> Result<WrappedKey> {
        let kms = client_for(config, None)?;
        let start = Instant::now();
        let res = kms.wrap(dek, &volume.kms()).await;
        crate::metrics::kms_request("wrap", start.elapsed(), res.as_ref().err());
        step("kms_wrap", start);
        Ok(res?)
    }

    async fn unwrap(
        &self,
        config: &KmsConfig,
        record: &WrappedKey,
        volume: &VolumeId,
    ) -> Result<Dek> {
        let kms = client_for(config, Some(record))?;
        let start = Instant::now();
        let res = kms.unwrap(record, &volume.kms()).await;
        crate::metrics::kms_request("unwrap", start.elapsed(), res.as_ref().err());
        step("kms_unwrap", start);
        Ok(res?)
    }
}

/// A KMS client for the volume, with the record checked against the volume's configuration
/// before any request.
pub fn client_for(config: &KmsConfig, record: Option<&WrappedKey>) -> Result<Kms> {
    if let Some(r) = record {
        config.check_record(r)?;
    }
    Ok(Kms::new(config)?)
}

/// Unwraps `record` for `volume` with `keys`, after checking it against `config`.
pub async fn unwrap_with(
    keys: &dyn KeyWrapper,
    config: &KmsConfig,
    record: &WrappedKey,
    volume: &VolumeId,
) -> Result<Dek> {
    config.check_record(record)?;
    keys.unwrap(config, record, volume).await
}

/// Generates a DEK and wraps it for `volume` with `keys`.
pub async fn new_key_with(
    keys: &dyn KeyWrapper,
    config: &KmsConfig,
    volume: &VolumeId,
) -> Result<(Dek, WrappedKey)> {
    let dek = Dek::generate(DEK_LEN)?;
    let record = keys.wrap(config, &dek, volume).await?;
    Ok((dek, record))
}

/// Unwraps `record` for `volume` with the real KMS (checked against `config` first).
pub async fn unwrap(config: &KmsConfig, record: &WrappedKey, volume: &VolumeId) -> Result<Dek> {
    unwrap_with(&KmsKeys, config, record, volume).await
}

/// Generates a DEK and wraps it for `volume` with the real KMS.
pub async fn new_key(config: &KmsConfig, volume: &VolumeId) -> Result<(Dek, WrappedKey)> {
    new_key_with(&KmsKeys, config, volume).await
}

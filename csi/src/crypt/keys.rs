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
    /// Unwraps `record` for `volume` with `config`, which names the record's key (the caller
    /// made it with `KmsConfig::for_record` from the volume's configuration).
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
    match record {
        Some(r) => Ok(Kms::new(&config.for_record(r)?)?),
        None => Ok(Kms::new(config)?),
    }
}

/// Unwraps `record` for `volume` with `keys`, after checking it against `config`.
pub async fn unwrap_with(
    keys: &dyn KeyWrapper,
    config: &KmsConfig,
    record: &WrappedKey,
    volume: &VolumeId,
) -> Result<Dek> {
    // A record rewrapped to another key (`volume rewrap --to-key-id`) names that key while the
    // volume context still names the old one: the record's key is used, but only at the
    // context's KMS type, endpoint and namespace (`KmsConfig::for_record`).
    let config = config.for_record(record)?;
    keys.unwrap(&config, record, volume).await
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

#[cfg(test)]
mod tests {
    //! What a record may differ in from the volume's configuration (README, "KEK rotation"):
    //! the key id, within the same KMS type, endpoint and namespace; the unwrap then asks
    //! for the record's key.

    use std::collections::HashMap;
    use std::sync::Mutex;

    use super::*;
    use crate::error::Kind;

    /// Remembers the key id of each unwrap's configuration.
    #[derive(Debug, Default)]
    struct Recorder(Mutex<Vec<String>>);

    #[async_trait]
    impl KeyWrapper for Recorder {
        async fn wrap(&self, _: &KmsConfig, _: &Dek, _: &VolumeId) -> Result<WrappedKey> {
            unreachable!("no wraps here")
        }
        async fn unwrap(&self, config: &KmsConfig, _: &WrappedKey, _: &VolumeId) -> Result<Dek> {
            self.0.lock().unwrap().push(config.key_id().to_owned());
            Ok(Dek::generate(DEK_LEN)?)
        }
    }

    /// The volume context's configuration: key `pvc-kek` at `https://10.0.0.1:8200`.
    fn context(namespace: Option<&str>) -> KmsConfig {
        let secrets = HashMap::from([("token".to_owned(), "s.t".to_owned())]);
        KmsConfig::new(
            kms::KmsType::Transit,
            "https://10.0.0.1:8200",
            "pvc-kek",
            namespace,
            &secrets,
        )
        .unwrap()
    }

    fn record(kms_type: &str, endpoint: &str, key: &str, namespace: Option<&str>) -> WrappedKey {
        let ns = namespace
            .map(|n| format!(r#""namespace":"{n}","#))
            .unwrap_or_default();
        let json = format!(
            r#"{{"version":1,"kmsType":"{kms_type}","endpoint":"{endpoint}","keyId":"{key}",{ns}"keyVersion":1,"mode":"transit-framed","ciphertext":"vault:v1:AAAA","volumeId":"pvc-1","createdAt":"2026-12-07T00:00:00Z"}}"#
        );
        WrappedKey::from_json(json.as_bytes()).unwrap()
    }

    #[tokio::test]
    async fn a_record_under_another_key_at_the_same_kms_unwraps_with_its_own_key() {
        let id = VolumeId::parse("pvc-1").unwrap();
        let keys = Recorder::default();
        let rotated = record("transit", "https://10.0.0.1:8200", "pvc-kek-2", None);
        unwrap_with(&keys, &context(None), &rotated, &id)
            .await
            .unwrap();
        let ns = record(
            "transit",
            "https://10.0.0.1:8200",
            "pvc-kek-2",
            Some("team-a"),
        );
        unwrap_with(&keys, &context(Some("team-a")), &ns, &id)
            .await
            .unwrap();
        assert_eq!(*keys.0.lock().unwrap(), ["pvc-kek-2", "pvc-kek-2"]);
    }

    #[tokio::test]
    async fn a_record_of_another_type_endpoint_or_namespace_is_refused_before_any_request() {
        let id = VolumeId::parse("pvc-1").unwrap();
        let keys = Recorder::default();
        let cases = [
            (
                record("transit", "https://10.0.0.2:8200", "pvc-kek", None),
                "endpoint",
                None,
            ),
            (
                record("transit", "http://10.0.0.1:8200", "pvc-kek-2", None),
                "endpoint",
                None,
            ),
            (
                record(
                    "transit",
                    "https://10.0.0.1:8200",
                    "pvc-kek-2",
                    Some("team-b"),
                ),
                "namespace",
                None,
            ),
            (
                record("transit", "https://10.0.0.1:8200", "pvc-kek-2", None),
                "namespace",
                Some("team-a"),
            ),
            // A Transit key name ends up in the URL path: never one that leaves transit/.
            (
                record("transit", "https://10.0.0.1:8200", "../../sys/raw", None),
                "keyId",
                None,
            ),
        ];
        for (rec, field, ns) in cases {
            let e = unwrap_with(&keys, &context(ns), &rec, &id)
                .await
                .unwrap_err();
            assert_eq!(e.kind(), Kind::FailedPrecondition, "{field}: {e}");
            assert!(e.message().contains(field), "{field}: {e}");
        }
        assert!(keys.0.lock().unwrap().is_empty(), "no request was made");
    }
}

//! StorageClass parameters and the volume context.
//!
//! CreateVolume validates the encryption parameters (`encryptionEnabled`,
//! `encryptionKMSType`, `encryptionKMSEndpoint`, `encryptionKMSKeyID`, optional
//! `encryptionKMSNamespace`) and copies them into the volume context, which fixes the KMS
//! endpoint and key for the volume's whole life: NodeStage takes them from there, never from the
//! wrapped-key record. Every other parameter (`type`, `volume_pool`, ...) goes to the backend;
//! the CO's own `csi.storage.k8s.io/*` keys are dropped.

use std::collections::{BTreeMap, HashMap};

use kms::{KmsType, PARAM_KMS_ENDPOINT, PARAM_KMS_KEY_ID, PARAM_KMS_NAMESPACE, PARAM_KMS_TYPE};

use crate::error::{Error, Result};

/// `"true"` encrypts the volumes of the StorageClass; `"false"` (or absent) does not.
pub const PARAM_ENCRYPTION_ENABLED: &str = "encryptionEnabled";
/// Prefix of the keys the CO adds itself (secrets references, `--extra-create-metadata`).
pub const CO_PREFIX: &str = "csi.storage.k8s.io/";
/// Encrypted volumes are at least this large.
pub const MIN_ENCRYPTED_SIZE: u64 = 1 << 30;

const ENCRYPTION_KEYS: [&str; 5] = [
    PARAM_ENCRYPTION_ENABLED,
    PARAM_KMS_TYPE,
    PARAM_KMS_ENDPOINT,
    PARAM_KMS_KEY_ID,
    PARAM_KMS_NAMESPACE,
];

/// The validated encryption settings of a volume.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Encryption {
    /// `transit` or `kmip`.
    pub kms_type: KmsType,
    /// The endpoint as given (validated: an IP or external name, never a cluster-internal DNS
    /// name).
    pub endpoint: String,
    /// Transit key name or KMIP Unique Identifier.
    pub key_id: String,
    /// OpenBao/Vault namespace (Transit).
    pub namespace: Option<String>,
}

impl Encryption {
    /// The KMS parameters as `kms::KmsConfig::from_parameters` takes them.
    pub fn kms_parameters(&self) -> HashMap<String, String> {
        let mut m = HashMap::from([
            (PARAM_KMS_TYPE.to_owned(), self.kms_type.as_str().to_owned()),
            (PARAM_KMS_ENDPOINT.to_owned(), self.endpoint.clone()),
            (PARAM_KMS_KEY_ID.to_owned(), self.key_id.clone()),
        ]);
        if let Some(ns) = &self.namespace {
            m.insert(PARAM_KMS_NAMESPACE.to_owned(), ns.clone());
        }
        m
    }

    /// The KMS configuration for this volume with the given credentials.
    pub fn kms_config(&self, secrets: &HashMap<String, String>) -> Result<kms::KmsConfig> {
        Ok(kms::KmsConfig::from_parameters(
            &self.kms_parameters(),
            secrets,
        )?)
    }
}

/// A volume's settings, as parsed from StorageClass parameters or a volume context.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VolumeParams {
    /// `Some` for encrypted volumes.
    pub encryption: Option<Encryption>,
    /// Everything else, for the backend.
    pub provider: BTreeMap<String, String>,
}

impl VolumeParams {
    /// Parses and validates; errors name the parameter (INVALID_ARGUMENT).
    pub fn parse<'a, I>(params: I) -> Result<Self>
    where
        I: IntoIterator<Item = (&'a String, &'a String)>,
    {
        let mut enc: BTreeMap<&str, &str> = BTreeMap::new();
        let mut provider = BTreeMap::new();
        for (k, v) in params {
            if let Some(known) = ENCRYPTION_KEYS.iter().find(|e| **e == k.as_str()) {
                enc.insert(known, v.as_str());
            } else if !k.starts_with(CO_PREFIX) {
                provider.insert(k.clone(), v.clone());
            }
        }
        let enabled = match enc.get(PARAM_ENCRYPTION_ENABLED).copied() {
            None | Some("false") => false,
            Some("true") => true,
            Some(other) => {
                return Err(Error::invalid(format!(
                    "parameter {PARAM_ENCRYPTION_ENABLED} must be \"true\" or \"false\", got \
                     {other:?}"
                )));
            }
        };
        if !enabled {
            return Ok(VolumeParams {
                encryption: None,
                provider,
            });
        }
        let required = |k: &str| -> Result<&str> {
            enc.get(k)
                .map(|v| v.trim())
                .filter(|v| !v.is_empty())
                .ok_or_else(|| {
                    Error::invalid(format!(
                        "parameter {k} is required when {PARAM_ENCRYPTION_ENABLED} is \"true\""
                    ))
                })
        };
        let kms_type: KmsType = required(PARAM_KMS_TYPE)?.parse().map_err(|e: kms::Error| {
            Error::invalid(format!("parameter {PARAM_KMS_TYPE}: {}", e.message()))
        })?;
        let endpoint = required(PARAM_KMS_ENDPOINT)?;
        kms::Endpoint::parse(kms_type, endpoint).map_err(|e| {
            Error::invalid(format!("parameter {PARAM_KMS_ENDPOINT}: {}", e.message()))
        })?;
        let key_id = required(PARAM_KMS_KEY_ID)?;
        let namespace = enc
            .get(PARAM_KMS_NAMESPACE)
            .map(|v| v.trim())
            .filter(|v| !v.is_empty());
        if namespace.is_some() && kms_type == KmsType::Kmip {
            return Err(Error::invalid(format!(
                "parameter {PARAM_KMS_NAMESPACE} applies to transit only"
            )));
        }
        Ok(VolumeParams {
            encryption: Some(Encryption {
                kms_type,
                endpoint: endpoint.to_owned(),
                key_id: key_id.to_owned(),
                namespace: namespace.map(str::to_owned),
            }),
            provider,
        })
    }

    /// The volume context returned by CreateVolume: the encryption settings, exactly as the
    /// parameters spell them.
    pub fn volume_context(&self) -> HashMap<String, String> {
        let mut ctx = HashMap::new();
        match &self.encryption {
            Some(e) => {
                ctx.insert(PARAM_ENCRYPTION_ENABLED.to_owned(), "true".to_owned());
                ctx.extend(e.kms_parameters());
            }
            None => {
                ctx.insert(PARAM_ENCRYPTION_ENABLED.to_owned(), "false".to_owned());
            }
        }
        ctx
    }

    /// Everything the backend stores to compare a repeated CreateVolume: provider and
    /// encryption parameters.
    pub fn stored(&self) -> BTreeMap<String, String> {
        let mut m = self.provider.clone();
        m.extend(self.volume_context());
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(kv: &[(&str, &str)]) -> HashMap<String, String> {
        kv.iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn err(kv: &[(&str, &str)]) -> String {
        let e = VolumeParams::parse(&p(kv)).unwrap_err();
        assert_eq!(e.kind(), crate::Kind::InvalidArgument);
        e.message().to_owned()
    }

    const OK: [(&str, &str); 5] = [
        ("type", "fast"),
        ("encryptionEnabled", "true"),
        ("encryptionKMSType", "transit"),
        ("encryptionKMSEndpoint", "http://10.0.0.5:8200"),
        ("encryptionKMSKeyID", "pvc-kek"),
    ];

    #[test]
    fn the_user_guide_storage_class_parses() {
        let mut kv = OK.to_vec();
        kv.push(("csi.storage.k8s.io/node-stage-secret-name", "kms-token"));
        kv.push(("csi.storage.k8s.io/pvc/name", "data"));
        let v = VolumeParams::parse(&p(&kv)).unwrap();
        let e = v.encryption.clone().unwrap();
        assert_eq!(e.kms_type, KmsType::Transit);
        assert_eq!(e.endpoint, "http://10.0.0.5:8200");
        assert_eq!(v.provider, BTreeMap::from([("type".into(), "fast".into())]));
        let ctx = v.volume_context();
        assert_eq!(ctx["encryptionEnabled"], "true");
        assert_eq!(ctx["encryptionKMSEndpoint"], "http://10.0.0.5:8200");
        assert_eq!(VolumeParams::parse(&ctx).unwrap().encryption, Some(e));

        let kmip = p(&[
            ("encryptionEnabled", "true"),
            ("encryptionKMSType", "kmip"),
            ("encryptionKMSEndpoint", "10.0.0.6:5696"),
            ("encryptionKMSKeyID", "42"),
        ]);
        assert!(VolumeParams::parse(&kmip).unwrap().encryption.is_some());
    }

    #[test]
    fn unencrypted_when_disabled_or_absent() {
        assert!(
            VolumeParams::parse(&p(&[("type", "fast")]))
                .unwrap()
                .encryption
                .is_none()
        );
        let off = p(&[
            ("encryptionEnabled", "false"),
            ("encryptionKMSType", "bogus"),
        ]);
        assert!(VolumeParams::parse(&off).unwrap().encryption.is_none());
    }

    #[test]
    fn errors_name_the_parameter() {
        let with = |k: &'static str, v: &'static str| {
            let mut kv = OK.to_vec();
            kv.retain(|(key, _)| *key != k);
            if !v.is_empty() {
                kv.push((k, v));
            }
            err(&kv)
        };
        assert!(with("encryptionEnabled", "yes").contains("encryptionEnabled"));
        assert!(with("encryptionEnabled", "True").contains("encryptionEnabled"));
        assert!(with("encryptionKMSType", "aws").contains("encryptionKMSType"));
        assert!(with("encryptionKMSKeyID", "").contains("encryptionKMSKeyID"));
        assert!(with("encryptionKMSEndpoint", "").contains("encryptionKMSEndpoint"));
        let dns = with(
            "encryptionKMSEndpoint",
            "http://openbao.openbao.svc.cluster.local:8200",
        );
        assert!(dns.contains("encryptionKMSEndpoint"), "{dns}");
    }
}

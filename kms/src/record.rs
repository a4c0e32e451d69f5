//! The wrapped-key record: what the csi layer stores in the Secret `onmetal-csi-luks-<volume-id>`.
//!
//! A versioned, self-describing JSON object (field names camelCase, unknown fields rejected):
//!
//! | field         | type    | meaning |
//! |---------------|---------|---------|
//! | `version`     | number  | record format version, currently `1` |
//! | `kmsType`     | string  | `transit` or `kmip` |
//! | `endpoint`    | string  | the endpoint the key was wrapped at (`https://10.0.0.5:8200`, `10.0.0.6:5696`); informational: it must equal the configured one ([`crate::KmsConfig::check_record`]), it never chooses where to connect |
//! | `keyId`       | string  | Transit key name or KMIP Unique Identifier of the KEK |
//! | `namespace`   | string? | Transit only: OpenBao/Vault namespace (absent when none) |
//! | `keyVersion`  | number? | Transit KEK version that wrapped the key (absent for KMIP) |
//! | `mode`        | string  | how the DEK is wrapped and bound to the volume, see [`WrapMode`] |
//! | `kmipVersion` | string? | KMIP protocol version used, e.g. `1.4` (KMIP only) |
//! | `iv`          | string? | base64 IV / nonce (KMIP only) |
//! | `tag`         | string? | base64 GCM authentication tag (KMIP AES-GCM only) |
//! | `ciphertext`  | string  | Transit: `vault:v<N>:…` exactly as the server returned it; KMIP: base64 |
//! | `volumeId`    | string  | the CSI volume ID the DEK belongs to |
//! | `createdAt`   | string  | RFC 3339 UTC time of wrapping (updated by a rewrap) |
//!
//! Example: `{"version":1,"kmsType":"transit","endpoint":"http://10.0.0.5:8200",
//! "keyId":"pvc-kek","keyVersion":2,"mode":"transit-framed","ciphertext":"vault:v2:…",
//! "volumeId":"pvc-1234","createdAt":"2026-11-29T04:00:00Z"}`

use std::fmt;
use std::str::FromStr;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::secret::VolumeId;

/// The KMS interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KmsType {
    /// OpenBao / HashiCorp Vault Transit engine over HTTP(S).
    Transit,
    /// OASIS KMIP (1.2 or later) over mutual TLS.
    Kmip,
}

impl KmsType {
    /// The parameter spelling: `transit` or `kmip`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Transit => "transit",
            Self::Kmip => "kmip",
        }
    }
}

impl fmt::Display for KmsType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for KmsType {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.trim() {
            "transit" => Ok(Self::Transit),
            "kmip" => Ok(Self::Kmip),
            other => Err(Error::config(format!(
                "KMS type {other:?} is not supported: use \"transit\" or \"kmip\""
            ))),
        }
    }
}

/// The current record format version.
pub const RECORD_VERSION: u32 = 1;
/// Upper bound on a serialized record we accept (bounds untrusted input before parsing).
pub const MAX_RECORD_LEN: usize = 16 * 1024;

/// How a DEK is wrapped and bound to its volume.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum WrapMode {
    /// Transit encrypt of `0x01 ‖ len(volume id) ‖ volume id ‖ DEK`; the unwrap side checks the
    /// volume id. Can be rewrapped by the server (OpenBao's rewrap passes no associated data, so
    /// this is the default).
    TransitFramed,
    /// Transit encrypt of the DEK with `associated_data` = volume id: the server itself refuses a
    /// mismatch. OpenBao cannot rewrap such ciphertexts.
    TransitAssociatedData,
    /// KMIP 1.4 Encrypt, AES-GCM, 12-byte IV, 16-byte tag, additional data = volume id.
    KmipAesGcm,
    /// KMIP 1.2+ Encrypt, AES-CBC with PKCS#5 padding and a random 16-byte IV, of the framed DEK
    /// (as in [`WrapMode::TransitFramed`]).
    KmipAesCbcPkcs5,
}

impl WrapMode {
    fn kms_type(self) -> KmsType {
        match self {
            Self::TransitFramed | Self::TransitAssociatedData => KmsType::Transit,
            Self::KmipAesGcm | Self::KmipAesCbcPkcs5 => KmsType::Kmip,
        }
    }
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Raw {
    version: u32,
    kms_type: KmsType,
    endpoint: String,
    key_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    key_version: Option<u64>,
    mode: WrapMode,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    kmip_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    iv: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    tag: Option<String>,
    ciphertext: String,
    volume_id: String,
    created_at: String,
}

/// A wrapped DEK with everything needed to unwrap it. Construct it by wrapping, or parse it
/// with [`WrappedKey::from_json`]; it is always valid.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WrappedKey {
    pub(crate) kms_type: KmsType,
    pub(crate) endpoint: String,
    pub(crate) key_id: String,
    pub(crate) namespace: Option<String>,
    pub(crate) key_version: Option<u64>,
    pub(crate) mode: WrapMode,
    pub(crate) kmip_version: Option<(i32, i32)>,
    pub(crate) iv: Option<Vec<u8>>,
    pub(crate) tag: Option<Vec<u8>>,
    pub(crate) ciphertext: String,
    pub(crate) volume_id: VolumeId,
    pub(crate) created_at: String,
}

impl WrappedKey {
    /// Serializes to compact JSON.
    pub fn to_json(&self) -> String {
        let raw = Raw {
            version: RECORD_VERSION,
            kms_type: self.kms_type,
            endpoint: self.endpoint.clone(),
            key_id: self.key_id.clone(),
            namespace: self.namespace.clone(),
            key_version: self.key_version,
            mode: self.mode,
            kmip_version: self.kmip_version.map(|(a, b)| format!("{a}.{b}")),
            iv: self.iv.as_ref().map(|v| B64.encode(v)),
            tag: self.tag.as_ref().map(|v| B64.encode(v)),
            ciphertext: self.ciphertext.clone(),
            volume_id: self.volume_id.as_str().to_owned(),
            created_at: self.created_at.clone(),
        };
        // Serializing plain strings and numbers cannot fail.
        serde_json::to_string(&raw).unwrap_or_default()
    }

    /// Parses and validates a record. Errors are [`crate::ErrorKind::InvalidConfig`] (a damaged
    /// Secret is a configuration problem: no KMS call can fix it).
    pub fn from_json(text: &[u8]) -> Result<Self> {
        if text.len() > MAX_RECORD_LEN {
            return Err(Error::config(format!(
                "wrapped-key record is {} bytes, more than {MAX_RECORD_LEN}",
                text.len()
            )));
        }
        let raw: Raw = serde_json::from_slice(text)
            .map_err(|e| Error::config(format!("wrapped-key record does not parse: {e}")))?;
        let bad = |why: &str| Error::config(format!("wrapped-key record: {why}"));
        if raw.version != RECORD_VERSION {
            return Err(bad(&format!(
                "format version {} is not supported (this driver reads version {RECORD_VERSION})",
                raw.version
            )));
        }
        if raw.mode.kms_type() != raw.kms_type {
            return Err(bad("mode does not match kmsType"));
        }
        let volume_id = VolumeId::new(raw.volume_id).map_err(|e| bad(e.message()))?;
        let b64 = |name: &str, v: Option<String>| -> Result<Option<Vec<u8>>> {
            v.map(|s| {
                B64.decode(s)
                    .map_err(|_| bad(&format!("{name} is not base64")))
            })
            .transpose()
        };
        let iv = b64("iv", raw.iv)?;
        let tag = b64("tag", raw.tag)?;
        let kmip_version = raw
            .kmip_version
            .map(|v| {
                let (a, b) = v
                    .split_once('.')
                    .ok_or_else(|| bad("kmipVersion is not MAJOR.MINOR"))?;
                Ok::<_, Error>((
                    a.parse()
                        .map_err(|_| bad("kmipVersion is not MAJOR.MINOR"))?,
                    b.parse()
                        .map_err(|_| bad("kmipVersion is not MAJOR.MINOR"))?,
                ))
            })
            .transpose()?;
        match raw.mode {
            WrapMode::TransitFramed | WrapMode::TransitAssociatedData => {
                let v = transit_ciphertext_version(&raw.ciphertext)
                    .ok_or_else(|| bad("transit ciphertext is not vault:v<N>:<base64>"))?;
                if raw.key_version != Some(v) {
                    return Err(bad(
                        "keyVersion does not match the ciphertext's version prefix",
                    ));
                }
                if raw.namespace.as_deref() == Some("") {
                    return Err(bad("namespace must not be empty when present"));
                }
                if iv.is_some() || tag.is_some() || kmip_version.is_some() {
                    return Err(bad("iv, tag and kmipVersion are for kmip only"));
                }
            }
            WrapMode::KmipAesGcm | WrapMode::KmipAesCbcPkcs5 => {
                let gcm = raw.mode == WrapMode::KmipAesGcm;
                if B64.decode(&raw.ciphertext).map_or(true, |c| c.is_empty()) {
                    return Err(bad("ciphertext is not base64"));
                }
                let iv_len = if gcm { 12 } else { 16 };
                if iv.as_ref().map(Vec::len) != Some(iv_len) {
                    return Err(bad(&format!(
                        "iv must be {iv_len} bytes for {:?}",
                        raw.mode
                    )));
                }
                match (&tag, gcm) {
                    (Some(t), true) if t.len() == 16 => {}
                    (None, false) => {}
                    _ => {
                        return Err(bad(
                            "tag must be 16 bytes for AES-GCM and absent for AES-CBC",
                        ));
                    }
                }
                if kmip_version.is_none() {
                    return Err(bad("kmipVersion is missing"));
                }
                if raw.key_version.is_some() || raw.namespace.is_some() {
                    return Err(bad("keyVersion and namespace are for transit only"));
                }
            }
        }
        if raw.key_id.is_empty() || raw.endpoint.is_empty() {
            return Err(bad("keyId and endpoint must not be empty"));
        }
        Ok(Self {
            kms_type: raw.kms_type,
            endpoint: raw.endpoint,
            key_id: raw.key_id,
            namespace: raw.namespace,
            key_version: raw.key_version,
            mode: raw.mode,
            kmip_version,
            iv,
            tag,
            ciphertext: raw.ciphertext,
            volume_id,
            created_at: raw.created_at,
        })
    }

    /// The KMS interface that wrapped the key.
    pub fn kms_type(&self) -> KmsType {
        self.kms_type
    }
    /// The endpoint the key was wrapped at.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }
    /// Transit key name or KMIP Unique Identifier.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }
    /// The OpenBao/Vault namespace the Transit key lives in, if any.
    pub fn namespace(&self) -> Option<&str> {
        self.namespace.as_deref()
    }
    /// Transit key version (None for KMIP).
    pub fn key_version(&self) -> Option<u64> {
        self.key_version
    }
    /// How the key is wrapped.
    pub fn mode(&self) -> WrapMode {
        self.mode
    }
    /// The volume the key belongs to.
    pub fn volume_id(&self) -> &VolumeId {
        &self.volume_id
    }
    /// When it was wrapped (RFC 3339).
    pub fn created_at(&self) -> &str {
        &self.created_at
    }
}

/// `vault:v<N>:<base64>` → N.
pub(crate) fn transit_ciphertext_version(c: &str) -> Option<u64> {
    let rest = c.strip_prefix("vault:v")?;
    let (n, body) = rest.split_once(':')?;
    if body.is_empty()
        || !body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+/=".contains(&b))
    {
        return None;
    }
    let n: u64 = n.parse().ok()?;
    (n > 0).then_some(n)
}

pub(crate) fn now_rfc3339() -> String {
    crate::timestamp::rfc3339(time::OffsetDateTime::now_utc())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn transit() -> WrappedKey {
        WrappedKey {
            kms_type: KmsType::Transit,
            endpoint: "http://10.0.0.1:8200".into(),
            key_id: "pvc-kek".into(),
            namespace: None,
            key_version: Some(2),
            mode: WrapMode::TransitFramed,
            kmip_version: None,
            iv: None,
            tag: None,
            ciphertext: "vault:v2:AAAA".into(),
            volume_id: VolumeId::new("vol-1").unwrap(),
            created_at: "2026-11-29T04:00:00Z".into(),
        }
    }

    fn kmip() -> WrappedKey {
        WrappedKey {
            kms_type: KmsType::Kmip,
            endpoint: "10.0.0.1:5696".into(),
            key_id: "7".into(),
            namespace: None,
            key_version: None,
            mode: WrapMode::KmipAesGcm,
            kmip_version: Some((1, 4)),
            iv: Some(vec![1; 12]),
            tag: Some(vec![2; 16]),
            ciphertext: B64.encode([3u8; 64]),
            volume_id: VolumeId::new("vol-1").unwrap(),
            created_at: "2026-11-29T04:00:00Z".into(),
        }
    }

    #[test]
    fn round_trip() {
        let mut ns = transit();
        ns.namespace = Some("team-a".into());
        assert!(ns.to_json().contains("\"namespace\":\"team-a\""));
        for r in [transit(), kmip(), ns] {
            let json = r.to_json();
            assert_eq!(WrappedKey::from_json(json.as_bytes()).unwrap(), r);
        }
        let json = transit().to_json();
        assert_eq!(
            json,
            r#"{"version":1,"kmsType":"transit","endpoint":"http://10.0.0.1:8200","keyId":"pvc-kek","keyVersion":2,"mode":"transit-framed","ciphertext":"vault:v2:AAAA","volumeId":"vol-1","createdAt":"2026-11-29T04:00:00Z"}"#
        );
    }

    #[test]
    fn rejects_inconsistent_records() {
        let edits: [(&str, &str, &str); 8] = [
            ("\"version\":1", "\"version\":2", "format version 2"),
            ("\"keyVersion\":2", "\"keyVersion\":3", "keyVersion"),
            (
                "\"mode\":\"transit-framed\"",
                "\"mode\":\"kmip-aes-gcm\"",
                "mode does not match",
            ),
            ("vault:v2:AAAA", "vault:AAAA", "vault:v<N>"),
            ("\"volumeId\":\"vol-1\"", "\"volumeId\":\"\"", "volume id"),
            (
                "\"createdAt\"",
                "\"extra\":1,\"createdAt\"",
                "unknown field",
            ),
            (
                "\"kmsType\":\"transit\"",
                "\"kmsType\":\"aws\"",
                "unknown variant",
            ),
            ("{", "[", "parse"),
        ];
        let json = transit().to_json();
        for (from, to, why) in edits {
            let bad = json.replacen(from, to, 1);
            assert_ne!(bad, json);
            let err = WrappedKey::from_json(bad.as_bytes()).unwrap_err();
            assert_eq!(err.kind(), crate::ErrorKind::InvalidConfig);
            assert!(err.message().contains(why), "{why}: {}", err.message());
        }
        let mut k = kmip();
        k.tag = None;
        assert!(WrappedKey::from_json(k.to_json().as_bytes()).is_err());
        let mut k = kmip();
        k.iv = Some(vec![0; 16]);
        assert!(WrappedKey::from_json(k.to_json().as_bytes()).is_err());
        assert!(WrappedKey::from_json(&vec![b' '; MAX_RECORD_LEN + 1]).is_err());
        for cut in 0..json.len() {
            assert!(WrappedKey::from_json(&json.as_bytes()[..cut]).is_err());
        }
    }

    #[test]
    fn transit_versions() {
        assert_eq!(transit_ciphertext_version("vault:v12:abc="), Some(12));
        assert_eq!(transit_ciphertext_version("vault:v0:abc="), None);
        assert_eq!(transit_ciphertext_version("vault:v1:"), None);
        assert_eq!(transit_ciphertext_version("vault:v1:a b"), None);
    }
}

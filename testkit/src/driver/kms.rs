//! [`FakeKms`]: wrap and unwrap without a server. A wrap stores the DEK under a fresh random
//! ciphertext and returns a Transit record naming the configured endpoint, key and namespace;
//! an unwrap finds it again (only for the volume it was wrapped for). Outages and refusals are
//! switched on and off.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use async_trait::async_trait;
use base64::Engine;
use csi::Result;
use csi::crypt::keys::KeyWrapper;
use csi::volume_id::VolumeId;
use kms::{Dek, ErrorKind, KmsConfig, KmsType, WrappedKey};
use zeroize::Zeroizing;

/// A wrapped DEK: the volume it was wrapped for and its bytes.
type Wrapped = (String, Zeroizing<Vec<u8>>);

/// An in-memory KMS (Transit records).
#[derive(Debug, Default)]
pub struct FakeKms {
    keys: Mutex<HashMap<String, Wrapped>>,
    deny: AtomicBool,
    down: AtomicBool,
    wraps: AtomicUsize,
    unwraps: AtomicUsize,
    unwrap_keys: Mutex<Vec<String>>,
}

impl FakeKms {
    /// A KMS that answers.
    pub fn new() -> Self {
        Self::default()
    }

    /// From now on, every request is refused (PERMISSION_DENIED: an expired token).
    pub fn deny(&self, on: bool) {
        self.deny.store(on, Ordering::SeqCst);
    }

    /// From now on, every request fails as unreachable (UNAVAILABLE).
    pub fn down(&self, on: bool) {
        self.down.store(on, Ordering::SeqCst);
    }

    /// Wraps so far.
    pub fn wraps(&self) -> usize {
        self.wraps.load(Ordering::SeqCst)
    }

    /// Unwraps so far.
    pub fn unwraps(&self) -> usize {
        self.unwraps.load(Ordering::SeqCst)
    }

    /// The key id of each unwrap's configuration, in order (which KEK the node asked for).
    pub fn unwrap_key_ids(&self) -> Vec<String> {
        self.unwrap_keys.lock().unwrap().clone()
    }

    fn answer(&self) -> Result<()> {
        if self.down.load(Ordering::SeqCst) {
            return Err(kms::Error::new(ErrorKind::Unavailable, "fake KMS: down").into());
        }
        if self.deny.load(Ordering::SeqCst) {
            return Err(kms::Error::new(ErrorKind::Denied, "fake KMS: token expired").into());
        }
        Ok(())
    }
}

#[async_trait]
impl KeyWrapper for FakeKms {
    async fn wrap(&self, config: &KmsConfig, dek: &Dek, volume: &VolumeId) -> Result<WrappedKey> {
        self.answer()?;
        if config.kind() != KmsType::Transit {
            return Err(csi::Error::internal(
                "the fake KMS makes Transit records only",
            ));
        }
        let mut nonce = [0u8; 32];
        getrandom::fill(&mut nonce).map_err(|e| csi::Error::internal(e.to_string()))?;
        let ciphertext = format!(
            "vault:v1:{}",
            base64::engine::general_purpose::STANDARD.encode(nonce)
        );
        let namespace = config
            .namespace()
            .map(|n| format!(r#","namespace":"{n}""#))
            .unwrap_or_default();
        let json = format!(
            r#"{{"version":1,"kmsType":"transit","endpoint":"{}","keyId":"{}"{namespace},"keyVersion":1,"mode":"transit-framed","ciphertext":"{ciphertext}","volumeId":"{volume}","createdAt":"2026-12-07T00:00:00Z"}}"#,
            config.endpoint(),
            config.key_id(),
        );
        let record = WrappedKey::from_json(json.as_bytes())?;
        self.keys.lock().unwrap().insert(
            ciphertext,
            (volume.to_string(), Zeroizing::new(dek.expose().to_vec())),
        );
        self.wraps.fetch_add(1, Ordering::SeqCst);
        Ok(record)
    }

    async fn unwrap(
        &self,
        config: &KmsConfig,
        record: &WrappedKey,
        volume: &VolumeId,
    ) -> Result<Dek> {
        self.answer()?;
        self.unwraps.fetch_add(1, Ordering::SeqCst);
        self.unwrap_keys
            .lock()
            .unwrap()
            .push(config.key_id().to_owned());
        let keys = self.keys.lock().unwrap();
        let ciphertext = ciphertext_of(record);
        match keys.get(&ciphertext) {
            Some((v, dek)) if v == volume.as_str() => Ok(Dek::from_slice(dek)?),
            Some(_) => Err(kms::Error::new(
                ErrorKind::Integrity,
                "fake KMS: the record belongs to another volume",
            )
            .into()),
            None => {
                Err(kms::Error::new(ErrorKind::Integrity, "fake KMS: unknown ciphertext").into())
            }
        }
    }
}

/// The record's ciphertext (from its JSON: the type keeps it private).
fn ciphertext_of(record: &WrappedKey) -> String {
    let json = record.to_json();
    let at = json.find(r#""ciphertext":""#).map_or(0, |i| i + 14);
    json.get(at..)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or_default()
        .to_owned()
}

//! Secret and identifier types: [`Dek`], [`Token`], [`VolumeId`].

use std::fmt;

use secrecy::{ExposeSecret, SecretBox, SecretString};
use zeroize::Zeroizing;

use crate::error::{Error, Result};

/// Key of the credentials Secret holding the Transit token.
pub const SECRET_TOKEN: &str = "token";
/// Key of the credentials Secret holding the PEM CA certificate(s) that sign the KMS server certificate.
pub const SECRET_CA: &str = "ca.crt";
/// Key of the credentials Secret holding the PEM client certificate chain (KMIP).
pub const SECRET_TLS_CERT: &str = "tls.crt";
/// Key of the credentials Secret holding the PEM client private key (KMIP).
pub const SECRET_TLS_KEY: &str = "tls.key";

/// A data encryption key: the per-volume random key that LUKS2 keyslots protect.
///
/// Not `Clone`, not `Debug`-printable (only its length is shown), zeroized on drop.
pub struct Dek(SecretBox<[u8]>);

impl Dek {
    /// The smallest accepted DEK, in bytes (AES-128).
    pub const MIN_LEN: usize = 16;
    /// The largest accepted DEK, in bytes.
    pub const MAX_LEN: usize = 512;

    /// Takes ownership of key bytes; the vector is moved, not copied.
    pub fn new(bytes: Vec<u8>) -> Result<Self> {
        let bytes = Zeroizing::new(bytes);
        if !(Self::MIN_LEN..=Self::MAX_LEN).contains(&bytes.len()) {
            return Err(Error::config(format!(
                "a data encryption key must be {}..={} bytes, got {}",
                Self::MIN_LEN,
                Self::MAX_LEN,
                bytes.len()
            )));
        }
        Ok(Self(SecretBox::from(bytes.to_vec())))
    }

    /// Copies key bytes from a slice (the caller keeps and zeroizes its own copy).
    pub fn from_slice(bytes: &[u8]) -> Result<Self> {
        Self::new(bytes.to_vec())
    }

    /// A fresh random key of `len` bytes from the operating system's CSPRNG.
    pub fn generate(len: usize) -> Result<Self> {
        let mut bytes = Zeroizing::new(vec![0u8; len]);
        getrandom::fill(&mut bytes)
            .map_err(|e| Error::unavailable(format!("no randomness from the OS: {e}")))?;
        Self::new(bytes.to_vec())
    }

    /// The key bytes.
    pub fn expose(&self) -> &[u8] {
        self.0.expose_secret()
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.expose().len()
    }

    /// Never true for a constructed key; present for API symmetry.
    pub fn is_empty(&self) -> bool {
        self.expose().is_empty()
    }

    /// Constant-time equality.
    pub fn ct_eq(&self, other: &Dek) -> bool {
        use subtle::ConstantTimeEq;
        self.len() == other.len() && bool::from(self.expose().ct_eq(other.expose()))
    }
}

impl fmt::Debug for Dek {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Dek([REDACTED; {} bytes])", self.len())
    }
}

/// A KMS token (OpenBao/Vault). Kept in a [`SecretString`]; `Debug` prints nothing of it.
#[derive(Clone)]
pub struct Token(SecretString);

impl Token {
    /// Trims surrounding whitespace (files written by `kubectl --from-file` often end in a
    /// newline) and rejects empty tokens and tokens that cannot be an HTTP header value.
    pub fn new(raw: &str) -> Result<Self> {
        let t = raw.trim();
        if t.is_empty() {
            return Err(Error::config("secret key \"token\" is empty"));
        }
        if !t.bytes().all(|b| (0x21..0x7f).contains(&b)) {
            return Err(Error::config(
                "secret key \"token\" contains whitespace or non-printable characters",
            ));
        }
        Ok(Self(SecretString::from(t.to_owned())))
    }

    pub(crate) fn expose(&self) -> &str {
        self.0.expose_secret()
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token([REDACTED])")
    }
}

/// The CSI volume ID a key belongs to. Wrapped keys are bound to it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct VolumeId(String);

impl VolumeId {
    /// Longest accepted ID in bytes (it is framed with a one-byte length).
    pub const MAX_LEN: usize = 255;

    /// Validates: 1..=255 bytes, no whitespace or control characters.
    pub fn new(id: impl Into<String>) -> Result<Self> {
        let id = id.into();
        if id.is_empty() || id.len() > Self::MAX_LEN {
            return Err(Error::config(format!(
                "volume id must be 1..={} bytes, got {}",
                Self::MAX_LEN,
                id.len()
            )));
        }
        if id.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(Error::config(
                "volume id contains whitespace or control characters",
            ));
        }
        Ok(Self(id))
    }

    /// The ID as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for VolumeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Frames a DEK with the volume id it belongs to:
/// `0x01 ‖ len(id) (1 byte) ‖ id ‖ len(dek) (2 bytes, big endian) ‖ dek`. Used where the
/// KMS cannot bind associated data (Transit rewrap, KMIP AES-CBC): the unwrap side checks it.
pub(crate) fn frame(volume: &VolumeId, dek: &Dek) -> Zeroizing<Vec<u8>> {
    let id = volume.as_str().as_bytes();
    let mut out = Zeroizing::new(Vec::with_capacity(4 + id.len() + dek.len()));
    out.push(FRAME_VERSION);
    // VolumeId::new bounds the length to 255, Dek::new to 512.
    out.push(u8::try_from(id.len()).unwrap_or(u8::MAX));
    out.extend_from_slice(id);
    out.extend_from_slice(&u16::try_from(dek.len()).unwrap_or(u16::MAX).to_be_bytes());
    out.extend_from_slice(dek.expose());
    out
}

const FRAME_VERSION: u8 = 1;

/// Checks and strips the frame written by [`frame`].
pub(crate) fn unframe(volume: &VolumeId, plain: &[u8]) -> Result<Dek> {
    let bad = || Error::integrity("the unwrapped key is not framed as this driver writes it");
    let (&version, rest) = plain.split_first().ok_or_else(bad)?;
    if version != FRAME_VERSION {
        return Err(bad());
    }
    let (&len, rest) = rest.split_first().ok_or_else(bad)?;
    let (id, dek) = rest.split_at_checked(usize::from(len)).ok_or_else(bad)?;
    if id != volume.as_str().as_bytes() {
        return Err(Error::integrity(format!(
            "the wrapped key belongs to volume {:?}, not to {volume}",
            String::from_utf8_lossy(id)
        )));
    }
    let (len, dek) = dek.split_first_chunk::<2>().ok_or_else(bad)?;
    if usize::from(u16::from_be_bytes(*len)) != dek.len() {
        return Err(bad());
    }
    Dek::from_slice(dek)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_round_trip_and_wrong_volume() {
        let v = VolumeId::new("vol-1").unwrap();
        let dek = Dek::generate(64).unwrap();
        let framed = frame(&v, &dek);
        assert!(unframe(&v, &framed).unwrap().ct_eq(&dek));
        let other = VolumeId::new("vol-2").unwrap();
        let err = unframe(&other, &framed).unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::Integrity);
        assert!(err.message().contains("vol-1"));
        for cut in 0..framed.len() {
            assert!(unframe(&v, &framed[..cut]).is_err(), "truncated at {cut}");
        }
    }

    #[test]
    fn debug_does_not_show_secrets() {
        let dek = Dek::new(vec![0xAB; 32]).unwrap();
        assert_eq!(format!("{dek:?}"), "Dek([REDACTED; 32 bytes])");
        let t = Token::new("s.supersecret\n").unwrap();
        assert!(!format!("{t:?}").contains("supersecret"));
        assert_eq!(t.expose(), "s.supersecret");
    }

    #[test]
    fn rejects_bad_lengths_and_ids() {
        assert!(Dek::new(vec![0; 15]).is_err());
        assert!(Dek::new(vec![0; 513]).is_err());
        assert!(VolumeId::new("").is_err());
        assert!(VolumeId::new("a b").is_err());
        assert!(VolumeId::new("x".repeat(256)).is_err());
        assert!(Token::new(" \n").is_err());
    }
}

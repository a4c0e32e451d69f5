//! Secret types: volume keys and passphrases. No `Clone`, no `Debug` output of the bytes, zeroized
//! on drop.

use zeroize::Zeroizing;

/// A LUKS2 volume key (the key of the data segment), 16..=128 bytes.
pub struct VolumeKey(Zeroizing<Vec<u8>>);

impl VolumeKey {
    /// Wraps key bytes.
    pub fn from_bytes(bytes: &[u8]) -> Self {
        VolumeKey(Zeroizing::new(bytes.to_vec()))
    }

    /// Takes ownership of a zeroizing buffer.
    pub fn from_zeroizing(bytes: Zeroizing<Vec<u8>>) -> Self {
        VolumeKey(bytes)
    }

    /// A fresh random key of `len` bytes from the OS CSPRNG.
    pub fn random(len: usize) -> std::io::Result<Self> {
        let mut buf = Zeroizing::new(vec![0u8; len]);
        getrandom::fill(&mut buf).map_err(std::io::Error::other)?;
        Ok(VolumeKey(buf))
    }

    /// The key bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The key length in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the key is empty (never for a usable key).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::fmt::Debug for VolumeKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "VolumeKey([REDACTED; {}])", self.0.len())
    }
}

/// A passphrase (or key-file contents): arbitrary bytes.
pub struct Passphrase(Zeroizing<Vec<u8>>);

impl Passphrase {
    /// Wraps passphrase bytes.
    pub fn from_bytes(bytes: &[u8]) -> Self {
        Passphrase(Zeroizing::new(bytes.to_vec()))
    }

    /// Takes ownership of a zeroizing buffer.
    pub fn from_zeroizing(bytes: Zeroizing<Vec<u8>>) -> Self {
        Passphrase(bytes)
    }

    /// The passphrase bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for Passphrase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Passphrase([REDACTED])")
    }
}

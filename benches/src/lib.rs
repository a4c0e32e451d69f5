//! Benchmarks of the workspace crates and the compare program against cryptsetup.
//!
//! The criterion benches live in `benches/` (`cargo bench -p benches`); the compare program,
//! which times our `luks2` command against `cryptsetup` on the same headers, is
//! `src/bin/compare.rs` (`scripts/bench-compare`). `src/bin/stage_compare.rs`
//! (`scripts/bench-stage`, in the VM rig) times NodeStage through the driver against the
//! cryptsetup-based flow and measures the node plugin at 50 concurrent stages; it reuses the
//! driver's VM test rig (`testkit::plugin`). This library holds what the criterion benches
//! and `compare` share: building small LUKS2 images in memory.

use luks2::crypto::{Argon2Variant, HashAlgorithm, KdfKind, PbkdfOptions};
use luks2::format::{self, FormatOptions};
use luks2::io::MemDevice;
use luks2::{Result, VolumeKey};

/// The passphrase of every image built here.
pub const PASSPHRASE: &[u8] = b"correct horse battery staple";

/// Size of the in-memory devices: cryptsetup's default 16 MiB header area plus 1 MiB of data.
pub const DEVICE_SIZE: usize = 17 * 1024 * 1024;

/// A keyslot KDF with fixed (forced) costs, for images whose unlock time must not depend on a
/// calibration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FixedKdf {
    /// PBKDF2 with this hash and iteration count.
    Pbkdf2(HashAlgorithm, u32),
    /// Argon2 with this variant, time cost, memory (KiB) and lanes.
    Argon2(Argon2Variant, u32, u32, u32),
}

impl FixedKdf {
    /// The format options for this KDF (the rest at cryptsetup's defaults).
    pub fn pbkdf_options(self) -> PbkdfOptions {
        match self {
            FixedKdf::Pbkdf2(hash, iterations) => PbkdfOptions {
                kind: KdfKind::Pbkdf2(hash),
                hash,
                force_iterations: Some(iterations),
                ..Default::default()
            },
            FixedKdf::Argon2(variant, time, memory_kib, lanes) => PbkdfOptions {
                kind: KdfKind::Argon2(variant),
                hash: HashAlgorithm::Sha256,
                force_iterations: Some(time),
                max_memory_kib: Some(memory_kib),
                parallel: Some(lanes),
                ..Default::default()
            },
        }
    }

    /// Format options: default layout and cipher (aes-xts-plain64, 512-bit key), this KDF.
    pub fn format_options(self) -> FormatOptions {
        FormatOptions {
            pbkdf: self.pbkdf_options(),
            ..Default::default()
        }
    }
}

/// A freshly formatted in-memory device ([`DEVICE_SIZE`] bytes) with [`PASSPHRASE`] in keyslot 0.
pub fn formatted(kdf: FixedKdf) -> Result<(MemDevice, VolumeKey)> {
    let opts = kdf.format_options();
    let vk = VolumeKey::random(opts.key_size)
        .map_err(|e| luks2::Error::io("generating the volume key", e))?;
    let mut dev = MemDevice::new(DEVICE_SIZE);
    format::format_with_volume_key(&mut dev, &vk, PASSPHRASE, &opts)?;
    Ok((dev, vk))
}

//! Password-based key derivation for keyslots: PBKDF2-HMAC (sha1/sha256/sha512), Argon2i and
//! Argon2id (version 0x13, as cryptsetup uses).
//!
//! Costs come from untrusted headers, so every derivation first checks them against
//! [`KdfLimits`] — before any memory is allocated — and the Argon2 memory is reserved with a
//! fallible allocation, turning an allocation failure into [`Error::OutOfMemory`] instead of an
//! abort. Argon2 lanes are computed in parallel (the `argon2` crate's `parallel` feature, rayon).

use std::fmt;
use std::str::FromStr;

use argon2::{Algorithm, Argon2, AssociatedData, Block, ParamsBuilder, Version};
use zeroize::{Zeroize, Zeroizing};

use super::hash::HashAlgorithm;
use super::sys::MemInfo;
use crate::error::{Error, Result};
use crate::metadata::KEYSLOTS_MAX;

/// Largest derived key we ever produce (keyslot area keys are at most 64 bytes in practice;
/// cryptsetup caps volume keys at 512 bytes).
pub const MAX_DERIVED_KEY_LEN: usize = 512;

/// The Argon2 variants LUKS2 uses; defined with the metadata model, which names them in
/// `kdf.type`.
pub use crate::metadata::Argon2Variant;

impl Argon2Variant {
    fn algorithm(self) -> Algorithm {
        match self {
            Argon2Variant::Argon2i => Algorithm::Argon2i,
            Argon2Variant::Argon2id => Algorithm::Argon2id,
        }
    }
}

/// The kind of KDF, without costs: what `--pbkdf` (plus `--hash` for PBKDF2) selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KdfKind {
    /// PBKDF2-HMAC with the given hash.
    Pbkdf2(HashAlgorithm),
    /// Argon2 of the given variant.
    Argon2(Argon2Variant),
}

impl KdfKind {
    /// Parses a `kdf.type` name (`pbkdf2`, `argon2i`, `argon2id`); `hash` is used for PBKDF2.
    pub fn from_name(name: &str, hash: HashAlgorithm) -> Result<Self> {
        match name {
            "pbkdf2" => Ok(KdfKind::Pbkdf2(hash)),
            "argon2i" => Ok(KdfKind::Argon2(Argon2Variant::Argon2i)),
            "argon2id" => Ok(KdfKind::Argon2(Argon2Variant::Argon2id)),
            other => Err(Error::Unsupported(format!(
                "PBKDF {other:?} (supported: pbkdf2, argon2i, argon2id)"
            ))),
        }
    }

    /// The LUKS2 `kdf.type` name.
    pub fn name(self) -> &'static str {
        match self {
            KdfKind::Pbkdf2(_) => "pbkdf2",
            KdfKind::Argon2(v) => v.name(),
        }
    }
}

/// A fully specified keyslot KDF, as stored in a keyslot's `kdf` object (without the salt).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kdf {
    /// PBKDF2-HMAC.
    Pbkdf2 {
        /// The HMAC hash.
        hash: HashAlgorithm,
        /// Iteration count.
        iterations: u32,
    },
    /// Argon2i or Argon2id.
    Argon2 {
        /// Which variant.
        variant: Argon2Variant,
        /// Passes over memory (`kdf.time`).
        time: u32,
        /// Memory in KiB (`kdf.memory`).
        memory_kib: u32,
        /// Lanes (`kdf.cpus`); part of the result, not just a performance knob.
        lanes: u32,
    },
}

/// Cost bounds for a KDF. Checked before anything is allocated or computed.
///
/// Three presets: [`KdfLimits::NEW_KEYSLOT`] (what cryptsetup accepts for a new keyslot),
/// [`KdfLimits::UNLOCK`] (what cryptsetup opens: the `luks2` command's default) and
/// [`KdfLimits::driver`] (the CSI driver's: only its own kind of keyslot, PBKDF2 at a small
/// cost). A caller may build its own from any of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KdfLimits {
    /// Minimum PBKDF2 iterations.
    pub pbkdf2_min_iterations: u32,
    /// Maximum PBKDF2 iterations, for keyslots and for the volume key digest alike.
    pub pbkdf2_max_iterations: u32,
    /// Whether Argon2 keyslots may run at all.
    pub argon2_allowed: bool,
    /// Minimum Argon2 time cost.
    pub argon2_min_time: u32,
    /// Maximum Argon2 time cost.
    pub argon2_max_time: u32,
    /// Minimum Argon2 memory in KiB (and never below 8 KiB per lane, Argon2's own bound).
    pub argon2_min_memory_kib: u32,
    /// Maximum Argon2 memory in KiB.
    pub argon2_max_memory_kib: u32,
    /// Maximum Argon2 lanes.
    pub argon2_max_lanes: u32,
    /// How many keyslots an "any keyslot" unlock may try; a header offering more candidates is
    /// refused before any KDF runs.
    pub max_keyslots_tried: u32,
    /// Said after a refusal by these limits (e.g. "not a volume made by this driver").
    pub refusal: &'static str,
}

impl KdfLimits {
    /// cryptsetup's limit on Argon2 memory: 4 GiB (`crypt_pbkdf_get_limits`).
    pub const ARGON2_MAX_MEMORY_KIB: u32 = 4 * 1024 * 1024;

    /// The most PBKDF2 iterations [`KdfLimits::driver`] allows: ten times what the driver
    /// writes (cryptsetup's minimum, 1000), a few milliseconds of CPU.
    pub const DRIVER_MAX_PBKDF2_ITERATIONS: u32 = 10_000;

    /// Bounds for creating a keyslot, as cryptsetup's `crypt_pbkdf_get_limits` and
    /// `verify_pbkdf_params`: PBKDF2 >= 1000 iterations; Argon2 time >= 4, memory 32 KiB..4 GiB,
    /// 1..=4 lanes.
    pub const NEW_KEYSLOT: KdfLimits = KdfLimits {
        pbkdf2_min_iterations: 1000,
        pbkdf2_max_iterations: u32::MAX,
        argon2_allowed: true,
        argon2_min_time: 4,
        argon2_max_time: u32::MAX,
        argon2_min_memory_kib: 32,
        argon2_max_memory_kib: Self::ARGON2_MAX_MEMORY_KIB,
        argon2_max_lanes: 4,
        max_keyslots_tried: KEYSLOTS_MAX,
        refusal: "outside the limits for a new keyslot",
    };

    /// Bounds for opening an existing keyslot: whatever cryptsetup's KDF backends accept
    /// (PBKDF2 >= 1 iteration; Argon2 time >= 1, at least 8 KiB per lane, up to Argon2's 2^24-1
    /// lanes; every keyslot may be tried), with memory still capped at cryptsetup's 4 GiB so a
    /// hostile header cannot make us allocate more. The `luks2` command's default: as generous
    /// as cryptsetup, so a hostile header can still cost it CPU time (like cryptsetup).
    pub const UNLOCK: KdfLimits = KdfLimits {
        pbkdf2_min_iterations: 1,
        pbkdf2_max_iterations: u32::MAX,
        argon2_allowed: true,
        argon2_min_time: 1,
        argon2_max_time: u32::MAX,
        argon2_min_memory_kib: 8,
        argon2_max_memory_kib: Self::ARGON2_MAX_MEMORY_KIB,
        argon2_max_lanes: 0x00FF_FFFF,
        max_keyslots_tried: KEYSLOTS_MAX,
        refusal: "outside the accepted KDF costs",
    };

    /// The CSI driver's limits. Its volumes have one or two PBKDF2 keyslots at cryptsetup's
    /// minimum cost (1000 iterations; the digest likewise): anything costlier than
    /// [`KdfLimits::DRIVER_MAX_PBKDF2_ITERATIONS`], any Argon2 keyslot and any header offering
    /// more than four candidate keyslots is refused as "not a volume made by this driver", before
    /// any KDF runs. A crafted header thus costs the node plugin milliseconds, never minutes or
    /// gigabytes.
    pub const fn driver() -> KdfLimits {
        KdfLimits {
            pbkdf2_min_iterations: 1,
            pbkdf2_max_iterations: Self::DRIVER_MAX_PBKDF2_ITERATIONS,
            argon2_allowed: false,
            argon2_min_time: 1,
            argon2_max_time: 0,
            argon2_min_memory_kib: 8,
            argon2_max_memory_kib: 0,
            argon2_max_lanes: 0,
            max_keyslots_tried: 4,
            refusal: "not a volume made by this driver",
        }
    }

    /// Checks the iteration count of a PBKDF2 volume key digest.
    pub fn check_digest_iterations(&self, iterations: u32) -> Result<()> {
        if iterations > self.pbkdf2_max_iterations {
            return Err(Error::Unsupported(format!(
                "digest PBKDF2 iteration count {iterations} exceeds the limit of {} ({})",
                self.pbkdf2_max_iterations, self.refusal
            )));
        }
        Ok(())
    }
}

impl Kdf {
    /// The kind of this KDF.
    pub fn kind(&self) -> KdfKind {
        match *self {
            Kdf::Pbkdf2 { hash, .. } => KdfKind::Pbkdf2(hash),
            Kdf::Argon2 { variant, .. } => KdfKind::Argon2(variant),
        }
    }

    /// The LUKS2 `kdf.type` name.
    pub fn type_name(&self) -> &'static str {
        self.kind().name()
    }

    /// Checks the costs against `limits`.
    pub fn check(&self, limits: &KdfLimits) -> Result<()> {
        match *self {
            Kdf::Pbkdf2 { iterations, .. } => {
                if iterations < limits.pbkdf2_min_iterations {
                    return Err(Error::InvalidArgument(format!(
                        "PBKDF2 iteration count {iterations} is too low (minimum is {})",
                        limits.pbkdf2_min_iterations
                    )));
                }
                if iterations > limits.pbkdf2_max_iterations {
                    return Err(Error::Unsupported(format!(
                        "PBKDF2 iteration count {iterations} exceeds the limit of {} ({})",
                        limits.pbkdf2_max_iterations, limits.refusal
                    )));
                }
            }
            Kdf::Argon2 {
                variant,
                time,
                memory_kib,
                lanes,
            } => {
                if !limits.argon2_allowed {
                    return Err(Error::Unsupported(format!(
                        "{} keyslots are not allowed ({})",
                        variant.name(),
                        limits.refusal
                    )));
                }
                if time > limits.argon2_max_time {
                    return Err(Error::Unsupported(format!(
                        "Argon2 time cost {time} exceeds the limit of {} ({})",
                        limits.argon2_max_time, limits.refusal
                    )));
                }
                if lanes == 0 || lanes > limits.argon2_max_lanes {
                    return Err(Error::InvalidArgument(format!(
                        "Argon2 parallel cost {lanes} is out of range (1..={})",
                        limits.argon2_max_lanes
                    )));
                }
                if time < limits.argon2_min_time {
                    return Err(Error::InvalidArgument(format!(
                        "Argon2 time cost {time} is too low (minimum is {})",
                        limits.argon2_min_time
                    )));
                }
                let min_memory = limits.argon2_min_memory_kib.max(lanes.saturating_mul(8));
                if memory_kib < min_memory {
                    return Err(Error::InvalidArgument(format!(
                        "Argon2 memory cost {memory_kib} KiB is too low (minimum is {min_memory} KiB)"
                    )));
                }
                if memory_kib > limits.argon2_max_memory_kib {
                    return Err(Error::OutOfMemory(format!(
                        "Argon2 memory cost {memory_kib} KiB exceeds the maximum of {} KiB",
                        limits.argon2_max_memory_kib
                    )));
                }
            }
        }
        Ok(())
    }

    /// Derives `out_len` bytes from `password` and `salt`, after checking the costs against
    /// [`KdfLimits::UNLOCK`] (callers creating keyslots check [`KdfLimits::NEW_KEYSLOT`] first).
    pub fn derive(
        &self,
        password: &[u8],
        salt: &[u8],
        out_len: usize,
    ) -> Result<Zeroizing<Vec<u8>>> {
        self.check(&KdfLimits::UNLOCK)?;
        if out_len == 0 || out_len > MAX_DERIVED_KEY_LEN {
            return Err(Error::InvalidArgument(format!(
                "derived key length {out_len} out of range (1..={MAX_DERIVED_KEY_LEN})"
            )));
        }
        let mut out = Zeroizing::new(vec![0u8; out_len]);
        match *self {
            Kdf::Pbkdf2 { hash, iterations } => {
                hash.pbkdf2_into(password, salt, iterations, &mut out)?
            }
            Kdf::Argon2 {
                variant,
                time,
                memory_kib,
                lanes,
            } => {
                check_physical_memory(memory_kib)?;
                argon2_derive(
                    variant,
                    Argon2Costs {
                        time,
                        memory_kib,
                        lanes,
                    },
                    Argon2Inputs {
                        password,
                        salt,
                        secret: &[],
                        associated_data: &[],
                    },
                    &mut out,
                )?;
            }
        }
        Ok(out)
    }
}

impl fmt::Display for Kdf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Kdf::Pbkdf2 { hash, iterations } => {
                write!(f, "pbkdf2-{hash} ({iterations} iterations)")
            }
            Kdf::Argon2 {
                variant,
                time,
                memory_kib,
                lanes,
            } => write!(
                f,
                "{} (time {time}, memory {memory_kib} KiB, {lanes} lanes)",
                variant.name()
            ),
        }
    }
}

impl FromStr for Argon2Variant {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "argon2i" => Ok(Argon2Variant::Argon2i),
            "argon2id" => Ok(Argon2Variant::Argon2id),
            other => Err(Error::Unsupported(format!("Argon2 variant {other:?}"))),
        }
    }
}

/// Refuses an Argon2 memory cost larger than the machine's physical memory: with memory
/// overcommit, the allocation would succeed and the OOM killer would end the process instead.
fn check_physical_memory(memory_kib: u32) -> Result<()> {
    if let Some(info) = MemInfo::read()
        && u64::from(memory_kib) > info.total_kib
    {
        return Err(Error::OutOfMemory(format!(
            "Argon2 needs {memory_kib} KiB but the machine has only {} KiB of memory",
            info.total_kib
        )));
    }
    Ok(())
}

/// Argon2 costs (RFC 9106 t, m, p).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Argon2Costs {
    /// Passes (t).
    pub time: u32,
    /// Memory in KiB (m).
    pub memory_kib: u32,
    /// Lanes (p).
    pub lanes: u32,
}

/// Argon2 inputs (RFC 9106 P, S, K, X). LUKS2 uses no secret (K) and no associated data (X);
/// they exist here so the RFC 9106 test vectors can run through the same code path.
#[derive(Clone, Copy)]
pub struct Argon2Inputs<'a> {
    /// Password (P).
    pub password: &'a [u8],
    /// Salt (S), at least 8 bytes.
    pub salt: &'a [u8],
    /// Secret value (K), at most 32 bytes.
    pub secret: &'a [u8],
    /// Associated data (X), at most 32 bytes.
    pub associated_data: &'a [u8],
}

impl fmt::Debug for Argon2Inputs<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Argon2Inputs([REDACTED])")
    }
}

/// Argon2 (version 0x13) of `inputs` into `out`, lanes in parallel.
///
/// The costs are checked against [`KdfLimits::UNLOCK`] and the working memory is reserved
/// fallibly ([`Error::OutOfMemory`] on failure) and wiped afterwards.
pub fn argon2_derive(
    variant: Argon2Variant,
    costs: Argon2Costs,
    inputs: Argon2Inputs<'_>,
    out: &mut [u8],
) -> Result<()> {
    Kdf::Argon2 {
        variant,
        time: costs.time,
        memory_kib: costs.memory_kib,
        lanes: costs.lanes,
    }
    .check(&KdfLimits::UNLOCK)?;
    let mut builder = ParamsBuilder::new();
    builder
        .m_cost(costs.memory_kib)
        .t_cost(costs.time)
        .p_cost(costs.lanes)
        .output_len(out.len());
    if !inputs.associated_data.is_empty() {
        builder.data(AssociatedData::new(inputs.associated_data).map_err(argon2_error)?);
    }
    let params = builder.build().map_err(argon2_error)?;
    let blocks_needed = params.block_count();
    let ctx = if inputs.secret.is_empty() {
        Argon2::new(variant.algorithm(), Version::V0x13, params)
    } else {
        Argon2::new_with_secret(inputs.secret, variant.algorithm(), Version::V0x13, params)
            .map_err(argon2_error)?
    };

    let mut blocks: Vec<Block> = Vec::new();
    blocks.try_reserve_exact(blocks_needed).map_err(|_| {
        Error::OutOfMemory(format!(
            "cannot allocate {} KiB for Argon2",
            blocks_needed.saturating_mul(Block::SIZE) / 1024
        ))
    })?;
    blocks.resize(blocks_needed, Block::new());
    let result = ctx.hash_password_into_with_memory(
        inputs.password,
        inputs.salt,
        &mut *out,
        blocks.as_mut_slice(),
    );
    for b in blocks.iter_mut() {
        b.zeroize();
    }
    if result.is_err() {
        out.zeroize();
    }
    result.map_err(argon2_error)
}

fn argon2_error(e: argon2::Error) -> Error {
    match e {
        argon2::Error::OutOfMemory | argon2::Error::MemoryTooMuch => {
            Error::OutOfMemory(format!("Argon2: {e}"))
        }
        other => Error::InvalidArgument(format!("Argon2: {other}")),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::cast_possible_truncation)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    const SALT: &[u8; 32] = b"0123456789abcdef0123456789abcdef";

    #[test]
    fn kind_names_round_trip() {
        for kind in [
            KdfKind::Pbkdf2(HashAlgorithm::Sha256),
            KdfKind::Argon2(Argon2Variant::Argon2i),
            KdfKind::Argon2(Argon2Variant::Argon2id),
        ] {
            assert_eq!(
                KdfKind::from_name(kind.name(), HashAlgorithm::Sha256).unwrap(),
                kind
            );
        }
        let e = KdfKind::from_name("scrypt", HashAlgorithm::Sha256).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Unsupported);
    }

    #[test]
    fn limits_are_checked_before_work() {
        let huge = Kdf::Argon2 {
            variant: Argon2Variant::Argon2id,
            time: 4,
            memory_kib: u32::MAX,
            lanes: 4,
        };
        // Would need 4 TiB; must fail immediately with OutOfMemory, not try to allocate.
        let e = huge.derive(b"pw", SALT, 32).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::OutOfMemory);

        let zero_lanes = Kdf::Argon2 {
            variant: Argon2Variant::Argon2i,
            time: 1,
            memory_kib: 64,
            lanes: 0,
        };
        assert_eq!(
            zero_lanes.derive(b"pw", SALT, 32).unwrap_err().kind(),
            ErrorKind::InvalidArgument
        );
        let too_little = Kdf::Argon2 {
            variant: Argon2Variant::Argon2i,
            time: 1,
            memory_kib: 31,
            lanes: 4,
        };
        assert!(too_little.derive(b"pw", SALT, 32).is_err());
        let zero_time = Kdf::Argon2 {
            variant: Argon2Variant::Argon2id,
            time: 0,
            memory_kib: 64,
            lanes: 1,
        };
        assert!(zero_time.derive(b"pw", SALT, 32).is_err());
        let zero_iter = Kdf::Pbkdf2 {
            hash: HashAlgorithm::Sha1,
            iterations: 0,
        };
        assert!(zero_iter.derive(b"pw", SALT, 32).is_err());
        let ok = Kdf::Pbkdf2 {
            hash: HashAlgorithm::Sha1,
            iterations: 1,
        };
        assert!(ok.derive(b"pw", SALT, 0).is_err());
        assert!(ok.derive(b"pw", SALT, MAX_DERIVED_KEY_LEN + 1).is_err());
    }

    #[test]
    fn new_keyslot_limits_match_cryptsetup() {
        let l = KdfLimits::NEW_KEYSLOT;
        assert!(
            Kdf::Pbkdf2 {
                hash: HashAlgorithm::Sha256,
                iterations: 999
            }
            .check(&l)
            .is_err()
        );
        assert!(
            Kdf::Pbkdf2 {
                hash: HashAlgorithm::Sha256,
                iterations: 1000
            }
            .check(&l)
            .is_ok()
        );
        let a = |time, memory_kib, lanes| Kdf::Argon2 {
            variant: Argon2Variant::Argon2id,
            time,
            memory_kib,
            lanes,
        };
        assert!(a(4, 32, 1).check(&l).is_ok());
        assert!(a(3, 32, 1).check(&l).is_err());
        assert!(a(4, 31, 1).check(&l).is_err());
        assert!(a(4, 32, 4).check(&l).is_ok());
        assert!(a(4, 32, 5).check(&l).is_err());
        assert!(a(4, 4 * 1024 * 1024, 4).check(&l).is_ok());
        assert!(a(4, 4 * 1024 * 1024 + 1, 4).check(&l).is_err());
        // Opening is more lenient: an 8-lane keyslot made elsewhere still opens.
        assert!(a(1, 64, 8).check(&KdfLimits::UNLOCK).is_ok());
    }

    #[test]
    fn driver_limits_allow_only_cheap_pbkdf2() {
        let l = KdfLimits::driver();
        let p = |iterations| Kdf::Pbkdf2 {
            hash: HashAlgorithm::Sha256,
            iterations,
        };
        assert!(p(1000).check(&l).is_ok());
        assert!(p(KdfLimits::DRIVER_MAX_PBKDF2_ITERATIONS).check(&l).is_ok());
        let e = p(KdfLimits::DRIVER_MAX_PBKDF2_ITERATIONS + 1)
            .check(&l)
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Unsupported);
        assert!(p(u32::MAX).check(&KdfLimits::UNLOCK).is_ok());
        let cheap_argon2 = Kdf::Argon2 {
            variant: Argon2Variant::Argon2id,
            time: 1,
            memory_kib: 64,
            lanes: 1,
        };
        assert!(cheap_argon2.check(&KdfLimits::UNLOCK).is_ok());
        let e = cheap_argon2.check(&l).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Unsupported);
        assert!(
            e.to_string().contains("not a volume made by this driver"),
            "{e}"
        );
        assert!(l.check_digest_iterations(10_000).is_ok());
        assert!(l.check_digest_iterations(10_001).is_err());
        assert!(KdfLimits::UNLOCK.check_digest_iterations(u32::MAX).is_ok());
    }

    #[test]
    fn argon2_lanes_change_the_result() {
        let k = |lanes| {
            Kdf::Argon2 {
                variant: Argon2Variant::Argon2id,
                time: 1,
                memory_kib: 64,
                lanes,
            }
            .derive(b"pw", SALT, 32)
            .unwrap()
        };
        assert_ne!(*k(1), *k(2));
        assert_eq!(*k(2), *k(2));
    }

    #[test]
    fn variants_differ() {
        let k = |variant| {
            Kdf::Argon2 {
                variant,
                time: 1,
                memory_kib: 64,
                lanes: 1,
            }
            .derive(b"pw", SALT, 32)
            .unwrap()
        };
        assert_ne!(*k(Argon2Variant::Argon2i), *k(Argon2Variant::Argon2id));
    }
}

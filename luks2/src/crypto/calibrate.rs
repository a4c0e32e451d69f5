//! PBKDF calibration for new keyslots and digests, equivalent to cryptsetup 2.6
//! (`lib/utils_pbkdf.c`, `lib/utils_benchmark.c`, `lib/crypto_backend/pbkdf_check.c`).
//!
//! - Argon2 (default argon2id): target time 2000 ms, memory at most 1 GiB and at most half the
//!   physical memory (or half the free memory on small machines without swap), both capped by
//!   the cgroup's memory limit, lanes at most 4 and at most the online CPUs, time cost at
//!   least 4. The search first finds costs taking at
//!   least 250 ms, then extrapolates and re-measures until within -5 %/+10 % of the target.
//! - PBKDF2: iterations per second measured in CPU time (doubling until one run takes more than
//!   500 ms), scaled to the target time, at least 1000.
//! - Digest: PBKDF2 calibrated to 125 ms, at least 1000; exactly 1000 when iterations are forced.
//! - `--pbkdf-force-iterations`: no benchmark; the given time cost is used. Lanes are still capped
//!   at 4 and at the online CPUs, memory at the adjusted physical memory (cryptsetup 2.6's
//!   `init_pbkdf_type` does so whether or not the costs are forced).

use std::time::Instant;

use super::hash::HashAlgorithm;
use super::kdf::{
    Argon2Costs, Argon2Inputs, Argon2Variant, Kdf, KdfKind, KdfLimits, argon2_derive,
};
use super::sys::{MemInfo, ThreadClock, online_cpus};
use crate::error::{Error, Result};

/// cryptsetup's default keyslot PBKDF target time (ms).
pub const DEFAULT_ITER_TIME_MS: u32 = 2000;
/// cryptsetup's default Argon2 memory cost ceiling (KiB): 1 GiB.
pub const DEFAULT_MAX_MEMORY_KIB: u32 = 1024 * 1024;
/// cryptsetup's default Argon2 parallel cost ceiling.
pub const DEFAULT_PARALLEL: u32 = 4;
/// Target time of the volume key digest PBKDF2 (cryptsetup's `LUKS_MKD_ITERATIONS_MS`).
pub const DIGEST_ITER_TIME_MS: u32 = 125;

const BENCH_MIN_MS: u64 = 250;
const BENCH_MIN_MS_FAST: u64 = 10;
const BENCH_PERCENT_ATLEAST: u64 = 95;
const BENCH_PERCENT_ATMOST: u64 = 110;
const BENCH_SAMPLES_FAST: usize = 3;
const BENCH_SAMPLES_SLOW: usize = 1;
/// Argon2's smallest memory cost used when benchmarking (64 MiB), unless the ceiling is lower.
const MIN_BENCH_MEMORY_KIB: u32 = 64 * 1024;

/// The PBKDF a new keyslot should use, as chosen by `--pbkdf`, `--hash`, `--iter-time`,
/// `--pbkdf-memory`, `--pbkdf-parallel` and `--pbkdf-force-iterations`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PbkdfOptions {
    /// PBKDF type (and PBKDF2 hash).
    pub kind: KdfKind,
    /// The hash cryptsetup keeps with the PBKDF settings (`--hash`, default sha256): used for the
    /// AF splitter and new digests, and (for PBKDF2) equal to the hash in `kind`.
    pub hash: HashAlgorithm,
    /// Target unlock time in milliseconds (ignored when iterations are forced).
    pub iter_time_ms: u32,
    /// Argon2 memory ceiling in KiB (`None`: 1 GiB). Must be `None` for PBKDF2.
    pub max_memory_kib: Option<u32>,
    /// Argon2 lanes ceiling (`None`: 4). Must be `None` for PBKDF2.
    pub parallel: Option<u32>,
    /// Skip benchmarking and use this iteration (PBKDF2) or time (Argon2) cost.
    pub force_iterations: Option<u32>,
}

impl Default for PbkdfOptions {
    fn default() -> Self {
        PbkdfOptions {
            kind: KdfKind::Argon2(Argon2Variant::Argon2id),
            hash: HashAlgorithm::Sha256,
            iter_time_ms: DEFAULT_ITER_TIME_MS,
            max_memory_kib: None,
            parallel: None,
            force_iterations: None,
        }
    }
}

impl PbkdfOptions {
    /// Options for `--pbkdf NAME --hash HASH` with everything else at cryptsetup's defaults.
    pub fn new(pbkdf: &str, hash: HashAlgorithm) -> Result<Self> {
        Ok(PbkdfOptions {
            kind: KdfKind::from_name(pbkdf, hash)?,
            hash,
            ..Default::default()
        })
    }

    /// Fast settings for tests: forced minimal costs (PBKDF2 1000 iterations; Argon2 time 4,
    /// `memory_kib` KiB, one lane), no benchmark.
    pub fn fast_for_tests(kind: KdfKind, memory_kib: u32) -> Self {
        let hash = match kind {
            KdfKind::Pbkdf2(h) => h,
            KdfKind::Argon2(_) => HashAlgorithm::Sha256,
        };
        match kind {
            KdfKind::Pbkdf2(_) => PbkdfOptions {
                kind,
                hash,
                force_iterations: Some(1000),
                ..Default::default()
            },
            KdfKind::Argon2(_) => PbkdfOptions {
                kind,
                hash,
                force_iterations: Some(4),
                max_memory_kib: Some(memory_kib),
                parallel: Some(1),
                ..Default::default()
            },
        }
    }

    /// The hash new digests and the AF splitter use.
    pub fn digest_hash(&self) -> HashAlgorithm {
        self.hash
    }

    /// Whether benchmarking is skipped (`--pbkdf-force-iterations`).
    pub fn is_forced(&self) -> bool {
        self.force_iterations.is_some()
    }

    /// Validates the options as cryptsetup's `verify_pbkdf_params` does.
    pub fn validate(&self) -> Result<()> {
        let limits = KdfLimits::NEW_KEYSLOT;
        if self.force_iterations.is_none() && self.iter_time_ms == 0 {
            return Err(Error::InvalidArgument(
                "requested PBKDF target time cannot be zero".into(),
            ));
        }
        match self.kind {
            KdfKind::Pbkdf2(_) => {
                if self.max_memory_kib.is_some() || self.parallel.is_some() {
                    return Err(Error::InvalidArgument(
                        "PBKDF max memory or parallel threads must not be set with pbkdf2".into(),
                    ));
                }
                if let Some(i) = self.force_iterations
                    && i < limits.pbkdf2_min_iterations
                {
                    return Err(Error::InvalidArgument(format!(
                        "forced iteration count is too low for pbkdf2 (minimum is {})",
                        limits.pbkdf2_min_iterations
                    )));
                }
            }
            KdfKind::Argon2(v) => {
                let memory = self.max_memory_kib.unwrap_or(DEFAULT_MAX_MEMORY_KIB);
                let parallel = self.parallel.unwrap_or(DEFAULT_PARALLEL);
                if let Some(i) = self.force_iterations {
                    if i < limits.argon2_min_time {
                        return Err(Error::InvalidArgument(format!(
                            "forced iteration count is too low for {} (minimum is {})",
                            v.name(),
                            limits.argon2_min_time
                        )));
                    }
                    if memory < limits.argon2_min_memory_kib {
                        return Err(Error::InvalidArgument(format!(
                            "forced memory cost is too low for {} (minimum is {} kilobytes)",
                            v.name(),
                            limits.argon2_min_memory_kib
                        )));
                    }
                }
                if memory > limits.argon2_max_memory_kib {
                    return Err(Error::InvalidArgument(format!(
                        "requested maximum PBKDF memory cost is too high (maximum is {} kilobytes)",
                        limits.argon2_max_memory_kib
                    )));
                }
                if memory == 0 {
                    return Err(Error::InvalidArgument(
                        "requested maximum PBKDF memory cannot be zero".into(),
                    ));
                }
                if parallel == 0 {
                    return Err(Error::InvalidArgument(
                        "requested PBKDF parallel threads cannot be zero".into(),
                    ));
                }
            }
        }
        Ok(())
    }
}

/// cryptsetup's `pbkdf_adjusted_phys_memory_kb`: half the physical memory; on machines with
/// less than 4 GiB and no swap, half the free memory if that is smaller (and above 64 MiB).
/// Unlike cryptsetup, "physical" and "free" memory are capped by the process's cgroup memory
/// limit (v2 `memory.max`, v1 `memory.limit_in_bytes`): in a container, that is what the OOM
/// killer enforces.
pub fn adjusted_physical_memory_kib() -> u32 {
    adjusted_memory(MemInfo::read())
}

fn adjusted_memory(info: Option<MemInfo>) -> u32 {
    let Some(info) = info else {
        return DEFAULT_MAX_MEMORY_KIB;
    };
    if info.total_kib < 128 * 1024 || info.total_kib > u64::from(u32::MAX) {
        return DEFAULT_MAX_MEMORY_KIB;
    }
    let half = info.total_kib / 2;
    if half < 2 * 1024 * 1024 && info.swap_kib == 0 {
        let free_half = info.free_kib / 2;
        if free_half > 64 * 1024 && free_half < half {
            return u32::try_from(free_half).unwrap_or(DEFAULT_MAX_MEMORY_KIB);
        }
    }
    u32::try_from(half).unwrap_or(DEFAULT_MAX_MEMORY_KIB)
}

/// Chooses the KDF (with costs) for a new keyslot whose area key is `key_len` bytes.
pub fn keyslot_kdf(opts: &PbkdfOptions, key_len: usize) -> Result<Kdf> {
    opts.validate()?;
    let kdf = match opts.kind {
        KdfKind::Pbkdf2(hash) => {
            let iterations = match opts.force_iterations {
                Some(i) => i,
                None => pbkdf2_iterations_for(hash, key_len, opts.iter_time_ms)?,
            };
            Kdf::Pbkdf2 { hash, iterations }
        }
        KdfKind::Argon2(variant) => {
            let memory = opts.max_memory_kib.unwrap_or(DEFAULT_MAX_MEMORY_KIB);
            let lanes = opts.parallel.unwrap_or(DEFAULT_PARALLEL);
            // cryptsetup 2.6 (`init_pbkdf_type`) caps lanes at 4 and at the online CPUs, and
            // memory at what the machine can spare, forced costs or not.
            let lanes = lanes
                .min(KdfLimits::NEW_KEYSLOT.argon2_max_lanes)
                .min(online_cpus());
            let memory = memory.min(adjusted_physical_memory_kib());
            match opts.force_iterations {
                Some(time) => Kdf::Argon2 {
                    variant,
                    time,
                    memory_kib: memory,
                    lanes,
                },
                None => {
                    let min_memory = MIN_BENCH_MEMORY_KIB.min(memory);
                    let search = Argon2Search {
                        min_time: KdfLimits::NEW_KEYSLOT.argon2_min_time,
                        min_memory_kib: min_memory,
                        max_memory_kib: memory,
                        lanes,
                        target_ms: opts.iter_time_ms,
                    };
                    let (time, memory_kib) =
                        search.run(|t, m, p| measure_argon2(variant, t, m, p, key_len))?;
                    Kdf::Argon2 {
                        variant,
                        time,
                        memory_kib,
                        lanes,
                    }
                }
            }
        }
    };
    kdf.check(&KdfLimits::NEW_KEYSLOT)?;
    Ok(kdf)
}

/// Iterations for a new volume key digest over a `key_len`-byte key: calibrated to 125 ms and at
/// least 1000, or exactly 1000 when `forced` (`--pbkdf-force-iterations` was given).
pub fn digest_iterations(hash: HashAlgorithm, key_len: usize, forced: bool) -> Result<u32> {
    if forced {
        return Ok(KdfLimits::NEW_KEYSLOT.pbkdf2_min_iterations);
    }
    pbkdf2_iterations_for(hash, key_len, DIGEST_ITER_TIME_MS)
}

/// PBKDF2 iterations taking about `time_ms` for a `key_len`-byte output, at least 1000.
pub fn pbkdf2_iterations_for(hash: HashAlgorithm, key_len: usize, time_ms: u32) -> Result<u32> {
    let per_second = pbkdf2_iterations_per_second(hash, key_len)?;
    scale_iterations(per_second, time_ms)
}

fn scale_iterations(per_second: u32, time_ms: u32) -> Result<u32> {
    let n = u64::from(per_second) * u64::from(time_ms) / 1000;
    let n = u32::try_from(n)
        .map_err(|_| Error::InvalidArgument("PBKDF2 iteration count overflow".into()))?;
    Ok(n.max(KdfLimits::NEW_KEYSLOT.pbkdf2_min_iterations))
}

/// Measures PBKDF2 speed in iterations per second of CPU time (cryptsetup's `crypt_pbkdf_check`
/// with a 1000 ms target).
pub fn pbkdf2_iterations_per_second(hash: HashAlgorithm, key_len: usize) -> Result<u32> {
    if key_len == 0 || key_len > super::kdf::MAX_DERIVED_KEY_LEN {
        return Err(Error::InvalidArgument(format!(
            "benchmark key length {key_len}"
        )));
    }
    let mut out = zeroize::Zeroizing::new(vec![0u8; key_len]);
    pbkdf2_search(|iterations| {
        let clock = ThreadClock::start();
        hash.pbkdf2_into(b"foobarfo", b"01234567890abcdef", iterations, &mut out)?;
        Ok(u64::try_from(clock.elapsed().as_millis()).unwrap_or(u64::MAX))
    })
}

/// The iteration search of `crypt_pbkdf_check`, over a `measure(iterations) -> ms` function.
fn pbkdf2_search(mut measure: impl FnMut(u32) -> Result<u64>) -> Result<u32> {
    let mut iterations: u32 = 1 << 15;
    let mut per_second: u32 = 0;
    let mut step = 0;
    loop {
        let ms = measure(iterations)?;
        if let Some(v) = (u64::from(iterations) * 1000).checked_div(ms) {
            per_second = u32::try_from(v)
                .map_err(|_| Error::InvalidArgument("PBKDF2 benchmark overflow".into()))?;
        }
        if ms > 500 {
            return Ok(per_second);
        }
        let shift = match ms {
            0..=62 => 4,
            63..=125 => 3,
            126..=250 => 2,
            _ => 1,
        };
        iterations = iterations.checked_mul(1 << shift).unwrap_or(0);
        step += 1;
        if step > 10 || iterations == 0 {
            return Err(Error::InvalidArgument(
                "PBKDF2 benchmark did not converge".into(),
            ));
        }
    }
}

fn measure_argon2(
    variant: Argon2Variant,
    time: u32,
    memory_kib: u32,
    lanes: u32,
    key_len: usize,
) -> Result<u64> {
    let mut out = zeroize::Zeroizing::new(vec![0u8; key_len]);
    // Wall time, not CPU time: the lanes run on several threads.
    let start = Instant::now();
    argon2_derive(
        variant,
        Argon2Costs {
            time,
            memory_kib,
            lanes,
        },
        Argon2Inputs {
            password: b"foobarfo",
            salt: b"0123456789abcdef0123456789abcdef",
            secret: &[],
            associated_data: &[],
        },
        &mut out,
    )?;
    Ok(u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX))
}

/// The Argon2 cost search of cryptsetup's `crypt_argon2_check`.
#[derive(Debug, Clone, Copy)]
struct Argon2Search {
    min_time: u32,
    min_memory_kib: u32,
    max_memory_kib: u32,
    lanes: u32,
    target_ms: u32,
}

enum Next {
    Continue,
    Final,
}

impl Argon2Search {
    /// Returns (time, memory_kib).
    fn run(self, mut measure: impl FnMut(u32, u32, u32) -> Result<u64>) -> Result<(u32, u32)> {
        if self.target_ms == 0 || self.lanes == 0 {
            return Err(Error::InvalidArgument(
                "invalid Argon2 benchmark parameters".into(),
            ));
        }
        let min_m = self.min_memory_kib.max(self.lanes.saturating_mul(8));
        if self.max_memory_kib < min_m {
            return Err(Error::InvalidArgument(format!(
                "Argon2 memory ceiling {} KiB is below the minimum {min_m} KiB",
                self.max_memory_kib
            )));
        }
        let target = u64::from(self.target_ms);
        let ms_atleast = target * BENCH_PERCENT_ATLEAST / 100;
        let ms_atmost = target * BENCH_PERCENT_ATMOST / 100;
        let mut sample = |t: u32, m: u32, samples: usize, early: u64| -> Result<u64> {
            let mut best = u64::MAX;
            for _ in 0..samples {
                let ms = measure(t, m, self.lanes)?;
                if ms < early {
                    return Ok(ms);
                }
                best = best.min(ms);
            }
            Ok(best)
        };

        let mut t = self.min_time;
        let mut m = min_m;
        // 1. Find costs that take at least BENCH_MIN_MS.
        let mut ms;
        loop {
            ms = sample(t, m, BENCH_SAMPLES_FAST, BENCH_MIN_MS)?;
            if ms >= BENCH_MIN_MS {
                break;
            }
            if m == self.max_memory_kib {
                if ms < BENCH_MIN_MS_FAST {
                    t = t.saturating_mul(16);
                } else {
                    let new = scale_u32(t, BENCH_MIN_MS, ms);
                    if new == t {
                        break;
                    }
                    t = new;
                }
            } else {
                if ms < BENCH_MIN_MS_FAST {
                    m = m.saturating_mul(16);
                } else {
                    let new = scale_u32(m, BENCH_MIN_MS, ms);
                    if new == m {
                        break;
                    }
                    m = new;
                }
                m = m.min(self.max_memory_kib);
            }
            if t == u32::MAX {
                return Err(Error::InvalidArgument(
                    "Argon2 benchmark did not converge".into(),
                ));
            }
        }
        // 2./3. Extrapolate to the target, re-measure until within the acceptance range.
        loop {
            if let Next::Final = self.next_params(&mut t, &mut m, ms, min_m) {
                break;
            }
            ms = sample(t, m, BENCH_SAMPLES_SLOW, ms_atleast)?;
            if ms >= ms_atleast && ms <= ms_atmost {
                break;
            }
        }
        Ok((t, m))
    }

    /// cryptsetup's `next_argon2_params`.
    fn next_params(&self, t: &mut u32, m: &mut u32, ms: u64, min_m: u32) -> Next {
        let (old_t, old_m) = (*t, *m);
        let target = u64::from(self.target_ms);
        let ms = ms.max(1);
        if ms > target {
            let new_t = sat_u32(u64::from(*t) * target / ms);
            if new_t < self.min_time {
                let num = u64::from(*t) * u64::from(*m) * target;
                let denom = u64::from(self.min_time).max(1) * ms;
                *t = self.min_time;
                *m = sat_u32(num / denom);
                if *m < min_m {
                    *m = min_m;
                    return Next::Final;
                }
            } else {
                *t = new_t;
            }
        } else {
            let new_m = u64::from(*m) * target / ms;
            if new_m > u64::from(self.max_memory_kib) {
                let num = u64::from(*t) * u64::from(*m) * target;
                let denom = u64::from(self.max_memory_kib) * ms;
                *t = sat_u32(num / denom);
                *m = self.max_memory_kib;
                if *t <= self.min_time {
                    *t = self.min_time;
                    return Next::Final;
                }
            } else if new_m < u64::from(min_m) {
                *m = min_m;
                return Next::Final;
            } else {
                *m = sat_u32(new_m);
            }
        }
        if old_t == *t && old_m == *m {
            Next::Final
        } else {
            Next::Continue
        }
    }
}

fn sat_u32(v: u64) -> u32 {
    u32::try_from(v).unwrap_or(u32::MAX)
}

fn scale_u32(v: u32, num: u64, denom: u64) -> u32 {
    sat_u32(u64::from(v) * num / denom.max(1))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::cast_possible_truncation)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    #[test]
    fn adjusted_memory_like_cryptsetup() {
        let gib = 1024 * 1024;
        let m = |total, free, swap| {
            adjusted_memory(Some(MemInfo {
                total_kib: total,
                free_kib: free,
                swap_kib: swap,
            }))
        };
        assert_eq!(m(24 * gib, 20 * gib, 0), 12 * 1024 * 1024);
        // < 4 GiB, no swap: half of free if smaller and > 64 MiB.
        assert_eq!(m(2 * gib, gib, 0), 512 * 1024);
        assert_eq!(m(2 * gib, gib, 1), 1024 * 1024);
        assert_eq!(m(2 * gib, 100 * 1024, 0), 1024 * 1024);
        // Bogus values fall back to 1 GiB.
        assert_eq!(m(1024, 0, 0), DEFAULT_MAX_MEMORY_KIB);
        assert_eq!(adjusted_memory(None), DEFAULT_MAX_MEMORY_KIB);
    }

    #[test]
    fn options_validated_like_cryptsetup() {
        let base = PbkdfOptions::default();
        assert!(base.validate().is_ok());
        let bad = [
            PbkdfOptions {
                iter_time_ms: 0,
                ..base
            },
            PbkdfOptions {
                max_memory_kib: Some(4 * 1024 * 1024 + 1),
                ..base
            },
            PbkdfOptions {
                max_memory_kib: Some(0),
                ..base
            },
            PbkdfOptions {
                parallel: Some(0),
                ..base
            },
            PbkdfOptions {
                force_iterations: Some(3),
                ..base
            },
            PbkdfOptions {
                force_iterations: Some(4),
                max_memory_kib: Some(31),
                ..base
            },
            PbkdfOptions {
                kind: KdfKind::Pbkdf2(HashAlgorithm::Sha256),
                parallel: Some(1),
                ..base
            },
            PbkdfOptions {
                kind: KdfKind::Pbkdf2(HashAlgorithm::Sha256),
                force_iterations: Some(999),
                ..base
            },
        ];
        for o in bad {
            assert_eq!(
                o.validate().unwrap_err().kind(),
                ErrorKind::InvalidArgument,
                "{o:?}"
            );
        }
        // Forced: zero iteration time is fine.
        assert!(
            PbkdfOptions {
                iter_time_ms: 0,
                force_iterations: Some(4),
                ..base
            }
            .validate()
            .is_ok()
        );
    }

    #[test]
    fn forced_costs_skip_the_benchmark() {
        let o = PbkdfOptions {
            force_iterations: Some(5),
            max_memory_kib: Some(64),
            parallel: Some(4),
            ..Default::default()
        };
        // Lanes are capped at the online CPUs even when forced, as in cryptsetup 2.6.
        let lanes = online_cpus().min(4);
        assert_eq!(
            keyslot_kdf(&o, 64).unwrap(),
            Kdf::Argon2 {
                variant: Argon2Variant::Argon2id,
                time: 5,
                memory_kib: 64,
                lanes
            }
        );
        // More than 4 lanes requested: capped, not refused.
        let o8 = PbkdfOptions {
            parallel: Some(8),
            ..o
        };
        assert!(
            matches!(keyslot_kdf(&o8, 64).unwrap(), Kdf::Argon2 { lanes: l, .. } if l == lanes)
        );
        let p = PbkdfOptions {
            kind: KdfKind::Pbkdf2(HashAlgorithm::Sha512),
            force_iterations: Some(1234),
            ..Default::default()
        };
        assert_eq!(
            keyslot_kdf(&p, 32).unwrap(),
            Kdf::Pbkdf2 {
                hash: HashAlgorithm::Sha512,
                iterations: 1234
            }
        );
        assert_eq!(
            digest_iterations(HashAlgorithm::Sha256, 64, true).unwrap(),
            1000
        );
    }

    /// A machine where Argon2 costs `t * m / 1000` ms (1 KiB-pass per microsecond).
    fn model(t: u32, m: u32, _p: u32) -> Result<u64> {
        Ok(u64::from(t) * u64::from(m) / 1000)
    }

    #[test]
    fn argon2_search_hits_target_with_max_memory_first() {
        let s = Argon2Search {
            min_time: 4,
            min_memory_kib: 64 * 1024,
            max_memory_kib: 1024 * 1024,
            lanes: 4,
            target_ms: 2000,
        };
        let (t, m) = s.run(model).unwrap();
        // Memory is raised first; 1 GiB at t=4 takes ~4194 ms, so memory must shrink to fit.
        let ms = model(t, m, 4).unwrap();
        assert!((1900..=2200).contains(&ms), "t={t} m={m} ms={ms}");
        assert_eq!(t, 4);

        // A fast machine: memory hits the ceiling, then time grows.
        let fast = |t: u32, m: u32, _| Ok(u64::from(t) * u64::from(m) / 100_000);
        let (t, m) = s.run(fast).unwrap();
        assert_eq!(m, 1024 * 1024);
        let ms = fast(t, m, 4).unwrap();
        assert!((1900..=2200).contains(&ms), "t={t} m={m} ms={ms}");
        assert!(t > 4);
    }

    #[test]
    fn argon2_search_slow_machine_stops_at_minimums() {
        let s = Argon2Search {
            min_time: 4,
            min_memory_kib: 64 * 1024,
            max_memory_kib: 1024 * 1024,
            lanes: 4,
            target_ms: 100,
        };
        let slow = |t: u32, m: u32, _| Ok(u64::from(t) * u64::from(m) / 10);
        let (t, m) = s.run(slow).unwrap();
        assert_eq!((t, m), (4, 64 * 1024));
    }

    #[test]
    fn pbkdf2_search_like_cryptsetup() {
        // 1,000,000 iterations per second.
        let mut calls = Vec::new();
        let per_sec = pbkdf2_search(|i| {
            calls.push(i);
            Ok(u64::from(i) / 1000)
        })
        .unwrap();
        // 32768 iterations take 32 ms (<= 62: x16), 524288 take 524 ms (> 500: done).
        assert_eq!(calls, vec![1 << 15, 1 << 19]);
        assert_eq!(u64::from(per_sec), (1u64 << 19) * 1000 / 524);
        assert_eq!(scale_iterations(per_sec, 2000).unwrap(), per_sec * 2);
        assert_eq!(scale_iterations(100, 2000).unwrap(), 1000);
        // Never converging is an error, not a hang.
        assert!(pbkdf2_search(|_| Ok(0)).is_err());
    }

    #[test]
    fn real_calibration_small_costs() {
        let o = PbkdfOptions {
            iter_time_ms: 300,
            max_memory_kib: Some(2048),
            parallel: Some(2),
            ..Default::default()
        };
        let kdf = keyslot_kdf(&o, 64).unwrap();
        let Kdf::Argon2 {
            time,
            memory_kib,
            lanes,
            ..
        } = kdf
        else {
            panic!("{kdf:?}")
        };
        assert!(
            time >= 4 && memory_kib <= 2048 && (1..=2).contains(&lanes),
            "{kdf}"
        );
        let start = Instant::now();
        kdf.derive(b"pw", &[0u8; 32], 64).unwrap();
        let ms = start.elapsed().as_millis();
        // Generous bounds: other work shares the CPUs.
        assert!((100..3000).contains(&ms), "{kdf} took {ms} ms");
    }
}

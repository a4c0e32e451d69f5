//! What the PBKDF calibration needs to know about the machine: online CPUs, physical and free
//! memory, swap, and the CPU time the calling thread has used. Read from `/proc` (no unsafe, no
//! libc); every reader has a fallback so a missing `/proc` never fails a format.

use std::time::{Duration, Instant};

/// Memory figures from `/proc/meminfo`, in KiB.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct MemInfo {
    /// `MemTotal` (what `sysconf(_SC_PHYS_PAGES)` reports).
    pub(crate) total_kib: u64,
    /// `MemFree` (what `sysconf(_SC_AVPHYS_PAGES)` reports).
    pub(crate) free_kib: u64,
    /// `SwapTotal`.
    pub(crate) swap_kib: u64,
}

impl MemInfo {
    /// Reads `/proc/meminfo`; `None` if it is missing or unreadable.
    pub(crate) fn read() -> Option<MemInfo> {
        let text = std::fs::read_to_string("/proc/meminfo").ok()?;
        MemInfo::parse(&text)
    }

    /// Parses the text of `/proc/meminfo`.
    pub(crate) fn parse(text: &str) -> Option<MemInfo> {
        let field = |name: &str| -> Option<u64> {
            text.lines().find_map(|line| {
                let rest = line.strip_prefix(name)?.strip_prefix(':')?;
                rest.split_whitespace().next()?.parse().ok()
            })
        };
        Some(MemInfo {
            total_kib: field("MemTotal")?,
            free_kib: field("MemFree").unwrap_or(0),
            swap_kib: field("SwapTotal").unwrap_or(0),
        })
    }
}

/// Number of CPUs this process may run on (at least 1).
pub(crate) fn online_cpus() -> u32 {
    std::thread::available_parallelism()
        .map(|n| u32::try_from(n.get()).unwrap_or(u32::MAX))
        .unwrap_or(1)
}

/// A clock for benchmarking single-threaded work: the CPU time of the calling thread (from
/// `/proc/thread-self/schedstat`, nanosecond resolution) where available, else wall time.
///
/// cryptsetup measures PBKDF2 in CPU time (`getrusage`) so that a busy machine does not lower
/// the iteration count; this does the same.
pub(crate) struct ThreadClock {
    start_cpu: Option<u64>,
    start_wall: Instant,
}

impl ThreadClock {
    /// Starts measuring.
    pub(crate) fn start() -> ThreadClock {
        ThreadClock {
            start_cpu: thread_cpu_ns(),
            start_wall: Instant::now(),
        }
    }

    /// Elapsed CPU time of this thread (or wall time if CPU time is not available).
    pub(crate) fn elapsed(&self) -> Duration {
        match (self.start_cpu, thread_cpu_ns()) {
            (Some(a), Some(b)) if b >= a => Duration::from_nanos(b - a),
            _ => self.start_wall.elapsed(),
        }
    }
}

fn thread_cpu_ns() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    text.split_whitespace().next()?.parse().ok()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::cast_possible_truncation)]
mod tests {
    use super::*;

    #[test]
    fn parses_meminfo() {
        let text = "MemTotal:       24683656 kB\nMemFree:        22130148 kB\n\
                    MemAvailable:   23000000 kB\nSwapTotal:             0 kB\n";
        let m = MemInfo::parse(text).unwrap();
        assert_eq!(
            m,
            MemInfo {
                total_kib: 24683656,
                free_kib: 22130148,
                swap_kib: 0
            }
        );
        assert_eq!(MemInfo::parse("garbage"), None);
    }

    #[test]
    fn cpus_at_least_one() {
        assert!(online_cpus() >= 1);
    }

    #[test]
    fn thread_clock_advances_with_work() {
        let c = ThreadClock::start();
        let mut x = 0u64;
        let t = Instant::now();
        while t.elapsed() < Duration::from_millis(30) {
            x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
        }
        assert!(c.elapsed() >= Duration::from_millis(5), "{:?}", c.elapsed());
    }
}

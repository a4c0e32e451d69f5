//! What the PBKDF calibration needs to know about the machine: online CPUs, physical and free
//! memory (capped by the process's cgroup memory limit), swap, and the CPU time the calling
//! thread has used. Read from `/proc` and `/sys/fs/cgroup` (no unsafe, no libc); every reader has
//! a fallback so a missing `/proc` never fails a format.

use std::path::{Component, Path};
use std::time::{Duration, Instant};

/// Memory figures from `/proc/meminfo`, in KiB, with total and free memory capped by the cgroup
/// memory limit (a container's memory is what the OOM killer enforces, not the host's).
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
    /// Reads `/proc/meminfo` and caps it by [`cgroup_memory_limit_kib`]; `None` if
    /// `/proc/meminfo` is missing or unreadable.
    pub(crate) fn read() -> Option<MemInfo> {
        let text = std::fs::read_to_string("/proc/meminfo").ok()?;
        Some(MemInfo::parse(&text)?.capped(cgroup_memory_limit_kib()))
    }

    /// Total and free memory capped at `limit_kib` (if any).
    pub(crate) fn capped(self, limit_kib: Option<u64>) -> MemInfo {
        match limit_kib {
            Some(l) => MemInfo {
                total_kib: self.total_kib.min(l),
                free_kib: self.free_kib.min(l),
                ..self
            },
            None => self,
        }
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

/// The memory limit of this process's cgroup in KiB: the smallest cgroup v2 `memory.max` or v1
/// `memory.limit_in_bytes` from its own cgroup up to the hierarchy's root; `None` if unlimited or
/// unknown.
pub(crate) fn cgroup_memory_limit_kib() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    cgroup_memory_limit_in(&text, Path::new("/sys/fs/cgroup"))
}

/// [`cgroup_memory_limit_kib`] for the `/proc/self/cgroup` text `proc_cgroup` and the cgroup file
/// systems mounted at `root` (v2 at `root`, v1's memory controller at `root/memory`).
pub(crate) fn cgroup_memory_limit_in(proc_cgroup: &str, root: &Path) -> Option<u64> {
    let mut limit: Option<u64> = None;
    for line in proc_cgroup.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(_), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let (top, file) = if controllers.is_empty() {
            (root.to_path_buf(), "memory.max")
        } else if controllers.split(',').any(|c| c == "memory") {
            (root.join("memory"), "memory.limit_in_bytes")
        } else {
            continue;
        };
        // Outside our cgroup namespace the path may climb (`/..`): then only the root counts.
        let rel = Path::new(path.trim_start_matches('/'));
        let mut dir = if rel.components().all(|c| matches!(c, Component::Normal(_))) {
            top.join(rel)
        } else {
            top.clone()
        };
        loop {
            if let Some(bytes) = read_limit(&dir.join(file)) {
                limit = Some(limit.map_or(bytes, |l| l.min(bytes)));
            }
            if dir == top || !dir.pop() {
                break;
            }
        }
    }
    limit.map(|bytes| bytes / 1024)
}

/// A limit file: a byte count, or `max` (v2) for none. v1's "unlimited" is a huge number, which
/// the caller's minimum with the physical memory makes harmless.
fn read_limit(path: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(path).ok()?;
    match text.trim() {
        "max" => None,
        v => v.parse().ok(),
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
    fn cgroup_limits_v2_and_v1() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        let write = |rel: &str, text: &str| {
            let p = r.join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        };
        // v2: the pod's limit (parent) is smaller than the container's own.
        write("memory.max", "max\n");
        write("kubepods/pod1/memory.max", "536870912\n");
        write("kubepods/pod1/ctr/memory.max", "1073741824\n");
        assert_eq!(
            cgroup_memory_limit_in("0::/kubepods/pod1/ctr\n", r),
            Some(512 * 1024)
        );
        // No limit anywhere, or no cgroup information: none.
        assert_eq!(cgroup_memory_limit_in("0::/\n", r), None);
        assert_eq!(cgroup_memory_limit_in("", r), None);
        // A path outside the namespace only consults the root; a missing directory walks up.
        assert_eq!(cgroup_memory_limit_in("0::/../other\n", r), None);
        assert_eq!(
            cgroup_memory_limit_in("0::/kubepods/pod1/gone/ctr\n", r),
            Some(512 * 1024)
        );
        // v1: the memory controller's limit_in_bytes.
        write("memory/docker/abc/memory.limit_in_bytes", "268435456\n");
        write("memory/memory.limit_in_bytes", "9223372036854771712\n");
        let v1 = "12:cpu,cpuacct:/docker/abc\n11:memory:/docker/abc\n";
        assert_eq!(cgroup_memory_limit_in(v1, r), Some(256 * 1024));
        // The cap applies to total and free memory.
        let m = MemInfo {
            total_kib: 24683656,
            free_kib: 22130148,
            swap_kib: 0,
        };
        assert_eq!(m.capped(Some(256 * 1024)).total_kib, 256 * 1024);
        assert_eq!(m.capped(Some(256 * 1024)).free_kib, 256 * 1024);
        assert_eq!(m.capped(None), m);
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

//! Argon2 lanes really run in parallel (the `argon2` crate's `parallel` feature): a 4-lane
//! derivation accumulates CPU time on several threads of this process, and it is faster than a
//! 1-lane derivation of the same memory and time cost on a machine with several CPUs.
//!
//! Linux only (reads `/proc/self/task/*/stat`).
#![allow(clippy::unwrap_used, clippy::cast_possible_truncation)]

use std::collections::HashMap;
use std::time::Instant;

use luks2::crypto::kdf::{Argon2Variant, Kdf};

/// CPU time (user + system, clock ticks) of every thread of this process.
fn thread_ticks() -> HashMap<String, u64> {
    let mut out = HashMap::new();
    for entry in std::fs::read_dir("/proc/self/task").unwrap() {
        let entry = entry.unwrap();
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // Fields after the parenthesised command name: state is field 3, utime 14, stime 15.
        let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
            continue;
        };
        let f: Vec<&str> = rest.split_whitespace().collect();
        let ticks = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
        out.insert(entry.file_name().to_string_lossy().into_owned(), ticks);
    }
    out
}

fn derive(lanes: u32) -> f64 {
    let kdf = Kdf::Argon2 {
        variant: Argon2Variant::Argon2id,
        time: 4,
        memory_kib: 64 * 1024,
        lanes,
    };
    let start = Instant::now();
    kdf.derive(b"passphrase", &[9u8; 32], 64).unwrap();
    start.elapsed().as_secs_f64() * 1000.0
}

#[test]
fn four_lanes_use_several_threads() {
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    if cpus < 2 {
        eprintln!("skipping: only {cpus} CPU online, Argon2 lanes cannot run in parallel");
        return;
    }
    // Warm up the thread pool so the measurement sees steady-state threads.
    derive(4);
    let before = thread_ticks();
    let four = derive(4);
    let after = thread_ticks();
    let busy: Vec<u64> = after
        .iter()
        .map(|(tid, t)| t.saturating_sub(*before.get(tid).unwrap_or(&0)))
        .filter(|&d| d >= 2)
        .collect();
    let one = derive(1);
    eprintln!(
        "argon2id t=4 m=64MiB: 4 lanes {four:.0} ms, 1 lane {one:.0} ms (ratio {:.2}); \
         threads with CPU time during the 4-lane run: {} (ticks {busy:?}), {cpus} CPUs",
        one / four,
        busy.len()
    );
    assert!(
        busy.len() >= 2,
        "a 4-lane Argon2 derivation ran on {} thread(s): lanes are not computed in parallel",
        busy.len()
    );
}

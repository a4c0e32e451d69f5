//! Step timing of a stage: one debug line per step (`step`, `elapsed_ms`), so that a stage's
//! time can be split into its steps (`benches/src/bin/stage_compare.rs` reads them).

use std::time::Instant;

use tracing::debug;

/// Milliseconds since `t`, for log fields.
pub fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1000.0
}

/// Logs how long one step took since `t` (debug level: `step`, `elapsed_ms`).
pub fn step(name: &'static str, t: Instant) {
    debug!(step = name, elapsed_ms = ms(t), "step");
}

//! Activation latency of the `luks2` command against `cryptsetup open` on the same device, in
//! the same VM run. Prints a `LATENCY` line (ours/cryptsetup) and never asserts a speed.

use std::time::Instant;

use testkit::vm::*;

const LUKS2: &str = env!("CARGO_BIN_EXE_luks2");

/// Activation latency of the whole command, `luks2 open` against `cryptsetup open` (same
/// header, PBKDF2 at 1000 iterations so the KDF is negligible), alternated; median of the rounds.
#[test]
fn vm_activation_latency_ours_vs_cryptsetup() {
    require_privileged!();
    const LATENCY_ROUNDS: usize = 5;
    let lo = LoopDev::new(40);
    cryptsetup_format(lo.path(), 512, 4096, Kdf::Pbkdf2);
    let ours = unique_name("latours");
    let theirs = unique_name("latcs");
    let _g1 = MappingGuard(ours.clone());
    let _g2 = MappingGuard(theirs.clone());
    let (mut o, mut c) = (Vec::new(), Vec::new());
    for _ in 0..LATENCY_ROUNDS {
        let t = Instant::now();
        run_with_stdin(
            LUKS2,
            &["open", "--key-file", "-", lo.path(), ours.as_str()],
            Some(PASSPHRASE),
        );
        o.push(t.elapsed());
        run(LUKS2, &["close", ours.as_str()]);

        let t = Instant::now();
        cryptsetup_open(lo.path(), &theirs, &[]);
        c.push(t.elapsed());
        run("cryptsetup", &["close", theirs.as_str()]);
    }
    o.sort();
    c.sort();
    let (om, cm) = (o[LATENCY_ROUNDS / 2], c[LATENCY_ROUNDS / 2]);
    println!(
        "\nLATENCY open: ours {:.1} ms, cryptsetup {:.1} ms, ratio ours/cryptsetup {:.2} (median of {LATENCY_ROUNDS})",
        om.as_secs_f64() * 1e3,
        cm.as_secs_f64() * 1e3,
        om.as_secs_f64() / cm.as_secs_f64()
    );
}

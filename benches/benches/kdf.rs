//! PBKDF2 (SHA-256, SHA-512) across iteration counts and Argon2i/Argon2id across memory and
//! lanes, as the keyslot KDF runs them (32-byte salt, 64-byte output for aes-xts-plain64 with a
//! 512-bit key). Sizes stay modest so that `cargo bench` finishes in minutes; the 1 GiB costs
//! cryptsetup picks by default are measured by the compare program.
// criterion_group! defines an undocumented public function.
#![allow(missing_docs)]

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use std::time::Duration;

use luks2::crypto::{Argon2Variant, HashAlgorithm, Kdf};

const SALT: [u8; 32] = [7; 32];
const PASS: &[u8] = b"correct horse battery staple";

fn pbkdf2(c: &mut Criterion) {
    let mut g = c.benchmark_group("pbkdf2");
    g.sample_size(10).measurement_time(Duration::from_secs(3));
    for hash in [HashAlgorithm::Sha256, HashAlgorithm::Sha512] {
        for iterations in [1_000u32, 10_000, 100_000] {
            let kdf = Kdf::Pbkdf2 { hash, iterations };
            g.throughput(Throughput::Elements(u64::from(iterations)));
            g.bench_with_input(BenchmarkId::new(hash.name(), iterations), &kdf, |b, kdf| {
                b.iter(|| kdf.derive(black_box(PASS), &SALT, 64).expect("derive"))
            });
        }
    }
    g.finish();
}

fn argon2(c: &mut Criterion) {
    let mut g = c.benchmark_group("argon2");
    g.sample_size(10).measurement_time(Duration::from_secs(3));
    for variant in [Argon2Variant::Argon2i, Argon2Variant::Argon2id] {
        for memory_kib in [8 * 1024u32, 64 * 1024] {
            for lanes in [1u32, 4] {
                let kdf = Kdf::Argon2 {
                    variant,
                    time: 4,
                    memory_kib,
                    lanes,
                };
                g.throughput(Throughput::Bytes(u64::from(memory_kib) * 1024));
                let id = format!(
                    "{}/m={}MiB/p={lanes}/t=4",
                    variant.name(),
                    memory_kib / 1024
                );
                g.bench_function(id, |b| {
                    b.iter(|| kdf.derive(black_box(PASS), &SALT, 64).expect("derive"))
                });
            }
        }
    }
    g.finish();
}

criterion_group!(benches, pbkdf2, argon2);
criterion_main!(benches);

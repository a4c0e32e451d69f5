//! The anti-forensic splitter (4000 stripes, as every LUKS2 keyslot uses): split and merge for
//! 256- and 512-bit keys with the hashes cryptsetup offers.
// criterion_group! defines an undocumented public function.
#![allow(missing_docs)]

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;

use luks2::crypto::{HashAlgorithm, LUKS_STRIPES, af};

fn af_bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("af");
    for key_len in [32usize, 64] {
        let key = vec![0x5au8; key_len];
        for hash in [
            HashAlgorithm::Sha1,
            HashAlgorithm::Sha256,
            HashAlgorithm::Sha512,
        ] {
            g.throughput(Throughput::Bytes((key_len * LUKS_STRIPES as usize) as u64));
            let id = format!("{}/{}bit", hash.name(), key_len * 8);
            g.bench_with_input(BenchmarkId::new("split", &id), &key, |b, key| {
                b.iter(|| af::split(black_box(key), LUKS_STRIPES, hash).expect("split"))
            });
            let material = af::split(&key, LUKS_STRIPES, hash).expect("split");
            g.bench_with_input(BenchmarkId::new("merge", &id), &material, |b, m| {
                b.iter(|| af::merge(black_box(m), key_len, LUKS_STRIPES, hash).expect("merge"))
            });
        }
    }
    g.finish();
}

criterion_group!(benches, af_bench);
criterion_main!(benches);

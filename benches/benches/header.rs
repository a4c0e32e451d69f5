//! Header parsing and validation: the binary header, the JSON metadata, and reading both copies
//! of a whole header (checksums, validation, copy selection) from memory.
// criterion_group! defines an undocumented public function.
#![allow(missing_docs)]

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;

use benches::{FixedKdf, formatted};
use luks2::crypto::HashAlgorithm;
use luks2::header::{self, binary::BinaryHeader};
use luks2::metadata::Metadata;

fn header(c: &mut Criterion) {
    let (dev, _) = formatted(FixedKdf::Pbkdf2(HashAlgorithm::Sha256, 1000)).expect("format");
    let hdr = header::read(&dev).expect("read");
    let hdr_size = usize::try_from(hdr.hdr_size()).expect("size");
    let area = dev
        .as_slice()
        .get(..usize::try_from(hdr.header_area_size()).expect("size"))
        .expect("area")
        .to_vec();
    let bin = area.get(..4096).expect("bin").to_vec();
    let json = area.get(4096..hdr_size).expect("json").to_vec();

    let mut g = c.benchmark_group("header");
    g.bench_function("binary_parse", |b| {
        b.iter(|| BinaryHeader::parse(black_box(&bin)).expect("parse"))
    });
    g.throughput(Throughput::Bytes(json.len() as u64));
    g.bench_function("json_parse_validate", |b| {
        b.iter(|| Metadata::parse(black_box(&json), hdr.hdr_size()).expect("parse"))
    });
    g.bench_function("json_serialize", |b| {
        b.iter(|| black_box(&hdr.metadata).to_json_area().expect("serialize"))
    });
    g.throughput(Throughput::Bytes(2 * hdr.hdr_size()));
    g.bench_function("read_both_copies", |b| {
        b.iter(|| header::read_bytes(black_box(&area)).expect("read"))
    });
    g.finish();
}

criterion_group!(benches, header);
criterion_main!(benches);

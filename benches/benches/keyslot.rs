//! Keyslot operations: decrypting a keyslot area (aes-xts-plain64, 512-bit key, 4000 stripes),
//! opening a keyslot end to end (KDF + decrypt + AF merge + digest), unlocking a device, and
//! formatting one (cryptsetup's default 16 MiB header area, forced KDF costs so that the time
//! measured is ours and not the calibration's).
// criterion_group! defines an undocumented public function.
#![allow(missing_docs)]

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use std::time::Duration;

use benches::{DEVICE_SIZE, FixedKdf, PASSPHRASE, formatted};
use luks2::crypto::{Argon2Variant, HashAlgorithm, KeyslotCipher};
use luks2::format;
use luks2::header;
use luks2::io::MemDevice;
use luks2::keyslot;
use luks2::metadata::KeyslotId;
use luks2::{Luks2Device, Passphrase};

const PBKDF2_1000: FixedKdf = FixedKdf::Pbkdf2(HashAlgorithm::Sha256, 1000);
const ARGON2ID_SMALL: FixedKdf = FixedKdf::Argon2(Argon2Variant::Argon2id, 4, 8 * 1024, 1);

fn decrypt_area(c: &mut Criterion) {
    let cipher = KeyslotCipher::AES_XTS_PLAIN64;
    let key = [0x11u8; 64];
    // round_up(64 * 4000, 512): the material of a 512-bit volume key.
    let mut buf = vec![0u8; 256_000];
    let mut g = c.benchmark_group("keyslot");
    g.throughput(Throughput::Bytes(buf.len() as u64));
    g.bench_function("decrypt_area/aes-xts-plain64/512bit", |b| {
        b.iter(|| cipher.decrypt(black_box(&key), &mut buf).expect("decrypt"))
    });
    g.finish();
}

fn open(c: &mut Criterion) {
    let mut g = c.benchmark_group("keyslot");
    g.sample_size(20).measurement_time(Duration::from_secs(3));
    for (name, kdf) in [
        ("pbkdf2-sha256-1000", PBKDF2_1000),
        ("argon2id-8MiB-t4-p1", ARGON2ID_SMALL),
    ] {
        let (dev, _) = formatted(kdf).expect("format");
        let hdr = header::read(&dev).expect("read");
        g.bench_function(format!("open_keyslot/{name}"), |b| {
            b.iter(|| {
                keyslot::open_keyslot(
                    &dev,
                    &hdr.metadata,
                    KeyslotId::new(0),
                    black_box(PASSPHRASE),
                )
                .expect("open")
            })
        });
        let luks = Luks2Device::open(dev).expect("open device");
        let pass = Passphrase::from_bytes(PASSPHRASE);
        g.bench_function(format!("unlock_device/{name}"), |b| {
            b.iter(|| luks.unlock(black_box(&pass), None).expect("unlock"))
        });
    }
    g.finish();
}

fn format_bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("format");
    g.sample_size(10).measurement_time(Duration::from_secs(5));
    for (name, kdf) in [
        ("pbkdf2-sha256-1000", PBKDF2_1000),
        ("argon2id-8MiB-t4-p1", ARGON2ID_SMALL),
    ] {
        let opts = kdf.format_options();
        g.bench_function(name, |b| {
            b.iter_batched(
                || MemDevice::new(DEVICE_SIZE),
                |mut dev| format::format(&mut dev, PASSPHRASE, &opts).expect("format"),
                BatchSize::LargeInput,
            )
        });
    }
    g.finish();
}

criterion_group!(benches, decrypt_area, open, format_bench);
criterion_main!(benches);

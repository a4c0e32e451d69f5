//! Privileged (VM) test: `status` and `list` of a crypt mapping whose key is inline in its table
//! (cryptsetup with `--disable-keyring`) leave no copy of the key in this process's memory.
//! Run by `scripts/vm-test`.
#![allow(missing_docs, clippy::unwrap_used)]

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;

use dm::{DeviceMapper, TableKey};
use testkit::vm::*;

/// The value of a lowercase hex digit (the kernel prints keys with `%02x`).
fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        _ => None,
    }
}

/// Shortest piece of the key (bytes) whose hex text counts as a leak.
const WINDOW: usize = 16;

/// Whether a run of hex digits spells (at either parity) WINDOW consecutive bytes of `key`.
/// The needle is the raw key, never its hex text, so the search cannot find itself.
fn run_spells_key(run: &[u8], key: &[u8]) -> bool {
    (0..2).any(|parity| {
        let bytes: Vec<u8> = run
            .get(parity..)
            .unwrap_or_default()
            .chunks_exact(2)
            .map(|c| (hex_val(c[0]).unwrap() << 4) | hex_val(c[1]).unwrap())
            .collect();
        bytes
            .windows(WINDOW)
            .any(|w| key.windows(WINDOW).any(|k| k == w))
    })
}

/// Whether `hay` contains the hex text of WINDOW consecutive bytes of `key`.
fn contains_key_hex(hay: &[u8], key: &[u8]) -> bool {
    let mut start = 0;
    for i in 0..=hay.len() {
        if i < hay.len() && hex_val(hay[i]).is_some() {
            continue;
        }
        if i - start >= 2 * WINDOW && run_spells_key(&hay[start..i], key) {
            return true;
        }
        start = i + 1;
    }
    false
}

/// Scans every readable and writable private mapping of this process (heap, anonymous memory,
/// stacks) for the hex text of `key`; returns the mappings where it was found. Uses only the
/// buffers it is given, so that scanning does not reuse (and overwrite) freed memory first.
fn scan_own_memory(key: &[u8], maps: &mut String, buf: &mut [u8]) -> Vec<String> {
    maps.clear();
    File::open("/proc/self/maps")
        .unwrap()
        .read_to_string(maps)
        .unwrap();
    let mem = File::open("/proc/self/mem").unwrap();
    let overlap = 4 * WINDOW;
    let mut found = Vec::new();
    for line in maps.lines() {
        let mut fields = line.split_ascii_whitespace();
        let (Some(range), Some(perms)) = (fields.next(), fields.next()) else {
            continue;
        };
        if !perms.starts_with("rw") || line.contains("[vvar]") || line.contains("[vsyscall]") {
            continue;
        }
        let (a, b) = range.split_once('-').unwrap();
        let (start, end) = (
            u64::from_str_radix(a, 16).unwrap(),
            u64::from_str_radix(b, 16).unwrap(),
        );
        let mut at = start;
        while at < end {
            let len = usize::try_from((end - at).min(buf.len() as u64)).unwrap();
            let Ok(n) = mem.read_at(&mut buf[..len], at) else {
                break;
            };
            if n == 0 {
                break;
            }
            if contains_key_hex(&buf[..n], key) {
                found.push(line.to_owned());
                break;
            }
            if at + (n as u64) >= end {
                break;
            }
            // Overlap the chunks so that no text is cut in two.
            at += (n - overlap.min(n - 1)) as u64;
        }
    }
    found
}

#[test]
fn the_scan_finds_a_key_in_memory() {
    // Checks the checker (runs anywhere): hex text of a key in a heap String is found.
    let key: Vec<u8> = (0u8..64).map(|i| i.wrapping_mul(37) ^ 0x5a).collect();
    let leaked: String = key[10..30].iter().map(|b| format!("{b:02x}")).collect();
    let leaked = std::hint::black_box(format!("aes-xts-plain64 {leaked} 0 7:0 32768"));
    let mut maps = String::with_capacity(1 << 20);
    let mut buf = vec![0u8; 4 << 20];
    assert!(!scan_own_memory(&key, &mut maps, &mut buf).is_empty());
    drop(leaked);
    assert!(contains_key_hex(
        b"xx0102030405060708090a0b0c0d0e0f10yy",
        &(1u8..=16).collect::<Vec<_>>()
    ));
    assert!(!contains_key_hex(
        b"0102030405060708090a0b0c0d0e0f",
        &(1u8..=16).collect::<Vec<_>>()
    ));
}

/// cryptsetup's mapping with the key inline in the table: `status` and `list` see it as a crypt
/// mapping with an inline key, and no copy of the key (as the kernel prints it, in hex) is left
/// anywhere in this process's memory afterwards.
#[test]
fn vm_status_of_an_inline_key_mapping_keeps_no_key_bytes() {
    require_privileged!();
    let lo = LoopDev::new(48);
    cryptsetup_format(lo.path(), 512, 4096, Kdf::Pbkdf2);
    let key = cryptsetup_volume_key(lo.path());
    let name = unique_name("inline");
    let _g = MappingGuard(name.clone());
    cryptsetup_open(lo.path(), &name, &["--disable-keyring"]);

    // Everything the scan needs is allocated before the calls under test.
    let mut maps = String::with_capacity(1 << 20);
    let mut buf = vec![0u8; 4 << 20];
    let dm = DeviceMapper::new().unwrap();
    for _ in 0..3 {
        let st = dm.status(&name).unwrap().expect("active");
        assert_eq!(st.crypt.key, TableKey::Inline, "the key is inline");
        assert_eq!(st.crypt.cipher, "aes-xts-plain64");
        assert_eq!(st.backing_path.as_deref(), Some(lo.dev.as_path()));
        assert!(!dm.list().unwrap().contains(&name), "not ours");
    }
    let found = scan_own_memory(&key, &mut maps, &mut buf);
    assert!(
        found.is_empty(),
        "hex key text left in memory after status/list: {found:?}"
    );
    run("cryptsetup", &["close", name.as_str()]);
}

#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The whole life of a volume through the driver's gRPC socket, on a real kernel: create, stage,
//! publish, write, unpublish, unstage, stage again, read back, expand (controller and node),
//! stats, delete — for ext4, xfs and raw block volumes, encrypted and unencrypted side by side.
//! Encrypted volumes use a real OpenBao (Transit) started in the test.

use std::collections::HashMap;
use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

use testkit::plugin::*;

const GIB: i64 = 1 << 30;

/// Writes a marker to the published volume (a file, or the first 4 KiB of a block device).
fn write_marker(target: &Path, block: bool, marker: &[u8]) {
    if block {
        let mut f = fs::OpenOptions::new().write(true).open(target).unwrap();
        f.write_all(marker).unwrap();
        f.sync_all().unwrap();
    } else {
        fs::write(target.join("marker"), marker).unwrap();
        sh("sync");
    }
}

fn read_marker(target: &Path, block: bool, len: usize) -> Vec<u8> {
    if block {
        let mut f = fs::File::open(target).unwrap();
        let mut buf = vec![0; len];
        f.seek(SeekFrom::Start(0)).unwrap();
        f.read_exact(&mut buf).unwrap();
        buf
    } else {
        fs::read(target.join("marker")).unwrap()
    }
}

fn life(
    rig: &mut Rig,
    name: &str,
    params: &HashMap<String, String>,
    secrets: &HashMap<String, String>,
    block: bool,
    fs_type: &str,
) {
    let encrypted = params.get("encryptionEnabled").map(String::as_str) == Some("true");
    let v = rig.create(name, GIB, params, block).unwrap();
    let id = v.volume_id.clone();
    assert_eq!(v.capacity_bytes, GIB);
    // CreateVolume is idempotent.
    assert_eq!(rig.create(name, GIB, params, block).unwrap(), v);
    let staging = rig.path(&format!("staging-{id}"));
    let target = rig.path(&format!("pods/{id}/target"));
    let c = cap(block, fs_type);

    let first = rig.stage(&v, &staging, c.clone(), secrets).unwrap();
    // Repeats are idempotent.
    rig.stage(&v, &staging, c.clone(), secrets).unwrap();
    rig.publish(&id, &staging, &target, c.clone(), false)
        .unwrap();
    rig.publish(&id, &staging, &target, c.clone(), false)
        .unwrap();
    if encrypted {
        assert!(rig.record_file(&id).exists(), "wrapped-key record stored");
        let mapper = Path::new("/dev/mapper").join(format!("onmetal-csi-{id}"));
        assert!(is_block_device(&mapper));
        // The key is in the keyring, never in the table.
        let table = sh(&format!("dmsetup table --showkeys onmetal-csi-{id}"));
        assert!(table.contains(":64:logon:"), "{table}");
        // The on-disk data is ciphertext: cryptsetup sees a LUKS2 device.
        let dump = sh(&format!("cryptsetup luksDump {}", rig.image(&id).display()));
        assert!(
            dump.contains("aes-xts-plain64") && dump.contains("onmetal-csi-wrapped-key"),
            "{dump}"
        );
    } else {
        assert!(!rig.record_file(&id).exists());
        assert!(
            !Path::new("/dev/mapper")
                .join(format!("onmetal-csi-{id}"))
                .exists()
        );
    }
    if !block {
        assert_eq!(
            mount_dev(&staging),
            mount_dev(&target),
            "target is a bind of the staging mount"
        );
    }
    let marker = format!("data of {name}").into_bytes();
    write_marker(&target, block, &marker);
    if encrypted && block {
        // The plaintext never reaches the backing file: what the volume's first bytes are on
        // disk (behind the 16 MiB LUKS2 header area) is ciphertext.
        let mut raw = vec![0u8; marker.len()];
        let mut f = fs::File::open(rig.image(&id)).unwrap();
        f.seek(SeekFrom::Start(16 << 20)).unwrap();
        f.read_exact(&mut raw).unwrap();
        assert_ne!(raw, marker);
    }

    rig.unpublish(&id, &target).unwrap();
    rig.unpublish(&id, &target).unwrap();
    assert!(!target.exists());
    rig.unstage(&id, &staging).unwrap();
    rig.unstage(&id, &staging).unwrap();
    assert!(mount_dev(&staging).is_none());

    let later = rig.stage(&v, &staging, c.clone(), secrets).unwrap();
    eprintln!(
        "LATENCY stage {name}: first {:.1} ms, later {:.1} ms",
        first.as_secs_f64() * 1e3,
        later.as_secs_f64() * 1e3
    );
    rig.publish(&id, &staging, &target, c.clone(), false)
        .unwrap();
    assert_eq!(read_marker(&target, block, marker.len()), marker);

    // Online expansion: controller grows the backing volume, node grows device, mapping, fs.
    let grown = rig.expand(&id, 2 * GIB).unwrap();
    assert_eq!(grown, 2 * GIB);
    let node_size = rig.node_expand(&id, &target).unwrap();
    let overhead = if encrypted { 16 << 20 } else { 0 };
    assert_eq!(node_size, 2 * GIB - overhead, "usable size after expansion");
    let stats = rig.stats(&id, &target).unwrap();
    let bytes = &stats.usage[0];
    if block {
        assert_eq!(bytes.total, 2 * GIB - overhead);
    } else {
        assert!(bytes.total > GIB + GIB / 2, "filesystem grew: {bytes:?}");
        assert_eq!(stats.usage.len(), 2, "bytes and inodes");
    }
    assert!(!stats.volume_condition.unwrap().abnormal);
    assert_eq!(read_marker(&target, block, marker.len()), marker);

    rig.unpublish(&id, &target).unwrap();
    rig.unstage(&id, &staging).unwrap();
    rig.delete(&id).unwrap();
    rig.delete(&id).unwrap();
    assert!(!rig.image(&id).exists());
    assert!(
        !rig.record_file(&id).exists(),
        "DeleteVolume removes the wrapped-key record"
    );
}

#[test]
fn vm_life_encrypted_ext4() {
    require_privileged!();
    let (bao, token) = bao();
    let mut rig = Rig::new();
    life(
        &mut rig,
        "pvc-enc-ext4",
        &transit_params(&bao.url),
        &token_secrets(&token),
        false,
        "ext4",
    );
}

#[test]
fn vm_life_encrypted_xfs() {
    require_privileged!();
    let (bao, token) = bao();
    let mut rig = Rig::new();
    life(
        &mut rig,
        "pvc-enc-xfs",
        &transit_params(&bao.url),
        &token_secrets(&token),
        false,
        "xfs",
    );
}

#[test]
fn vm_life_encrypted_block() {
    require_privileged!();
    let (bao, token) = bao();
    let mut rig = Rig::new();
    life(
        &mut rig,
        "pvc-enc-block",
        &transit_params(&bao.url),
        &token_secrets(&token),
        true,
        "",
    );
}

#[test]
fn vm_life_plain_side_by_side() {
    require_privileged!();
    let mut rig = Rig::new();
    life(
        &mut rig,
        "pvc-plain-ext4",
        &plain_params(),
        &HashMap::new(),
        false,
        "ext4",
    );
    life(
        &mut rig,
        "pvc-plain-xfs",
        &plain_params(),
        &HashMap::new(),
        false,
        "xfs",
    );
    life(
        &mut rig,
        "pvc-plain-block",
        &plain_params(),
        &HashMap::new(),
        true,
        "",
    );
}

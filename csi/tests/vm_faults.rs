#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Faults on a real kernel, through the driver's socket: KMS outages and revoked credentials,
//! lost records, destroyed or foreign data, crashes in the middle of a first stage, plugin
//! restarts. Nothing may be lost and nothing may be formatted over.

use std::collections::HashMap;
use std::fs;
use std::path::Path;

use testkit::plugin::*;

const GIB: i64 = 1 << 30;

/// A staged and published encrypted ext4 volume.
struct Mounted {
    v: csi::proto::Volume,
    staging: std::path::PathBuf,
    target: std::path::PathBuf,
}

fn mounted(rig: &mut Rig, name: &str, url: &str, token: &str) -> Mounted {
    let v = rig.create(name, GIB, &transit_params(url), false).unwrap();
    let staging = rig.path(&format!("staging-{}", v.volume_id));
    let target = rig.path(&format!("target-{}", v.volume_id));
    rig.stage(&v, &staging, cap(false, "ext4"), &token_secrets(token))
        .unwrap();
    rig.publish(&v.volume_id, &staging, &target, cap(false, "ext4"), false)
        .unwrap();
    Mounted { v, staging, target }
}

fn code(r: Result<impl std::fmt::Debug, tonic::Status>) -> (tonic::Code, String) {
    let e = r.expect_err("the call must fail");
    (e.code(), e.message().to_owned())
}

/// `volume rewrap --all` of the rig's records under `KEK` with OpenBao's root token (the
/// operator's), plus `extra` flags; asserts success and returns the output.
fn rewrap_all(rig: &Rig, url: &str, extra: &[&str]) -> String {
    let admin = rig.path("admin-secret");
    fs::create_dir_all(&admin).unwrap();
    fs::write(admin.join("token"), testkit::plugin::peers::bao::ROOT).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_onmetal-csi-driver"))
        .args(["volume", "rewrap", "--all"])
        .args(extra)
        .arg("--key-store")
        .arg(format!("dir:{}", rig.key_dir().display()))
        .args(["--type", "transit", "--endpoint", url, "--key-id", KEK])
        .arg("--secret-dir")
        .arg(&admin)
        .output()
        .unwrap();
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "rewrap: {text}");
    text
}

#[test]
fn vm_transit_outage_never_disturbs_mounted_volumes() {
    require_privileged!();
    let (bao, token) = bao();
    let mut rig = Rig::new();
    let m = mounted(&mut rig, "pvc-outage", &bao.url, &token);
    fs::write(m.target.join("before"), b"written before the outage").unwrap();

    // The KMS stops answering (SIGSTOP: the process is there, nothing answers).
    bao.proc.freeze();
    fs::write(m.target.join("during"), b"written during the outage").unwrap();
    sh("sync");
    assert_eq!(
        fs::read(m.target.join("before")).unwrap(),
        b"written before the outage"
    );
    // A new stage needs the KMS: UNAVAILABLE (retryable), never anything destructive.
    let v2 = rig
        .create("pvc-outage-2", GIB, &transit_params(&bao.url), false)
        .unwrap();
    let staging2 = rig.path("staging-2");
    let (c, msg) = code(rig.stage(&v2, &staging2, cap(false, "ext4"), &token_secrets(&token)));
    assert_eq!(c, tonic::Code::Unavailable, "{msg}");
    assert!(!rig.record_file(&v2.volume_id).exists());
    // Unpublish/unstage of the mounted volume need no KMS either.
    rig.unpublish(&m.v.volume_id, &m.target).unwrap();
    rig.unstage(&m.v.volume_id, &m.staging).unwrap();

    // The KMS is back: both stage, the data is there.
    bao.proc.thaw();
    rig.stage(&m.v, &m.staging, cap(false, "ext4"), &token_secrets(&token))
        .unwrap();
    assert_eq!(
        fs::read(m.staging.join("during")).unwrap(),
        b"written during the outage"
    );
    rig.stage(&v2, &staging2, cap(false, "ext4"), &token_secrets(&token))
        .unwrap();
}

#[test]
fn vm_revoked_token_is_permission_denied() {
    require_privileged!();
    let (bao, token) = bao();
    let mut rig = Rig::new();
    let m = mounted(&mut rig, "pvc-revoked", &bao.url, &token);
    rig.unpublish(&m.v.volume_id, &m.target).unwrap();
    rig.unstage(&m.v.volume_id, &m.staging).unwrap();
    bao.revoke(&token);
    let (c, msg) = code(rig.stage(&m.v, &m.staging, cap(false, "ext4"), &token_secrets(&token)));
    assert_eq!(c, tonic::Code::PermissionDenied, "{msg}");
    // A fresh token stages again.
    let fresh = bao.policy_token(KEK, "");
    rig.stage(&m.v, &m.staging, cap(false, "ext4"), &token_secrets(&fresh))
        .unwrap();
}

/// Loop devices whose backing file is `image` (also once it is deleted), from sysfs.
fn loops_of(image: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in fs::read_dir("/sys/block").unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if let Ok(b) = fs::read_to_string(e.path().join("loop/backing_file"))
            && b.trim_end().trim_end_matches(" (deleted)") == image.to_str().unwrap()
        {
            out.push(name);
        }
    }
    out
}

/// The controller as deployed: its container has no `/dev/loop*` (here: its own mount
/// namespace with an empty tmpfs on `/dev`). Its in-use check still sees a volume attached on
/// the node (the loop devices' backing files come from sysfs) and refuses DeleteVolume, nothing
/// removed; after NodeUnstage it deletes. A volume whose image file is removed while it is
/// attached is still detached by NodeUnstage (the kernel shows the file as "… (deleted)").
#[test]
fn vm_a_controller_without_dev_sees_attached_volumes_and_unstage_detaches_a_deleted_image() {
    require_privileged!();
    let (bao, token) = bao();
    let mut node = Rig::set_up(
        Setup {
            mode: "node".into(),
            ..Setup::default()
        },
        Vec::new(),
        Vec::new(),
    );
    let mut ctl = Rig::set_up(
        Setup {
            node_id: "controller".into(),
            mode: "controller".into(),
            backend: Some(vec![format!("local:{}", node.backend_dir().display())]),
            key_dir: Some(node.key_dir()),
            wrap: ["unshare", "--mount", "--propagation", "private", "sh", "-c"]
                .into_iter()
                .map(String::from)
                .chain([r#"mount -t tmpfs none /dev && exec "$0" "$@""#.to_owned()])
                .collect(),
        },
        Vec::new(),
        Vec::new(),
    );
    let v = ctl
        .create("pvc-deployed", GIB, &transit_params(&bao.url), false)
        .unwrap();
    node.volumes.push(v.volume_id.clone());
    let staging = node.path("staging");
    node.stage(&v, &staging, cap(false, "ext4"), &token_secrets(&token))
        .unwrap();
    let image = node.image(&v.volume_id);
    assert_eq!(loops_of(&image).len(), 1, "attached");

    let (c, msg) = code(ctl.delete(&v.volume_id));
    assert_eq!(c, tonic::Code::FailedPrecondition, "{msg}");
    assert!(msg.contains("still attached"), "{msg}");
    assert!(image.exists(), "nothing removed");
    assert!(node.record_file(&v.volume_id).exists(), "nothing removed");

    node.unstage(&v.volume_id, &staging).unwrap();
    assert!(loops_of(&image).is_empty());
    ctl.delete(&v.volume_id).unwrap();
    assert!(!image.exists());
    assert!(!node.record_file(&v.volume_id).exists());

    // The image file goes while the volume is staged (an operator's rm, a wiped disk).
    let w = ctl
        .create("pvc-file-gone", GIB, &plain_params(), false)
        .unwrap();
    node.stage(&w, &staging, cap(false, "ext4"), &HashMap::new())
        .unwrap();
    let image = node.image(&w.volume_id);
    fs::remove_file(&image).unwrap();
    assert_eq!(loops_of(&image).len(), 1, "still attached, file deleted");
    node.unstage(&w.volume_id, &staging).unwrap();
    assert!(
        loops_of(&image).is_empty(),
        "the deleted image's loop device is detached"
    );
    assert!(mount_dev(&staging).is_none());
    ctl.delete(&w.volume_id).unwrap();
}

#[test]
fn vm_deleted_record_is_restored_from_the_luks2_token() {
    require_privileged!();
    let (bao, token) = bao();
    let mut rig = Rig::new();
    let m = mounted(&mut rig, "pvc-restore", &bao.url, &token);
    fs::write(m.target.join("f"), b"kept").unwrap();
    rig.unpublish(&m.v.volume_id, &m.target).unwrap();
    rig.unstage(&m.v.volume_id, &m.staging).unwrap();
    let record = fs::read(rig.record_file(&m.v.volume_id)).unwrap();
    fs::remove_file(rig.record_file(&m.v.volume_id)).unwrap();

    rig.stage(&m.v, &m.staging, cap(false, "ext4"), &token_secrets(&token))
        .unwrap();
    assert_eq!(fs::read(m.staging.join("f")).unwrap(), b"kept");
    let restored = fs::read(rig.record_file(&m.v.volume_id)).unwrap();
    assert_eq!(restored, record, "the same record, state formatted");
    assert!(rig.logs().contains("restored it from the LUKS2 token"));
}

#[test]
fn vm_zeroed_headers_are_refused_then_restored_from_the_record() {
    require_privileged!();
    let (bao, token) = bao();
    let mut rig = Rig::new();
    let m = mounted(&mut rig, "pvc-zeroed", &bao.url, &token);
    fs::write(m.target.join("f"), b"behind the header").unwrap();
    rig.unpublish(&m.v.volume_id, &m.target).unwrap();
    rig.unstage(&m.v.volume_id, &m.staging).unwrap();
    let image = rig.image(&m.v.volume_id);
    // Both header copies (and the keyslot area) destroyed: the device reads blank at its start.
    sh(&format!(
        "dd if=/dev/zero of={} bs=1M count=16 conv=notrunc status=none",
        image.display()
    ));
    let before = fingerprint(&image);
    let (c, msg) = code(rig.stage(&m.v, &m.staging, cap(false, "ext4"), &token_secrets(&token)));
    assert_eq!(c, tonic::Code::FailedPrecondition, "{msg}");
    assert!(msg.contains("refusing to format"), "{msg}");
    assert_eq!(fingerprint(&image), before, "device untouched");

    // The operator rebuilds the header from the record; then the volume stages with its data.
    let image_arg = image.display().to_string();
    rig.volume_cmd(
        "restore-header",
        &m.v.volume_id,
        &bao.url,
        &token,
        &["--device", &image_arg],
    );
    rig.stage(&m.v, &m.staging, cap(false, "ext4"), &token_secrets(&token))
        .unwrap();
    assert_eq!(fs::read(m.staging.join("f")).unwrap(), b"behind the header");
    rig.unstage(&m.v.volume_id, &m.staging).unwrap();

    // The escape hatch: `volume key` writes the DEK; stock cryptsetup opens the device with it
    // and shows the same files.
    let key = rig.path("dek.bin");
    let key_arg = key.display().to_string();
    let warning = rig.volume_cmd(
        "key",
        &m.v.volume_id,
        &bao.url,
        &token,
        &["--output", &key_arg],
    );
    assert!(!warning.is_empty(), "volume key warns");
    let name = format!("cs-{}", m.v.volume_id);
    let mnt = rig.path("cryptsetup-mnt");
    fs::create_dir_all(&mnt).unwrap();
    sh(&format!(
        "cryptsetup open --key-file {} {} {name}",
        key.display(),
        image.display()
    ));
    let shown = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "mount /dev/mapper/{name} {m} && cat {m}/f; umount {m}; cryptsetup close {name}",
            m = mnt.display()
        ))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&shown.stdout), "behind the header");
}

#[test]
fn vm_device_with_data_but_no_record_is_refused() {
    require_privileged!();
    let (bao, token) = bao();
    let mut rig = Rig::new();
    let v = rig
        .create("pvc-foreign", GIB, &transit_params(&bao.url), false)
        .unwrap();
    // Someone's filesystem on the device, no record.
    sh(&format!(
        "mkfs.ext4 -q -F {}",
        rig.image(&v.volume_id).display()
    ));
    let before = fingerprint(&rig.image(&v.volume_id));
    let staging = rig.path("staging");
    let (c, msg) = code(rig.stage(&v, &staging, cap(false, "ext4"), &token_secrets(&token)));
    assert_eq!(c, tonic::Code::FailedPrecondition, "{msg}");
    assert!(msg.contains("ext"), "{msg}");
    assert_eq!(
        fingerprint(&rig.image(&v.volume_id)),
        before,
        "device untouched"
    );
    assert!(!rig.record_file(&v.volume_id).exists());

    // A stray non-zero byte in the last MiB is data too.
    let v2 = rig
        .create("pvc-foreign-2", GIB, &transit_params(&bao.url), false)
        .unwrap();
    sh(&format!(
        "printf x | dd of={} bs=1 seek={} conv=notrunc status=none",
        rig.image(&v2.volume_id).display(),
        GIB - 100
    ));
    let (c, msg) = code(rig.stage(
        &v2,
        &rig.path("staging-2"),
        cap(false, "ext4"),
        &token_secrets(&token),
    ));
    assert_eq!(c, tonic::Code::FailedPrecondition, "{msg}");
}

#[test]
fn vm_killed_first_stage_converges() {
    require_privileged!();
    let (bao, token) = bao();
    for point in ["after-record", "after-format", "before-activate"] {
        let mut rig = Rig::new();
        let v = rig
            .create(
                &format!("pvc-crash-{point}"),
                GIB,
                &transit_params(&bao.url),
                false,
            )
            .unwrap();
        let staging = rig.path("staging");
        // Restart the driver with the crash point armed: the first stage dies there.
        rig.kill();
        rig.env = vec![("ONMETAL_CSI_CRASH_AT".into(), point.into())];
        rig.start();
        assert!(
            rig.stage(&v, &staging, cap(false, "ext4"), &token_secrets(&token))
                .is_err()
        );
        let status = rig.wait_exit();
        assert!(
            !status.success(),
            "{point}: the driver died at the crash point"
        );
        rig.env.clear();
        rig.start();
        rig.stage(&v, &staging, cap(false, "ext4"), &token_secrets(&token))
            .unwrap_or_else(|e| panic!("{point}: retry after the crash: {e}"));
        fs::write(staging.join("f"), point).unwrap();
        rig.unstage(&v.volume_id, &staging).unwrap();
        rig.stage(&v, &staging, cap(false, "ext4"), &token_secrets(&token))
            .unwrap();
        assert_eq!(fs::read_to_string(staging.join("f")).unwrap(), point);
        let rec = fs::read_to_string(rig.record_file(&v.volume_id)).unwrap();
        assert!(rec.contains("\"state\":\"formatted\""), "{point}: {rec}");
    }
}

#[test]
fn vm_plugin_restart_keeps_staged_volumes() {
    require_privileged!();
    let (bao, token) = bao();
    let mut rig = Rig::new();
    let m = mounted(&mut rig, "pvc-restart", &bao.url, &token);
    fs::write(m.target.join("f"), b"survives").unwrap();
    rig.kill();
    // The mount keeps working without the plugin.
    assert_eq!(fs::read(m.target.join("f")).unwrap(), b"survives");
    rig.start();
    // State comes from the kernel: a repeated stage and publish are no-ops, unpublish and
    // unstage work, and no KMS call is needed for any of them.
    bao.proc.freeze();
    rig.stage(&m.v, &m.staging, cap(false, "ext4"), &token_secrets(&token))
        .unwrap();
    let t2 = rig.path("target-2");
    rig.publish(&m.v.volume_id, &m.staging, &t2, cap(false, "ext4"), true)
        .unwrap();
    assert_eq!(fs::read(t2.join("f")).unwrap(), b"survives");
    assert!(fs::write(t2.join("g"), b"x").is_err(), "read-only publish");
    rig.unpublish(&m.v.volume_id, &t2).unwrap();
    rig.unpublish(&m.v.volume_id, &m.target).unwrap();
    rig.unstage(&m.v.volume_id, &m.staging).unwrap();
    assert!(!Path::new(&format!("/dev/mapper/onmetal-csi-{}", m.v.volume_id)).exists());
    bao.proc.thaw();
}

#[test]
fn vm_rewrapped_volume_stages_after_the_old_kek_version_is_retired() {
    require_privileged!();
    let (bao, token) = bao();
    let mut rig = Rig::new();
    let m = mounted(&mut rig, "pvc-rewrap", &bao.url, &token);
    fs::write(m.target.join("f"), b"rotated").unwrap();
    rig.unpublish(&m.v.volume_id, &m.target).unwrap();
    rig.unstage(&m.v.volume_id, &m.staging).unwrap();

    // KEK rotation: a new version, every record rewrapped to it (operator, admin token), the old
    // version retired.
    bao.rotate(KEK);
    rewrap_all(&rig, &bao.url, &[]);
    let record = fs::read_to_string(rig.record_file(&m.v.volume_id)).unwrap();
    assert!(record.contains("vault:v2:"), "{record}");
    let (code, body) = bao.api(
        "POST",
        &format!("transit/keys/{KEK}/config"),
        Some(r#"{"min_decryption_version":2}"#),
        testkit::plugin::peers::bao::ROOT,
    );
    assert!((200..300).contains(&code), "{code} {body}");

    // The volume stages with the rewrapped record, and the token copy in the header follows.
    rig.stage(&m.v, &m.staging, cap(false, "ext4"), &token_secrets(&token))
        .unwrap();
    assert_eq!(fs::read(m.staging.join("f")).unwrap(), b"rotated");
    let json = sh(&format!(
        "cryptsetup luksDump --dump-json-metadata {}",
        rig.image(&m.v.volume_id).display()
    ));
    assert!(
        json.contains("vault:v2:") && !json.contains("vault:v1:"),
        "{json}"
    );
}

/// KEK rotation to another key: `volume rewrap --all --to-key-id` moves every record to another KEK while
/// the PVs' volume contexts (immutable) still name the old one. Every volume must stage again
/// with its original context, unwrapping with the record's key, after the old key is gone.
#[test]
fn vm_volumes_rewrapped_to_another_key_stage_with_their_original_context() {
    require_privileged!();
    const NEW_KEK: &str = "pvc-kek-b";
    let (bao, _) = bao();
    bao.create_key(NEW_KEK);
    // The node's token may use both keys (the KMS policy decides which keys it may use).
    let token = bao.policy_token(
        KEK,
        &format!(
            "path \"transit/encrypt/{NEW_KEK}\" {{ capabilities = [\"update\"] }}\n\
             path \"transit/decrypt/{NEW_KEK}\" {{ capabilities = [\"update\"] }}\n"
        ),
    );
    let mut rig = Rig::new();
    let vols: Vec<Mounted> = ["pvc-move-a", "pvc-move-b"]
        .iter()
        .map(|n| mounted(&mut rig, n, &bao.url, &token))
        .collect();
    for m in &vols {
        fs::write(m.target.join("f"), m.v.volume_id.as_bytes()).unwrap();
        rig.unpublish(&m.v.volume_id, &m.target).unwrap();
        rig.unstage(&m.v.volume_id, &m.staging).unwrap();
    }

    let text = rewrap_all(&rig, &bao.url, &["--to-key-id", NEW_KEK]);
    assert!(text.contains("2 rewrapped"), "{text}");

    // The old key is gone from the KMS: only the record's key can unwrap now.
    let root = testkit::plugin::peers::bao::ROOT;
    let (code, body) = bao.api(
        "POST",
        &format!("transit/keys/{KEK}/config"),
        Some(r#"{"deletion_allowed":true}"#),
        root,
    );
    assert!((200..300).contains(&code), "{code} {body}");
    let (code, body) = bao.api("DELETE", &format!("transit/keys/{KEK}"), None, root);
    assert!((200..300).contains(&code), "{code} {body}");

    for m in &vols {
        assert!(
            m.v.volume_context.values().any(|v| v == KEK),
            "the context still names the old key"
        );
        let record = fs::read_to_string(rig.record_file(&m.v.volume_id)).unwrap();
        assert!(record.contains(NEW_KEK), "{record}");
        rig.stage(&m.v, &m.staging, cap(false, "ext4"), &token_secrets(&token))
            .unwrap();
        assert_eq!(
            fs::read(m.staging.join("f")).unwrap(),
            m.v.volume_id.as_bytes()
        );
        rig.unstage(&m.v.volume_id, &m.staging).unwrap();
    }
}

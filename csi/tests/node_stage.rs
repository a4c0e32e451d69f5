//! NodeStage end to end on the host, unprivileged: the driver's own `node::stage` and
//! `node::unstage` over the test kit's fakes (a sparse file as the device with a real LUKS2
//! format, device-mapper as a table, a recording mounter, an in-memory KMS) and the real dir key
//! store. Covers the first stage, later and repeated stages, a crash at each point of a first
//! stage and the retry that converges, every refusal of the decision table, and the rollback
//! of a failed stage (nothing it set up stays attached, active or mounted; an earlier stage's
//! state is never touched). The same paths against the real kernel: `vm_life.rs`,
//! `vm_faults.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use csi::Kind;
use csi::driver::StagePoint;
use csi::host::fs::FsType;
use csi::keystore::{KeyStore, VolumeState};
use csi::volume_id::VolumeId;
use testkit::driver::{FailAt, Failure, StageRig};

/// The error kind of a stage result.
fn kind(res: csi::Result<()>) -> Kind {
    res.expect_err("the stage must fail").kind()
}

/// Nothing of `id` is attached, active or mounted.
fn nothing_left(rig: &StageRig, id: &VolumeId) {
    assert!(!rig.backend.is_attached(id), "{id}: still attached");
    assert!(
        !rig.mapper.is_active(id.dm_name().as_str()),
        "{id}: mapping still active"
    );
    assert!(
        rig.mounter.mounted_from(&rig.staging(id)).is_none(),
        "{id}: still mounted"
    );
}

/// Staged: attached, the mapping active on the volume's device, the plain device mounted.
fn staged(rig: &StageRig, id: &VolumeId) {
    assert!(rig.backend.is_attached(id), "{id}: not attached");
    let name = id.dm_name();
    assert_eq!(
        rig.mapper.backing(name.as_str()),
        Some(rig.image(id)),
        "{id}: mapping"
    );
    assert!(
        rig.mounter.mounted_from(&rig.staging(id)).is_some(),
        "{id}: not mounted"
    );
}

fn header_uuid(rig: &StageRig, id: &VolumeId) -> Option<String> {
    let f = std::fs::File::open(rig.image(id)).unwrap();
    luks2::header::read(&f).ok().map(|h| h.uuid().into_owned())
}

/// Writes `marker` into the staged volume's plain device (its "data").
fn write_data(rig: &StageRig, id: &VolumeId, marker: &[u8]) {
    let plain = rig.mounter.mounted_from(&rig.staging(id)).expect("staged");
    let f = std::fs::OpenOptions::new().write(true).open(plain).unwrap();
    f.write_all_at(marker, 8 << 20).unwrap();
}

fn read_data(rig: &StageRig, id: &VolumeId, len: usize) -> Vec<u8> {
    let plain = rig.mounter.mounted_from(&rig.staging(id)).expect("staged");
    let f = std::fs::File::open(plain).unwrap();
    let mut buf = vec![0; len];
    f.read_exact_at(&mut buf, 8 << 20).unwrap();
    buf
}

#[tokio::test]
async fn first_stage_formats_records_formatted_activates_and_mounts() {
    let rig = StageRig::new();
    let id = rig.create("pvc-first").await;
    rig.stage(&id).await.unwrap();
    staged(&rig, &id);
    let rec = rig.record(&id).await.expect("record stored");
    assert_eq!(rec.entry.state, VolumeState::Formatted);
    assert!(header_uuid(&rig, &id).is_some(), "LUKS2 header written");
    assert_eq!(rig.kms.wraps(), 1);
    assert_eq!(rig.mounter.mkfs_count(), 1);
    assert_eq!(rig.backend.attaches(), 1);
}

#[tokio::test]
async fn later_stage_opens_without_format_and_keeps_the_data() {
    let rig = StageRig::new();
    let id = rig.create("pvc-later").await;
    rig.stage(&id).await.unwrap();
    let uuid = header_uuid(&rig, &id);
    write_data(&rig, &id, b"kept");
    rig.unstage(&id).await.unwrap();
    nothing_left(&rig, &id);

    rig.stage(&id).await.unwrap();
    staged(&rig, &id);
    assert_eq!(header_uuid(&rig, &id), uuid, "never formatted again");
    assert_eq!(rig.mounter.mkfs_count(), 1, "the filesystem was found");
    assert_eq!(rig.kms.wraps(), 1, "no new key");
    assert_eq!(read_data(&rig, &id, 4), b"kept");
}

#[tokio::test]
async fn repeated_stage_is_idempotent_without_kms() {
    let rig = StageRig::new();
    let id = rig.create("pvc-repeat").await;
    rig.stage(&id).await.unwrap();
    let (wraps, unwraps) = (rig.kms.wraps(), rig.kms.unwraps());
    // The mapping is there and its key is in the keyring: no KMS, no second attach or mount.
    rig.kms.down(true);
    rig.stage(&id).await.unwrap();
    staged(&rig, &id);
    assert_eq!((rig.kms.wraps(), rig.kms.unwraps()), (wraps, unwraps));
    assert_eq!(rig.backend.attaches(), 1);
    assert_eq!(rig.mounter.mount_count(), 1);
}

#[tokio::test]
async fn a_crash_at_each_point_of_a_first_stage_converges_on_retry() {
    let rig = StageRig::new();
    for point in StagePoint::ALL {
        let id = rig.create(&format!("pvc-crash-{}", point.as_str())).await;
        assert!(
            rig.stage_crashing_at(&id, point).await,
            "{point:?}: the stage died there"
        );
        // What the crash left: the record and the header as far as the stage got.
        let rec = rig
            .record(&id)
            .await
            .expect("record stored before any crash point");
        let (state, header) = match point {
            StagePoint::AfterRecord => (VolumeState::Pending, false),
            StagePoint::AfterFormat => (VolumeState::Pending, true),
            StagePoint::BeforeActivate => (VolumeState::Formatted, true),
        };
        assert_eq!(rec.entry.state, state, "{point:?}");
        assert_eq!(header_uuid(&rig, &id).is_some(), header, "{point:?}");
        assert!(!rig.mapper.is_active(id.dm_name().as_str()), "{point:?}");

        rig.stage(&id)
            .await
            .unwrap_or_else(|e| panic!("{point:?}: retry after the crash: {e}"));
        staged(&rig, &id);
        assert_eq!(
            rig.record(&id).await.unwrap().entry.state,
            VolumeState::Formatted,
            "{point:?}"
        );
        let uuid = header_uuid(&rig, &id);
        write_data(&rig, &id, point.as_str().as_bytes());
        rig.unstage(&id).await.unwrap();
        rig.stage(&id).await.unwrap();
        assert_eq!(
            header_uuid(&rig, &id),
            uuid,
            "{point:?}: not formatted again"
        );
        assert_eq!(
            read_data(&rig, &id, point.as_str().len()),
            point.as_str().as_bytes(),
            "{point:?}: data kept"
        );
    }
}

#[tokio::test]
async fn a_device_that_holds_data_and_has_no_record_is_refused() {
    let rig = StageRig::new();
    let id = rig.create("pvc-data").await;
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(rig.image(&id))
        .unwrap();
    f.write_all_at(b"someone's data", 4096).unwrap();
    assert_eq!(kind(rig.stage(&id).await), Kind::FailedPrecondition);
    nothing_left(&rig, &id);
    assert!(rig.record(&id).await.is_none());
    assert_eq!(rig.kms.wraps(), 0, "no key made for a refused device");
}

#[tokio::test]
async fn a_luks2_header_without_record_or_token_is_refused() {
    let rig = StageRig::new();
    let id = rig.create("pvc-foreign-luks").await;
    // Someone else's LUKS2 volume: a header, no token of ours.
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(rig.image(&id))
        .unwrap();
    let vk = luks2::VolumeKey::from_bytes(&[7u8; 64]);
    luks2::format::format_with_volume_key(
        &mut f,
        &vk,
        b"passphrase",
        &csi::crypt::format_options(),
    )
    .unwrap();
    let e = rig.stage(&id).await.unwrap_err();
    assert_eq!(e.kind(), Kind::FailedPrecondition);
    assert!(e.message().contains("no wrapped-key record"), "{e}");
    nothing_left(&rig, &id);
}

#[tokio::test]
async fn a_lost_record_is_restored_from_the_token() {
    let rig = StageRig::new();
    let id = rig.create("pvc-lost").await;
    rig.stage(&id).await.unwrap();
    let before = rig.record(&id).await.unwrap().entry;
    rig.unstage(&id).await.unwrap();
    rig.store.delete(&id).await.unwrap();

    rig.stage(&id).await.unwrap();
    staged(&rig, &id);
    let restored = rig.record(&id).await.expect("restored").entry;
    assert_eq!(restored.record, before.record);
    assert_eq!(restored.state, VolumeState::Formatted);
}

#[tokio::test]
async fn a_pending_record_and_a_foreign_signature_is_refused() {
    let rig = StageRig::new();
    let id = rig.create("pvc-pending-xfs").await;
    assert!(rig.stage_crashing_at(&id, StagePoint::AfterRecord).await);
    rig.unstage(&id).await.unwrap();
    // Someone made a filesystem on the device between our record and our format.
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(rig.image(&id))
        .unwrap();
    f.write_all_at(b"XFSB", 0).unwrap();
    let e = rig.stage(&id).await.unwrap_err();
    assert_eq!(e.kind(), Kind::FailedPrecondition);
    assert!(e.message().contains("xfs"), "{e}");
    nothing_left(&rig, &id);
    assert_eq!(
        rig.record(&id).await.unwrap().entry.state,
        VolumeState::Pending
    );
}

#[tokio::test]
async fn a_formatted_record_without_header_is_refused_never_formatted_again() {
    let rig = StageRig::new();
    let id = rig.create("pvc-zeroed").await;
    rig.stage(&id).await.unwrap();
    rig.unstage(&id).await.unwrap();
    // Both header copies destroyed.
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(rig.image(&id))
        .unwrap();
    f.write_all_at(&vec![0u8; 1 << 20], 0).unwrap();
    let e = rig.stage(&id).await.unwrap_err();
    assert_eq!(e.kind(), Kind::FailedPrecondition);
    assert!(e.message().contains("restore-header"), "{e}");
    assert!(header_uuid(&rig, &id).is_none(), "not formatted again");
    nothing_left(&rig, &id);
}

#[tokio::test]
async fn a_failed_mount_leaves_nothing_attached_active_or_mounted() {
    let rig = StageRig::new();
    let id = rig.create("pvc-bad-option").await;
    rig.mounter.fail_mount(true);
    assert_eq!(kind(rig.stage(&id).await), Kind::Internal);
    nothing_left(&rig, &id);
    assert_eq!(rig.backend.attached(), 0);
    assert_eq!(rig.mapper.active_count(), 0);
    // The record and the format stay: the next stage opens the volume, never formats again.
    let uuid = header_uuid(&rig, &id);
    rig.mounter.fail_mount(false);
    rig.stage(&id).await.unwrap();
    assert_eq!(header_uuid(&rig, &id), uuid);
}

#[tokio::test]
async fn a_failed_mkfs_leaves_nothing_attached_or_active() {
    let rig = StageRig::new();
    let id = rig.create("pvc-mkfs").await;
    rig.mounter.fail_mkfs(true);
    assert_eq!(kind(rig.stage(&id).await), Kind::Internal);
    nothing_left(&rig, &id);
    assert_eq!(rig.backend.attached(), 0);
}

#[tokio::test]
async fn a_denied_kms_leaves_nothing_attached() {
    let rig = StageRig::new();
    let id = rig.create("pvc-denied").await;
    rig.kms.deny(true);
    assert_eq!(kind(rig.stage(&id).await), Kind::PermissionDenied);
    nothing_left(&rig, &id);
    assert_eq!(rig.backend.attached(), 0);
    assert!(rig.record(&id).await.is_none());

    // A later stage of a formatted volume whose token expired meanwhile.
    rig.kms.deny(false);
    rig.stage(&id).await.unwrap();
    rig.unstage(&id).await.unwrap();
    rig.kms.deny(true);
    assert_eq!(kind(rig.stage(&id).await), Kind::PermissionDenied);
    nothing_left(&rig, &id);
}

#[tokio::test]
async fn missing_credentials_are_refused_before_anything_is_attached() {
    let rig = StageRig::new();
    let id = rig.create("pvc-no-token").await;
    let res = rig
        .stage_as(
            &rig.driver,
            &id,
            &StageRig::mount(FsType::Ext4),
            &HashMap::new(),
        )
        .await;
    assert_eq!(kind(res), Kind::InvalidArgument);
    assert_eq!(rig.backend.attaches(), 0, "validated before the attach");
    nothing_left(&rig, &id);
}

#[tokio::test]
async fn an_activation_failure_leaves_nothing_attached() {
    let rig = StageRig::new();
    let id = rig.create("pvc-no-dm").await;
    rig.mapper.fail_activate(true);
    assert_eq!(kind(rig.stage(&id).await), Kind::Unavailable);
    nothing_left(&rig, &id);
}

#[tokio::test]
async fn an_injected_failure_at_each_point_rolls_back() {
    let rig = StageRig::new();
    for point in StagePoint::ALL {
        let id = rig.create(&format!("pvc-fail-{}", point.as_str())).await;
        let driver = rig.driver_with(Arc::new(FailAt {
            point,
            how: Failure::Error,
        }));
        let res = rig
            .stage_as(
                &driver,
                &id,
                &StageRig::mount(FsType::Ext4),
                &StageRig::secrets(),
            )
            .await;
        assert_eq!(kind(res), Kind::Internal, "{point:?}");
        nothing_left(&rig, &id);
        // And the retry converges.
        rig.stage(&id).await.unwrap();
        staged(&rig, &id);
    }
}

#[tokio::test]
async fn the_wrong_filesystem_is_refused_and_rolled_back() {
    let rig = StageRig::new();
    let id = rig.create("pvc-ext4").await;
    rig.stage(&id).await.unwrap();
    rig.unstage(&id).await.unwrap();
    let res = rig
        .stage_as(
            &rig.driver,
            &id,
            &StageRig::mount(FsType::Xfs),
            &StageRig::secrets(),
        )
        .await;
    let e = res.unwrap_err();
    assert_eq!(e.kind(), Kind::FailedPrecondition);
    assert!(e.message().contains("ext4"), "{e}");
    nothing_left(&rig, &id);
}

#[tokio::test]
async fn a_failing_repeat_never_tears_down_the_earlier_stage() {
    let rig = StageRig::new();
    let id = rig.create("pvc-staged").await;
    rig.stage(&id).await.unwrap();
    // A repeat to another staging path whose mount fails: the mapping, the attachment and the
    // first mount were set up by the earlier stage and stay.
    rig.mounter.fail_mount(true);
    let elsewhere = rig.staging(&id).with_extension("other");
    let enc = StageRig::encryption();
    let res = csi::node::stage(
        &rig.driver,
        &id,
        &elsewhere,
        &StageRig::mount(FsType::Ext4),
        Some(&enc),
        &StageRig::secrets(),
    )
    .await;
    assert_eq!(kind(res), Kind::Internal);
    staged(&rig, &id);
    // A repeat with the credentials missing fails before it touches anything.
    let res = rig
        .stage_as(
            &rig.driver,
            &id,
            &StageRig::mount(FsType::Ext4),
            &HashMap::new(),
        )
        .await;
    assert_eq!(kind(res), Kind::InvalidArgument);
    staged(&rig, &id);
}

#[tokio::test]
async fn a_plain_volume_stages_and_a_failed_mount_detaches_it() {
    let rig = StageRig::new();
    let id = rig.create("pvc-plain").await;
    let staging = rig.staging(&id);
    let access = StageRig::mount(FsType::Ext4);
    rig.mounter.fail_mount(true);
    let res = csi::node::stage(&rig.driver, &id, &staging, &access, None, &HashMap::new()).await;
    assert_eq!(kind(res), Kind::Internal);
    assert!(!rig.backend.is_attached(&id));
    rig.mounter.fail_mount(false);
    csi::node::stage(&rig.driver, &id, &staging, &access, None, &HashMap::new())
        .await
        .unwrap();
    assert_eq!(rig.mounter.mounted_from(&staging), Some(rig.image(&id)));
    assert!(
        rig.record(&id).await.is_none(),
        "no record for a plain volume"
    );
}

#[tokio::test]
async fn a_plain_stage_of_an_encrypted_volume_is_refused_block_and_mount() {
    let rig = StageRig::new();
    let id = rig.create("pvc-raw").await;
    rig.stage_as(
        &rig.driver,
        &id,
        &csi::capability::Access::Block,
        &StageRig::secrets(),
    )
    .await
    .unwrap();
    rig.unstage(&id).await.unwrap();
    assert!(header_uuid(&rig, &id).is_some(), "formatted LUKS2");
    let staging = rig.staging(&id);
    for access in [
        csi::capability::Access::Block,
        StageRig::mount(FsType::Ext4),
    ] {
        let res =
            csi::node::stage(&rig.driver, &id, &staging, &access, None, &HashMap::new()).await;
        let e = res.expect_err("a plain stage of our LUKS2 device must fail");
        assert_eq!(
            e.kind(),
            Kind::FailedPrecondition,
            "{access:?}: {}",
            e.message()
        );
        assert!(e.message().contains("LUKS2"), "{access:?}: {}", e.message());
        nothing_left(&rig, &id);
    }
}

/// Replaces `field`'s value `from` with `to` in the stored record of `id` (what `volume rewrap
/// --to-key-id`, or an edit of the Secret, leaves behind).
async fn edit_record(rig: &StageRig, id: &VolumeId, from: &str, to: &str) {
    let cur = rig.record(id).await.expect("a record");
    let mut entry = cur.entry.clone();
    let json = entry.record.to_json().replace(from, to);
    entry.record = kms::WrappedKey::from_json(json.as_bytes()).unwrap();
    rig.store.update(id, &entry, &cur.revision).await.unwrap();
}

/// KEK rotation to another key: after `volume rewrap --to-key-id pvc-kek-2` the record names the new key
/// while the volume context (immutable) still names `pvc-kek`: the volume stages with its
/// original context, and the node asks the KMS for the record's key. A record that moved to
/// another endpoint is refused before any request, and leaves nothing behind.
#[tokio::test]
async fn a_record_rewrapped_to_another_key_stages_with_the_original_context() {
    let rig = StageRig::new();
    let id = rig.create("pvc-moved").await;
    rig.stage(&id).await.unwrap();
    write_data(&rig, &id, b"moved");
    rig.unstage(&id).await.unwrap();

    edit_record(&rig, &id, r#""keyId":"pvc-kek""#, r#""keyId":"pvc-kek-2""#).await;
    rig.stage(&id).await.unwrap();
    staged(&rig, &id);
    assert_eq!(read_data(&rig, &id, 5), b"moved");
    assert_eq!(
        rig.kms.unwrap_key_ids().last().map(String::as_str),
        Some("pvc-kek-2"),
        "unwrapped with the record's key"
    );
    rig.unstage(&id).await.unwrap();

    let unwraps = rig.kms.unwraps();
    edit_record(
        &rig,
        &id,
        "https://127.0.0.1:8200",
        "https://kms.elsewhere.example:8200",
    )
    .await;
    let e = rig.stage(&id).await.expect_err("another endpoint");
    assert_eq!(e.kind(), Kind::FailedPrecondition, "{}", e.message());
    assert!(e.message().contains("endpoint"), "{}", e.message());
    assert_eq!(rig.kms.unwraps(), unwraps, "no request to any KMS");
    nothing_left(&rig, &id);
}

//! NodePublish, NodeUnpublish and NodeUnstage on the host over the test kit's fakes: the driver
//! takes a mount for its own only when it shows this volume. A repeated publish is OK, a
//! publish onto a target that holds another volume or the other access mode is ALREADY_EXISTS;
//! unpublish and unstage refuse (and leave alone) a mount of anything else; unpublish removes
//! only what publish made (an empty directory or file). The same against the kernel's mounts:
//! `vm_life.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use csi::Kind;
use csi::capability::Access;
use csi::host::fs::FsType;
use csi::volume_id::VolumeId;
use testkit::driver::StageRig;

fn target(rig: &StageRig, id: &VolumeId, name: &str) -> PathBuf {
    rig.staging(id)
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("pods")
        .join(name)
}

async fn publish(
    rig: &StageRig,
    id: &VolumeId,
    target: &Path,
    access: &Access,
    read_only: bool,
) -> csi::Result<()> {
    csi::node::publish(&rig.driver, id, &rig.staging(id), target, access, read_only).await
}

async fn staged_pair(rig: &StageRig) -> (VolumeId, VolumeId) {
    let a = rig.create("pvc-a").await;
    let b = rig.create("pvc-b").await;
    rig.stage(&a).await.unwrap();
    rig.stage(&b).await.unwrap();
    (a, b)
}

#[tokio::test]
async fn a_repeated_publish_is_ok_and_an_incompatible_one_already_exists() {
    let rig = StageRig::new();
    let (a, b) = staged_pair(&rig).await;
    let fs = StageRig::mount(FsType::Ext4);
    let t = target(&rig, &a, "a");
    publish(&rig, &a, &t, &fs, false).await.unwrap();
    publish(&rig, &a, &t, &fs, false).await.unwrap();
    assert_eq!(rig.mounter.mounted_from(&t), Some(rig.staging(&a)));

    // The same volume read-only where it is published read-write.
    let e = publish(&rig, &a, &t, &fs, true).await.unwrap_err();
    assert_eq!(e.kind(), Kind::AlreadyExists, "{e}");
    assert!(e.message().contains("read-write"), "{e}");
    // Another volume onto A's target: refused, A's publish untouched.
    let e = publish(&rig, &b, &t, &fs, false).await.unwrap_err();
    assert_eq!(e.kind(), Kind::AlreadyExists, "{e}");
    assert!(e.message().contains("not from volume pvc-b"), "{e}");
    assert_eq!(rig.mounter.mounted_from(&t), Some(rig.staging(&a)));

    // Read-only publishes repeat as read-only.
    let ro = target(&rig, &a, "a-ro");
    publish(&rig, &a, &ro, &fs, true).await.unwrap();
    publish(&rig, &a, &ro, &fs, true).await.unwrap();
    let e = publish(&rig, &a, &ro, &fs, false).await.unwrap_err();
    assert_eq!(e.kind(), Kind::AlreadyExists, "{e}");
}

#[tokio::test]
async fn a_block_publish_onto_another_volumes_device_already_exists() {
    let rig = StageRig::new();
    let a = rig.create("pvc-a").await;
    let b = rig.create("pvc-b").await;
    for id in [&a, &b] {
        rig.stage_as(&rig.driver, id, &Access::Block, &StageRig::secrets())
            .await
            .unwrap();
    }
    let t = target(&rig, &a, "block-a");
    publish(&rig, &a, &t, &Access::Block, false).await.unwrap();
    publish(&rig, &a, &t, &Access::Block, false).await.unwrap();
    let e = publish(&rig, &b, &t, &Access::Block, false)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), Kind::AlreadyExists, "{e}");
    // B's unpublish of A's target: refused, still bound to A.
    let before = rig.mounter.mounted_from(&t);
    let e = csi::node::unpublish(&rig.driver, &b, &t).await.unwrap_err();
    assert_eq!(e.kind(), Kind::FailedPrecondition, "{e}");
    assert_eq!(rig.mounter.mounted_from(&t), before);
    csi::node::unpublish(&rig.driver, &a, &t).await.unwrap();
    assert!(rig.mounter.mounted_from(&t).is_none());
    assert!(!t.exists(), "the empty file publish made is removed");
}

#[tokio::test]
async fn unpublish_unmounts_only_this_volumes_publish_and_removes_only_what_publish_made() {
    let rig = StageRig::new();
    let (a, b) = staged_pair(&rig).await;
    let fs = StageRig::mount(FsType::Ext4);
    let t = target(&rig, &a, "a");
    publish(&rig, &a, &t, &fs, false).await.unwrap();

    let e = csi::node::unpublish(&rig.driver, &b, &t).await.unwrap_err();
    assert_eq!(e.kind(), Kind::FailedPrecondition, "{e}");
    assert!(e.message().contains("nothing unmounted"), "{e}");
    assert_eq!(rig.mounter.mounted_from(&t), Some(rig.staging(&a)));

    csi::node::unpublish(&rig.driver, &a, &t).await.unwrap();
    assert!(rig.mounter.mounted_from(&t).is_none());
    assert!(!t.exists());
    // Again: OK (idempotent).
    csi::node::unpublish(&rig.driver, &a, &t).await.unwrap();

    // Not a mount and not what publish makes: left in place, and the call is OK.
    let dir = target(&rig, &a, "full-dir");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("data"), b"keep").unwrap();
    csi::node::unpublish(&rig.driver, &a, &dir).await.unwrap();
    assert_eq!(std::fs::read(dir.join("data")).unwrap(), b"keep");
    let file = target(&rig, &a, "full-file");
    std::fs::write(&file, b"keep").unwrap();
    csi::node::unpublish(&rig.driver, &a, &file).await.unwrap();
    assert_eq!(std::fs::read(&file).unwrap(), b"keep");
}

#[tokio::test]
async fn unstage_leaves_another_volumes_staging_mount_alone() {
    let rig = StageRig::new();
    let (a, b) = staged_pair(&rig).await;
    // B's unstage names A's staging path: refused, and neither volume is touched.
    let e = csi::node::unstage(&rig.driver, &b, &rig.staging(&a))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), Kind::FailedPrecondition, "{e}");
    assert!(e.message().contains("not from volume pvc-b"), "{e}");
    for id in [&a, &b] {
        assert!(rig.mounter.mounted_from(&rig.staging(id)).is_some(), "{id}");
        assert!(rig.mapper.is_active(id.dm_name().as_str()), "{id}");
        assert!(rig.backend.is_attached(id), "{id}");
    }
    // A volume that is not staged at all, named with A's staging path: refused too.
    let c = rig.create("pvc-c").await;
    let e = csi::node::unstage(&rig.driver, &c, &rig.staging(&a))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), Kind::FailedPrecondition, "{e}");
    // Each its own: fine.
    rig.unstage(&a).await.unwrap();
    rig.unstage(&b).await.unwrap();
    assert_eq!(rig.mounter.mount_count(), 0);
}

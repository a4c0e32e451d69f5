//! A call whose deadline passed, through the gRPC node service over the test kit's fakes: when
//! the CO gives up on a NodeStage (tonic drops the call), its work runs on and keeps the
//! volume's lock until it ends, so a retry meanwhile is ABORTED and never runs a step a second
//! time beside the first; a volume held up that way (a hung device) does not hold up another;
//! once the work ends, the retry succeeds without a second format.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::sync::Arc;

use csi::capability::capability;
use csi::driver::StagePoint;
use csi::proto;
use csi::proto::node_server::Node as _;
use csi::proto::volume_capability::access_mode::Mode;
use csi::rpc::NodeService;
use csi::volume_id::VolumeId;
use testkit::driver::{Gate, StageRig};
use tonic::{Code, Request};

fn stage_req(rig: &StageRig, id: &VolumeId) -> proto::NodeStageVolumeRequest {
    proto::NodeStageVolumeRequest {
        volume_id: id.to_string(),
        staging_target_path: rig.staging(id).display().to_string(),
        volume_capability: Some(capability(false, "ext4", Mode::SingleNodeWriter)),
        secrets: StageRig::secrets(),
        volume_context: HashMap::from([
            ("encryptionEnabled".to_owned(), "true".to_owned()),
            ("encryptionKMSType".to_owned(), "transit".to_owned()),
            (
                "encryptionKMSEndpoint".to_owned(),
                "https://127.0.0.1:8200".to_owned(),
            ),
            ("encryptionKMSKeyID".to_owned(), "pvc-kek".to_owned()),
        ]),
        publish_context: HashMap::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 3)]
async fn a_stage_the_co_gave_up_on_keeps_its_volume_until_its_work_ends() {
    let rig = StageRig::new();
    let gate = Arc::new(Gate::at(StagePoint::AfterFormat));
    let driver = rig.driver_with(Arc::clone(&gate) as _);
    let node = NodeService::new(Arc::clone(&driver));
    let id = rig.create("pvc-slow").await;

    let n = node.clone();
    let req = stage_req(&rig, &id);
    let call = tokio::spawn(async move { n.node_stage_volume(Request::new(req)).await });
    let g = Arc::clone(&gate);
    tokio::task::spawn_blocking(move || g.wait_reached())
        .await
        .unwrap();
    // The deadline: tonic drops the call's future.
    call.abort();
    assert!(call.await.unwrap_err().is_cancelled());

    // The work still holds the volume: a retry is ABORTED, nothing runs twice.
    let e = node
        .node_stage_volume(Request::new(stage_req(&rig, &id)))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Aborted, "{e:?}");
    assert!(driver.locks.is_locked(id.as_str()));

    // Another volume is not held up by the hung one: it stages while the first still waits.
    let other = rig.create("pvc-other").await;
    node.node_stage_volume(Request::new(stage_req(&rig, &other)))
        .await
        .unwrap();
    assert!(driver.locks.is_locked(id.as_str()));

    gate.open();
    while driver.locks.is_locked(id.as_str()) {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    // The abandoned work finished the stage; the retry finds it done (no second format).
    let formats = rig.mounter.mkfs_count();
    node.node_stage_volume(Request::new(stage_req(&rig, &id)))
        .await
        .unwrap();
    assert_eq!(rig.mounter.mkfs_count(), formats, "staged once");
    assert!(rig.mounter.mounted_from(&rig.staging(&id)).is_some());
}

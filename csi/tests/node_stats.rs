//! NodeGetVolumeStats on the host, over the test kit's fakes: the condition of a staged volume,
//! and a device that never answers (a FIFO standing in for a hung disk), which must cost the
//! call its time limit and one thread, never a runtime worker or the other volumes' stats.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::fs;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use csi::proto;
use csi::volume_id::VolumeId;
use testkit::driver::StageRig;

fn condition(r: &proto::NodeGetVolumeStatsResponse) -> (bool, String) {
    let c = r.volume_condition.as_ref().expect("a condition");
    (c.abnormal, c.message.clone())
}

/// The staged plain device of `id` (the fake mapper's file).
fn plain(rig: &StageRig, id: &VolumeId) -> PathBuf {
    rig.mounter.mounted_from(&rig.staging(id)).expect("staged")
}

/// Replaces the staged device of `id` with a FIFO: opening it for reading blocks until a
/// writer comes, as a read from a hung device does.
fn hang(rig: &StageRig, id: &VolumeId) -> PathBuf {
    let dev = plain(rig, id);
    fs::remove_file(&dev).unwrap();
    let ok = Command::new("mkfifo").arg(&dev).status().unwrap().success();
    assert!(ok, "mkfifo {}", dev.display());
    dev
}

/// Lets every reader of a FIFO go while the returned handle lives: a FIFO opened for reading
/// and writing (which never blocks on Linux) is a writer for every open that waits.
fn release(fifo: &PathBuf) -> fs::File {
    fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(fifo)
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_staged_volume_answers_and_a_hung_device_costs_only_its_time_limit() {
    let rig = StageRig::new();
    let (a, b) = (rig.create("pvc-sa").await, rig.create("pvc-sb").await);
    rig.stage(&a).await.unwrap();
    rig.stage(&b).await.unwrap();
    let limit = Duration::from_millis(300);
    for id in [&a, &b] {
        let r = csi::node::stats::stats_within(&rig.driver, id, &rig.staging(id), limit)
            .await
            .unwrap();
        assert_eq!(condition(&r), (false, "ok".to_owned()), "{id}");
        assert_eq!(r.usage.len(), 2, "bytes and inodes");
    }

    let fifo = hang(&rig, &a);
    let r = csi::node::stats::stats_within(&rig.driver, &a, &rig.staging(&a), limit)
        .await
        .unwrap();
    let (abnormal, message) = condition(&r);
    assert!(abnormal && message.contains("did not answer"), "{message}");
    assert!(r.usage.is_empty(), "no usage without an answer");
    // The worker was not blocked: the other volume answers, and a second call for the hung one
    // starts no second thread (it would block in the FIFO's open as well).
    let r = csi::node::stats::stats_within(&rig.driver, &b, &rig.staging(&b), limit)
        .await
        .unwrap();
    assert_eq!(condition(&r), (false, "ok".to_owned()));
    let r = csi::node::stats::stats_within(&rig.driver, &a, &rig.staging(&a), limit)
        .await
        .unwrap();
    assert!(condition(&r).0, "still hung");
    assert_eq!(
        threads_named("stats-pvc-sa"),
        1,
        "one thread for the hung device"
    );

    // The device answers again (the FIFO's reader is let go): the stuck thread ends, and with
    // a device that reads, the next call runs a new probe that says ok.
    let writer = release(&fifo);
    let deadline = Instant::now() + Duration::from_secs(30);
    while threads_named("stats-pvc-sa") > 0 {
        assert!(Instant::now() < deadline, "the stuck probe never came back");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(writer);
    fs::remove_file(&fifo).unwrap();
    fs::write(&fifo, vec![0u8; 1 << 20]).unwrap();
    let r = csi::node::stats::stats_within(&rig.driver, &a, &rig.staging(&a), limit)
        .await
        .unwrap();
    assert_eq!(condition(&r), (false, "ok".to_owned()));
}

/// Threads of this process whose name is `name`.
fn threads_named(name: &str) -> usize {
    fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|t| fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .filter(|comm| comm.trim_end() == name)
        .count()
}

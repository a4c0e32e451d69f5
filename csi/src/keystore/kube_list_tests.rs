//! The kube store's `list` past a Secret that carries our label but is not one of our records.

use serde_json::json;

use testkit::kube_apiserver::FakeApiServer;
use super::kube::{KubeStore, RetryPolicy};
use super::tests::{one_bad_entry_hides_no_other, sample_record};
use super::*;

#[tokio::test]
async fn kube_store_one_malformed_secret_hides_no_other_record() {
    let api = FakeApiServer::start().await;
    let config = ::kube::Config::new(api.url().parse().unwrap());
    let store = KubeStore::with_config(
        config,
        "kube-system",
        "csi.onmetal.de",
        RetryPolicy::default(),
    )
    .unwrap();
    let good = VolumeId::parse("pvc-good").unwrap();
    let bad = VolumeId::parse("pvc-bad").unwrap();
    let entry = KeyEntry {
        record: sample_record(&good, 1),
        state: VolumeState::Formatted,
    };
    store.create(&good, &entry).await.unwrap();
    // Labelled as ours, named as ours, but an Opaque Secret: not a record.
    api.put_object(
        "kube-system",
        json!({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
               "metadata": {"name": bad.record_name(),
                            "labels": {"app.kubernetes.io/managed-by": "onmetal-csi",
                                       "csi.onmetal.de/volume-id": bad.as_str()}},
               "data": {}}),
    );
    one_bad_entry_hides_no_other(&store, &good, &bad).await;
}

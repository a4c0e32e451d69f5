//! The behaviour every key store must have, written once and run against each store
//! (`csi/tests/keystore/`: the dir store, the kube store against [`crate::kube_apiserver`]).

use csi::keystore::{KeyEntry, KeyStore, StoreError, VolumeState};
use csi::volume_id::VolumeId;
use kms::WrappedKey;

/// A syntactically valid Transit record for `volume` (never unwrapped in these tests).
pub fn sample_record(volume: &VolumeId, version: u64) -> WrappedKey {
    let json = format!(
        r#"{{"version":1,"kmsType":"transit","endpoint":"http://10.0.0.1:8200","keyId":"pvc-kek","keyVersion":{version},"mode":"transit-framed","ciphertext":"vault:v{version}:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA","volumeId":"{volume}","createdAt":"2026-11-29T04:00:00Z"}}"#
    );
    WrappedKey::from_json(json.as_bytes()).expect("sample record")
}

/// Runs the shared store contract against `store` (which must be empty).
pub async fn contract(store: &dyn KeyStore) {
    let vol = VolumeId::parse("pvc-contract-1").unwrap();
    let other = VolumeId::parse("pvc-contract-2").unwrap();
    let pending = KeyEntry {
        record: sample_record(&vol, 1),
        state: VolumeState::Pending,
    };

    // get of a missing entry is None; delete of a missing entry is success.
    assert!(store.get(&vol).await.unwrap().is_none());
    store.delete(&vol).await.unwrap();

    // create, then get returns it with the same revision.
    let rev1 = store.create(&vol, &pending).await.unwrap();
    let got = store.get(&vol).await.unwrap().expect("created");
    assert_eq!(got.entry, pending);
    assert_eq!(got.revision, rev1);

    // a second create fails and returns the stored entry, unchanged.
    let other_entry = KeyEntry {
        record: sample_record(&vol, 2),
        state: VolumeState::Formatted,
    };
    match store.create(&vol, &other_entry).await {
        Err(StoreError::Exists(existing)) => assert_eq!(existing.entry, pending),
        other => panic!("expected Exists, got {other:?}"),
    }
    assert_eq!(store.get(&vol).await.unwrap().unwrap().entry, pending);

    // update with the current revision succeeds and changes the revision.
    let formatted = KeyEntry {
        record: sample_record(&vol, 1),
        state: VolumeState::Formatted,
    };
    let rev2 = store.update(&vol, &formatted, &rev1).await.unwrap();
    assert_ne!(rev1, rev2);
    assert_eq!(store.get(&vol).await.unwrap().unwrap().entry, formatted);

    // update with a stale revision is a conflict and changes nothing.
    match store.update(&vol, &other_entry, &rev1).await {
        Err(StoreError::Conflict(_)) => {}
        other => panic!("expected Conflict, got {other:?}"),
    }
    assert_eq!(store.get(&vol).await.unwrap().unwrap().entry, formatted);

    // list shows every entry.
    let entry2 = KeyEntry {
        record: sample_record(&other, 3),
        state: VolumeState::Formatted,
    };
    store.create(&other, &entry2).await.unwrap();
    let listed = store.list().await.unwrap();
    let ids: Vec<_> = listed.iter().map(|(v, _)| v.as_str().to_owned()).collect();
    assert_eq!(ids, ["pvc-contract-1", "pvc-contract-2"]);

    // delete removes it; update of a deleted entry is a conflict.
    store.delete(&vol).await.unwrap();
    assert!(store.get(&vol).await.unwrap().is_none());
    match store.update(&vol, &formatted, &rev2).await {
        Err(StoreError::Conflict(_)) => {}
        other => panic!("expected Conflict, got {other:?}"),
    }
    store.delete(&vol).await.unwrap();
    store.delete(&other).await.unwrap();
    assert!(store.list().await.unwrap().is_empty());
}

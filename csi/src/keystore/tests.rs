//! The dir store's own behaviour (file modes, names, a copied file, the `--key-store` values).
//! The contract every store keeps is `testkit::keystore::contract`, run against each store by
//! `csi/tests/keystore.rs` (an integration test: testkit links this crate's public API).

use super::*;

/// A syntactically valid Transit record for `volume` (never unwrapped in these tests).
pub(crate) fn sample_record(volume: &VolumeId, version: u64) -> WrappedKey {
    let json = format!(
        r#"{{"version":1,"kmsType":"transit","endpoint":"http://10.0.0.1:8200","keyId":"pvc-kek","keyVersion":{version},"mode":"transit-framed","ciphertext":"vault:v{version}:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA","volumeId":"{volume}","createdAt":"2026-11-29T04:00:00Z"}}"#
    );
    WrappedKey::from_json(json.as_bytes()).expect("sample record")
}

#[tokio::test]
async fn dir_store_files_are_private_and_named_like_the_secret() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let store = DirStore::open(tmp.path().join("keys")).unwrap();
    let vol = VolumeId::parse("pvc-perm").unwrap();
    let entry = KeyEntry {
        record: sample_record(&vol, 1),
        state: VolumeState::Pending,
    };
    store.create(&vol, &entry).await.unwrap();
    let path = store.dir().join("onmetal-csi-luks-pvc-perm");
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let dmode = std::fs::metadata(store.dir()).unwrap().permissions().mode();
    assert_eq!(dmode & 0o777, 0o700);
    // No temporary files are left behind.
    let names: Vec<_> = std::fs::read_dir(store.dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n != ".lock")
        .collect();
    assert_eq!(names, ["onmetal-csi-luks-pvc-perm"]);
}

#[tokio::test]
async fn an_entry_naming_another_volume_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let store = DirStore::open(tmp.path()).unwrap();
    let a = VolumeId::parse("pvc-a").unwrap();
    let b = VolumeId::parse("pvc-b").unwrap();
    let entry = KeyEntry {
        record: sample_record(&a, 1),
        state: VolumeState::Formatted,
    };
    store.create(&a, &entry).await.unwrap();
    // Someone copies A's file over B's name.
    std::fs::copy(
        store.dir().join(a.record_name()),
        store.dir().join(b.record_name()),
    )
    .unwrap();
    let err = match store.get(&b).await {
        Err(StoreError::Other(e)) => e,
        other => panic!("expected an error, got {other:?}"),
    };
    assert_eq!(err.kind(), Kind::FailedPrecondition);
}

#[tokio::test]
async fn open_takes_every_key_store_value() {
    let dir = tempfile::tempdir().unwrap();
    let spec = format!("dir:{}", dir.path().join("keys").display());
    let store = open(&spec, "kube-system", "csi.onmetal.de").await.unwrap();
    assert!(store.list().await.unwrap().is_empty());
    for bad in ["", "dir:", "kube:x", "/var/lib/keys"] {
        let e = open(bad, "kube-system", "csi.onmetal.de")
            .await
            .unwrap_err();
        assert_eq!(e.kind(), Kind::InvalidArgument, "{bad:?}");
        assert!(e.message().contains("--key-store"), "{bad:?}: {e}");
    }
}

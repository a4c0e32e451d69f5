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

/// The dir store's lock is an `flock` that waits, and its writes fsync: a call does both on the
/// blocking pool, never on a runtime worker (the same rule as the backend's
/// `attach_waits_for_the_lock_off_the_runtime`). With the lock held elsewhere, the runtime's
/// only thread must stay free.
#[test]
fn dir_store_waits_for_its_lock_off_the_runtime() {
    let tmp = tempfile::tempdir().unwrap();
    let store = DirStore::open(tmp.path()).unwrap();
    // Another open file description of the lock file: create's flock waits for it.
    let held = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(store.dir().join(".lock"))
        .unwrap();
    held.lock().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let s2 = store.clone();
    let runtime = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async move {
            let vol = VolumeId::parse("pvc-lock").unwrap();
            let entry = KeyEntry {
                record: sample_record(&vol, 1),
                state: VolumeState::Pending,
            };
            let create = tokio::spawn(async move { s2.create(&vol, &entry).await });
            // The create task runs first; it must yield while it waits for the lock.
            tokio::task::yield_now().await;
            tx.send(()).unwrap();
            create.await.unwrap()
        })
    });
    // A generous bound that only a blocked runtime thread exceeds.
    let progressed = rx.recv_timeout(std::time::Duration::from_secs(30)).is_ok();
    drop(held);
    let res = runtime.join().unwrap();
    assert!(
        progressed,
        "create held the runtime's only thread while it waited for the key store lock"
    );
    res.unwrap();
    let vol = VolumeId::parse("pvc-lock").unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    assert!(rt.block_on(store.get(&vol)).unwrap().is_some());
}

/// A rewrap service without a KMS: `rewrap` moves a [`sample_record`] one version up, `unwrap`
/// gives the same key for every record.
pub(crate) struct NextVersion;

#[async_trait]
impl crate::cli::volume::rewrap::KeyService for NextVersion {
    async fn wrap(&self, _dek: &kms::Dek, _v: &kms::VolumeId) -> kms::Result<WrappedKey> {
        Err(kms::Error::new(kms::ErrorKind::Unavailable, "not used"))
    }
    async fn unwrap(&self, _key: &WrappedKey, _v: &kms::VolumeId) -> kms::Result<kms::Dek> {
        kms::Dek::from_slice(&[7; 64])
    }
    async fn rewrap(&self, key: &WrappedKey) -> kms::Result<WrappedKey> {
        let volume = VolumeId::parse(key.volume_id().as_str()).expect("a volume id");
        Ok(sample_record(&volume, key.key_version().unwrap_or(0) + 1))
    }
}

/// `store` holds the entry of `good` (a [`sample_record`] at version 1) and, under `bad`'s
/// name, something that is not a valid entry. The bad one hides none of the others:
/// `volume list` prints the good row and an error line for the bad one (and fails),
/// `volume rewrap --all` rewraps the good one and counts the bad one as failed.
pub(crate) async fn one_bad_entry_hides_no_other(
    store: &dyn KeyStore,
    good: &VolumeId,
    bad: &VolumeId,
) {
    let mut out = Vec::new();
    let res = crate::cli::volume::list::print(store, &mut out).await;
    let text = String::from_utf8(out).unwrap();
    assert!(
        text.lines()
            .any(|l| l.starts_with(good.as_str()) && l.contains("formatted")),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with(&format!("{bad}: ERROR: "))),
        "{text}"
    );
    assert_eq!(res.unwrap_err().kind(), Kind::FailedPrecondition, "{text}");

    // The store's own answer: both entries, in volume order, the bad one as its error.
    let listed = store.list().await.unwrap();
    let mut want = [good.clone(), bad.clone()];
    want.sort();
    let ids: Vec<_> = listed.iter().map(|(v, _)| v.clone()).collect();
    assert_eq!(ids, want);
    for (v, entry) in &listed {
        assert_eq!(entry.is_ok(), v == good, "{v}: {entry:?}");
    }

    use crate::cli::volume::rewrap::{Kek, Plan, Selection, execute};
    let secrets = std::collections::HashMap::from([("token".to_owned(), "t".to_owned())]);
    let config = kms::KmsConfig::new(
        kms::KmsType::Transit,
        "http://10.0.0.1:8200",
        "pvc-kek",
        None,
        &secrets,
    )
    .unwrap();
    let plan = Plan {
        source: Kek {
            config: &config,
            service: &NextVersion,
        },
        target: None,
        dry_run: false,
    };
    let mut out = Vec::new();
    let totals = execute(store, &Selection::All, &plan, &mut out).await;
    let text = String::from_utf8(out).unwrap();
    let totals = totals.unwrap_or_else(|e| panic!("{e}: {text}"));
    assert_eq!((totals.rewrapped, totals.failed), (1, 1), "{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with(&format!("{bad}: FAILED: "))),
        "{text}"
    );
    let stored = store.get(good).await.unwrap().unwrap();
    assert_eq!(stored.entry.record.key_version(), Some(2));
}

#[tokio::test]
async fn dir_store_one_malformed_file_hides_no_other_entry() {
    let tmp = tempfile::tempdir().unwrap();
    let store = DirStore::open(tmp.path()).unwrap();
    let good = VolumeId::parse("pvc-good").unwrap();
    let bad = VolumeId::parse("pvc-bad").unwrap();
    let entry = KeyEntry {
        record: sample_record(&good, 1),
        state: VolumeState::Formatted,
    };
    store.create(&good, &entry).await.unwrap();
    std::fs::write(
        store.dir().join(bad.record_name()),
        b"{\"state\":\"rotten\"}",
    )
    .unwrap();
    one_bad_entry_hides_no_other(&store, &good, &bad).await;
}

//! `onmetal-csi-driver volume rewrap` and `volume list` against a real OpenBao dev server on
//! 127.0.0.1 (kms/tests/install-peers.sh installs it): 20 records, a KMS failure midway, a
//! resumed run that completes, then the old KEK version retired (`min_decryption_version`
//! raised) and every record still unwraps to its original key; a move to another KEK; a record
//! changed during a run is never overwritten.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use csi::cli::volume::rewrap::{Kek, KeyService, Plan, Selection, Totals, execute};
use csi::keystore::{DirStore, KeyEntry, KeyStore, VolumeState};
use csi::volume_id::VolumeId;
use kms::{Dek, Kms, KmsConfig, KmsType, WrappedKey};
use testkit::peers::bao::{Bao, ROOT};

const KEY: &str = "pvc-kek";
const NEW_KEY: &str = "pvc-kek-2";

/// The OpenBao side of a test: the server, an operator token (encrypt, decrypt and rewrap on
/// both keys) in a secret dir, as `kubectl create secret generic --from-literal=token=...`
/// would mount it.
struct Setup {
    bao: Bao,
    secret_dir: tempfile::TempDir,
    token: String,
}

impl Setup {
    fn start() -> Option<Setup> {
        let bao = Bao::start(false)?;
        bao.setup_transit(KEY);
        bao.create_key(NEW_KEY);
        let extra = format!(
            "path \"transit/rewrap/{KEY}\" {{ capabilities = [\"update\"] }}\n\
             path \"transit/encrypt/{NEW_KEY}\" {{ capabilities = [\"update\"] }}\n\
             path \"transit/decrypt/{NEW_KEY}\" {{ capabilities = [\"update\"] }}\n"
        );
        let token = bao.policy_token(KEY, &extra);
        let secret_dir = tempfile::tempdir().unwrap();
        std::fs::write(secret_dir.path().join("token"), format!("{token}\n")).unwrap();
        Some(Setup {
            bao,
            secret_dir,
            token,
        })
    }

    fn config(&self, key: &str) -> KmsConfig {
        let secrets = HashMap::from([("token".to_owned(), self.token.clone())]);
        KmsConfig::new(KmsType::Transit, &self.bao.url, key, None, &secrets).unwrap()
    }

    fn cli(&self, store: &Path, extra: &[&str]) -> (bool, String) {
        let out = Command::new(env!("CARGO_BIN_EXE_onmetal-csi-driver"))
            .args(["volume", "rewrap", "--key-store"])
            .arg(format!("dir:{}", store.display()))
            .args(["--type", "transit", "--endpoint", &self.bao.url])
            .args(["--key-id", KEY, "--secret-dir"])
            .arg(self.secret_dir.path())
            .args(extra)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(!text.contains(&self.token), "the token was printed");
        (out.status.success(), text)
    }
}

/// A KMS that goes down after `ok_calls` calls (every later call is Unavailable).
struct GoesDown<'a> {
    inner: &'a Kms,
    calls: AtomicUsize,
    ok_calls: usize,
}

impl GoesDown<'_> {
    fn check(&self) -> kms::Result<()> {
        if self.calls.fetch_add(1, Ordering::SeqCst) >= self.ok_calls {
            return Err(kms::Error::new(
                kms::ErrorKind::Unavailable,
                "injected: the KMS went down",
            ));
        }
        Ok(())
    }
}

#[async_trait]
impl KeyService for GoesDown<'_> {
    async fn wrap(&self, dek: &Dek, volume: &kms::VolumeId) -> kms::Result<WrappedKey> {
        self.check()?;
        self.inner.wrap(dek, volume).await
    }
    async fn unwrap(&self, key: &WrappedKey, volume: &kms::VolumeId) -> kms::Result<Dek> {
        self.check()?;
        self.inner.unwrap(key, volume).await
    }
    async fn rewrap(&self, key: &WrappedKey) -> kms::Result<WrappedKey> {
        self.check()?;
        self.inner.rewrap(key).await
    }
}

/// Makes `n` formatted volumes, each with a fresh 64-byte DEK wrapped by `kms`.
async fn volumes(kms: &Kms, store: &DirStore, n: usize) -> Vec<(VolumeId, Dek)> {
    let mut out = Vec::new();
    for i in 0..n {
        let v = VolumeId::parse(&format!("pvc-rot-{i:02}")).unwrap();
        let dek = Dek::generate(64).unwrap();
        let record = kms.wrap(&dek, &v.kms()).await.unwrap();
        let entry = KeyEntry {
            record,
            state: VolumeState::Formatted,
        };
        store.create(&v, &entry).await.unwrap();
        out.push((v, dek));
    }
    out
}

async fn versions(store: &DirStore) -> Vec<Option<u64>> {
    store
        .list()
        .await
        .unwrap()
        .iter()
        .map(|(_, s)| s.as_ref().unwrap().entry.record.key_version())
        .collect()
}

/// Every record of `store` unwraps with `kms` to the DEK the volume was made with.
async fn all_unwrap(kms: &Kms, store: &DirStore, deks: &[(VolumeId, Dek)]) {
    for (v, dek) in deks {
        let stored = store.get(v).await.unwrap().expect("record kept");
        let back = kms.unwrap(&stored.entry.record, &v.kms()).await.unwrap();
        assert!(back.ct_eq(dek), "{v}: a different key");
        assert_eq!(stored.entry.state, VolumeState::Formatted, "{v}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_volumes_a_kms_failure_midway_then_a_resumed_run_completes() {
    let Some(setup) = Setup::start() else { return };
    let config = setup.config(KEY);
    let kms = Kms::new(&config).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store_dir = dir.path().join("keys");
    let store = DirStore::open(&store_dir).unwrap();
    let deks = volumes(&kms, &store, 20).await;
    let old_v1 = store.get(&deks[0].0).await.unwrap().unwrap().entry.record;
    setup.bao.rotate(KEY);

    // The dry run changes nothing and makes no KMS call.
    let counting = GoesDown {
        inner: &kms,
        calls: AtomicUsize::new(0),
        ok_calls: 0,
    };
    let mut out = Vec::new();
    let plan = Plan {
        source: Kek {
            config: &config,
            service: &counting,
        },
        target: None,
        dry_run: true,
    };
    let t = execute(&store, &Selection::All, &plan, &mut out)
        .await
        .unwrap();
    assert_eq!(t.would_rewrap, 20);
    assert_eq!(counting.calls.load(Ordering::SeqCst), 0);
    assert_eq!(versions(&store).await, vec![Some(1); 20]);

    // Each volume costs three calls (rewrap, unwrap old, unwrap new): the KMS dies during the
    // ninth volume.
    let flaky = GoesDown {
        inner: &kms,
        calls: AtomicUsize::new(0),
        ok_calls: 25,
    };
    let plan = Plan {
        source: Kek {
            config: &config,
            service: &flaky,
        },
        target: None,
        dry_run: false,
    };
    let mut out = Vec::new();
    let t = execute(&store, &Selection::All, &plan, &mut out)
        .await
        .unwrap();
    let text = String::from_utf8(out).unwrap();
    assert_eq!(
        t,
        Totals {
            rewrapped: 8,
            failed: 12,
            ..Totals::default()
        },
        "{text}"
    );
    assert!(text.contains("pvc-rot-00: rewrapped (pvc-kek v1 -> pvc-kek v2)"));
    assert!(
        text.contains("pvc-rot-08: FAILED: KMS: unavailable: injected: the KMS went down"),
        "{text}"
    );
    assert!(text.ends_with("20 volume(s): 8 rewrapped, 0 current, 0 skipped, 12 failed\n"));
    let mut want = vec![Some(2); 8];
    want.extend(vec![Some(1); 12]);
    assert_eq!(versions(&store).await, want);
    // Nothing was lost: every record, rewrapped or not, still gives its key.
    all_unwrap(&kms, &store, &deks).await;

    // The resumed run, through the command line: the rest is rewrapped, the done ones are
    // current, exit 0.
    let (ok, text) = setup.cli(&store_dir, &["--all"]);
    assert!(ok, "{text}");
    assert!(
        text.contains("20 volume(s): 12 rewrapped, 8 current, 0 skipped, 0 failed"),
        "{text}"
    );
    assert_eq!(versions(&store).await, vec![Some(2); 20]);
    // Idempotent: a third run writes nothing.
    let before = std::fs::read(store_dir.join(deks[5].0.record_name())).unwrap();
    let (ok, text) = setup.cli(&store_dir, &["--volume-id", deks[5].0.as_str()]);
    assert!(
        ok && text.contains("pvc-rot-05: current (pvc-kek v2)"),
        "{text}"
    );
    assert_eq!(
        std::fs::read(store_dir.join(deks[5].0.record_name())).unwrap(),
        before
    );

    // Retire version 1: every rewrapped record still unwraps to its original key, and a copy
    // of an old record no longer does (so the check above proves something).
    let (code, body) = setup.bao.api(
        "POST",
        &format!("transit/keys/{KEY}/config"),
        Some(r#"{"min_decryption_version":2}"#),
        ROOT,
    );
    assert!((200..300).contains(&code), "{code} {body}");
    all_unwrap(&kms, &store, &deks).await;
    assert!(kms.unwrap(&old_v1, &deks[0].0.kms()).await.is_err());

    // `volume list` shows them, at version 2, without ciphertext.
    let out = Command::new(env!("CARGO_BIN_EXE_onmetal-csi-driver"))
        .args(["volume", "list", "--key-store"])
        .arg(format!("dir:{}", store_dir.display()))
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(out.status.success());
    assert_eq!(
        text.lines()
            .filter(|l| l.starts_with("pvc-rot-") && l.contains(" 2 "))
            .count(),
        20,
        "{text}"
    );
    assert!(!text.contains("vault:v"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_move_to_another_kek_and_a_changed_record_is_not_overwritten() {
    let Some(setup) = Setup::start() else { return };
    let kms = Kms::new(&setup.config(KEY)).unwrap();
    let new_kms = Kms::new(&setup.config(NEW_KEY)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store_dir = dir.path().join("keys");
    let store = DirStore::open(&store_dir).unwrap();
    let deks = volumes(&kms, &store, 3).await;

    // A record someone else rewrites during the run (between our read and our write) is
    // reported and left as they wrote it.
    let victim = &deks[1].0;
    struct Meddler<'a> {
        inner: &'a Kms,
        store: Arc<DirStore>,
        victim: VolumeId,
        done: AtomicUsize,
    }
    #[async_trait]
    impl KeyService for Meddler<'_> {
        async fn wrap(&self, dek: &Dek, volume: &kms::VolumeId) -> kms::Result<WrappedKey> {
            if volume.as_str() == self.victim.as_str()
                && self.done.fetch_add(1, Ordering::SeqCst) == 0
            {
                let cur = self.store.get(&self.victim).await.unwrap().unwrap();
                let mut entry = cur.entry.clone();
                entry.state = VolumeState::Pending;
                self.store
                    .update(&self.victim, &entry, &cur.revision)
                    .await
                    .unwrap();
            }
            self.inner.wrap(dek, volume).await
        }
        async fn unwrap(&self, key: &WrappedKey, volume: &kms::VolumeId) -> kms::Result<Dek> {
            self.inner.unwrap(key, volume).await
        }
        async fn rewrap(&self, key: &WrappedKey) -> kms::Result<WrappedKey> {
            self.inner.rewrap(key).await
        }
    }
    let meddler = Meddler {
        inner: &new_kms,
        store: Arc::new(DirStore::open(&store_dir).unwrap()),
        victim: victim.clone(),
        done: AtomicUsize::new(0),
    };
    let (source_config, target_config) = (setup.config(KEY), setup.config(NEW_KEY));
    let plan = Plan {
        source: Kek {
            config: &source_config,
            service: &kms,
        },
        target: Some(Kek {
            config: &target_config,
            service: &meddler,
        }),
        dry_run: false,
    };
    let mut out = Vec::new();
    let t = execute(&store, &Selection::All, &plan, &mut out)
        .await
        .unwrap();
    let text = String::from_utf8(out).unwrap();
    assert_eq!((t.rewrapped, t.failed), (2, 1), "{text}");
    assert!(text.contains("pvc-rot-01: FAILED: the record changed while it was rewrapped"));
    let victim_now = store.get(victim).await.unwrap().unwrap().entry;
    assert_eq!(victim_now.record.key_id(), KEY);
    assert_eq!(victim_now.state, VolumeState::Pending, "their write stands");

    // The resumed run through the command line moves the last one; the others are current.
    let (ok, text) = setup.cli(&store_dir, &["--all", "--to-key-id", NEW_KEY]);
    assert!(ok, "{text}");
    assert!(
        text.contains("3 volume(s): 1 rewrapped, 2 current, 0 skipped, 0 failed"),
        "{text}"
    );
    for (v, dek) in &deks {
        let rec = store.get(v).await.unwrap().unwrap().entry.record;
        assert_eq!(rec.key_id(), NEW_KEY);
        assert!(new_kms.unwrap(&rec, &v.kms()).await.unwrap().ct_eq(dek));
        // What NodeStage does with the PV's unchanged context (which names the old key): it
        // unwraps with the record's key on the same OpenBao.
        let staged = csi::crypt::keys::unwrap(&setup.config(KEY), &rec, v)
            .await
            .unwrap();
        assert!(staged.ct_eq(dek), "{v}");
    }

    // A volume without a record, and a record of another KEK named explicitly, fail the run.
    let (ok, text) = setup.cli(&store_dir, &["--volume-id", "pvc-missing"]);
    assert!(
        !ok && text.contains("pvc-missing: FAILED: no wrapped-key record"),
        "{text}"
    );
    let (ok, text) = setup.cli(&store_dir, &["--volume-id", deks[0].0.as_str()]);
    assert!(!ok && text.contains("pvc-rot-00: FAILED:"), "{text}");
}

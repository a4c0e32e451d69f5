//! The `kube` store against the in-process fake API server: the shared contract, the Secret's
//! layout, and faults (409 races, 5xx, 429, time-outs, lost answers, a server that goes away).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use axum::http::Method;
use csi::keystore::kube::{KubeStore, RetryPolicy, SECRET_TYPE};
use csi::keystore::{KeyEntry, KeyStore, StoreError, VolumeState};
use csi::volume_id::VolumeId;
use csi::{Error, Kind};
use serde_json::json;
use testkit::keystore::{contract, sample_record};
use testkit::kube_apiserver::{FakeApiServer, Fault};

const NS: &str = "kube-system";

fn policy() -> RetryPolicy {
    RetryPolicy {
        attempts: 4,
        first_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(40),
        attempt_timeout: Duration::from_millis(800),
    }
}

fn store(api: &FakeApiServer) -> KubeStore {
    let config = ::kube::Config::new(api.url().parse().unwrap());
    KubeStore::with_config(config, NS, "csi.onmetal.de", policy()).unwrap()
}

fn entry(vol: &VolumeId, version: u64, state: VolumeState) -> KeyEntry {
    KeyEntry {
        record: sample_record(vol, version),
        state,
    }
}

fn vol(id: &str) -> VolumeId {
    VolumeId::parse(id).unwrap()
}

/// The Secret another writer would have made for `entry` (same layout as ours).
fn secret_json(vol: &VolumeId, entry: &KeyEntry) -> serde_json::Value {
    use base64::Engine;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    json!({
        "apiVersion": "v1", "kind": "Secret", "type": SECRET_TYPE,
        "metadata": {
            "name": vol.record_name(),
            "labels": { "app.kubernetes.io/managed-by": "onmetal-csi",
                        "csi.onmetal.de/volume-id": vol.as_str() },
        },
        "data": { "record": b64(&entry.record.to_json()), "state": b64(entry.state.as_str()) },
    })
}

fn unavailable<T: fmt::Debug>(r: Result<T, StoreError>) -> Error {
    match r {
        Err(StoreError::Other(e)) if e.kind() == Kind::Unavailable => e,
        other => panic!("expected Unavailable, got {other:?}"),
    }
}

#[tokio::test]
async fn kube_store_keeps_the_contract() {
    let api = FakeApiServer::start().await;
    contract(&store(&api)).await;
    // fieldManager is sent on writes (and ignored by the server).
    assert!(api.requests().iter().any(|r| {
        r.starts_with("POST /api/v1/namespaces/kube-system/secrets?")
            && r.contains("fieldManager=onmetal-csi-driver")
    }));
}

#[tokio::test]
async fn the_secret_has_our_type_labels_annotation_and_a_readable_record() {
    let api = FakeApiServer::start().await;
    let s = store(&api);
    let v = vol("pvc-layout");
    let e = entry(&v, 3, VolumeState::Pending);
    s.create(&v, &e).await.unwrap();
    let obj = api.object(NS, "onmetal-csi-luks-pvc-layout").unwrap();
    assert_eq!(obj["type"], SECRET_TYPE);
    assert_eq!(
        obj["metadata"]["labels"]["app.kubernetes.io/managed-by"],
        "onmetal-csi"
    );
    assert_eq!(
        obj["metadata"]["labels"]["csi.onmetal.de/volume-id"],
        "pvc-layout"
    );
    assert_eq!(
        obj["metadata"]["annotations"]["csi.onmetal.de/driver"],
        "csi.onmetal.de"
    );
    use base64::Engine;
    let dec = |k: &str| {
        let b = base64::engine::general_purpose::STANDARD
            .decode(obj["data"][k].as_str().unwrap())
            .unwrap();
        String::from_utf8(b).unwrap()
    };
    // The record key holds exactly the kms/README.md JSON.
    assert_eq!(dec("record"), e.record.to_json());
    assert_eq!(dec("state"), "pending");
    assert_eq!(
        obj["data"].as_object().unwrap().len(),
        2,
        "only record and state"
    );
}

#[tokio::test]
async fn a_create_race_lost_to_a_different_record_is_exists_and_never_overwrites() {
    let api = FakeApiServer::start().await;
    let s = store(&api);
    let v = vol("pvc-race");
    let theirs = entry(&v, 7, VolumeState::Formatted);
    api.fault(Method::POST, Fault::Race(secret_json(&v, &theirs)));
    let ours = entry(&v, 1, VolumeState::Pending);
    match s.create(&v, &ours).await {
        Err(StoreError::Exists(existing)) => assert_eq!(existing.entry, theirs),
        other => panic!("expected Exists, got {other:?}"),
    }
    assert_eq!(s.get(&v).await.unwrap().unwrap().entry, theirs);
    // No write other than the one create was attempted.
    let writes = api
        .requests()
        .iter()
        .filter(|r| r.starts_with("PUT") || r.starts_with("POST"))
        .count();
    assert_eq!(writes, 1);
}

#[tokio::test]
async fn a_create_race_with_the_same_record_is_success() {
    let api = FakeApiServer::start().await;
    let s = store(&api);
    let v = vol("pvc-same");
    let e = entry(&v, 1, VolumeState::Pending);
    api.fault(Method::POST, Fault::Race(secret_json(&v, &e)));
    let rev = s.create(&v, &e).await.unwrap();
    assert_eq!(s.get(&v).await.unwrap().unwrap().revision, rev);
}

#[tokio::test]
async fn a_create_whose_answer_was_lost_is_retried_and_succeeds_once() {
    let api = FakeApiServer::start().await;
    let s = store(&api);
    let v = vol("pvc-lost");
    let e = entry(&v, 1, VolumeState::Pending);
    api.fault(Method::POST, Fault::AppliedThenStatus(500));
    let rev = s.create(&v, &e).await.unwrap();
    let got = s.get(&v).await.unwrap().unwrap();
    assert_eq!((got.entry, got.revision), (e.clone(), rev));
    assert_eq!(api.len(), 1);

    // The same with a time-out instead of a 500: the answer comes after the client gave up.
    let v2 = vol("pvc-slow");
    let e2 = entry(&v2, 1, VolumeState::Pending);
    api.fault(
        Method::POST,
        Fault::AppliedThenDelay(policy().attempt_timeout * 3),
    );
    s.create(&v2, &e2).await.unwrap();
    assert_eq!(s.get(&v2).await.unwrap().unwrap().entry, e2);
    assert_eq!(api.len(), 2);
}

#[tokio::test]
async fn server_errors_throttling_and_timeouts_are_retried() {
    let api = FakeApiServer::start().await;
    let s = store(&api);
    let v = vol("pvc-retry");
    let e = entry(&v, 1, VolumeState::Pending);
    api.fault(Method::POST, Fault::Status(503));
    api.fault(Method::POST, Fault::PlainText(502));
    api.fault(Method::POST, Fault::Delay(policy().attempt_timeout * 3));
    s.create(&v, &e).await.unwrap();
    api.fault(Method::GET, Fault::TooManyRequests(1));
    api.fault(Method::GET, Fault::Status(500));
    assert_eq!(s.get(&v).await.unwrap().unwrap().entry, e);
    api.fault(Method::DELETE, Fault::Status(504));
    s.delete(&v).await.unwrap();
    assert!(s.get(&v).await.unwrap().is_none());
    assert_eq!(api.len(), 0);
}

#[tokio::test]
async fn persistent_server_errors_are_unavailable_after_the_retries() {
    let api = FakeApiServer::start().await;
    let s = store(&api);
    let v = vol("pvc-down");
    for _ in 0..policy().attempts {
        api.fault(Method::GET, Fault::Status(500));
    }
    let e = unavailable(s.get(&v).await);
    assert!(e.message().contains("gave up after 4 attempts"), "{e}");
    let gets = api
        .requests()
        .iter()
        .filter(|r| r.starts_with("GET"))
        .count();
    assert_eq!(gets, 4);
    for _ in 0..policy().attempts {
        api.fault(Method::POST, Fault::Status(503));
    }
    unavailable(s.create(&v, &entry(&v, 1, VolumeState::Pending)).await);
    assert_eq!(api.len(), 0);
}

#[tokio::test]
async fn client_errors_are_not_retried() {
    let api = FakeApiServer::start().await;
    let s = store(&api);
    let v = vol("pvc-4xx");
    api.fault(Method::GET, Fault::Status(403));
    let e = match s.get(&v).await {
        Err(StoreError::Other(e)) => e,
        other => panic!("expected an error, got {other:?}"),
    };
    assert_eq!(e.kind(), Kind::Internal);
    assert!(e.message().contains("RBAC"), "{e}");
    api.fault(Method::POST, Fault::Status(422));
    assert!(matches!(
        s.create(&v, &entry(&v, 1, VolumeState::Pending)).await,
        Err(StoreError::Other(e)) if e.kind() == Kind::Internal
    ));
    assert_eq!(api.requests().len(), 2, "one request each, no retries");
}

#[tokio::test]
async fn an_update_race_is_a_conflict_and_changes_nothing() {
    let api = FakeApiServer::start().await;
    let s = store(&api);
    let v = vol("pvc-upd");
    let rev = s
        .create(&v, &entry(&v, 1, VolumeState::Pending))
        .await
        .unwrap();
    // Someone rewraps the record between our get and our update.
    let theirs = entry(&v, 2, VolumeState::Pending);
    api.fault(Method::PUT, Fault::Race(secret_json(&v, &theirs)));
    match s
        .update(&v, &entry(&v, 1, VolumeState::Formatted), &rev)
        .await
    {
        Err(StoreError::Conflict(m)) => assert!(m.contains("changed"), "{m}"),
        other => panic!("expected Conflict, got {other:?}"),
    }
    assert_eq!(s.get(&v).await.unwrap().unwrap().entry, theirs);
}

#[tokio::test]
async fn an_update_whose_answer_was_lost_is_success() {
    let api = FakeApiServer::start().await;
    let s = store(&api);
    let v = vol("pvc-upd-lost");
    let rev = s
        .create(&v, &entry(&v, 1, VolumeState::Pending))
        .await
        .unwrap();
    let want = entry(&v, 1, VolumeState::Formatted);
    api.fault(Method::PUT, Fault::AppliedThenStatus(500));
    let rev2 = s.update(&v, &want, &rev).await.unwrap();
    let got = s.get(&v).await.unwrap().unwrap();
    assert_eq!((got.entry, got.revision), (want, rev2));
}

#[tokio::test]
async fn a_secret_that_is_not_ours_is_refused_and_never_overwritten() {
    let api = FakeApiServer::start().await;
    let s = store(&api);
    let v = vol("pvc-foreign");
    let mut foreign = secret_json(&v, &entry(&v, 1, VolumeState::Formatted));
    foreign["type"] = json!("Opaque");
    api.put_object(NS, foreign);
    let before = api.object(NS, &v.record_name()).unwrap();
    let err = match s.get(&v).await {
        Err(StoreError::Other(e)) => e,
        other => panic!("expected an error, got {other:?}"),
    };
    assert_eq!(err.kind(), Kind::FailedPrecondition);
    assert!(err.message().contains("Opaque"), "{err}");
    assert!(
        s.create(&v, &entry(&v, 1, VolumeState::Pending))
            .await
            .is_err()
    );
    assert_eq!(api.object(NS, &v.record_name()).unwrap(), before);
}

#[tokio::test]
async fn a_server_that_goes_away_is_unavailable_and_nothing_is_written() {
    let mut api = FakeApiServer::start().await;
    let s = store(&api);
    let v = vol("pvc-gone");
    let e = entry(&v, 1, VolumeState::Pending);
    let rev = s.create(&v, &e).await.unwrap();
    api.stop().await;
    unavailable(s.get(&v).await);
    unavailable(
        s.update(&v, &entry(&v, 1, VolumeState::Formatted), &rev)
            .await,
    );
    unavailable(s.delete(&v).await);
    unavailable(s.create(&vol("pvc-gone-2"), &e).await);
    unavailable(s.list().await);
    // What was stored before is still there, unchanged.
    let obj = api.object(NS, &v.record_name()).unwrap();
    assert_eq!(obj["metadata"]["resourceVersion"], json!(rev.0));
    assert_eq!(api.len(), 1);
}

#[tokio::test]
async fn list_follows_continue_tokens_and_selects_our_label() {
    let api = FakeApiServer::start().await;
    api.set_page_cap(2);
    let s = store(&api);
    let mut want = Vec::new();
    for i in 0..5 {
        let v = vol(&format!("pvc-list-{i}"));
        s.create(&v, &entry(&v, 1, VolumeState::Formatted))
            .await
            .unwrap();
        want.push(v.as_str().to_owned());
    }
    // An unrelated Secret in the namespace is not ours and not listed.
    api.put_object(
        NS,
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "bootstrap-token-x"},
               "data": {}}),
    );
    let got: Vec<_> = s
        .list()
        .await
        .unwrap()
        .into_iter()
        .map(|(v, _)| v.as_str().to_owned())
        .collect();
    assert_eq!(got, want);
    let lists = api
        .requests()
        .iter()
        .filter(|r| r.starts_with("GET") && r.contains("labelSelector"))
        .count();
    assert_eq!(lists, 3, "5 records in pages of 2");
}

#[tokio::test]
async fn the_namespace_must_be_a_valid_name() {
    let api = FakeApiServer::start().await;
    let config = ::kube::Config::new(api.url().parse().unwrap());
    let e = KubeStore::with_config(config, "Kube_System", "csi.onmetal.de", policy()).unwrap_err();
    assert_eq!(e.kind(), Kind::InvalidArgument);
}

#[tokio::test]
async fn volume_list_reads_the_kube_store() {
    let api = FakeApiServer::start().await;
    let s = store(&api);
    for i in 0..3 {
        let v = vol(&format!("pvc-op-{i}"));
        s.create(&v, &entry(&v, 4, VolumeState::Formatted))
            .await
            .unwrap();
    }
    let mut out = Vec::new();
    csi::cli::volume::list::print(&s, &mut out).await.unwrap();
    let text = String::from_utf8(out).unwrap();
    assert_eq!(
        text.lines().filter(|l| l.starts_with("pvc-op-")).count(),
        3,
        "{text}"
    );
    assert!(text.ends_with("3 encrypted volume(s)\n"), "{text}");
}

/// A CA and a server certificate for 127.0.0.1 (rcgen, ECDSA P-256): (CA PEM, server config).
fn tls_server() -> (String, rustls::ServerConfig) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "fake-apiserver-ca");
    let ca = ca.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&key, &ca, &ca_key)
        .unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .unwrap();
    (ca.pem(), config)
}

#[tokio::test]
async fn over_tls_with_a_kubeconfig_and_a_bearer_token() {
    use base64::Engine;
    let (ca_pem, server) = tls_server();
    let api = FakeApiServer::start_tls(server, "test-token-123").await;
    let kubeconfig = |token: &str| {
        format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: fake\n\
             clusters:\n- name: fake\n  cluster:\n    server: {}\n    certificate-authority-data: {}\n\
             contexts:\n- name: fake\n  context: {{cluster: fake, user: op}}\n\
             users:\n- name: op\n  user: {{token: {token}}}\n",
            api.url(),
            base64::engine::general_purpose::STANDARD.encode(&ca_pem)
        )
    };
    let from = |yaml: String| async move {
        let kc = ::kube::config::Kubeconfig::from_yaml(&yaml).unwrap();
        let config = ::kube::Config::from_custom_kubeconfig(kc, &Default::default())
            .await
            .unwrap();
        KubeStore::with_config(config, NS, "csi.onmetal.de", policy()).unwrap()
    };
    contract(&from(kubeconfig("test-token-123")).await).await;

    // A wrong token is refused (401) and not retried.
    let s = from(kubeconfig("wrong")).await;
    let before = api.requests().len();
    match s.get(&vol("pvc-tls")).await {
        Err(StoreError::Other(e)) => assert!(e.message().contains("401"), "{e}"),
        other => panic!("expected an error, got {other:?}"),
    }
    assert_eq!(api.requests().len(), before + 1);
}

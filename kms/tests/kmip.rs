//! KMIP against a real PyKMIP 0.11 server on 127.0.0.1 (mutual TLS, ECDSA P-256 PKI made here).
#![allow(clippy::unwrap_used, missing_docs)]

mod peers;

use std::time::{Duration, Instant};

use kms::{Dek, ErrorKind, Kms, KmsConfig, KmsType, Timeouts, VolumeId, WrapMode, WrappedKey};
use peers::pykmip::{Ca, ClientOpts, Leaf, PyKmip};

fn config(srv: &PyKmip, key: &str, leaf: &Leaf) -> KmsConfig {
    KmsConfig::new(
        KmsType::Kmip,
        &srv.endpoint(),
        key,
        None,
        &srv.secrets_for(leaf),
    )
    .unwrap()
    .with_timeouts(Timeouts {
        connect: Duration::from_secs(2),
        request: Duration::from_secs(4),
    })
}

fn client(srv: &PyKmip, key: &str) -> Kms {
    Kms::new(&config(srv, key, &srv.client)).unwrap()
}

fn client_v12(srv: &PyKmip, key: &str) -> Kms {
    let c = kms::kmip::KmipClient::new(&config(srv, key, &srv.client)).unwrap();
    Kms::Kmip(Box::new(c.with_max_version((1, 2))))
}

fn vol(s: &str) -> VolumeId {
    VolumeId::new(s).unwrap()
}

fn edit(w: &WrappedKey, field: &str, f: impl Fn(&str) -> String) -> WrappedKey {
    let mut v: serde_json::Value = serde_json::from_str(&w.to_json()).unwrap();
    let old = v[field].as_str().unwrap().to_owned();
    v[field] = serde_json::Value::String(f(&old));
    WrappedKey::from_json(v.to_string().as_bytes()).unwrap()
}

fn flip_b64(s: &str) -> String {
    use base64::Engine as _;
    let e = base64::engine::general_purpose::STANDARD;
    let mut b = e.decode(s).unwrap();
    b[0] ^= 0x01;
    e.encode(b)
}

#[tokio::test]
async fn kmip14_gcm_round_trip_over_mtls_with_ecdsa() {
    let Some(srv) = PyKmip::start() else { return };
    let uid = srv.create_key(true);
    let before = srv
        .proc
        .log_text()
        .matches("Receiving incoming connection")
        .count();
    let kms = client(&srv, &uid);
    let Kms::Kmip(k) = &kms else { unreachable!() };
    assert_eq!(k.protocol_version().await.unwrap(), (1, 4));
    let dek = Dek::generate(64).unwrap();
    let w = kms.wrap(&dek, &vol("pvc-1")).await.unwrap();
    assert_eq!(w.mode(), WrapMode::KmipAesGcm);
    let json = w.to_json();
    assert!(
        json.contains("\"kmipVersion\":\"1.4\"") && json.contains("\"tag\":"),
        "{json}"
    );
    let back = WrappedKey::from_json(json.as_bytes()).unwrap();
    assert!(kms.unwrap(&back, &vol("pvc-1")).await.unwrap().ct_eq(&dek));
    // The same TLS connection serves further requests.
    for _ in 0..3 {
        let rtt = kms.check().await.unwrap();
        eprintln!("kmip 1.4 check round trip: {rtt:?}");
    }
    // All of it went over one TLS connection.
    let sessions = srv
        .proc
        .log_text()
        .matches("Receiving incoming connection")
        .count();
    assert_eq!(sessions - before, 1, "connections opened by the client");
    // Wrong volume: the server's GCM additional-data check refuses it.
    let moved = edit(&w, "volumeId", |_| "pvc-2".into());
    let err = kms.unwrap(&moved, &vol("pvc-2")).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Integrity, "{err}");
    eprintln!("gcm, moved to another volume: {err}");
    let err = kms.unwrap(&w, &vol("pvc-2")).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Integrity, "{err}");
}

#[tokio::test]
async fn kmip12_cbc_round_trip_and_tampering() {
    let Some(srv) = PyKmip::start() else { return };
    let uid = srv.create_key(true);
    let kms = client_v12(&srv, &uid);
    let dek = Dek::generate(64).unwrap();
    let w = kms.wrap(&dek, &vol("pvc-1")).await.unwrap();
    assert_eq!(w.mode(), WrapMode::KmipAesCbcPkcs5);
    assert!(w.to_json().contains("\"kmipVersion\":\"1.2\""));
    assert!(kms.unwrap(&w, &vol("pvc-1")).await.unwrap().ct_eq(&dek));
    // A 1.4-capable client unwraps a 1.2 CBC record (the record says how).
    assert!(
        client(&srv, &uid)
            .unwrap(&w, &vol("pvc-1"))
            .await
            .unwrap()
            .ct_eq(&dek)
    );
    // Two wraps of the same key differ (random IV).
    let w2 = kms.wrap(&dek, &vol("pvc-1")).await.unwrap();
    assert_ne!(w.to_json(), w2.to_json());
    // Tampered first block: the framed volume id no longer matches.
    let t = edit(&w, "ciphertext", flip_b64);
    let err = kms.unwrap(&t, &vol("pvc-1")).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Integrity, "{err}");
    eprintln!("cbc, tampered ciphertext: {err}");
    // Tampered IV likewise.
    let t = edit(&w, "iv", flip_b64);
    let err = kms.unwrap(&t, &vol("pvc-1")).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Integrity, "{err}");
    // Moved to another volume.
    let moved = edit(&w, "volumeId", |_| "pvc-9".into());
    let err = kms.unwrap(&moved, &vol("pvc-9")).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Integrity, "{err}");
}

#[tokio::test]
async fn gcm_tampered_data_and_tag_are_integrity() {
    let Some(srv) = PyKmip::start() else { return };
    let uid = srv.create_key(true);
    let kms = client(&srv, &uid);
    let w = kms
        .wrap(&Dek::generate(64).unwrap(), &vol("v"))
        .await
        .unwrap();
    for field in ["ciphertext", "tag", "iv"] {
        let t = edit(&w, field, flip_b64);
        let err = kms.unwrap(&t, &vol("v")).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Integrity, "{field}: {err}");
        eprintln!("gcm, tampered {field}: {err}");
    }
}

#[tokio::test]
async fn unknown_unique_identifier_is_not_found() {
    let Some(srv) = PyKmip::start() else { return };
    let kms = client(&srv, "999999");
    let err = kms
        .wrap(&Dek::generate(32).unwrap(), &vol("v"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    eprintln!("unknown uid: {err}");
}

#[tokio::test]
async fn inactive_key_is_denied() {
    let Some(srv) = PyKmip::start() else { return };
    let uid = srv.create_key(false);
    let err = client(&srv, &uid)
        .wrap(&Dek::generate(32).unwrap(), &vol("v"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Denied, "{err}");
    assert!(err.message().contains("Active"), "{err}");
    eprintln!("inactive key: {err}");
}

#[tokio::test]
async fn client_certificate_from_another_ca_is_denied() {
    let Some(srv) = PyKmip::start() else { return };
    let uid = srv.create_key(true);
    let rogue = Ca::new("rogue CA").client(ClientOpts::default());
    let kms = Kms::new(&config(&srv, &uid, &rogue)).unwrap();
    let err = kms
        .wrap(&Dek::generate(32).unwrap(), &vol("v"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Denied, "{err}");
    assert!(
        err.message().contains("rejected the client certificate"),
        "{err}"
    );
    assert!(err.message().contains("valid until"), "{err}");
    eprintln!("client cert of another CA: {err}");
}

#[tokio::test]
async fn client_certificate_without_client_auth_eku_is_denied() {
    let Some(srv) = PyKmip::start() else { return };
    let uid = srv.create_key(true);
    let leaf = srv.ca.client(ClientOpts {
        client_auth_eku: false,
        ..ClientOpts::default()
    });
    let kms = Kms::new(&config(&srv, &uid, &leaf)).unwrap();
    let err = kms
        .wrap(&Dek::generate(32).unwrap(), &vol("v"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Denied, "{err}");
    eprintln!("client cert without clientAuth EKU: {err}");
}

#[tokio::test]
async fn key_of_another_owner_is_refused() {
    let Some(srv) = PyKmip::start() else { return };
    let uid = srv.create_key(true);
    let other = srv.ca.client(ClientOpts {
        cn: "someone-else",
        ..ClientOpts::default()
    });
    let kms = Kms::new(&config(&srv, &uid, &other)).unwrap();
    let err = kms
        .wrap(&Dek::generate(32).unwrap(), &vol("v"))
        .await
        .unwrap_err();
    assert!(
        matches!(err.kind(), ErrorKind::Denied | ErrorKind::NotFound),
        "{err}"
    );
    eprintln!("key owned by another certificate subject: {err}");
}

#[tokio::test]
async fn expired_client_certificate_is_denied_with_its_date() {
    let Some(srv) = PyKmip::start() else { return };
    let uid = srv.create_key(true);
    let leaf = srv.ca.client(ClientOpts {
        expired: true,
        ..ClientOpts::default()
    });
    let kms = Kms::new(&config(&srv, &uid, &leaf)).unwrap();
    let err = kms
        .wrap(&Dek::generate(32).unwrap(), &vol("v"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Denied, "{err}");
    assert!(
        err.message().contains("expired on 2021-03-04T00:00:00Z"),
        "{err}"
    );
}

#[tokio::test]
async fn server_stopped_mid_run_is_unavailable_within_the_timeout() {
    let Some(mut srv) = PyKmip::start() else {
        return;
    };
    let uid = srv.create_key(true);
    let kms = client(&srv, &uid);
    let w = kms
        .wrap(&Dek::generate(32).unwrap(), &vol("v"))
        .await
        .unwrap();
    srv.proc.freeze();
    let start = Instant::now();
    let err = kms.unwrap(&w, &vol("v")).await.unwrap_err();
    let took = start.elapsed();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert!(took < Duration::from_secs(6), "{took:?}");
    eprintln!("frozen KMIP server: {err} after {took:?}");
    srv.proc.kill();
    let start = Instant::now();
    let err = kms.unwrap(&w, &vol("v")).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert!(start.elapsed() < Duration::from_secs(3));
    eprintln!("killed KMIP server: {err} after {:?}", start.elapsed());
}

#[tokio::test]
async fn expired_server_certificate_is_denied_with_its_date() {
    let Some(srv) = PyKmip::start_with(true) else {
        return;
    };
    let kms = client(&srv, "1");
    let err = kms
        .wrap(&Dek::generate(32).unwrap(), &vol("v"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Denied, "{err}");
    assert!(
        err.message().contains("expired on 2022-05-06T00:00:00Z"),
        "{err}"
    );
    eprintln!("expired server certificate: {err}");
}

#[test]
fn clients_and_futures_are_send_and_sync() {
    fn send_sync<T: Send + Sync>(_: &T) {}
    fn send<T: Send>(_: T) {}
    let cfg = KmsConfig::new(
        KmsType::Transit,
        "http://127.0.0.1:1",
        "k",
        None,
        &peers::secrets(&[("token", "t")]),
    )
    .unwrap();
    let kms = Kms::new(&cfg).unwrap();
    send_sync(&kms);
    let dek = Dek::generate(32).unwrap();
    let v = vol("v");
    // Not awaited: only the future's type is checked (tonic handlers need Send futures).
    send(kms.wrap(&dek, &v));
    send(kms.check());
}

//! KMIP against a real PyKMIP 0.11 server on 127.0.0.1 (mutual TLS, ECDSA P-256 PKI made here).
#![allow(clippy::unwrap_used, missing_docs)]

use super::kmip_cases::{self as cases, client, client_max, config, edit, vol};
use super::wrap_err;
use kms::{Dek, ErrorKind, Kms, KmsConfig, KmsType, WrapMode, WrappedKey};
use testkit::peers::pki::ClientOpts;
use testkit::peers::pykmip;

const NAME: &str = "pykmip";

#[tokio::test]
async fn kmip14_gcm_round_trip_over_mtls_with_ecdsa() {
    let Some(srv) = pykmip::start() else { return };
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
    let Some(srv) = pykmip::start() else { return };
    let uid = srv.create_key(true);
    let kms = client_max(&srv, &uid, (1, 2));
    cases::round_trip_and_faults(&kms, WrapMode::KmipAesCbcPkcs5, NAME).await;
    let dek = Dek::generate(64).unwrap();
    let w = kms.wrap(&dek, &vol("pvc-1")).await.unwrap();
    assert!(w.to_json().contains("\"kmipVersion\":\"1.2\""));
    // A 1.4-capable client unwraps a 1.2 CBC record (the record says how).
    assert!(
        client(&srv, &uid)
            .unwrap(&w, &vol("pvc-1"))
            .await
            .unwrap()
            .ct_eq(&dek)
    );
}

#[tokio::test]
async fn gcm_round_trip_and_faults() {
    let Some(srv) = pykmip::start() else { return };
    let uid = srv.create_key(true);
    cases::round_trip_and_faults(&client(&srv, &uid), WrapMode::KmipAesGcm, NAME).await;
}

#[tokio::test]
async fn unknown_unique_identifier_is_not_found() {
    let Some(srv) = pykmip::start() else { return };
    cases::unknown_unique_identifier_is_not_found(&srv, "999999", NAME).await;
}

#[tokio::test]
async fn inactive_key_is_denied() {
    let Some(srv) = pykmip::start() else { return };
    cases::inactive_key_is_denied(&srv, NAME).await;
}

#[tokio::test]
async fn client_certificate_from_another_ca_is_denied() {
    let Some(srv) = pykmip::start() else { return };
    cases::client_certificate_from_another_ca_is_denied(&srv, NAME).await;
}

#[tokio::test]
async fn client_certificate_without_client_auth_eku_is_denied() {
    let Some(srv) = pykmip::start() else { return };
    let uid = srv.create_key(true);
    let leaf = srv.ca.client(ClientOpts {
        client_auth_eku: false,
        ..ClientOpts::default()
    });
    let kms = Kms::new(&config(&srv, &uid, &leaf)).unwrap();
    let err = wrap_err(&kms).await;
    assert_eq!(err.kind(), ErrorKind::Denied, "{err}");
    eprintln!("client cert without clientAuth EKU: {err}");
}

#[tokio::test]
async fn key_of_another_owner_is_refused() {
    let Some(srv) = pykmip::start() else { return };
    cases::key_of_another_owner_is_refused(&srv, NAME).await;
}

#[tokio::test]
async fn expired_client_certificate_is_denied_with_its_date() {
    let Some(srv) = pykmip::start() else { return };
    let uid = srv.create_key(true);
    let leaf = srv.ca.client(ClientOpts {
        expired: true,
        ..ClientOpts::default()
    });
    let kms = Kms::new(&config(&srv, &uid, &leaf)).unwrap();
    let err = wrap_err(&kms).await;
    assert_eq!(err.kind(), ErrorKind::Denied, "{err}");
    assert!(
        err.message().contains("expired on 2021-03-04T00:00:00Z"),
        "{err}"
    );
}

#[tokio::test]
async fn server_stopped_mid_run_is_unavailable_within_the_timeout() {
    let Some(mut srv) = pykmip::start() else {
        return;
    };
    cases::server_stopped_mid_run_is_unavailable(&mut srv, NAME).await;
}

#[tokio::test]
async fn expired_server_certificate_is_denied_with_its_date() {
    let Some(srv) = pykmip::start_with(true) else {
        return;
    };
    let kms = client(&srv, "1");
    let err = wrap_err(&kms).await;
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
        &testkit::peers::secrets(&[("token", "t")]),
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

//! KMIP against a real Cosmian KMS 5.28.0 server on 127.0.0.1: TLS with client certificates,
//! keys created by PyKMIP's client, our TTLV client wrapping and unwrapping. A second, unrelated
//! KMIP implementation next to PyKMIP (`kmip.rs`), so that our codec is not tuned to one server.
#![allow(clippy::unwrap_used, missing_docs)]

use super::kmip_cases::{self as cases, client, client_max, vol};
use kms::{Dek, Kms, WrapMode};
use testkit::peers::cosmian::{self, VERSION};

const NAME: &str = "cosmian";

#[tokio::test]
async fn negotiates_kmip14_and_round_trips_with_gcm_over_mtls() {
    let Some(srv) = cosmian::start() else { return };
    let uid = srv.create_key(true);
    let kms = client(&srv, &uid);
    let Kms::Kmip(k) = &kms else { unreachable!() };
    let version = k.protocol_version().await.unwrap();
    eprintln!("Cosmian KMS {VERSION}: negotiated KMIP {version:?}");
    assert_eq!(
        version,
        (1, 4),
        "Cosmian offers KMIP 2.x and 1.x; ours tops at 1.4"
    );
    cases::round_trip_and_faults(&kms, WrapMode::KmipAesGcm, NAME).await;
    for _ in 0..3 {
        let rtt = kms.check().await.unwrap();
        eprintln!("cosmian check round trip: {rtt:?}");
    }
}

#[tokio::test]
async fn kmip12_cbc_round_trip_and_faults() {
    let Some(srv) = cosmian::start() else { return };
    let uid = srv.create_key(true);
    let kms = client_max(&srv, &uid, (1, 2));
    cases::round_trip_and_faults(&kms, WrapMode::KmipAesCbcPkcs5, NAME).await;
    // A 1.4 client unwraps the 1.2 record: the record says how.
    let dek = Dek::generate(32).unwrap();
    let w = kms.wrap(&dek, &vol("v")).await.unwrap();
    assert!(
        client(&srv, &uid)
            .unwrap(&w, &vol("v"))
            .await
            .unwrap()
            .ct_eq(&dek)
    );
}

#[tokio::test]
async fn unknown_unique_identifier_is_not_found() {
    let Some(srv) = cosmian::start() else { return };
    let uid = "00000000-0000-0000-0000-000000000000";
    cases::unknown_unique_identifier_is_not_found(&srv, uid, NAME).await;
}

#[tokio::test]
async fn key_not_activated_is_denied() {
    let Some(srv) = cosmian::start() else { return };
    cases::inactive_key_is_denied(&srv, NAME).await;
}

#[tokio::test]
async fn client_certificate_from_another_ca_is_denied() {
    let Some(srv) = cosmian::start() else { return };
    cases::client_certificate_from_another_ca_is_denied(&srv, NAME).await;
}

#[tokio::test]
async fn key_of_another_owner_is_refused() {
    let Some(srv) = cosmian::start() else { return };
    cases::key_of_another_owner_is_refused(&srv, NAME).await;
}

#[tokio::test]
async fn server_stopped_mid_run_is_unavailable_within_the_timeout() {
    let Some(mut srv) = cosmian::start() else {
        return;
    };
    cases::server_stopped_mid_run_is_unavailable(&mut srv, NAME).await;
}

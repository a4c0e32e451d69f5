//! What every KMIP server is tested for, written once and run against each real server
//! (`kmip.rs`: PyKMIP, `cosmian.rs`: Cosmian KMS). Server-specific behaviour stays in those
//! files.

use std::time::{Duration, Instant};

use kms::{Dek, ErrorKind, Kms, KmsConfig, KmsType, Timeouts, VolumeId, WrapMode, WrappedKey};

use testkit::peers::kmip::KmipServer;
use testkit::peers::pki::{Ca, ClientOpts, Leaf};

use super::{wrap_err, wrap_random};

/// Test time limits: connect 2 s, request 4 s.
pub(crate) fn config(srv: &KmipServer, key: &str, leaf: &Leaf) -> KmsConfig {
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

/// A client as the default identity.
pub(crate) fn client(srv: &KmipServer, key: &str) -> Kms {
    Kms::new(&config(srv, key, &srv.client)).unwrap()
}

/// A client that negotiates at most KMIP `max`.
pub(crate) fn client_max(srv: &KmipServer, key: &str, max: kms::kmip::ProtocolVersion) -> Kms {
    let c = kms::kmip::KmipClient::new(&config(srv, key, &srv.client)).unwrap();
    Kms::Kmip(Box::new(c.with_max_version(max)))
}

pub(crate) fn vol(s: &str) -> VolumeId {
    VolumeId::new(s).unwrap()
}

/// The record with one JSON string field rewritten.
pub(crate) fn edit(w: &WrappedKey, field: &str, f: impl Fn(&str) -> String) -> WrappedKey {
    let mut v: serde_json::Value = serde_json::from_str(&w.to_json()).unwrap();
    let old = v[field].as_str().unwrap().to_owned();
    v[field] = serde_json::Value::String(f(&old));
    WrappedKey::from_json(v.to_string().as_bytes()).unwrap()
}

/// Base64 text with the first decoded bit flipped.
pub(crate) fn flip_b64(s: &str) -> String {
    use base64::Engine as _;
    let e = base64::engine::general_purpose::STANDARD;
    let mut b = e.decode(s).unwrap();
    b[0] ^= 0x01;
    e.encode(b)
}

/// Wrap and unwrap (also after a JSON round trip), a fresh IV per wrap, and the ways a record
/// goes wrong: copied to another volume, tampered ciphertext, IV and (GCM) tag.
pub(crate) async fn round_trip_and_faults(kms: &Kms, expect: WrapMode, server: &str) {
    let dek = Dek::generate(64).unwrap();
    let w = kms.wrap(&dek, &vol("pvc-1")).await.unwrap();
    assert_eq!(w.mode(), expect, "{}", w.to_json());
    let back = WrappedKey::from_json(w.to_json().as_bytes()).unwrap();
    assert!(kms.unwrap(&back, &vol("pvc-1")).await.unwrap().ct_eq(&dek));
    let w2 = kms.wrap(&dek, &vol("pvc-1")).await.unwrap();
    assert_ne!(w.to_json(), w2.to_json(), "two wraps share an IV");
    // Copied into another volume's Secret, with and without its volumeId rewritten.
    let moved = edit(&w, "volumeId", |_| "pvc-2".into());
    let err = kms.unwrap(&moved, &vol("pvc-2")).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Integrity, "{err}");
    eprintln!("{server} {expect:?}, moved to another volume: {err}");
    let err = kms.unwrap(&w, &vol("pvc-2")).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Integrity, "{err}");
    let mut fields = vec!["ciphertext", "iv"];
    if expect == WrapMode::KmipAesGcm {
        fields.push("tag");
    }
    for field in fields {
        let t = edit(&w, field, flip_b64);
        let err = kms.unwrap(&t, &vol("pvc-1")).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Integrity, "{field}: {err}");
        eprintln!("{server} {expect:?}, tampered {field}: {err}");
    }
}

pub(crate) async fn unknown_unique_identifier_is_not_found(
    srv: &KmipServer,
    uid: &str,
    server: &str,
) {
    let err = wrap_err(&client(srv, uid)).await;
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    eprintln!("{server}, unknown uid: {err}");
}

pub(crate) async fn inactive_key_is_denied(srv: &KmipServer, server: &str) {
    let uid = srv.create_key(false);
    let err = wrap_err(&client(srv, &uid)).await;
    assert_eq!(err.kind(), ErrorKind::Denied, "{err}");
    assert!(err.message().contains("Active"), "{err}");
    eprintln!("{server}, key not activated: {err}");
}

pub(crate) async fn client_certificate_from_another_ca_is_denied(srv: &KmipServer, server: &str) {
    let uid = srv.create_key(true);
    let rogue = Ca::new("rogue CA").client(ClientOpts::default());
    let err = wrap_err(&Kms::new(&config(srv, &uid, &rogue)).unwrap()).await;
    assert_eq!(err.kind(), ErrorKind::Denied, "{err}");
    assert!(
        err.message().contains("rejected the client certificate")
            && err.message().contains("valid until"),
        "{err}"
    );
    eprintln!("{server}, client cert of another CA: {err}");
}

/// A certificate of the right CA for another subject: the key is not theirs.
pub(crate) async fn key_of_another_owner_is_refused(srv: &KmipServer, server: &str) {
    let uid = srv.create_key(true);
    let other = srv.ca.client(ClientOpts {
        cn: "someone-else",
        ..ClientOpts::default()
    });
    let err = wrap_err(&Kms::new(&config(srv, &uid, &other)).unwrap()).await;
    assert!(
        matches!(err.kind(), ErrorKind::Denied | ErrorKind::NotFound),
        "{err}"
    );
    eprintln!("{server}, key owned by another certificate subject: {err}");
}

/// Frozen (SIGSTOP: the port stays open, nothing answers), then killed: `Unavailable`, within the
/// 4 s request timeout and at once respectively.
pub(crate) async fn server_stopped_mid_run_is_unavailable(srv: &mut KmipServer, server: &str) {
    let uid = srv.create_key(true);
    let kms = client(srv, &uid);
    let w = wrap_random(&kms).await;
    srv.proc.freeze();
    let start = Instant::now();
    let err = kms.unwrap(&w, &vol("v")).await.unwrap_err();
    let took = start.elapsed();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert!(took < Duration::from_secs(6), "{took:?}");
    eprintln!("{server} frozen: {err} after {took:?}");
    srv.proc.kill();
    let start = Instant::now();
    let err = kms.unwrap(&w, &vol("v")).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert!(start.elapsed() < Duration::from_secs(3));
    eprintln!("{server} killed: {err} after {:?}", start.elapsed());
}

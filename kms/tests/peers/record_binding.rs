//! A wrapped-key record cannot redirect credentials: the record lives in an
//! unauthenticated Secret, so its kmsType, endpoint, keyId and namespace must match the
//! configuration, and a mismatch fails with `Integrity` before any connection is made.
#![allow(clippy::unwrap_used, missing_docs)]

use std::net::TcpListener;

use kms::{ErrorKind, Kms, KmsConfig, KmsType, VolumeId, WrappedKey};
use testkit::peers::pki::{Ca, ClientOpts};
use testkit::peers::secrets;

/// A listener that must never see a connection.
struct Untouched(TcpListener);

impl Untouched {
    fn new() -> Self {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.set_nonblocking(true).unwrap();
        Self(l)
    }
    fn port(&self) -> u16 {
        self.0.local_addr().unwrap().port()
    }
    fn assert_untouched(&self, what: &str) {
        match self.0.accept() {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Ok((_, peer)) => panic!("{what}: a connection was made (from {peer})"),
            Err(e) => panic!("{what}: accept failed: {e}"),
        }
    }
}

fn transit_record(endpoint: &str, key: &str, namespace: Option<&str>) -> WrappedKey {
    let ns = namespace.map_or_else(String::new, |n| format!(r#""namespace":"{n}","#));
    let json = format!(
        r#"{{"version":1,"kmsType":"transit","endpoint":"{endpoint}","keyId":"{key}",{ns}"keyVersion":1,"mode":"transit-framed","ciphertext":"vault:v1:AAAA","volumeId":"v","createdAt":"2026-01-01T00:00:00Z"}}"#
    );
    WrappedKey::from_json(json.as_bytes()).unwrap()
}

fn kmip_record(endpoint: &str, key: &str) -> WrappedKey {
    let json = format!(
        r#"{{"version":1,"kmsType":"kmip","endpoint":"{endpoint}","keyId":"{key}","mode":"kmip-aes-gcm","kmipVersion":"1.4","iv":"AAAAAAAAAAAAAAAA","tag":"AAAAAAAAAAAAAAAAAAAAAA==","ciphertext":"AAAA","volumeId":"v","createdAt":"2026-01-01T00:00:00Z"}}"#
    );
    WrappedKey::from_json(json.as_bytes()).unwrap()
}

fn transit_config(endpoint: &str, namespace: Option<&str>) -> KmsConfig {
    KmsConfig::new(
        KmsType::Transit,
        endpoint,
        "pvc-kek",
        namespace,
        &secrets(&[("token", "s.secret-token")]),
    )
    .unwrap()
}

fn kmip_config(endpoint: &str) -> KmsConfig {
    let ca = Ca::new("record-binding CA");
    let leaf = ca.client(ClientOpts::default());
    KmsConfig::new(
        KmsType::Kmip,
        endpoint,
        "42",
        None,
        &secrets(&[
            ("ca.crt", &ca.pem()),
            ("tls.crt", &leaf.cert_pem),
            ("tls.key", &leaf.key_pem),
        ]),
    )
    .unwrap()
}

fn vol() -> VolumeId {
    VolumeId::new("v").unwrap()
}

/// Fails on the code before the fix: Transit only logged a warning and went on to the
/// configured endpoint; KMIP did not look at the record's endpoint at all.
#[tokio::test]
async fn record_naming_another_endpoint_is_integrity_without_connecting() {
    let configured = Untouched::new();
    let recorded = Untouched::new();
    let (p1, p2) = (configured.port(), recorded.port());

    let kms = Kms::new(&transit_config(&format!("http://127.0.0.1:{p1}"), None)).unwrap();
    let record = transit_record(&format!("http://127.0.0.1:{p2}"), "pvc-kek", None);
    let err = kms.unwrap(&record, &vol()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Integrity, "{err}");
    assert!(err.message().contains("endpoint"), "{err}");
    assert!(!err.to_string().contains("secret-token"), "{err}");
    let err = kms.rewrap(&record).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Integrity, "{err}");
    // Same host and port over https is another endpoint too.
    let record = transit_record(&format!("https://127.0.0.1:{p1}"), "pvc-kek", None);
    let err = kms.unwrap(&record, &vol()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Integrity, "{err}");

    let kms = Kms::new(&kmip_config(&format!("127.0.0.1:{p1}"))).unwrap();
    let record = kmip_record(&format!("127.0.0.1:{p2}"), "42");
    let err = kms.unwrap(&record, &vol()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Integrity, "{err}");
    assert!(err.message().contains("endpoint"), "{err}");
    let err = kms.rewrap(&record).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Integrity, "{err}");

    configured.assert_untouched("configured endpoint");
    recorded.assert_untouched("endpoint named by the record");
}

#[tokio::test]
async fn record_of_another_type_key_or_namespace_is_integrity_without_connecting() {
    let l = Untouched::new();
    let ep = format!("http://127.0.0.1:{}", l.port());
    let kms = Kms::new(&transit_config(&ep, Some("team-a"))).unwrap();
    for (record, field) in [
        (transit_record(&ep, "other-kek", Some("team-a")), "keyId"),
        (transit_record(&ep, "pvc-kek", None), "namespace"),
        (transit_record(&ep, "pvc-kek", Some("team-b")), "namespace"),
        (
            kmip_record(&format!("127.0.0.1:{}", l.port()), "42"),
            "kmsType",
        ),
    ] {
        let err = kms.unwrap(&record, &vol()).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Integrity, "{field}: {err}");
        assert!(err.message().contains(field), "{field}: {err}");
    }
    let kms = Kms::new(&kmip_config(&format!("127.0.0.1:{}", l.port()))).unwrap();
    let err = kms
        .unwrap(
            &kmip_record(&format!("127.0.0.1:{}", l.port()), "43"),
            &vol(),
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Integrity, "{err}");
    assert!(err.message().contains("keyId"), "{err}");
    l.assert_untouched("endpoint");
}

#[test]
fn check_record_names_the_field_and_both_values() {
    let cfg = transit_config("https://bao.example.com:8200", None);
    // The same endpoint spelled differently (host case, trailing slash) matches.
    let same = transit_record("https://BAO.example.com:8200/", "pvc-kek", None);
    cfg.check_record(&same).unwrap();
    let other = transit_record("https://evil.example.com:8200", "pvc-kek", None);
    let err = cfg.check_record(&other).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Integrity);
    let m = err.message();
    assert!(
        m.contains("endpoint")
            && m.contains("https://evil.example.com:8200")
            && m.contains("https://bao.example.com:8200"),
        "{m}"
    );
    assert!(!err.to_string().contains("secret-token"), "{err}");
    let err = cfg
        .check_record(&transit_record(
            "https://bao.example.com:8200",
            "pvc-kek",
            Some("team-a"),
        ))
        .unwrap_err();
    assert!(
        err.message().contains("namespace") && err.message().contains("team-a"),
        "{err}"
    );
    let kcfg = kmip_config("10.0.0.1:5696");
    kcfg.check_record(&kmip_record("10.0.0.1:5696", "42"))
        .unwrap();
    let err = kcfg
        .check_record(&kmip_record("10.0.0.2:5696", "42"))
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Integrity);
    assert!(err.message().contains("10.0.0.2:5696"), "{err}");
    let err = kcfg
        .check_record(&transit_record("http://10.0.0.1:5696", "42", None))
        .unwrap_err();
    assert!(err.message().contains("kmsType"), "{err}");
}

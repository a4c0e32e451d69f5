//! An encrypted volume on a KMIP KMS (PyKMIP 0.11, mutual TLS) through the driver, on a real
//! kernel: stage with the client identity of the credentials Secret; the KMS stopped while the
//! volume is mounted (reads and writes go on, a new stage is UNAVAILABLE, then stages again); a
//! client certificate the KMS does not trust is PERMISSION_DENIED.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::fs;

use testkit::plugin::peers::pki::{Ca, ClientOpts};
use testkit::plugin::*;

const GIB: i64 = 1 << 30;

fn kmip_params(endpoint: &str, key_id: &str) -> HashMap<String, String> {
    HashMap::from([
        ("encryptionEnabled".into(), "true".into()),
        ("encryptionKMSType".into(), "kmip".into()),
        ("encryptionKMSEndpoint".into(), endpoint.into()),
        ("encryptionKMSKeyID".into(), key_id.into()),
    ])
}

#[test]
fn vm_kmip_outage_and_untrusted_certificate() {
    require_privileged!();
    let srv = testkit::plugin::peers::pykmip::start().expect("PyKMIP is installed");
    let key = srv.create_key(true);
    let secrets = srv.secrets_for(&srv.client);
    let mut rig = Rig::new();
    let params = kmip_params(&srv.endpoint(), &key);

    let v = rig.create("pvc-kmip", GIB, &params, false).unwrap();
    let staging = rig.path("staging");
    let target = rig.path("target");
    rig.stage(&v, &staging, cap(false, "ext4"), &secrets)
        .unwrap();
    rig.publish(&v.volume_id, &staging, &target, cap(false, "ext4"), false)
        .unwrap();
    fs::write(target.join("before"), b"kmip before").unwrap();
    let record = fs::read_to_string(rig.record_file(&v.volume_id)).unwrap();
    assert!(record.contains("\"kmsType\":\"kmip\""), "{record}");

    // KMS stopped: the mounted volume keeps working; a new stage is UNAVAILABLE.
    srv.proc.freeze();
    fs::write(target.join("during"), b"kmip during").unwrap();
    sh("sync");
    assert_eq!(fs::read(target.join("before")).unwrap(), b"kmip before");
    let v2 = rig.create("pvc-kmip-2", GIB, &params, false).unwrap();
    let staging2 = rig.path("staging-2");
    let err = rig
        .stage(&v2, &staging2, cap(false, "ext4"), &secrets)
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");
    rig.unpublish(&v.volume_id, &target).unwrap();
    rig.unstage(&v.volume_id, &staging).unwrap();
    srv.proc.thaw();

    // Back: the volume stages with its data, the second one is formatted now.
    rig.stage(&v, &staging, cap(false, "ext4"), &secrets)
        .unwrap();
    assert_eq!(fs::read(staging.join("during")).unwrap(), b"kmip during");
    rig.unstage(&v.volume_id, &staging).unwrap();
    rig.stage(&v2, &staging2, cap(false, "ext4"), &secrets)
        .unwrap();

    // A client identity from a CA the KMS does not trust: PERMISSION_DENIED, nothing touched.
    let stranger = Ca::new("a CA the KMS does not know").client(ClientOpts::default());
    let mut bad = secrets.clone();
    bad.insert("tls.crt".into(), stranger.cert_pem.clone());
    bad.insert("tls.key".into(), stranger.key_pem.clone());
    let err = rig
        .stage(&v, &staging, cap(false, "ext4"), &bad)
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err:?}");
}

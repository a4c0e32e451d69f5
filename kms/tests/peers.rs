//! The KMS clients against peers: real servers on 127.0.0.1 (OpenBao, PyKMIP, Cosmian KMS, from
//! `testkit::peers`; `kms/tests/install-peers.sh` installs them) and small servers written here
//! that misbehave on purpose. One module per behaviour, mapped in `kms/tests/README.md`.
#![allow(clippy::unwrap_used, missing_docs)]

mod peers {
    mod cosmian;
    mod kmip;
    mod kmip_cases;
    mod kmip_desync;
    mod record_binding;
    mod transit;
    mod transit_local;

    /// Wraps a fresh random 32-byte DEK for volume `v`, which must succeed.
    async fn wrap_random(kms: &kms::Kms) -> kms::WrappedKey {
        let dek = kms::Dek::generate(32).unwrap();
        kms.wrap(&dek, &kms::VolumeId::new("v").unwrap())
            .await
            .unwrap()
    }

    /// Wraps a fresh random 32-byte DEK for volume `v`, which must fail; returns the error.
    async fn wrap_err(kms: &kms::Kms) -> kms::Error {
        let dek = kms::Dek::generate(32).unwrap();
        kms.wrap(&dek, &kms::VolumeId::new("v").unwrap())
            .await
            .unwrap_err()
    }
}

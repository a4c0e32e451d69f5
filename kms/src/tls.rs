//! TLS material from the credentials Secret (PEM), rustls client configurations with the `ring`
//! provider, and the classification of TLS failures (naming certificate expiry dates).

use std::fmt;
use std::sync::Arc;

use rustls::client::ResolvesClientCert;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, RootCertStore};
use time::OffsetDateTime;
use zeroize::Zeroize as _;

use crate::error::{Error, ErrorKind, Result};
use crate::secret::{SECRET_TLS_CERT, SECRET_TLS_KEY};
use crate::timestamp::rfc3339;

fn unix_rfc3339(t: UnixTime) -> String {
    i64::try_from(t.as_secs())
        .ok()
        .and_then(|s| OffsetDateTime::from_unix_timestamp(s).ok())
        .map_or_else(|| format!("{}s after the epoch", t.as_secs()), rfc3339)
}

/// CA certificates that may sign the KMS server certificate (`ca.crt`).
#[derive(Clone)]
pub(crate) struct TrustAnchors(Arc<RootCertStore>);

impl TrustAnchors {
    pub(crate) fn from_pem(name: &str, pem: &[u8]) -> Result<Self> {
        let mut store = RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(pem) {
            let cert = cert.map_err(|e| {
                Error::config(format!(
                    "secret key {name:?} is not a PEM certificate list: {e}"
                ))
            })?;
            store.add(cert).map_err(|e| {
                Error::config(format!("secret key {name:?} holds a certificate rustls cannot use as a trust anchor: {e}"))
            })?;
        }
        if store.is_empty() {
            return Err(Error::config(format!(
                "secret key {name:?} holds no PEM certificate"
            )));
        }
        Ok(Self(Arc::new(store)))
    }

    fn public_roots() -> Self {
        Self(Arc::new(RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        }))
    }
}

/// Subject and validity of a certificate, for messages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertInfo {
    /// The subject's distinguished name.
    pub subject: String,
    /// Start of validity.
    pub not_before: OffsetDateTime,
    /// End of validity.
    pub not_after: OffsetDateTime,
}

impl CertInfo {
    fn parse(der: &[u8]) -> Result<Self> {
        let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|e| {
            Error::config(format!(
                "secret key {SECRET_TLS_CERT:?}: certificate does not parse: {e}"
            ))
        })?;
        let v = cert.validity();
        Ok(Self {
            subject: cert.subject().to_string(),
            not_before: v.not_before.to_datetime(),
            not_after: v.not_after.to_datetime(),
        })
    }

    /// Denied if the certificate is expired or not yet valid at `now`.
    pub(crate) fn check_validity(&self, now: OffsetDateTime) -> Result<()> {
        if now > self.not_after {
            return Err(Error::denied(format!(
                "the client certificate {SECRET_TLS_CERT} ({}) expired on {}: issue a new one and update the Secret",
                self.subject,
                rfc3339(self.not_after)
            )));
        }
        if now < self.not_before {
            return Err(Error::denied(format!(
                "the client certificate {SECRET_TLS_CERT} ({}) is not valid before {}",
                self.subject,
                rfc3339(self.not_before)
            )));
        }
        Ok(())
    }
}

impl fmt::Display for CertInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}, valid until {}",
            self.subject,
            rfc3339(self.not_after)
        )
    }
}

/// A PEM-decoded private key, wiped when dropped (rustls' `PrivateKeyDer` is `Zeroize` but
/// does not wipe itself).
struct KeyDer(PrivateKeyDer<'static>);

impl KeyDer {
    fn wipe(&mut self) {
        self.0.zeroize();
    }
}

impl Drop for KeyDer {
    fn drop(&mut self) {
        self.wipe();
    }
}

impl zeroize::ZeroizeOnDrop for KeyDer {}

/// The client certificate chain and private key (`tls.crt`, `tls.key`), loaded once into
/// rustls' signing key: the DER is parsed from a borrowed, self-wiping buffer, and neither it
/// nor a clone of it is kept. Clones share the one loaded key.
#[derive(Clone)]
pub(crate) struct ClientIdentity {
    certified: Arc<CertifiedKey>,
    info: CertInfo,
}

impl ClientIdentity {
    pub(crate) fn from_pem(cert_pem: &[u8], key_pem: &[u8]) -> Result<Self> {
        let chain = CertificateDer::pem_slice_iter(cert_pem)
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| {
                Error::config(format!(
                    "secret key {SECRET_TLS_CERT:?} is not a PEM certificate chain: {e}"
                ))
            })?;
        let first = chain.first().ok_or_else(|| {
            Error::config(format!(
                "secret key {SECRET_TLS_CERT:?} holds no PEM certificate"
            ))
        })?;
        let info = CertInfo::parse(first)?;
        // The parse error of a key never includes key material (only its kind).
        let key = KeyDer(PrivateKeyDer::from_pem_slice(key_pem).map_err(|_| {
            Error::config(format!(
                "secret key {SECRET_TLS_KEY:?} is not a PEM private key (PKCS#8, SEC1 or PKCS#1)"
            ))
        })?);
        let signing = rustls::crypto::ring::sign::any_supported_type(&key.0).map_err(|e| {
            Error::config(format!(
                "secret key {SECRET_TLS_KEY:?} is not a usable private key: {e}"
            ))
        })?;
        drop(key);
        let certified = CertifiedKey::new(chain, signing);
        // As rustls' own with_client_auth_cert: refuse a key that does not match the
        // certificate, accept one whose match cannot be determined.
        match certified.keys_match() {
            Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
            Err(e) => {
                return Err(Error::config(format!(
                    "{SECRET_TLS_CERT:?} and {SECRET_TLS_KEY:?} do not form a usable client identity: {e}"
                )));
            }
        }
        Ok(Self {
            certified: Arc::new(certified),
            info,
        })
    }

    pub(crate) fn info(&self) -> &CertInfo {
        &self.info
    }
}

/// Presents the one client identity whatever the server asks (as rustls'
/// `with_client_auth_cert` does), without handing rustls a copy of the key.
#[derive(Debug)]
struct FixedClientCert(Arc<CertifiedKey>);

impl ResolvesClientCert for FixedClientCert {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[rustls::SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(&self.0))
    }

    fn has_certs(&self) -> bool {
        true
    }
}

fn builder() -> Result<rustls::ConfigBuilder<ClientConfig, rustls::WantsVerifier>> {
    ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::config(format!("TLS setup: {e}")))
}

/// Server-authenticated TLS for Transit (`ca.crt` or the public web PKI roots).
pub(crate) fn transit_config(ca: Option<&TrustAnchors>) -> Result<ClientConfig> {
    let roots = ca.cloned().unwrap_or_else(TrustAnchors::public_roots);
    Ok(builder()?
        .with_root_certificates(roots.0)
        .with_no_client_auth())
}

/// Mutual TLS for KMIP.
pub(crate) fn kmip_config(ca: &TrustAnchors, id: &ClientIdentity) -> Result<ClientConfig> {
    Ok(builder()?
        .with_root_certificates(ca.0.clone())
        .with_client_cert_resolver(Arc::new(FixedClientCert(Arc::clone(&id.certified)))))
}

/// Finds a rustls error anywhere in an error's source chain (also inside `io::Error`s, whose
/// `source()` skips the wrapped error).
pub(crate) fn find_rustls_error<'a>(
    err: &'a (dyn std::error::Error + 'static),
) -> Option<&'a rustls::Error> {
    let mut next: Option<&'a (dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = next {
        if let Some(r) = e.downcast_ref::<rustls::Error>() {
            return Some(r);
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && let Some(inner) = io.get_ref()
            && let Some(r) = find_rustls_error(inner)
        {
            return Some(r);
        }
        next = e.source();
    }
    None
}

/// Classifies a TLS failure. `client` names the client certificate presented, if any.
pub(crate) fn classify_tls(
    err: &rustls::Error,
    endpoint: &str,
    client: Option<&CertInfo>,
) -> Error {
    use rustls::{AlertDescription as A, CertificateError as C};
    let rejected_by_server = |what: &str| {
        let cert = client.map_or_else(String::new, |c| format!(" ({c})"));
        Error::denied(format!(
            "the KMS at {endpoint} rejected the client certificate{cert}: {what}"
        ))
    };
    match err {
        rustls::Error::InvalidCertificate(c) => {
            let (kind, why) = match c {
                C::ExpiredContext { not_after, .. } => (
                    ErrorKind::Denied,
                    format!("it expired on {}", unix_rfc3339(*not_after)),
                ),
                C::Expired => (ErrorKind::Denied, "it has expired".to_owned()),
                C::NotValidYetContext { not_before, .. } => (
                    ErrorKind::Denied,
                    format!("it is not valid before {}", unix_rfc3339(*not_before)),
                ),
                C::NotValidYet => (ErrorKind::Denied, "it is not valid yet".to_owned()),
                C::Revoked => (ErrorKind::Denied, "it is revoked".to_owned()),
                C::UnknownIssuer => (
                    ErrorKind::InvalidConfig,
                    "it is not signed by a CA in ca.crt (or a public CA when ca.crt is absent)"
                        .to_owned(),
                ),
                C::NotValidForName | C::NotValidForNameContext { .. } => (
                    ErrorKind::InvalidConfig,
                    "it is not valid for the endpoint's host (check its subjectAltName)".to_owned(),
                ),
                other => (ErrorKind::InvalidConfig, format!("{other:?}")),
            };
            Error::new(
                kind,
                format!("the server certificate of {endpoint} is not accepted: {why}"),
            )
        }
        rustls::Error::AlertReceived(alert) => match alert {
            A::BadCertificate
            | A::UnsupportedCertificate
            | A::CertificateRevoked
            | A::CertificateExpired
            | A::CertificateUnknown
            | A::UnknownCA
            | A::AccessDenied
            | A::CertificateRequired
            | A::DecryptError
                if client.is_some() =>
            {
                rejected_by_server(&format!("TLS alert {alert:?}"))
            }
            A::HandshakeFailure if client.is_some() => rejected_by_server(
                "TLS alert HandshakeFailure (certificate or cipher suites not accepted)",
            ),
            other => Error::unavailable(format!("TLS with {endpoint} failed: alert {other:?}")),
        },
        other => Error::unavailable(format!("TLS with {endpoint} failed: {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> (rcgen::Certificate, rcgen::KeyPair) {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["client".to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        (cert, key)
    }

    /// The decoded private key wipes itself; the identity keeps only rustls' loaded key.
    #[test]
    fn private_key_der_is_wiped() {
        fn zeroize_on_drop<T: zeroize::ZeroizeOnDrop>() {}
        zeroize_on_drop::<KeyDer>();
        let (_, key) = pair();
        let mut der =
            KeyDer(PrivateKeyDer::from_pem_slice(key.serialize_pem().as_bytes()).unwrap());
        assert!(!der.0.secret_der().is_empty());
        der.wipe();
        assert!(der.0.secret_der().iter().all(|b| *b == 0));
    }

    #[test]
    fn identity_loads_once_and_refuses_a_foreign_key() {
        let (cert, key) = pair();
        let id = ClientIdentity::from_pem(cert.pem().as_bytes(), key.serialize_pem().as_bytes())
            .unwrap();
        let ca = TrustAnchors::from_pem("ca.crt", cert.pem().as_bytes()).unwrap();
        kmip_config(&ca, &id).unwrap();
        kmip_config(&ca, &id.clone()).unwrap();
        let (_, other) = pair();
        let err = ClientIdentity::from_pem(cert.pem().as_bytes(), other.serialize_pem().as_bytes())
            .err()
            .unwrap();
        assert_eq!(err.kind(), ErrorKind::InvalidConfig);
        assert!(err.message().contains("usable client identity"), "{err}");
        assert!(!err.to_string().contains("PRIVATE KEY"), "{err}");
    }
}

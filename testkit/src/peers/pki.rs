//! A throwaway ECDSA P-256 PKI for the KMIP test servers, made at test time with rcgen: a CA,
//! server certificates for 127.0.0.1 and client certificates (clientAuth EKU, CN = owner).

use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, SanType,
};

/// A CA able to issue server and client certificates.
pub struct Ca {
    pub cert: Certificate,
    pub key: KeyPair,
}

/// A certificate and its private key, PEM.
pub struct Leaf {
    pub cert_pem: String,
    pub key_pem: String,
}

pub struct ClientOpts {
    pub cn: &'static str,
    pub client_auth_eku: bool,
    pub expired: bool,
}

impl Default for ClientOpts {
    fn default() -> Self {
        Self {
            cn: "onmetal-test",
            client_auth_eku: true,
            expired: false,
        }
    }
}

impl Ca {
    pub fn new(name: &str) -> Ca {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name.push(DnType::CommonName, name);
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = p.self_signed(&key).unwrap();
        Ca { cert, key }
    }

    pub fn pem(&self) -> String {
        self.cert.pem()
    }

    pub fn server(&self, expired: bool) -> Leaf {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let mut p = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        if expired {
            p.not_before = rcgen::date_time_ymd(2020, 1, 1);
            p.not_after = rcgen::date_time_ymd(2022, 5, 6);
        }
        p.subject_alt_names
            .push(SanType::IpAddress("127.0.0.1".parse().unwrap()));
        p.distinguished_name.push(DnType::CommonName, "127.0.0.1");
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let cert = p.signed_by(&key, &self.cert, &self.key).unwrap();
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }

    pub fn client(&self, o: ClientOpts) -> Leaf {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name.push(DnType::CommonName, o.cn);
        if o.client_auth_eku {
            p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        } else {
            p.extended_key_usages = vec![ExtendedKeyUsagePurpose::EmailProtection];
        }
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        if o.expired {
            p.not_before = rcgen::date_time_ymd(2020, 1, 1);
            p.not_after = rcgen::date_time_ymd(2021, 3, 4);
        }
        let cert = p.signed_by(&key, &self.cert, &self.key).unwrap();
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }
}

/// A CA with one server and one default client identity, written where a KMIP server and
/// PyKMIP's client expect them: `ca.crt`, `server.crt`, `server.key` (PKCS#8), `client.crt`,
/// `client.key`.
pub fn issue_into(dir: &std::path::Path, ca_name: &str, expired_server_cert: bool) -> (Ca, Leaf) {
    let ca = Ca::new(ca_name);
    let server = ca.server(expired_server_cert);
    let client = ca.client(ClientOpts::default());
    for (name, pem) in [
        ("ca.crt", &ca.pem()),
        ("server.crt", &server.cert_pem),
        ("server.key", &server.key_pem),
        ("client.crt", &client.cert_pem),
        ("client.key", &client.key_pem),
    ] {
        std::fs::write(dir.join(name), pem).unwrap();
    }
    (ca, client)
}

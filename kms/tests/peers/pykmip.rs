//! PyKMIP 0.11 server with an ECDSA P-256 PKI generated at test time (rcgen).

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, SanType,
};

use super::{Proc, free_port, require, wait_for_port};

pub fn binary() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("PYKMIP_SERVER_BIN") {
        return Some(PathBuf::from(p)).filter(|p| p.exists());
    }
    let out = Command::new("sh")
        .args(["-c", "command -v pykmip-server"])
        .output()
        .ok()?;
    let p = String::from_utf8(out.stdout).ok()?;
    let p = p.trim();
    (!p.is_empty()).then(|| PathBuf::from(p))
}

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

pub struct PyKmip {
    pub proc: Proc,
    pub port: u16,
    pub ca: Ca,
    pub client: Leaf,
    pub dir: tempfile::TempDir,
}

impl PyKmip {
    /// Starts a PyKMIP server with mutual TLS (TLS 1.2, client auth EKU enforced).
    pub fn start() -> Option<PyKmip> {
        Self::start_with(false)
    }

    /// As [`PyKmip::start`], optionally with an expired server certificate.
    pub fn start_with(expired_server_cert: bool) -> Option<PyKmip> {
        let bin = require("PyKMIP (pykmip-server from PyPI pykmip==0.11.0)", binary())?;
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::new("onmetal test KMIP CA");
        let server = ca.server(expired_server_cert);
        let client = ca.client(ClientOpts::default());
        let d = dir.path();
        std::fs::write(d.join("ca.crt"), ca.pem()).unwrap();
        std::fs::write(d.join("server.crt"), &server.cert_pem).unwrap();
        std::fs::write(d.join("server.key"), &server.key_pem).unwrap();
        std::fs::write(d.join("client.crt"), &client.cert_pem).unwrap();
        std::fs::write(d.join("client.key"), &client.key_pem).unwrap();
        std::fs::create_dir(d.join("policies")).unwrap();
        for _attempt in 0..3 {
            let port = free_port();
            let conf = format!(
                "[server]\nhostname=127.0.0.1\nport={port}\ncertificate_path={d}/server.crt\n\
                 key_path={d}/server.key\nca_path={d}/ca.crt\nauth_suite=TLS1.2\n\
                 enable_tls_client_auth=True\npolicy_path={d}/policies\n\
                 database_path={d}/pykmip-{port}.db\nlogging_level=DEBUG\n",
                d = d.display()
            );
            std::fs::write(d.join("server.conf"), conf).unwrap();
            let log = d.join(format!("server-{port}.log"));
            let mut cmd = Command::new(&bin);
            cmd.args(["-f"])
                .arg(d.join("server.conf"))
                .arg("-l")
                .arg(&log)
                .env("HOME", d)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::from(
                    std::fs::File::create(d.join(format!("stderr-{port}"))).unwrap(),
                ));
            let proc = super::spawn(&mut cmd, log);
            if wait_for_port(port, Duration::from_secs(30)) {
                return Some(PyKmip {
                    proc,
                    port,
                    ca,
                    client,
                    dir,
                });
            }
            eprintln!(
                "pykmip-server did not listen on {port}: {}",
                proc.log_text()
            );
        }
        panic!("PyKMIP server did not start");
    }

    pub fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Creates an AES-256 key owned by the default client certificate; returns its UID.
    pub fn create_key(&self, active: bool) -> String {
        let d = self.dir.path();
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/peers/kmip_admin.py");
        let mut cmd = Command::new("python3");
        cmd.arg(script)
            .arg("127.0.0.1")
            .arg(self.port.to_string())
            .arg(d.join("client.crt"))
            .arg(d.join("client.key"))
            .arg(d.join("ca.crt"))
            .arg("create");
        if !active {
            cmd.arg("--inactive");
        }
        let out = cmd.env("HOME", d).output().unwrap();
        assert!(
            out.status.success(),
            "kmip_admin.py failed: {}\nserver log: {}",
            String::from_utf8_lossy(&out.stderr),
            self.proc.log_text()
        );
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    }

    /// The credentials Secret map for a client identity.
    pub fn secrets_for(&self, leaf: &Leaf) -> std::collections::HashMap<String, String> {
        super::secrets(&[
            ("ca.crt", &self.ca.pem()),
            ("tls.crt", &leaf.cert_pem),
            ("tls.key", &leaf.key_pem),
        ])
    }
}

//! A running KMIP server (PyKMIP or Cosmian KMS) with its PKI, as [`super::pykmip::start`] and
//! [`super::cosmian::start`] return it, and the one way to create keys on either: PyKMIP's own
//! client over KMIP 1.2 (`kmip_admin.py`, next to this file).

use super::Proc;
use super::pki::{Ca, Leaf};

/// A running KMIP server (PyKMIP or Cosmian KMS) with its PKI; `pykmip::start()` and
/// `cosmian::start()` make one.
pub struct KmipServer {
    pub proc: Proc,
    /// The KMIP (TTLV over TLS) port on 127.0.0.1.
    pub port: u16,
    pub ca: Ca,
    /// The default client identity; it owns the keys `create_key` makes.
    pub client: Leaf,
    /// `ca.crt`, `server.*`, `client.*`, the server's state and logs.
    pub dir: tempfile::TempDir,
}

impl KmipServer {
    pub fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Creates an AES-256 key owned by the default client certificate, with PyKMIP's own client
    /// over KMIP 1.2 (`kmip_admin.py`); returns its Unique Identifier.
    pub fn create_key(&self, active: bool) -> String {
        let d = self.dir.path();
        // PYTHON names the interpreter where `python3` on PATH is another one (the VM rig's
        // guest PATH has no pyenv).
        let script =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/peers/kmip_admin.py");
        let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".to_owned());
        let mut cmd = std::process::Command::new(python);
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

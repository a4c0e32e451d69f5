//! Cosmian KMS 5.28.0 (crates.io `cosmian_kms_server`, BUSL-1.1: a test peer only, never a
//! dependency), serving KMIP over TLS with client certificates on 127.0.0.1. The binary is built
//! and cached by `kms/tests/install-cosmian.sh` (about 17 minutes on 2 cores the first time).

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use super::kmip::KmipServer;
use super::{free_port, require};

/// The version `install-cosmian.sh` builds; the cache path carries it.
pub const VERSION: &str = "5.28.0";

/// `$COSMIAN_KMS_BIN`, else the cached build `install-cosmian.sh` leaves in
/// `${XDG_CACHE_HOME:-~/.cache}/onmetal-peers/cosmian_kms-<VERSION>/cosmian_kms`.
pub fn binary() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("COSMIAN_KMS_BIN") {
        return Some(PathBuf::from(p)).filter(|p| p.exists());
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    let p = cache
        .join("onmetal-peers")
        .join(format!("cosmian_kms-{VERSION}"))
        .join("cosmian_kms");
    p.exists().then_some(p)
}

/// Starts Cosmian KMS with an sqlite database, its KMIP socket server on TLS, and client
/// certificates from our CA required (the certificate CN is the user).
pub fn start() -> Option<KmipServer> {
    let bin = require("Cosmian KMS 5.28.0 (built by install-cosmian.sh)", binary())?;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // rcgen writes PKCS#8 keys ("BEGIN PRIVATE KEY"), which is what Cosmian wants.
    let (ca, client) = super::pki::issue_into(d, "onmetal test Cosmian CA", false);
    for sub in ["db", "data", "tmp"] {
        std::fs::create_dir(d.join(sub)).unwrap();
    }
    for _attempt in 0..3 {
        let (port, http) = (free_port(), free_port());
        let log = d.join(format!("cosmian-{port}.log"));
        let mut cmd = Command::new(&bin);
        cmd.args(["--database-type", "sqlite", "--sqlite-path"])
            .arg(d.join("db"))
            .arg("--root-data-path")
            .arg(d.join("data"))
            .arg("--tmp-path")
            .arg(d.join("tmp"))
            .args([
                "--socket-server-start",
                "--socket-server-hostname",
                "127.0.0.1",
            ])
            .args(["--socket-server-port", &port.to_string()])
            .args(["--hostname", "127.0.0.1", "--port", &http.to_string()])
            .arg("--tls-cert-file")
            .arg(d.join("server.crt"))
            .arg("--tls-key-file")
            .arg(d.join("server.key"))
            .arg("--clients-ca-cert-file")
            .arg(d.join("ca.crt"))
            .args(["--rust-log", "info"])
            // No config file from the host (/etc/cosmian/kms.toml) may take over.
            .env("COSMIAN_KMS_CONF", d.join("absent.toml"))
            .env("HOME", d)
            .current_dir(d)
            .stdin(Stdio::null())
            .stdout(Stdio::from(std::fs::File::create(&log).unwrap()))
            .stderr(Stdio::from(
                std::fs::OpenOptions::new().append(true).open(&log).unwrap(),
            ));
        let mut proc = super::spawn(&mut cmd, log);
        if proc.wait_listening(port, Duration::from_secs(60)) {
            return Some(KmipServer {
                proc,
                port,
                ca,
                client,
                dir,
            });
        }
        eprintln!("cosmian_kms did not listen on {port}: {}", proc.log_text());
        proc.kill();
    }
    panic!("Cosmian KMS did not start");
}

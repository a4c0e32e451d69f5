//! PyKMIP 0.11 server with an ECDSA P-256 PKI generated at test time (rcgen).

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use super::kmip::KmipServer;
use super::{free_port, require};

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

/// Starts a PyKMIP server with mutual TLS (TLS 1.2, client auth EKU enforced).
pub fn start() -> Option<KmipServer> {
    start_with(false)
}

/// As [`start`], optionally with an expired server certificate.
pub fn start_with(expired_server_cert: bool) -> Option<KmipServer> {
    let bin = require("PyKMIP (pykmip-server from PyPI pykmip==0.11.0)", binary())?;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (ca, client) = super::pki::issue_into(d, "onmetal test KMIP CA", expired_server_cert);
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
        let mut proc = super::spawn(&mut cmd, log);
        // Python under software emulation (the VM rig) starts slowly.
        let limit = std::env::var("ONMETAL_VM_TEST").map_or(30, |_| 180);
        if proc.wait_listening(port, Duration::from_secs(limit)) {
            return Some(KmipServer {
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

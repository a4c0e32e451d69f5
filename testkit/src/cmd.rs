//! Running the programs a test drives (cryptsetup, mkfs, losetup, our own binaries): with or
//! without stdin, returning the output or panicking with it.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

/// Runs a command, panics with its output when it fails, returns its stdout.
pub fn run(cmd: &str, args: &[&str]) -> String {
    run_with_stdin(cmd, args, None)
}

/// Like [`run`], feeding `stdin`.
pub fn run_with_stdin(cmd: &str, args: &[&str], stdin: Option<&[u8]>) -> String {
    let out = try_run(cmd, args, stdin);
    assert!(
        out.status.success(),
        "{cmd} {args:?} failed: {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs a command and returns its output, whatever its status. A command that exits before it
/// read all of `stdin` (a usage error) is not a failure of the test here: its status tells.
pub fn try_run(cmd: &str, args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut child = Command::new(cmd)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd}: {e}"));
    if let Some(data) = stdin {
        let mut pipe = child.stdin.take().unwrap();
        match pipe.write_all(data) {
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
            other => other.unwrap(),
        }
    }
    child.wait_with_output().unwrap()
}

/// The tool at `path`, or `None` (after a skip note) when it is missing and we are not in CI.
/// Panics in CI (`CI=true`), where a missing prerequisite is a failure; `package` is the Debian
/// package that brings it.
pub fn tool(path: &str, package: &str) -> Option<PathBuf> {
    let p = PathBuf::from(path);
    if p.is_file() {
        return Some(p);
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{path} is required in CI (Debian package {package}) but was not found");
    }
    eprintln!("SKIP: {path} not found; install {package}");
    None
}

/// Kills a process when this test process is gone, however it ends (passed, panicked, killed):
/// a `sh` that waits for the end of a pipe only this process holds, then sends SIGTERM and, a
/// second later, SIGKILL. For helpers kept in a `static` (never dropped), such as a driver that
/// every test of a binary shares.
pub struct Reaper {
    _child: std::process::Child,
    _pipe: std::process::ChildStdin,
}

/// Starts a [`Reaper`] for `pid`.
pub fn reap_on_exit(pid: u32) -> Reaper {
    let script = r#"cat >/dev/null; kill "$1" 2>/dev/null; sleep 1; kill -9 "$1" 2>/dev/null"#;
    let mut child = Command::new("sh")
        .args(["-c", script, "reaper", &pid.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn the reaper");
    let pipe = child.stdin.take().expect("the reaper's stdin");
    Reaper {
        _child: child,
        _pipe: pipe,
    }
}

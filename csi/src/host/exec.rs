//! Running host commands and blocking work (device I/O, KDFs, ioctls, `flock` waits) off the
//! async runtime.

use std::io::Read;
use std::os::fd::AsFd;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::error::{Error, Kind, Result};

/// How long a host command (mkfs, resize2fs, xfs_growfs) may run before it is killed: far more
/// than a lazy mkfs or an online resize of a large volume takes, far less than forever.
pub const COMMAND_BOUND: Duration = Duration::from_secs(600);

/// Runs blocking work on the runtime's blocking pool, never on a worker thread: 50 concurrent
/// stages must not park the two workers.
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::internal(format!("worker thread failed: {e}")))?
}

/// Runs a command, returns its stdout; a failure names the command and its stderr. Bounded by
/// [`COMMAND_BOUND`].
pub fn run(cmd: &mut Command) -> Result<String> {
    run_bounded(cmd, COMMAND_BOUND)
}

/// Like [`run`], killing the command (UNAVAILABLE) when it has not finished within `bound`.
pub fn run_bounded(cmd: &mut Command, bound: Duration) -> Result<String> {
    let what = format!("{:?}", cmd.get_program());
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => {
                Error::internal(format!("{what} is not installed: {e}"))
            }
            _ => Error::io(format!("running {what}"), e),
        })?;
    // The pipes are drained in the wait loop itself (non-blocking reads), so a chatty command
    // never blocks on a full pipe and no thread is spawned per command.
    let mut pipes = [
        child.stdout.take().map(Pipe::new).transpose()?,
        child.stderr.take().map(Pipe::new).transpose()?,
    ];
    let start = Instant::now();
    let mut pause = Duration::from_millis(1);
    let status = loop {
        for p in pipes.iter_mut().flatten() {
            p.drain();
        }
        if let Some(st) = child
            .try_wait()
            .map_err(|e| Error::io(format!("waiting for {what}"), e))?
        {
            break st;
        }
        if start.elapsed() >= bound {
            let _ = child.kill();
            let _ = child.wait();
            return Err(Error::new(
                Kind::Unavailable,
                format!(
                    "{what} did not finish within {} s and was killed (a hung device?)",
                    bound.as_secs_f64()
                ),
            ));
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(20));
    };
    let [out_p, err_p] = pipes.map(|p| {
        p.map(|mut p| {
            p.drain();
            p.buf
        })
        .unwrap_or_default()
    });
    let out = std::process::Output {
        status,
        stdout: out_p,
        stderr: err_p,
    };
    if !out.status.success() {
        return Err(Error::internal(format!(
            "{what} {} failed ({}): {}",
            cmd.get_args()
                .map(|a| a.to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// One of a command's output pipes, read without blocking.
struct Pipe {
    r: Box<dyn Read + Send>,
    buf: Vec<u8>,
    open: bool,
}

impl Pipe {
    fn new<R: Read + AsFd + Send + 'static>(r: R) -> Result<Self> {
        let flags = rustix::fs::fcntl_getfl(&r)
            .map_err(|e| Error::io("fcntl(F_GETFL) of a pipe", e.into()))?;
        rustix::fs::fcntl_setfl(&r, flags | rustix::fs::OFlags::NONBLOCK)
            .map_err(|e| Error::io("fcntl(F_SETFL) of a pipe", e.into()))?;
        Ok(Pipe {
            r: Box::new(r),
            buf: Vec::new(),
            open: true,
        })
    }

    /// Reads what is there now (until the pipe would block or ends).
    fn drain(&mut self) {
        let mut chunk = [0u8; 4096];
        while self.open {
            match self.r.read(&mut chunk) {
                Ok(0) => self.open = false,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(_) => self.open = false,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_past_its_bound_is_killed_and_unavailable() {
        let e =
            run_bounded(Command::new("sleep").arg("30"), Duration::from_millis(50)).unwrap_err();
        assert_eq!(e.kind(), Kind::Unavailable, "{e}");
        assert!(e.message().contains("did not finish"), "{e}");
    }

    #[test]
    fn output_and_failures_as_before() {
        let out = run(Command::new("sh").args(["-c", "echo out; echo err >&2"])).unwrap();
        assert_eq!(out, "out\n");
        let e = run(Command::new("sh").args(["-c", "echo bad >&2; exit 3"])).unwrap_err();
        assert!(e.message().contains("bad"), "{e}");
        assert!(e.message().contains("exit status: 3"), "{e}");
    }

    #[test]
    fn a_command_that_writes_more_than_a_pipe_holds_finishes() {
        // 1 MiB on stdout: far more than a pipe's 64 KiB buffer.
        let out = run(Command::new("head").args(["-c", "1048576", "/dev/zero"])).unwrap();
        assert_eq!(out.len(), 1 << 20);
    }
}

//! Running host commands and blocking work (device I/O, KDFs, ioctls, `flock` waits) off the
//! async runtime.

use std::process::Command;

use crate::error::{Error, Result};

/// Runs blocking work on the runtime's blocking pool, never on a worker thread: 50 concurrent
/// stages must not park the two workers.
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::internal(format!("worker thread failed: {e}")))?
}

/// Runs a command, returns its stdout; a failure names the command and its stderr.
pub fn run(cmd: &mut Command) -> Result<String> {
    let what = format!("{:?}", cmd.get_program());
    let out = cmd.output().map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => Error::internal(format!("{what} is not installed: {e}")),
        _ => Error::io(format!("running {what}"), e),
    })?;
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

//! One operation per volume at a time: a second concurrent call on the same volume gets
//! `ABORTED` (the CSI convention; the CO retries), never a second writer. The work of a call
//! owns the lock ([`VolumeLocks::run`]): when the CO's deadline drops the call, the work runs to
//! its end and only then lets the volume go, so a retry never runs a step a second time beside
//! the first, and a volume whose device hangs holds one thread, not one per retry.

use std::collections::HashSet;
use std::future::Future;
use std::sync::{Arc, Mutex};

use tracing::Instrument as _;

use crate::error::{Error, Kind, Result};

/// The set of volumes with an operation in progress.
#[derive(Debug, Default, Clone)]
pub struct VolumeLocks {
    held: Arc<Mutex<HashSet<String>>>,
}

/// Held while an operation runs; released on drop.
#[derive(Debug)]
pub struct VolumeGuard {
    held: Arc<Mutex<HashSet<String>>>,
    id: String,
}

impl VolumeLocks {
    /// Takes the volume's lock or fails with `ABORTED`.
    pub fn try_lock(&self, id: &str) -> Result<VolumeGuard> {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        if !held.insert(id.to_owned()) {
            return Err(Error::new(
                Kind::Aborted,
                format!("an operation on volume {id} is already in progress"),
            ));
        }
        Ok(VolumeGuard {
            held: Arc::clone(&self.held),
            id: id.to_owned(),
        })
    }
}

impl VolumeLocks {
    /// Takes the volume's lock (or fails with `ABORTED`) and runs `work` as a task of its own
    /// that holds the lock until the work ends, whether or not the caller still waits for it.
    pub async fn run<T, F>(&self, id: &str, work: F) -> Result<T>
    where
        T: Send + 'static,
        F: Future<Output = Result<T>> + Send + 'static,
    {
        let guard = self.try_lock(id)?;
        let task = tokio::spawn(
            async move {
                let _guard = guard;
                work.await
            }
            .in_current_span(),
        );
        task.await
            .map_err(|e| Error::internal(format!("the operation's task failed: {e}")))?
    }

    /// Whether an operation on `id` is in progress.
    pub fn is_locked(&self, id: &str) -> bool {
        self.held
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(id)
    }
}

impl Drop for VolumeGuard {
    fn drop(&mut self) {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        held.remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_holder_is_aborted_until_release() {
        let locks = VolumeLocks::default();
        let g = locks.try_lock("v1").unwrap();
        assert_eq!(locks.try_lock("v1").unwrap_err().kind(), Kind::Aborted);
        assert!(locks.try_lock("v2").is_ok());
        drop(g);
        assert!(locks.try_lock("v1").is_ok());
    }

    #[tokio::test]
    async fn work_whose_caller_gave_up_keeps_the_lock_until_it_ends() {
        let locks = VolumeLocks::default();
        let (release, wait) = tokio::sync::oneshot::channel::<()>();
        let (done_tx, done) = tokio::sync::oneshot::channel::<()>();
        let l = locks.clone();
        let call = tokio::spawn(async move {
            l.run("v1", async move {
                wait.await.ok();
                done_tx.send(()).ok();
                Ok(())
            })
            .await
        });
        while !locks.is_locked("v1") {
            tokio::task::yield_now().await;
        }
        // The CO's deadline: the call is dropped, the work goes on holding the lock.
        call.abort();
        assert!(call.await.unwrap_err().is_cancelled());
        assert!(locks.is_locked("v1"));
        let retry = locks.run("v1", async { Ok(()) }).await;
        assert_eq!(retry.unwrap_err().kind(), Kind::Aborted);
        release.send(()).unwrap();
        done.await.unwrap();
        while locks.is_locked("v1") {
            tokio::task::yield_now().await;
        }
        locks.run("v1", async { Ok(()) }).await.unwrap();
    }
}

//! One operation per volume at a time: a second concurrent call on the same volume gets
//! `ABORTED` (the CSI convention; the CO retries), never a second writer.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

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
}

//! [`FileBackend`]: volumes are sparse files in a directory, and the file *is* the attached
//! device (no loop device).

use std::collections::{BTreeMap, HashSet};
use std::fs::{self, OpenOptions};
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use csi::backend::{Attachment, Backend, BackendVolume};
use csi::volume_id::VolumeId;
use csi::{Error, Result};

/// Sparse files as volumes; attach is bookkeeping. Counts what is attached and how many
/// attaches happened.
#[derive(Debug)]
pub struct FileBackend {
    dir: PathBuf,
    attached: Mutex<HashSet<VolumeId>>,
    attaches: AtomicUsize,
}

impl FileBackend {
    /// A backend over `dir` (created).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        let dir = dir.into();
        fs::create_dir_all(&dir).unwrap();
        FileBackend {
            dir,
            attached: Mutex::new(HashSet::new()),
            attaches: AtomicUsize::new(0),
        }
    }

    /// The file of a volume.
    pub fn image(&self, id: &VolumeId) -> PathBuf {
        self.dir.join(format!("{id}.img"))
    }

    /// How many volumes are attached now.
    pub fn attached(&self) -> usize {
        self.attached.lock().unwrap().len()
    }

    /// Whether `id` is attached.
    pub fn is_attached(&self, id: &VolumeId) -> bool {
        self.attached.lock().unwrap().contains(id)
    }

    /// How many attaches attached something (repeats of an attached volume do not count).
    pub fn attaches(&self) -> usize {
        self.attaches.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl Backend for FileBackend {
    /// Files on this machine, as the `local` backend's.
    fn node_local(&self) -> bool {
        true
    }

    async fn create(
        &self,
        id: &VolumeId,
        capacity: u64,
        parameters: &BTreeMap<String, String>,
    ) -> Result<BackendVolume> {
        if let Some(v) = self.get(id).await? {
            return Ok(v);
        }
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(self.image(id))
            .map_err(|e| Error::io("creating the image", e))?;
        f.set_len(capacity)
            .map_err(|e| Error::io("sizing the image", e))?;
        Ok(BackendVolume {
            id: id.clone(),
            capacity,
            parameters: parameters.clone(),
        })
    }

    async fn get(&self, id: &VolumeId) -> Result<Option<BackendVolume>> {
        Ok(fs::metadata(self.image(id)).ok().map(|m| BackendVolume {
            id: id.clone(),
            capacity: m.len(),
            parameters: BTreeMap::new(),
        }))
    }

    async fn delete(&self, id: &VolumeId) -> Result<()> {
        if self.is_attached(id) {
            return Err(Error::precondition(format!(
                "volume {id} is still attached"
            )));
        }
        let _ = fs::remove_file(self.image(id));
        Ok(())
    }

    async fn expand(&self, id: &VolumeId, capacity: u64) -> Result<u64> {
        let f = OpenOptions::new()
            .write(true)
            .open(self.image(id))
            .map_err(|e| Error::io("opening the image", e))?;
        let cur = f.metadata().map_err(|e| Error::io("image size", e))?.len();
        if capacity > cur {
            f.set_len(capacity)
                .map_err(|e| Error::io("growing the image", e))?;
        }
        Ok(capacity.max(cur))
    }

    async fn list(&self) -> Result<Vec<BackendVolume>> {
        Ok(Vec::new())
    }

    async fn available(&self, _parameters: &BTreeMap<String, String>) -> Result<u64> {
        Ok(u64::MAX)
    }

    async fn attach(&self, id: &VolumeId) -> Result<Attachment> {
        let image = self.image(id);
        if !image.exists() {
            return Err(Error::not_found(format!("volume {id} does not exist")));
        }
        let fresh = self.attached.lock().unwrap().insert(id.clone());
        if fresh {
            self.attaches.fetch_add(1, Ordering::SeqCst);
        }
        Ok(Attachment {
            device: image,
            fresh,
        })
    }

    async fn device(&self, id: &VolumeId) -> Result<Option<PathBuf>> {
        Ok(self.is_attached(id).then(|| self.image(id)))
    }

    async fn detach(&self, id: &VolumeId) -> Result<()> {
        self.attached.lock().unwrap().remove(id);
        Ok(())
    }

    async fn refresh_size(&self, _id: &VolumeId) -> Result<()> {
        Ok(())
    }
}

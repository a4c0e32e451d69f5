//! The `dir:DIR` key store: one file `DIR/onmetal-csi-luks-<volume-id>` per volume, mode 0600,
//! holding the entry's JSON. Creates are atomic (a fully written temporary file hard-linked to
//! the final name, which fails if the name exists); updates compare the revision (a hash of the
//! current content) and rename a new file over the old one while holding the directory's lock
//! file, so concurrent writers on one machine never lose an update.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use sha2::{Digest, Sha256};

use super::{KeyEntry, KeyStore, Revision, StoreError, Stored};
use crate::error::{Error, Result};
use crate::volume_id::{RECORD_PREFIX, VolumeId};

/// See the module documentation.
#[derive(Debug, Clone)]
pub struct DirStore {
    dir: PathBuf,
}

const LOCK_FILE: &str = ".lock";

impl DirStore {
    /// Opens (and creates, mode 0700) the directory.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref().to_path_buf();
        fs::create_dir_all(&dir)
            .map_err(|e| Error::io(format!("creating key store {}", dir.display()), e))?;
        let meta =
            fs::metadata(&dir).map_err(|e| Error::io(format!("key store {}", dir.display()), e))?;
        if meta.permissions().mode() & 0o077 != 0 {
            fs::set_permissions(&dir, fs::Permissions::from_mode(0o700))
                .map_err(|e| Error::io(format!("chmod 0700 {}", dir.display()), e))?;
        }
        Ok(DirStore { dir })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, volume: &VolumeId) -> PathBuf {
        self.dir.join(volume.record_name())
    }

    fn lock(&self) -> Result<File> {
        let path = self.dir.join(LOCK_FILE);
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
        f.lock()
            .map_err(|e| Error::io(format!("locking {}", path.display()), e))?;
        Ok(f)
    }

    fn read(&self, volume: &VolumeId) -> Result<Option<Stored>> {
        let path = self.path(volume);
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io(format!("reading {}", path.display()), e)),
        };
        let entry = KeyEntry::from_json(volume, &bytes)?;
        Ok(Some(Stored {
            entry,
            revision: revision_of(&bytes),
        }))
    }

    /// Writes `bytes` to a new temporary file in the directory (0600, synced).
    fn write_temp(&self, bytes: &[u8]) -> Result<PathBuf> {
        let mut rnd = [0u8; 8];
        getrandom::fill(&mut rnd).map_err(|e| Error::internal(format!("random: {e}")))?;
        let tmp = self.dir.join(format!(".tmp-{}", hex::encode(rnd)));
        let mut f = OpenOptions::new()
            .create_new(true)
            .write(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| Error::io(format!("creating {}", tmp.display()), e))?;
        f.write_all(bytes)
            .and_then(|()| f.sync_all())
            .map_err(|e| Error::io(format!("writing {}", tmp.display()), e))?;
        Ok(tmp)
    }

    fn sync_dir(&self) -> Result<()> {
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| Error::io(format!("syncing {}", self.dir.display()), e))
    }
}

fn revision_of(bytes: &[u8]) -> Revision {
    Revision(hex::encode(&Sha256::digest(bytes)[..12]))
}

/// Runs the store's blocking work (the wait for its `flock`, file writes, fsyncs, reads) on the
/// blocking pool: with runtime workers parked on the lock, no other call, KMS answer or gRPC
/// frame would make progress.
async fn off_runtime<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::internal(format!("key store worker thread failed: {e}")))?
}

/// The blocking work of the [`KeyStore`] methods (run on the blocking pool, see below).
impl DirStore {
    fn create_now(&self, volume: &VolumeId, bytes: &[u8]) -> Result<Revision, StoreError> {
        let _lock = self.lock()?;
        let tmp = self.write_temp(bytes)?;
        let path = self.path(volume);
        let linked = fs::hard_link(&tmp, &path);
        let _ = fs::remove_file(&tmp);
        match linked {
            Ok(()) => {
                self.sync_dir()?;
                Ok(revision_of(bytes))
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => match self.read(volume)? {
                Some(existing) => Err(StoreError::Exists(Box::new(existing))),
                None => Err(StoreError::Conflict(format!(
                    "{} appeared and vanished during create",
                    path.display()
                ))),
            },
            Err(e) => Err(Error::io(format!("creating {}", path.display()), e).into()),
        }
    }

    fn update_now(
        &self,
        volume: &VolumeId,
        bytes: &[u8],
        expected: &Revision,
    ) -> Result<Revision, StoreError> {
        let _lock = self.lock()?;
        match self.read(volume)? {
            Some(cur) if &cur.revision == expected => {}
            Some(cur) => {
                return Err(StoreError::Conflict(format!(
                    "{} changed (revision {} instead of {expected})",
                    volume.record_name(),
                    cur.revision
                )));
            }
            None => {
                return Err(StoreError::Conflict(format!(
                    "{} was deleted",
                    volume.record_name()
                )));
            }
        }
        let tmp = self.write_temp(bytes)?;
        let path = self.path(volume);
        fs::rename(&tmp, &path)
            .map_err(|e| Error::io(format!("replacing {}", path.display()), e))?;
        self.sync_dir()?;
        Ok(revision_of(bytes))
    }

    fn delete_now(&self, volume: &VolumeId) -> Result<(), StoreError> {
        let _lock = self.lock()?;
        let path = self.path(volume);
        match fs::remove_file(&path) {
            Ok(()) => self.sync_dir().map_err(Into::into),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io(format!("deleting {}", path.display()), e).into()),
        }
    }

    fn list_now(&self) -> Result<Vec<(VolumeId, Result<Stored>)>, StoreError> {
        let rd = fs::read_dir(&self.dir)
            .map_err(|e| Error::io(format!("listing {}", self.dir.display()), e))?;
        let mut out = Vec::new();
        for ent in rd {
            let ent = ent.map_err(|e| Error::io(format!("listing {}", self.dir.display()), e))?;
            let name = ent.file_name();
            let Some(id) = name.to_str().and_then(|n| n.strip_prefix(RECORD_PREFIX)) else {
                continue;
            };
            let Ok(volume) = VolumeId::parse(id) else {
                continue;
            };
            match self.read(&volume) {
                Ok(Some(stored)) => out.push((volume, Ok(stored))),
                // Deleted since the directory was read.
                Ok(None) => {}
                Err(e) => out.push((volume, Err(e))),
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }
}

#[async_trait]
impl KeyStore for DirStore {
    async fn create(&self, volume: &VolumeId, entry: &KeyEntry) -> Result<Revision, StoreError> {
        let (s, volume, bytes) = (self.clone(), volume.clone(), entry.to_json().into_bytes());
        off_runtime(move || s.create_now(&volume, &bytes)).await
    }

    async fn get(&self, volume: &VolumeId) -> Result<Option<Stored>, StoreError> {
        let (s, volume) = (self.clone(), volume.clone());
        off_runtime(move || Ok(s.read(&volume)?)).await
    }

    async fn update(
        &self,
        volume: &VolumeId,
        entry: &KeyEntry,
        expected: &Revision,
    ) -> Result<Revision, StoreError> {
        let (s, volume, bytes) = (self.clone(), volume.clone(), entry.to_json().into_bytes());
        let expected = expected.clone();
        off_runtime(move || s.update_now(&volume, &bytes, &expected)).await
    }

    async fn delete(&self, volume: &VolumeId) -> Result<(), StoreError> {
        let (s, volume) = (self.clone(), volume.clone());
        off_runtime(move || s.delete_now(&volume)).await
    }

    async fn list(&self) -> Result<Vec<(VolumeId, Result<Stored>)>, StoreError> {
        let s = self.clone();
        off_runtime(move || s.list_now()).await
    }
}

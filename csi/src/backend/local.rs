//! The `local:DIR` backend: each volume is a sparse file `DIR/<volume-id>.img` with its creation
//! parameters in `DIR/<volume-id>.json`, attached on the node as a loop device (direct I/O where
//! the backing filesystem supports it, buffered otherwise: tmpfs has no O_DIRECT). A single
//! machine is then a complete cluster for development and tests.
//!
//! Loop devices are attached, detached and resized through `/dev/loop-control` and the loop
//! ioctls (`dm::loopdev`), without a `losetup` process. State lives in the files and in the kernel
//! (`/sys/block/loop*/loop/backing_file` names the file of each loop device), so a restarted
//! driver finds its attached volumes again.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use dm::loopdev::{LoopControl, LoopDevice};
use serde::{Deserialize, Serialize};

use super::{Attachment, Backend, BackendVolume};
use crate::error::{Error, Kind, Result};
use crate::host::exec::blocking;
use crate::volume_id::VolumeId;

/// Sparse image files in one directory, attached as loop devices.
#[derive(Debug, Clone)]
pub struct LocalBackend {
    dir: PathBuf,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Meta {
    parameters: BTreeMap<String, String>,
}

impl LocalBackend {
    /// Opens (and creates) the directory.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref().to_path_buf();
        fs::create_dir_all(&dir)
            .map_err(|e| Error::io(format!("creating backend dir {}", dir.display()), e))?;
        Ok(LocalBackend { dir })
    }

    /// The backing file of a volume.
    pub fn image(&self, id: &VolumeId) -> PathBuf {
        self.dir.join(format!("{id}.img"))
    }

    fn meta_path(&self, id: &VolumeId) -> PathBuf {
        self.dir.join(format!("{id}.json"))
    }

    fn lock(&self) -> Result<File> {
        let path = self.dir.join(".lock");
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
        f.lock()
            .map_err(|e| Error::io(format!("locking {}", path.display()), e))?;
        Ok(f)
    }

    fn read(&self, id: &VolumeId) -> Result<Option<BackendVolume>> {
        let meta = match fs::read(self.meta_path(id)) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io(format!("reading metadata of {id}"), e)),
        };
        let meta: Meta = serde_json::from_slice(&meta)
            .map_err(|e| Error::internal(format!("metadata of {id} is not valid: {e}")))?;
        let capacity = match fs::metadata(self.image(id)) {
            Ok(m) => m.len(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io(format!("image of {id}"), e)),
        };
        Ok(Some(BackendVolume {
            id: id.clone(),
            capacity,
            parameters: meta.parameters,
        }))
    }

    /// The loop devices backed by the volume's image (normally zero or one).
    /// The loop devices of `id`'s image (also once the file is deleted: unstage still detaches).
    fn loops(&self, id: &VolumeId) -> Result<Vec<LoopDevice>> {
        let image = self.image(id);
        dm::loopdev::find(&image).map_err(|e| loop_error("finding the loop device of", &image, e))
    }

    /// Whether `id`'s image looks attached anywhere on this machine, as a process without the
    /// loop devices and in another mount namespace (the deployed controller) can tell: by the
    /// backing file's name.
    fn attached_anywhere(&self, id: &VolumeId) -> Result<Vec<LoopDevice>> {
        let image = self.image(id);
        dm::loopdev::find_by_name(&image)
            .map_err(|e| loop_error("finding the loop device of", &image, e))
    }
}

/// A loop device error with what was done to which image; the kernel's errno is in the source.
fn loop_error(what: &str, image: &Path, e: dm::Error) -> Error {
    Error::internal(format!("{what} {}: {e}", image.display())).with_source(e)
}

/// Whether `path` can be opened with O_DIRECT (tmpfs before Linux 6.6 refuses it with EINVAL).
fn direct_io(path: &Path) -> bool {
    use rustix::fs::{Mode, OFlags};
    rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::DIRECT | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .is_ok()
}

/// The blocking work of the [`Backend`] methods (run on the blocking pool, see below).
impl LocalBackend {
    /// RESOURCE_EXHAUSTED unless the backing filesystem has `bytes` free now. Images are sparse
    /// (thin: the room is taken as the volume is written), so volumes together may promise more
    /// than the filesystem holds, as on any thin-provisioned storage; but a volume, or a growth,
    /// that the filesystem could not hold even if nothing else were written is refused.
    fn ensure_room(&self, bytes: u64, what: &str) -> Result<()> {
        let st = rustix::fs::statvfs(&self.dir)
            .map_err(|e| Error::io(format!("statvfs {}", self.dir.display()), e.into()))?;
        let free = st.f_bavail.saturating_mul(st.f_frsize);
        if bytes > free {
            return Err(Error::new(
                Kind::ResourceExhausted,
                format!(
                    "cannot {what} by {bytes} bytes: the backing filesystem of {} has {free} bytes                      free",
                    self.dir.display()
                ),
            ));
        }
        Ok(())
    }

    fn create_now(
        &self,
        id: &VolumeId,
        capacity: u64,
        parameters: &BTreeMap<String, String>,
    ) -> Result<BackendVolume> {
        let _lock = self.lock()?;
        if let Some(existing) = self.read(id)? {
            return Ok(existing);
        }
        let image = self.image(id);
        if !image.exists() {
            self.ensure_room(capacity, "create")?;
        }
        // A crash between the image and its metadata leaves a blank sparse image: reuse it.
        // 0600: a plain volume's data is in the clear in this file.
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&image)
            .map_err(|e| Error::io(format!("creating {}", image.display()), e))?;
        f.set_len(capacity)
            .map_err(|e| Error::io(format!("sizing {}", image.display()), e))?;
        let meta = serde_json::to_vec(&Meta {
            parameters: parameters.clone(),
        })
        .map_err(|e| Error::internal(e.to_string()))?;
        let tmp = self.dir.join(format!(".{id}.json.tmp"));
        let mut m = File::create(&tmp).map_err(|e| Error::io("creating metadata", e))?;
        m.write_all(&meta)
            .and_then(|()| m.sync_all())
            .map_err(|e| Error::io("writing metadata", e))?;
        fs::rename(&tmp, self.meta_path(id)).map_err(|e| Error::io("storing metadata", e))?;
        Ok(BackendVolume {
            id: id.clone(),
            capacity,
            parameters: parameters.clone(),
        })
    }

    fn delete_now(&self, id: &VolumeId) -> Result<()> {
        let _lock = self.lock()?;
        let attached = self.attached_anywhere(id)?;
        if let Some(dev) = attached.first() {
            return Err(Error::new(
                Kind::FailedPrecondition,
                format!(
                    "volume {id} is still attached ({}); unstage it first",
                    dev.path.display()
                ),
            ));
        }
        for p in [self.meta_path(id), self.image(id)] {
            match fs::remove_file(&p) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io(format!("deleting {}", p.display()), e)),
            }
        }
        Ok(())
    }

    fn expand_now(&self, id: &VolumeId, capacity: u64) -> Result<u64> {
        let _lock = self.lock()?;
        let cur = self
            .read(id)?
            .ok_or_else(|| Error::not_found(format!("volume {id} does not exist")))?;
        if cur.capacity >= capacity {
            return Ok(cur.capacity);
        }
        self.ensure_room(capacity - cur.capacity, "grow")?;
        let image = self.image(id);
        OpenOptions::new()
            .write(true)
            .open(&image)
            .and_then(|f| f.set_len(capacity))
            .map_err(|e| Error::io(format!("growing {}", image.display()), e))?;
        Ok(capacity)
    }

    fn attach_now(&self, id: &VolumeId) -> Result<Attachment> {
        let _lock = self.lock()?;
        if let Some(dev) = self.loops(id)?.into_iter().next() {
            return Ok(Attachment {
                device: dev.path,
                fresh: false,
            });
        }
        let image = self.image(id);
        if !image.exists() {
            return Err(Error::not_found(format!("volume {id} does not exist")));
        }
        // Direct I/O where the image's filesystem has O_DIRECT; tmpfs has not: buffered. An
        // open(2) answers that before we ask the kernel (which, refusing it, attaches buffered).
        let dio = direct_io(&image);
        let dev = LoopControl::open()
            .and_then(|ctl| ctl.attach(&image, dio))
            .map_err(|e| loop_error("attaching", &image, e))?;
        tracing::debug!(volume = %id, device = %dev.path.display(), direct_io = dio, "attached");
        Ok(Attachment {
            device: dev.path,
            fresh: true,
        })
    }

    fn device_now(&self, id: &VolumeId) -> Result<Option<PathBuf>> {
        Ok(self.loops(id)?.into_iter().next().map(|d| d.path))
    }

    fn detach_now(&self, id: &VolumeId) -> Result<()> {
        let _lock = self.lock()?;
        for dev in self.loops(id)? {
            dm::loopdev::detach(&dev).map_err(|e| loop_error("detaching", &self.image(id), e))?;
        }
        Ok(())
    }

    fn refresh_size_now(&self, id: &VolumeId) -> Result<()> {
        for dev in self.loops(id)? {
            dm::loopdev::set_capacity(&dev)
                .map_err(|e| loop_error("resizing the loop device of", &self.image(id), e))?;
        }
        Ok(())
    }
}

/// Every method that takes the backend's lock (an `flock` that waits) or makes loop device calls
/// does so on the blocking pool: 50 concurrent stages must not park the runtime's worker threads.
#[async_trait]
impl Backend for LocalBackend {
    /// The image files live on this machine's disk.
    fn node_local(&self) -> bool {
        true
    }

    async fn create(
        &self,
        id: &VolumeId,
        capacity: u64,
        parameters: &BTreeMap<String, String>,
    ) -> Result<BackendVolume> {
        let (b, id, p) = (self.clone(), id.clone(), parameters.clone());
        blocking(move || b.create_now(&id, capacity, &p)).await
    }

    async fn get(&self, id: &VolumeId) -> Result<Option<BackendVolume>> {
        self.read(id)
    }

    async fn delete(&self, id: &VolumeId) -> Result<()> {
        let (b, id) = (self.clone(), id.clone());
        blocking(move || b.delete_now(&id)).await
    }

    async fn expand(&self, id: &VolumeId, capacity: u64) -> Result<u64> {
        let (b, id) = (self.clone(), id.clone());
        blocking(move || b.expand_now(&id, capacity)).await
    }

    async fn list(&self) -> Result<Vec<BackendVolume>> {
        let rd = fs::read_dir(&self.dir)
            .map_err(|e| Error::io(format!("listing {}", self.dir.display()), e))?;
        let mut out = Vec::new();
        for ent in rd {
            let ent = ent.map_err(|e| Error::io("listing volumes", e))?;
            let name = ent.file_name();
            let Some(id) = name.to_str().and_then(|n| n.strip_suffix(".json")) else {
                continue;
            };
            let Ok(id) = VolumeId::parse(id) else {
                continue;
            };
            if let Some(v) = self.read(&id)? {
                out.push(v);
            }
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }

    async fn available(&self, _parameters: &BTreeMap<String, String>) -> Result<u64> {
        let st = rustix::fs::statvfs(&self.dir)
            .map_err(|e| Error::io("statvfs of the backend dir", e.into()))?;
        Ok(st.f_bavail.saturating_mul(st.f_frsize))
    }

    async fn attach(&self, id: &VolumeId) -> Result<Attachment> {
        let (b, id) = (self.clone(), id.clone());
        blocking(move || b.attach_now(&id)).await
    }

    async fn device(&self, id: &VolumeId) -> Result<Option<PathBuf>> {
        let (b, id) = (self.clone(), id.clone());
        blocking(move || b.device_now(&id)).await
    }

    async fn detach(&self, id: &VolumeId) -> Result<()> {
        let (b, id) = (self.clone(), id.clone());
        blocking(move || b.detach_now(&id)).await
    }

    async fn refresh_size(&self, id: &VolumeId) -> Result<()> {
        let (b, id) = (self.clone(), id.clone());
        blocking(move || b.refresh_size_now(&id)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn create_is_idempotent_and_sparse() {
        let tmp = tempfile::tempdir().unwrap();
        let b = LocalBackend::open(tmp.path()).unwrap();
        let id = VolumeId::parse("pvc-1").unwrap();
        let params = BTreeMap::from([("type".to_owned(), "fast".to_owned())]);
        let v = b.create(&id, 1 << 30, &params).await.unwrap();
        assert_eq!(v.capacity, 1 << 30);
        // A repeat returns the stored volume, even with other arguments (the caller compares).
        let again = b.create(&id, 2 << 30, &BTreeMap::new()).await.unwrap();
        assert_eq!(again, v);
        use std::os::unix::fs::MetadataExt;
        let m = fs::metadata(b.image(&id)).unwrap();
        assert!(m.blocks() * 512 < 1 << 20, "image is sparse");
        assert_eq!(m.mode() & 0o777, 0o600, "only root reads a volume's image");
        assert_eq!(b.list().await.unwrap(), vec![v.clone()]);
        assert_eq!(b.expand(&id, 3 << 30).await.unwrap(), 3 << 30);
        assert_eq!(
            b.expand(&id, 1 << 30).await.unwrap(),
            3 << 30,
            "never shrinks"
        );
        b.delete(&id).await.unwrap();
        b.delete(&id).await.unwrap();
        assert!(b.get(&id).await.unwrap().is_none());
        assert!(b.expand(&id, 1).await.is_err());
    }

    #[tokio::test]
    async fn what_the_backing_filesystem_cannot_hold_is_resource_exhausted() {
        let tmp = tempfile::tempdir().unwrap();
        let b = LocalBackend::open(tmp.path()).unwrap();
        let st = rustix::fs::statvfs(tmp.path()).unwrap();
        let free = st.f_bavail * st.f_frsize;
        let too_big = (free + (1 << 30)).next_multiple_of(1 << 20);
        let id = VolumeId::parse("pvc-huge").unwrap();
        let e = b.create(&id, too_big, &BTreeMap::new()).await.unwrap_err();
        assert_eq!(e.kind(), Kind::ResourceExhausted, "{e}");
        assert!(b.get(&id).await.unwrap().is_none(), "nothing made");
        assert!(!b.image(&id).exists());
        // A volume that fits is made; growing it past the room is refused, its size kept.
        let v = b.create(&id, 1 << 20, &BTreeMap::new()).await.unwrap();
        let e = b.expand(&id, too_big).await.unwrap_err();
        assert_eq!(e.kind(), Kind::ResourceExhausted, "{e}");
        assert_eq!(b.get(&id).await.unwrap().unwrap().capacity, v.capacity);
    }

    /// The backend's lock is an `flock` that waits. A node call waits for it on the blocking
    /// pool, never on a runtime worker: with every worker parked on the lock (two workers, 50
    /// concurrent stages) no other call, KMS answer or gRPC frame would make progress.
    #[test]
    fn attach_waits_for_the_lock_off_the_runtime() {
        let tmp = tempfile::tempdir().unwrap();
        let b = LocalBackend::open(tmp.path()).unwrap();
        // Another open file description of the lock file: attach's flock waits for it.
        let held = b.lock().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let b2 = b.clone();
        let runtime = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap();
            rt.block_on(async move {
                let id = VolumeId::parse("pvc-1").unwrap();
                let attach = tokio::spawn(async move { b2.attach(&id).await });
                // The attach task runs first; it must yield while it waits for the lock.
                tokio::task::yield_now().await;
                tx.send(()).unwrap();
                attach.await.unwrap()
            })
        });
        // A generous bound that only a blocked runtime thread exceeds.
        let progressed = rx.recv_timeout(std::time::Duration::from_secs(30)).is_ok();
        drop(held);
        let res = runtime.join().unwrap();
        assert!(
            progressed,
            "attach held the runtime's only thread while it waited for the backend lock"
        );
        assert_eq!(res.unwrap_err().kind(), Kind::NotFound);
    }

    /// Attach asks open(2) whether the image's filesystem does direct I/O before it asks the
    /// kernel's loop driver for it (tmpfs before Linux 6.6, as in the VM rig's 6.1 kernel, has
    /// none).
    #[test]
    fn direct_io_probe() {
        let f = tempfile::NamedTempFile::new_in(env!("CARGO_MANIFEST_DIR")).unwrap();
        let fs_type = rustix::fs::statfs(f.path()).unwrap().f_type;
        // ext4, xfs, btrfs: O_DIRECT
        if [0xEF53, 0x5846_5342, 0x9123_683E].contains(&fs_type) {
            assert!(direct_io(f.path()));
        }
        assert!(!direct_io(Path::new("/nonexistent/image")));
    }
}

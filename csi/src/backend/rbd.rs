//! The `rbd` backend: each volume is a Ceph RBD image, managed through librbd (the `rbd` crate)
//! on the controller and mapped through the kernel's RBD interface on the node.
//!
//! - **Volume ID** `<pool>.<image>` ([`VolumeId::in_pool`]): the StorageClass parameter
//!   `volume_pool` names the pool (required; a pool whose name is not a DNS label is refused);
//!   the image name is the name-derived ID. DeleteVolume finds the image from the ID alone.
//! - **Ours only**: every image this backend creates carries the metadata key [`META_VOLUME`]
//!   (its volume ID) and its parameters as `onmetal-csi.param.<key>` ([`PARAM_PREFIX`]), so a
//!   repeated CreateVolume compares them and ListVolumes lists only these images and rebuilds the
//!   volume context. An image of that name without the marker is not touched, except the leftover
//!   of a CreateVolume that died between creating the image and marking it (no metadata at all,
//!   the requested size, no watcher): that one is adopted.
//! - **Bounded**: every Ceph call runs on the blocking pool under the connection's timeout
//!   (`client_mount_timeout`, `rados_mon_op_timeout`, `rados_osd_op_timeout`), and every backend
//!   call is bounded once more as a whole ([`RbdConfig::timeout`] times [`CALL_BOUND_FACTOR`]):
//!   an unreachable Ceph is UNAVAILABLE, never a hang past the CSI deadline.
//! - **Node, one writer**: attach checks the image's holders (watchers and lockers) before
//!   mapping, maps without the kernel's `exclusive` option (so the controller can still resize
//!   the mapped image: online expansion), and checks again after mapping, ignoring only its own
//!   kernel client; anyone else holding the image is FAILED_PRECONDITION naming the image and the
//!   holder, and a mapping made by the call is undone before anything reads or writes the
//!   device (see the `rbd` crate's docs: cooperative exclusive lock). Only mappings made as the
//!   driver's cephx user are this node's own (found again after a restart, unmapped on
//!   unstage): one made by hand as another user is a holder like any other. A node that died holding an
//!   image is released by an operator only ([`RbdBackend::release`], `volume release`).
//! - The cephx key reaches the kernel through the kernel keyring ([`rbd::KeyDelivery`]); it is
//!   read from the keyring file on each attach (a rotated Secret is picked up) and never logged.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use rbd::{
    CephConf, CephxKey, ClientId, Cluster, ConnectOptions, ErrorKind, KernelRbd, MapOptions,
};

use super::{Attachment, Backend, BackendVolume};
use crate::error::{Error, Kind, Result};
use crate::host::exec::blocking;
use crate::volume_id::VolumeId;

/// The StorageClass parameter that names the pool.
pub const PARAM_POOL: &str = "volume_pool";
/// Image metadata: the volume ID, on every image this backend made (and only those).
pub const META_VOLUME: &str = "onmetal-csi.volume";
/// Image metadata: prefix of the stored parameters (`onmetal-csi.param.type` = `fast`).
pub const PARAM_PREFIX: &str = "onmetal-csi.param.";
/// A whole backend call may take this many connection timeouts (a connect and a few calls).
pub const CALL_BOUND_FACTOR: u32 = 3;

/// How to reach Ceph: the `serve` and `volume release` flags.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RbdConfig {
    /// `ceph.conf` (monitor addresses, the keyring setting).
    pub conf: PathBuf,
    /// The cephx user without `client.` (`csi`).
    pub client: String,
    /// The keyring; `None`: the conf's `keyring` setting.
    pub keyring: Option<PathBuf>,
    /// The bound of each Ceph call (connect, monitor and OSD operations, the kernel's map).
    pub timeout: Duration,
}

impl Default for RbdConfig {
    fn default() -> Self {
        Self {
            conf: PathBuf::from("/etc/ceph/ceph.conf"),
            client: "csi".to_owned(),
            keyring: None,
            timeout: Duration::from_secs(10),
        }
    }
}

/// Volumes as RBD images (see the module documentation).
#[derive(Debug, Clone)]
pub struct RbdBackend {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: RbdConfig,
    client: ClientId,
    keyring: PathBuf,
    mons: Vec<SocketAddr>,
    krbd: KernelRbd,
    cluster: Mutex<Option<Cluster>>,
    /// Attaches that hold an open image at once: each open image is librbd's whole image
    /// context (about 1 MiB), so 50 concurrent stages would hold 50 of them.
    attaching: tokio::sync::Semaphore,
}

/// How many attaches run at once (the others wait their turn before their Ceph calls start).
pub const CONCURRENT_ATTACHES: usize = 8;

/// What [`RbdBackend::release`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Release {
    /// Client addresses blocklisted.
    pub blocklisted: Vec<String>,
    /// Lock holders whose lock was broken (`client.<id> at <addr>`).
    pub broken: Vec<String>,
}

/// The pool and image of a pool-qualified ID; `None` for an ID this backend never makes.
fn spec(id: &VolumeId) -> Option<(&str, &str)> {
    id.pool().map(|pool| (pool, id.local_name()))
}

fn no_pool(id: &VolumeId) -> Error {
    Error::not_found(format!(
        "volume {id} does not exist (an rbd volume id is <pool>.<image>)"
    ))
}

fn stored_parameters(meta: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    meta.iter()
        .filter_map(|(k, v)| {
            k.strip_prefix(PARAM_PREFIX)
                .map(|k| (k.to_owned(), v.clone()))
        })
        .collect()
}

impl RbdBackend {
    /// Reads the configuration (conf, monitors, keyring and key: a misconfiguration fails here,
    /// at start), without connecting: a Ceph that is down makes calls UNAVAILABLE, not the
    /// driver fail to start.
    pub fn open(config: RbdConfig) -> Result<Self> {
        let client = ClientId::new(&config.client)
            .map_err(|e| Error::invalid(format!("--ceph-id {:?}: {e}", config.client)))?;
        let conf = CephConf::read(&config.conf)
            .map_err(|e| Error::invalid(format!("--ceph-conf: {e}")))?;
        let mons = conf
            .mon_host(&client)
            .and_then(rbd::msgr1_mon_addrs)
            .map_err(|e| Error::invalid(format!("--ceph-conf {}: {e}", config.conf.display())))?;
        let keyring = match &config.keyring {
            Some(k) => k.clone(),
            None => conf.keyring(&client).map_err(|e| {
                Error::invalid(format!(
                    "--ceph-conf {} names no keyring for {} (or pass --ceph-keyring): {e}",
                    config.conf.display(),
                    client.entity()
                ))
            })?,
        };
        CephxKey::from_keyring_file(&keyring, &client)
            .map_err(|e| Error::invalid(format!("--ceph-keyring: {e}")))?;
        let krbd = KernelRbd::new().owned_by(&client);
        Ok(Self {
            inner: Arc::new(Inner {
                config,
                client,
                keyring,
                mons,
                krbd,
                cluster: Mutex::new(None),
                attaching: tokio::sync::Semaphore::new(CONCURRENT_ATTACHES),
            }),
        })
    }

    /// The configuration it was opened with.
    pub fn config(&self) -> &RbdConfig {
        &self.inner.config
    }

    /// The connection, made on first use (bounded by the timeout) and kept.
    fn cluster(&self) -> Result<Cluster> {
        let mut slot = self
            .inner
            .cluster
            .lock()
            .map_err(|_| Error::internal("Ceph connection lock poisoned"))?;
        if let Some(c) = slot.as_ref() {
            return Ok(c.clone());
        }
        let opts = ConnectOptions {
            conf: self.inner.config.conf.clone(),
            client: self.inner.client.clone(),
            keyring: Some(self.inner.keyring.clone()),
            timeout: self.inner.config.timeout,
        };
        let c = Cluster::connect(&opts)?;
        *slot = Some(c.clone());
        Ok(c)
    }

    /// Runs `f` on the blocking pool, bounded as a whole: past the bound the call is
    /// UNAVAILABLE (the blocking work finishes on its own, bounded by the connection's timeout).
    async fn bounded<T: Send + 'static>(
        &self,
        what: &str,
        f: impl FnOnce(&RbdBackend) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let b = self.clone();
        let bound = self.inner.config.timeout * CALL_BOUND_FACTOR;
        match tokio::time::timeout(bound, blocking(move || f(&b))).await {
            Ok(r) => r,
            Err(_) => Err(Error::unavailable(format!(
                "{what}: Ceph did not answer within {} s",
                bound.as_secs()
            ))),
        }
    }

    /// The pool, or INVALID_ARGUMENT naming `volume_pool` when it does not exist.
    fn pool_for_create(&self, pool: &str) -> Result<rbd::Pool> {
        let c = self.cluster()?;
        if !c.pool_exists(pool)? {
            return Err(Error::invalid(format!(
                "parameter {PARAM_POOL}: pool {pool:?} does not exist"
            )));
        }
        Ok(c.pool(pool)?)
    }

    /// The volume of an image, if the image exists and is ours.
    fn read(&self, id: &VolumeId) -> Result<Option<BackendVolume>> {
        let Some((pool, image)) = spec(id) else {
            return Ok(None);
        };
        let c = self.cluster()?;
        if !c.pool_exists(pool)? {
            return Ok(None);
        }
        let img = match c.pool(pool)?.open_read_only(image) {
            Ok(i) => i,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let meta = img.metadata_all()?;
        if meta.get(META_VOLUME).map(String::as_str) != Some(id.as_str()) {
            return Ok(None);
        }
        Ok(Some(BackendVolume {
            id: id.clone(),
            capacity: img.size()?,
            parameters: stored_parameters(&meta),
        }))
    }

    fn create_now(
        &self,
        id: &VolumeId,
        capacity: u64,
        parameters: &BTreeMap<String, String>,
    ) -> Result<BackendVolume> {
        let (pool_name, image) = spec(id).ok_or_else(|| {
            Error::internal(format!(
                "volume id {id} names no pool (the rbd backend made it?)"
            ))
        })?;
        let pool = self.pool_for_create(pool_name)?;
        if let Some(why) = self.cluster()?.pool_full(pool_name)? {
            // A repeated CreateVolume of a volume made before the pool filled is still OK.
            if let Some(v) = self.read(id)? {
                return Ok(v);
            }
            return Err(full(pool_name, why, "nothing was created"));
        }
        match pool.create_image(image, capacity) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::Exists => {
                if let Some(v) = self.read(id)? {
                    return Ok(v);
                }
                // A CreateVolume that died between create and marking left a blank image.
                let img = pool.open_read_only(image)?;
                let leftover = img.metadata_all()?.is_empty()
                    && img.size()? == capacity
                    && img.holders()?.others(None).is_empty();
                if !leftover {
                    return Err(Error::new(
                        Kind::AlreadyExists,
                        format!(
                            "image {pool_name}/{image} exists and was not made by this driver \
                             (no {META_VOLUME} metadata); remove or rename it, or use another pool"
                        ),
                    ));
                }
                tracing::info!(volume = %id, "adopting the unmarked image of an interrupted create");
            }
            Err(e) => return Err(e.into()),
        }
        let img = pool.open(image)?;
        for (k, v) in parameters {
            img.set_metadata(&format!("{PARAM_PREFIX}{k}"), v)?;
        }
        // The marker last: an image with it is complete.
        img.set_metadata(META_VOLUME, id.as_str())?;
        Ok(BackendVolume {
            id: id.clone(),
            capacity: img.size()?,
            parameters: parameters.clone(),
        })
    }

    fn delete_now(&self, id: &VolumeId) -> Result<()> {
        if self.read(id)?.is_none() {
            return Ok(());
        }
        let (pool_name, image) = spec(id).ok_or_else(|| no_pool(id))?;
        let pool = self.cluster()?.pool(pool_name)?;
        let holders = pool.open_read_only(image)?.holders()?.others(None);
        if !holders.is_empty() {
            return Err(in_use(pool_name, image, &holders));
        }
        match pool.remove_image(image) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) if e.kind() == ErrorKind::Busy => {
                Err(in_use(pool_name, image, &[format!("a client ({e})")]))
            }
            Err(e) => Err(e.into()),
        }
    }

    fn expand_now(&self, id: &VolumeId, capacity: u64) -> Result<u64> {
        let cur = self
            .read(id)?
            .ok_or_else(|| Error::not_found(format!("volume {id} does not exist")))?;
        if cur.capacity >= capacity {
            return Ok(cur.capacity);
        }
        let (pool, image) = spec(id).ok_or_else(|| no_pool(id))?;
        // A read-write handle: on a mapped image librbd asks the kernel client for the lock,
        // which the cooperative mode hands over.
        Ok(self.cluster()?.pool(pool)?.open(image)?.grow(capacity)?)
    }

    /// Every pool this user may list, by name (only DNS labels: no other pool holds our IDs).
    fn pools(&self) -> Result<Vec<String>> {
        let (out, _) = self
            .cluster()?
            .mon_command(r#"{"prefix":"osd pool ls","format":"json"}"#)?;
        let names: Vec<String> = serde_json::from_slice(&out)
            .map_err(|e| Error::internal(format!("Ceph `osd pool ls` answered oddly: {e}")))?;
        Ok(names
            .into_iter()
            .filter(|p| VolumeId::parse(&format!("{p}.x")).is_ok())
            .collect())
    }

    fn list_now(&self) -> Result<Vec<BackendVolume>> {
        let c = self.cluster()?;
        let mut out = Vec::new();
        for pool_name in self.pools()? {
            let images = match c.pool(&pool_name).and_then(|p| p.images()) {
                Ok(i) => i,
                // Pools this user may not read, or gone meanwhile, hold none of its volumes.
                Err(e) if matches!(e.kind(), ErrorKind::PermissionDenied | ErrorKind::NotFound) => {
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            for image in images {
                let Ok(id) = VolumeId::parse(&format!("{pool_name}.{image}")) else {
                    continue;
                };
                if let Some(v) = self.read(&id)? {
                    out.push(v);
                }
            }
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }

    fn available_now(&self, parameters: &BTreeMap<String, String>) -> Result<u64> {
        let pool = parameters.get(PARAM_POOL).ok_or_else(|| {
            Error::invalid(format!(
                "parameter {PARAM_POOL} is required with the rbd backend (the pool whose free \
                 space to report)"
            ))
        })?;
        let c = self.cluster()?;
        if !c.pool_exists(pool)? {
            return Err(Error::invalid(format!(
                "parameter {PARAM_POOL}: pool {pool:?} does not exist"
            )));
        }
        if c.pool_full(pool)?.is_some() {
            return Ok(0);
        }
        Ok(c.pool_usage(pool)?.available)
    }

    fn attach_now(&self, id: &VolumeId) -> Result<Attachment> {
        let (pool, image) = spec(id).ok_or_else(|| no_pool(id))?;
        if let Some(m) = self.inner.krbd.find(pool, image)? {
            return Ok(Attachment {
                device: m.device,
                fresh: false,
            });
        }
        let c = self.cluster()?;
        let img = match c.pool(pool).and_then(|p| p.open_read_only(image)) {
            Ok(i) => i,
            Err(e) if e.kind() == ErrorKind::NotFound => {
                return Err(Error::not_found(format!("volume {id} does not exist")));
            }
            Err(e) => return Err(e.into()),
        };
        let others = img.holders()?.others(None);
        if !others.is_empty() {
            return Err(held(pool, image, &others));
        }
        // Mapped on a full pool, the first write (a header, mkfs, a journal replay) would wait
        // in the kernel until the pool has room, past every deadline and unkillable.
        if let Some(why) = c.pool_full(pool)? {
            return Err(full(pool, why, "nothing was mapped"));
        }
        let key = CephxKey::from_keyring_file(&self.inner.keyring, &self.inner.client)?;
        let mapping = self.inner.krbd.map(&rbd::MapRequest {
            mons: &self.inner.mons,
            client: &self.inner.client,
            key: &key,
            pool,
            image,
            options: MapOptions {
                timeout: Some(self.inner.config.timeout),
                ..MapOptions::default()
            },
        })?;
        drop(key);
        // Another node may have mapped it between the check and the map: look again, ignoring
        // only this node's kernel client, and back off before anything uses the device.
        let after = img
            .holders()
            .map(|h| h.others(mapping.client_addr.as_deref()));
        match after {
            Ok(others) if others.is_empty() => {
                tracing::debug!(volume = %id, device = %mapping.device.display(), "mapped");
                Ok(Attachment {
                    device: mapping.device,
                    fresh: true,
                })
            }
            Ok(others) => {
                self.undo_map(id, mapping.id);
                Err(held(pool, image, &others))
            }
            Err(e) => {
                self.undo_map(id, mapping.id);
                Err(e.into())
            }
        }
    }

    fn undo_map(&self, id: &VolumeId, dev: u32) {
        if let Err(e) = self.inner.krbd.unmap_id(dev, false) {
            tracing::warn!(volume = %id, error = %e, "unmapping after a refused attach failed");
        }
    }

    fn device_now(&self, id: &VolumeId) -> Result<Option<PathBuf>> {
        let Some((pool, image)) = spec(id) else {
            return Ok(None);
        };
        Ok(self.inner.krbd.find(pool, image)?.map(|m| m.device))
    }

    fn detach_now(&self, id: &VolumeId) -> Result<()> {
        let Some((pool, image)) = spec(id) else {
            return Ok(());
        };
        self.inner.krbd.unmap(pool, image, false)?;
        Ok(())
    }

    fn refresh_size_now(&self, id: &VolumeId) -> Result<()> {
        let Some((pool, image)) = spec(id) else {
            return Err(no_pool(id));
        };
        if let Some(m) = self.inner.krbd.find(pool, image)? {
            self.inner.krbd.refresh(m.id)?;
        }
        Ok(())
    }

    /// The operator's release of a dead node's hold on a volume (`volume release`): every
    /// holder is blocklisted (from then on the OSDs refuse its writes, also if the node comes
    /// back), then its lock is broken, so the next stage on another node maps the image.
    /// Refused (FAILED_PRECONDITION, nothing done) while a holder still watches the image and is
    /// not blocklisted yet: a watch means that client is alive (it expires about 30 s after a
    /// node stops answering), unless `live` says the operator knows it must be fenced anyway.
    pub async fn release(&self, id: &VolumeId, live: bool) -> Result<Release> {
        let id = id.clone();
        self.bounded("release", move |b| b.release_now(&id, live))
            .await
    }

    fn release_now(&self, id: &VolumeId, live: bool) -> Result<Release> {
        let (pool_name, image) = spec(id).ok_or_else(|| no_pool(id))?;
        if self.read(id)?.is_none() {
            return Err(Error::not_found(format!("volume {id} does not exist")));
        }
        let c = self.cluster()?;
        let img = c.pool(pool_name)?.open_read_only(image)?;
        let holders = img.holders()?;
        let blocklist = blocklisted(&c);
        let alive: Vec<String> = holders
            .watchers
            .iter()
            .filter(|w| !blocklist.iter().any(|b| b.starts_with(&w.addr)))
            .map(|w| format!("{} at {}", w.entity(), w.addr))
            .collect();
        if !alive.is_empty() && !live {
            return Err(Error::precondition(format!(
                "image {pool_name}/{image} is still watched by {}: that client is alive. Unstage \
                 the volume on its node; if that node is really gone, wait until its watch \
                 expires (about 30 s), or fence it anyway with --live",
                alive.join(", ")
            )));
        }
        let mut done = Release::default();
        let mut addrs: Vec<&str> = holders
            .watchers
            .iter()
            .map(|w| w.addr.as_str())
            .chain(holders.lockers.iter().map(|l| l.addr.as_str()))
            .collect();
        addrs.sort_unstable();
        addrs.dedup();
        for addr in addrs {
            c.blocklist_add(addr, None)?;
            done.blocklisted.push(addr.to_owned());
        }
        for l in &holders.lockers {
            img.break_lock(l)?;
            done.broken.push(format!("{} at {}", l.client, l.addr));
        }
        Ok(done)
    }
}

/// The blocklist entries (`addr` fields), as far as this user may read them (none otherwise).
fn blocklisted(c: &Cluster) -> Vec<String> {
    let Ok((out, _)) = c.mon_command(r#"{"prefix":"osd blocklist ls","format":"json"}"#) else {
        return Vec::new();
    };
    serde_json::from_slice::<Vec<serde_json::Value>>(&out)
        .unwrap_or_default()
        .iter()
        .filter_map(|e| e.get("addr").and_then(|a| a.as_str()).map(str::to_owned))
        .collect()
}

fn in_use(pool: &str, image: &str, holders: &[String]) -> Error {
    Error::precondition(format!(
        "volume in use: image {pool}/{image} is mapped or watched by {}; unstage it first, \
         nothing was removed",
        holders.join(", ")
    ))
}

fn full(pool: &str, why: rbd::PoolFull, what: &str) -> Error {
    Error::new(
        Kind::ResourceExhausted,
        format!(
            "pool {pool} is full ({why}): Ceph holds every write to it until it has room, so \
             {what}; free space in the pool or raise its quota (ceph osd pool set-quota)"
        ),
    )
}

fn held(pool: &str, image: &str, holders: &[String]) -> Error {
    Error::precondition(format!(
        "image {pool}/{image} is held by {} (staged on another node); nothing was written. \
         Unstage it there first; for a node that died, see `onmetal-csi-driver volume release`",
        holders.join(", ")
    ))
}

#[async_trait]
impl Backend for RbdBackend {
    fn volume_id(&self, name: &str, parameters: &BTreeMap<String, String>) -> Result<VolumeId> {
        let pool = parameters.get(PARAM_POOL).ok_or_else(|| {
            Error::invalid(format!(
                "parameter {PARAM_POOL} is required with the rbd backend (the RBD pool of the \
                 volume)"
            ))
        })?;
        VolumeId::in_pool(pool, name, PARAM_POOL)
    }

    async fn create(
        &self,
        id: &VolumeId,
        capacity: u64,
        parameters: &BTreeMap<String, String>,
    ) -> Result<BackendVolume> {
        let (id, p) = (id.clone(), parameters.clone());
        self.bounded("create", move |b| b.create_now(&id, capacity, &p))
            .await
    }

    async fn get(&self, id: &VolumeId) -> Result<Option<BackendVolume>> {
        let id = id.clone();
        self.bounded("get", move |b| b.read(&id)).await
    }

    async fn delete(&self, id: &VolumeId) -> Result<()> {
        let id = id.clone();
        self.bounded("delete", move |b| b.delete_now(&id)).await
    }

    async fn expand(&self, id: &VolumeId, capacity: u64) -> Result<u64> {
        let id = id.clone();
        self.bounded("expand", move |b| b.expand_now(&id, capacity))
            .await
    }

    async fn list(&self) -> Result<Vec<BackendVolume>> {
        self.bounded("list", RbdBackend::list_now).await
    }

    async fn available(&self, parameters: &BTreeMap<String, String>) -> Result<u64> {
        let p = parameters.clone();
        self.bounded("capacity", move |b| b.available_now(&p)).await
    }

    async fn attach(&self, id: &VolumeId) -> Result<Attachment> {
        let id = id.clone();
        let _turn = self
            .inner
            .attaching
            .acquire()
            .await
            .map_err(|_| Error::internal("the attach queue is closed"))?;
        self.bounded("attach", move |b| b.attach_now(&id)).await
    }

    async fn device(&self, id: &VolumeId) -> Result<Option<PathBuf>> {
        let id = id.clone();
        self.bounded("device", move |b| b.device_now(&id)).await
    }

    async fn detach(&self, id: &VolumeId) -> Result<()> {
        let id = id.clone();
        self.bounded("detach", move |b| b.detach_now(&id)).await
    }

    async fn refresh_size(&self, id: &VolumeId) -> Result<()> {
        let id = id.clone();
        self.bounded("refresh", move |b| b.refresh_size_now(&id))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::path::Path;

    const KEY: &str = "AQC6vhZr/QnsMBAA0tWf7kEEe712mrUKh4hxMQ==";

    fn backend(dir: &Path) -> RbdBackend {
        let keyring = dir.join("csi.keyring");
        std::fs::write(&keyring, format!("[client.csi]\n\tkey = {KEY}\n")).unwrap();
        let conf = dir.join("ceph.conf");
        std::fs::write(
            &conf,
            format!(
                "[global]\nmon_host = [v2:127.0.0.1:1,v1:127.0.0.1:2]\nkeyring = {}\n",
                keyring.display()
            ),
        )
        .unwrap();
        RbdBackend::open(RbdConfig {
            conf,
            ..RbdConfig::default()
        })
        .unwrap()
    }

    #[test]
    fn the_volume_id_needs_a_dns_label_pool() {
        let tmp = tempfile::tempdir().unwrap();
        let b = backend(tmp.path());
        let p = |pool: &str| BTreeMap::from([(PARAM_POOL.to_owned(), pool.to_owned())]);
        let id = b.volume_id("pvc-1", &p("rbd")).unwrap();
        assert_eq!(id.as_str(), "rbd.pvc-1");
        assert_eq!(spec(&id), Some(("rbd", "pvc-1")));
        for params in [BTreeMap::new(), p("My_Pool")] {
            let e = b.volume_id("pvc-1", &params).unwrap_err();
            assert_eq!(e.kind(), Kind::InvalidArgument);
            assert!(e.message().contains(PARAM_POOL), "{e}");
        }
        assert_eq!(spec(&VolumeId::parse("pvc-1").unwrap()), None);
    }

    #[test]
    fn open_reads_the_conf_and_key_and_refuses_what_is_missing() {
        let tmp = tempfile::tempdir().unwrap();
        let b = backend(tmp.path());
        assert_eq!(b.inner.mons.len(), 1);
        assert_eq!(b.inner.mons[0].port(), 2);
        assert!(
            !format!("{b:?}").contains(KEY),
            "the key is never in Debug output"
        );
        let e = RbdBackend::open(RbdConfig {
            conf: tmp.path().join("missing.conf"),
            ..RbdConfig::default()
        })
        .unwrap_err();
        assert_eq!(e.kind(), Kind::InvalidArgument);
        let e = RbdBackend::open(RbdConfig {
            conf: tmp.path().join("ceph.conf"),
            keyring: Some(tmp.path().join("none.keyring")),
            ..RbdConfig::default()
        })
        .unwrap_err();
        assert!(e.message().contains("--ceph-keyring"), "{e}");
    }

    #[test]
    fn parameters_round_trip_through_metadata_keys() {
        let meta = BTreeMap::from([
            (META_VOLUME.to_owned(), "rbd.pvc-1".to_owned()),
            (format!("{PARAM_PREFIX}type"), "fast".to_owned()),
            (format!("{PARAM_PREFIX}volume_pool"), "rbd".to_owned()),
            ("conf_rbd_cache".to_owned(), "false".to_owned()),
        ]);
        assert_eq!(
            stored_parameters(&meta),
            BTreeMap::from([
                ("type".to_owned(), "fast".to_owned()),
                ("volume_pool".to_owned(), "rbd".to_owned()),
            ])
        );
    }

    /// A Ceph that does not answer is UNAVAILABLE within the bound, not a hang.
    #[tokio::test]
    async fn an_unreachable_ceph_is_unavailable_within_the_bound() {
        let tmp = tempfile::tempdir().unwrap();
        let mut b = backend(tmp.path());
        Arc::get_mut(&mut b.inner).unwrap().config.timeout = Duration::from_secs(1);
        let t = std::time::Instant::now();
        let id = VolumeId::parse("rbd.pvc-1").unwrap();
        let e = b.get(&id).await.unwrap_err();
        assert_eq!(e.kind(), Kind::Unavailable, "{e}");
        assert!(t.elapsed() < Duration::from_secs(3 * u64::from(CALL_BOUND_FACTOR)));
    }
}

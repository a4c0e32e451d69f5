//! A connection to a Ceph cluster and the pools in it (librados). Every call blocks: the driver
//! runs them on the blocking pool (`tokio::task::spawn_blocking`). Each call is bounded by the
//! connection's timeout ([`ConnectOptions::timeout`]): an unreachable monitor or OSD fails with
//! [`ErrorKind::Unavailable`] instead of hanging.

use std::ffi::CString;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::conf::ClientId;
use crate::error::{Error, ErrorKind, Result};
use crate::image::{Features, Image};
use crate::sys;

/// The object size of the images we create: 2^22 = 4 MiB (Ceph's default).
pub const DEFAULT_ORDER: u8 = 22;

/// How to connect.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectOptions {
    /// The `ceph.conf` librados reads (monitor addresses, auth settings).
    pub conf: PathBuf,
    /// The cephx user (`csi`: `client.csi`).
    pub client: ClientId,
    /// The keyring; `None`: the conf's `keyring` setting or Ceph's default list.
    pub keyring: Option<PathBuf>,
    /// The bound for connecting (`client_mount_timeout`) and for every monitor and OSD operation
    /// (`rados_mon_op_timeout`, `rados_osd_op_timeout`), in whole seconds (at least 1).
    pub timeout: Duration,
}

impl ConnectOptions {
    /// The driver's defaults: `/etc/ceph/ceph.conf`, the conf's keyring, a 10 s bound.
    pub fn new(client: ClientId) -> Self {
        Self {
            conf: PathBuf::from("/etc/ceph/ceph.conf"),
            client,
            keyring: None,
            timeout: Duration::from_secs(10),
        }
    }
}

fn cstr(what: &str, s: &str) -> Result<CString> {
    CString::new(s).map_err(|_| {
        Error::new(
            ErrorKind::InvalidArgument,
            what.to_owned(),
            "contains a NUL byte",
        )
    })
}

/// A connected cluster handle (shut down when the last [`Cluster`], [`Pool`] or [`Image`] made
/// from it is dropped). Cheap to clone; safe to share between threads.
#[derive(Clone, Debug)]
pub struct Cluster {
    handle: Arc<sys::RadosHandle>,
    client: ClientId,
    timeout: Duration,
}

/// Cluster-wide raw capacity (`rados_cluster_stat`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClusterStats {
    /// Raw bytes of all OSDs.
    pub total: u64,
    /// Raw bytes used.
    pub used: u64,
    /// Raw bytes available.
    pub available: u64,
}

/// One pool's usage and room, as `ceph df` reports it (the monitor's `df` command, which needs a
/// running `ceph-mgr`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolUsage {
    /// Bytes stored by clients (before replication).
    pub stored: u64,
    /// Objects in the pool.
    pub objects: u64,
    /// Bytes clients can still write to the pool: the cluster's free space divided by the
    /// pool's replication, up to the full ratio (`max_avail`), and at most what the pool's byte
    /// quota leaves.
    pub available: u64,
    /// The pool's byte quota, if it has one.
    pub quota_bytes: Option<u64>,
}

impl Cluster {
    /// Connects (blocking, at most about [`ConnectOptions::timeout`]).
    pub fn connect(opts: &ConnectOptions) -> Result<Self> {
        let entity = opts.client.entity();
        let op = format!("connect as {entity} ({})", opts.conf.display());
        let name = cstr("cephx id", &entity)?;
        let h = sys::RadosHandle::create(&name).map_err(|e| Error::errno(op.clone(), e))?;
        let conf = cstr("ceph.conf path", &opts.conf.to_string_lossy())?;
        h.conf_read_file(&conf)
            .map_err(|e| Error::errno(op.clone(), e))?;
        if let Some(k) = &opts.keyring {
            let k = cstr("keyring path", &k.to_string_lossy())?;
            h.conf_set(c"keyring", &k)
                .map_err(|e| Error::errno(op.clone(), e))?;
        }
        let secs = opts.timeout.as_secs_f64().ceil().max(1.0);
        let secs = cstr("timeout", &format!("{secs:.0}"))?;
        for option in [
            c"client_mount_timeout",
            c"rados_mon_op_timeout",
            c"rados_osd_op_timeout",
        ] {
            h.conf_set(option, &secs).map_err(|e| {
                Error::errno(op.clone(), e)
                    .with_detail(format!("setting {}", option.to_string_lossy()))
            })?;
        }
        h.connect().map_err(|e| {
            let err = Error::errno(op.clone(), e);
            if err.kind() == ErrorKind::Unavailable {
                err.with_detail(format!(
                    "no monitor answered within {}s",
                    opts.timeout.as_secs_f64().ceil()
                ))
            } else {
                err
            }
        })?;
        Ok(Self {
            handle: Arc::new(h),
            client: opts.client.clone(),
            timeout: opts.timeout,
        })
    }

    /// The cephx user this connection authenticated as.
    pub fn client(&self) -> &ClientId {
        &self.client
    }

    /// The bound of every call on this connection.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// This connection's global id: `client.<id>` in watcher and lock lists.
    pub fn instance_id(&self) -> u64 {
        self.handle.instance_id()
    }

    /// Whether the pool exists.
    pub fn pool_exists(&self, pool: &str) -> Result<bool> {
        let c = cstr("pool name", pool)?;
        match self.handle.pool_lookup(&c) {
            Ok(_) => Ok(true),
            Err(libc::ENOENT) => Ok(false),
            Err(e) => Err(Error::errno(format!("look up pool {pool}"), e)),
        }
    }

    /// Opens a pool ([`ErrorKind::NotFound`] if it does not exist).
    pub fn pool(&self, pool: &str) -> Result<Pool> {
        let c = cstr("pool name", pool)?;
        let io = self
            .handle
            .ioctx(&c)
            .map_err(|e| Error::errno(format!("open pool {pool}"), e))?;
        Ok(Pool {
            io: Arc::new(io),
            name: pool.to_owned(),
        })
    }

    /// Raw capacity of the whole cluster.
    pub fn stats(&self) -> Result<ClusterStats> {
        let s = self
            .handle
            .cluster_stat()
            .map_err(|e| Error::errno("cluster stat", e))?;
        Ok(ClusterStats {
            total: s.kb.saturating_mul(1024),
            used: s.kb_used.saturating_mul(1024),
            available: s.kb_avail.saturating_mul(1024),
        })
    }

    /// Sends one monitor command, in the monitor's JSON form (what the `ceph` CLI sends: for
    /// `ceph osd blocklist ls` that is `{"prefix":"osd blocklist ls","format":"json"}`), and
    /// returns its output buffer and status string (`outs`: what the CLI prints on stderr). A
    /// refused or failed command is an error of the errno's kind with the status string as
    /// detail. Bounded by [`ConnectOptions::timeout`] (`rados_mon_op_timeout`).
    ///
    /// Commands about keys (`auth get-or-create`, `auth get`) answer with the key in the output
    /// buffer: treat it as secret.
    pub fn mon_command(&self, cmd: &str) -> Result<(Vec<u8>, String)> {
        self.mon_command_with_input(cmd, &[])
    }

    /// Like [`Cluster::mon_command`], with an input buffer (what the CLI reads with `-i`, such
    /// as a keyring for `auth import`).
    pub fn mon_command_with_input(&self, cmd: &str, input: &[u8]) -> Result<(Vec<u8>, String)> {
        let c = cstr("monitor command", cmd)?;
        self.handle.mon_command(&c, input).map_err(|(e, status)| {
            let err = Error::errno(format!("monitor command {}", command_prefix(cmd)), e);
            if status.is_empty() {
                err
            } else {
                err.with_detail(status)
            }
        })
    }

    /// One JSON monitor command; the parsed JSON answer.
    fn mon_json(&self, op: &str, cmd: &serde_json::Value) -> Result<serde_json::Value> {
        let c = cstr("monitor command", &cmd.to_string())?;
        let (out, _) = self.handle.mon_command(&c, &[]).map_err(|(e, status)| {
            let err = Error::errno(op.to_owned(), e);
            if status.is_empty() {
                err
            } else {
                err.with_detail(status)
            }
        })?;
        serde_json::from_slice(&out).map_err(|e| {
            Error::new(
                ErrorKind::Other,
                op.to_owned(),
                format!("unexpected answer: {e}"),
            )
        })
    }

    /// How much room `pool` has for new data ([`PoolUsage::available`]): what the driver
    /// reports as GetCapacity.
    pub fn pool_usage(&self, pool: &str) -> Result<PoolUsage> {
        let op = format!("df of pool {pool}");
        let df = self.mon_json(&op, &serde_json::json!({"prefix": "df", "format": "json"}))?;
        let entry = df
            .get("pools")
            .and_then(|p| p.as_array())
            .and_then(|pools| {
                pools
                    .iter()
                    .find(|p| p.get("name").and_then(|n| n.as_str()) == Some(pool))
            })
            .ok_or_else(|| Error::new(ErrorKind::NotFound, op.clone(), "no such pool"))?;
        let stat = |k: &str| {
            entry
                .get("stats")
                .and_then(|s| s.get(k))
                .and_then(serde_json::Value::as_u64)
        };
        let max_avail = stat("max_avail")
            .ok_or_else(|| Error::new(ErrorKind::Other, op.clone(), "no max_avail"))?;
        let stored = stat("stored").or_else(|| stat("bytes_used")).unwrap_or(0);
        let objects = stat("objects").unwrap_or(0);
        let quota = self.mon_json(
            &format!("quota of pool {pool}"),
            &serde_json::json!({"prefix": "osd pool get-quota", "pool": pool, "format": "json"}),
        )?;
        let quota_bytes = quota
            .get("quota_max_bytes")
            .and_then(serde_json::Value::as_u64)
            .filter(|&q| q > 0);
        let available = match quota_bytes {
            Some(q) => max_avail.min(q.saturating_sub(stored)),
            None => max_avail,
        };
        Ok(PoolUsage {
            stored,
            objects,
            available,
            quota_bytes,
        })
    }

    /// Why writes to `pool` are stopped, if they are: the monitor's pool flags (`ceph osd pool
    /// ls detail`) name `full_quota` when the pool reached its quota (bytes or objects) and
    /// `full` when an OSD it lives on passed the full ratio. Ceph does not fail a write to a
    /// full pool, it holds it until the pool has room again (the kernel client as well, unless
    /// mapped with `abort_on_full`): ask before writing anything that must finish in a bounded
    /// time. `None`: the pool takes writes. [`ErrorKind::NotFound`] if there is no such pool.
    pub fn pool_full(&self, pool: &str) -> Result<Option<PoolFull>> {
        let op = format!("flags of pool {pool}");
        let pools = self.mon_json(
            &op,
            &serde_json::json!({"prefix": "osd pool ls", "detail": "detail", "format": "json"}),
        )?;
        let entry = pools
            .as_array()
            .and_then(|all| {
                all.iter()
                    .find(|p| p.get("pool_name").and_then(|n| n.as_str()) == Some(pool))
            })
            .ok_or_else(|| Error::new(ErrorKind::NotFound, op.clone(), "no such pool"))?;
        Ok(parse_full_flags(
            entry
                .get("flags_names")
                .and_then(|f| f.as_str())
                .unwrap_or(""),
        ))
    }

    /// Blocklists a client address (as a watcher or locker list shows it, `10.0.0.1:0/123456`)
    /// on every OSD, for `expire` (`None`: the cluster's default, an hour). After this the
    /// client can no longer write anything: the fence before breaking a dead client's lock.
    pub fn blocklist_add(&self, addr: &str, expire: Option<Duration>) -> Result<()> {
        let addr = addr.trim();
        let addr = addr
            .strip_prefix("v1:")
            .or_else(|| addr.strip_prefix("any:"))
            .unwrap_or(addr);
        let c = cstr("client address", addr)?;
        let secs = expire.map_or(0, |d| u32::try_from(d.as_secs().max(1)).unwrap_or(u32::MAX));
        self.handle
            .blocklist_add(&c, secs)
            .map_err(|e| Error::errno(format!("blocklist {addr}"), e))
    }
}

/// Why a pool takes no writes ([`Cluster::pool_full`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PoolFull {
    /// The pool reached its byte or object quota (`ceph osd pool set-quota`).
    Quota,
    /// An OSD of the pool is past the cluster's full ratio.
    Cluster,
}

impl std::fmt::Display for PoolFull {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PoolFull::Quota => "the pool reached its quota",
            PoolFull::Cluster => "the cluster's OSDs are full",
        })
    }
}

/// The full state from a pool's `flags_names` (`hashpspool,full_quota,full`); `nearfull` and
/// `backfillfull` still take writes.
fn parse_full_flags(flags: &str) -> Option<PoolFull> {
    let names: Vec<&str> = flags.split(',').map(str::trim).collect();
    if names.contains(&"full_quota") {
        Some(PoolFull::Quota)
    } else if names.contains(&"full") {
        Some(PoolFull::Cluster)
    } else {
        None
    }
}

/// The `prefix` of a JSON monitor command, for error messages (never the whole command, which
/// may hold a key); `?` when there is none.
fn command_prefix(cmd: &str) -> String {
    serde_json::from_str::<serde_json::Value>(cmd)
        .ok()
        .and_then(|v| v.get("prefix").and_then(|p| p.as_str()).map(str::to_owned))
        .unwrap_or_else(|| "?".to_owned())
}

/// An I/O context for one pool: image management. Safe to share between threads.
#[derive(Clone, Debug)]
pub struct Pool {
    io: Arc<sys::IoCtxHandle>,
    name: String,
}

/// Pool usage from `rados_ioctx_pool_stat`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolStats {
    /// Bytes used by the pool's objects.
    pub bytes: u64,
    /// Number of objects.
    pub objects: u64,
}

impl Pool {
    /// The pool's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn spec(&self, image: &str) -> String {
        format!("{}/{image}", self.name)
    }

    /// Creates a format-2 image of `size` bytes with the kernel client's feature set
    /// ([`Features::KRBD`]) and 4 MiB objects. An existing image of that name:
    /// [`ErrorKind::Exists`].
    pub fn create_image(&self, image: &str, size: u64) -> Result<()> {
        let op = format!("create image {}", self.spec(image));
        let c = cstr("image name", image)?;
        self.io
            .create_image(&c, size, Features::KRBD.bits(), u64::from(DEFAULT_ORDER))
            .map_err(|e| Error::errno(op, e))
    }

    /// Removes an image ([`ErrorKind::NotFound`] if there is none; [`ErrorKind::Busy`] while a
    /// client watches it, such as a mapping on some node).
    pub fn remove_image(&self, image: &str) -> Result<()> {
        let op = format!("remove image {}", self.spec(image));
        let c = cstr("image name", image)?;
        self.io.remove_image(&c).map_err(|e| Error::errno(op, e))
    }

    /// The names of the pool's images, sorted.
    pub fn images(&self) -> Result<Vec<String>> {
        let mut v = self
            .io
            .list_images()
            .map_err(|e| Error::errno(format!("list images of pool {}", self.name), e))?;
        v.sort();
        Ok(v)
    }

    /// Opens an image read-write (this handle then watches the image header and can take its
    /// lock for maintenance operations such as resize).
    pub fn open(&self, image: &str) -> Result<Image> {
        self.open_mode(image, false)
    }

    /// Opens an image read-only: no watch of its own, so [`Image::watchers`] shows only others.
    pub fn open_read_only(&self, image: &str) -> Result<Image> {
        self.open_mode(image, true)
    }

    fn open_mode(&self, image: &str, read_only: bool) -> Result<Image> {
        let op = format!("open image {}", self.spec(image));
        let c = cstr("image name", image)?;
        let h = self
            .io
            .open_image(&c, read_only)
            .map_err(|e| Error::errno(op, e))?;
        Ok(Image::new(
            h,
            self.name.clone(),
            image.to_owned(),
            read_only,
        ))
    }

    /// Prepares the pool for RBD images (`rbd pool init`, `rbd_pool_init`): tags it with the
    /// `rbd` application if it has none and switches it to self-managed snapshots. Needs a
    /// user that may do both (the admin); the driver's pools are made ready by their operator.
    pub fn init_for_rbd(&self) -> Result<()> {
        self.io
            .pool_init()
            .map_err(|e| Error::errno(format!("rbd pool init {}", self.name), e))
    }

    /// The pool's usage (bytes and objects; not its free space: see [`Cluster::pool_usage`]).
    pub fn stats(&self) -> Result<PoolStats> {
        let s = self
            .io
            .pool_stat()
            .map_err(|e| Error::errno(format!("stat pool {}", self.name), e))?;
        Ok(PoolStats {
            bytes: s.bytes,
            objects: s.objects,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_full_and_full_quota_stop_writes() {
        assert_eq!(parse_full_flags(""), None);
        assert_eq!(parse_full_flags("hashpspool"), None);
        assert_eq!(parse_full_flags("hashpspool,nearfull,backfillfull"), None);
        assert_eq!(parse_full_flags("hashpspool,full"), Some(PoolFull::Cluster));
        assert_eq!(
            parse_full_flags("hashpspool,full_quota,full"),
            Some(PoolFull::Quota)
        );
        assert_eq!(parse_full_flags("full_quota"), Some(PoolFull::Quota));
    }
}

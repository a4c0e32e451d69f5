//! Mapping images on this node through the kernel's RBD interface (`/sys/bus/rbd`, see the
//! kernel's `Documentation/ABI/testing/sysfs-bus-rbd`), without the `rbd` binary and without
//! udev: `add_single_major` maps, `remove_single_major` unmaps, `devices/<id>/` lists what is
//! mapped (so a restarted driver finds its mappings), `devices/<id>/refresh` rereads the size.
//!
//! The cephx key reaches the kernel in one of two ways ([`KeyDelivery`]), never through a process
//! argument, the environment or a file: as a `ceph` key in this thread's kernel keyring, named by
//! the `key=` option and invalidated right after the write (the default: the kernel keeps the
//! request text, readable by root in `devices/<id>/config_info`, and then it holds no secret), or
//! inside the request written to `add_single_major` (`secret=`). The request is built in a buffer
//! that is wiped on drop, and neither the request nor the key ever appears in an error or in
//! `Debug` output.
//!
//! The sysfs root and the device directory are parameters ([`KernelRbd::with_roots`]) so that
//! tests run against a directory that mimics `/sys/bus/rbd`.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use zeroize::Zeroizing;

use crate::conf::{CephxKey, ClientId, kernel_mon_list};
use crate::error::{Error, ErrorKind, Result};
use crate::sys;

/// How the cephx key is handed to the kernel.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum KeyDelivery {
    /// A `ceph` key (`client.<id>`) in the calling thread's keyring for the duration of the
    /// write (option `key=client.<id>`). Needs the `libceph` module (which registers the key type).
    #[default]
    KernelKeyring,
    /// In the request itself (option `secret=<base64>`).
    Inline,
}

/// Options of a mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MapOptions {
    /// How long the kernel may try to reach the monitors before the map fails (libceph's
    /// `mount_timeout`, whole seconds; `None`: the kernel's 60 s).
    pub timeout: Option<Duration>,
    /// The kernel's `exclusive` option: take the image's exclusive lock at map time and never
    /// hand it over. A second mapping anywhere then fails with `EROFS` — and so does a resize by
    /// any other client (the controller). The driver does not use it (see the crate docs).
    pub exclusive: bool,
    /// Take the exclusive lock for reads too (`lock_on_read`), not only for writes.
    pub lock_on_read: bool,
    /// Map read-only (`ro`).
    pub read_only: bool,
    /// How the key reaches the kernel.
    pub key_delivery: KeyDelivery,
}

impl Default for MapOptions {
    fn default() -> Self {
        Self {
            timeout: Some(Duration::from_secs(30)),
            exclusive: false,
            lock_on_read: true,
            read_only: false,
            key_delivery: KeyDelivery::KernelKeyring,
        }
    }
}

/// What to map.
#[derive(Debug)]
pub struct MapRequest<'a> {
    /// The monitors' msgr1 addresses ([`crate::msgr1_mon_addrs`]).
    pub mons: &'a [SocketAddr],
    /// The cephx user.
    pub client: &'a ClientId,
    /// Its key.
    pub key: &'a CephxKey,
    /// Pool name.
    pub pool: &'a str,
    /// Image name.
    pub image: &'a str,
    /// Options.
    pub options: MapOptions,
}

/// An image mapped on this node (`/sys/bus/rbd/devices/<id>`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mapping {
    /// The kernel's device id (`rbd<id>`).
    pub id: u32,
    /// Pool name.
    pub pool: String,
    /// Pool namespace (empty: the default namespace).
    pub namespace: String,
    /// Image name.
    pub image: String,
    /// The mapped snapshot, `None` for the image head.
    pub snapshot: Option<String>,
    /// Block device major number.
    pub major: u32,
    /// Block device minor number.
    pub minor: u32,
    /// The device node (`/dev/rbd<id>`).
    pub device: PathBuf,
    /// The kernel client's address (`ip:port/nonce`), as the image's watchers and lockers show
    /// it; how the driver tells its own mapping from another node's.
    pub client_addr: Option<String>,
    /// The cephx user the mapping was made as (the request's `name=` option, read from
    /// `config_info`); `None` when the kernel does not show it.
    pub client_name: Option<String>,
}

/// The kernel's RBD interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelRbd {
    sysfs: PathBuf,
    dev: PathBuf,
    /// Only mappings made as this cephx user count as this node's ([`KernelRbd::owned_by`]).
    owner: Option<String>,
}

impl Default for KernelRbd {
    fn default() -> Self {
        Self::new()
    }
}

/// Characters that would break the request's space- and comma-separated syntax.
fn check_word(what: &'static str, s: &str) -> Result<()> {
    if s.is_empty()
        || s.len() > 4096
        || s.bytes()
            .any(|b| b.is_ascii_whitespace() || b == b',' || b == 0 || b.is_ascii_control())
    {
        return Err(Error::new(
            ErrorKind::InvalidArgument,
            "map request",
            format!("{what} {s:?} is empty or has whitespace, ',' or control characters"),
        ));
    }
    Ok(())
}

/// The text written to `add_single_major`:
/// `<mon>[,<mon>] name=<id>,{key=client.<id>|secret=<base64>}[,opts] <pool> <image> -`.
/// Wiped on drop (it may hold the secret).
fn add_request(req: &MapRequest<'_>) -> Result<Zeroizing<String>> {
    check_word("pool", req.pool)?;
    check_word("image", req.image)?;
    if req.mons.is_empty() {
        return Err(Error::new(
            ErrorKind::InvalidArgument,
            "map request",
            "no monitor address",
        ));
    }
    let mut s = Zeroizing::new(String::with_capacity(256));
    s.push_str(&kernel_mon_list(req.mons));
    s.push_str(" name=");
    s.push_str(req.client.as_str());
    match req.options.key_delivery {
        KeyDelivery::KernelKeyring => {
            s.push_str(",key=");
            s.push_str(&req.client.entity());
        }
        KeyDelivery::Inline => {
            s.push_str(",secret=");
            s.push_str(req.key.base64());
        }
    }
    if let Some(t) = req.options.timeout {
        s.push_str(&format!(",mount_timeout={}", t.as_secs().max(1)));
    }
    if req.options.exclusive {
        s.push_str(",exclusive");
    }
    if req.options.lock_on_read {
        s.push_str(",lock_on_read");
    }
    if req.options.read_only {
        s.push_str(",ro");
    }
    s.push(' ');
    s.push_str(req.pool);
    s.push(' ');
    s.push_str(req.image);
    s.push_str(" -");
    Ok(s)
}

/// Whether a sysfs read failed because the device is gone or going (a concurrent unmap):
/// `ENOENT` once its directory is removed, `ENODEV` while its attributes are torn down.
fn vanished(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ENODEV)
}

/// Reads a sysfs attribute, trimmed; `None` if it does not exist (or its device is going).
fn attr(dir: &Path, name: &str) -> Result<Option<String>> {
    match std::fs::read_to_string(dir.join(name)) {
        Ok(s) => Ok(Some(s.trim().to_owned())),
        Err(e) if vanished(&e) => Ok(None),
        Err(e) => Err(Error::io(format!("read {}", dir.join(name).display()), e)),
    }
}

/// The `name=` option of the request a mapping was made with (`config_info`: `<mons> <options>
/// <pool> <image> <snap>`). The text may hold an inline secret: it is wiped after parsing.
fn config_name(dir: &Path) -> Result<Option<String>> {
    let text = match std::fs::read_to_string(dir.join("config_info")) {
        Ok(s) => Zeroizing::new(s),
        Err(e) if vanished(&e) => return Ok(None),
        Err(e) => {
            return Err(Error::io(
                format!("read {}", dir.join("config_info").display()),
                e,
            ));
        }
    };
    Ok(text
        .split_ascii_whitespace()
        .nth(1)
        .and_then(|opts| opts.split(',').find_map(|o| o.strip_prefix("name=")))
        .map(str::to_owned))
}

/// One write(2) of the whole buffer (sysfs stores take the request in one call).
fn write_once(path: &Path, what: &str, buf: &[u8]) -> Result<()> {
    let op = format!("{what} ({})", path.display());
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|e| Error::io(op.clone(), e))?;
    let n = f.write(buf).map_err(|e| Error::io(op.clone(), e))?;
    if n != buf.len() {
        return Err(Error::new(
            ErrorKind::Other,
            op,
            format!("short write ({n} of {} bytes)", buf.len()),
        ));
    }
    Ok(())
}

impl KernelRbd {
    /// The real interface: `/sys/bus/rbd`, devices in `/dev`.
    pub fn new() -> Self {
        Self::with_roots("/sys/bus/rbd", "/dev")
    }

    /// Another sysfs root and device directory (tests).
    pub fn with_roots(sysfs: impl Into<PathBuf>, dev: impl Into<PathBuf>) -> Self {
        Self {
            sysfs: sysfs.into(),
            dev: dev.into(),
            owner: None,
        }
    }

    /// Sees only the mappings made as `client` (the `name=` of their request): `find`, `map`'s
    /// reuse and `unmap` leave a mapping someone else made on this node by hand (`rbd map --id
    /// admin`) alone, so that the holders check reports it instead of the driver adopting it,
    /// and two node plugins with their own users on one kernel (the two-node test) each see only
    /// their own mappings. [`KernelRbd::mappings`] still lists every mapping.
    pub fn owned_by(mut self, client: &ClientId) -> Self {
        self.owner = Some(client.as_str().to_owned());
        self
    }

    /// Whether the kernel's RBD interface is there (the `rbd` module is loaded).
    pub fn available(&self) -> bool {
        self.sysfs.join("add_single_major").exists() || self.sysfs.join("add").exists()
    }

    /// `add_single_major` when the module has it (`single_major`, the default), else `add`.
    fn control(&self, single: &str, legacy: &str) -> PathBuf {
        let s = self.sysfs.join(single);
        if s.exists() {
            s
        } else {
            self.sysfs.join(legacy)
        }
    }

    /// Every mapping on this node, by device id (blocking sysfs reads).
    pub fn mappings(&self) -> Result<Vec<Mapping>> {
        let dir = self.sysfs.join("devices");
        let rd = match std::fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::io(format!("list {}", dir.display()), e)),
        };
        let mut out = Vec::new();
        for entry in rd {
            let entry = entry.map_err(|e| Error::io(format!("list {}", dir.display()), e))?;
            let Some(id) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            let d = entry.path();
            // A device being removed (another volume's unmap, at the same time) disappears
            // between reads, attribute by attribute: skip it.
            let (Some(pool), Some(image)) = (attr(&d, "pool")?, attr(&d, "name")?) else {
                continue;
            };
            let snap = attr(&d, "current_snap")?.filter(|s| s != "-" && !s.is_empty());
            let Some(major) = attr(&d, "major")?.and_then(|v| v.parse().ok()) else {
                continue;
            };
            let Some(minor) = attr(&d, "minor")?.and_then(|v| v.parse().ok()) else {
                continue;
            };
            out.push(Mapping {
                id,
                pool,
                namespace: attr(&d, "pool_ns")?.unwrap_or_default(),
                image,
                snapshot: snap,
                major,
                minor,
                device: self.dev.join(format!("rbd{id}")),
                client_addr: attr(&d, "client_addr")?
                    .map(|a| crate::image::plain_addr(&a).to_owned()),
                client_name: config_name(&d)?,
            });
        }
        out.sort_by_key(|m| m.id);
        Ok(out)
    }

    /// The mapping of an image's head in the default namespace, if mapped here (by the owner,
    /// see [`KernelRbd::owned_by`]).
    pub fn find(&self, pool: &str, image: &str) -> Result<Option<Mapping>> {
        Ok(self.mappings()?.into_iter().find(|m| {
            m.pool == pool
                && m.image == image
                && m.snapshot.is_none()
                && m.namespace.is_empty()
                && self
                    .owner
                    .as_ref()
                    .is_none_or(|o| m.client_name.as_ref() == Some(o))
        }))
    }

    /// Maps the image, or returns its existing mapping (idempotent). Blocks up to the map
    /// timeout. Errors: the image or pool missing ([`ErrorKind::NotFound`]), the exclusive lock
    /// held by an `exclusive` mapping elsewhere ([`ErrorKind::Busy`], `EROFS`), monitors
    /// unreachable ([`ErrorKind::Unavailable`]), a rejected key ([`ErrorKind::PermissionDenied`]).
    pub fn map(&self, req: &MapRequest<'_>) -> Result<Mapping> {
        if let Some(m) = self.find(req.pool, req.image)? {
            return Ok(m);
        }
        let spec = format!("{}/{}", req.pool, req.image);
        let text = add_request(req)?;
        let path = self.control("add_single_major", "add");
        let what = format!("map {spec}");
        match req.options.key_delivery {
            KeyDelivery::Inline => write_once(&path, &what, text.as_bytes())?,
            KeyDelivery::KernelKeyring => {
                let raw = req.key.decoded()?;
                let desc = std::ffi::CString::new(req.client.entity()).map_err(|_| {
                    Error::new(ErrorKind::InvalidArgument, what.clone(), "bad entity name")
                })?;
                let serial = sys::add_key(c"ceph", &desc, &raw, sys::KEY_SPEC_THREAD_KEYRING)
                    .map_err(|e| {
                        let hint = if e.raw_os_error() == Some(libc::ENODEV) {
                            "the kernel has no `ceph` key type: is the libceph module loaded?"
                        } else {
                            "adding the key to the thread keyring"
                        };
                        Error::io(what.clone(), e).with_detail(hint)
                    })?;
                let written = write_once(&path, &what, text.as_bytes());
                // The kernel copied the secret while parsing the request; drop our copy.
                let _ = sys::invalidate_key(serial);
                written?;
            }
        }
        self.find(req.pool, req.image)?.ok_or_else(|| {
            Error::new(
                ErrorKind::Other,
                what,
                "the kernel accepted the request but shows no device",
            )
        })
    }

    /// Unmaps the image's head mapping on this node. `Ok(false)` if it was not mapped
    /// (idempotent). Without `force` a device still open (mounted, a dm-crypt mapping on top) is
    /// refused with [`ErrorKind::Busy`]; `force` (an operator's choice) removes it anyway and
    /// fails its outstanding I/O.
    pub fn unmap(&self, pool: &str, image: &str, force: bool) -> Result<bool> {
        let Some(m) = self.find(pool, image)? else {
            return Ok(false);
        };
        self.unmap_id(m.id, force)
    }

    /// Unmaps device `rbd<id>`; `Ok(false)` if there is no such device.
    pub fn unmap_id(&self, id: u32, force: bool) -> Result<bool> {
        let path = self.control("remove_single_major", "remove");
        let text = if force {
            format!("{id} force")
        } else {
            id.to_string()
        };
        match write_once(&path, &format!("unmap rbd{id}"), text.as_bytes()) {
            Ok(()) => Ok(true),
            Err(e) if e.raw_errno() == Some(libc::ENOENT) && path.exists() => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Makes the kernel reread the image header (its size after a resize) for `rbd<id>`; the
    /// kernel also does this by itself when the header's watch fires.
    pub fn refresh(&self, id: u32) -> Result<()> {
        let path = self
            .sysfs
            .join("devices")
            .join(id.to_string())
            .join("refresh");
        write_once(&path, &format!("refresh rbd{id}"), b"1")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "AQC6vhZr/QnsMBAA0tWf7kEEe712mrUKh4hxMQ==";

    struct Fake {
        dir: tempfile::TempDir,
    }

    impl Fake {
        fn new(single_major: bool) -> Self {
            let dir = tempfile::tempdir().expect("tmp");
            let (add, remove) = if single_major {
                ("add_single_major", "remove_single_major")
            } else {
                ("add", "remove")
            };
            std::fs::write(dir.path().join(add), "").expect("add");
            std::fs::write(dir.path().join(remove), "").expect("remove");
            std::fs::create_dir(dir.path().join("devices")).expect("devices");
            Self { dir }
        }

        fn rbd(&self) -> KernelRbd {
            KernelRbd::with_roots(self.dir.path(), "/dev")
        }

        fn device(&self, id: u32, pool: &str, image: &str, snap: &str) {
            self.device_as(id, pool, image, snap, "csi");
        }

        /// A mapping made as cephx user `name` (its `config_info`).
        fn device_as(&self, id: u32, pool: &str, image: &str, snap: &str, name: &str) {
            let d = self.dir.path().join("devices").join(id.to_string());
            std::fs::create_dir_all(&d).expect("dev");
            std::fs::write(
                d.join("config_info"),
                format!("127.0.0.1:6789 name={name},key=client.{name} {pool} {image} {snap}\n"),
            )
            .expect("config_info");
            std::fs::create_dir_all(&d).expect("dev");
            for (k, v) in [
                ("pool", pool),
                ("name", image),
                ("current_snap", snap),
                ("major", "251"),
                ("pool_ns", ""),
                ("client_addr", "127.0.0.1:0/3158237\n"),
            ] {
                std::fs::write(d.join(k), format!("{v}\n")).expect("attr");
            }
            std::fs::write(d.join("minor"), format!("{}\n", id * 16)).expect("minor");
            std::fs::write(d.join("refresh"), "").expect("refresh");
        }

        fn read(&self, name: &str) -> String {
            std::fs::read_to_string(self.dir.path().join(name)).expect("read")
        }
    }

    fn mons() -> Vec<SocketAddr> {
        vec![
            "127.0.0.1:6789".parse().expect("a"),
            "[::1]:6790".parse().expect("b"),
        ]
    }

    #[test]
    fn request_names_the_key_by_keyring_by_default() {
        let (mons, client) = (mons(), ClientId::new("csi").expect("id"));
        let key = CephxKey::from_base64(KEY).expect("key");
        let req = MapRequest {
            mons: &mons,
            client: &client,
            key: &key,
            pool: "rbd",
            image: "csi-vol-1",
            options: MapOptions::default(),
        };
        assert_eq!(
            add_request(&req).expect("req").as_str(),
            "127.0.0.1:6789,[::1]:6790 name=csi,key=client.csi,mount_timeout=30,lock_on_read \
             rbd csi-vol-1 -"
        );
        let opts = MapOptions {
            timeout: None,
            exclusive: true,
            lock_on_read: false,
            read_only: true,
            key_delivery: KeyDelivery::Inline,
        };
        let req = MapRequest {
            options: opts,
            ..req
        };
        assert_eq!(
            add_request(&req).expect("req").as_str(),
            format!("127.0.0.1:6789,[::1]:6790 name=csi,secret={KEY},exclusive,ro rbd csi-vol-1 -")
        );
        assert!(!format!("{req:?}").contains(KEY), "{req:?}");
        for bad in ["", "a b", "a,b", "a\nb"] {
            let r = MapRequest { image: bad, ..req };
            let e = add_request(&r).expect_err(bad);
            assert_eq!(e.kind(), ErrorKind::InvalidArgument);
            assert!(!format!("{e} {e:?}").contains(KEY));
        }
        let r = MapRequest { mons: &[], ..req };
        assert!(add_request(&r).is_err());
    }

    #[test]
    fn inline_map_writes_the_request_and_finds_the_device() {
        let fake = Fake::new(true);
        let (mons, client) = (mons(), ClientId::new("csi").expect("id"));
        let key = CephxKey::from_base64(KEY).expect("key");
        let opts = MapOptions {
            key_delivery: KeyDelivery::Inline,
            ..MapOptions::default()
        };
        let req = MapRequest {
            mons: &mons,
            client: &client,
            key: &key,
            pool: "rbd",
            image: "vol",
            options: opts,
        };
        // No device appears (nothing plays the kernel): the request was written, and the error
        // says so without the key.
        let e = fake.rbd().map(&req).expect_err("no device");
        assert_eq!(e.kind(), ErrorKind::Other);
        assert!(!format!("{e} {e:?}").contains(KEY), "{e:?}");
        assert!(
            fake.read("add_single_major")
                .contains(&format!("secret={KEY}"))
        );
        // The "kernel" made the device: map is now idempotent and writes nothing.
        fake.device(3, "rbd", "vol", "-");
        std::fs::write(fake.dir.path().join("add_single_major"), "").expect("clear");
        let m = fake.rbd().map(&req).expect("mapped");
        assert_eq!(fake.read("add_single_major"), "");
        assert_eq!(
            m,
            Mapping {
                id: 3,
                pool: "rbd".into(),
                namespace: String::new(),
                image: "vol".into(),
                snapshot: None,
                major: 251,
                minor: 48,
                device: PathBuf::from("/dev/rbd3"),
                client_addr: Some("127.0.0.1:0/3158237".into()),
                client_name: Some("csi".into()),
            }
        );
    }

    #[test]
    fn mappings_are_listed_and_matched_on_the_head() {
        let fake = Fake::new(true);
        fake.device(0, "rbd", "a", "-");
        fake.device(1, "rbd", "b", "snap1");
        fake.device(10, "other", "a", "-");
        std::fs::create_dir(fake.dir.path().join("devices/2")).expect("half-removed device");
        // Torn down further by a concurrent unmap: its name still there, its numbers gone (what
        // 50 concurrent unstages met: "no major").
        let d3 = fake.dir.path().join("devices/3");
        std::fs::create_dir(&d3).expect("dir");
        std::fs::write(d3.join("pool"), "rbd\n").expect("pool");
        std::fs::write(d3.join("name"), "c\n").expect("name");
        let rbd = fake.rbd();
        let ids: Vec<u32> = rbd.mappings().expect("list").iter().map(|m| m.id).collect();
        assert_eq!(ids, vec![0, 1, 10]);
        assert_eq!(rbd.find("rbd", "a").expect("find").map(|m| m.id), Some(0));
        assert_eq!(
            rbd.find("rbd", "b").expect("find"),
            None,
            "a snapshot is not the head"
        );
        assert_eq!(
            rbd.find("other", "a").expect("find").map(|m| m.device),
            Some("/dev/rbd10".into())
        );
        assert!(rbd.available());
        let none = KernelRbd::with_roots(fake.dir.path().join("absent"), "/dev");
        assert!(!none.available());
        assert_eq!(none.mappings().expect("empty"), vec![]);
    }

    #[test]
    fn unmap_writes_the_id_and_force_only_when_asked() {
        let fake = Fake::new(true);
        fake.device(4, "rbd", "a", "-");
        let rbd = fake.rbd();
        assert!(rbd.unmap("rbd", "a", false).expect("unmap"));
        assert_eq!(fake.read("remove_single_major"), "4");
        assert!(rbd.unmap("rbd", "a", true).expect("unmap"));
        assert_eq!(fake.read("remove_single_major"), "4 force");
        assert!(!rbd.unmap("rbd", "missing", false).expect("not mapped"));
        rbd.refresh(4).expect("refresh");
        assert_eq!(fake.read("devices/4/refresh"), "1");
    }

    #[test]
    fn legacy_add_and_remove_are_used_without_single_major() {
        let fake = Fake::new(false);
        fake.device(0, "rbd", "a", "-");
        assert!(fake.rbd().unmap("rbd", "a", false).expect("unmap"));
        assert_eq!(fake.read("remove"), "0");
    }

    #[test]
    fn keyring_delivery_never_writes_the_key() {
        // On a host without libceph the `ceph` key type is unknown and add_key fails; with it, the
        // request reaches the fake file. Either way the key is neither written nor reported.
        let fake = Fake::new(true);
        let (mons, client) = (mons(), ClientId::new("csi").expect("id"));
        let key = CephxKey::from_base64(KEY).expect("key");
        let req = MapRequest {
            mons: &mons,
            client: &client,
            key: &key,
            pool: "rbd",
            image: "vol",
            options: MapOptions::default(),
        };
        let e = fake.rbd().map(&req).expect_err("nothing plays the kernel");
        let s = format!("{e} {e:?}");
        assert!(!s.contains(KEY), "{s}");
        let written = fake.read("add_single_major");
        assert!(
            !written.contains(KEY) && !written.contains("secret"),
            "{written}"
        );
        assert!(
            written.is_empty() || written.contains("key=client.csi"),
            "{written}"
        );
    }

    #[test]
    fn a_failed_write_reports_the_file_not_the_request() {
        let dir = tempfile::tempdir().expect("tmp");
        let rbd = KernelRbd::with_roots(dir.path().join("none"), "/dev");
        let (mons, client) = (mons(), ClientId::new("csi").expect("id"));
        let key = CephxKey::from_base64(KEY).expect("key");
        let opts = MapOptions {
            key_delivery: KeyDelivery::Inline,
            ..MapOptions::default()
        };
        let req = MapRequest {
            mons: &mons,
            client: &client,
            key: &key,
            pool: "rbd",
            image: "v",
            options: opts,
        };
        let e = rbd.map(&req).expect_err("no sysfs");
        assert_eq!(e.kind(), ErrorKind::NotFound);
        let s = format!("{e} {e:?}");
        assert!(s.contains("map rbd/v") && s.contains("add"), "{s}");
        assert!(!s.contains(KEY) && !s.contains("secret"), "{s}");
    }

    #[test]
    fn an_owned_view_sees_only_the_mappings_made_as_its_user() {
        let fake = Fake::new(true);
        fake.device_as(1, "rbd", "vol", "-", "admin");
        let csi = ClientId::new("csi").expect("id");
        let mine = fake.rbd().owned_by(&csi);
        // Mapped by hand as client.admin: not ours, so not found and not unmapped.
        assert_eq!(mine.find("rbd", "vol").expect("find"), None);
        assert!(!mine.unmap("rbd", "vol", false).expect("unmap"));
        assert_eq!(fake.read("remove_single_major"), "");
        // The unscoped view and the listing still show it, with its user.
        let all = fake.rbd().mappings().expect("list");
        assert_eq!(all[0].client_name.as_deref(), Some("admin"));
        assert!(fake.rbd().find("rbd", "vol").expect("find").is_some());
        // Ours is found next to it.
        fake.device_as(2, "rbd", "vol", "-", "csi");
        assert_eq!(
            mine.find("rbd", "vol").expect("find").map(|m| m.id),
            Some(2)
        );
        assert!(mine.unmap("rbd", "vol", false).expect("unmap"));
        assert_eq!(fake.read("remove_single_major"), "2");
    }
}

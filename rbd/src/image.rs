//! An open RBD image (librbd): size, features, metadata, watchers and locks. Every call blocks.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::fmt;

use crate::error::{Error, ErrorKind, Result};
use crate::sys;

/// RBD image feature bits (`/usr/include/rbd/features.h`).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Features(u64);

const FEATURE_NAMES: &[(u64, &str)] = &[
    (1 << 0, "layering"),
    (1 << 1, "striping"),
    (1 << 2, "exclusive-lock"),
    (1 << 3, "object-map"),
    (1 << 4, "fast-diff"),
    (1 << 5, "deep-flatten"),
    (1 << 6, "journaling"),
    (1 << 7, "data-pool"),
    (1 << 8, "operations"),
    (1 << 9, "migrating"),
    (1 << 10, "non-primary"),
    (1 << 11, "dirty-cache"),
];

impl Features {
    /// `layering`.
    pub const LAYERING: Self = Self(1 << 0);
    /// `exclusive-lock`.
    pub const EXCLUSIVE_LOCK: Self = Self(1 << 2);
    /// `object-map`.
    pub const OBJECT_MAP: Self = Self(1 << 3);
    /// `fast-diff`.
    pub const FAST_DIFF: Self = Self(1 << 4);
    /// `deep-flatten`.
    pub const DEEP_FLATTEN: Self = Self(1 << 5);
    /// What the kernel client (krbd, Linux 5.3 and later) maps, and what we create images with:
    /// layering, exclusive-lock, object-map, fast-diff, deep-flatten (Ceph's default set).
    pub const KRBD: Self = Self(
        Self::LAYERING.0
            | Self::EXCLUSIVE_LOCK.0
            | Self::OBJECT_MAP.0
            | Self::FAST_DIFF.0
            | Self::DEEP_FLATTEN.0,
    );

    /// From raw bits.
    pub const fn from_bits(bits: u64) -> Self {
        Self(bits)
    }

    /// The raw bits.
    pub const fn bits(self) -> u64 {
        self.0
    }

    /// Whether every bit of `other` is set.
    pub const fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }

    /// The names of the set bits (unknown bits as hex).
    pub fn names(self) -> Vec<String> {
        let mut rest = self.0;
        let mut out = Vec::new();
        for &(bit, name) in FEATURE_NAMES {
            if rest & bit != 0 {
                out.push(name.to_owned());
                rest &= !bit;
            }
        }
        if rest != 0 {
            out.push(format!("{rest:#x}"));
        }
        out
    }
}

impl fmt::Debug for Features {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Features({})", self.names().join(", "))
    }
}

impl fmt::Display for Features {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.names().join(", "))
    }
}

/// What an image is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageInfo {
    /// The image's unique id (stays the same across renames).
    pub id: String,
    /// Size in bytes.
    pub size: u64,
    /// Object size in bytes (2^order).
    pub object_size: u64,
    /// log2 of the object size.
    pub order: u8,
    /// Feature bits.
    pub features: Features,
}

/// A client watching the image header: every kernel mapping and every open read-write librbd
/// handle is one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Watcher {
    /// The client's address, `ip:port/nonce` (the form [`crate::Cluster::blocklist_add`] takes).
    pub addr: String,
    /// The client's global id (`client.<id>`).
    pub id: i64,
    /// The watch cookie.
    pub cookie: u64,
}

impl Watcher {
    /// The entity, `client.<id>`.
    pub fn entity(&self) -> String {
        format!("client.{}", self.id)
    }
}

/// A holder of the image's `rbd_lock` (the exclusive-lock feature's lock, tag `internal`, cookie
/// `auto <n>`; or an advisory lock someone took).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Locker {
    /// `client.<id>`.
    pub client: String,
    /// The lock cookie.
    pub cookie: String,
    /// The holder's address, `ip:port/nonce`.
    pub addr: String,
}

/// The image's lock as `rbd lock ls` shows it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Lockers {
    /// Whether the lock is exclusive.
    pub exclusive: bool,
    /// The lock tag (`internal` for the exclusive-lock feature's lock).
    pub tag: String,
    /// The holders (none: unlocked).
    pub lockers: Vec<Locker>,
}

/// Who uses an image: the clients watching its header and the holders of its lock. What the
/// driver looks at before and after mapping (see the crate docs).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Holders {
    /// The header's watchers.
    pub watchers: Vec<Watcher>,
    /// The holders of `rbd_lock`.
    pub lockers: Vec<Locker>,
}

impl Holders {
    /// Every client other than `own` (this node's kernel client address,
    /// [`crate::Mapping::client_addr`]; `None` before mapping), as `client.<id> at <addr>`,
    /// sorted and without duplicates. Empty: nobody else uses the image.
    pub fn others(&self, own: Option<&str>) -> Vec<String> {
        let own = own.map(plain_addr);
        let mut v: Vec<String> = self
            .watchers
            .iter()
            .map(|w| (w.entity(), w.addr.as_str()))
            .chain(
                self.lockers
                    .iter()
                    .map(|l| (l.client.clone(), l.addr.as_str())),
            )
            .filter(|(_, addr)| Some(plain_addr(addr)) != own)
            .map(|(who, addr)| format!("{who} at {addr}"))
            .collect();
        v.sort();
        v.dedup();
        v
    }
}

/// Strips the address-type prefix Ceph may print (`v1:`, `any:`) from a client address.
pub(crate) fn plain_addr(addr: &str) -> &str {
    let a = addr.trim();
    a.strip_prefix("v1:")
        .or_else(|| a.strip_prefix("any:"))
        .unwrap_or(a)
}

/// An open image, closed on drop. May be moved between threads, not shared.
#[derive(Debug)]
pub struct Image {
    handle: sys::ImageHandle,
    pool: String,
    name: String,
    read_only: bool,
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

impl Image {
    pub(crate) fn new(
        handle: sys::ImageHandle,
        pool: String,
        name: String,
        read_only: bool,
    ) -> Self {
        Self {
            handle,
            pool,
            name,
            read_only,
        }
    }

    /// The pool's name.
    pub fn pool(&self) -> &str {
        &self.pool
    }

    /// The image's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn op(&self, what: &str) -> String {
        format!("{what} {}/{}", self.pool, self.name)
    }

    /// Id, size, object size and features.
    pub fn info(&self) -> Result<ImageInfo> {
        let s = self
            .handle
            .stat()
            .map_err(|e| Error::errno(self.op("stat"), e))?;
        let features = self.features()?;
        let id = self
            .handle
            .id()
            .map_err(|e| Error::errno(self.op("id of"), e))?;
        Ok(ImageInfo {
            id,
            size: s.size,
            object_size: s.obj_size,
            order: u8::try_from(s.order).unwrap_or(0),
            features,
        })
    }

    /// Size in bytes.
    pub fn size(&self) -> Result<u64> {
        Ok(self
            .handle
            .stat()
            .map_err(|e| Error::errno(self.op("stat"), e))?
            .size)
    }

    /// Feature bits.
    pub fn features(&self) -> Result<Features> {
        self.handle
            .features()
            .map(Features::from_bits)
            .map_err(|e| Error::errno(self.op("features of"), e))
    }

    /// Grows the image to `size` bytes and returns the new size. The same size is a no-op; a
    /// smaller one is refused ([`ErrorKind::InvalidArgument`]): we never shrink. On a mapped image
    /// this asks the kernel client for the exclusive lock (cooperative mode hands it over).
    pub fn grow(&self, size: u64) -> Result<u64> {
        let current = self.size()?;
        if size == current {
            return Ok(current);
        }
        if size < current {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                self.op("resize"),
                format!("{size} bytes is smaller than the image's {current}: images never shrink"),
            ));
        }
        self.handle
            .grow(size)
            .map_err(|e| Error::errno(self.op("resize"), e))?;
        self.size()
    }

    /// The value of a metadata key, if set.
    pub fn metadata(&self, key: &str) -> Result<Option<String>> {
        let k = cstr("metadata key", key)?;
        match self.handle.metadata_get(&k) {
            Ok(v) => Ok(Some(v)),
            Err(libc::ENOENT) => Ok(None),
            Err(e) => Err(Error::errno(self.op(&format!("get metadata {key} of")), e)),
        }
    }

    /// Sets a metadata key.
    pub fn set_metadata(&self, key: &str, value: &str) -> Result<()> {
        let k = cstr("metadata key", key)?;
        let v = cstr("metadata value", value)?;
        self.handle
            .metadata_set(&k, &v)
            .map_err(|e| Error::errno(self.op(&format!("set metadata {key} of")), e))
    }

    /// Removes a metadata key (a missing key is success).
    pub fn remove_metadata(&self, key: &str) -> Result<()> {
        let k = cstr("metadata key", key)?;
        match self.handle.metadata_remove(&k) {
            Ok(()) | Err(libc::ENOENT) => Ok(()),
            Err(e) => Err(Error::errno(
                self.op(&format!("remove metadata {key} of")),
                e,
            )),
        }
    }

    /// Every metadata key and value (including librbd's own `conf_*` keys, if any were set).
    pub fn metadata_all(&self) -> Result<BTreeMap<String, String>> {
        Ok(self
            .handle
            .metadata_list()
            .map_err(|e| Error::errno(self.op("list metadata of"), e))?
            .into_iter()
            .collect())
    }

    /// The clients watching the image header (a handle opened with [`crate::Pool::open`] is one
    /// of them; [`crate::Pool::open_read_only`] is not).
    pub fn watchers(&self) -> Result<Vec<Watcher>> {
        Ok(self
            .handle
            .watchers()
            .map_err(|e| Error::errno(self.op("list watchers of"), e))?
            .into_iter()
            .map(|w| Watcher {
                addr: plain_addr(&w.addr).to_owned(),
                id: w.id,
                cookie: w.cookie,
            })
            .collect())
    }

    /// Watchers and lockers together ([`Holders`]); works on a read-only handle, which adds no
    /// watch of its own.
    pub fn holders(&self) -> Result<Holders> {
        Ok(Holders {
            watchers: self.watchers()?,
            lockers: self.lockers()?.lockers,
        })
    }

    /// The owners of the exclusive-lock feature's lock (the owner strings
    /// [`Image::break_lock_owner`] takes); empty when nobody holds it. Needs a handle from
    /// [`crate::Pool::open`] (librbd has no exclusive-lock state on a read-only handle);
    /// [`Image::lockers`] shows the same lock from either.
    pub fn lock_owners(&self) -> Result<Vec<String>> {
        if self.read_only {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                self.op("get lock owners of"),
                "needs a read-write handle (Pool::open); Image::lockers works read-only",
            ));
        }
        Ok(self
            .handle
            .lock_owners()
            .map_err(|e| Error::errno(self.op("get lock owners of"), e))?
            .1)
    }

    /// The holders of the image's `rbd_lock`, with their addresses (for blocklisting), as the
    /// image's header object has them at the time of the call, also on a read-only handle
    /// opened long before (librbd's own `rbd_list_lockers` would answer from that handle's
    /// cached header).
    pub fn lockers(&self) -> Result<Lockers> {
        let l = self
            .handle
            .lockers()
            .map_err(|e| Error::errno(self.op("list lockers of"), e))?;
        Ok(Lockers {
            exclusive: l.exclusive,
            tag: l.tag,
            lockers: l
                .lockers
                .into_iter()
                .map(|x| Locker {
                    client: x.client,
                    cookie: x.cookie,
                    addr: plain_addr(&x.addr).to_owned(),
                })
                .collect(),
        })
    }

    /// Breaks the exclusive-lock feature's lock held by `owner` (one of [`Image::lock_owners`]).
    /// librbd blocklists the owner first (`rbd_blocklist_on_break_lock`, on by default). Only for
    /// a dead holder, by an operator: a live holder that is blocklisted loses its mapping.
    pub fn break_lock_owner(&self, owner: &str) -> Result<()> {
        let o = cstr("lock owner", owner)?;
        self.handle
            .lock_break(&o)
            .map_err(|e| Error::errno(self.op(&format!("break lock of {owner} on")), e))
    }

    /// Removes one holder from the image's `rbd_lock` (no blocklisting: fence the holder with
    /// [`crate::Cluster::blocklist_add`] first).
    pub fn break_lock(&self, locker: &Locker) -> Result<()> {
        let c = cstr("locker", &locker.client)?;
        let k = cstr("lock cookie", &locker.cookie)?;
        self.handle
            .break_lock(&c, &k)
            .map_err(|e| Error::errno(self.op(&format!("break lock of {} on", locker.client)), e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn krbd_features_are_cephs_default_set() {
        assert_eq!(Features::KRBD.bits(), 0x3d);
        assert_eq!(
            Features::KRBD.to_string(),
            "layering, exclusive-lock, object-map, fast-diff, deep-flatten"
        );
        assert!(Features::KRBD.contains(Features::EXCLUSIVE_LOCK));
        assert!(!Features::LAYERING.contains(Features::KRBD));
        assert_eq!(
            Features::from_bits(1 << 40 | 1).names(),
            vec!["layering", "0x10000000000"]
        );
    }

    #[test]
    fn holders_other_than_our_own_client() {
        let h = Holders {
            watchers: vec![
                Watcher {
                    addr: "127.0.0.1:0/11".into(),
                    id: 4100,
                    cookie: 1,
                },
                Watcher {
                    addr: "10.0.0.2:0/22".into(),
                    id: 4200,
                    cookie: 2,
                },
            ],
            lockers: vec![Locker {
                client: "client.4200".into(),
                cookie: "auto 1".into(),
                addr: "10.0.0.2:0/22".into(),
            }],
        };
        assert_eq!(
            h.others(None),
            vec![
                "client.4100 at 127.0.0.1:0/11",
                "client.4200 at 10.0.0.2:0/22"
            ]
        );
        assert_eq!(
            h.others(Some("v1:127.0.0.1:0/11")),
            vec!["client.4200 at 10.0.0.2:0/22"]
        );
        assert_eq!(
            h.others(Some("10.0.0.2:0/22")),
            vec!["client.4100 at 127.0.0.1:0/11"]
        );
        assert!(Holders::default().others(None).is_empty());
    }

    #[test]
    fn addresses_lose_their_type_prefix() {
        assert_eq!(plain_addr("v1:127.0.0.1:0/1234"), "127.0.0.1:0/1234");
        assert_eq!(plain_addr("any:127.0.0.1:0/1"), "127.0.0.1:0/1");
        assert_eq!(plain_addr("10.0.0.1:0/99"), "10.0.0.1:0/99");
    }
}

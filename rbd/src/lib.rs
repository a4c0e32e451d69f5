//! Ceph RBD for the driver: what talks to Ceph, and nothing above it.
//!
//! - **Images** through librados/librbd (Debian's `librbd-dev`; the hand-written FFI is in
//!   `src/sys.rs`, the crate's only `unsafe` code): [`Cluster::connect`] with a bound on every
//!   call ([`ConnectOptions::timeout`] sets `client_mount_timeout`, `rados_mon_op_timeout` and
//!   `rados_osd_op_timeout`, so an unreachable Ceph fails with [`ErrorKind::Unavailable`] instead
//!   of hanging), [`Pool`] (create with the kernel client's features [`Features::KRBD`] and 4 MiB
//!   objects, remove, list, usage), [`Image`] (size, grow, metadata, watchers, lock owners and
//!   lockers, break lock), [`Cluster::pool_usage`] for capacity, [`Cluster::blocklist_add`].
//! - **Mappings** through the kernel's RBD interface ([`KernelRbd`]: `/sys/bus/rbd`), without the
//!   `rbd` binary or udev; the key reaches the kernel through the kernel keyring or the sysfs
//!   write only ([`KeyDelivery`]).
//! - **Configuration**: [`CephConf`] (`mon_host`, `keyring`), [`msgr1_mon_addrs`],
//!   [`CephxKey`] (the secret: wiped on drop, never printed).
//!
//! Every call blocks (network round trips, sysfs writes that wait for the cluster): the driver
//! runs them through `tokio::task::spawn_blocking`. Errors carry a kind the driver maps to a gRPC
//! code in one place ([`ErrorKind`]), the operation with pool and image, and the errno.
//!
//! This crate must never depend on `csi`, `kms` or `luks2`: it knows images, not volumes or keys.
//!
//! # Lock mode: cooperative exclusive lock, plus the driver's check after map
//!
//! Images have the exclusive-lock feature. The kernel's `exclusive` map option would make the
//! kernel take the lock at map time and never hand it over: a second mapping fails (`EROFS`), but
//! so does every other client's maintenance operation, including the controller's resize of a
//! mapped image (ControllerExpandVolume, online expansion). So the driver maps **without**
//! `exclusive` ([`MapOptions::default`]): the kernel takes the lock on its first write (and with
//! `lock_on_read` on its first read) and hands it over when another client asks, which lets the
//! controller's resize through. Exclusivity between nodes is the driver's, in this order:
//!
//! 1. before mapping, the node looks at [`Image::holders`] (watchers and lockers, from a
//!    read-only open, which adds no watch): any other client ([`Holders::others`]) is refused
//!    (FAILED_PRECONDITION naming the image and the holder), nothing mapped;
//! 2. it maps ([`KernelRbd::map`]; mapping registers the kernel's watch and writes nothing; with
//!    `lock_on_read`, the default, the kernel's own partition scan at map time is a read, so
//!    the mapping already holds the exclusive lock when the map returns — seen on Debian's 6.1
//!    kernel — and the check below ignores it by address like the watch);
//! 3. it looks at the holders **again**: any client other than its own mapping (its kernel
//!    client's address, [`Mapping::client_addr`]) means another node got there at the same time,
//!    so it unmaps and refuses — before anything above the backend reads or writes the device.
//!    Two racing nodes both see each other and both back off; neither writes.
//!
//! A node that holds an image keeps its watch for as long as the mapping exists, also when the
//! driver process is killed, so the check refuses every other node until that node unmaps.
//! Kubernetes' attach/detach ordering (`attachRequired: true` with ControllerPublish) adds a
//! second, control-plane fence on top; the check above does not rely on it.
//!
//! # A node that died holding an image
//!
//! Its watch expires (about 30 s after the node stops answering), but its exclusive lock stays,
//! and the check refuses the image: nothing is released silently, since a node that only lost its
//! network may still be writing. Releasing it is an operator action (a command such as
//! `onmetal-csi-driver volume release --volume-id V`), in this order:
//!
//! 1. [`Cluster::blocklist_add`] for every address in [`Image::holders`]:
//!    from then on the OSDs refuse that client's writes, so the old node cannot corrupt anything
//!    even if it comes back;
//! 2. [`Image::break_lock`] for each locker (or [`Image::break_lock_owner`], which blocklists by
//!    itself);
//! 3. the next stage on another node maps the image normally. The old node's mapping is dead
//!    (blocklisted); it is unmapped there with `force` once the node is back.

mod cluster;
mod conf;
mod error;
mod image;
mod krbd;
mod sys;

pub use cluster::{
    Cluster, ClusterStats, ConnectOptions, DEFAULT_ORDER, Pool, PoolFull, PoolStats, PoolUsage,
};
pub use conf::{CephConf, CephxKey, ClientId, msgr1_mon_addrs};
pub use error::{Error, ErrorKind, Result};
pub use image::{Features, Holders, Image, ImageInfo, Locker, Lockers, Watcher};
pub use krbd::{KernelRbd, KeyDelivery, MapOptions, MapRequest, Mapping};

//! Activation of LUKS2 volumes through device-mapper ioctls (dm-crypt), with the volume key in the
//! kernel keyring. Depends on `luks2`; never on `kms` or `csi`.
//!
//! - Nothing is activated without an [`ActivationPolicy`]: a [`CryptVolume`] is built with one
//!   ([`CryptVolume::from_luks2`]`(&header, &ActivationPolicy::driver())`) and activation checks
//!   the volume and the key length against it again. The driver's policy accepts exactly the
//!   layout our format writes for its volumes; the `luks2` command uses cryptsetup's broader set
//!   without null ciphers and ECB.
//! - [`DeviceMapper::activate`] builds the dm-crypt table from a [`CryptVolume`] (the LUKS2
//!   segment: cipher, IV tweak, data offset, size, sector size, persistent flags) and loads it
//!   with `DM_SECURE_DATA`; the key goes to the kernel keyring as a `logon` key and the table
//!   only names it (`:<len>:logon:onmetal-csi:<DM UUID>`). DM UUIDs follow cryptsetup
//!   (`CRYPT-LUKS2-<uuid>-<name>`), so `cryptsetup status/close` work on our mappings. It takes
//!   the open handle the header was read from (the table names that device's number), is
//!   exclusive per name and per backing device, and on failure removes exactly what it created.
//! - [`DeviceMapper::resize`] reloads the table for the grown device with the key still in the
//!   keyring; [`DeviceMapper::deactivate`] removes the mapping and drops the key;
//!   [`DeviceMapper::status`] and [`DeviceMapper::list`] inspect (a driver finds its mappings
//!   after a restart with them). They read tables with `DM_SECURE_DATA` into wiped buffers and
//!   never keep an inline key of a foreign mapping (cryptsetup's `--disable-keyring`).
//! - `/dev/mapper/<name>` exists when activation returns, with or without udev.
//!
//! The policy is in `policy`, the table builder in `table`, reading active tables in
//! `active_table`, keyring handling in `keyring`, the conversion from a parsed LUKS2 header in
//! `luks2_volume` ([`CryptVolume::from_luks2`]), loop devices without `losetup` (attach, detach,
//! set capacity, find by backing file) in [`loopdev`], and the only `unsafe` code (raw
//! `add_key`/`keyctl`/`mknod` calls, the table status ioctl and the loop ioctls) in `sys`. The `luks2` command's
//! `open/close/resize/status` verbs are in the `luks2-cli` crate (`src/mapping.rs`).
//!
//! Tests: the unit tests run anywhere. The privileged tests (`tests/privileged.rs`, one module per
//! behaviour, mapped in `tests/README.md`: compatibility with
//! cryptsetup, filesystems, resize, busy close, read-only, discards, udev, throughput, exclusive
//! activation, status of inline-key mappings) need root
//! and a kernel with device-mapper; `scripts/vm-test` runs them in a qemu VM with Debian's
//! kernel, and they also run as root on a Linux host. Elsewhere they skip, except under the
//! VM rig (`ONMETAL_VM_TEST=1`), where a missing prerequisite is a failure.

mod active_table;
mod device;
mod error;
mod keyring;
pub mod loopdev;
mod luks2_volume;
mod mapper;
mod policy;
mod segment;
mod sys;
mod table;
mod types;

pub use device::{MAPPER_DIR, mapper_path};
pub use error::{Error, Result};
pub use keyring::KEY_PREFIX;
pub use mapper::{DM_UUID_PREFIX, DeviceMapper, MappingStatus, dm_uuid};
pub use policy::ActivationPolicy;
pub use segment::{
    ActivateOptions, CryptFlags, CryptSegment, CryptVolume, SectorSize, SegmentSize,
};
pub use table::{KeyringKey, ParsedCrypt, TableKey};
pub use types::{Bytes, DM_NAME_MAX, DevNum, DmName, Sectors};

//! Device access: a small positional read/write trait, implemented for files and block devices
//! ([`std::fs::File`]), for an in-memory buffer ([`MemDevice`], for tests and fuzzing) and as a
//! fault-injecting wrapper ([`FaultyDevice`], for crash-safety tests).
//!
//! Everything above this module is sans-IO: it parses and produces byte buffers and only touches
//! a device through [`Device`].

use std::fs::File;
use std::io::{self, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// Positional access to a device that holds (or will hold) a LUKS2 header.
pub trait Device {
    /// Reads exactly `buf.len()` bytes at `offset`; a short device is an `UnexpectedEof` error.
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()>;
    /// Writes all of `buf` at `offset`.
    fn write_all_at(&mut self, offset: u64, buf: &[u8]) -> io::Result<()>;
    /// Flushes written data to stable storage (fsync).
    fn sync(&mut self) -> io::Result<()>;
    /// The size of the device in bytes.
    fn size(&self) -> io::Result<u64>;
    /// Tries to take the exclusive writer lock without blocking; `Ok(false)` if another holder
    /// has it. Devices without a notion of locking always succeed.
    fn try_lock_exclusive(&self) -> io::Result<bool> {
        Ok(true)
    }
    /// Releases the lock taken by [`Device::try_lock_exclusive`].
    fn unlock(&self) -> io::Result<()> {
        Ok(())
    }
    /// The device number if this is a block device, which cryptsetup locks through a file in
    /// `/run/cryptsetup` rather than on the device itself ([`crate::lock`]); `None` otherwise.
    fn block_device_number(&self) -> io::Result<Option<u64>> {
        Ok(None)
    }
}

impl Device for File {
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        FileExt::read_exact_at(self, buf, offset)
    }

    fn write_all_at(&mut self, offset: u64, buf: &[u8]) -> io::Result<()> {
        FileExt::write_all_at(self, buf, offset)
    }

    fn sync(&mut self) -> io::Result<()> {
        self.sync_all()
    }

    fn size(&self) -> io::Result<u64> {
        // Block devices report a zero length in their metadata; seeking to the end works for
        // both regular files and block devices. Positional I/O does not use the file offset.
        let mut handle: &File = self;
        handle.seek(SeekFrom::End(0))
    }

    fn try_lock_exclusive(&self) -> io::Result<bool> {
        match self.try_lock() {
            Ok(()) => Ok(true),
            Err(std::fs::TryLockError::WouldBlock) => Ok(false),
            Err(std::fs::TryLockError::Error(e)) => Err(e),
        }
    }

    fn unlock(&self) -> io::Result<()> {
        File::unlock(self)
    }

    fn block_device_number(&self) -> io::Result<Option<u64>> {
        use std::os::unix::fs::{FileTypeExt, MetadataExt};
        let m = self.metadata()?;
        Ok(m.file_type().is_block_device().then(|| m.rdev()))
    }
}

impl<D: Device + ?Sized> Device for &mut D {
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        (**self).read_exact_at(offset, buf)
    }
    fn write_all_at(&mut self, offset: u64, buf: &[u8]) -> io::Result<()> {
        (**self).write_all_at(offset, buf)
    }
    fn sync(&mut self) -> io::Result<()> {
        (**self).sync()
    }
    fn size(&self) -> io::Result<u64> {
        (**self).size()
    }
    fn try_lock_exclusive(&self) -> io::Result<bool> {
        (**self).try_lock_exclusive()
    }
    fn unlock(&self) -> io::Result<()> {
        (**self).unlock()
    }
    fn block_device_number(&self) -> io::Result<Option<u64>> {
        (**self).block_device_number()
    }
}

/// Read access to something positional that is not a full [`Device`]; wrap it in [`ReadOnly`].
pub(crate) trait ReadAt {
    /// As [`Device::read_exact_at`].
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()>;
    /// As [`Device::size`].
    fn size(&self) -> io::Result<u64>;
}

/// A read-only [`Device`]: reads and size come from the wrapped [`ReadAt`], writes fail with
/// `PermissionDenied`, `sync` does nothing.
pub(crate) struct ReadOnly<R>(pub(crate) R);

impl<R: ReadAt> Device for ReadOnly<R> {
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.0.read_exact_at(offset, buf)
    }
    fn write_all_at(&mut self, _: u64, _: &[u8]) -> io::Result<()> {
        Err(io::Error::from(io::ErrorKind::PermissionDenied))
    }
    fn sync(&mut self) -> io::Result<()> {
        Ok(())
    }
    fn size(&self) -> io::Result<u64> {
        self.0.size()
    }
}

/// A byte buffer (a header backup, a fuzz input) read as a device; reading past its end is
/// `UnexpectedEof`.
impl ReadAt for &[u8] {
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let start = usize::try_from(offset).map_err(io::Error::other)?;
        let src = start
            .checked_add(buf.len())
            .and_then(|end| self.get(start..end))
            .ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))?;
        buf.copy_from_slice(src);
        Ok(())
    }
    fn size(&self) -> io::Result<u64> {
        Ok(self.len() as u64)
    }
}

/// How long [`lock_exclusive`] retries before giving up with [`Error::Busy`].
pub const LOCK_RETRY_FOR: Duration = Duration::from_secs(2);

/// Takes the device's own exclusive writer lock (`flock` on the device file), retrying for up to
/// `budget`; [`Error::Busy`] if another writer keeps it. Release it with [`Device::unlock`].
/// Writers should use [`with_exclusive_lock`], which also takes cryptsetup's lock file for a
/// block device.
pub fn lock_exclusive<D: Device + ?Sized>(dev: &D, budget: Duration) -> Result<()> {
    let start = Instant::now();
    loop {
        if dev
            .try_lock_exclusive()
            .map_err(|e| Error::io("locking the device", e))?
        {
            return Ok(());
        }
        if start.elapsed() >= budget {
            return Err(Error::Busy(
                "another process holds the device's metadata lock".into(),
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs `f` while holding the device's exclusive writer locks, releasing them afterwards
/// whatever `f` returns. The locks are cryptsetup's: for a block device its lock file in
/// `/run/cryptsetup` ([`crate::lock::BlockDeviceLock`]), then, for any device, `flock` on the
/// device file itself (as by [`lock_exclusive`]); each is retried for [`LOCK_RETRY_FOR`].
pub fn with_exclusive_lock<D: Device + ?Sized, T>(
    dev: &mut D,
    f: impl FnOnce(&mut D) -> Result<T>,
) -> Result<T> {
    let rdev = dev
        .block_device_number()
        .map_err(|e| Error::io("inspecting the device", e))?;
    let cryptsetup_lock = match rdev {
        Some(rdev) => Some(crate::lock::BlockDeviceLock::acquire(rdev, LOCK_RETRY_FOR)?),
        None => None,
    };
    lock_exclusive(&*dev, LOCK_RETRY_FOR)?;
    let result = f(dev);
    // Nothing useful can be done about a failed unlock; closing the file releases it anyway.
    let _ = dev.unlock();
    drop(cryptsetup_lock);
    result
}

/// A device held in memory. Writes past the end grow it, like a regular file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemDevice {
    data: Vec<u8>,
    locked: std::cell::Cell<bool>,
}

impl MemDevice {
    /// A zero-filled device of `len` bytes.
    pub fn new(len: usize) -> Self {
        MemDevice {
            data: vec![0; len],
            locked: std::cell::Cell::new(false),
        }
    }

    /// A device with the given contents.
    pub fn from_vec(data: Vec<u8>) -> Self {
        MemDevice {
            data,
            locked: std::cell::Cell::new(false),
        }
    }

    /// The contents.
    pub fn as_slice(&self) -> &[u8] {
        &self.data
    }

    /// Mutable contents (for corrupting images in tests).
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut self.data
    }

    /// Takes the contents.
    pub fn into_vec(self) -> Vec<u8> {
        self.data
    }

    fn range(&self, offset: u64, len: usize) -> io::Result<std::ops::Range<usize>> {
        let start = usize::try_from(offset)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "offset too large"))?;
        let end = start
            .checked_add(len)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "offset overflow"))?;
        Ok(start..end)
    }
}

impl Device for MemDevice {
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let range = self.range(offset, buf.len())?;
        let src = self.data.get(range).ok_or_else(|| {
            io::Error::new(io::ErrorKind::UnexpectedEof, "read past end of device")
        })?;
        buf.copy_from_slice(src);
        Ok(())
    }

    fn write_all_at(&mut self, offset: u64, buf: &[u8]) -> io::Result<()> {
        let range = self.range(offset, buf.len())?;
        if self.data.len() < range.end {
            self.data.resize(range.end, 0);
        }
        if let Some(dst) = self.data.get_mut(range) {
            dst.copy_from_slice(buf);
        }
        Ok(())
    }

    fn sync(&mut self) -> io::Result<()> {
        Ok(())
    }

    fn size(&self) -> io::Result<u64> {
        Ok(self.data.len() as u64)
    }

    fn try_lock_exclusive(&self) -> io::Result<bool> {
        Ok(!self.locked.replace(true))
    }

    fn unlock(&self) -> io::Result<()> {
        self.locked.set(false);
        Ok(())
    }
}

/// Which mutating operation a [`FaultyDevice`] saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// A `write_all_at` of `len` bytes at `offset`.
    Write {
        /// Where.
        offset: u64,
        /// How many bytes.
        len: usize,
    },
    /// A `sync`.
    Sync,
}

/// Wraps a device and simulates a crash at the `n`th mutating operation (writes and syncs,
/// counted from 0): that operation and every later one fail with an I/O error and change
/// nothing, except that a write may optionally be torn (its first half lands).
///
/// Typical use: run an update once on a [`FaultyDevice::counting`] device to learn how many
/// operations it performs, then once per `n` in `0..count` with [`FaultyDevice::failing_at`].
#[derive(Debug)]
pub struct FaultyDevice<D> {
    inner: D,
    fail_at: Option<usize>,
    torn: bool,
    ops: Vec<Op>,
    crashed: AtomicBool,
}

impl<D: Device> FaultyDevice<D> {
    /// Never fails; records the operations.
    pub fn counting(inner: D) -> Self {
        FaultyDevice {
            inner,
            fail_at: None,
            torn: false,
            ops: Vec::new(),
            crashed: AtomicBool::new(false),
        }
    }

    /// Fails the `n`th mutating operation and everything after it.
    pub fn failing_at(inner: D, n: usize) -> Self {
        FaultyDevice {
            fail_at: Some(n),
            ..Self::counting(inner)
        }
    }

    /// Like [`FaultyDevice::failing_at`], but a failing write first writes its first half
    /// (rounded down to 512 bytes), as a power cut in the middle of a write may.
    pub fn torn_at(inner: D, n: usize) -> Self {
        FaultyDevice {
            fail_at: Some(n),
            torn: true,
            ..Self::counting(inner)
        }
    }

    /// The mutating operations attempted so far (including the failed ones).
    pub fn ops(&self) -> &[Op] {
        &self.ops
    }

    /// Whether the simulated crash has happened.
    pub fn crashed(&self) -> bool {
        self.crashed.load(Ordering::Relaxed)
    }

    /// The wrapped device, as the crash left it.
    pub fn into_inner(self) -> D {
        self.inner
    }

    /// The wrapped device.
    pub fn inner(&self) -> &D {
        &self.inner
    }

    fn check(&mut self, op: Op) -> bool {
        let index = self.ops.len();
        self.ops.push(op);
        if self.crashed() || self.fail_at == Some(index) {
            self.crashed.store(true, Ordering::Relaxed);
            return false;
        }
        true
    }

    fn crash_error() -> io::Error {
        io::Error::other("injected fault: simulated crash")
    }
}

impl<D: Device> Device for FaultyDevice<D> {
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        if self.crashed() {
            return Err(Self::crash_error());
        }
        self.inner.read_exact_at(offset, buf)
    }

    fn write_all_at(&mut self, offset: u64, buf: &[u8]) -> io::Result<()> {
        let first_crash = !self.crashed();
        if self.check(Op::Write {
            offset,
            len: buf.len(),
        }) {
            return self.inner.write_all_at(offset, buf);
        }
        if first_crash && self.torn {
            let half = (buf.len() / 2) & !511;
            if let Some(head) = buf.get(..half) {
                self.inner.write_all_at(offset, head)?;
            }
        }
        Err(Self::crash_error())
    }

    fn sync(&mut self) -> io::Result<()> {
        if self.check(Op::Sync) {
            return self.inner.sync();
        }
        Err(Self::crash_error())
    }

    fn size(&self) -> io::Result<u64> {
        self.inner.size()
    }

    fn try_lock_exclusive(&self) -> io::Result<bool> {
        self.inner.try_lock_exclusive()
    }

    fn unlock(&self) -> io::Result<()> {
        self.inner.unlock()
    }

    fn block_device_number(&self) -> io::Result<Option<u64>> {
        self.inner.block_device_number()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn mem_device_reads_writes_and_grows() {
        let mut d = MemDevice::new(8);
        d.write_all_at(6, b"abcd").unwrap();
        assert_eq!(d.size().unwrap(), 10);
        let mut buf = [0u8; 4];
        d.read_exact_at(6, &mut buf).unwrap();
        assert_eq!(&buf, b"abcd");
        assert_eq!(
            d.read_exact_at(8, &mut buf).unwrap_err().kind(),
            io::ErrorKind::UnexpectedEof
        );
        assert!(d.read_exact_at(u64::MAX, &mut buf).is_err());
    }

    #[test]
    fn mem_device_lock_is_exclusive() {
        let mut d = MemDevice::new(1);
        lock_exclusive(&d, Duration::ZERO).unwrap();
        let err = lock_exclusive(&d, Duration::from_millis(50)).unwrap_err();
        assert!(matches!(err, Error::Busy(_)));
        d.unlock().unwrap();
        let v = with_exclusive_lock(&mut d, |d| {
            assert!(lock_exclusive(&*d, Duration::ZERO).is_err());
            Ok(5)
        })
        .unwrap();
        assert_eq!(v, 5);
        assert!(lock_exclusive(&d, Duration::ZERO).is_ok());
    }

    #[test]
    fn file_lock_conflicts_between_handles() {
        let tmp = tempfile::NamedTempFile::new().unwrap();
        let a = File::options()
            .read(true)
            .write(true)
            .open(tmp.path())
            .unwrap();
        let b = File::options()
            .read(true)
            .write(true)
            .open(tmp.path())
            .unwrap();
        lock_exclusive(&a, Duration::ZERO).unwrap();
        let err = lock_exclusive(&b, Duration::from_millis(50)).unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::Busy);
        Device::unlock(&a).unwrap();
        assert!(lock_exclusive(&b, Duration::ZERO).is_ok());
    }

    #[test]
    fn file_size_and_positional_io() {
        let tmp = tempfile::NamedTempFile::new().unwrap();
        let mut f = File::options()
            .read(true)
            .write(true)
            .open(tmp.path())
            .unwrap();
        Device::write_all_at(&mut f, 4096, b"xyz").unwrap();
        assert_eq!(Device::size(&f).unwrap(), 4099);
        let mut buf = [0u8; 3];
        Device::read_exact_at(&f, 4096, &mut buf).unwrap();
        assert_eq!(&buf, b"xyz");
    }

    #[test]
    fn faulty_device_fails_from_nth_op_on() {
        let mut d = FaultyDevice::failing_at(MemDevice::new(0), 1);
        d.write_all_at(0, b"aa").unwrap();
        assert!(d.sync().is_err());
        assert!(d.write_all_at(0, b"bb").is_err());
        assert!(d.crashed());
        assert_eq!(d.ops().len(), 3);
        assert_eq!(d.into_inner().as_slice(), b"aa");
    }

    #[test]
    fn faulty_device_torn_write_lands_half() {
        let mut d = FaultyDevice::torn_at(MemDevice::new(0), 0);
        assert!(d.write_all_at(0, &[7u8; 2048]).is_err());
        let inner = d.into_inner();
        assert_eq!(inner.as_slice(), &[7u8; 1024][..]);
    }
}

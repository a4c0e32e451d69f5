//! The only module of this crate with `unsafe` code: raw system calls the `devicemapper` crate and
//! the standard library do not offer — the kernel key management calls (`add_key`, `keyctl`),
//! `mknod` for device nodes when no udev daemon creates them, the device-mapper ioctl for
//! reading a table with `DM_SECURE_DATA` into a buffer we wipe (the `devicemapper` crate neither
//! passes that flag for table status nor wipes its buffers), and the loop device ioctls
//! (`LOOP_CTL_GET_FREE`, `LOOP_CONFIGURE`, ...: neither libc nor devicemapper define them; the
//! structs and numbers are written from the kernel's `include/uapi/linux/loop.h`) behind the
//! safe API of `loopdev`.
//!
//! Every function here is a thin, typed wrapper: arguments are checked or built from safe types
//! (`CStr`, slices) before the call, results are mapped to `io::Result`.
#![allow(unsafe_code)]

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

/// A key or keyring serial number, or one of the special `KEY_SPEC_*` ids.
pub(crate) type KeySerial = i32;

/// The calling thread's keyring (created on first use).
pub(crate) const KEY_SPEC_THREAD_KEYRING: KeySerial = -1;
/// The calling user's keyring (`@u`), which lives as long as the user has processes or keys
/// referencing it, independent of any one process.
pub(crate) const KEY_SPEC_USER_KEYRING: KeySerial = -4;

const KEYCTL_SETPERM: libc::c_long = 5;
const KEYCTL_LINK: libc::c_long = 8;
const KEYCTL_UNLINK: libc::c_long = 9;
const KEYCTL_SEARCH: libc::c_long = 10;
const KEYCTL_INVALIDATE: libc::c_long = 21;

/// Adds (or updates, when a key of this type and description is already linked there) a key in
/// `keyring` and returns its serial. The payload is passed by pointer: it is never formatted.
pub(crate) fn add_key(
    key_type: &CStr,
    description: &CStr,
    payload: &[u8],
    keyring: KeySerial,
) -> io::Result<KeySerial> {
    // SAFETY: `key_type` and `description` are NUL-terminated C strings that outlive the call;
    // `payload` is a valid readable slice and its exact length is passed with it; the kernel
    // copies the payload and does not keep the pointers.
    let r = unsafe {
        libc::syscall(
            libc::SYS_add_key,
            key_type.as_ptr(),
            description.as_ptr(),
            payload.as_ptr().cast::<libc::c_void>(),
            payload.len(),
            libc::c_long::from(keyring),
        )
    };
    serial(r)
}

/// `keyctl(KEYCTL_SEARCH, keyring, type, description, 0)`: the serial of a matching key reachable
/// from `keyring`, without linking it anywhere.
pub(crate) fn search(
    keyring: KeySerial,
    key_type: &CStr,
    description: &CStr,
) -> io::Result<KeySerial> {
    // SAFETY: the two strings are NUL-terminated and outlive the call; the last argument (0) asks
    // the kernel not to link the result anywhere; no memory is written by the kernel.
    let r = unsafe {
        libc::syscall(
            libc::SYS_keyctl,
            KEYCTL_SEARCH,
            libc::c_long::from(keyring),
            key_type.as_ptr(),
            description.as_ptr(),
            0 as libc::c_long,
        )
    };
    serial(r)
}

/// `keyctl(KEYCTL_LINK, key, keyring)`.
pub(crate) fn link(key: KeySerial, keyring: KeySerial) -> io::Result<()> {
    keyctl2(KEYCTL_LINK, key, libc::c_long::from(keyring))
}

/// `keyctl(KEYCTL_UNLINK, key, keyring)`.
pub(crate) fn unlink(key: KeySerial, keyring: KeySerial) -> io::Result<()> {
    keyctl2(KEYCTL_UNLINK, key, libc::c_long::from(keyring))
}

/// `keyctl(KEYCTL_SETPERM, key, perm)`.
pub(crate) fn set_permissions(key: KeySerial, perm: u32) -> io::Result<()> {
    keyctl2(KEYCTL_SETPERM, key, libc::c_long::from(perm))
}

/// `keyctl(KEYCTL_INVALIDATE, key)`: the key is unlinked from every keyring and destroyed.
pub(crate) fn invalidate(key: KeySerial) -> io::Result<()> {
    keyctl2(KEYCTL_INVALIDATE, key, 0)
}

fn keyctl2(op: libc::c_long, key: KeySerial, arg: libc::c_long) -> io::Result<()> {
    // SAFETY: these keyctl operations take only integer arguments (serials, a permission mask)
    // and neither read nor write caller memory.
    let r = unsafe { libc::syscall(libc::SYS_keyctl, op, libc::c_long::from(key), arg) };
    serial(r).map(|_| ())
}

fn serial(r: libc::c_long) -> io::Result<KeySerial> {
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    KeySerial::try_from(r).map_err(|_| io::Error::other("key serial out of range"))
}

/// Creates a block device node `path` for `major:minor` with mode `mode` (permission bits).
pub(crate) fn mknod_block(path: &CStr, mode: u32, major: u32, minor: u32) -> io::Result<()> {
    let dev = libc::makedev(major, minor);
    // SAFETY: `path` is a NUL-terminated C string that outlives the call; mode and dev are plain
    // integers; mknod does not retain the pointer.
    let r = unsafe { libc::mknod(path.as_ptr(), libc::S_IFBLK | (mode & 0o7777), dev) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `sizeof(struct dm_ioctl)` (include/uapi/linux/dm-ioctl.h), which is also where the data starts.
pub(crate) const DM_IOCTL_SIZE_U32: u32 = 312;
/// [`DM_IOCTL_SIZE_U32`] as a length.
pub(crate) const DM_IOCTL_SIZE: usize = DM_IOCTL_SIZE_U32 as usize;
/// Offset of `data_size` in `struct dm_ioctl`.
const DM_DATA_SIZE_OFFSET: usize = 12;
/// The device-mapper ioctl type (`DM_IOCTL`).
const DM_IOCTL_TYPE: u64 = 0xfd;

/// `ioctl(control, _IOWR(DM_IOCTL, cmd, struct dm_ioctl), buf)`: `buf` starts with a `struct
/// dm_ioctl` the caller has prepared; its `data_size` is set here to `buf.len()`, so the kernel
/// reads and writes only inside `buf`.
pub(crate) fn dm_ioctl(control: BorrowedFd<'_>, cmd: u8, buf: &mut [u8]) -> io::Result<()> {
    let size = u32::try_from(buf.len())
        .ok()
        .filter(|&n| n as usize >= DM_IOCTL_SIZE)
        .ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
    buf[DM_DATA_SIZE_OFFSET..DM_DATA_SIZE_OFFSET + 4].copy_from_slice(&size.to_ne_bytes());
    // _IOWR: direction read|write (3) << 30, argument size << 16, type << 8, number.
    let request =
        (3u64 << 30) | (u64::from(DM_IOCTL_SIZE_U32) << 16) | (DM_IOCTL_TYPE << 8) | u64::from(cmd);
    // SAFETY: `buf` is a valid, writable buffer of `buf.len()` bytes that outlives the call; it
    // begins with a `struct dm_ioctl` (at least DM_IOCTL_SIZE bytes, checked above) whose
    // `data_size` is exactly `buf.len()`, and the kernel never reads or writes beyond
    // `data_size`. The kernel does not keep the pointer after the call.
    let r = unsafe {
        libc::ioctl(
            control.as_raw_fd(),
            request as _,
            buf.as_mut_ptr().cast::<libc::c_void>(),
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

// --- loop devices (include/uapi/linux/loop.h; the libc crate has none of these) ----------------

/// `LO_NAME_SIZE`: the length of `lo_file_name` and `lo_crypt_name`.
pub(crate) const LO_NAME_SIZE: usize = 64;
/// `LO_KEY_SIZE`: the length of the obsolete `lo_encrypt_key`.
const LO_KEY_SIZE: usize = 32;
/// `LO_FLAGS_DIRECT_IO`: the loop driver reads and writes its backing file with O_DIRECT.
pub(crate) const LO_FLAGS_DIRECT_IO: u32 = 16;

const LOOP_SET_FD: u32 = 0x4C00;
const LOOP_CLR_FD: u32 = 0x4C01;
const LOOP_SET_STATUS64: u32 = 0x4C04;
const LOOP_GET_STATUS64: u32 = 0x4C05;
const LOOP_SET_CAPACITY: u32 = 0x4C07;
const LOOP_SET_DIRECT_IO: u32 = 0x4C08;
const LOOP_CONFIGURE: u32 = 0x4C0A;
const LOOP_CTL_GET_FREE: u32 = 0x4C82;

/// `struct loop_info64`.
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct LoopInfo64 {
    lo_device: u64,
    lo_inode: u64,
    lo_rdevice: u64,
    lo_offset: u64,
    lo_sizelimit: u64,
    lo_number: u32,
    lo_encrypt_type: u32,
    lo_encrypt_key_size: u32,
    /// `LO_FLAGS_*`.
    pub(crate) lo_flags: u32,
    /// The backing file's name, NUL-terminated (informational: sysfs shows the real path).
    pub(crate) lo_file_name: [u8; LO_NAME_SIZE],
    lo_crypt_name: [u8; LO_NAME_SIZE],
    lo_encrypt_key: [u8; LO_KEY_SIZE],
    lo_init: [u64; 2],
}

/// `struct loop_config` (`LOOP_CONFIGURE`, Linux 5.8).
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct LoopConfig {
    /// The backing file's descriptor.
    pub(crate) fd: u32,
    /// Logical block size; 0 keeps the default (512).
    pub(crate) block_size: u32,
    /// Offset, size limit, flags and name.
    pub(crate) info: LoopInfo64,
    reserved: [u64; 8],
}

const _: () = assert!(size_of::<LoopInfo64>() == 232);
const _: () = assert!(size_of::<LoopConfig>() == 304);

impl LoopInfo64 {
    /// The backing file's device and inode number, as `stat` reports them (`st_dev`, `st_ino`).
    pub(crate) fn backing_id(&self) -> (u64, u64) {
        (self.lo_device, self.lo_inode)
    }

    /// All zero: no offset, no size limit, no flags, no name.
    pub(crate) fn zeroed() -> Self {
        LoopInfo64 {
            lo_device: 0,
            lo_inode: 0,
            lo_rdevice: 0,
            lo_offset: 0,
            lo_sizelimit: 0,
            lo_number: 0,
            lo_encrypt_type: 0,
            lo_encrypt_key_size: 0,
            lo_flags: 0,
            lo_file_name: [0; LO_NAME_SIZE],
            lo_crypt_name: [0; LO_NAME_SIZE],
            lo_encrypt_key: [0; LO_KEY_SIZE],
            lo_init: [0; 2],
        }
    }
}

impl LoopConfig {
    /// A configuration for backing file `fd` with `info`, default block size.
    pub(crate) fn new(fd: BorrowedFd<'_>, info: LoopInfo64) -> Self {
        LoopConfig {
            fd: fd.as_raw_fd().cast_unsigned(),
            block_size: 0,
            info,
            reserved: [0; 8],
        }
    }
}

/// An ioctl whose argument is an integer (or absent), never a pointer.
fn ioctl_int(fd: BorrowedFd<'_>, request: u32, arg: libc::c_ulong) -> io::Result<libc::c_int> {
    // SAFETY: every request passed here (LOOP_CTL_GET_FREE, LOOP_SET_FD, LOOP_CLR_FD,
    // LOOP_SET_CAPACITY, LOOP_SET_DIRECT_IO) takes an integer argument (a descriptor, a flag, or
    // nothing), so the kernel reads and writes no caller memory.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), request as _, arg) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(r)
}

/// `ioctl(loop-control, LOOP_CTL_GET_FREE)`: the number of a free loop device (made if needed).
pub(crate) fn loop_ctl_get_free(control: BorrowedFd<'_>) -> io::Result<u32> {
    let n = ioctl_int(control, LOOP_CTL_GET_FREE, 0)?;
    u32::try_from(n).map_err(|_| io::Error::other("loop device number out of range"))
}

/// `ioctl(loop, LOOP_CONFIGURE, &config)`: binds the backing file and sets status in one call.
pub(crate) fn loop_configure(dev: BorrowedFd<'_>, config: &LoopConfig) -> io::Result<()> {
    // SAFETY: `config` is a valid `struct loop_config` (repr(C), size checked above against the
    // kernel's 304 bytes) that outlives the call; LOOP_CONFIGURE only reads it.
    let r = unsafe {
        libc::ioctl(
            dev.as_raw_fd(),
            LOOP_CONFIGURE as _,
            std::ptr::from_ref(config),
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `ioctl(loop, LOOP_SET_FD, backing)` (before Linux 5.8: the first half of LOOP_CONFIGURE).
pub(crate) fn loop_set_fd(dev: BorrowedFd<'_>, backing: BorrowedFd<'_>) -> io::Result<()> {
    let fd = libc::c_ulong::from(backing.as_raw_fd().cast_unsigned());
    ioctl_int(dev, LOOP_SET_FD, fd).map(|_| ())
}

/// `ioctl(loop, LOOP_SET_STATUS64, &info)` (the second half).
pub(crate) fn loop_set_status64(dev: BorrowedFd<'_>, info: &LoopInfo64) -> io::Result<()> {
    // SAFETY: `info` is a valid `struct loop_info64` (repr(C), 232 bytes as in the kernel) that
    // outlives the call; LOOP_SET_STATUS64 only reads it.
    let r = unsafe {
        libc::ioctl(
            dev.as_raw_fd(),
            LOOP_SET_STATUS64 as _,
            std::ptr::from_ref(info),
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `ioctl(loop, LOOP_GET_STATUS64, &info)`: the device's status, with its backing file's device
/// and inode.
pub(crate) fn loop_get_status64(dev: BorrowedFd<'_>) -> io::Result<LoopInfo64> {
    let mut info = LoopInfo64::zeroed();
    // SAFETY: `info` is a valid, writable `struct loop_info64` (repr(C), 232 bytes as in the
    // kernel) that outlives the call; LOOP_GET_STATUS64 writes exactly that struct.
    let r = unsafe {
        libc::ioctl(
            dev.as_raw_fd(),
            LOOP_GET_STATUS64 as _,
            std::ptr::from_mut(&mut info),
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(info)
}

/// `ioctl(loop, LOOP_SET_DIRECT_IO, on)`.
pub(crate) fn loop_set_direct_io(dev: BorrowedFd<'_>, on: bool) -> io::Result<()> {
    ioctl_int(dev, LOOP_SET_DIRECT_IO, libc::c_ulong::from(on)).map(|_| ())
}

/// `ioctl(loop, LOOP_CLR_FD)`: unbinds the backing file (deferred to the last close while the
/// device is open elsewhere, as `losetup --detach`).
pub(crate) fn loop_clr_fd(dev: BorrowedFd<'_>) -> io::Result<()> {
    ioctl_int(dev, LOOP_CLR_FD, 0).map(|_| ())
}

/// `ioctl(loop, LOOP_SET_CAPACITY)`: re-reads the backing file's size.
pub(crate) fn loop_set_capacity(dev: BorrowedFd<'_>) -> io::Result<()> {
    ioctl_int(dev, LOOP_SET_CAPACITY, 0).map(|_| ())
}

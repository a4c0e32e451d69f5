//! The only module of this crate with `unsafe` code: raw system calls the `devicemapper` crate and
//! the standard library do not offer — the kernel key management calls (`add_key`, `keyctl`),
//! `mknod` for device nodes when no udev daemon creates them, and the device-mapper ioctl for
//! reading a table with `DM_SECURE_DATA` into a buffer we wipe (the `devicemapper` crate neither
//! passes that flag for table status nor wipes its buffers).
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

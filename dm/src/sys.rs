//! The only module of this crate with `unsafe` code: raw system calls the `devicemapper` crate and
//! the standard library do not offer — the kernel key management calls (`add_key`, `keyctl`) and
//! `mknod` for device nodes when no udev daemon creates them.
//!
//! Every function here is a thin, typed wrapper: arguments are checked or built from safe types
//! (`CStr`, slices) before the call, results are mapped to `io::Result`.
#![allow(unsafe_code)]

use std::ffi::CStr;
use std::io;

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

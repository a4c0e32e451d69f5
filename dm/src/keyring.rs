//! Volume keys in the kernel keyring, so that dm tables only ever name them.
//!
//! Life of a key:
//! 1. [`install`] adds it as a `logon` key (its payload can never be read back to user space) to
//!    the calling thread's keyring, restricts its permissions, and links it into the user keyring
//!    (`@u`), where it stays as long as the mapping lives — after this process has exited too.
//!    Activation installs a key only once it owns the mapping name (the kernel has created the
//!    device), so a key of the same description can only be a leftover, never another live
//!    activation's key.
//! 2. While the returned [`StagedKey`] lives, the key is also in the thread keyring, which is the
//!    first place the kernel's `request_key` looks when dm-crypt's table constructor runs in this
//!    thread. This works whatever session keyring the process has (in a container, the session
//!    keyring often does not link `@u`).
//! 3. A later table reload (resize) finds the key in `@u` by description ([`stage_existing`]) and
//!    links it into the reloading thread's keyring for the duration of the ioctl.
//! 4. [`remove_serial`] invalidates exactly the key a failed activation installed, or the key a
//!    removed mapping used (found before the removal, so a new mapping of the same name that
//!    appears meanwhile keeps its own key).

use std::ffi::CString;
use std::io;

use crate::error::{Error, Result};
use crate::sys::{self, KEY_SPEC_THREAD_KEYRING, KEY_SPEC_USER_KEYRING, KeySerial};

/// The description prefix of every key this crate creates (a `logon` description needs one).
pub const KEY_PREFIX: &str = "onmetal-csi";

/// The key type: `logon` keys cannot be read from user space, only used by the kernel.
pub(crate) const KEY_TYPE: &str = "logon";

// Permission bits (include/uapi/linux/keyctl.h: possessor << 24, owner user << 16).
const VIEW: u32 = 0x01;
const WRITE: u32 = 0x04;
const SEARCH: u32 = 0x08;
const LINK: u32 = 0x10;
const SETATTR: u32 = 0x20;
/// Possessor: view, update, search, link, set attributes. Owner (root for a CSI plugin): view,
/// search, link — what a later process needs to find the key in `@u` and hand it to dm-crypt.
/// Nobody can read a `logon` key's payload.
const KEY_PERM: u32 =
    ((VIEW | WRITE | SEARCH | LINK | SETATTR) << 24) | ((VIEW | SEARCH | LINK) << 16);

/// The description of the key of the mapping with DM UUID `dm_uuid`.
pub(crate) fn description(dm_uuid: &str) -> String {
    format!("{KEY_PREFIX}:{dm_uuid}")
}

/// Whether `description` names a key this crate created.
pub(crate) fn is_ours(description: &str) -> bool {
    description
        .strip_prefix(KEY_PREFIX)
        .is_some_and(|rest| rest.starts_with(':'))
}

fn cstring(s: &str) -> Result<CString> {
    CString::new(s).map_err(|_| Error::Keyring {
        op: "key description",
        source: io::Error::from(io::ErrorKind::InvalidInput),
    })
}

fn keyring_err(op: &'static str) -> impl FnOnce(io::Error) -> Error {
    move |source| Error::Keyring { op, source }
}

/// A volume key linked into the calling thread's keyring; unlinked from it on drop (the key
/// itself stays in the user keyring).
#[derive(Debug)]
pub(crate) struct StagedKey {
    serial: KeySerial,
}

impl StagedKey {
    /// The key's serial.
    pub(crate) fn serial(&self) -> KeySerial {
        self.serial
    }
}

impl Drop for StagedKey {
    fn drop(&mut self) {
        if let Err(e) = sys::unlink(self.serial, KEY_SPEC_THREAD_KEYRING) {
            tracing::debug!(error = %e, "unlinking the volume key from the thread keyring");
        }
    }
}

/// Adds `key` as the logon key `description` (see the module documentation). Only to be called
/// by the owner of the mapping the description names (after the kernel created the device).
///
/// On error nothing is left behind: a key added before the failing step is invalidated.
pub(crate) fn install(description: &str, key: &[u8]) -> Result<StagedKey> {
    let ktype = cstring(KEY_TYPE)?;
    let desc = cstring(description)?;
    // A leftover key of the same description (a crash between activation steps) goes first:
    // its permissions may not allow an update. It cannot be a live mapping's key: the caller owns
    // the mapping name, and the description contains it.
    remove(description)?;
    let serial = sys::add_key(&ktype, &desc, key, KEY_SPEC_THREAD_KEYRING)
        .map_err(keyring_err("add_key logon"))?;
    let staged = StagedKey { serial };
    let linked = sys::set_permissions(serial, KEY_PERM)
        .map_err(keyring_err("setperm"))
        .and_then(|()| {
            sys::link(serial, KEY_SPEC_USER_KEYRING).map_err(keyring_err("link into @u"))
        });
    if let Err(e) = linked {
        drop(staged);
        remove_serial(serial);
        return Err(e);
    }
    Ok(staged)
}

/// Invalidates the key `serial` (or, failing that, unlinks it from the user keyring). Errors are
/// logged, not returned: this runs in cleanup paths, and a key that is already gone is fine.
pub(crate) fn remove_serial(serial: KeySerial) {
    if let Err(e) = sys::invalidate(serial) {
        if e.raw_os_error() == Some(libc::ENOKEY) {
            return;
        }
        tracing::debug!(error = %e, "invalidating the key failed; unlinking it instead");
        if let Err(e) = sys::unlink(serial, KEY_SPEC_USER_KEYRING) {
            tracing::warn!(error = %e, "cannot drop the volume key from the keyring");
        }
    }
}

/// Finds the key `description` in the user keyring and links it into this thread's keyring.
/// `None` when there is no such key.
pub(crate) fn stage_existing(description: &str) -> Result<Option<StagedKey>> {
    let Some(serial) = find(description)? else {
        return Ok(None);
    };
    sys::link(serial, KEY_SPEC_THREAD_KEYRING).map_err(keyring_err("link into thread keyring"))?;
    Ok(Some(StagedKey { serial }))
}

/// Invalidates the key `description` in the user keyring; false when there was none.
pub(crate) fn remove(description: &str) -> Result<bool> {
    let Some(serial) = find(description)? else {
        return Ok(false);
    };
    if let Err(e) = sys::invalidate(serial) {
        tracing::debug!(error = %e, "invalidating the key failed; unlinking it instead");
        sys::unlink(serial, KEY_SPEC_USER_KEYRING).map_err(keyring_err("unlink from @u"))?;
    }
    Ok(true)
}

/// The serial of the logon key `description` reachable from the user keyring.
pub(crate) fn find(description: &str) -> Result<Option<KeySerial>> {
    let ktype = cstring(KEY_TYPE)?;
    let desc = cstring(description)?;
    match sys::search(KEY_SPEC_USER_KEYRING, &ktype, &desc) {
        Ok(serial) => Ok(Some(serial)),
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::ENOKEY | libc::EKEYREVOKED | libc::EKEYEXPIRED)
            ) =>
        {
            Ok(None)
        }
        Err(e) => Err(Error::Keyring {
            op: "search @u",
            source: e,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptions_are_prefixed() {
        let d = description("CRYPT-LUKS2-0123-vol");
        assert_eq!(d, "onmetal-csi:CRYPT-LUKS2-0123-vol");
        assert!(is_ours(&d));
        assert!(!is_ours("cryptsetup:0123-d0"));
        assert!(!is_ours("onmetal-csiX:a"));
    }

    #[test]
    fn permissions_never_include_read() {
        const READ: u32 = 0x02;
        for shift in [0, 8, 16, 24] {
            assert_eq!(KEY_PERM & (READ << shift), 0);
        }
        // Nothing for group and other.
        assert_eq!(KEY_PERM & 0xffff, 0);
    }
}

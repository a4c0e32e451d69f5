//! Reading a mapping's active table (`DM_TABLE_STATUS` with `DM_STATUS_TABLE`) without ever
//! keeping a key.
//!
//! A crypt mapping made by another tool (cryptsetup with `--disable-keyring`, or an older
//! cryptsetup) has its key inline in the table, as hex. The kernel prints it in the table
//! status. So we issue the ioctl ourselves: with `DM_SECURE_DATA` (the kernel wipes its own copy
//! of the answer), into a buffer that is wiped when dropped (also the smaller ones given up when
//! the kernel asks for more room), and we copy a crypt target's parameters out with the key word
//! replaced by [`REDACTED_KEY`], unless it is a keyring reference (`:<size>:<type>:<desc>`,
//! which names a key but is none). Parameters of other target types are not copied at all.

use std::ffi::CStr;
use std::os::fd::BorrowedFd;

use zeroize::Zeroizing;

use crate::error::{Error, Result};
use crate::sys::{self, DM_IOCTL_SIZE, DM_IOCTL_SIZE_U32};
use crate::types::{DevNum, DmName};

/// What stands in the copied parameters where the table had an inline key.
pub(crate) const REDACTED_KEY: &str = "-";

// include/uapi/linux/dm-ioctl.h
const DM_TABLE_STATUS_CMD: u8 = 12;
const DM_READONLY_FLAG: u32 = 1 << 0;
const DM_STATUS_TABLE_FLAG: u32 = 1 << 4;
const DM_BUFFER_FULL_FLAG: u32 = 1 << 8;
const DM_NOFLUSH_FLAG: u32 = 1 << 11;
const DM_SECURE_DATA_FLAG: u32 = 1 << 15;
/// `struct dm_target_spec`: sector_start u64, length u64, status i32, next u32, type [16].
const TARGET_SPEC_SIZE: usize = 40;
const NAME_OFFSET: usize = 48;
const NAME_LEN: usize = 128;
const UUID_OFFSET: usize = NAME_OFFSET + NAME_LEN;
const UUID_LEN: usize = 129;
/// First answer buffer; doubled while the kernel reports it full, up to the maximum.
const BUFFER_START: usize = 16 * 1024;
const BUFFER_MAX: usize = 4 * 1024 * 1024;

/// One target of the active table (its length is not needed: the size comes from sysfs).
#[derive(Debug)]
pub(crate) struct Target {
    pub(crate) start: u64,
    pub(crate) kind: String,
    /// The parameters, for `crypt` targets only, with an inline key redacted.
    pub(crate) crypt_params: Option<String>,
}

/// A mapping's state and active table.
#[derive(Debug)]
pub(crate) struct ActiveTable {
    pub(crate) device: DevNum,
    pub(crate) uuid: Option<String>,
    pub(crate) read_only: bool,
    pub(crate) open_count: u32,
    pub(crate) targets: Vec<Target>,
}

fn unexpected(what: &'static str) -> Error {
    Error::Unexpected(what)
}

fn u32_at(buf: &[u8], at: usize) -> Result<u32> {
    buf.get(at..at + 4)
        .and_then(|b| b.try_into().ok())
        .map(u32::from_ne_bytes)
        .ok_or(unexpected("short device-mapper answer"))
}

fn u64_at(buf: &[u8], at: usize) -> Result<u64> {
    buf.get(at..at + 8)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_ne_bytes)
        .ok_or(unexpected("short device-mapper answer"))
}

/// The text up to the first NUL of `bytes` (all of it if there is none).
fn c_text(bytes: &[u8]) -> Result<&str> {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    std::str::from_utf8(&bytes[..end]).map_err(|_| unexpected("device-mapper text is not UTF-8"))
}

/// The active table of mapping `name`, or `None` when there is no such mapping.
pub(crate) fn read(control: BorrowedFd<'_>, name: &DmName) -> Result<Option<ActiveTable>> {
    let cname = std::ffi::CString::new(name.as_str())
        .map_err(|_| unexpected("device-mapper name contains NUL"))?;
    let mut size = BUFFER_START;
    loop {
        let mut buf = Zeroizing::new(vec![0u8; size]);
        prepare(&mut buf, &cname)?;
        match sys::dm_ioctl(control, DM_TABLE_STATUS_CMD, &mut buf) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENXIO) => return Ok(None),
            Err(source) => {
                return Err(Error::TableStatus {
                    name: name.to_string(),
                    source,
                });
            }
        }
        let flags = u32_at(&buf, 28)?;
        if flags & DM_BUFFER_FULL_FLAG != 0 {
            // `buf` is wiped as it goes; ask again with more room.
            size = size
                .checked_mul(2)
                .filter(|&s| s <= BUFFER_MAX)
                .ok_or(unexpected("device-mapper table too large"))?;
            continue;
        }
        return parse(&buf).map(Some);
    }
}

/// Writes the `struct dm_ioctl` request header into `buf`.
fn prepare(buf: &mut [u8], name: &CStr) -> Result<()> {
    let name = name.to_bytes();
    if name.len() >= NAME_LEN || buf.len() < DM_IOCTL_SIZE {
        return Err(unexpected("device-mapper request does not fit"));
    }
    buf[..DM_IOCTL_SIZE].fill(0);
    // Interface version 4.0.0: every kernel with this ioctl accepts it.
    buf[0..4].copy_from_slice(&4u32.to_ne_bytes());
    // data_start: the answer follows the header.
    buf[16..20].copy_from_slice(&DM_IOCTL_SIZE_U32.to_ne_bytes());
    let flags = DM_STATUS_TABLE_FLAG | DM_SECURE_DATA_FLAG | DM_NOFLUSH_FLAG;
    buf[28..32].copy_from_slice(&flags.to_ne_bytes());
    buf[NAME_OFFSET..NAME_OFFSET + name.len()].copy_from_slice(name);
    Ok(())
}

/// Parses a `DM_TABLE_STATUS` answer (header plus target specs). Copies only what is safe to
/// keep (see the module documentation).
fn parse(buf: &[u8]) -> Result<ActiveTable> {
    let data_size = u32_at(buf, 12)? as usize;
    let data_start = u32_at(buf, 16)? as usize;
    let target_count = u32_at(buf, 20)?;
    let open_count = u32_at(buf, 24)?;
    let flags = u32_at(buf, 28)?;
    let dev = u64_at(buf, 40)?;
    let end = data_size.min(buf.len());
    let data = buf
        .get(data_start..end)
        .ok_or(unexpected("device-mapper answer: bad data offset"))?;
    let uuid = c_text(&buf[UUID_OFFSET..UUID_OFFSET + UUID_LEN])?;

    let mut targets = Vec::new();
    let mut at = 0usize;
    for i in 0..target_count {
        let spec = data
            .get(at..)
            .filter(|s| s.len() >= TARGET_SPEC_SIZE)
            .ok_or(unexpected("device-mapper answer: truncated target"))?;
        let start = u64_at(spec, 0)?;
        let next = u32_at(spec, 20)? as usize;
        let kind = c_text(&spec[24..TARGET_SPEC_SIZE])?.to_owned();
        // The parameters run to their NUL, and never past the next target.
        let params_end = if next > at {
            (next - at).min(spec.len())
        } else {
            spec.len()
        };
        let params = c_text(&spec[TARGET_SPEC_SIZE..params_end])?;
        let crypt_params = (kind == "crypt").then(|| redact_key(params));
        targets.push(Target {
            start,
            kind,
            crypt_params,
        });
        if i + 1 < target_count {
            if next <= at {
                return Err(unexpected("device-mapper answer: bad next target offset"));
            }
            at = next;
        }
    }
    Ok(ActiveTable {
        device: DevNum {
            major: libc::major(dev),
            minor: libc::minor(dev),
        },
        uuid: (!uuid.is_empty()).then(|| uuid.to_owned()),
        read_only: flags & DM_READONLY_FLAG != 0,
        open_count,
        targets,
    })
}

/// A copy of crypt target parameters with the key word (the second) replaced by
/// [`REDACTED_KEY`] unless it is a keyring reference. The key itself is never copied.
pub(crate) fn redact_key(params: &str) -> String {
    let mut out = String::with_capacity(params.len());
    for (i, word) in params.split_ascii_whitespace().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        if i == 1 && !word.starts_with(':') {
            out.push_str(REDACTED_KEY);
        } else {
            out.push_str(word);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX_KEY: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

    /// A DM_TABLE_STATUS answer as the kernel lays it out, with one target.
    fn answer(kind: &str, params: &str) -> Vec<u8> {
        let mut buf = vec![0u8; 1024];
        prepare(&mut buf, c"vol").expect("fits");
        let data_size = u32::try_from(buf.len()).expect("small");
        buf[12..16].copy_from_slice(&data_size.to_ne_bytes());
        buf[20..24].copy_from_slice(&1u32.to_ne_bytes());
        buf[24..28].copy_from_slice(&2u32.to_ne_bytes());
        buf[28..32].copy_from_slice(&(DM_READONLY_FLAG | DM_STATUS_TABLE_FLAG).to_ne_bytes());
        let dev = (253u64 << 8) | 7;
        buf[40..48].copy_from_slice(&dev.to_ne_bytes());
        let uuid = b"CRYPT-LUKS2-abc-vol";
        buf[UUID_OFFSET..UUID_OFFSET + uuid.len()].copy_from_slice(uuid);
        let t = DM_IOCTL_SIZE;
        buf[t..t + 8].copy_from_slice(&0u64.to_ne_bytes());
        buf[t + 8..t + 16].copy_from_slice(&4096u64.to_ne_bytes());
        let next = u32::try_from(TARGET_SPEC_SIZE + params.len() + 1).expect("small");
        buf[t + 20..t + 24].copy_from_slice(&next.to_ne_bytes());
        buf[t + 24..t + 24 + kind.len()].copy_from_slice(kind.as_bytes());
        let p = t + TARGET_SPEC_SIZE;
        buf[p..p + params.len()].copy_from_slice(params.as_bytes());
        buf
    }

    #[test]
    fn requests_secure_data_and_the_table() {
        let mut buf = vec![0xffu8; DM_IOCTL_SIZE];
        prepare(&mut buf, c"vol").expect("fits");
        let flags = u32_at(&buf, 28).expect("flags");
        assert_ne!(flags & DM_SECURE_DATA_FLAG, 0);
        assert_ne!(flags & DM_STATUS_TABLE_FLAG, 0);
        assert_eq!(&buf[NAME_OFFSET..NAME_OFFSET + 4], b"vol\0");
        assert_eq!(
            u32_at(&buf, 16).expect("data_start") as usize,
            DM_IOCTL_SIZE
        );
    }

    #[test]
    fn an_inline_key_is_never_copied() {
        let params = format!("aes-xts-plain64 {HEX_KEY} 0 7:3 32768 1 sector_size:4096");
        let t = parse(&answer("crypt", &params)).expect("parse");
        assert_eq!(
            t.device,
            DevNum {
                major: 253,
                minor: 7
            }
        );
        assert_eq!(t.uuid.as_deref(), Some("CRYPT-LUKS2-abc-vol"));
        assert!(t.read_only);
        assert_eq!(t.open_count, 2);
        assert_eq!(t.targets.len(), 1);
        let p = t.targets[0].crypt_params.as_deref().expect("crypt");
        assert_eq!(p, "aes-xts-plain64 - 0 7:3 32768 1 sector_size:4096");
        assert!(!format!("{t:?}").contains(&HEX_KEY[..16]));
    }

    #[test]
    fn a_keyring_reference_is_kept() {
        let params = "aes-xts-plain64 :64:logon:onmetal-csi:CRYPT-LUKS2-abc-vol 0 7:3 32768";
        let t = parse(&answer("crypt", params)).expect("parse");
        assert_eq!(t.targets[0].crypt_params.as_deref(), Some(params));
    }

    #[test]
    fn other_targets_keep_no_parameters() {
        let t = parse(&answer("linear", "7:3 0")).expect("parse");
        assert_eq!(t.targets[0].kind, "linear");
        assert!(t.targets[0].crypt_params.is_none());
    }

    #[test]
    fn truncated_answers_are_errors() {
        let mut buf = answer("crypt", "aes-xts-plain64 - 0 7:3 0");
        buf[20..24].copy_from_slice(&40u32.to_ne_bytes());
        assert!(parse(&buf).is_err());
        let mut buf = answer("crypt", "aes-xts-plain64 - 0 7:3 0");
        buf[16..20].copy_from_slice(&4096u32.to_ne_bytes());
        assert!(parse(&buf).is_err());
    }
}

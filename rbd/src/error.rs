//! The crate's one error type: a kind the driver maps to a gRPC code, the operation that failed
//! (with pool and image names, never a key), and the errno Ceph or the kernel returned.

use std::fmt;

/// What kind of failure, for the driver's one error mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The pool, image, metadata key or mapping does not exist (`ENOENT`).
    NotFound,
    /// The image already exists (`EEXIST`).
    Exists,
    /// The image is in use: watched, locked or mapped elsewhere, open on this node, or the lock
    /// is held exclusively by another client (`EBUSY`, `ENOTEMPTY`, `EROFS`).
    Busy,
    /// Ceph could not be reached or did not answer in time (`ETIMEDOUT`, `ECONNREFUSED`,
    /// `ESHUTDOWN`, ...): retryable.
    Unavailable,
    /// The pool or cluster is full, or over its quota (`ENOSPC`, `EDQUOT`).
    NoSpace,
    /// The cephx user is not allowed to do this, or its key is wrong (`EACCES`, `EPERM`).
    PermissionDenied,
    /// A bad argument: a name, a size, a configuration value (`EINVAL`, `ERANGE`, ...).
    InvalidArgument,
    /// Anything else.
    Other,
}

impl ErrorKind {
    /// The kind of an errno from librados, librbd or the kernel's RBD interface.
    pub fn from_errno(errno: i32) -> Self {
        match errno {
            libc::ENOENT | libc::ENXIO | libc::ENODEV => Self::NotFound,
            libc::EEXIST => Self::Exists,
            libc::EBUSY | libc::ENOTEMPTY | libc::EROFS => Self::Busy,
            libc::ETIMEDOUT
            | libc::ECONNREFUSED
            | libc::ESHUTDOWN
            | libc::ENOTCONN
            | libc::ECONNRESET
            | libc::EHOSTUNREACH
            | libc::ENETUNREACH
            | libc::EAGAIN
            | libc::ECANCELED => Self::Unavailable,
            libc::ENOSPC | libc::EDQUOT => Self::NoSpace,
            libc::EACCES | libc::EPERM | libc::ENOKEY | libc::EKEYREJECTED => {
                Self::PermissionDenied
            }
            libc::EINVAL | libc::ERANGE | libc::ENAMETOOLONG | libc::EDOM | libc::EFBIG => {
                Self::InvalidArgument
            }
            _ => Self::Other,
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::NotFound => "not found",
            Self::Exists => "already exists",
            Self::Busy => "in use",
            Self::Unavailable => "Ceph unavailable",
            Self::NoSpace => "no space",
            Self::PermissionDenied => "permission denied",
            Self::InvalidArgument => "invalid argument",
            Self::Other => "failed",
        })
    }
}

/// An RBD operation that failed.
#[derive(Debug, thiserror::Error)]
#[error("{op}: {kind}{}{}", errno_text(.errno), detail_text(.detail))]
pub struct Error {
    kind: ErrorKind,
    op: String,
    errno: Option<i32>,
    detail: Option<String>,
    #[source]
    source: Option<std::io::Error>,
}

fn errno_text(errno: &Option<i32>) -> String {
    match *errno {
        Some(e) => format!(" ({})", std::io::Error::from_raw_os_error(e)),
        None => String::new(),
    }
}

fn detail_text(detail: &Option<String>) -> String {
    match detail {
        Some(d) if !d.is_empty() => format!(": {d}"),
        _ => String::new(),
    }
}

impl Error {
    /// An error from a (positive) errno, for `op` (such as `"rbd_create rbd/vol-1"`).
    pub(crate) fn errno(op: impl Into<String>, errno: i32) -> Self {
        Self {
            kind: ErrorKind::from_errno(errno),
            op: op.into(),
            errno: Some(errno),
            detail: None,
            source: None,
        }
    }

    /// An error of `kind` with no errno.
    pub(crate) fn new(kind: ErrorKind, op: impl Into<String>, detail: impl Into<String>) -> Self {
        Self {
            kind,
            op: op.into(),
            errno: None,
            detail: Some(detail.into()),
            source: None,
        }
    }

    /// An error from a system call (a sysfs write or read): kind and errno from its raw OS error.
    pub(crate) fn io(op: impl Into<String>, source: std::io::Error) -> Self {
        let errno = source.raw_os_error();
        Self {
            kind: errno.map_or(ErrorKind::Other, ErrorKind::from_errno),
            op: op.into(),
            errno,
            detail: None,
            source: Some(source),
        }
    }

    /// Adds a human detail (a monitor's status string, a hint).
    pub(crate) fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    /// Replaces the operation (a caller that knows more, such as the file it read).
    pub(crate) fn with_op(mut self, op: impl Into<String>) -> Self {
        self.op = op.into();
        self
    }

    /// The kind.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The operation that failed, with the pool and image it named.
    pub fn op(&self) -> &str {
        &self.op
    }

    /// The errno, when the failure came with one.
    pub fn raw_errno(&self) -> Option<i32> {
        self.errno
    }

    /// Whether retrying later can succeed ([`ErrorKind::Unavailable`]).
    pub fn is_retryable(&self) -> bool {
        self.kind == ErrorKind::Unavailable
    }
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errnos_map_to_the_kinds_the_driver_needs() {
        assert_eq!(ErrorKind::from_errno(libc::ENOENT), ErrorKind::NotFound);
        assert_eq!(ErrorKind::from_errno(libc::EEXIST), ErrorKind::Exists);
        assert_eq!(ErrorKind::from_errno(libc::EBUSY), ErrorKind::Busy);
        assert_eq!(ErrorKind::from_errno(libc::EROFS), ErrorKind::Busy);
        assert_eq!(
            ErrorKind::from_errno(libc::ETIMEDOUT),
            ErrorKind::Unavailable
        );
        assert_eq!(
            ErrorKind::from_errno(libc::ECONNREFUSED),
            ErrorKind::Unavailable
        );
        assert_eq!(
            ErrorKind::from_errno(libc::ESHUTDOWN),
            ErrorKind::Unavailable
        );
        assert_eq!(ErrorKind::from_errno(libc::ENOSPC), ErrorKind::NoSpace);
        assert_eq!(ErrorKind::from_errno(libc::EDQUOT), ErrorKind::NoSpace);
        assert_eq!(
            ErrorKind::from_errno(libc::EINVAL),
            ErrorKind::InvalidArgument
        );
        assert_eq!(
            ErrorKind::from_errno(libc::EACCES),
            ErrorKind::PermissionDenied
        );
        assert_eq!(ErrorKind::from_errno(libc::EIO), ErrorKind::Other);
    }

    #[test]
    fn message_names_op_kind_and_errno() {
        let e = Error::errno("rbd_create rbd/vol-1", libc::EEXIST);
        let s = e.to_string();
        assert!(
            s.starts_with("rbd_create rbd/vol-1: already exists ("),
            "{s}"
        );
        assert_eq!(e.raw_errno(), Some(libc::EEXIST));
        assert!(!e.is_retryable());
        let e = Error::errno("connect", libc::ETIMEDOUT).with_detail("mon_host 127.0.0.1:1");
        assert!(e.is_retryable());
        assert!(e.to_string().ends_with(": mon_host 127.0.0.1:1"), "{e}");
    }
}

//! The crate's one error type.

use std::io;

/// What went wrong, coarsely: callers (the `luks2` command, the csi layer) map this to exit codes
/// and status codes in exactly one place each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// A parameter given by the caller is invalid (cryptsetup exit code 1).
    InvalidArgument,
    /// No keyslot opened with the passphrase, or permission denied (exit code 2).
    BadPassphrase,
    /// A KDF or buffer needs more memory than allowed or available (exit code 3).
    OutOfMemory,
    /// The device is not a valid LUKS2 device, or its header is damaged (cryptsetup's `-EINVAL`
    /// "Device ... is not a valid LUKS device.": exit code 1).
    WrongDevice,
    /// The device is busy or already in use (exit code 5).
    Busy,
    /// The header is valid but uses something this implementation does not support.
    Unsupported,
    /// An I/O error while reading or writing the device.
    Io,
}

impl ErrorKind {
    /// The exit code cryptsetup's command line uses for this kind of failure.
    pub fn exit_code(self) -> i32 {
        match self {
            ErrorKind::InvalidArgument | ErrorKind::Unsupported | ErrorKind::WrongDevice => 1,
            ErrorKind::BadPassphrase => 2,
            ErrorKind::OutOfMemory => 3,
            ErrorKind::Io => 4,
            ErrorKind::Busy => 5,
        }
    }
}

/// An error from the LUKS2 library. Messages never contain key material.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Reading or writing the device failed.
    #[error("I/O error while {context}")]
    Io {
        /// What was being done.
        context: &'static str,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The device holds no LUKS2 header (no magic, wrong version).
    #[error("device is not a valid LUKS device")]
    NotLuks2,
    /// One header copy needs recovery and the device also carries another signature (a
    /// filesystem, an LVM2 label...): cryptsetup refuses every operation then, and so do we; only
    /// an explicit repair proceeds.
    #[error("Device contains ambiguous signatures, cannot auto-recover LUKS2.")]
    AmbiguousSignatures {
        /// The foreign signature found (for diagnostics).
        signature: &'static str,
    },
    /// A header field failed validation; `field` names it.
    #[error("invalid LUKS2 header: {field}: {reason}")]
    InvalidHeader {
        /// The field (or JSON path) that is wrong.
        field: &'static str,
        /// Why it is wrong.
        reason: String,
    },
    /// A header checksum does not match.
    #[error("LUKS2 header checksum mismatch ({copy} copy)")]
    Checksum {
        /// "primary" or "secondary".
        copy: &'static str,
    },
    /// The JSON metadata is not valid JSON or not of the expected shape.
    #[error("invalid LUKS2 JSON metadata: {0}")]
    Json(String),
    /// A caller-supplied parameter is invalid.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// No keyslot could be opened with the given passphrase.
    #[error("no key available with this passphrase")]
    BadPassphrase,
    /// A KDF's memory cost exceeds the limit or what can be allocated.
    #[error("out of memory: {0}")]
    OutOfMemory(String),
    /// Something valid but unsupported (a cipher, KDF, hash, reencryption keyslot...).
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// The header has requirements we do not know: it may be read but never written or activated.
    #[error("header has unknown mandatory requirements {0:?}: refusing to modify or activate it")]
    ReadOnlyRequirements(Vec<String>),
    /// The device is locked by another writer, or its on-disk header changed under us.
    #[error("device busy: {0}")]
    Busy(String),
    /// A keyslot, token or digest that was asked for does not exist, or a slot is already taken.
    #[error("{0}")]
    Slot(String),
}

impl Error {
    /// The coarse kind of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Io { .. } => ErrorKind::Io,
            Error::NotLuks2
            | Error::InvalidHeader { .. }
            | Error::Checksum { .. }
            | Error::Json(_)
            | Error::AmbiguousSignatures { .. } => ErrorKind::WrongDevice,
            Error::InvalidArgument(_) | Error::Slot(_) => ErrorKind::InvalidArgument,
            Error::BadPassphrase => ErrorKind::BadPassphrase,
            Error::OutOfMemory(_) => ErrorKind::OutOfMemory,
            Error::Unsupported(_) | Error::ReadOnlyRequirements(_) => ErrorKind::Unsupported,
            Error::Busy(_) => ErrorKind::Busy,
        }
    }

    /// Helper for `InvalidHeader`.
    pub fn header(field: &'static str, reason: impl Into<String>) -> Self {
        Error::InvalidHeader {
            field,
            reason: reason.into(),
        }
    }

    /// Helper for `Io`.
    pub fn io(context: &'static str, source: io::Error) -> Self {
        Error::Io { context, source }
    }
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

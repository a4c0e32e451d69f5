//! The driver's one error type and the one place where errors become gRPC statuses
//! ([`Error::to_status`]). Every lower crate's error converts into an [`Error`] with the
//! [`Kind`] that decides the code; messages never contain a key, a token or a passphrase.

use std::fmt;

/// What went wrong, as the CSI caller needs to know it. Each kind is exactly one gRPC code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Kind {
    /// A required field is missing or a parameter is malformed (`INVALID_ARGUMENT`).
    InvalidArgument,
    /// The volume does not exist (`NOT_FOUND`).
    NotFound,
    /// A volume of that name exists with incompatible capacity or parameters (`ALREADY_EXISTS`).
    AlreadyExists,
    /// The volume is not in a state the call can work on: a device that holds data, a record
    /// that does not match the volume, an unknown KMS key (`FAILED_PRECONDITION`).
    FailedPrecondition,
    /// A size outside what the driver or the request allows (`OUT_OF_RANGE`).
    OutOfRange,
    /// A dependency is down (KMS, key store, device); retry later (`UNAVAILABLE`).
    Unavailable,
    /// The KMS refused the credentials (`PERMISSION_DENIED`).
    PermissionDenied,
    /// The wrapped key or the header was tampered with or belongs to another volume
    /// (`DATA_LOSS`).
    DataLoss,
    /// Another operation on the same volume is running, or a store precondition failed
    /// (`ABORTED`: the CO retries).
    Aborted,
    /// Not enough room in the backend (`RESOURCE_EXHAUSTED`).
    ResourceExhausted,
    /// Anything else: a bug or an unexpected system failure (`INTERNAL`).
    Internal,
}

impl Kind {
    /// The gRPC code of this kind.
    pub fn code(self) -> tonic::Code {
        match self {
            Kind::InvalidArgument => tonic::Code::InvalidArgument,
            Kind::NotFound => tonic::Code::NotFound,
            Kind::AlreadyExists => tonic::Code::AlreadyExists,
            Kind::FailedPrecondition => tonic::Code::FailedPrecondition,
            Kind::OutOfRange => tonic::Code::OutOfRange,
            Kind::Unavailable => tonic::Code::Unavailable,
            Kind::PermissionDenied => tonic::Code::PermissionDenied,
            Kind::DataLoss => tonic::Code::DataLoss,
            Kind::Aborted => tonic::Code::Aborted,
            Kind::ResourceExhausted => tonic::Code::ResourceExhausted,
            Kind::Internal => tonic::Code::Internal,
        }
    }

    /// Every kind, in declaration order.
    pub const ALL: [Kind; 11] = [
        Kind::InvalidArgument,
        Kind::NotFound,
        Kind::AlreadyExists,
        Kind::FailedPrecondition,
        Kind::OutOfRange,
        Kind::Unavailable,
        Kind::PermissionDenied,
        Kind::DataLoss,
        Kind::Aborted,
        Kind::ResourceExhausted,
        Kind::Internal,
    ];

    /// The kind a gRPC code stands for (the client side of [`Kind::code`]); codes the driver
    /// never sends are [`Kind::Internal`].
    pub fn from_code(code: tonic::Code) -> Kind {
        Kind::ALL
            .into_iter()
            .find(|k| k.code() == code)
            .unwrap_or(Kind::Internal)
    }
}

/// An error of the driver: a [`Kind`], a message for the operator, and an optional source.
#[derive(Debug, thiserror::Error)]
pub struct Error {
    kind: Kind,
    message: String,
    #[source]
    source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// The driver's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A new error.
    pub fn new(kind: Kind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: message.into(),
            source: None,
        }
    }

    /// Attaches the underlying cause.
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Box::new(source));
        self
    }

    /// The kind (and so the gRPC code).
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// The message without the source chain.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Prefixes the message with what the driver was doing.
    pub fn context(mut self, what: impl fmt::Display) -> Self {
        self.message = format!("{what}: {}", self.message);
        self
    }

    /// The message followed by every source, `: `-separated.
    pub fn display_chain(&self) -> String {
        let mut out = self.message.clone();
        let mut cur = self.source.as_deref().map(|s| s as &dyn std::error::Error);
        while let Some(e) = cur {
            let text = e.to_string();
            if !out.contains(&text) {
                out.push_str(": ");
                out.push_str(&text);
            }
            cur = e.source();
        }
        out
    }

    /// The gRPC status for this error: the one mapping from the driver's errors to codes.
    pub fn to_status(&self) -> tonic::Status {
        tonic::Status::new(self.kind.code(), self.display_chain())
    }

    /// Shorthand constructors.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(Kind::InvalidArgument, message)
    }
    /// `NOT_FOUND`.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(Kind::NotFound, message)
    }
    /// `FAILED_PRECONDITION`.
    pub fn precondition(message: impl Into<String>) -> Self {
        Self::new(Kind::FailedPrecondition, message)
    }
    /// `INTERNAL`.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(Kind::Internal, message)
    }
    /// `UNAVAILABLE`.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(Kind::Unavailable, message)
    }
    /// An I/O failure while doing `what`: `INTERNAL`, whatever the errno. CSI's `NOT_FOUND`
    /// means "no such volume", which a missing file or program (mkfs.xfs, losetup) is not: a
    /// caller for which a missing path means exactly that says so with [`Error::not_found`].
    pub fn io(what: impl fmt::Display, e: std::io::Error) -> Self {
        Self::new(Kind::Internal, format!("{what}: {e}"))
    }
}

impl From<Error> for tonic::Status {
    fn from(e: Error) -> Self {
        e.to_status()
    }
}

impl From<kms::Error> for Error {
    fn from(e: kms::Error) -> Self {
        use kms::ErrorKind as K;
        let kind = match e.kind() {
            K::Unavailable => Kind::Unavailable,
            K::Denied => Kind::PermissionDenied,
            // An unknown key encryption key is a configuration state the CO cannot fix by
            // retrying the same call.
            K::NotFound => Kind::FailedPrecondition,
            // A record moved from another volume or altered: never a format, never a retry loop.
            K::Integrity => Kind::FailedPrecondition,
            K::InvalidConfig => Kind::InvalidArgument,
            _ => Kind::Internal,
        };
        Error::new(kind, format!("KMS: {}", e.display_chain()))
    }
}

impl From<luks2::Error> for Error {
    fn from(e: luks2::Error) -> Self {
        use luks2::ErrorKind as K;
        let kind = match e.kind() {
            // Another writer holds the device lock, or the header changed under us: retry.
            K::Busy => Kind::Aborted,
            // No usable LUKS2 header, or one using what we do not support (or may not write):
            // the device's state, not a retry, decides.
            K::WrongDevice | K::Unsupported => Kind::FailedPrecondition,
            K::OutOfMemory => Kind::ResourceExhausted,
            _ => Kind::Internal,
        };
        Error::new(kind, format!("LUKS2: {e}")).with_source(e)
    }
}

impl From<dm::Error> for Error {
    fn from(e: dm::Error) -> Self {
        let kind = match &e {
            dm::Error::Unavailable(_) => Kind::Unavailable,
            dm::Error::Busy(_) | dm::Error::AlreadyExists(_) => Kind::Aborted,
            dm::Error::DeviceInUse(_)
            | dm::Error::Refused { .. }
            | dm::Error::WouldShrink { .. } => Kind::FailedPrecondition,
            _ => Kind::Internal,
        };
        Error::new(kind, format!("device-mapper: {e}"))
    }
}

/// The one mapping from Ceph's failures to the driver's kinds: an image in use (watched,
/// locked, mapped, open) is FAILED_PRECONDITION, an unreachable Ceph UNAVAILABLE, a full pool
/// RESOURCE_EXHAUSTED.
fn rbd_kind(k: rbd::ErrorKind) -> Kind {
    use rbd::ErrorKind;
    match k {
        ErrorKind::NotFound => Kind::NotFound,
        ErrorKind::Exists => Kind::AlreadyExists,
        ErrorKind::Busy => Kind::FailedPrecondition,
        ErrorKind::Unavailable => Kind::Unavailable,
        ErrorKind::NoSpace => Kind::ResourceExhausted,
        ErrorKind::PermissionDenied => Kind::PermissionDenied,
        ErrorKind::InvalidArgument => Kind::InvalidArgument,
        _ => Kind::Internal,
    }
}

impl From<rbd::Error> for Error {
    fn from(e: rbd::Error) -> Self {
        Error::new(rbd_kind(e.kind()), format!("Ceph RBD: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_round_trips_through_its_grpc_code() {
        for k in Kind::ALL {
            assert_eq!(Kind::from_code(k.code()), k, "{k:?}");
        }
        let codes: std::collections::HashSet<_> = Kind::ALL.iter().map(|k| k.code()).collect();
        assert_eq!(codes.len(), Kind::ALL.len(), "one code per kind");
        assert_eq!(Kind::from_code(tonic::Code::Unknown), Kind::Internal);
        assert_eq!(Kind::from_code(tonic::Code::Cancelled), Kind::Internal);
    }

    #[test]
    fn kms_errors_map_to_the_documented_codes() {
        let code = |k| Error::from(kms::Error::new(k, "x")).to_status().code();
        assert_eq!(code(kms::ErrorKind::Unavailable), tonic::Code::Unavailable);
        assert_eq!(code(kms::ErrorKind::Denied), tonic::Code::PermissionDenied);
        assert_eq!(
            code(kms::ErrorKind::NotFound),
            tonic::Code::FailedPrecondition
        );
        assert_eq!(
            code(kms::ErrorKind::Integrity),
            tonic::Code::FailedPrecondition
        );
        assert_eq!(
            code(kms::ErrorKind::InvalidConfig),
            tonic::Code::InvalidArgument
        );
    }

    /// NodeExpand never shrinks a mapping: the refusal is FAILED_PRECONDITION with the sizes.
    #[test]
    fn a_mapping_that_would_shrink_is_failed_precondition() {
        let e = Error::from(dm::Error::WouldShrink {
            name: "onmetal-csi-v".into(),
            current: 2048,
            device: 1024,
        });
        assert_eq!(e.to_status().code(), tonic::Code::FailedPrecondition);
        assert!(
            e.message().contains("2048") && e.message().contains("1024"),
            "{e}"
        );
    }

    /// NOT_FOUND is CSI's "no such volume": a missing file or program (mkfs.xfs, losetup) is
    /// never reported as one.
    #[test]
    fn a_missing_file_or_program_is_not_not_found() {
        let enoent = || std::io::Error::from(std::io::ErrorKind::NotFound);
        assert_eq!(
            Error::io("running \"mkfs.xfs\"", enoent()).kind(),
            Kind::Internal
        );
        assert_eq!(
            Error::io("opening /dev/loop7", enoent()).kind(),
            Kind::Internal
        );
        let e = crate::host::exec::run(&mut std::process::Command::new("/nonexistent/mkfs.xfs"))
            .unwrap_err();
        assert_eq!(e.to_status().code(), tonic::Code::Internal, "{e}");
        assert!(e.message().contains("mkfs.xfs"), "{e}");
    }

    #[test]
    fn luks2_errors_map_by_kind() {
        let code = |e: luks2::Error| Error::from(e).to_status().code();
        assert_eq!(
            code(luks2::Error::Busy("locked".into())),
            tonic::Code::Aborted
        );
        assert_eq!(
            code(luks2::Error::NotLuks2),
            tonic::Code::FailedPrecondition
        );
        assert_eq!(
            code(luks2::Error::header("segments", "overlap")),
            tonic::Code::FailedPrecondition
        );
        assert_eq!(
            code(luks2::Error::Unsupported("cipher".into())),
            tonic::Code::FailedPrecondition
        );
        assert_eq!(
            code(luks2::Error::ReadOnlyRequirements(vec!["x".into()])),
            tonic::Code::FailedPrecondition
        );
        assert_eq!(
            code(luks2::Error::OutOfMemory("argon2".into())),
            tonic::Code::ResourceExhausted
        );
        assert_eq!(
            code(luks2::Error::io(
                "reading",
                std::io::ErrorKind::NotFound.into()
            )),
            tonic::Code::Internal
        );
        assert_eq!(code(luks2::Error::BadPassphrase), tonic::Code::Internal);
        assert_eq!(
            code(luks2::Error::InvalidArgument("x".into())),
            tonic::Code::Internal
        );
    }

    #[test]
    fn ceph_errors_map_in_one_place() {
        assert_eq!(rbd_kind(rbd::ErrorKind::NotFound), Kind::NotFound);
        assert_eq!(rbd_kind(rbd::ErrorKind::Exists), Kind::AlreadyExists);
        assert_eq!(rbd_kind(rbd::ErrorKind::Busy), Kind::FailedPrecondition);
        assert_eq!(rbd_kind(rbd::ErrorKind::Unavailable), Kind::Unavailable);
        assert_eq!(rbd_kind(rbd::ErrorKind::NoSpace), Kind::ResourceExhausted);
        assert_eq!(
            rbd_kind(rbd::ErrorKind::PermissionDenied),
            Kind::PermissionDenied
        );
        assert_eq!(
            rbd_kind(rbd::ErrorKind::InvalidArgument),
            Kind::InvalidArgument
        );
        assert_eq!(rbd_kind(rbd::ErrorKind::Other), Kind::Internal);
    }

    #[test]
    fn status_carries_the_chain() {
        let e = Error::precondition("device holds data").context("volume pvc-1");
        let s = e.to_status();
        assert_eq!(s.code(), tonic::Code::FailedPrecondition);
        assert_eq!(s.message(), "volume pvc-1: device holds data");
    }
}

//! The crate's one error type: a small [`ErrorKind`] for the csi layer's gRPC mapping, a
//! human-readable context line, and an optional source.

use std::fmt;

/// What went wrong, as far as the caller needs to decide what to do next.
///
/// The csi layer maps each kind to exactly one gRPC code; operators read the message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The KMS could not be reached or answered with a transient failure (connection refused,
    /// timeout, HTTP 429 or 5xx, sealed server, malformed response). Retrying later may succeed.
    Unavailable,
    /// The KMS refused the credentials: bad, expired or revoked token, a policy that does not
    /// allow the operation (also a key policy refusing an old record: Transit's
    /// `min_decryption_version`), an inactive key, a rejected or expired certificate.
    Denied,
    /// The KMS has no such key (or no Transit engine / namespace at the configured path).
    NotFound,
    /// The wrapped key does not belong to this volume or was altered (authentication failed),
    /// names another KMS type, endpoint, key or namespace than the configuration, or a fresh
    /// wrap did not unwrap to its key.
    Integrity,
    /// The configuration is wrong: unknown KMS type, cluster-internal DNS name as endpoint,
    /// missing or unparsable secret key, malformed wrapped-key record.
    InvalidConfig,
}

impl ErrorKind {
    /// A short lower-case name, stable for logs and the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unavailable => "unavailable",
            Self::Denied => "denied",
            Self::NotFound => "not found",
            Self::Integrity => "integrity",
            Self::InvalidConfig => "invalid configuration",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error of the `kms` crate. The message never contains a DEK, a token or a private key.
#[derive(Debug, thiserror::Error)]
#[error("{kind}: {message}")]
pub struct Error {
    kind: ErrorKind,
    message: String,
    #[source]
    source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

impl Error {
    /// A new error of `kind` with a context message.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
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

    /// The class of the error.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The context message (without the kind prefix and without the source).
    pub fn message(&self) -> &str {
        &self.message
    }

    pub(crate) fn unavailable(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unavailable, message)
    }
    pub(crate) fn denied(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Denied, message)
    }
    pub(crate) fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::NotFound, message)
    }
    pub(crate) fn integrity(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Integrity, message)
    }
    pub(crate) fn config(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidConfig, message)
    }

    /// The message followed by every source in the chain, on one line.
    pub fn display_chain(&self) -> String {
        let mut out = self.to_string();
        let mut next = std::error::Error::source(self);
        while let Some(e) = next {
            let text = e.to_string();
            if !out.contains(&text) {
                out.push_str(": ");
                out.push_str(&text);
            }
            next = e.source();
        }
        out.replace(['\n', '\r'], " ")
    }
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Shortens a server-supplied text so a hostile or broken server cannot flood our messages.
pub(crate) fn server_text(text: &str) -> String {
    const MAX: usize = 200;
    let clean: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if clean.chars().count() <= MAX {
        clean
    } else {
        let mut s: String = clean.chars().take(MAX).collect();
        s.push('…');
        s
    }
}

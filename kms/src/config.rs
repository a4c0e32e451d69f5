//! KMS configuration from StorageClass parameters and the credentials Secret, validated once.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use crate::error::{Error, Result, server_text};
use crate::record::{KmsType, WrappedKey};
use crate::secret::{SECRET_CA, SECRET_TLS_CERT, SECRET_TLS_KEY, SECRET_TOKEN, Token};
use crate::tls::{CertInfo, ClientIdentity, TrustAnchors};

/// StorageClass parameter naming the KMS interface (`transit` or `kmip`).
pub const PARAM_KMS_TYPE: &str = "encryptionKMSType";
/// StorageClass parameter with the KMS endpoint.
pub const PARAM_KMS_ENDPOINT: &str = "encryptionKMSEndpoint";
/// StorageClass parameter with the key encryption key's name (Transit) or Unique Identifier (KMIP).
pub const PARAM_KMS_KEY_ID: &str = "encryptionKMSKeyID";
/// Optional StorageClass parameter: the OpenBao/Vault namespace (`X-Vault-Namespace`).
pub const PARAM_KMS_NAMESPACE: &str = "encryptionKMSNamespace";

/// Connect and request time limits. The defaults fail fast: kubelet retries with backoff.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// TCP connect plus TLS handshake.
    pub connect: Duration,
    /// One whole request, connect included.
    pub request: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(5),
            request: Duration::from_secs(15),
        }
    }
}

/// A validated `host:port` (the host an IP address or a DNS name that is not cluster-internal).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostPort {
    host: String,
    port: u16,
}

impl HostPort {
    /// The host (IPv6 without brackets).
    pub fn host(&self) -> &str {
        &self.host
    }
    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }
    /// The host as an IP address, if it is one.
    pub fn ip(&self) -> Option<IpAddr> {
        self.host.parse().ok()
    }
}

impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// A validated endpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// `http://host:port` or `https://host:port` (Transit).
    Http {
        /// Whether the scheme is `https`.
        tls: bool,
        /// Where the server listens.
        addr: HostPort,
    },
    /// `host:port` (KMIP over TLS).
    Kmip(HostPort),
}

impl Endpoint {
    /// Parses and validates an endpoint for the given KMS type.
    pub fn parse(kind: KmsType, raw: &str) -> Result<Self> {
        let raw = raw.trim();
        let ctx = |why: String| Error::config(format!("{PARAM_KMS_ENDPOINT} {raw:?}: {why}"));
        if raw.is_empty() {
            return Err(ctx("is empty".into()));
        }
        match kind {
            KmsType::Transit => {
                let (tls, rest) = if let Some(r) = raw.strip_prefix("https://") {
                    (true, r)
                } else if let Some(r) = raw.strip_prefix("http://") {
                    (false, r)
                } else {
                    return Err(ctx(
                        "a transit endpoint must be http://host:port or https://host:port".into(),
                    ));
                };
                let rest = rest.strip_suffix('/').unwrap_or(rest);
                if rest.contains(['/', '?', '#', '@']) {
                    return Err(ctx("must not contain a path, query, fragment or user info (the engine is always mounted at transit/)".into()));
                }
                let addr = parse_host_port(rest).map_err(ctx)?;
                Ok(Self::Http { tls, addr })
            }
            KmsType::Kmip => {
                if raw.contains("://") {
                    return Err(ctx("a kmip endpoint is host:port without a scheme".into()));
                }
                Ok(Self::Kmip(parse_host_port(raw).map_err(ctx)?))
            }
        }
    }

    /// The host and port.
    pub fn addr(&self) -> &HostPort {
        match self {
            Self::Http { addr, .. } | Self::Kmip(addr) => addr,
        }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Http { tls: true, addr } => write!(f, "https://{addr}"),
            Self::Http { tls: false, addr } => write!(f, "http://{addr}"),
            Self::Kmip(addr) => write!(f, "{addr}"),
        }
    }
}

fn parse_host_port(s: &str) -> std::result::Result<HostPort, String> {
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (h, after) = rest.split_once(']').ok_or("unterminated [IPv6] address")?;
        let port = after
            .strip_prefix(':')
            .ok_or("a port is required (host:port)")?;
        if h.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(format!("{h:?} is not an IPv6 address"));
        }
        (h, port)
    } else {
        let (h, p) = s.rsplit_once(':').ok_or("a port is required (host:port)")?;
        if h.contains(':') {
            return Err("write IPv6 addresses in brackets: [addr]:port".into());
        }
        (h, p)
    };
    let port: u16 = port
        .parse()
        .map_err(|_| format!("port {port:?} is not a number 1..=65535"))?;
    if port == 0 {
        return Err("port 0 is not a valid port".into());
    }
    if host.is_empty() {
        return Err("the host is empty".into());
    }
    if host.parse::<IpAddr>().is_err() {
        check_dns_name(host)?;
    }
    Ok(HostPort {
        host: host.to_owned(),
        port,
    })
}

/// Rejects names only the cluster's DNS resolves: the driver runs on the host network.
fn check_dns_name(host: &str) -> std::result::Result<(), String> {
    let lower = host.trim_end_matches('.').to_ascii_lowercase();
    let valid = !lower.is_empty()
        && lower.len() <= 253
        && lower.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        });
    if !valid {
        return Err(format!(
            "{host:?} is neither an IP address nor a valid DNS name"
        ));
    }
    let labels: Vec<&str> = lower.split('.').collect();
    let internal = lower.ends_with(".cluster.local")
        || labels.iter().skip(1).any(|l| *l == "svc")
        || lower == "kubernetes"
        || (labels.len() == 1 && lower != "localhost");
    if internal {
        return Err(format!(
            "{host:?} is a cluster-internal DNS name (Service names such as *.svc or \
             *.cluster.local and bare names only resolve inside Pods); the driver runs on the \
             node's host network: use the Service's ClusterIP or an external name"
        ));
    }
    Ok(())
}

/// Credentials, by KMS type.
#[derive(Clone)]
pub(crate) enum Credentials {
    Transit {
        token: Token,
        ca: Option<TrustAnchors>,
    },
    Kmip {
        ca: TrustAnchors,
        identity: ClientIdentity,
    },
}

/// Where a KMS key lives: what a wrapped-key record must match before any credential is sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct KeyTarget {
    pub(crate) kind: KmsType,
    pub(crate) endpoint: Endpoint,
    pub(crate) key_id: String,
    pub(crate) namespace: Option<String>,
}

impl KeyTarget {
    /// [`KmsConfig::check_record`].
    pub(crate) fn check_record(&self, record: &WrappedKey) -> Result<()> {
        self.check_location(record)?;
        if record.key_id() != self.key_id {
            return Err(Error::integrity(format!(
                "the wrapped-key record names keyId {:?}, the configuration {:?}: the record \
                 belongs to another key (or was edited); refusing",
                server_text(record.key_id()),
                self.key_id
            )));
        }
        Ok(())
    }

    /// The record names this target's KMS type, endpoint and namespace: where credentials go.
    pub(crate) fn check_location(&self, record: &WrappedKey) -> Result<()> {
        let differs = |field: &str, recorded: &str, configured: &str| {
            Err(Error::integrity(format!(
                "the wrapped-key record names {field} {:?}, the configuration {:?}: the record \
                 belongs to another KMS (or was edited); refusing to send credentials \
                 to a place the record names",
                server_text(recorded),
                configured
            )))
        };
        if record.kms_type() != self.kind {
            return differs("kmsType", record.kms_type().as_str(), self.kind.as_str());
        }
        let configured = self.endpoint.to_string();
        let same_endpoint = Endpoint::parse(self.kind, record.endpoint())
            .is_ok_and(|e| e.to_string().eq_ignore_ascii_case(&configured));
        if !same_endpoint {
            return differs("endpoint", record.endpoint(), &configured);
        }
        if record.namespace() != self.namespace.as_deref() {
            return differs(
                "namespace",
                record.namespace().unwrap_or("(none)"),
                self.namespace.as_deref().unwrap_or("(none)"),
            );
        }
        Ok(())
    }
}

/// A complete, validated KMS configuration.
#[derive(Clone)]
pub struct KmsConfig {
    pub(crate) target: KeyTarget,
    pub(crate) credentials: Credentials,
    timeouts: Timeouts,
}

impl fmt::Debug for KmsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KmsConfig")
            .field("kind", &self.target.kind)
            .field("endpoint", &self.target.endpoint.to_string())
            .field("key_id", &self.target.key_id)
            .field("namespace", &self.target.namespace)
            .field("timeouts", &self.timeouts)
            .finish_non_exhaustive()
    }
}

impl KmsConfig {
    /// From StorageClass parameters (`encryptionKMSType`, `encryptionKMSEndpoint`,
    /// `encryptionKMSKeyID`, optional `encryptionKMSNamespace`) and the credentials Secret's map
    /// (`token`, `ca.crt`, `tls.crt`, `tls.key`). Other parameters are ignored.
    pub fn from_parameters(
        params: &HashMap<String, String>,
        secrets: &HashMap<String, String>,
    ) -> Result<Self> {
        let get = |k: &str| {
            params
                .get(k)
                .map(|v| v.trim())
                .filter(|v| !v.is_empty())
                .ok_or_else(|| Error::config(format!("StorageClass parameter {k} is missing")))
        };
        let kind: KmsType = get(PARAM_KMS_TYPE)?
            .parse()
            .map_err(|e: Error| Error::config(format!("{PARAM_KMS_TYPE}: {}", e.message())))?;
        let namespace = params.get(PARAM_KMS_NAMESPACE).map(|s| s.as_str());
        Self::new(
            kind,
            get(PARAM_KMS_ENDPOINT)?,
            get(PARAM_KMS_KEY_ID)?,
            namespace,
            secrets,
        )
    }

    /// From the individual values (the command line uses this).
    pub fn new(
        kind: KmsType,
        endpoint: &str,
        key_id: &str,
        namespace: Option<&str>,
        secrets: &HashMap<String, String>,
    ) -> Result<Self> {
        let endpoint = Endpoint::parse(kind, endpoint)?;
        let key_id = key_id.trim();
        check_key_id(kind, key_id)?;
        let namespace = namespace
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .map(str::to_owned);
        if let Some(ns) = &namespace {
            if kind != KmsType::Transit {
                return Err(Error::config(format!(
                    "{PARAM_KMS_NAMESPACE} applies to transit only"
                )));
            }
            if !ns
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_./".contains(&b))
            {
                return Err(Error::config(format!(
                    "{PARAM_KMS_NAMESPACE} {ns:?} has invalid characters"
                )));
            }
        }
        let secret = |k: &str| {
            secrets
                .get(k)
                .map(|s| s.as_str())
                .filter(|s| !s.trim().is_empty())
        };
        let missing = |k: &str| {
            Error::config(format!(
                "the KMS credentials Secret has no key {k:?} (required for {kind})"
            ))
        };
        let credentials = match kind {
            KmsType::Transit => {
                let token = Token::new(secret(SECRET_TOKEN).ok_or_else(|| missing(SECRET_TOKEN))?)?;
                let ca = match secret(SECRET_CA) {
                    Some(pem) => {
                        if matches!(endpoint, Endpoint::Http { tls: false, .. }) {
                            return Err(Error::config(format!(
                                "the Secret has {SECRET_CA:?} but {PARAM_KMS_ENDPOINT} is http://; use https:// or remove {SECRET_CA:?}"
                            )));
                        }
                        Some(TrustAnchors::from_pem(SECRET_CA, pem.as_bytes())?)
                    }
                    None => None,
                };
                Credentials::Transit { token, ca }
            }
            KmsType::Kmip => {
                let ca = TrustAnchors::from_pem(
                    SECRET_CA,
                    secret(SECRET_CA)
                        .ok_or_else(|| missing(SECRET_CA))?
                        .as_bytes(),
                )?;
                let identity = ClientIdentity::from_pem(
                    secret(SECRET_TLS_CERT)
                        .ok_or_else(|| missing(SECRET_TLS_CERT))?
                        .as_bytes(),
                    secret(SECRET_TLS_KEY)
                        .ok_or_else(|| missing(SECRET_TLS_KEY))?
                        .as_bytes(),
                )?;
                Credentials::Kmip { ca, identity }
            }
        };
        Ok(Self {
            target: KeyTarget {
                kind,
                endpoint,
                key_id: key_id.to_owned(),
                namespace,
            },
            credentials,
            timeouts: Timeouts::default(),
        })
    }

    /// Checks that `record` was made with this configuration's KMS type, endpoint, key id and
    /// namespace; [`crate::ErrorKind::Integrity`] naming the first field that differs and both
    /// values otherwise. No network I/O. The record lives in an unauthenticated Secret: whoever
    /// can edit it must not be able to send this configuration's credentials anywhere, so a
    /// mismatch is an error, never a redirect. [`crate::Kms::unwrap`] and
    /// [`crate::Kms::rewrap`] run the same check before any request.
    pub fn check_record(&self, record: &WrappedKey) -> Result<()> {
        self.target.check_record(record)
    }

    /// The configuration that unwraps `record`: this one with the record's key id, when the
    /// record names this configuration's KMS type, endpoint and namespace
    /// ([`crate::ErrorKind::Integrity`] naming the first field that differs otherwise).
    ///
    /// The rule after a KEK rotation (`volume rewrap --to-key-id`, README "KEK rotation"): a
    /// record may name another key than the volume context's (the PV is immutable), but only
    /// within the same type, endpoint and namespace: those choose where the credentials go
    /// and stay bound to the configuration, never to the unauthenticated record. The key id
    /// only chooses which key on that KMS the credentials' own policy is asked to use, and it
    /// passes the same validation as a configured one (a Transit key name is a URL path
    /// segment: no `/`, no `..`). The record's binding to its volume is still checked by
    /// every unwrap. [`KmsConfig::check_record`] stays exact (the rewrap command decides with
    /// it which records are under which key).
    pub fn for_record(&self, record: &WrappedKey) -> Result<KmsConfig> {
        self.target.check_location(record)?;
        let key_id = record.key_id();
        check_key_id(self.target.kind, key_id).map_err(|_| {
            Error::integrity(format!(
                "the wrapped-key record names keyId {:?}, which is not a valid {} key id: \
                 refusing",
                server_text(key_id),
                self.target.kind
            ))
        })?;
        let mut config = self.clone();
        config.target.key_id = key_id.to_owned();
        Ok(config)
    }

    /// Replaces the default time limits.
    pub fn with_timeouts(mut self, timeouts: Timeouts) -> Self {
        self.timeouts = timeouts;
        self
    }

    /// The KMS interface.
    pub fn kind(&self) -> KmsType {
        self.target.kind
    }
    /// The validated endpoint.
    pub fn endpoint(&self) -> &Endpoint {
        &self.target.endpoint
    }
    /// Transit key name or KMIP Unique Identifier.
    pub fn key_id(&self) -> &str {
        &self.target.key_id
    }
    /// The OpenBao/Vault namespace, if any.
    pub fn namespace(&self) -> Option<&str> {
        self.target.namespace.as_deref()
    }
    /// The time limits.
    pub fn timeouts(&self) -> Timeouts {
        self.timeouts
    }
    /// The client certificate's subject and validity (KMIP only).
    pub fn client_certificate(&self) -> Option<&CertInfo> {
        match &self.credentials {
            Credentials::Kmip { identity, .. } => Some(identity.info()),
            Credentials::Transit { .. } => None,
        }
    }
}

fn check_key_id(kind: KmsType, id: &str) -> Result<()> {
    if id.is_empty() {
        return Err(Error::config(format!("{PARAM_KMS_KEY_ID} is empty")));
    }
    if id.len() > 256 {
        return Err(Error::config(format!(
            "{PARAM_KMS_KEY_ID} is longer than 256 bytes"
        )));
    }
    let ok = match kind {
        // Transit key names end up in a URL path: allow only what OpenBao's name regex allows.
        KmsType::Transit => id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)),
        KmsType::Kmip => !id.chars().any(char::is_control),
    };
    if ok {
        Ok(())
    } else {
        Err(Error::config(format!(
            "{PARAM_KMS_KEY_ID} {id:?} has characters not allowed for {kind}"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    fn ep(kind: KmsType, s: &str) -> Result<Endpoint> {
        Endpoint::parse(kind, s)
    }

    #[test]
    fn endpoints_accepted() {
        let e = ep(KmsType::Transit, "http://10.0.0.1:8200").unwrap();
        assert_eq!(e.to_string(), "http://10.0.0.1:8200");
        let e = ep(KmsType::Transit, "https://bao.example.com:8200/").unwrap();
        assert_eq!(e.addr().host(), "bao.example.com");
        let e = ep(KmsType::Transit, "https://[fd00::1]:8200").unwrap();
        assert_eq!(e.to_string(), "https://[fd00::1]:8200");
        assert_eq!(
            ep(KmsType::Kmip, "10.1.2.3:5696").unwrap().addr().port(),
            5696
        );
        assert!(ep(KmsType::Kmip, "localhost:5696").is_ok());
    }

    #[test]
    fn endpoints_rejected_with_reason() {
        let cases = [
            (
                KmsType::Transit,
                "openbao.vault.svc:8200",
                "http://host:port",
            ),
            (
                KmsType::Transit,
                "http://openbao.vault.svc:8200",
                "cluster-internal",
            ),
            (
                KmsType::Transit,
                "http://openbao.vault.svc.cluster.local:8200",
                "cluster-internal",
            ),
            (
                KmsType::Transit,
                "https://bao.vault.svc.example.org:8200",
                "cluster-internal",
            ),
            (
                KmsType::Transit,
                "http://foo.cluster.local:8200",
                "cluster-internal",
            ),
            (KmsType::Transit, "http://openbao:8200", "cluster-internal"),
            (KmsType::Kmip, "kmip.kms.svc:5696", "cluster-internal"),
            (
                KmsType::Kmip,
                "kmip.kms.svc.cluster.local:5696",
                "cluster-internal",
            ),
            (KmsType::Transit, "http://10.0.0.1", "port is required"),
            (KmsType::Transit, "http://10.0.0.1:8200/v1/transit", "path"),
            (KmsType::Transit, "ftp://10.0.0.1:8200", "http://host:port"),
            (KmsType::Transit, "http://10.0.0.1:99999", "port"),
            (KmsType::Kmip, "https://10.0.0.1:5696", "without a scheme"),
            (KmsType::Kmip, "fd00::1:5696", "brackets"),
            (KmsType::Kmip, "bad_name.example:5696", "valid DNS name"),
            (KmsType::Kmip, "", "empty"),
        ];
        for (kind, s, why) in cases {
            let err = ep(kind, s).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidConfig, "{s}");
            assert!(err.message().contains(why), "{s}: {}", err.message());
        }
    }

    #[test]
    fn parameters_and_secrets() {
        let mut p = HashMap::new();
        let mut s = HashMap::new();
        let err = KmsConfig::from_parameters(&p, &s).unwrap_err();
        assert!(err.message().contains(PARAM_KMS_TYPE));
        p.insert(PARAM_KMS_TYPE.to_owned(), "vault".to_owned());
        p.insert(
            PARAM_KMS_ENDPOINT.to_owned(),
            "http://10.0.0.1:8200".to_owned(),
        );
        p.insert(PARAM_KMS_KEY_ID.to_owned(), "pvc-kek".to_owned());
        let err = KmsConfig::from_parameters(&p, &s).unwrap_err();
        assert!(
            err.message().contains("\"vault\" is not supported"),
            "{}",
            err.message()
        );
        p.insert(PARAM_KMS_TYPE.to_owned(), "transit".to_owned());
        let err = KmsConfig::from_parameters(&p, &s).unwrap_err();
        assert!(
            err.message().contains("no key \"token\""),
            "{}",
            err.message()
        );
        s.insert("token".to_owned(), "s.abc\n".to_owned());
        let c = KmsConfig::from_parameters(&p, &s).unwrap();
        assert_eq!(c.kind(), KmsType::Transit);
        assert_eq!(c.key_id(), "pvc-kek");
        assert!(!format!("{c:?}").contains("s.abc"));
        s.insert("ca.crt".to_owned(), "not a pem".to_owned());
        let err = KmsConfig::from_parameters(&p, &s).unwrap_err();
        assert!(err.message().contains("http://"), "{}", err.message());
        p.insert(PARAM_KMS_KEY_ID.to_owned(), "pvc/kek".to_owned());
        assert!(KmsConfig::from_parameters(&p, &s).is_err());
        p.insert(PARAM_KMS_TYPE.to_owned(), "kmip".to_owned());
        p.insert(PARAM_KMS_ENDPOINT.to_owned(), "10.0.0.1:5696".to_owned());
        p.insert(PARAM_KMS_KEY_ID.to_owned(), "42".to_owned());
        let err = KmsConfig::from_parameters(&p, &s).unwrap_err();
        assert!(err.message().contains("ca.crt"), "{}", err.message());
    }

    /// KMIP needs all three of `ca.crt`, `tls.crt` and `tls.key`; each missing one is named.
    #[test]
    fn kmip_missing_secret_keys_are_invalid_config() {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["kms".to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let p: HashMap<String, String> = [
            (PARAM_KMS_TYPE, "kmip"),
            (PARAM_KMS_ENDPOINT, "10.0.0.1:5696"),
            (PARAM_KMS_KEY_ID, "42"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let full: HashMap<String, String> = [
            (SECRET_CA, cert.pem()),
            (SECRET_TLS_CERT, cert.pem()),
            (SECRET_TLS_KEY, key.serialize_pem()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        assert_eq!(
            KmsConfig::from_parameters(&p, &full).unwrap().kind(),
            KmsType::Kmip
        );
        for gone in [SECRET_CA, SECRET_TLS_CERT, SECRET_TLS_KEY] {
            let mut s = full.clone();
            s.remove(gone);
            let err = KmsConfig::from_parameters(&p, &s).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidConfig, "{gone}: {err}");
            assert!(err.message().contains(gone), "{gone}: {err}");
            assert!(!err.to_string().contains("PRIVATE KEY"), "{err}");
        }
    }
}

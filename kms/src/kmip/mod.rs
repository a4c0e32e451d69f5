//! KMIP client: mutual TLS (rustls, `ring`), our own TTLV codec ([`ttlv`]), DiscoverVersions,
//! then Encrypt/Decrypt with the KEK named by its Unique Identifier:
//!
//! * KMIP 1.4 servers: AES-GCM, 12-byte random IV, 16-byte tag, additional data = volume id.
//! * KMIP 1.2/1.3 servers: AES-CBC with PKCS#5 padding and a random 16-byte IV, of the DEK framed
//!   with its volume id (checked after decryption).
//!
//! One TLS connection is kept and reused; a stale one is replaced once per request. A request
//! takes the connection out of its slot for the whole exchange and puts it back only after a
//! complete, matching answer: a request that times out or is dropped mid-exchange drops the
//! connection with it, so a late answer is never read as the answer to a later request. Every
//! request carries a random Unique Batch Item ID and an answer carrying another one is refused.
//! [`KmipClient::wrap`] unwraps its own result and compares it with the key before returning.

pub mod ttlv;

use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use zeroize::Zeroizing;

use self::ttlv::{Item, Value};
use crate::config::{Credentials, Endpoint, KeyTarget, KmsConfig, Timeouts};
use crate::error::{Error, Result, server_text};
use crate::record::{KmsType, WrapMode, WrappedKey, now_rfc3339};
use crate::secret::{Dek, VolumeId, frame, unframe};
use crate::tls::{CertInfo, classify_tls, find_rustls_error, kmip_config};

/// TTLV tags used here (KMIP 1.4 §9.1.3.1).
mod tag {
    pub(super) const BATCH_COUNT: u32 = 0x42000D;
    pub(super) const BATCH_ITEM: u32 = 0x42000F;
    pub(super) const BLOCK_CIPHER_MODE: u32 = 0x420011;
    pub(super) const CRYPTOGRAPHIC_ALGORITHM: u32 = 0x420028;
    pub(super) const CRYPTOGRAPHIC_PARAMETERS: u32 = 0x42002B;
    pub(super) const IV_COUNTER_NONCE: u32 = 0x42003D;
    pub(super) const OPERATION: u32 = 0x42005C;
    pub(super) const PADDING_METHOD: u32 = 0x42005F;
    pub(super) const PROTOCOL_VERSION: u32 = 0x420069;
    pub(super) const PROTOCOL_VERSION_MAJOR: u32 = 0x42006A;
    pub(super) const PROTOCOL_VERSION_MINOR: u32 = 0x42006B;
    pub(super) const REQUEST_HEADER: u32 = 0x420077;
    pub(super) const REQUEST_MESSAGE: u32 = 0x420078;
    pub(super) const REQUEST_PAYLOAD: u32 = 0x420079;
    pub(super) const RESPONSE_HEADER: u32 = 0x42007A;
    pub(super) const RESPONSE_MESSAGE: u32 = 0x42007B;
    pub(super) const RESPONSE_PAYLOAD: u32 = 0x42007C;
    pub(super) const RESULT_MESSAGE: u32 = 0x42007D;
    pub(super) const RESULT_REASON: u32 = 0x42007E;
    pub(super) const RESULT_STATUS: u32 = 0x42007F;
    pub(super) const UNIQUE_BATCH_ITEM_ID: u32 = 0x420093;
    pub(super) const UNIQUE_IDENTIFIER: u32 = 0x420094;
    pub(super) const DATA: u32 = 0x4200C2;
    pub(super) const TAG_LENGTH: u32 = 0x4200CE;
    pub(super) const AEAD_ADDITIONAL_DATA: u32 = 0x4200FE;
    pub(super) const AEAD_TAG: u32 = 0x4200FF;
}

/// Operation enumeration values.
const OP_ENCRYPT: u32 = 0x1F;
const OP_DECRYPT: u32 = 0x20;
const OP_DISCOVER_VERSIONS: u32 = 0x1E;
const ALG_AES: u32 = 0x03;
const MODE_CBC: u32 = 0x01;
const MODE_GCM: u32 = 0x09;
const PAD_PKCS5: u32 = 0x03;
const GCM_IV_LEN: usize = 12;
const GCM_TAG_LEN: usize = 16;
const CBC_IV_LEN: usize = 16;

/// A KMIP protocol version (major, minor).
pub type ProtocolVersion = (i32, i32);
/// Versions offered in DiscoverVersions, most preferred first.
pub const SUPPORTED_VERSIONS: [ProtocolVersion; 3] = [(1, 4), (1, 3), (1, 2)];

/// A KMIP client for one server and key.
pub struct KmipClient {
    host: String,
    port: u16,
    endpoint: String,
    server_name: ServerName<'static>,
    connector: TlsConnector,
    key_id: String,
    target: KeyTarget,
    cert: CertInfo,
    timeouts: Timeouts,
    max_version: ProtocolVersion,
    conn: tokio::sync::Mutex<Option<TlsStream<TcpStream>>>,
    version: tokio::sync::OnceCell<ProtocolVersion>,
}

impl std::fmt::Debug for KmipClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KmipClient")
            .field("endpoint", &self.endpoint)
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

fn pv((major, minor): ProtocolVersion) -> Item {
    Item::structure(
        tag::PROTOCOL_VERSION,
        vec![
            Item::new(tag::PROTOCOL_VERSION_MAJOR, Value::Integer(major)),
            Item::new(tag::PROTOCOL_VERSION_MINOR, Value::Integer(minor)),
        ],
    )
}

/// Length of the random Unique Batch Item ID sent with every request.
const BATCH_ID_LEN: usize = 8;

/// A random Unique Batch Item ID.
fn batch_id() -> Result<[u8; BATCH_ID_LEN]> {
    let mut id = [0u8; BATCH_ID_LEN];
    getrandom::fill(&mut id).map_err(|e| Error::unavailable(format!("no randomness: {e}")))?;
    Ok(id)
}

fn request(version: ProtocolVersion, op: u32, id: &[u8], payload: Vec<Item>) -> Item {
    Item::structure(
        tag::REQUEST_MESSAGE,
        vec![
            Item::structure(
                tag::REQUEST_HEADER,
                vec![pv(version), Item::new(tag::BATCH_COUNT, Value::Integer(1))],
            ),
            Item::structure(
                tag::BATCH_ITEM,
                vec![
                    Item::new(tag::OPERATION, Value::Enumeration(op)),
                    bytes(tag::UNIQUE_BATCH_ITEM_ID, id),
                    Item::structure(tag::REQUEST_PAYLOAD, payload),
                ],
            ),
        ],
    )
}

/// Checks that `msg` answers the request with Unique Batch Item ID `id`: a Response Message
/// whose batch item carries the same ID. KMIP requires the server to echo the ID; an answer
/// without one is accepted (the connection handling alone already keeps answers in order),
/// an answer with another one is refused.
fn check_answers(msg: &Item, id: &[u8]) -> std::result::Result<(), &'static str> {
    if msg.tag.0 != tag::RESPONSE_MESSAGE {
        return Err("not a Response Message");
    }
    let batch = msg.child(tag::BATCH_ITEM).ok_or("no Batch Item")?;
    match batch.child(tag::UNIQUE_BATCH_ITEM_ID).map(|i| &i.value) {
        None => Ok(()),
        Some(Value::ByteString(got)) if got.as_slice() == id => Ok(()),
        Some(_) => Err("the answer to another request (its Unique Batch Item ID differs)"),
    }
}

fn bytes(tag_: u32, b: &[u8]) -> Item {
    Item::new(tag_, Value::ByteString(Zeroizing::new(b.to_vec())))
}

fn byte_field(payload: &Item, tag_: u32) -> Option<&[u8]> {
    match payload.child(tag_).map(|i| &i.value) {
        Some(Value::ByteString(b)) => Some(b),
        _ => None,
    }
}

fn parse_version(item: &Item) -> Option<ProtocolVersion> {
    let int = |t| match item.child(t).map(|i| &i.value) {
        Some(Value::Integer(v)) => Some(*v),
        _ => None,
    };
    Some((
        int(tag::PROTOCOL_VERSION_MAJOR)?,
        int(tag::PROTOCOL_VERSION_MINOR)?,
    ))
}

/// A failed batch item: result reason and message.
#[derive(Debug)]
struct Failure {
    reason: Option<u32>,
    message: String,
}

/// Extracts the payload of a one-item response, or the failure.
fn response_payload(msg: &Item, op: u32) -> Result<std::result::Result<Item, Failure>> {
    let bad = |why: &str| Error::unavailable(format!("malformed KMIP response: {why}"));
    if msg.tag.0 != tag::RESPONSE_MESSAGE {
        return Err(bad("not a Response Message"));
    }
    msg.child(tag::RESPONSE_HEADER)
        .ok_or_else(|| bad("no Response Header"))?;
    let batch = msg
        .child(tag::BATCH_ITEM)
        .ok_or_else(|| bad("no Batch Item"))?;
    if let Some(Value::Enumeration(o)) = batch.child(tag::OPERATION).map(|i| &i.value)
        && *o != op
    {
        return Err(bad("answer to another operation"));
    }
    let status = match batch.child(tag::RESULT_STATUS).map(|i| &i.value) {
        Some(Value::Enumeration(s)) => *s,
        _ => return Err(bad("no Result Status")),
    };
    let reason = match batch.child(tag::RESULT_REASON).map(|i| &i.value) {
        Some(Value::Enumeration(r)) => Some(*r),
        _ => None,
    };
    let message = match batch.child(tag::RESULT_MESSAGE).map(|i| &i.value) {
        Some(Value::TextString(m)) => server_text(m),
        _ => String::new(),
    };
    match status {
        0 => Ok(Ok(batch
            .child(tag::RESPONSE_PAYLOAD)
            .cloned()
            .unwrap_or_else(|| {
                Item::structure(tag::RESPONSE_PAYLOAD, vec![])
            }))),
        1 => Ok(Err(Failure { reason, message })),
        s => Err(Error::unavailable(format!(
            "KMIP result status {s} (pending or undone): {message}"
        ))),
    }
}

/// Whether a server's failure text names a policy rejection rather than a failure.
fn says_policy(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    [
        "permission",
        "denied",
        "not allowed",
        "unauthori",
        "forbidden",
        "access right",
        "policy",
        "not active",
        "must be in the active state",
    ]
    .iter()
    .any(|w| m.contains(w))
}

impl KmipClient {
    /// Builds a client from a kmip configuration (no network I/O yet).
    pub fn new(config: &KmsConfig) -> Result<Self> {
        let (Credentials::Kmip { ca, identity }, Endpoint::Kmip(addr)) =
            (&config.credentials, config.endpoint())
        else {
            return Err(Error::config("not a kmip configuration"));
        };
        let tls = kmip_config(ca, identity)?;
        let server_name = match addr.ip() {
            Some(ip) => ServerName::IpAddress(ip.into()),
            None => ServerName::try_from(addr.host().to_owned()).map_err(|_| {
                Error::config(format!("{:?} is not a valid TLS server name", addr.host()))
            })?,
        };
        Ok(Self {
            host: addr.host().to_owned(),
            port: addr.port(),
            endpoint: addr.to_string(),
            server_name,
            connector: TlsConnector::from(Arc::new(tls)),
            key_id: config.key_id().to_owned(),
            target: config.target.clone(),
            cert: identity.info().clone(),
            timeouts: config.timeouts(),
            max_version: (1, 4),
            conn: tokio::sync::Mutex::new(None),
            version: tokio::sync::OnceCell::new(),
        })
    }

    /// Caps the protocol version used for new wraps (e.g. `(1, 2)` forces AES-CBC even on a
    /// 1.4 server). Unwrap always follows the record.
    pub fn with_max_version(mut self, v: ProtocolVersion) -> Self {
        self.max_version = v;
        self
    }

    async fn connect(&self) -> Result<TlsStream<TcpStream>> {
        self.cert.check_validity(time::OffsetDateTime::now_utc())?;
        let fut = async {
            let tcp = TcpStream::connect((self.host.as_str(), self.port))
                .await
                .map_err(|e| {
                    Error::unavailable(format!(
                        "cannot connect to KMIP server {}: {e}",
                        self.endpoint
                    ))
                })?;
            let _ = tcp.set_nodelay(true);
            self.connector
                .connect(self.server_name.clone(), tcp)
                .await
                .map_err(|e| self.classify_io(&e, "TLS handshake"))
        };
        tokio::time::timeout(self.timeouts.connect, fut)
            .await
            .map_err(|_| {
                Error::unavailable(format!(
                    "KMIP server {} did not complete connect + TLS handshake within {} s (timeout)",
                    self.endpoint,
                    self.timeouts.connect.as_secs_f32()
                ))
            })?
    }

    fn classify_io(&self, e: &std::io::Error, during: &str) -> Error {
        if let Some(tls) = find_rustls_error(e) {
            return classify_tls(tls, &self.endpoint, Some(&self.cert));
        }
        Error::unavailable(format!("KMIP server {} ({during}): {e}", self.endpoint))
    }

    async fn exchange(&self, stream: &mut TlsStream<TcpStream>, req: &[u8]) -> Result<Item> {
        stream
            .write_all(req)
            .await
            .map_err(|e| self.classify_io(&e, "sending"))?;
        stream
            .flush()
            .await
            .map_err(|e| self.classify_io(&e, "sending"))?;
        let mut header = [0u8; 8];
        stream.read_exact(&mut header).await.map_err(|e| {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                Error::unavailable(format!(
                    "KMIP server {} closed the connection without answering",
                    self.endpoint
                ))
            } else {
                self.classify_io(&e, "receiving")
            }
        })?;
        let total = ttlv::message_len(&header)
            .map_err(|e| Error::unavailable(format!("KMIP server {}: {e}", self.endpoint)))?;
        let mut buf = Zeroizing::new(vec![0u8; total]);
        buf[..8].copy_from_slice(&header);
        stream
            .read_exact(&mut buf[8..])
            .await
            .map_err(|e| self.classify_io(&e, "receiving"))?;
        ttlv::decode(&buf).map_err(|e| {
            Error::unavailable(format!(
                "KMIP server {} sent an invalid message",
                self.endpoint
            ))
            .with_source(e)
        })
    }

    /// One exchange on `stream` whose answer must carry Unique Batch Item ID `id`.
    async fn exchange_checked(
        &self,
        stream: &mut TlsStream<TcpStream>,
        req: &[u8],
        id: &[u8],
    ) -> Result<Item> {
        let resp = self.exchange(stream, req).await?;
        check_answers(&resp, id).map_err(|why| {
            Error::unavailable(format!(
                "malformed KMIP response from {}: {why}",
                self.endpoint
            ))
        })?;
        Ok(resp)
    }

    /// Puts a connection that completed an exchange back, unless another one already is.
    async fn keep(&self, stream: TlsStream<TcpStream>) {
        let mut slot = self.conn.lock().await;
        if slot.is_none() {
            *slot = Some(stream);
        }
    }

    /// Sends one request with Unique Batch Item ID `id`, reusing the kept connection; a stale
    /// one is replaced once.
    ///
    /// The connection is taken out of its slot for the exchange and put back only after a
    /// complete answer with the right ID: if the time limit fires or the caller drops this
    /// future mid-exchange, the connection is dropped with it, never reused with an answer
    /// still on its way. Concurrent requests open connections of their own meanwhile.
    async fn roundtrip(&self, req: &Item, id: &[u8]) -> Result<Item> {
        let bytes = ttlv::encode(req);
        let fut = async {
            let kept = self.conn.lock().await.take();
            if let Some(mut stream) = kept {
                match self.exchange_checked(&mut stream, &bytes, id).await {
                    Ok(resp) => {
                        self.keep(stream).await;
                        return Ok(resp);
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "reused KMIP connection failed, reconnecting");
                    }
                }
            }
            let mut stream = self.connect().await?;
            let resp = self.exchange_checked(&mut stream, &bytes, id).await?;
            self.keep(stream).await;
            Ok(resp)
        };
        tokio::time::timeout(self.timeouts.request, fut)
            .await
            .map_err(|_| {
                Error::unavailable(format!(
                    "KMIP server {} did not answer within {} s (timeout)",
                    self.endpoint,
                    self.timeouts.request.as_secs_f32()
                ))
            })?
    }

    /// The protocol version to use: the highest both sides speak (DiscoverVersions, cached).
    pub async fn protocol_version(&self) -> Result<ProtocolVersion> {
        self.version
            .get_or_try_init(|| self.discover())
            .await
            .copied()
    }

    async fn discover(&self) -> Result<ProtocolVersion> {
        let offer: Vec<Item> = SUPPORTED_VERSIONS.iter().map(|v| pv(*v)).collect();
        let id = batch_id()?;
        let resp = self
            .roundtrip(&request((1, 2), OP_DISCOVER_VERSIONS, &id, offer), &id)
            .await?;
        let payload = match response_payload(&resp, OP_DISCOVER_VERSIONS)? {
            Ok(p) => p,
            // A 1.0 server without DiscoverVersions would fail here; 1.2 is our floor anyway.
            Err(f) => return Err(self.failure(f, "DiscoverVersions")),
        };
        let theirs: Vec<ProtocolVersion> = payload
            .children_with(tag::PROTOCOL_VERSION)
            .filter_map(parse_version)
            .collect();
        theirs
            .iter()
            .copied()
            .filter(|v| SUPPORTED_VERSIONS.contains(v))
            .max()
            .ok_or_else(|| {
                Error::config(format!(
                    "KMIP server {} speaks none of KMIP 1.2, 1.3, 1.4 (it offers {theirs:?})",
                    self.endpoint
                ))
            })
    }

    fn failure(&self, f: Failure, op: &str) -> Error {
        let decrypt = op == "Decrypt";
        let ctx = format!("KMIP {op} with key {:?} at {}", self.key_id, self.endpoint);
        let m = &f.message;
        match f.reason {
            Some(0x01) => Error::not_found(format!(
                "{ctx}: no object with this Unique Identifier ({m})"
            )),
            Some(0x03) => Error::denied(format!(
                "{ctx}: the server did not accept the client certificate ({}) ({m})",
                self.cert
            )),
            Some(0x0C | 0x0B) => Error::denied(format!(
                "{ctx}: permission denied (is the key Active and owned by the certificate's subject?) ({m})"
            )),
            // Object archived, attestation required or failed: the server's policy.
            Some(0x0D | 0x14 | 0x15) => Error::denied(format!(
                "{ctx}: refused by the server's policy (result reason {:#x}) ({m})",
                f.reason.unwrap_or_default()
            )),
            // General Failure says nothing by itself: a policy rejection when the server's text
            // says so (Denied); otherwise, on Decrypt, what PyKMIP reports for a failed GCM
            // authentication or CBC padding, i.e. tampering (Integrity).
            Some(0x100) if says_policy(m) => {
                Error::denied(format!("{ctx}: refused by the server's policy ({m})"))
            }
            Some(0x07 | 0x0A | 0x100) if decrypt => Error::integrity(format!(
                "{ctx}: the server cannot decrypt the wrapped key (tampered, wrong volume or wrong key) ({m})"
            )),
            Some(0x04..=0x08 | 0x0A) => Error::config(format!(
                "{ctx}: the server does not support the request or the key (AES required) ({m})"
            )),
            Some(0x02 | 0x100) | None => Error::unavailable(format!("{ctx}: server failure ({m})")),
            Some(r) => Error::unavailable(format!("{ctx}: result reason {r:#x} ({m})")),
        }
    }

    async fn call(
        &self,
        version: ProtocolVersion,
        op: u32,
        name: &str,
        payload: Vec<Item>,
    ) -> Result<Item> {
        let id = batch_id()?;
        let resp = self
            .roundtrip(&request(version, op, &id, payload), &id)
            .await?;
        response_payload(&resp, op)?.map_err(|f| self.failure(f, name))
    }

    fn params(mode: WrapMode) -> Item {
        let mut p = Vec::with_capacity(4);
        match mode {
            WrapMode::KmipAesGcm => {
                p.push(Item::new(
                    tag::BLOCK_CIPHER_MODE,
                    Value::Enumeration(MODE_GCM),
                ));
                p.push(Item::new(
                    tag::CRYPTOGRAPHIC_ALGORITHM,
                    Value::Enumeration(ALG_AES),
                ));
                p.push(Item::new(tag::TAG_LENGTH, Value::Integer(16)));
            }
            _ => {
                p.push(Item::new(
                    tag::BLOCK_CIPHER_MODE,
                    Value::Enumeration(MODE_CBC),
                ));
                p.push(Item::new(
                    tag::PADDING_METHOD,
                    Value::Enumeration(PAD_PKCS5),
                ));
                p.push(Item::new(
                    tag::CRYPTOGRAPHIC_ALGORITHM,
                    Value::Enumeration(ALG_AES),
                ));
            }
        }
        Item::structure(tag::CRYPTOGRAPHIC_PARAMETERS, p)
    }

    /// Wraps a DEK: AES-GCM with the volume id as additional data on KMIP 1.4, else AES-CBC.
    /// The result is unwrapped and compared with `dek` (constant time) before it is returned.
    pub async fn wrap(&self, dek: &Dek, volume: &VolumeId) -> Result<WrappedKey> {
        let negotiated = self.protocol_version().await?;
        let version = negotiated.min(self.max_version);
        let gcm = version >= (1, 4);
        let mode = if gcm {
            WrapMode::KmipAesGcm
        } else {
            WrapMode::KmipAesCbcPkcs5
        };
        let mut iv = vec![0u8; if gcm { GCM_IV_LEN } else { CBC_IV_LEN }];
        getrandom::fill(&mut iv).map_err(|e| Error::unavailable(format!("no randomness: {e}")))?;
        let plain = if gcm {
            Zeroizing::new(dek.expose().to_vec())
        } else {
            frame(volume, dek)
        };
        let mut payload = vec![
            Item::new(
                tag::UNIQUE_IDENTIFIER,
                Value::TextString(self.key_id.clone()),
            ),
            Self::params(mode),
            bytes(tag::DATA, &plain),
            bytes(tag::IV_COUNTER_NONCE, &iv),
        ];
        if gcm {
            payload.push(bytes(tag::AEAD_ADDITIONAL_DATA, volume.as_str().as_bytes()));
        }
        let resp = self.call(version, OP_ENCRYPT, "Encrypt", payload).await?;
        let bad = |why: &str| {
            Error::unavailable(format!(
                "KMIP Encrypt response from {}: {why}",
                self.endpoint
            ))
        };
        let ct = byte_field(&resp, tag::DATA).ok_or_else(|| bad("no Data"))?;
        if ct.len() < plain.len() {
            return Err(bad("ciphertext shorter than the plaintext"));
        }
        // A server that picks its own IV returns it; ours otherwise.
        let iv = byte_field(&resp, tag::IV_COUNTER_NONCE).map_or(iv, <[u8]>::to_vec);
        if iv.len() != if gcm { GCM_IV_LEN } else { CBC_IV_LEN } {
            return Err(bad("IV of unexpected length"));
        }
        let tag_ = if gcm {
            let t = byte_field(&resp, tag::AEAD_TAG).ok_or_else(|| {
                bad("no authentication tag (the server dropped it: is it really KMIP 1.4?)")
            })?;
            if t.len() != GCM_TAG_LEN {
                return Err(bad("authentication tag is not 16 bytes"));
            }
            Some(t.to_vec())
        } else {
            None
        };
        let record = WrappedKey {
            kms_type: KmsType::Kmip,
            endpoint: self.endpoint.clone(),
            key_id: self.key_id.clone(),
            namespace: None,
            key_version: None,
            mode,
            kmip_version: Some(version),
            iv: Some(iv),
            tag: tag_,
            ciphertext: B64.encode(ct),
            volume_id: volume.clone(),
            created_at: now_rfc3339(),
        };
        // Never hand out a record that does not give back this very key (a crossed or
        // corrupted answer): unwrap it and compare in constant time.
        let back = self
            .unwrap(&record, volume)
            .await
            .map_err(|e| crate::verify_failed(&e))?;
        crate::check_same_key(&back, dek)?;
        Ok(record)
    }

    /// Unwraps a record made by [`KmipClient::wrap`].
    /// [`KmsConfig::check_record`] against this client's configuration.
    pub(crate) fn check_record(&self, key: &WrappedKey) -> Result<()> {
        self.target.check_record(key)
    }

    /// The record must name this client's endpoint and key ([`KmsConfig::check_record`]) and
    /// belong to `volume`; both are checked before any request.
    pub async fn unwrap(&self, key: &WrappedKey, volume: &VolumeId) -> Result<Dek> {
        self.check_record(key)?;
        if key.volume_id != *volume {
            return Err(Error::integrity(format!(
                "the wrapped key belongs to volume {}, not to {volume}",
                key.volume_id
            )));
        }
        let version = key
            .kmip_version
            .ok_or_else(|| Error::config("record without kmipVersion"))?;
        let ct = B64
            .decode(&key.ciphertext)
            .map_err(|_| Error::config("record ciphertext is not base64"))?;
        let iv = key
            .iv
            .as_deref()
            .ok_or_else(|| Error::config("record without iv"))?;
        let mut payload = vec![
            Item::new(
                tag::UNIQUE_IDENTIFIER,
                Value::TextString(self.key_id.clone()),
            ),
            Self::params(key.mode),
            bytes(tag::DATA, &ct),
            bytes(tag::IV_COUNTER_NONCE, iv),
        ];
        if key.mode == WrapMode::KmipAesGcm {
            let t = key
                .tag
                .as_deref()
                .ok_or_else(|| Error::config("record without tag"))?;
            payload.push(bytes(tag::AEAD_ADDITIONAL_DATA, volume.as_str().as_bytes()));
            payload.push(bytes(tag::AEAD_TAG, t));
        }
        let resp = self.call(version, OP_DECRYPT, "Decrypt", payload).await?;
        let plain = byte_field(&resp, tag::DATA).ok_or_else(|| {
            Error::unavailable(format!(
                "KMIP Decrypt response from {}: no Data",
                self.endpoint
            ))
        })?;
        match key.mode {
            WrapMode::KmipAesGcm => Dek::from_slice(plain),
            _ => unframe(volume, plain),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(op: u32, status: u32, reason: Option<u32>, payload: Vec<Item>) -> Item {
        let mut batch = vec![
            Item::new(tag::OPERATION, Value::Enumeration(op)),
            Item::new(tag::RESULT_STATUS, Value::Enumeration(status)),
        ];
        if let Some(r) = reason {
            batch.push(Item::new(tag::RESULT_REASON, Value::Enumeration(r)));
            batch.push(Item::new(
                tag::RESULT_MESSAGE,
                Value::TextString("nope".into()),
            ));
        }
        batch.push(Item::structure(tag::RESPONSE_PAYLOAD, payload));
        Item::structure(
            tag::RESPONSE_MESSAGE,
            vec![
                Item::structure(tag::RESPONSE_HEADER, vec![pv((1, 4))]),
                Item::structure(tag::BATCH_ITEM, batch),
            ],
        )
    }

    #[test]
    fn request_layout() {
        let r = request(
            (1, 4),
            OP_ENCRYPT,
            b"12345678",
            vec![Item::new(
                tag::UNIQUE_IDENTIFIER,
                Value::TextString("1".into()),
            )],
        );
        let bytes = ttlv::encode(&r);
        assert_eq!(&bytes[..4], &[0x42, 0x00, 0x78, 0x01]);
        let back = ttlv::decode(&bytes).unwrap();
        let batch = back.child(tag::BATCH_ITEM).unwrap();
        assert_eq!(
            batch.child(tag::OPERATION).unwrap().value,
            Value::Enumeration(OP_ENCRYPT)
        );
        let hdr = back.child(tag::REQUEST_HEADER).unwrap();
        assert_eq!(
            parse_version(hdr.child(tag::PROTOCOL_VERSION).unwrap()),
            Some((1, 4))
        );
    }

    #[test]
    fn answers_must_carry_the_requests_batch_id() {
        let with_id = |id: Option<&[u8]>| {
            let mut batch = vec![Item::new(tag::OPERATION, Value::Enumeration(OP_ENCRYPT))];
            if let Some(id) = id {
                batch.push(bytes(tag::UNIQUE_BATCH_ITEM_ID, id));
            }
            batch.push(Item::new(tag::RESULT_STATUS, Value::Enumeration(0)));
            Item::structure(
                tag::RESPONSE_MESSAGE,
                vec![
                    Item::structure(tag::RESPONSE_HEADER, vec![pv((1, 4))]),
                    Item::structure(tag::BATCH_ITEM, batch),
                ],
            )
        };
        assert_eq!(
            check_answers(&with_id(Some(b"id-00001")), b"id-00001"),
            Ok(())
        );
        assert!(
            check_answers(&with_id(Some(b"id-00002")), b"id-00001")
                .unwrap_err()
                .contains("another request")
        );
        // KMIP requires the echo; a server that omits it is still understood.
        assert_eq!(check_answers(&with_id(None), b"id-00001"), Ok(()));
        let not_response = Item::structure(tag::REQUEST_MESSAGE, vec![]);
        assert!(check_answers(&not_response, b"id-00001").is_err());
        // Every request carries a fresh random ID.
        let r = request((1, 4), OP_ENCRYPT, &batch_id().unwrap(), vec![]);
        let batch = r.child(tag::BATCH_ITEM).unwrap();
        assert!(matches!(
            batch.child(tag::UNIQUE_BATCH_ITEM_ID).map(|i| &i.value),
            Some(Value::ByteString(id)) if id.len() == BATCH_ID_LEN
        ));
        assert_ne!(batch_id().unwrap(), batch_id().unwrap());
    }

    fn test_client() -> KmipClient {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["client".to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let secrets = [
            ("ca.crt".to_owned(), cert.pem()),
            ("tls.crt".to_owned(), cert.pem()),
            ("tls.key".to_owned(), key.serialize_pem()),
        ]
        .into();
        let cfg = KmsConfig::new(KmsType::Kmip, "10.0.0.1:5696", "7", None, &secrets).unwrap();
        KmipClient::new(&cfg).unwrap()
    }

    /// Policy rejections are Denied, tampering stays Integrity.
    #[test]
    fn failure_classes() {
        use crate::ErrorKind::*;
        let c = test_client();
        let kind = |reason: u32, message: &str, op: &str| {
            c.failure(
                Failure {
                    reason: Some(reason),
                    message: message.to_owned(),
                },
                op,
            )
            .kind()
        };
        // PyKMIP's General Failure for a failed GCM tag or CBC padding: tampering.
        let pykmip = "Operation failed. See the server logs for more information.";
        assert_eq!(kind(0x100, pykmip, "Decrypt"), Integrity);
        assert_eq!(kind(0x0A, "bad tag", "Decrypt"), Integrity);
        assert_eq!(kind(0x100, pykmip, "Encrypt"), Unavailable);
        // General Failure whose text is a policy rejection: Denied, for either operation.
        for op in ["Decrypt", "Encrypt"] {
            assert_eq!(
                kind(0x100, "Unauthorized: user has no Decrypt access right", op),
                Denied
            );
            assert_eq!(kind(0x100, "Permission denied by policy", op), Denied);
        }
        assert_eq!(kind(0x0C, "", "Decrypt"), Denied);
        assert_eq!(kind(0x15, "attestation failed", "Decrypt"), Denied);
        assert_eq!(kind(0x0D, "archived", "Encrypt"), Denied);
        assert_eq!(kind(0x01, "", "Decrypt"), NotFound);
    }

    #[test]
    fn response_status_and_reasons() {
        let ok = response(OP_ENCRYPT, 0, None, vec![bytes(tag::DATA, &[1, 2])]);
        let p = response_payload(&ok, OP_ENCRYPT).unwrap().unwrap();
        assert_eq!(byte_field(&p, tag::DATA), Some(&[1u8, 2][..]));
        assert!(response_payload(&ok, OP_DECRYPT).is_err());
        let failed = response(OP_DECRYPT, 1, Some(1), vec![]);
        let f = response_payload(&failed, OP_DECRYPT).unwrap().unwrap_err();
        assert_eq!(f.reason, Some(1));
        assert_eq!(f.message, "nope");
        let pending = response(OP_DECRYPT, 2, None, vec![]);
        assert!(response_payload(&pending, OP_DECRYPT).is_err());
        let not_response = Item::structure(tag::REQUEST_MESSAGE, vec![]);
        assert!(response_payload(&not_response, OP_DECRYPT).is_err());
    }
}

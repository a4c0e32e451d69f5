//! OpenBao / HashiCorp Vault Transit client (engine mounted at `transit/`).
//!
//! Requests: `POST /v1/transit/{encrypt,decrypt,rewrap}/<key>`, token in `X-Vault-Token`,
//! optional `X-Vault-Namespace`. Responses are classified by HTTP status first
//! ([`parse_response`], a pure function also used by the fuzz target).

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use bytes::Bytes;
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use serde::Deserialize;
use zeroize::{Zeroize, Zeroizing};

use crate::config::{Credentials, Endpoint, KeyTarget, KmsConfig};
use crate::error::{Error, ErrorKind, Result, server_text};
use crate::record::{KmsType, WrapMode, WrappedKey, now_rfc3339, transit_ciphertext_version};
use crate::secret::{Dek, Token, VolumeId, frame, unframe};

const VAULT_TOKEN: HeaderName = HeaderName::from_static("x-vault-token");
const VAULT_NAMESPACE: HeaderName = HeaderName::from_static("x-vault-namespace");
use crate::tls::{classify_tls, find_rustls_error, transit_config};

/// Largest response body read from the server.
const MAX_BODY: usize = 64 * 1024;

/// Which Transit call a response answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operation {
    /// `transit/encrypt/<key>`
    Encrypt,
    /// `transit/decrypt/<key>`
    Decrypt,
    /// `transit/rewrap/<key>`
    Rewrap,
}

impl Operation {
    fn path(self) -> &'static str {
        match self {
            Self::Encrypt => "encrypt",
            Self::Decrypt => "decrypt",
            Self::Rewrap => "rewrap",
        }
    }
}

/// A successful Transit answer.
#[derive(Debug)]
pub enum Response {
    /// From encrypt and rewrap: `vault:v<N>:…` and N.
    Ciphertext {
        /// The ciphertext exactly as returned.
        ciphertext: String,
        /// The key version that produced it.
        key_version: u64,
    },
    /// From decrypt: the plaintext bytes (zeroized on drop).
    Plaintext(Zeroizing<Vec<u8>>),
}

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(borrow, default)]
    data: Option<Data<'a>>,
    #[serde(default)]
    errors: Option<Vec<String>>,
}

#[derive(Deserialize)]
struct Data<'a> {
    #[serde(default)]
    ciphertext: Option<String>,
    #[serde(default)]
    key_version: Option<u64>,
    /// Borrowed from the body when it has no escapes (the usual case), so no extra copy.
    #[serde(borrow, default)]
    plaintext: Option<std::borrow::Cow<'a, str>>,
}

/// Classifies and parses a Transit HTTP response. Pure: no I/O, bounded by the body length.
pub fn parse_response(op: Operation, status: u16, body: &[u8]) -> Result<Response> {
    if body.len() > MAX_BODY {
        return Err(Error::unavailable(format!(
            "response body larger than {MAX_BODY} bytes"
        )));
    }
    let env: Option<Envelope<'_>> = serde_json::from_slice(body).ok();
    let text = env
        .as_ref()
        .and_then(|e| e.errors.as_ref())
        .map(|errs| server_text(&errs.join("; ")))
        .unwrap_or_default();
    let says = |s: &str| text.to_ascii_lowercase().contains(s);
    match status {
        200 => {}
        400 => {
            let err = if says("encryption key not found") || says("key not found") {
                Error::not_found(format!("no such transit key ({text})"))
            } else if op == Operation::Encrypt {
                Error::config(format!("the server rejected the encrypt request: {text}"))
            } else if says("disallowed by policy") || says("too old") {
                // The key's policy, not the ciphertext: min_decryption_version is above the KEK
                // version that wrapped this key. Not tampering: rewrap records before raising it.
                Error::denied(format!(
                    "the transit key's policy refuses this key version (min_decryption_version is above the version that wrapped it; lower it, or rewrap records before raising it): {text}"
                ))
            } else {
                Error::integrity(format!(
                    "the server cannot decrypt the wrapped key (tampered, wrong volume or wrong key): {text}"
                ))
            };
            return Err(err);
        }
        401 | 403 => {
            return Err(Error::denied(format!(
                "permission denied: the token is invalid, expired or revoked, or its policy does not allow transit/{}/<key> ({text})",
                op.path()
            )));
        }
        404 => {
            return Err(Error::not_found(format!(
                "no transit engine at transit/ (or no such namespace or key) ({text})"
            )));
        }
        503 if says("sealed") => {
            return Err(Error::unavailable(format!("the server is sealed ({text})")));
        }
        s if (300..400).contains(&s) => {
            return Err(Error::unavailable(format!(
                "HTTP {s} redirect (not followed: it could carry the token elsewhere)"
            )));
        }
        s if s == 429 || s >= 500 => {
            return Err(Error::unavailable(format!("HTTP {s} ({text})")));
        }
        s => return Err(Error::unavailable(format!("unexpected HTTP {s} ({text})"))),
    }
    let data = env
        .and_then(|e| e.data)
        .ok_or_else(|| Error::unavailable("HTTP 200 without a JSON data object"))?;
    match op {
        Operation::Encrypt | Operation::Rewrap => {
            let ciphertext = data
                .ciphertext
                .ok_or_else(|| Error::unavailable("response has no data.ciphertext"))?;
            let version = transit_ciphertext_version(&ciphertext).ok_or_else(|| {
                Error::unavailable("response ciphertext is not vault:v<N>:<base64>")
            })?;
            if data.key_version.is_some_and(|v| v != version) {
                return Err(Error::unavailable(
                    "response key_version contradicts the ciphertext prefix",
                ));
            }
            Ok(Response::Ciphertext {
                ciphertext,
                key_version: version,
            })
        }
        Operation::Decrypt => {
            let p = data
                .plaintext
                .ok_or_else(|| Error::unavailable("response has no data.plaintext"))?;
            let p = Zeroizing::new(p.into_owned());
            let mut out = Zeroizing::new(Vec::with_capacity(p.len()));
            B64.decode_vec(p.as_bytes(), &mut out)
                .map_err(|_| Error::unavailable("response plaintext is not base64"))?;
            Ok(Response::Plaintext(out))
        }
    }
}

/// The token's state as the server reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenInfo {
    /// Policies attached to the token.
    pub policies: Vec<String>,
    /// RFC 3339 expiry, `None` for tokens that never expire.
    pub expire_time: Option<String>,
    /// Remaining time to live (zero for tokens that never expire).
    pub ttl: Duration,
    /// Whether `bao token renew` can extend it.
    pub renewable: bool,
    /// The period of a periodic token.
    pub period: Option<Duration>,
}

/// A Transit client. Cheap to share: the HTTP connection pool is reused across calls.
pub struct TransitClient {
    http: reqwest::Client,
    endpoint: String,
    key: String,
    /// Kind, endpoint, key and namespace: what a record must name.
    target: Box<KeyTarget>,
    /// Token (sensitive, built once, wiped when the last request holding it is gone), optional
    /// namespace, content type: shared by every request, never copied per request.
    headers: HeaderMap,
    request_timeout: Duration,
}

impl std::fmt::Debug for TransitClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TransitClient")
            .field("endpoint", &self.endpoint)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

/// The `X-Vault-Token` value: built once per client from a zeroizing buffer (wiped when the
/// last clone of the header is dropped) and marked sensitive (hyper and `Debug` hide it).
fn token_header(token: &Token) -> Result<HeaderValue> {
    let owned = Zeroizing::new(token.expose().as_bytes().to_vec());
    let mut v = HeaderValue::from_maybe_shared(Bytes::from_owner(owned))
        .map_err(|_| Error::config("the token is not a valid header value"))?;
    v.set_sensitive(true);
    Ok(v)
}

/// Logs once per endpoint (per process) that Transit over plain http sends the token and the
/// keys in clear; returns whether it logged.
fn warn_plain_http_once(endpoint: &str) -> bool {
    use std::collections::HashSet;
    use std::sync::{Mutex, OnceLock};
    static WARNED: OnceLock<Mutex<HashSet<String>>> = OnceLock::new();
    let first = WARNED
        .get_or_init(Default::default)
        .lock()
        .map_or(true, |mut set| set.insert(endpoint.to_owned()));
    if first {
        tracing::warn!(
            endpoint,
            "transit over plain http: the token and every data key travel in clear; use https:// with ca.crt"
        );
    }
    first
}

#[derive(serde::Serialize)]
struct Request<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    plaintext: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ciphertext: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    associated_data: Option<&'a str>,
}

impl TransitClient {
    /// Builds a client from a transit configuration (no network I/O yet).
    pub fn new(config: &KmsConfig) -> Result<Self> {
        let (Credentials::Transit { token, ca }, Endpoint::Http { .. }) =
            (&config.credentials, config.endpoint())
        else {
            return Err(Error::config("not a transit configuration"));
        };
        let t = config.timeouts();
        if let Endpoint::Http { tls: false, .. } = config.endpoint() {
            warn_plain_http_once(&config.endpoint().to_string());
        }
        // Always hand reqwest our rustls config (ring provider): it has no provider of its own.
        // Never through a proxy: HTTP_PROXY/HTTPS_PROXY/ALL_PROXY are ignored, so neither the
        // token nor a key ever passes a third party (or, over http, travels to one in clear).
        let builder = reqwest::Client::builder()
            .no_proxy()
            .connect_timeout(t.connect)
            .timeout(t.request)
            .pool_idle_timeout(Duration::from_secs(60))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("onmetal-csi-driver/", env!("CARGO_PKG_VERSION")))
            .use_preconfigured_tls(transit_config(ca.as_ref())?);
        let http = builder
            .build()
            .map_err(|e| Error::config(format!("HTTP client setup: {e}")))?;
        let mut headers = HeaderMap::new();
        headers.insert(VAULT_TOKEN, token_header(token)?);
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if let Some(ns) = config.namespace() {
            let v = HeaderValue::from_str(ns)
                .map_err(|_| Error::config("namespace is not a valid header value"))?;
            headers.insert(VAULT_NAMESPACE, v);
        }
        Ok(Self {
            http,
            endpoint: config.endpoint().to_string(),
            key: config.key_id().to_owned(),
            target: Box::new(config.target.clone()),
            headers,
            request_timeout: t.request,
        })
    }

    /// The headers of every request: shared values, the token not copied.
    fn request_headers(&self) -> HeaderMap {
        self.headers.clone()
    }

    fn url(&self, path: &str) -> String {
        format!("{}/v1/{path}", self.endpoint)
    }

    async fn send(
        &self,
        path: &str,
        body: Option<Zeroizing<Vec<u8>>>,
    ) -> Result<(u16, Zeroizing<Vec<u8>>)> {
        let resp = self.send_request(path, body).await?;
        let status = resp.status().as_u16();
        Ok((status, self.read_body(resp).await?))
    }

    /// Sends a request and returns the answer's head; the body is read by [`Self::read_body`].
    async fn send_request(
        &self,
        path: &str,
        body: Option<Zeroizing<Vec<u8>>>,
    ) -> Result<reqwest::Response> {
        let req = match body {
            Some(b) => self.http.post(self.url(path)).body(Bytes::from_owner(b)),
            None => self.http.get(self.url(path)),
        };
        req.headers(self.request_headers())
            .send()
            .await
            .map_err(|e| self.classify_send_error(&e))
    }

    /// Reads a response body into a zeroizing buffer, at most [`MAX_BODY`] bytes.
    async fn read_body(&self, mut resp: reqwest::Response) -> Result<Zeroizing<Vec<u8>>> {
        let too_large = || {
            Error::unavailable(format!(
                "{}: response body larger than {MAX_BODY} bytes",
                self.endpoint
            ))
        };
        if resp.content_length().is_some_and(|l| l > MAX_BODY as u64) {
            return Err(too_large());
        }
        // Read chunk by chunk and stop at the cap: a chunked (or lying) answer is never read
        // whole first. The buffer is allocated once at the cap, so it never reallocates and
        // leaves no unwiped copy of a plaintext behind.
        let mut out = Zeroizing::new(Vec::with_capacity(MAX_BODY));
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| self.classify_send_error(&e))?
        {
            let fits = out.len().saturating_add(chunk.len()) <= MAX_BODY;
            if fits {
                out.extend_from_slice(&chunk);
            }
            // Wipe the HTTP stack's buffer where we own it.
            if let Ok(mut m) = chunk.try_into_mut() {
                m.zeroize();
            }
            if !fits {
                return Err(too_large());
            }
        }
        Ok(out)
    }

    fn classify_send_error(&self, e: &reqwest::Error) -> Error {
        if let Some(tls) = find_rustls_error(e) {
            return classify_tls(tls, &self.endpoint, None);
        }
        let msg = if e.is_timeout() {
            format!(
                "{} did not answer within {} s (timeout)",
                self.endpoint,
                self.request_timeout.as_secs_f32()
            )
        } else if e.is_connect() {
            format!("cannot connect to {}", self.endpoint)
        } else {
            format!("request to {} failed", self.endpoint)
        };
        let mut chain = String::new();
        let mut next: Option<&(dyn std::error::Error + 'static)> = Some(e);
        while let Some(err) = next {
            let t = err.to_string();
            if !chain.contains(&t) {
                chain.push_str(": ");
                chain.push_str(&t);
            }
            next = err.source();
        }
        // reqwest's messages name the URL (endpoint and key name), never headers or bodies.
        Error::unavailable(format!("{msg}{chain}"))
    }

    /// One call with a single quick retry on 429/500/502/504 or a failed connection (kubelet
    /// does the long retries).
    async fn call(&self, op: Operation, body: &Request<'_>) -> Result<Response> {
        let path = format!("transit/{}/{}", op.path(), self.key);
        let mut buf = Zeroizing::new(Vec::with_capacity(1024));
        serde_json::to_writer(&mut *buf, body)
            .map_err(|e| Error::config(format!("request encoding: {e}")))?;
        let mut retried = false;
        loop {
            let body = Some(Zeroizing::new(buf.to_vec()));
            let resp = match self.send_request(&path, body).await {
                // A pooled connection the server closed (restart, idle timeout): once more on a
                // fresh one. Timeouts are not retried: the time budget is spent; nor is anything
                // after the answer's head arrived (a body too large, cut or malformed).
                Err(e)
                    if !retried
                        && e.kind() == ErrorKind::Unavailable
                        && !e.message().contains("timeout") =>
                {
                    retried = true;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
                other => other?,
            };
            let status = resp.status().as_u16();
            if matches!(status, 429 | 500 | 502 | 504) && !retried {
                retried = true;
                tokio::time::sleep(Duration::from_millis(300)).await;
                continue;
            }
            let resp = self.read_body(resp).await?;
            return match parse_response(op, status, &resp) {
                Err(e) if matches!(status, 401 | 403) => Err(self.explain_denied(op, e).await),
                Err(e) => Err(Error::new(
                    e.kind(),
                    format!(
                        "transit {} with key {:?} at {}: {}",
                        op.path(),
                        self.key,
                        self.endpoint,
                        e.message()
                    ),
                )),
                Ok(r) => Ok(r),
            };
        }
    }

    /// What the server says about the token (`GET auth/token/lookup-self`, allowed by OpenBao's
    /// default policy). The driver never renews tokens; operators can watch the expiry here.
    pub async fn token_info(&self) -> Result<TokenInfo> {
        #[derive(Deserialize)]
        struct Lookup {
            data: LookupData,
        }
        #[derive(Deserialize)]
        struct LookupData {
            #[serde(default)]
            policies: Vec<String>,
            #[serde(default)]
            expire_time: Option<String>,
            #[serde(default)]
            ttl: u64,
            #[serde(default)]
            renewable: bool,
            #[serde(default)]
            period: Option<u64>,
        }
        let (status, body) = self.send("auth/token/lookup-self", None).await?;
        match status {
            200 => {
                let l: Lookup = serde_json::from_slice(&body).map_err(|_| {
                    Error::unavailable(format!(
                        "{}: malformed auth/token/lookup-self answer",
                        self.endpoint
                    ))
                })?;
                Ok(TokenInfo {
                    policies: l.data.policies,
                    expire_time: l.data.expire_time,
                    ttl: Duration::from_secs(l.data.ttl),
                    renewable: l.data.renewable,
                    period: l.data.period.filter(|p| *p > 0).map(Duration::from_secs),
                })
            }
            401 | 403 => Err(Error::denied(format!(
                "the token is invalid, expired or revoked ({} refused auth/token/lookup-self): store a valid token in the Secret",
                self.endpoint
            ))),
            s => Err(Error::unavailable(format!(
                "{}: auth/token/lookup-self answered HTTP {s}",
                self.endpoint
            ))),
        }
    }

    /// Tells a dead token from a policy problem with `auth/token/lookup-self`.
    async fn explain_denied(&self, op: Operation, e: Error) -> Error {
        let path = format!("transit/{}/{}", op.path(), self.key);
        match self.token_info().await {
            Ok(t) => Error::denied(format!(
                "the token (policies {:?}, expires {}) is not allowed to update {path} at {}: grant \"update\" on that path",
                t.policies,
                t.expire_time.as_deref().unwrap_or("never"),
                self.endpoint
            )),
            Err(dead) if dead.kind() == ErrorKind::Denied => Error::denied(format!(
                "the token is invalid, expired or revoked ({} refused {path} and auth/token/lookup-self): store a valid token in the Secret",
                self.endpoint
            )),
            Err(_) => Error::denied(format!("{path} at {}: {}", self.endpoint, e.message())),
        }
    }

    /// Wraps with the default binding ([`WrapMode::TransitFramed`]). Like every wrap, the result
    /// is unwrapped and compared with `dek` before it is returned (needs `update` on
    /// `transit/decrypt/<key>` too, as the documented policy grants).
    pub async fn wrap(&self, dek: &Dek, volume: &VolumeId) -> Result<WrappedKey> {
        self.wrap_with(WrapMode::TransitFramed, dek, volume).await
    }

    /// Wraps with an explicit binding: [`WrapMode::TransitFramed`] (rewrappable) or
    /// [`WrapMode::TransitAssociatedData`] (the server checks the volume id; not rewrappable).
    pub async fn wrap_with(
        &self,
        mode: WrapMode,
        dek: &Dek,
        volume: &VolumeId,
    ) -> Result<WrappedKey> {
        let plain = match mode {
            WrapMode::TransitFramed => frame(volume, dek),
            WrapMode::TransitAssociatedData => Zeroizing::new(dek.expose().to_vec()),
            _ => return Err(Error::config(format!("{mode:?} is not a transit mode"))),
        };
        let b64 = Zeroizing::new(B64.encode(&*plain));
        let ad = B64.encode(volume.as_str());
        let req = Request {
            plaintext: Some(&b64),
            ciphertext: None,
            associated_data: (mode == WrapMode::TransitAssociatedData).then_some(ad.as_str()),
        };
        let Response::Ciphertext {
            ciphertext,
            key_version,
        } = self.call(Operation::Encrypt, &req).await?
        else {
            return Err(Error::unavailable("encrypt answered with plaintext"));
        };
        let record = WrappedKey {
            kms_type: KmsType::Transit,
            endpoint: self.endpoint.clone(),
            key_id: self.key.clone(),
            namespace: self.target.namespace.clone(),
            key_version: Some(key_version),
            mode,
            kmip_version: None,
            iv: None,
            tag: None,
            ciphertext,
            volume_id: volume.clone(),
            created_at: now_rfc3339(),
        };
        // Never hand out a record that does not give back this very key: unwrap it and
        // compare in constant time.
        let back = self
            .unwrap(&record, volume)
            .await
            .map_err(|e| crate::verify_failed(&e))?;
        crate::check_same_key(&back, dek)?;
        Ok(record)
    }

    /// Unwraps a record written by [`TransitClient::wrap`] or [`TransitClient::wrap_with`].
    pub async fn unwrap(&self, key: &WrappedKey, volume: &VolumeId) -> Result<Dek> {
        self.check_record(key, volume)?;
        let ad = B64.encode(volume.as_str());
        let req = Request {
            plaintext: None,
            ciphertext: Some(&key.ciphertext),
            associated_data: (key.mode == WrapMode::TransitAssociatedData).then_some(ad.as_str()),
        };
        let Response::Plaintext(plain) = self.call(Operation::Decrypt, &req).await? else {
            return Err(Error::unavailable("decrypt answered without plaintext"));
        };
        match key.mode {
            WrapMode::TransitFramed => unframe(volume, &plain),
            _ => Dek::from_slice(&plain),
        }
    }

    /// Re-encrypts a wrapped key under the key's latest version on the server; the DEK never
    /// leaves OpenBao. Needs `update` on `transit/rewrap/<key>` (not in the documented
    /// wrap/unwrap policy: an operator token does this).
    pub async fn rewrap(&self, key: &WrappedKey) -> Result<WrappedKey> {
        self.check_record(key, &key.volume_id)?;
        if key.mode != WrapMode::TransitFramed {
            return Err(Error::config(
                "this wrapped key is bound with associated_data, which OpenBao's rewrap does not pass on: unwrap and wrap it again instead",
            ));
        }
        let req = Request {
            plaintext: None,
            ciphertext: Some(&key.ciphertext),
            associated_data: None,
        };
        let Response::Ciphertext {
            ciphertext,
            key_version,
        } = self.call(Operation::Rewrap, &req).await?
        else {
            return Err(Error::unavailable("rewrap answered with plaintext"));
        };
        Ok(WrappedKey {
            ciphertext,
            key_version: Some(key_version),
            created_at: now_rfc3339(),
            ..key.clone()
        })
    }

    /// The record must name this client's KMS, endpoint, key and namespace
    /// ([`KmsConfig::check_record`]) and belong to `volume`; checked before any request.
    fn check_record(&self, key: &WrappedKey, volume: &VolumeId) -> Result<()> {
        self.target.check_record(key)?;
        if key.volume_id != *volume {
            return Err(Error::integrity(format!(
                "the wrapped key belongs to volume {}, not to {volume}",
                key.volume_id
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_classes() {
        let e = |status, body: &str, op| {
            parse_response(op, status, body.as_bytes())
                .unwrap_err()
                .kind()
        };
        use ErrorKind::*;
        use Operation::*;
        assert_eq!(
            e(400, r#"{"errors":["encryption key not found"]}"#, Decrypt),
            NotFound
        );
        assert_eq!(
            e(
                400,
                r#"{"errors":["cipher: message authentication failed"]}"#,
                Decrypt
            ),
            Integrity
        );
        assert_eq!(
            e(
                400,
                r#"{"errors":["invalid ciphertext: version is too new"]}"#,
                Rewrap
            ),
            Integrity
        );
        assert_eq!(e(400, r#"{"errors":["bad"]}"#, Encrypt), InvalidConfig);
        // A min_decryption_version rejection is the key's policy, not tampering (OpenBao 2.7's
        // text for decrypt and rewrap).
        for op in [Decrypt, Rewrap] {
            assert_eq!(
                e(
                    400,
                    r#"{"errors":["invalid ciphertext: ciphertext or signature version is disallowed by policy (too old)"]}"#,
                    op
                ),
                Denied
            );
        }
        assert_eq!(
            e(
                400,
                r#"{"errors":["invalid ciphertext: no prefix"]}"#,
                Decrypt
            ),
            Integrity
        );
        assert_eq!(
            e(403, r#"{"errors":["permission denied"]}"#, Encrypt),
            Denied
        );
        assert_eq!(e(404, "", Encrypt), NotFound);
        assert_eq!(
            e(503, r#"{"errors":["Vault is sealed"]}"#, Decrypt),
            Unavailable
        );
        assert_eq!(e(429, "", Decrypt), Unavailable);
        assert_eq!(e(502, "<html>", Decrypt), Unavailable);
        assert_eq!(e(307, "", Decrypt), Unavailable);
        assert_eq!(e(200, "{}", Decrypt), Unavailable);
        assert_eq!(
            e(200, r#"{"data":{"ciphertext":"x"}}"#, Encrypt),
            Unavailable
        );
        assert_eq!(
            e(200, r#"{"data":{"plaintext":"!!"}}"#, Decrypt),
            Unavailable
        );
        assert_eq!(e(200, &" ".repeat(MAX_BODY + 1), Decrypt), Unavailable);
    }

    fn client(endpoint: &str) -> TransitClient {
        let secrets = [("token".to_owned(), "s.header-token".to_owned())].into();
        let cfg = KmsConfig::new(KmsType::Transit, endpoint, "k", Some("ns"), &secrets).unwrap();
        TransitClient::new(&cfg).unwrap()
    }

    /// The token header is built once and shared by every request (no per-request copy of the
    /// token), marked sensitive.
    #[test]
    fn token_header_is_built_once_and_sensitive() {
        let c = client("https://10.0.0.1:8200");
        let (a, b) = (c.request_headers(), c.request_headers());
        let (ta, tb) = (&a[VAULT_TOKEN], &b[VAULT_TOKEN]);
        assert!(ta.is_sensitive());
        assert_eq!(ta.as_bytes(), b"s.header-token");
        assert_eq!(
            ta.as_bytes().as_ptr(),
            tb.as_bytes().as_ptr(),
            "token copied"
        );
        assert_eq!(a[VAULT_NAMESPACE], "ns");
        assert!(!format!("{a:?}").contains("header-token"));
    }

    #[test]
    fn plain_http_warns_once_per_endpoint() {
        assert!(warn_plain_http_once("http://192.0.2.7:8200"));
        assert!(!warn_plain_http_once("http://192.0.2.7:8200"));
        assert!(warn_plain_http_once("http://192.0.2.8:8200"));
        // Building clients goes through it: an http endpoint is warned about once.
        let _ = client("http://192.0.2.9:8200");
        assert!(!warn_plain_http_once("http://192.0.2.9:8200"));
        let _ = client("https://192.0.2.10:8200");
        assert!(warn_plain_http_once("https://192.0.2.10:8200"));
    }

    #[test]
    fn parses_success() {
        let r = parse_response(
            Operation::Encrypt,
            200,
            br#"{"data":{"ciphertext":"vault:v3:AAAA","key_version":3}}"#,
        )
        .unwrap();
        assert!(matches!(r, Response::Ciphertext { key_version: 3, .. }));
        let r =
            parse_response(Operation::Decrypt, 200, br#"{"data":{"plaintext":"AAEC"}}"#).unwrap();
        let Response::Plaintext(p) = r else {
            panic!("not plaintext")
        };
        assert_eq!(&p[..], &[0, 1, 2]);
        // JSON escapes (e.g. "\/") are legal and must not break the parse.
        let r = parse_response(
            Operation::Decrypt,
            200,
            br#"{"data":{"plaintext":"\/\/8="}}"#,
        )
        .unwrap();
        let Response::Plaintext(p) = r else {
            panic!("not plaintext")
        };
        assert_eq!(&p[..], &[0xff, 0xff]);
        let err = parse_response(
            Operation::Encrypt,
            200,
            br#"{"data":{"ciphertext":"vault:v3:AAAA","key_version":2}}"#,
        )
        .unwrap_err();
        assert!(err.message().contains("contradicts"));
    }
}

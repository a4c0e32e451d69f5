//! An in-process stand-in for the Kubernetes API server, for Secrets only, on 127.0.0.1 (no
//! kube-apiserver binary can be had on these machines). It answers like the real one does:
//! `Status` objects with `reason`, `code` and `details`; 201 on create, 404 `NotFound`, 409
//! `AlreadyExists` and `Conflict` (a stale `metadata.resourceVersion` on PUT), 422 `Invalid`
//! (an invalid name, data key or label, a `resourceVersion` on create, a changed `type`), 400
//! `BadRequest` (name or namespace differing from the URL); a fresh `resourceVersion` per write;
//! label selectors (`k=v,...`) and `limit`/`continue` paging on list; `fieldManager` accepted
//! and ignored; over TLS with a bearer token when started with [`FakeApiServer::start_tls`]
//! (401 `Unauthorized` without it). Faults are queued per HTTP method and consumed one per
//! request.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// What to do to one request instead of (or around) answering it normally.
#[derive(Clone, Debug)]
pub enum Fault {
    /// Answer with a `Status` of this code; nothing is applied.
    Status(u16),
    /// 429 with `details.retryAfterSeconds`.
    TooManyRequests(u32),
    /// A proxy's plain-text error page with this code; nothing is applied.
    PlainText(u16),
    /// Sleep, then handle the request (if the client is still waiting).
    Delay(Duration),
    /// Apply the request, then answer with a `Status` of this code (a lost answer).
    AppliedThenStatus(u16),
    /// Apply the request, then sleep before answering.
    AppliedThenDelay(Duration),
    /// Another writer stores this Secret (name from its metadata) just before the request.
    Race(Value),
}

#[derive(Default)]
struct Inner {
    /// (namespace, name) → the stored object.
    objects: BTreeMap<(String, String), Value>,
    next_rv: u64,
    faults: VecDeque<(Method, Fault)>,
    /// Every request: "METHOD path?query".
    log: Vec<String>,
    /// Largest page a list returns, whatever `limit` asks (the API server may return fewer).
    page_cap: usize,
    /// `Authorization: Bearer <token>` required on every request.
    token: Option<String>,
}

type Shared = Arc<Mutex<Inner>>;

/// A running fake API server; stopped on drop.
pub struct FakeApiServer {
    addr: SocketAddr,
    tls: bool,
    state: Shared,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl FakeApiServer {
    /// Starts one on a free port of 127.0.0.1 (plain HTTP, no authentication).
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1");
        Self::serve(listener, None, false)
    }

    /// Starts one over TLS with `config`, requiring `Authorization: Bearer <token>`.
    pub async fn start_tls(config: rustls::ServerConfig, token: &str) -> Self {
        let tcp = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1");
        let listener = TlsListener {
            tcp,
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
        };
        Self::serve(listener, Some(token.to_owned()), true)
    }

    fn serve<L>(listener: L, token: Option<String>, tls: bool) -> Self
    where
        L: axum::serve::Listener<Addr = SocketAddr>,
    {
        let state: Shared = Arc::new(Mutex::new(Inner {
            next_rv: 1000,
            page_cap: usize::MAX,
            token,
            ..Inner::default()
        }));
        let app = Router::new().fallback(handle).with_state(state.clone());
        let addr = listener.local_addr().expect("local addr");
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = rx.await;
                })
                .await;
        });
        FakeApiServer {
            addr,
            tls,
            state,
            stop: Some(tx),
            task: Some(task),
        }
    }

    /// `http(s)://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// Queues a fault for the next request with `method`.
    pub fn fault(&self, method: Method, fault: Fault) {
        self.lock().faults.push_back((method, fault));
    }

    /// Caps the page size of list answers.
    pub fn set_page_cap(&self, cap: usize) {
        self.lock().page_cap = cap;
    }

    /// The stored object, as the server keeps it.
    pub fn object(&self, ns: &str, name: &str) -> Option<Value> {
        self.lock()
            .objects
            .get(&(ns.to_owned(), name.to_owned()))
            .cloned()
    }

    /// Stores an object directly (as another client would have), with a fresh resourceVersion.
    pub fn put_object(&self, ns: &str, mut obj: Value) {
        let mut st = self.lock();
        let name = obj["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        stamp(&mut st, ns, &mut obj, None);
        st.objects.insert((ns.to_owned(), name), obj);
    }

    /// Number of stored objects.
    pub fn len(&self) -> usize {
        self.lock().objects.len()
    }

    /// Whether no object is stored.
    pub fn is_empty(&self) -> bool {
        self.lock().objects.is_empty()
    }

    /// Requests seen so far ("METHOD path?query").
    pub fn requests(&self) -> Vec<String> {
        self.lock().log.clone()
    }

    /// Stops serving: the port is closed, open connections are closed once idle.
    pub async fn stop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for FakeApiServer {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// TLS on top of a TCP listener; a failed handshake is dropped and the next client accepted.
struct TlsListener {
    tcp: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((tcp, addr)) = self.tcp.accept().await else {
                continue;
            };
            if let Ok(tls) = self.acceptor.accept(tcp).await {
                return (tls, addr);
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

fn status(code: u16, reason: &str, message: String, name: Option<&str>) -> Response {
    let mut body = json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    });
    if let Some(n) = name {
        body["details"] = json!({ "name": n, "kind": "secrets" });
    }
    let code = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (code, axum::Json(body)).into_response()
}

fn reason_of(code: u16) -> &'static str {
    match code {
        400 => "BadRequest",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "NotFound",
        409 => "Conflict",
        422 => "Invalid",
        429 => "TooManyRequests",
        500 => "InternalError",
        503 => "ServiceUnavailable",
        504 => "Timeout",
        _ => "",
    }
}

fn ok(code: StatusCode, body: Value) -> Response {
    (code, axum::Json(body)).into_response()
}

/// Sets a fresh resourceVersion (and uid/creationTimestamp on first store).
fn stamp(st: &mut Inner, ns: &str, obj: &mut Value, previous: Option<&Value>) {
    st.next_rv += 1;
    let meta = &mut obj["metadata"];
    meta["resourceVersion"] = json!(st.next_rv.to_string());
    meta["namespace"] = json!(ns);
    match previous {
        Some(p) => {
            meta["uid"] = p["metadata"]["uid"].clone();
            meta["creationTimestamp"] = p["metadata"]["creationTimestamp"].clone();
        }
        None => {
            meta["uid"] = json!(format!("00000000-0000-4000-8000-{:012}", st.next_rv));
            meta["creationTimestamp"] = json!("2026-12-01T00:00:00Z");
        }
    }
    obj["kind"] = json!("Secret");
    obj["apiVersion"] = json!("v1");
}

fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.bytes()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
}

/// The API server's field validation of a Secret; the first problem found.
fn validate(obj: &Value) -> Option<String> {
    let name = obj["metadata"]["name"].as_str().unwrap_or_default();
    if !is_dns_subdomain(name) {
        return Some(format!(
            "metadata.name: Invalid value: {name:?}: a lowercase RFC 1123 subdomain must consist \
             of lower case alphanumeric characters, '-' or '.'"
        ));
    }
    if let Some(data) = obj["data"].as_object() {
        for (k, v) in data {
            if k.is_empty()
                || k.len() > 253
                || !k
                    .bytes()
                    .all(|c| c.is_ascii_alphanumeric() || b"-._".contains(&c))
            {
                return Some(format!(
                    "data[{k}]: Invalid value: {k:?}: a valid config key"
                ));
            }
            let decoded = v
                .as_str()
                .map(|s| base64::Engine::decode(&base64::engine::general_purpose::STANDARD, s));
            if !matches!(decoded, Some(Ok(_))) {
                return Some(format!("data[{k}]: illegal base64 data"));
            }
        }
    }
    if let Some(labels) = obj["metadata"]["labels"].as_object() {
        for (k, v) in labels {
            let value = v.as_str().unwrap_or_default();
            if value.len() > 63 || k.is_empty() {
                return Some(format!(
                    "metadata.labels: Invalid value: {value:?}: must be no more than 63 characters"
                ));
            }
        }
    }
    None
}

fn label_match(obj: &Value, selector: Option<&String>) -> bool {
    let Some(sel) = selector.filter(|s| !s.is_empty()) else {
        return true;
    };
    sel.split(',').all(|term| match term.split_once('=') {
        Some((k, v)) => obj["metadata"]["labels"][k.trim()].as_str() == Some(v.trim()),
        None => obj["metadata"]["labels"].get(term.trim()).is_some(),
    })
}

async fn handle(
    State(state): State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
    body: Bytes,
) -> Response {
    let fault = {
        let mut st = state.lock().unwrap_or_else(|p| p.into_inner());
        st.log.push(format!(
            "{method} {}",
            uri.path_and_query().map_or("", |p| p.as_str())
        ));
        if let Some(token) = &st.token {
            let sent = headers
                .get(axum::http::header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok());
            if sent != Some(format!("Bearer {token}").as_str()) {
                return status(401, "Unauthorized", "Unauthorized".to_owned(), None);
            }
        }
        let pos = st.faults.iter().position(|(m, _)| *m == method);
        pos.and_then(|i| st.faults.remove(i)).map(|(_, f)| f)
    };
    match fault.clone() {
        Some(Fault::Status(code)) => {
            return status(code, reason_of(code), format!("injected {code}"), None);
        }
        Some(Fault::TooManyRequests(secs)) => {
            let mut r = json!({
                "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": "too many requests, please try again later",
                "reason": "TooManyRequests", "code": 429,
                "details": { "retryAfterSeconds": secs },
            });
            r["details"]["causes"] = json!([]);
            return ok(StatusCode::TOO_MANY_REQUESTS, r);
        }
        Some(Fault::PlainText(code)) => {
            let code = StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_GATEWAY);
            return (
                code,
                "upstream connect error or disconnect/reset before headers",
            )
                .into_response();
        }
        Some(Fault::Delay(d)) => tokio::time::sleep(d).await,
        Some(Fault::Race(obj)) => {
            let mut st = state.lock().unwrap_or_else(|p| p.into_inner());
            let ns = path_parts(uri.path()).map(|p| p.0).unwrap_or_default();
            let name = obj["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            let mut obj = obj;
            let prev = st.objects.get(&(ns.clone(), name.clone())).cloned();
            stamp(&mut st, &ns, &mut obj, prev.as_ref());
            st.objects.insert((ns, name), obj);
        }
        _ => {}
    }
    let answer = apply(&state, &method, uri.path(), &query, &body);
    match fault {
        Some(Fault::AppliedThenStatus(code)) => {
            status(code, reason_of(code), format!("injected {code}"), None)
        }
        Some(Fault::AppliedThenDelay(d)) => {
            tokio::time::sleep(d).await;
            answer
        }
        _ => answer,
    }
}

/// `/api/v1/namespaces/{ns}/secrets[/{name}]` → (ns, name).
fn path_parts(path: &str) -> Option<(String, Option<String>)> {
    let rest = path.strip_prefix("/api/v1/namespaces/")?;
    let (ns, rest) = rest.split_once('/')?;
    let rest = rest.strip_prefix("secrets")?;
    match rest {
        "" => Some((ns.to_owned(), None)),
        r => Some((ns.to_owned(), Some(r.strip_prefix('/')?.to_owned()))),
    }
}

fn apply(
    state: &Shared,
    method: &Method,
    path: &str,
    query: &HashMap<String, String>,
    body: &[u8],
) -> Response {
    let Some((ns, name)) = path_parts(path) else {
        return status(
            404,
            "NotFound",
            "the server could not find the requested resource".to_owned(),
            None,
        );
    };
    let mut st = state.lock().unwrap_or_else(|p| p.into_inner());
    let key = |n: &str| (ns.clone(), n.to_owned());
    let parse_body = || serde_json::from_slice::<Value>(body);
    match (method.clone(), name) {
        (Method::GET, Some(name)) => match st.objects.get(&key(&name)) {
            Some(o) => ok(StatusCode::OK, o.clone()),
            None => status(
                404,
                "NotFound",
                format!("secrets {name:?} not found"),
                Some(&name),
            ),
        },
        (Method::GET, None) => {
            let items: Vec<Value> = st
                .objects
                .iter()
                .filter(|((n, _), o)| *n == ns && label_match(o, query.get("labelSelector")))
                .map(|(_, o)| {
                    // List items come without kind and apiVersion, as from the real server.
                    let mut o = o.clone();
                    if let Some(m) = o.as_object_mut() {
                        m.remove("kind");
                        m.remove("apiVersion");
                    }
                    o
                })
                .collect();
            let start: usize = query
                .get("continue")
                .and_then(|c| c.parse().ok())
                .unwrap_or(0);
            let limit = query
                .get("limit")
                .and_then(|l| l.parse::<usize>().ok())
                .filter(|l| *l > 0)
                .unwrap_or(usize::MAX)
                .min(st.page_cap);
            let end = start.saturating_add(limit).min(items.len());
            let page = items.get(start..end).unwrap_or_default().to_vec();
            let mut meta = json!({ "resourceVersion": st.next_rv.to_string() });
            if end < items.len() {
                meta["continue"] = json!(end.to_string());
            }
            ok(
                StatusCode::OK,
                json!({ "kind": "SecretList", "apiVersion": "v1", "metadata": meta, "items": page }),
            )
        }
        (Method::POST, None) => {
            let Ok(mut obj) = parse_body() else {
                return status(400, "BadRequest", "invalid JSON".to_owned(), None);
            };
            let name = obj["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            if let Some(bns) = obj["metadata"]["namespace"].as_str()
                && bns != ns
            {
                return status(
                    400,
                    "BadRequest",
                    "the namespace of the provided object does not match the namespace sent \
                     on the request"
                        .to_owned(),
                    None,
                );
            }
            if obj["metadata"]["resourceVersion"]
                .as_str()
                .is_some_and(|r| !r.is_empty())
            {
                return status(
                    422,
                    "Invalid",
                    format!(
                        "Secret {name:?} is invalid: metadata.resourceVersion: Invalid value: \
                         must be empty on create"
                    ),
                    Some(&name),
                );
            }
            if let Some(why) = validate(&obj) {
                return status(
                    422,
                    "Invalid",
                    format!("Secret {name:?} is invalid: {why}"),
                    Some(&name),
                );
            }
            if st.objects.contains_key(&key(&name)) {
                return status(
                    409,
                    "AlreadyExists",
                    format!("secrets {name:?} already exists"),
                    Some(&name),
                );
            }
            stamp(&mut st, &ns, &mut obj, None);
            st.objects.insert(key(&name), obj.clone());
            ok(StatusCode::CREATED, obj)
        }
        (Method::PUT, Some(name)) => {
            let Ok(mut obj) = parse_body() else {
                return status(400, "BadRequest", "invalid JSON".to_owned(), None);
            };
            if obj["metadata"]["name"].as_str() != Some(name.as_str()) {
                return status(
                    400,
                    "BadRequest",
                    "the name of the object does not match the name on the URL".to_owned(),
                    None,
                );
            }
            let Some(cur) = st.objects.get(&key(&name)).cloned() else {
                return status(
                    404,
                    "NotFound",
                    format!("secrets {name:?} not found"),
                    Some(&name),
                );
            };
            if let Some(why) = validate(&obj) {
                return status(
                    422,
                    "Invalid",
                    format!("Secret {name:?} is invalid: {why}"),
                    Some(&name),
                );
            }
            let want_rv = obj["metadata"]["resourceVersion"].as_str().unwrap_or("");
            if !want_rv.is_empty() && Some(want_rv) != cur["metadata"]["resourceVersion"].as_str() {
                return status(
                    409,
                    "Conflict",
                    format!(
                        "Operation cannot be fulfilled on secrets {name:?}: the object has been \
                         modified; please apply your changes to the latest version and try again"
                    ),
                    Some(&name),
                );
            }
            let old_type = cur["type"].as_str().unwrap_or("Opaque");
            let new_type = obj["type"].as_str().unwrap_or("Opaque");
            if old_type != new_type {
                return status(
                    422,
                    "Invalid",
                    format!("Secret {name:?} is invalid: type: Invalid value: field is immutable"),
                    Some(&name),
                );
            }
            stamp(&mut st, &ns, &mut obj, Some(&cur));
            st.objects.insert(key(&name), obj.clone());
            ok(StatusCode::OK, obj)
        }
        (Method::DELETE, Some(name)) => match st.objects.remove(&key(&name)) {
            Some(_) => ok(
                StatusCode::OK,
                json!({
                    "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                    "details": { "name": name, "kind": "secrets", "uid": "" },
                }),
            ),
            None => status(
                404,
                "NotFound",
                format!("secrets {name:?} not found"),
                Some(&name),
            ),
        },
        _ => status(
            405,
            "MethodNotAllowed",
            format!("the server does not allow this method on the requested resource ({path})"),
            None,
        ),
    }
}

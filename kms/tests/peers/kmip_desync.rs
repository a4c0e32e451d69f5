//! A KMIP peer written here (TLS with the test PKI, our TTLV codec) that answers an Encrypt only
//! after the client gave up on it: the late answer must never be taken as the answer to the
//! next request on the same client. Its "cipher" is the identity (ciphertext =
//! plaintext, tag = zeros), so a record can be checked for the key it holds without a server.
#![allow(clippy::unwrap_used, missing_docs)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use base64::Engine as _;
use kms::kmip::ttlv::{self, Item, Value};
use kms::{Dek, ErrorKind, Kms, KmsConfig, KmsType, Timeouts, VolumeId, WrappedKey};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use testkit::peers::pki::{Ca, ClientOpts};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const BATCH_ITEM: u32 = 0x42000F;
const BATCH_COUNT: u32 = 0x42000D;
const DATA: u32 = 0x4200C2;
const IV: u32 = 0x42003D;
const OPERATION: u32 = 0x42005C;
const PROTOCOL_VERSION: u32 = 0x420069;
const PV_MAJOR: u32 = 0x42006A;
const PV_MINOR: u32 = 0x42006B;
const REQUEST_PAYLOAD: u32 = 0x420079;
const RESPONSE_HEADER: u32 = 0x42007A;
const RESPONSE_MESSAGE: u32 = 0x42007B;
const RESPONSE_PAYLOAD: u32 = 0x42007C;
const RESULT_STATUS: u32 = 0x42007F;
const UNIQUE_BATCH_ITEM_ID: u32 = 0x420093;
const UNIQUE_IDENTIFIER: u32 = 0x420094;
const AEAD_TAG: u32 = 0x4200FF;
const OP_DISCOVER: u32 = 0x1E;
const OP_ENCRYPT: u32 = 0x1F;
const OP_DECRYPT: u32 = 0x20;

fn bytes(tag: u32, b: &[u8]) -> Item {
    Item::new(tag, Value::ByteString(zeroize::Zeroizing::new(b.to_vec())))
}

fn field(item: &Item, tag: u32) -> Option<&[u8]> {
    match item.child(tag).map(|i| &i.value) {
        Some(Value::ByteString(b)) => Some(b),
        _ => None,
    }
}

/// How the peer misbehaves.
#[derive(Clone, Copy, PartialEq)]
enum Fault {
    /// Holds the first Encrypt answer back until the next request on that connection.
    HoldFirstEncrypt,
    /// Answers every Encrypt with a ciphertext whose first byte is flipped.
    CorruptEncrypt,
}

/// The success answer to one request, echoing its Unique Batch Item ID.
fn answer(req: &Item, fault: Fault) -> Vec<u8> {
    let batch = req.child(BATCH_ITEM).unwrap();
    let op = match batch.child(OPERATION).unwrap().value {
        Value::Enumeration(op) => op,
        ref other => panic!("operation {other:?}"),
    };
    let payload = batch.child(REQUEST_PAYLOAD).unwrap();
    let out = match op {
        OP_DISCOVER => vec![Item::structure(
            PROTOCOL_VERSION,
            vec![
                Item::new(PV_MAJOR, Value::Integer(1)),
                Item::new(PV_MINOR, Value::Integer(4)),
            ],
        )],
        OP_ENCRYPT | OP_DECRYPT => {
            let mut data = field(payload, DATA).unwrap().to_vec();
            if op == OP_ENCRYPT && fault == Fault::CorruptEncrypt {
                data[0] ^= 1;
            }
            let mut v = vec![
                payload.child(UNIQUE_IDENTIFIER).unwrap().clone(),
                bytes(DATA, &data),
            ];
            if op == OP_ENCRYPT {
                v.push(bytes(IV, field(payload, IV).unwrap()));
                v.push(bytes(AEAD_TAG, &[0u8; 16]));
            }
            v
        }
        other => panic!("unexpected operation {other:#x}"),
    };
    let mut item = vec![Item::new(OPERATION, Value::Enumeration(op))];
    if let Some(id) = batch.child(UNIQUE_BATCH_ITEM_ID) {
        item.push(id.clone());
    }
    item.push(Item::new(RESULT_STATUS, Value::Enumeration(0)));
    item.push(Item::structure(RESPONSE_PAYLOAD, out));
    let msg = Item::structure(
        RESPONSE_MESSAGE,
        vec![
            Item::structure(
                RESPONSE_HEADER,
                vec![
                    Item::structure(
                        PROTOCOL_VERSION,
                        vec![
                            Item::new(PV_MAJOR, Value::Integer(1)),
                            Item::new(PV_MINOR, Value::Integer(4)),
                        ],
                    ),
                    Item::new(BATCH_COUNT, Value::Integer(1)),
                ],
            ),
            Item::structure(BATCH_ITEM, item),
        ],
    );
    ttlv::encode(&msg).to_vec()
}

fn is_encrypt(req: &Item) -> bool {
    req.child(BATCH_ITEM)
        .and_then(|b| b.child(OPERATION))
        .is_some_and(|o| o.value == Value::Enumeration(OP_ENCRYPT))
}

/// The peer: answers everything at once, except (`HoldFirstEncrypt`) the first Encrypt it
/// sees, whose answer it holds back until the next request arrives on the same connection
/// (then sends it first) or the connection closes. Returns its port and the number of
/// connections accepted.
async fn start_peer(ca: &Ca, fault: Fault) -> (u16, Arc<AtomicUsize>) {
    let leaf = ca.server(false);
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(leaf.cert_pem.as_bytes())
            .collect::<Result<_, _>>()
            .unwrap();
    let key = PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes()).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let connections = Arc::new(AtomicUsize::new(0));
    let held_back = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let count = connections.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            count.fetch_add(1, Ordering::SeqCst);
            let acceptor = acceptor.clone();
            let held_back = held_back.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut pending: Option<Vec<u8>> = None;
                loop {
                    let mut header = [0u8; 8];
                    if tls.read_exact(&mut header).await.is_err() {
                        return; // the client closed the connection
                    }
                    let len = ttlv::message_len(&header).unwrap();
                    let mut buf = vec![0u8; len];
                    buf[..8].copy_from_slice(&header);
                    tls.read_exact(&mut buf[8..]).await.unwrap();
                    let req = ttlv::decode(&buf).unwrap();
                    if let Some(late) = pending.take() {
                        tls.write_all(&late).await.unwrap();
                    }
                    if fault == Fault::HoldFirstEncrypt
                        && is_encrypt(&req)
                        && !held_back.swap(true, Ordering::SeqCst)
                    {
                        pending = Some(answer(&req, fault));
                        continue;
                    }
                    tls.write_all(&answer(&req, fault)).await.unwrap();
                    tls.flush().await.unwrap();
                }
            });
        }
    });
    (port, connections)
}

fn client(ca: &Ca, port: u16, request: Duration) -> Kms {
    let leaf = ca.client(ClientOpts::default());
    let cfg = KmsConfig::new(
        KmsType::Kmip,
        &format!("127.0.0.1:{port}"),
        "key-1",
        None,
        &testkit::peers::secrets(&[
            ("ca.crt", &ca.pem()),
            ("tls.crt", &leaf.cert_pem),
            ("tls.key", &leaf.key_pem),
        ]),
    )
    .unwrap()
    .with_timeouts(Timeouts {
        connect: Duration::from_secs(5),
        request,
    });
    Kms::new(&cfg).unwrap()
}

fn held_key(record: &WrappedKey) -> Vec<u8> {
    let v: serde_json::Value = serde_json::from_str(&record.to_json()).unwrap();
    base64::engine::general_purpose::STANDARD
        .decode(v["ciphertext"].as_str().unwrap())
        .unwrap()
}

/// After the first wrap was abandoned mid-exchange, the next wrap on the same client either
/// returns a record holding its own key or fails cleanly; and the client keeps working.
async fn next_request_gets_its_own_answer(kms: &Kms, a: &Dek, connections: &AtomicUsize) {
    let b = Dek::generate(32).unwrap();
    let vol_b = VolumeId::new("pvc-b").unwrap();
    match kms.wrap(&b, &vol_b).await {
        Ok(record) => {
            let held = held_key(&record);
            // (No assert_eq!: a failure must not print key bytes.)
            assert!(held != a.expose(), "volume A's key stored as volume B's");
            assert!(
                held == b.expose(),
                "the record does not hold volume B's key"
            );
            assert!(kms.unwrap(&record, &vol_b).await.unwrap().ct_eq(&b));
        }
        Err(e) => assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}"),
    }
    // Whatever happened, the client recovers.
    let c = Dek::generate(32).unwrap();
    let record = kms.wrap(&c, &vol_b).await.unwrap();
    assert!(held_key(&record) == c.expose());
    assert!(connections.load(Ordering::SeqCst) >= 2);
}

/// Connects and negotiates the version first, so the first wrap's time goes to its Encrypt
/// (a few tries: a loaded machine may miss the short test time limit once).
async fn warm_up(kms: &Kms) {
    let Kms::Kmip(k) = kms else { unreachable!() };
    let mut last = None;
    for _ in 0..5 {
        match k.protocol_version().await {
            Ok(v) => return assert_eq!(v, (1, 4)),
            Err(e) => last = Some(e),
        }
    }
    panic!("the fake peer never answered DiscoverVersions: {last:?}");
}

#[tokio::test]
async fn late_answer_after_the_client_timeout_is_never_taken_for_the_next_request() {
    let ca = Ca::new("desync CA");
    let (port, connections) = start_peer(&ca, Fault::HoldFirstEncrypt).await;
    let kms = client(&ca, port, Duration::from_secs(3));
    warm_up(&kms).await;
    let a = Dek::generate(32).unwrap();
    let err = kms
        .wrap(&a, &VolumeId::new("pvc-a").unwrap())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert!(err.message().contains("timeout"), "{err}");
    next_request_gets_its_own_answer(&kms, &a, &connections).await;
}

#[tokio::test]
async fn late_answer_after_the_caller_dropped_the_request_is_never_taken_for_the_next() {
    let ca = Ca::new("desync CA");
    let (port, connections) = start_peer(&ca, Fault::HoldFirstEncrypt).await;
    // The client's own limit is long; the caller gives up first and drops the future.
    let kms = client(&ca, port, Duration::from_secs(60));
    warm_up(&kms).await;
    let a = Dek::generate(32).unwrap();
    let vol_a = VolumeId::new("pvc-a").unwrap();
    let gave_up = tokio::time::timeout(Duration::from_secs(1), kms.wrap(&a, &vol_a)).await;
    assert!(gave_up.is_err(), "the held-back Encrypt was answered");
    next_request_gets_its_own_answer(&kms, &a, &connections).await;
}

/// `wrap` unwraps its own result before returning it: an Encrypt answer that does not give the
/// key back is Integrity, and no record comes out. Fails before: the record was returned.
#[tokio::test]
async fn wrap_refuses_a_result_that_does_not_unwrap_to_its_key() {
    let ca = Ca::new("verify CA");
    let (port, _) = start_peer(&ca, Fault::CorruptEncrypt).await;
    let kms = client(&ca, port, Duration::from_secs(10));
    let err = kms
        .wrap(
            &Dek::generate(32).unwrap(),
            &VolumeId::new("pvc-a").unwrap(),
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Integrity, "{err}");
    assert!(
        err.message().contains("does not unwrap to the same key"),
        "{err}"
    );
}

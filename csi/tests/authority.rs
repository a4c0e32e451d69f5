//! The `:authority` a gRPC client sends over the driver's Unix socket. kubelet and the sidecars
//! (grpc-go) send `localhost`; grpc-java and grpc-swift send the socket path, grpc-python (C
//! core) from 1.57 on its percent-encoding. The driver's HTTP/2 server (h2 under hyper and
//! tonic) parses `:authority` as a URI authority before any of the driver's code runs, and
//! resets the stream with PROTOCOL_ERROR when it is not one (h2's `server::Peer::
//! convert_poll_message`; no setting changes that). Such clients must set the authority to
//! `localhost` (README, "Other gRPC clients"). This test speaks HTTP/2 by hand over the socket,
//! so that it can send exactly those authorities: it proves the documented setting works and
//! pins the refusal (should h2 ever accept them, it fails and the README is to be changed).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const DRIVER_NAME: &str = "csi.onmetal.de";

struct Driver {
    child: Child,
    dir: tempfile::TempDir,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Driver {
    fn socket(&self) -> std::path::PathBuf {
        self.dir.path().join("csi.sock")
    }
}

fn start() -> Driver {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("csi.sock");
    let child = Command::new(env!("CARGO_BIN_EXE_onmetal-csi-driver"))
        .arg("serve")
        .arg("--endpoint")
        .arg(format!("unix://{}", sock.display()))
        .args(["--node-id", "authority-node", "--driver-name", DRIVER_NAME])
        .arg("--kubelet-dir")
        .arg(std::env::temp_dir())
        .arg("--backend")
        .arg(format!("local:{}", dir.path().join("volumes").display()))
        .arg("--key-store")
        .arg(format!("dir:{}", dir.path().join("keys").display()))
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let t = Instant::now();
    while UnixStream::connect(&sock).is_err() {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "driver did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    Driver { child, dir }
}

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const GOAWAY: u8 = 0x7;
const END_STREAM: u8 = 0x1;
const ACK: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PROTOCOL_ERROR: u32 = 0x1;

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).unwrap();
    let mut f = len.to_be_bytes()[1..].to_vec();
    f.extend([kind, flags]);
    f.extend(stream.to_be_bytes());
    f.extend(payload);
    f
}

/// An HPACK integer (RFC 7541 5.1) with an `n`-bit prefix after the bits in `first`.
fn hpack_int(first: u8, n: u32, mut v: usize, out: &mut Vec<u8>) {
    let max = (1usize << n) - 1;
    if v < max {
        out.push(first | u8::try_from(v).unwrap());
        return;
    }
    out.push(first | u8::try_from(max).unwrap());
    v -= max;
    while v >= 128 {
        out.push(u8::try_from(v % 128).unwrap() | 0x80);
        v /= 128;
    }
    out.push(u8::try_from(v).unwrap());
}

/// A string literal, not Huffman-coded (RFC 7541 5.2).
fn hpack_str(s: &[u8], out: &mut Vec<u8>) {
    hpack_int(0, 7, s.len(), out);
    out.extend(s);
}

/// The header block of a gRPC call of `path` with `authority`: every field a literal without
/// indexing (RFC 7541 6.2.2), names from the static table where it has them.
fn grpc_headers(path: &str, authority: &[u8]) -> Vec<u8> {
    let mut b = Vec::new();
    b.push(0x80 | 3); // :method POST (static 3)
    b.push(0x80 | 6); // :scheme http (static 6)
    hpack_int(0, 4, 4, &mut b); // :path
    hpack_str(path.as_bytes(), &mut b);
    hpack_int(0, 4, 1, &mut b); // :authority
    hpack_str(authority, &mut b);
    hpack_int(0, 4, 31, &mut b); // content-type
    hpack_str(b"application/grpc", &mut b);
    b.push(0); // a new name
    hpack_str(b"te", &mut b);
    hpack_str(b"trailers", &mut b);
    b
}

#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    /// The call completed; the response message (gRPC length prefix included).
    Answered(Vec<u8>),
    /// RST_STREAM on the call's stream, with its error code.
    Reset(u32),
    /// GOAWAY, with its error code.
    GoAway(u32),
}

/// Identity/GetPluginInfo on a fresh connection, with `:authority` set to `authority`.
fn get_plugin_info(socket: &Path, authority: &[u8]) -> Outcome {
    let mut s = UnixStream::connect(socket).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut out = PREFACE.to_vec();
    out.extend(frame(SETTINGS, 0, 0, &[]));
    let block = grpc_headers("/csi.v1.Identity/GetPluginInfo", authority);
    out.extend(frame(HEADERS, END_HEADERS, 1, &block));
    // An empty GetPluginInfoRequest: not compressed, length 0.
    out.extend(frame(DATA, END_STREAM, 1, &[0, 0, 0, 0, 0]));
    s.write_all(&out).unwrap();

    let mut message = Vec::new();
    let mut headers_seen = 0;
    loop {
        let mut head = [0u8; 9];
        s.read_exact(&mut head)
            .expect("the server closed the connection");
        let len = usize::try_from(u32::from_be_bytes([0, head[0], head[1], head[2]])).unwrap();
        let (kind, flags) = (head[3], head[4]);
        let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
        let mut payload = vec![0u8; len];
        s.read_exact(&mut payload).unwrap();
        let code = |at: usize| u32::from_be_bytes(payload[at..at + 4].try_into().unwrap());
        match kind {
            SETTINGS if flags & ACK == 0 => s.write_all(&frame(SETTINGS, ACK, 0, &[])).unwrap(),
            RST_STREAM if stream == 1 => return Outcome::Reset(code(0)),
            GOAWAY => return Outcome::GoAway(code(4)),
            DATA if stream == 1 => message.extend(&payload),
            // Response headers, then trailers with END_STREAM (grpc-status is HPACK-coded;
            // the message itself says the call worked).
            HEADERS if stream == 1 => {
                headers_seen += 1;
                if flags & END_STREAM != 0 {
                    assert_eq!(headers_seen, 2, "a trailers-only answer: an error");
                    return Outcome::Answered(message);
                }
            }
            _ => {}
        }
    }
}

#[test]
fn a_socket_path_authority_is_refused_by_h2_and_localhost_works() {
    let d = start();
    let sock = d.socket();

    // What kubelet and the sidecars send, and what the README tells other clients to set.
    for authority in ["localhost", "localhost:0"] {
        match get_plugin_info(&sock, authority.as_bytes()) {
            Outcome::Answered(m) => assert!(
                m.windows(DRIVER_NAME.len())
                    .any(|w| w == DRIVER_NAME.as_bytes()),
                "{authority}: {m:?}"
            ),
            other => panic!("{authority}: {other:?}"),
        }
    }

    // grpc-java and grpc-swift: the socket path; grpc-python (C core >= 1.57): its
    // percent-encoding. h2 refuses the stream before the driver sees it.
    // grpcio 1.85 for unix:///tmp/az/x.sock sends `tmp%2Faz%2Fx.sock` (seen in h2's debug log).
    let path = sock.to_str().unwrap().to_owned();
    let encoded = path.replace('/', "%2F");
    let grpcio = path.trim_start_matches('/').replace('/', "%2F");
    for authority in [&path, &encoded, &grpcio, "unix:/csi/csi.sock"] {
        assert_eq!(
            get_plugin_info(&sock, authority.as_bytes()),
            Outcome::Reset(PROTOCOL_ERROR),
            "{authority}"
        );
    }
    // The server goes on answering.
    assert!(matches!(
        get_plugin_info(&sock, b"localhost"),
        Outcome::Answered(_)
    ));
}

//! Transit against tiny local HTTP servers written here (no OpenBao): the response size cap on
//! a chunked answer, and that proxy environment variables are ignored.
#![allow(clippy::unwrap_used, missing_docs)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

use kms::{Dek, ErrorKind, Kms, KmsConfig, KmsType, Timeouts, VolumeId, WrappedKey};
use testkit::peers::secrets;

/// Reads one HTTP/1.1 request (headers and a Content-Length body); returns the request line.
fn read_request(conn: &mut BufReader<TcpStream>) -> Option<String> {
    let mut first = String::new();
    if conn.read_line(&mut first).ok()? == 0 {
        return None;
    }
    let mut len = 0usize;
    loop {
        let mut line = String::new();
        conn.read_line(&mut line).ok()?;
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':')
            && k.eq_ignore_ascii_case("content-length")
        {
            len = v.trim().parse().ok()?;
        }
    }
    let mut body = vec![0u8; len];
    conn.read_exact(&mut body).ok()?;
    Some(first.trim_end().to_owned())
}

fn client(url: &str) -> Kms {
    let cfg = KmsConfig::new(
        KmsType::Transit,
        url,
        "pvc-kek",
        None,
        &secrets(&[("token", "s.local-token")]),
    )
    .unwrap()
    .with_timeouts(Timeouts {
        connect: Duration::from_secs(2),
        request: Duration::from_secs(3),
    });
    Kms::new(&cfg).unwrap()
}

fn record(url: &str) -> WrappedKey {
    let json = format!(
        r#"{{"version":1,"kmsType":"transit","endpoint":"{url}","keyId":"pvc-kek","keyVersion":1,"mode":"transit-framed","ciphertext":"vault:v1:AAAA","volumeId":"v","createdAt":"2026-01-01T00:00:00Z"}}"#
    );
    WrappedKey::from_json(json.as_bytes()).unwrap()
}

/// A chunked 200 answer larger than the cap whose end never comes: the client must stop at the
/// cap and say so. Fails before the fix: the whole body was read first, so the request ran
/// into its timeout instead.
#[tokio::test]
async fn chunked_answer_over_the_cap_is_refused_while_streaming() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
    let server = std::thread::spawn(move || {
        let (conn, _) = listener.accept().unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let mut r = BufReader::new(conn);
        read_request(&mut r).unwrap();
        let mut w = r.get_ref().try_clone().unwrap();
        w.write_all(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n",
        )
        .unwrap();
        // 80 chunks of 1 KiB (more than the 64 KiB cap), then no terminating chunk: the
        // answer stays open until the client gives up.
        let _ = w.write_all(b"400\r\n{\"data\":{\"plaintext\":\"");
        let _ = w.write_all(&[b'A'; 1024 - 22]);
        let _ = w.write_all(b"\r\n");
        for _ in 0..79 {
            let _ = w.write_all(b"400\r\n");
            let _ = w.write_all(&[b'A'; 1024]);
            let _ = w.write_all(b"\r\n");
        }
        let _ = w.flush();
        // Wait (at most 30 s) for the client to close the connection.
        let mut sink = [0u8; 64];
        while matches!(r.get_mut().read(&mut sink), Ok(n) if n > 0) {}
    });
    let kms = client(&url);
    let err = kms
        .unwrap(&record(&url), &VolumeId::new("v").unwrap())
        .await
        .unwrap_err();
    drop(kms);
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert!(
        err.message().contains("larger than 65536 bytes") && !err.message().contains("timeout"),
        "{err}"
    );
    // Joined off the runtime, so the client's connection task can run and close the socket.
    tokio::task::spawn_blocking(move || server.join().unwrap())
        .await
        .unwrap();
}

const CHILD: &str = "ONMETAL_TEST_PROXY_CHILD";

/// HTTP_PROXY, HTTPS_PROXY and ALL_PROXY point at a listener that must see no connection; the
/// request goes to the Transit server directly. The proxy variables are set in a child process
/// (this test binary run again for this one test) so no other test sees them. Fails before the
/// fix: reqwest sent the request, token included, to the proxy.
#[test]
fn proxy_environment_is_ignored() {
    if let Ok(url) = std::env::var(CHILD) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let dek = rt
            .block_on(client(&url).unwrap(&record(&url), &VolumeId::new("v").unwrap()))
            .unwrap();
        assert!(dek.ct_eq(&Dek::from_slice(&[7u8; 32]).unwrap()));
        return;
    }
    let proxy = TcpListener::bind("127.0.0.1:0").unwrap();
    proxy.set_nonblocking(true).unwrap();
    let proxy_url = format!("http://127.0.0.1:{}", proxy.local_addr().unwrap().port());
    let server = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://127.0.0.1:{}", server.local_addr().unwrap().port());
    let answer = std::thread::spawn(move || {
        let (conn, _) = server.accept().unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let mut r = BufReader::new(conn);
        let line = read_request(&mut r).unwrap();
        // The framed DEK: 0x01, len("v"), "v", 0x0020, 32 bytes of 7.
        use base64::Engine as _;
        let mut framed = vec![1u8, 1, b'v', 0, 32];
        framed.extend([7u8; 32]);
        let body = format!(
            r#"{{"data":{{"plaintext":"{}"}}}}"#,
            base64::engine::general_purpose::STANDARD.encode(framed)
        );
        let mut w = r.get_ref().try_clone().unwrap();
        write!(
            w,
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        line
    });
    // The child runs this very test (its full name in the binary, module path included): a name
    // that matched nothing would run no test and leave the server thread waiting.
    let name = test_name("proxy_environment_is_ignored");
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([name.as_str(), "--exact", "--nocapture"])
        .env(CHILD, &url)
        .env("HTTP_PROXY", &proxy_url)
        .env("http_proxy", &proxy_url)
        .env("HTTPS_PROXY", &proxy_url)
        .env("https_proxy", &proxy_url)
        .env("ALL_PROXY", &proxy_url)
        .env("all_proxy", &proxy_url)
        .env_remove("NO_PROXY")
        .env_remove("no_proxy")
        .output()
        .unwrap();
    let proxied = proxy.accept().is_ok();
    assert!(
        out.status.success() && !proxied,
        "proxied: {proxied}; child: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        answer.join().unwrap(),
        "POST /v1/transit/decrypt/pvc-kek HTTP/1.1"
    );
}

/// `wrap` unwraps its own result before returning it (Transit too): a server whose decrypt of
/// the new ciphertext gives another key makes the wrap fail with Integrity. Fails before: the
/// record was returned unchecked.
#[tokio::test]
async fn wrap_refuses_a_result_that_does_not_unwrap_to_its_key() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
    std::thread::spawn(move || {
        // Encrypt and decrypt, on one connection or two; the server ends with the test binary.
        for conn in listener.incoming() {
            let conn = conn.unwrap();
            std::thread::spawn(move || {
                conn.set_read_timeout(Some(Duration::from_secs(30)))
                    .unwrap();
                let mut r = BufReader::new(conn);
                while let Some(line) = read_request(&mut r) {
                    let body = if line.contains("/encrypt/") {
                        r#"{"data":{"ciphertext":"vault:v1:AAAA","key_version":1}}"#.to_owned()
                    } else {
                        use base64::Engine as _;
                        let mut framed = vec![1u8, 1, b'v', 0, 32];
                        framed.extend([9u8; 32]);
                        format!(
                            r#"{{"data":{{"plaintext":"{}"}}}}"#,
                            base64::engine::general_purpose::STANDARD.encode(framed)
                        )
                    };
                    let mut w = r.get_ref().try_clone().unwrap();
                    write!(
                        w,
                        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                        body.len()
                    )
                    .unwrap();
                }
            });
        }
    });
    let err = client(&url)
        .wrap(
            &Dek::from_slice(&[7u8; 32]).unwrap(),
            &VolumeId::new("v").unwrap(),
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Integrity, "{err}");
    assert!(
        err.message().contains("does not unwrap to the same key"),
        "{err}"
    );
}

/// A test's name as libtest lists it: the module path without the crate, then the function.
fn test_name(function: &str) -> String {
    let module = module_path!().split_once("::").map_or("", |(_, rest)| rest);
    format!("{module}::{function}")
}

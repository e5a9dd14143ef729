//! What upstreams send is untrusted input (RFC 9112 §6.3 and §11): a raw origin writes exact
//! bytes, malformed in one way per path. Each refused response is a 502 with its own
//! `x-wasmgate-error`; the next request on the same client connection is answered correctly,
//! and never on the upstream connection that misbehaved.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use wasmgate_tests::harness;

/// The response for `path`, and whether the origin closes the connection after it.
fn response(path: &str) -> (Vec<u8>, bool) {
    let fixed = |text: &str| text.as_bytes().to_vec();
    match path {
        "/cl-te" => (
            fixed(
                "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
            ),
            false,
        ),
        "/two-lengths" => {
            (fixed("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!"), false)
        }
        "/bad-status" => (fixed("HTTP/1.1 2x0 OK\r\nContent-Length: 2\r\n\r\nhi"), false),
        "/obs-fold" => (fixed("HTTP/1.1 200 OK\r\nX-A: one\r\n two\r\nContent-Length: 2\r\n\r\nhi"), false),
        "/control" => (fixed("HTTP/1.1 200 OK\r\nX-A: a\x01b\r\nContent-Length: 2\r\n\r\nhi"), false),
        "/big-head" => {
            let fields: String = (0..70).map(|i| format!("X-F{i}: {}\r\n", "v".repeat(1000))).collect();
            (format!("HTTP/1.1 200 OK\r\n{fields}Content-Length: 2\r\n\r\nhi").into_bytes(), false)
        }
        "/many-fields" => {
            let fields: String = (0..150).map(|i| format!("X-F{i}: v\r\n")).collect();
            (format!("HTTP/1.1 200 OK\r\n{fields}Content-Length: 2\r\n\r\nhi").into_bytes(), false)
        }
        "/too-long" => (
            fixed(
                "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhiHTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nevil",
            ),
            false,
        ),
        "/204-with-body" => (fixed("HTTP/1.1 204 No Content\r\nContent-Length: 4\r\n\r\nevil"), false),
        "/cut-short" => (fixed("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhi"), true),
        _ => (fixed("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"), false),
    }
}

/// A raw origin answering each request by its path; counts the connections it accepted.
async fn raw_origin() -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let connections = Arc::new(AtomicUsize::new(0));
    let counted = connections.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            counted.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                        buf.drain(..end + 4);
                        let path = head.split_whitespace().nth(1).unwrap_or("/").to_owned();
                        let (bytes, close) = response(&path);
                        if stream.write_all(&bytes).await.is_err() || close {
                            return;
                        }
                    }
                    match stream.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
            });
        }
    });
    (addr, connections)
}

async fn connect(addr: SocketAddr) -> SendRequest<Empty<Bytes>> {
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (sender, conn) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.expect("handshake");
    tokio::spawn(conn);
    sender
}

/// One request on `sender`: status, `x-wasmgate-error`, and the body (or why it broke).
async fn get(sender: &mut SendRequest<Empty<Bytes>>, path: &str) -> (u16, String, Result<Bytes, String>) {
    sender.ready().await.expect("connection ready");
    let request = http::Request::get(path).header("host", "gw").body(Empty::new()).expect("request");
    let response = sender.send_request(request).await.expect("response");
    let status = response.status().as_u16();
    let error =
        response.headers().get("x-wasmgate-error").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    let body = response.into_body().collect().await.map(|b| b.to_bytes()).map_err(|e| e.to_string());
    (status, error, body)
}

#[tokio::test]
async fn malformed_responses_are_refused_and_never_desync_a_connection() {
    let (origin, connections) = raw_origin().await;
    let gw = harness::start(&harness::one_backend(origin, "retries = 0")).await.expect("gateway");
    let addr = gw.addrs()[0];
    let cases = [
        ("/cl-te", 502, "upstream-invalid-response"),
        ("/two-lengths", 502, "upstream-invalid-response"),
        ("/bad-status", 502, "upstream-invalid-response"),
        ("/obs-fold", 502, "upstream-invalid-response"),
        ("/control", 502, "upstream-invalid-response"),
        ("/big-head", 502, "upstream-head-too-large"),
        ("/many-fields", 502, "upstream-head-too-large"),
        ("/too-long", 200, ""),
        ("/204-with-body", 204, ""),
    ];
    let mut client = connect(addr).await;
    assert_eq!(get(&mut client, "/ok").await.0, 200);
    for (path, status, error) in cases {
        let before = connections.load(Ordering::SeqCst);
        let (got, got_error, body) = get(&mut client, path).await;
        assert_eq!((got, got_error.as_str()), (status, error), "{path}");
        match path {
            "/too-long" => assert_eq!(body.as_deref(), Ok(&b"hi"[..]), "{path}: the declared length only"),
            "/204-with-body" => assert_eq!(body.as_deref(), Ok(&b""[..]), "{path}: no body on a 204"),
            _ => {}
        }
        // The same client connection goes on, on another upstream connection: the bytes the
        // origin sent beyond the response are never read as the next answer.
        let (next, next_error, next_body) = get(&mut client, "/ok").await;
        assert_eq!(
            (next, next_error.as_str(), next_body.as_deref()),
            (200, "", Ok(&b"ok"[..])),
            "after {path}"
        );
        assert!(connections.load(Ordering::SeqCst) > before, "{path}: the upstream connection was reused");
    }

    // Each refusal is counted by its kind.
    let metrics = gw.runtime().metrics().render(None);
    for (kind, count) in [("upstream-invalid-response", 5), ("upstream-head-too-large", 2)] {
        let line = format!("wasmgate_errors_total{{kind=\"{kind}\"}} {count}");
        assert!(metrics.lines().any(|l| l == line), "{line} in\n{metrics}");
    }

    // A body that ends early: the client is not told it ended well (its connection is cut),
    // and a new connection is served.
    let mut cut = connect(addr).await;
    let (status, _, body) = get(&mut cut, "/cut-short").await;
    assert_eq!(status, 200);
    assert!(body.is_err(), "a cut-short body must not end cleanly: {body:?}");
    let mut fresh = connect(addr).await;
    assert_eq!(get(&mut fresh, "/ok").await.0, 200);
    gw.stop().await;
}

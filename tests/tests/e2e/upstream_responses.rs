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
        "/bare-cr" => (fixed("HTTP/1.1 200 OK\r\nX-A: a\rb\r\nContent-Length: 2\r\n\r\nhi"), false),
        "/nul" => (fixed("HTTP/1.1 200 OK\r\nX-A: a\0b\r\nContent-Length: 2\r\n\r\nhi"), false),
        "/304-with-body" => (fixed("HTTP/1.1 304 Not Modified\r\nContent-Length: 4\r\n\r\nevil"), false),
        "/interim" => (
            fixed(
                "HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfinal",
            ),
            false,
        ),
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
        fuzzed if fuzzed.starts_with("/fuzz/") => {
            let seed = fuzzed["/fuzz/".len()..].parse::<u64>().unwrap_or(0);
            fuzz::response(seed)
        }
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
        while let Ok((stream, _)) = listener.accept().await {
            counted.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(harness::answer_heads(stream, |head| {
                let path = head.split_whitespace().nth(1).unwrap_or("/");
                if head.starts_with("HEAD ") && path == "/head-with-body" {
                    return (b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nevil".to_vec(), false);
                }
                response(path)
            }));
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
    request(sender, http::Method::GET, path).await
}

async fn request(
    sender: &mut SendRequest<Empty<Bytes>>,
    method: http::Method,
    path: &str,
) -> (u16, String, Result<Bytes, String>) {
    try_request(sender, method, path).await.expect("response")
}

async fn try_request(
    sender: &mut SendRequest<Empty<Bytes>>,
    method: http::Method,
    path: &str,
) -> Result<(u16, String, Result<Bytes, String>), hyper::Error> {
    sender.ready().await?;
    let request = http::Request::builder()
        .method(method)
        .uri(path)
        .header("host", "gw")
        .body(Empty::new())
        .expect("request");
    let response = sender.send_request(request).await?;
    let status = response.status().as_u16();
    let error =
        response.headers().get("x-wasmgate-error").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    let body = response.into_body().collect().await.map(|b| b.to_bytes()).map_err(|e| e.to_string());
    Ok((status, error, body))
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
        ("/bare-cr", 502, "upstream-invalid-response"),
        ("/nul", 502, "upstream-invalid-response"),
        ("/big-head", 502, "upstream-head-too-large"),
        ("/many-fields", 502, "upstream-head-too-large"),
        ("/too-long", 200, ""),
        ("/204-with-body", 204, ""),
        ("/304-with-body", 304, ""),
        ("/interim", 200, ""),
    ];
    let mut client = connect(addr).await;
    assert_eq!(get(&mut client, "/ok").await.0, 200);
    for (path, status, error) in cases {
        let before = connections.load(Ordering::SeqCst);
        let (got, got_error, body) = get(&mut client, path).await;
        assert_eq!((got, got_error.as_str()), (status, error), "{path}");
        match path {
            "/too-long" => assert_eq!(body.as_deref(), Ok(&b"hi"[..]), "{path}: the declared length only"),
            "/204-with-body" | "/304-with-body" => {
                assert_eq!(body.as_deref(), Ok(&b""[..]), "{path}: no body on a 204 or 304")
            }
            "/interim" => assert_eq!(body.as_deref(), Ok(&b"final"[..]), "{path}: the final response's body"),
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
        if path != "/interim" {
            assert!(
                connections.load(Ordering::SeqCst) > before,
                "{path}: the upstream connection was reused"
            );
        }
    }

    // A body on the answer to HEAD: none reaches the client, and the connection is not reused.
    let before = connections.load(Ordering::SeqCst);
    let (status, _, body) = request(&mut client, http::Method::HEAD, "/head-with-body").await;
    assert_eq!((status, body.as_deref()), (200, Ok(&b""[..])), "HEAD");
    assert_eq!(get(&mut client, "/ok").await.2.as_deref(), Ok(&b"ok"[..]), "after HEAD");
    assert!(connections.load(Ordering::SeqCst) > before, "HEAD: the upstream connection was reused");

    // Each refusal is counted by its kind.
    let metrics = gw.runtime().metrics().render(None);
    for (kind, count) in [("upstream-invalid-response", 7), ("upstream-head-too-large", 2)] {
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

mod fuzz {
    //! Responses made by mutating valid ones, from a seed: the same seed gives the same bytes.

    const TEMPLATES: [&[u8]; 7] = [
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        b"HTTP/1.1 204 No Content\r\n\r\n",
        b"HTTP/1.1 304 Not Modified\r\nETag: \"x\"\r\n\r\n",
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi",
        b"HTTP/1.1 302 Found\r\nLocation: /x\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.0 200 OK\r\n\r\nuntil the close",
    ];
    /// Bytes that matter to framing.
    const ALPHABET: &[u8] = b"\r\n :0159aAzZ\t\0\x7f-,;";
    /// What a desynchronised connection would serve as the next answer.
    const SMUGGLED: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nevil";

    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            // xorshift64*
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    /// The response for `seed`, and whether the origin closes the connection after it (every
    /// other seed, so that kept connections are put to the test too).
    pub(super) fn response(seed: u64) -> (Vec<u8>, bool) {
        let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
        let mut bytes = TEMPLATES[rng.below(TEMPLATES.len())].to_vec();
        for _ in 0..1 + rng.below(4) {
            let at = rng.below(bytes.len() + 1);
            match rng.below(6) {
                0 | 1 => bytes.insert(at, ALPHABET[rng.below(ALPHABET.len())]),
                2 if at < bytes.len() => bytes[at] = ALPHABET[rng.below(ALPHABET.len())],
                3 if at < bytes.len() => {
                    bytes.remove(at);
                }
                4 => bytes.extend_from_slice(SMUGGLED),
                _ => {
                    // Repeat a line: a second Content-Length, Transfer-Encoding or status.
                    let lines: Vec<&[u8]> = bytes.split_inclusive(|b| *b == b'\n').collect();
                    let line = lines[rng.below(lines.len())].to_vec();
                    let at = bytes.windows(2).position(|w| w == b"\r\n").map_or(0, |i| i + 2);
                    bytes.splice(at..at, line);
                }
            }
        }
        (bytes, seed.is_multiple_of(2))
    }
}

/// Fuzzing what upstreams send: each case's response is a seeded mutation of a valid one
/// (`WASMGATE_FUZZ_CASES`, 150 unless set). Whatever the gateway makes of it, it does not
/// panic or hang, and the next request on the same client connection (or a new one, if the
/// gateway closed it) gets its own answer, never bytes left over from the mutated response.
/// In the tally, status 0 is a connection closed without a response.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutated_responses_never_desync_or_panic_the_gateway() {
    let cases: u64 = std::env::var("WASMGATE_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(150);
    let panics = harness::count_gateway_panics();
    let (origin, _) = raw_origin().await;
    // Short timeouts: a mutation that leaves a head or body incomplete costs half a second.
    let route = r#"retries = 0
timeouts = { response = "500ms", body_idle = "500ms" }"#;
    let gw = harness::start(&harness::one_backend(origin, route)).await.expect("gateway");
    let addr = gw.addrs()[0];
    let started = std::time::Instant::now();
    let mut statuses = std::collections::BTreeMap::<u16, usize>::new();
    let mut client = connect(addr).await;
    for seed in 0..cases {
        let path = format!("/fuzz/{seed}");
        let within = std::time::Duration::from_secs(10);
        let shown = || String::from_utf8_lossy(&fuzz::response(seed).0).into_owned();
        let answer = tokio::time::timeout(within, try_request(&mut client, http::Method::GET, &path))
            .await
            .unwrap_or_else(|_| panic!("seed {seed}: no answer within {within:?}: {:?}", shown()));
        // A body that breaks before its first byte aborts the connection before the head is
        // written (the head goes out with the first body bytes): an abort, as it must be, if
        // not a 502; counted as status 0.
        let status = answer.map_or(0, |(status, _, _)| status);
        *statuses.entry(status).or_default() += 1;
        if tokio::time::timeout(within, client.ready()).await.map_or(true, |ready| ready.is_err()) {
            client = connect(addr).await;
        }
        let (next, next_error, next_body) = get(&mut client, "/ok").await;
        assert_eq!(
            (next, next_error.as_str(), next_body.as_deref()),
            (200, "", Ok(&b"ok"[..])),
            "seed {seed}: the answer after {:?}",
            String::from_utf8_lossy(&fuzz::response(seed).0)
        );
    }
    eprintln!("{cases} mutated responses in {:.1} s; statuses {statuses:?}", started.elapsed().as_secs_f64());
    assert_eq!(panics.load(Ordering::SeqCst), 0, "the gateway panicked");
    gw.stop().await;
}

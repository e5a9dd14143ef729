//! What clients send, byte for byte: request framing that could smuggle a second request,
//! hop-by-hop headers both ways, the absolute-form target, and the connection limits. A raw
//! client writes exact bytes to the gateway; a raw origin records exactly what reached it.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use wasmgate_tests::harness::{self, Toml};

/// One request as the origin got it: the head, and whether its body arrived complete.
#[derive(Debug, Clone)]
struct Seen {
    head: String,
    complete: bool,
}

/// What the origin answers every request with: hop-by-hop headers the gateway must drop.
const ANSWER: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive, x-secret\r\n\
X-Secret: s\r\nKeep-Alive: timeout=5\r\nProxy-Authenticate: Basic\r\nX-Kept: k\r\n\r\nok";

/// A raw origin that reads each request whole (by its length, or to the end of its chunks)
/// before answering, and records it.
async fn raw_origin() -> (SocketAddr, Arc<Mutex<Vec<Seen>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let record = record.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 8192];
                loop {
                    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                        match stream.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                        continue;
                    };
                    let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
                    buf.drain(..end + 4);
                    let length = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse::<usize>().ok());
                    let chunked = head.contains("transfer-encoding: chunked");
                    let complete = loop {
                        let done = match length {
                            Some(n) => buf.len() >= n,
                            None if chunked => buf.windows(5).any(|w| w == b"0\r\n\r\n"),
                            None => true,
                        };
                        if done {
                            break true;
                        }
                        match stream.read(&mut chunk).await {
                            Ok(0) | Err(_) => break false,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    };
                    if let Ok(mut seen) = record.lock() {
                        seen.push(Seen { head, complete });
                    }
                    if !complete {
                        return;
                    }
                    buf.clear();
                    if stream.write_all(ANSWER).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, seen)
}

/// Writes `bytes` on a new connection and reads until the gateway closes it (true) or
/// `quiet` passes with nothing more (false).
async fn send_raw(addr: SocketAddr, bytes: &[u8], quiet: Duration) -> (String, bool) {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(bytes).await.expect("write");
    read_until_quiet(&mut stream, quiet).await
}

async fn read_until_quiet(stream: &mut TcpStream, quiet: Duration) -> (String, bool) {
    let mut got = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        match tokio::time::timeout(quiet, stream.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (String::from_utf8_lossy(&got).into_owned(), true),
            Ok(Ok(n)) => got.extend_from_slice(&chunk[..n]),
            Err(_) => return (String::from_utf8_lossy(&got).into_owned(), false),
        }
    }
}

fn responses(text: &str) -> usize {
    text.matches("HTTP/1.1 ").count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ambiguous_or_broken_request_framing_never_smuggles_a_request() {
    let (origin, seen) = raw_origin().await;
    let toml = Toml::new()
        .listener()
        .upstream("o", &[origin])
        .route("o")
        .raw("path_prefix = \"/buffered\"\nrequest_buffer = \"1KiB\"")
        .route("o")
        .raw("path_prefix = \"/slow\"\ntimeouts = { body_idle = \"300ms\" }")
        .route("o")
        .raw("retries = 0");
    let gw = harness::start(&toml).await.expect("gateway");
    let addr = gw.addrs()[0];
    let quiet = Duration::from_secs(2);
    let smuggled = "GET /smuggled HTTP/1.1\r\nHost: gw\r\n\r\n";
    let cases = [
        (
            "Content-Length with Transfer-Encoding",
            format!(
                "POST /a HTTP/1.1\r\nHost: gw\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{smuggled}"
            ),
        ),
        (
            "Transfer-Encoding: chunked twice",
            format!(
                "POST /a HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n\
                 5\r\nhello\r\n0\r\n\r\n{smuggled}"
            ),
        ),
        (
            "chunked, then another coding",
            format!(
                "POST /a HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n{smuggled}"
            ),
        ),
        (
            "a chunk size that is not hex",
            format!(
                "POST /a HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n{smuggled}"
            ),
        ),
        (
            "a chunk longer than its size",
            format!(
                "POST /a HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhello\r\n0\r\n\r\n{smuggled}"
            ),
        ),
        (
            "two differing Content-Lengths",
            format!(
                "POST /a HTTP/1.1\r\nHost: gw\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab{smuggled}"
            ),
        ),
        (
            "a buffered body whose chunks break off",
            format!(
                "POST /buffered/a HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel\r\nzz\r\n{smuggled}"
            ),
        ),
    ];
    for (what, request) in cases {
        let before = seen.lock().expect("seen").len();
        let (answer, closed) = send_raw(addr, request.as_bytes(), quiet).await;
        assert!(closed, "{what}: the connection stays open after {answer:?}");
        assert!(responses(&answer) <= 1, "{what}: the tail was answered as a request: {answer:?}");
        let reached: Vec<Seen> = seen.lock().expect("seen")[before..].to_vec();
        assert!(!reached.iter().any(|s| s.head.contains("/smuggled")), "{what}: the tail reached the origin");
        if what == "Content-Length with Transfer-Encoding" && answer.starts_with("HTTP/1.1 200") {
            // Forwarded by its transfer coding, whole: then the connection closed.
            assert!(
                reached.iter().all(|s| s.complete && !s.head.contains("content-length: 5")),
                "{what}: {reached:?}"
            );
        } else {
            assert!(answer.starts_with("HTTP/1.1 400"), "{what}: {answer:?}");
            // Nothing incomplete went upstream as if it were whole.
            assert!(reached.iter().all(|s| !s.complete), "{what}: {reached:?}");
        }
    }

    // A chunked body over the buffer's bound: 413, and nothing upstream.
    let before = seen.lock().expect("seen").len();
    let big =
        "400\r\n".to_owned() + &"x".repeat(1024) + "\r\n" + "400\r\n" + &"x".repeat(1024) + "\r\n0\r\n\r\n";
    let request = format!("POST /buffered/a HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: chunked\r\n\r\n{big}");
    let (answer, _) = send_raw(addr, request.as_bytes(), quiet).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer:?}");
    assert!(answer.contains("x-wasmgate-error: body-too-large"), "{answer:?}");
    assert_eq!(seen.lock().expect("seen").len(), before, "a body over the bound went upstream");

    // A body that stalls: 408. A small one is kept for retries, so nothing went upstream; a
    // large one streams, and its upstream request is aborted.
    for (length, streamed) in [(10, false), (100_000, true)] {
        let before = seen.lock().expect("seen").len();
        let request = format!("POST /slow HTTP/1.1\r\nHost: gw\r\nContent-Length: {length}\r\n\r\nab");
        let (answer, closed) = send_raw(addr, request.as_bytes(), quiet).await;
        assert!(answer.starts_with("HTTP/1.1 408") && closed, "{length}: {answer:?}");
        assert!(answer.contains("x-wasmgate-error: body-timeout"), "{answer:?}");
        if streamed {
            harness::wait_until("the origin sees the aborted request", || {
                seen.lock().expect("seen").len() > before
            })
            .await;
        }
        let reached: Vec<Seen> = seen.lock().expect("seen")[before..].to_vec();
        assert_eq!(reached.len(), usize::from(streamed), "{length}: {reached:?}");
        assert!(reached.iter().all(|s| !s.complete), "the stalled body went upstream as if whole");
    }
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hop_by_hop_headers_are_dropped_both_ways_and_absolute_form_routes() {
    let (origin, seen) = raw_origin().await;
    let toml = Toml::new()
        .listener()
        .upstream("o", &[origin])
        .upstream("nowhere", &[harness::closed_port()])
        .route("o")
        .raw("host = \"target.example\"")
        .route("nowhere")
        .raw("retries = 0");
    let gw = harness::start(&toml).await.expect("gateway");
    let addr = gw.addrs()[0];
    let request = "GET http://target.example/x HTTP/1.1\r\nHost: other.example\r\n\
                   Connection: keep-alive, x-drop\r\nX-Drop: 1\r\nProxy-Connection: keep-alive\r\n\
                   Keep-Alive: timeout=5\r\nTE: gzip\r\nProxy-Authorization: Basic eA==\r\n\
                   Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAoAAAAAIAAAAA\r\nX-Kept: yes\r\n\r\n";
    let (answer, _) = send_raw(addr, request.as_bytes(), Duration::from_millis(500)).await;
    let answer = answer.to_lowercase();
    // The absolute-form target picked the route, not Host.
    assert!(answer.starts_with("http/1.1 200"), "{answer}");
    let head = seen.lock().expect("seen").last().expect("the origin got it").head.clone();
    assert!(head.contains("host: target.example"), "{head}");
    assert!(head.contains("x-kept: yes"), "{head}");
    for gone in [
        "x-drop",
        "proxy-connection",
        "keep-alive",
        "te:",
        "proxy-authorization",
        "upgrade",
        "http2-settings",
    ] {
        assert!(!head.contains(gone), "{gone} reached the origin: {head}");
    }
    assert!(answer.contains("x-kept: k"), "{answer}");
    for gone in ["x-secret", "keep-alive", "proxy-authenticate"] {
        assert!(!answer.contains(gone), "{gone} reached the client: {answer}");
    }

    // Max-Forwards on OPTIONS: at 0 the gateway answers; above, it counts one hop.
    let before = seen.lock().expect("seen").len();
    let options =
        |n: u32| format!("OPTIONS /x HTTP/1.1\r\nHost: target.example\r\nMax-Forwards: {n}\r\n\r\n");
    let (answer, _) = send_raw(addr, options(0).as_bytes(), Duration::from_millis(500)).await;
    assert!(answer.starts_with("HTTP/1.1 200") && answer.to_lowercase().contains("allow:"), "{answer}");
    assert_eq!(seen.lock().expect("seen").len(), before, "Max-Forwards: 0 went upstream");
    let (answer, _) = send_raw(addr, options(5).as_bytes(), Duration::from_millis(500)).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let head = seen.lock().expect("seen").last().expect("forwarded").head.clone();
    assert!(head.contains("max-forwards: 4"), "{head}");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_closed_and_the_connection_cap_holds_new_ones_back() {
    let (origin, _) = raw_origin().await;
    let get = b"GET /x HTTP/1.1\r\nHost: gw\r\n\r\n";
    let toml = harness::one_backend(origin, "").raw("[server]\nheader_read_timeout = \"400ms\"");
    let gw = harness::start(&toml).await.expect("gateway");
    let addr = gw.addrs()[0];

    // A keep-alive connection that sends nothing more is closed once the timeout passes.
    let mut idle = TcpStream::connect(addr).await.expect("connect");
    idle.write_all(get).await.expect("write");
    let started = Instant::now();
    let (answer, closed) = read_until_quiet(&mut idle, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 200") && closed, "{answer:?}");
    assert!(started.elapsed() >= Duration::from_millis(300), "closed after {:?}", started.elapsed());
    gw.stop().await;

    let toml = harness::one_backend(origin, "").raw("[server]\nmax_connections = 2");
    let gw = harness::start(&toml).await.expect("gateway");
    let addr = gw.addrs()[0];

    // At the cap, a third connection waits until one of the two closes.
    let mut first = TcpStream::connect(addr).await.expect("connect");
    let mut second = TcpStream::connect(addr).await.expect("connect");
    for stream in [&mut first, &mut second] {
        stream.write_all(get).await.expect("write");
        let mut buf = [0u8; 512];
        let n = stream.read(&mut buf).await.expect("read");
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    }
    let mut third = TcpStream::connect(addr).await.expect("the kernel accepts it");
    third.write_all(get).await.expect("write");
    let mut buf = [0u8; 512];
    let early = tokio::time::timeout(Duration::from_millis(500), third.read(&mut buf)).await;
    assert!(early.is_err(), "served past the cap");
    drop(first);
    let n = tokio::time::timeout(Duration::from_secs(5), third.read(&mut buf))
        .await
        .expect("served once a connection closed")
        .expect("read");
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"), "{:?}", String::from_utf8_lossy(&buf[..n]));
    drop(second);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_disconnected_after_the_write_timeout() {
    let origin = wasmgate_example_origin::Origin::start("o", "127.0.0.1:0".parse().expect("addr"), None)
        .await
        .expect("origin");
    let toml = harness::one_backend(origin.addr(), "").raw("[server]\nwrite_timeout = \"500ms\"");
    let gw = harness::start(&toml).await.expect("gateway");
    const SIZE: usize = 200 << 20;
    let mut stream = TcpStream::connect(gw.addrs()[0]).await.expect("connect");
    stream
        .write_all(format!("GET /bytes/{SIZE} HTTP/1.1\r\nHost: gw\r\n\r\n").as_bytes())
        .await
        .expect("write");
    // Read nothing while the gateway fills the socket's buffers and then waits.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut got = 0usize;
    let mut chunk = vec![0u8; 1 << 16];
    let ended = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got += n,
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the connection stayed open");
    assert!(got < SIZE, "the whole response arrived: the client was never cut off");
    gw.stop().await;
}

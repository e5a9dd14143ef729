//! The request head's limits (`[server]`), each answered before anything reaches a plugin or
//! an upstream: the whole head and the number of fields (431 from the parser, which closes the
//! connection), one field line (431) and the target (414), answered on a connection that then
//! serves the next request.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use wasmgate_example_origin::Origin;
use wasmgate_tests::harness;

/// Writes `raw` on `stream` and reads one response; its status line and whether it said close.
async fn exchange(stream: &mut tokio::net::TcpStream, raw: &[u8]) -> (String, bool) {
    stream.write_all(raw).await.expect("write");
    let mut response = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut chunk))
            .await
            .expect("an answer in time")
            .expect("read");
        response.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&response).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length = head
                .lines()
                .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length: ").map(str::to_owned))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            if body.len() >= length || n == 0 {
                let close = head.to_ascii_lowercase().contains("connection: close");
                return (head.lines().next().unwrap_or("").to_owned(), close);
            }
        }
        assert!(n > 0, "the connection closed before a whole response: {text:?}");
    }
}

#[tokio::test]
async fn each_head_limit_is_answered_before_the_upstream() {
    let o = Origin::start("o", "127.0.0.1:0".parse().expect("addr"), None).await.expect("origin");
    let toml = harness::one_backend(o.addr(), "").raw("[server]").raw(
        "max_request_head = \"16KiB\"\nmax_request_fields = 20\nmax_field_line = \"1KiB\"\nmax_request_target = \"2KiB\"",
    );
    let gw = harness::start(&toml).await.expect("gateway");
    let addr = gw.addrs()[0];
    let ok = b"GET / HTTP/1.1\r\nHost: gw\r\n\r\n";

    // One field line, and the target: refused, and the connection goes on.
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let line = format!("GET / HTTP/1.1\r\nHost: gw\r\nX-Big: {}\r\n\r\n", "v".repeat(1100));
    assert_eq!(
        exchange(&mut stream, line.as_bytes()).await.0,
        "HTTP/1.1 431 Request Header Fields Too Large"
    );
    let target = format!("GET /{} HTTP/1.1\r\nHost: gw\r\n\r\n", "a".repeat(2100));
    assert_eq!(exchange(&mut stream, target.as_bytes()).await.0, "HTTP/1.1 414 URI Too Long");
    assert_eq!(exchange(&mut stream, ok).await.0, "HTTP/1.1 200 OK");
    assert_eq!(o.requests(), 1, "only the valid request reached the origin");

    // The whole head, and the number of fields: the parser refuses them.
    let fields: String = (0..30).map(|i| format!("X-F{i}: v\r\n")).collect();
    let many = format!("GET / HTTP/1.1\r\nHost: gw\r\n{fields}\r\n");
    let big: String = (0..19).map(|i| format!("X-F{i}: {}\r\n", "v".repeat(1000))).collect();
    let large = format!("GET / HTTP/1.1\r\nHost: gw\r\n{big}\r\n");
    for raw in [many, large] {
        let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        assert_eq!(
            exchange(&mut stream, raw.as_bytes()).await.0,
            "HTTP/1.1 431 Request Header Fields Too Large"
        );
    }
    assert_eq!(o.requests(), 1);
    let mut fresh = tokio::net::TcpStream::connect(addr).await.expect("connect");
    assert_eq!(exchange(&mut fresh, ok).await.0, "HTTP/1.1 200 OK");
    gw.stop().await;
}

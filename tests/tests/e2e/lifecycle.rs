//! The whole request life as plugins see it, end to end: the phase order for a normal request,
//! a local answer, an upstream failure and a client that goes away; body edits both ways,
//! buffered and streamed; the buffering limit; trailers; the error phase; WebSocket tunnels;
//! and an `h2c` upgrade that must not be tunnelled.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use wasmgate::server::Running;
use wasmgate_example_origin::Origin;
use wasmgate_tests::client::{self, Reply};
use wasmgate_tests::harness::{self, Toml};
use wasmgate_tests::wasm;

async fn origin(name: &str) -> Origin {
    Origin::start(name, "127.0.0.1:0".parse().expect("addr"), None).await.expect("origin")
}

/// A gateway with the tracer on every route: `/down` goes to a closed port, `PUT` requests
/// have their bodies buffered up to 1 KiB, the rest goes to `backend`.
async fn traced(backend: SocketAddr) -> Running {
    harness::start(
        &Toml::new()
            .listener()
            .plugin("tracer", wasm::TRACER, "")
            .upstream("o", &[backend])
            .upstream("down", &[harness::closed_port()])
            .route("down")
            .raw(r#"path_prefix = "/down""#)
            .raw(r#"plugins = ["tracer"]"#)
            .raw("retries = 0")
            .route("o")
            .raw(r#"methods = ["PUT"]"#)
            .raw(r#"plugins = ["tracer"]"#)
            .raw(r#"request_buffer = "1KiB""#)
            .route("o")
            .raw(r#"plugins = ["tracer"]"#),
    )
    .await
    .expect("gateway")
}

/// A gateway with one route through the tracer to group `o` of `backends`; `group_extra` goes
/// in the group's table and `route_extra` in the route's.
async fn tracer_in_front_of(backends: &[SocketAddr], group_extra: &str, route_extra: &str) -> Running {
    harness::start(
        &Toml::new()
            .listener()
            .plugin("tracer", wasm::TRACER, "")
            .upstream("o", backends)
            .raw(group_extra)
            .route("o")
            .raw(r#"plugins = ["tracer"]"#)
            .raw(route_extra),
    )
    .await
    .expect("gateway")
}

async fn send(
    gw: &Running,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &'static [u8],
) -> Reply {
    let mut request = Request::builder().method(method).uri(format!("http://{}{path}", gw.addrs()[0]));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request.body(Full::new(Bytes::from_static(body))).expect("request");
    client::send(&client::http1(), request).await.expect("response")
}

#[tokio::test]
async fn the_log_phase_sees_every_phase_in_order_whatever_happened() {
    let o = origin("o").await;
    let gw = traced(o.addr()).await;

    let reply = send(&gw, "POST", "/echo", &[("x-trace-id", "normal")], b"hello").await;
    assert_eq!((reply.status.as_u16(), reply.text().as_str()), (200, "hello"));
    assert_eq!(
        harness::tracer_record(&gw, "normal").await,
        "request-headers,request-body,select-upstream,upstream-request,response-headers,response-body,log\
         |status=200|id=-|in=5|out=5|error=-|client=-"
    );

    let reply =
        send(&gw, "GET", "/", &[("x-trace-id", "local"), ("x-trace-answer", "upstream-request")], b"").await;
    assert_eq!((reply.status.as_u16(), reply.text().as_str()), (200, "answered in upstream-request"));
    assert_eq!(
        harness::tracer_record(&gw, "local").await,
        "request-headers,select-upstream,upstream-request,log|status=200|id=-|in=0|out=28|error=-|client=-"
    );

    let reply = send(&gw, "GET", "/down", &[("x-trace-id", "failed")], b"").await;
    assert_eq!(reply.status, 502);
    let failed = harness::tracer_record(&gw, "failed").await;
    assert!(
        failed.starts_with("request-headers,select-upstream,upstream-request,upstream-error,log|status=502|"),
        "{failed}"
    );
    assert!(failed.contains("error=cannot connect"), "{failed}");

    // The client reads the headers of a body that never ends, then goes away.
    let request = Request::get(format!("http://{}/stall", gw.addrs()[0]))
        .header("x-trace-id", "abandoned")
        .body(Full::<Bytes>::default())
        .expect("request");
    let response = client::http1().request(request).await.expect("headers");
    assert_eq!(response.status(), 200);
    drop(response);
    let abandoned = harness::tracer_record(&gw, "abandoned").await;
    assert!(
        abandoned
            .starts_with("request-headers,select-upstream,upstream-request,response-headers,log|status=200|"),
        "{abandoned}"
    );
    assert!(abandoned.contains("error=the response did not finish"), "{abandoned}");
    gw.stop().await;
}

#[tokio::test]
async fn a_plugin_answers_from_any_phase_before_the_response_begins() {
    let o = origin("o").await;
    let gw = traced(o.addr()).await;
    for phase in
        ["request-headers", "request-body", "select-upstream", "upstream-request", "response-headers"]
    {
        let id = format!("answer-{phase}");
        let reply =
            send(&gw, "POST", "/echo", &[("x-trace-id", &id), ("x-trace-answer", phase)], b"body").await;
        assert_eq!(
            (reply.status.as_u16(), reply.header("x-answered-in"), reply.text()),
            (200, phase, format!("answered in {phase}")),
        );
        assert!(harness::tracer_record(&gw, &id).await.contains(",log|status=200|"), "{phase}");
    }
    // A streamed body (larger than the retry buffer) answered from its last chunk: the upstream
    // request is abandoned and the plugin's answer sent.
    let big: &'static [u8] = Box::leak(vec![b'a'; 200 * 1024].into_boxed_slice());
    let reply = send(&gw, "POST", "/echo", &[("x-trace-answer", "request-body")], big).await;
    assert_eq!((reply.status.as_u16(), reply.text().as_str()), (200, "answered in request-body"));
    gw.stop().await;
}

#[tokio::test]
async fn body_plugins_edit_both_bodies_whole_or_streamed() {
    let o = origin("o").await;
    let gw = traced(o.addr()).await;
    let upper = [("x-trace-upper", "1")];

    // Small: kept whole for retries, edited whole; the echo comes back edited again.
    let reply = send(&gw, "POST", "/echo", &upper, b"hello world").await;
    assert_eq!((reply.status.as_u16(), reply.text().as_str()), (200, "HELLO WORLD"));

    // Large: streamed through the plugin chunk by chunk, without a Content-Length.
    let big: &'static [u8] = Box::leak(b"abcdefgh".repeat(40 * 1024).into_boxed_slice());
    let reply = send(&gw, "POST", "/echo", &upper, big).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body.len(), big.len());
    assert!(reply.body.iter().all(|b| b.is_ascii_uppercase()), "every streamed chunk was edited");
    assert_eq!(reply.header("content-length"), "", "an edited body cannot keep its length");

    // A large response, streamed through the response-body phase.
    let reply = send(&gw, "GET", "/bytes/300000", &upper, b"").await;
    assert_eq!(reply.body.len(), 300_000);
    assert!(reply.body.iter().all(|&b| b == b'X'));
    gw.stop().await;
}

#[tokio::test]
async fn a_buffered_body_is_bounded_and_opens_the_head_to_body_plugins() {
    let o = origin("o").await;
    let gw = traced(o.addr()).await;
    let reply = send(&gw, "PUT", "/echo-headers", &[], b"0123456789").await;
    assert_eq!(reply.status, 200);
    assert!(reply.text().contains("x-body-seen: 10\n"), "{}", reply.text());
    assert!(reply.text().contains("content-length: 10\n"), "{}", reply.text());

    let big: &'static [u8] = Box::leak(vec![b'a'; 2048].into_boxed_slice());
    let reply = send(&gw, "PUT", "/echo", &[], big).await;
    assert_eq!((reply.status.as_u16(), reply.header("x-wasmgate-error")), (413, "body-too-large"));

    // Streamed, the head is read-only to body plugins: the header is refused.
    let reply = send(&gw, "POST", "/echo-headers", &[], b"0123456789").await;
    assert!(!reply.text().contains("x-body-seen"), "{}", reply.text());
    gw.stop().await;
}

#[tokio::test]
async fn the_error_phase_can_answer_or_ask_for_a_retry() {
    let o = origin("o").await;
    let gw = tracer_in_front_of(&[harness::closed_port(), o.addr()], "", "retry_on = []").await;
    // Round robin alternates; with `retry_on` empty only the plugin's request retries.
    let mut plain = Vec::new();
    for _ in 0..4 {
        plain.push(send(&gw, "GET", "/", &[], b"").await.status.as_u16());
        let retried = send(&gw, "GET", "/", &[("x-trace-retry", "1")], b"").await;
        assert_eq!(retried.status, 200, "the plugin's retry went to the other backend");
        let answered = send(&gw, "GET", "/", &[("x-trace-answer", "upstream-error")], b"").await;
        assert!(answered.status == 200, "either the backend or the plugin answered: {}", answered.text());
    }
    assert!(plain.contains(&502) && plain.contains(&200), "{plain:?}");
    gw.stop().await;
}

#[tokio::test]
async fn trailers_go_through_the_trailer_phase() {
    let o = origin("o").await;
    let gw = tracer_in_front_of(&[o.addr()], r#"protocol = "http2""#, "").await;
    let request = Request::post(format!("http://{}/echo.Echo/Unary", gw.addrs()[0]))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(Full::new(wasmgate_example_origin::frame(b"ping")))
        .expect("request");
    let reply = client::h2c(gw.addrs()[0], request).await.expect("response");
    assert_eq!(reply.status, 200);
    let trailers = reply.trailers.clone().unwrap_or_default();
    assert_eq!(trailers.get("grpc-status").map(|v| v.as_bytes()), Some(&b"0"[..]));
    assert_eq!(trailers.get("x-traced").map(|v| v.as_bytes()), Some(&b"1"[..]));
    assert_eq!(reply.body, wasmgate_example_origin::frame(b"ping"));
    gw.stop().await;
}

#[tokio::test]
async fn websocket_messages_go_through_a_tunnel_that_closes_when_idle() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let echo = harness::websocket_echo().await.expect("echo server");
    let gw = harness::start(&harness::one_backend(echo, "tunnel_idle = \"500ms\"\n")).await.expect("gateway");
    let stream = tokio::net::TcpStream::connect(gw.addrs()[0]).await.expect("connect");
    let url = format!("ws://{}/chat", gw.addrs()[0]);
    let (mut ws, response) = tokio_tungstenite::client_async(url, stream).await.expect("handshake");
    assert_eq!(response.status(), 101);
    for text in ["one", "two", "three"] {
        ws.send(Message::text(text)).await.expect("send");
        let back = tokio::time::timeout(Duration::from_secs(5), ws.next()).await.expect("in time");
        assert_eq!(back.expect("message").expect("ok").into_text().expect("text").as_str(), text);
    }
    // Nothing moves: the tunnel closes after its idle timeout.
    let closed = tokio::time::timeout(Duration::from_secs(10), ws.next()).await.expect("closed in time");
    assert!(!matches!(closed, Some(Ok(Message::Text(_)))), "{closed:?}");
    gw.stop().await;
}

#[tokio::test]
async fn an_h2c_upgrade_is_never_tunnelled() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let o = origin("o").await;
    let gw = harness::start(&harness::one_backend(o.addr(), "")).await.expect("gateway");
    let mut stream = tokio::net::TcpStream::connect(gw.addrs()[0]).await.expect("connect");
    stream
        .write_all(
            b"GET /echo-headers HTTP/1.1\r\nHost: example.test\r\nConnection: Upgrade, HTTP2-Settings\r\n\
              Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAoAAAAAIAAAAA\r\n\r\n",
        )
        .await
        .expect("write");
    let mut answer = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut answer))
        .await
        .expect("in time")
        .expect("read");
    let answer = String::from_utf8_lossy(&answer[..n]).to_lowercase();
    assert!(answer.starts_with("http/1.1 200"), "{answer}");
    assert!(!answer.contains("upgrade:"), "neither the origin nor the client saw an upgrade: {answer}");
    assert!(!answer.contains("http2-settings"), "{answer}");
    gw.stop().await;
}

//! Upstream resilience end to end: retries on another backend, outlier ejection, the
//! all-unhealthy policy and the circuit breaker, against real origins on 127.0.0.1.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use wasmgate_example_origin::Origin;
use wasmgate_tests::client::{self, Reply};
use wasmgate_tests::harness::{self, Toml};

async fn origin(name: &str) -> Origin {
    Origin::start(name, "127.0.0.1:0".parse().expect("addr"), None).await.expect("origin")
}

async fn get(addr: SocketAddr, path: &str) -> Reply {
    client::get(addr, path, &[]).await.expect("request")
}

#[tokio::test]
async fn retries_go_to_another_backend_only_when_it_is_safe() {
    let a = origin("a").await;
    let gw = harness::start(
        &Toml::new()
            .listener()
            .upstream("half", &[harness::closed_port(), a.addr()])
            .route("half")
            .raw(r#"path_prefix = "/big""#)
            .raw(r#"retry_buffer = "4""#)
            .route("half"),
    )
    .await
    .expect("gateway");
    let addr = gw.addrs()[0];
    let post = |path: &str| {
        Request::post(format!("http://{addr}{path}"))
            .body(Full::new(Bytes::from_static(b"payload")))
            .expect("req")
    };
    // Round robin sends every other first attempt to the dead backend; the retry saves it.
    // A small POST body is kept, and nothing was sent to the dead backend: retried too, intact.
    for _ in 0..4 {
        let reply = get(addr, "/").await;
        assert_eq!((reply.status.as_u16(), reply.header("x-origin")), (200, "a"));
        let reply = client::send(&client::http1(), post("/echo")).await.expect("post");
        assert_eq!((reply.status.as_u16(), reply.text().as_str()), (200, "payload"));
    }
    // A body larger than the route's retry buffer streams, so it cannot be sent twice.
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(client::send(&client::http1(), post("/big/echo")).await.expect("post").status.as_u16());
    }
    assert!(statuses.contains(&502) && statuses.contains(&200), "{statuses:?}");
    gw.stop().await;
}

#[tokio::test]
async fn a_post_that_reached_a_failing_backend_is_not_sent_again() {
    let a = origin("a").await;
    let bad = Origin::start_failing("bad", "127.0.0.1:0".parse().expect("addr"), StatusCode::BAD_GATEWAY)
        .await
        .expect("origin");
    let gw = harness::start(
        &Toml::new()
            .listener()
            .upstream("pair", &[bad.addr(), a.addr()])
            .route("pair")
            .raw(r#"retry_on = ["502"]"#),
    )
    .await
    .expect("gateway");
    let addr = gw.addrs()[0];
    // GET is idempotent: a 502 from one backend is retried on the other.
    for _ in 0..4 {
        assert_eq!(get(addr, "/").await.header("x-origin"), "a");
    }
    let before = bad.requests();
    let mut statuses = Vec::new();
    for _ in 0..4 {
        let post = Request::post(format!("http://{addr}/echo"))
            .body(Full::new(Bytes::from_static(b"x")))
            .expect("req");
        statuses.push(client::send(&client::http1(), post).await.expect("post").status.as_u16());
    }
    let reached_bad = bad.requests() - before;
    assert!(reached_bad > 0, "round robin should send some POSTs to the failing backend");
    assert_eq!(
        statuses.iter().filter(|&&s| s == 502).count(),
        reached_bad,
        "each POST that reached it got its 502: {statuses:?}"
    );
    gw.stop().await;
}

#[tokio::test]
async fn a_failing_backend_is_ejected_then_comes_back() {
    let a = origin("a").await;
    let sick = Origin::start_failing(
        "sick",
        "127.0.0.1:0".parse().expect("addr"),
        StatusCode::INTERNAL_SERVER_ERROR,
    )
    .await
    .expect("origin");
    let gw = harness::start(
        &Toml::new()
            .listener()
            .upstream("pair", &[sick.addr(), a.addr()])
            .raw(r#"outlier_detection = { consecutive_failures = 2, base_ejection = "500ms" }"#)
            .route("pair")
            .raw("retries = 0"),
    )
    .await
    .expect("gateway");
    let addr = gw.addrs()[0];
    // Round robin: sick, a, sick -> two consecutive failures on sick eject it.
    let first: Vec<u16> = futures(addr, 4).await;
    assert_eq!(first.iter().filter(|&&s| s == 500).count(), 2, "{first:?}");
    let ejected_at = Instant::now();
    let during: Vec<u16> = futures(addr, 6).await;
    if ejected_at.elapsed() < Duration::from_millis(450) {
        assert!(during.iter().all(|&s| s == 200), "an ejected backend got traffic: {during:?}");
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    let after: Vec<u16> = futures(addr, 4).await;
    assert!(after.contains(&500), "the ejection should have ended: {after:?}");
    gw.stop().await;
}

async fn futures(addr: SocketAddr, n: usize) -> Vec<u16> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(get(addr, "/").await.status.as_u16());
    }
    out
}

#[tokio::test]
async fn with_every_backend_down_the_policy_decides_between_503_and_trying_anyway() {
    let dead = harness::closed_port();
    let health_check = r#"health_check = { kind = "tcp", interval = "50ms", unhealthy_threshold = 1 }"#;
    let gw = harness::start(
        &Toml::new()
            .listener()
            .upstream("strict", &[dead])
            .raw(health_check)
            .upstream("lenient", &[dead])
            .raw(health_check)
            .raw(r#"when_all_unhealthy = "route-to-all""#)
            .route("strict")
            .raw(r#"path_prefix = "/strict""#)
            .route("lenient"),
    )
    .await
    .expect("gateway");
    let addr = gw.addrs()[0];
    let gateway = gw.gateway();
    let healthy = |g: &str| gateway.upstreams().get(g).expect("group").backends()[0].is_healthy();
    harness::wait_until("the dead backend marked unhealthy", || !healthy("strict") && !healthy("lenient"))
        .await;
    let reply = get(addr, "/strict").await;
    assert_eq!((reply.status.as_u16(), reply.header("x-wasmgate-error")), (503, "no-healthy-backend"));
    let reply = get(addr, "/lenient").await;
    assert_eq!((reply.status.as_u16(), reply.header("x-wasmgate-error")), (502, "upstream-connect"));
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_circuit_breaker_answers_503_at_once() {
    let a = origin("a").await;
    let gw = harness::start(
        &Toml::new().listener().upstream("one", &[a.addr()]).raw("max_requests = 1").route("one"),
    )
    .await
    .expect("gateway");
    let addr = gw.addrs()[0];
    let slow = tokio::spawn(async move { client::get(addr, "/delay/2000", &[]).await });
    let gateway = gw.gateway();
    harness::wait_until("the slow request in flight", || {
        gateway.upstreams().get("one").expect("group").backends()[0].in_flight() == 1
    })
    .await;
    let started = Instant::now();
    let reply = get(addr, "/").await;
    assert_eq!((reply.status.as_u16(), reply.header("x-wasmgate-error")), (503, "upstream-overloaded"));
    assert!(started.elapsed() < Duration::from_millis(1500), "the breaker should answer without waiting");
    assert_eq!(slow.await.expect("task").expect("slow request").status, 200);
    assert_eq!(get(addr, "/").await.status, 200, "the breaker closes once the backend is free");
    gw.stop().await;
}

#[tokio::test]
async fn an_upstream_that_breaks_after_the_headers_aborts_the_client_side() {
    use http_body_util::BodyExt;
    let a = origin("a").await;
    let gw = harness::start(&harness::one_backend(a.addr(), "")).await.expect("gateway");
    let addr = gw.addrs()[0];

    // HTTP/1.1: the status arrives, the body ends in an error (no final chunk), never cleanly.
    let response = client::http1()
        .request(Request::get(format!("http://{addr}/abort")).body(Full::default()).expect("req"))
        .await
        .expect("headers arrive");
    assert_eq!(response.status(), 200);
    assert!(response.into_body().collect().await.is_err(), "HTTP/1.1 body must not end cleanly");

    // HTTP/2: the stream is reset.
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .expect("h2 handshake");
    tokio::spawn(conn);
    let request = Request::get(format!("http://{addr}/abort"))
        .version(http::Version::HTTP_2)
        .body(Full::<Bytes>::default());
    let response = sender.send_request(request.expect("req")).await.expect("headers arrive");
    assert_eq!(response.status(), 200);
    assert!(response.into_body().collect().await.is_err(), "HTTP/2 stream must be reset, not ended");
    // The route retries resets (the default `retry_on`), but not once the response began.
    assert_eq!(a.requests(), 2, "a reset after the headers was retried");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_connections_are_reused_under_steady_load() {
    let a = origin("a").await;
    let gw = harness::start(&harness::one_backend(a.addr(), "")).await.expect("gateway");
    let addr = gw.addrs()[0];
    // Ten keep-alive clients, 300 requests each.
    let clients: Vec<_> = (0..10)
        .map(|_| {
            tokio::spawn(async move {
                let client = client::http1();
                for _ in 0..300 {
                    let request = Request::get(format!("http://{addr}/")).body(Full::default()).expect("req");
                    assert_eq!(client::send(&client, request).await.expect("request").status, 200);
                }
            })
        })
        .collect();
    for c in clients {
        c.await.expect("client");
    }
    let stats = gw.gateway().client("o").expect("client").stats();
    let reuse = 1.0 - stats.new_connections as f64 / stats.requests as f64;
    eprintln!(
        "upstream: {} requests on {} new connections: reuse {:.4}",
        stats.requests, stats.new_connections, reuse
    );
    assert_eq!(stats.requests, 3000);
    assert!(reuse >= 0.99, "reuse {reuse}");
    gw.stop().await;
}

#[tokio::test]
async fn stalled_bodies_and_slow_exchanges_are_cut_off_by_the_route_timeouts() {
    use http_body_util::BodyExt;
    let a = origin("a").await;
    let (mute_addr, mute) = harness::mute_server().await.expect("mute server");
    let gw = harness::start(
        &Toml::new()
            .listener()
            .upstream("o", &[a.addr()])
            .upstream("mute", &[mute_addr])
            .raw(r#"tls_handshake_timeout = "300ms""#)
            .raw(r#"tls = { sni = "mute.test" }"#)
            .route("o")
            .raw(r#"path_prefix = "/delay""#)
            .raw(r#"timeouts = { total = "300ms" }"#)
            .route("mute")
            .raw(r#"path_prefix = "/mute""#)
            .raw("retries = 0")
            .route("o")
            .raw(r#"timeouts = { body_idle = "300ms" }"#),
    )
    .await
    .expect("gateway");
    let addr = gw.addrs()[0];

    // The upstream body stalls after its first chunk: the client sees an abort, not a hang.
    let started = Instant::now();
    let response = client::http1()
        .request(Request::get(format!("http://{addr}/stall")).body(Full::default()).expect("req"))
        .await
        .expect("headers");
    let body = tokio::time::timeout(Duration::from_secs(10), response.into_body().collect()).await;
    assert!(matches!(body, Ok(Err(_))), "a stalled body must end in an error: {body:?}");
    assert!(started.elapsed() < Duration::from_secs(5));

    // The total timeout bounds the whole exchange.
    assert_eq!(get(addr, "/delay/10").await.status, 200);
    let started = Instant::now();
    let reply = get(addr, "/delay/3000").await;
    assert_eq!((reply.status.as_u16(), reply.header("x-wasmgate-error")), (504, "total-timeout"));
    assert!(started.elapsed() < Duration::from_secs(2));

    // A backend that never completes the TLS handshake: the group's handshake timeout.
    let started = Instant::now();
    let reply = get(addr, "/mute").await;
    assert_eq!((reply.status.as_u16(), reply.header("x-wasmgate-error")), (504, "upstream-tls-timeout"));
    assert!(started.elapsed() < Duration::from_secs(5));
    gw.stop().await;
    mute.abort();
}

#[tokio::test]
async fn a_client_that_stops_sending_its_body_is_cut_off() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let a = origin("a").await;
    let gw = harness::start(&harness::one_backend(a.addr(), "timeouts = { body_idle = \"300ms\" }\n"))
        .await
        .expect("gateway");
    let mut stream = tokio::net::TcpStream::connect(gw.addrs()[0]).await.expect("connect");
    stream
        .write_all(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123456789")
        .await
        .expect("write");
    let started = Instant::now();
    let mut seen = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut seen)).await;
    assert!(read.is_ok(), "the connection hung with a stalled request body");
    assert!(started.elapsed() < Duration::from_secs(5), "cut off after {:?}", started.elapsed());
    gw.stop().await;
}

#[tokio::test]
async fn health_checks_send_the_configured_host_and_accept_the_configured_statuses() {
    let strict = Origin::start("strict", "127.0.0.1:0".parse().expect("addr"), Some("health.test".into()))
        .await
        .expect("origin");
    let b = strict.addr();
    let check = |extra: &str| {
        format!(
            "health_check = {{ path = \"/health\", interval = \"50ms\", unhealthy_threshold = 1, jitter = \"10ms\"{extra} }}"
        )
    };
    let gw = harness::start(
        &Toml::new()
            .listener()
            .upstream("with-host", &[b])
            .raw(&check(r#", host = "health.test""#))
            .upstream("without-host", &[b])
            .raw(&check(""))
            .upstream("forbidden-is-fine", &[b])
            .raw(&check(r#", expected_status = ["403"]"#))
            .route("with-host"),
    )
    .await
    .expect("gateway");
    let gateway = gw.gateway();
    let healthy = |g: &str| gateway.upstreams().get(g).expect("group").backends()[0].is_healthy();
    harness::wait_until("a 403 marks the backend unhealthy", || !healthy("without-host")).await;
    // Several more rounds of checks have run by now for the other two groups.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(healthy("with-host"), "the configured Host makes the origin answer 200");
    assert!(healthy("forbidden-is-fine"), "403 was configured as healthy");
    gw.stop().await;
}

#[tokio::test]
async fn a_backend_added_by_reload_keeps_the_connections_to_the_others() {
    let (a, b) = (origin("a").await, origin("b").await);
    let config = |backends: &[SocketAddr]| Toml::new().listener().upstream("o", backends).route("o");
    let gw = harness::start(&config(&[a.addr()])).await.expect("gateway");
    let addr = gw.addrs()[0];
    let client = client::http1();
    let request = || Request::get(format!("http://{addr}/")).body(Full::default()).expect("req");
    for _ in 0..3 {
        assert_eq!(client::send(&client, request()).await.expect("request").header("x-origin"), "a");
    }
    let before = gw.gateway().client("o").expect("client").clone();
    assert_eq!(before.stats().new_connections, 1);

    gw.reload(harness::config(&config(&[a.addr(), b.addr()])).expect("config")).await.expect("reload");
    let mut origins = Vec::new();
    for _ in 0..4 {
        origins.push(client::send(&client, request()).await.expect("request").header("x-origin").to_owned());
    }
    assert!(origins.contains(&"a".to_owned()) && origins.contains(&"b".to_owned()), "{origins:?}");
    let after = gw.gateway().client("o").expect("client").clone();
    assert!(std::sync::Arc::ptr_eq(&before, &after), "the reload keeps the group's client and pool");
    assert_eq!(after.stats().new_connections, 2, "one new connection, to b; a's was reused");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_max_connections_requests_wait_and_past_max_pending_they_get_503() {
    let a = origin("a").await;
    let gw = harness::start(
        &Toml::new()
            .listener()
            .upstream("one", &[a.addr()])
            .raw("max_connections = 1")
            .raw("max_pending = 1")
            .route("one"),
    )
    .await
    .expect("gateway");
    let addr = gw.addrs()[0];
    let gateway = gw.gateway();
    let backend = || gateway.upstreams().get("one").expect("group").backends()[0].pending();
    let slow = tokio::spawn(async move { client::get(addr, "/delay/1500", &[]).await });
    harness::wait_until("the slow request in flight", || {
        gateway.upstreams().get("one").expect("group").backends()[0].in_flight() == 1
    })
    .await;
    // The one connection is busy: the next request waits for it...
    let waiting = tokio::spawn(async move { client::get(addr, "/echo-headers", &[]).await });
    harness::wait_until("a request waiting for the connection", || backend() == 1).await;
    // ...and with the queue full, one more is turned away at once.
    let started = Instant::now();
    let reply = get(addr, "/").await;
    assert_eq!((reply.status.as_u16(), reply.header("x-wasmgate-error")), (503, "upstream-overloaded"));
    assert!(started.elapsed() < Duration::from_millis(1000), "the breaker should answer without waiting");
    assert_eq!(slow.await.expect("task").expect("slow request").status, 200);
    assert_eq!(waiting.await.expect("task").expect("waiting request").status, 200);
    let stats = gw.gateway().client("one").expect("client").stats();
    assert_eq!((stats.requests, stats.new_connections), (2, 1), "both requests shared the one connection");
    gw.stop().await;
}

/// A listener whose accept queue is full and never drained: the kernel drops further SYNs,
/// so a connect to it hangs. The returned sockets hold the queue full.
fn stalled_listener() -> (SocketAddr, tokio::net::TcpListener, Vec<std::net::TcpStream>) {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.bind("127.0.0.1:0".parse().expect("addr")).expect("bind");
    let addr = socket.local_addr().expect("addr");
    let listener = socket.listen(1).expect("listen");
    let held: Vec<_> = (0..16)
        .map_while(|_| std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(300)).ok())
        .collect();
    assert!(held.len() < 16, "the accept queue never filled");
    (addr, listener, held)
}

#[tokio::test]
async fn a_route_can_shorten_the_connect_timeout_of_its_group() {
    let (stalled, _listener, _held) = stalled_listener();
    let gw = harness::start(
        &Toml::new()
            .listener()
            .upstream("slow", &[stalled])
            .raw(r#"connect_timeout = "30s""#)
            .route("slow")
            .raw("retries = 0")
            .raw(r#"timeouts = { connect = "200ms" }"#),
    )
    .await
    .expect("gateway");
    let started = Instant::now();
    let reply = get(gw.addrs()[0], "/").await;
    assert_eq!((reply.status.as_u16(), reply.header("x-wasmgate-error")), (504, "upstream-connect-timeout"));
    assert!(started.elapsed() < Duration::from_secs(10), "the route's 200ms applies, not the group's 30s");
    gw.stop().await;
}

/// An HTTP/1.1 origin that closes every connection right after its one response, without
/// saying so (no `Connection: close`), as a backend restarting or timing out idle clients does.
async fn closing_origin() -> (SocketAddr, tokio::task::JoinHandle<()>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let task = tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok").await;
            });
        }
    });
    (addr, task)
}

#[tokio::test]
async fn a_pooled_connection_the_backend_closed_is_replaced_without_failing_a_request() {
    let (backend, origin) = closing_origin().await;
    let gw = harness::start(&harness::one_backend(backend, "")).await.expect("gateway");
    let addr = gw.addrs()[0];
    for i in 0..20 {
        let reply = get(addr, "/").await;
        assert_eq!(reply.status, StatusCode::OK, "request {i}: {:?}", reply.header("x-wasmgate-error"));
        assert_eq!(reply.body, Bytes::from_static(b"ok"));
        // Sometimes before the gateway has seen the close, sometimes after.
        if i % 2 == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let stats = gw.gateway().client("o").expect("client").stats();
    assert_eq!(stats.new_connections, 20, "every request needed a new connection: {stats:?}");
    gw.stop().await;
    origin.abort();
}

#[tokio::test]
async fn upstream_connections_idle_past_the_pool_timeout_are_closed() {
    let a = origin("a").await;
    let config =
        Toml::new().listener().upstream("o", &[a.addr()]).raw("pool_idle_timeout = \"1s\"").route("o");
    let gw = harness::start(&config).await.expect("gateway");
    let addr = gw.addrs()[0];
    assert_eq!(get(addr, "/").await.status, StatusCode::OK);
    assert_eq!(get(addr, "/").await.status, StatusCode::OK);
    let client = gw.gateway().client("o").expect("client");
    assert_eq!(client.stats().new_connections, 1, "the second request reused the connection");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(get(addr, "/").await.status, StatusCode::OK);
    let stats = client.stats();
    assert_eq!((stats.requests, stats.new_connections), (3, 2), "the idle connection was closed");
    gw.stop().await;
}

#[tokio::test]
async fn idle_upstream_connections_beyond_pool_max_idle_are_closed() {
    let a = origin("a").await;
    let config = Toml::new()
        .listener()
        .upstream("o", &[a.addr()])
        .raw("pool_idle_timeout = \"4s\"")
        .raw("pool_max_idle = 1")
        .route("o");
    let gw = harness::start(&config).await.expect("gateway");
    let addr = gw.addrs()[0];
    let burst = |n: usize| async move {
        let replies = (0..n).map(|_| tokio::spawn(async move { get(addr, "/delay/300").await.status }));
        for reply in replies.collect::<Vec<_>>() {
            assert_eq!(reply.await.expect("task"), StatusCode::OK);
        }
    };
    burst(5).await;
    let client = gw.gateway().client("o").expect("client");
    assert_eq!(client.stats().new_connections, 5, "five requests at once need five connections");
    // The reaper runs every 2 s here (half the idle timeout): four of the five idle
    // connections go, and the one kept is still within its idle timeout.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    burst(3).await;
    assert_eq!(client.stats().new_connections, 7, "one connection was kept, two were opened again");
    gw.stop().await;
}

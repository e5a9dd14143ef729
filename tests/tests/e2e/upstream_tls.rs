//! Upstream TLS and HTTP/2 end to end: a CA and certificates made in the test, real TLS
//! origins, verification on, ALPN, and h2c with prior knowledge.

use wasmgate_example_origin::Origin;
use wasmgate_tests::client;
use wasmgate_tests::harness::{self, Toml};
use wasmgate_tests::tls::{TestCa, TlsOrigin};

/// A config whose one route goes to the group `secure` of `backend`, spoken to with
/// `protocol` over TLS with the settings `tls` (an inline table).
fn tls_group(backend: std::net::SocketAddr, tls: &str, protocol: &str) -> Toml {
    Toml::new()
        .listener()
        .upstream("secure", &[backend])
        .raw(&format!(r#"protocol = "{protocol}""#))
        .raw(&format!("tls = {tls}"))
        .route("secure")
}

#[tokio::test]
async fn tls_upstream_verified_against_a_configured_ca_with_sni() {
    let dir = harness::TempDir::new("tls-up").expect("dir");
    let ca = TestCa::new().expect("ca");
    let ca_pem = ca.write_pem(dir.path()).expect("pem");
    let origin = TlsOrigin::start(&ca, &["api.test"], &[b"http/1.1"]).await.expect("origin");
    let tls = format!("{{ sni = \"api.test\", ca = \"{}\" }}", ca_pem.display());
    let gw = harness::start(&tls_group(origin.addr, &tls, "http1")).await.expect("gateway");
    let reply = client::get(gw.addrs()[0], "/", &[]).await.expect("request");
    assert_eq!((reply.status.as_u16(), reply.header("x-version")), (200, "HTTP/1.1"), "{}", reply.text());
    gw.stop().await;

    // The certificate does not name what the gateway asks for: refused, 502.
    let tls = format!("{{ sni = \"wrong.test\", ca = \"{}\" }}", ca_pem.display());
    let gw = harness::start(&tls_group(origin.addr, &tls, "http1")).await.expect("gateway");
    let reply = client::get(gw.addrs()[0], "/", &[]).await.expect("request");
    assert_eq!((reply.status.as_u16(), reply.header("x-wasmgate-error")), (502, "upstream-connect"));
    gw.stop().await;

    // Without the CA, the test certificate is not trusted either.
    let gw =
        harness::start(&tls_group(origin.addr, "{ sni = \"api.test\" }", "http1")).await.expect("gateway");
    assert_eq!(client::get(gw.addrs()[0], "/", &[]).await.expect("request").status, 502);
    gw.stop().await;
}

#[tokio::test]
async fn alpn_picks_http2_over_tls_and_h2c_works_with_prior_knowledge() {
    let dir = harness::TempDir::new("h2-up").expect("dir");
    let ca = TestCa::new().expect("ca");
    let ca_pem = ca.write_pem(dir.path()).expect("pem");
    let origin = TlsOrigin::start(&ca, &["api.test"], &[b"h2", b"http/1.1"]).await.expect("origin");
    let tls = format!("{{ sni = \"api.test\", ca = \"{}\" }}", ca_pem.display());
    let gw = harness::start(&tls_group(origin.addr, &tls, "auto")).await.expect("gateway");
    for _ in 0..3 {
        let reply = client::get(gw.addrs()[0], "/", &[]).await.expect("request");
        assert_eq!((reply.status.as_u16(), reply.header("x-version")), (200, "HTTP/2.0"), "{}", reply.text());
    }
    let stats = gw.gateway().client("secure").expect("client").stats();
    assert_eq!(stats.new_connections, 1, "HTTP/2 multiplexes requests on one connection");
    gw.stop().await;

    // h2c: the example origin speaks HTTP/2 with prior knowledge too.
    let plain = Origin::start("h2c", "127.0.0.1:0".parse().expect("addr"), None).await.expect("origin");
    let gw = harness::start(
        &Toml::new().listener().upstream("h2c", &[plain.addr()]).raw(r#"protocol = "http2""#).route("h2c"),
    )
    .await
    .expect("gateway");
    let reply = client::get(gw.addrs()[0], "/", &[]).await.expect("request");
    assert_eq!(
        (reply.status.as_u16(), reply.header("x-http-version")),
        (200, "HTTP/2.0"),
        "{}",
        reply.text()
    );
    gw.stop().await;
}

/// Sends one gRPC call over h2c and returns the response body and its `grpc-status` trailer.
async fn grpc_call(addr: std::net::SocketAddr, method: &str, message: &[u8]) -> (bytes::Bytes, String) {
    let request = http::Request::post(format!("http://{addr}/test.Echo/{method}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(http_body_util::Full::new(wasmgate_example_origin::frame(message)))
        .expect("request");
    let reply = client::h2c(addr, request).await.expect("response");
    assert_eq!(reply.header("content-type"), "application/grpc");
    let status = reply
        .trailers
        .as_ref()
        .and_then(|t| t.get("grpc-status"))
        .and_then(|v| v.to_str().ok())
        .unwrap_or("missing")
        .to_owned();
    (reply.body, status)
}

#[tokio::test]
async fn grpc_unary_and_server_streaming_calls_pass_with_their_trailers() {
    let origin = Origin::start("grpc", "127.0.0.1:0".parse().expect("addr"), None).await.expect("origin");
    let gw = harness::start(
        &Toml::new().listener().upstream("grpc", &[origin.addr()]).raw(r#"protocol = "http2""#).route("grpc"),
    )
    .await
    .expect("gateway");
    let addr = gw.addrs()[0];

    let (body, status) = grpc_call(addr, "Unary", b"ping").await;
    assert_eq!((body, status.as_str()), (wasmgate_example_origin::frame(b"ping"), "0"));
    assert_eq!(
        origin.seen().last().expect("seen").headers["te"],
        "trailers",
        "te: trailers reaches the backend"
    );

    let (body, status) = grpc_call(addr, "Stream", b"start").await;
    let expected: Vec<u8> =
        [b"m1", b"m2", b"m3"].iter().flat_map(|m| wasmgate_example_origin::frame(*m)).collect();
    assert_eq!((&body[..], status.as_str()), (&expected[..], "0"));
    gw.stop().await;
}

#[tokio::test]
async fn a_plugin_can_choose_the_server_name_of_the_upstream_connection() {
    let dir = harness::TempDir::new("tls-sni").expect("dir");
    let ca = TestCa::new().expect("ca");
    let ca_pem = ca.write_pem(dir.path()).expect("pem");
    let origin = TlsOrigin::start(&ca, &["api.test"], &[b"http/1.1"]).await.expect("origin");
    let gw = harness::start(
        &Toml::new()
            .listener()
            .plugin("sni", wasmgate_tests::wasm::MISBEHAVE, r#"{ mode = "sni" }"#)
            .upstream("secure", &[origin.addr])
            .raw(&format!(r#"tls = {{ sni = "wrong.test", ca = "{}" }}"#, ca_pem.display()))
            .route("secure")
            .raw(r#"path_prefix = "/chosen""#)
            .raw(r#"plugins = ["sni"]"#)
            .route("secure"),
    )
    .await
    .expect("gateway");
    let addr = gw.addrs()[0];
    // The group's own name does not match the certificate...
    assert_eq!(client::get(addr, "/", &[]).await.expect("request").status, 502);
    // ...the plugin's choice does, on a pool of its own.
    for _ in 0..2 {
        let reply = client::get(addr, "/chosen", &[]).await.expect("request");
        assert_eq!(reply.status, 200, "{}", reply.text());
    }
    gw.stop().await;
}

#[tokio::test]
async fn a_backend_that_asks_for_a_client_certificate_gets_the_configured_one() {
    let dir = harness::TempDir::new("mtls-up").expect("dir");
    let ca = TestCa::new().expect("ca");
    let ca_pem = ca.write_pem(dir.path()).expect("pem");
    let (cert, key) = ca.write_leaf(dir.path(), &["gateway.test"]).expect("client cert");
    let origin = TlsOrigin::start_mutual(&ca, &["api.test"]).await.expect("origin");
    let with = format!(
        "{{ sni = \"api.test\", ca = \"{}\", client_cert = \"{}\", client_key = \"{}\" }}",
        ca_pem.display(),
        cert.display(),
        key.display()
    );
    let gw = harness::start(&tls_group(origin.addr, &with, "http1")).await.expect("gateway");
    let reply = client::get(gw.addrs()[0], "/", &[]).await.expect("request");
    assert_eq!(reply.status, 200, "{}", reply.text());
    gw.stop().await;

    let without = format!("{{ sni = \"api.test\", ca = \"{}\" }}", ca_pem.display());
    let gw = harness::start(&tls_group(origin.addr, &without, "http1")).await.expect("gateway");
    assert_eq!(client::get(gw.addrs()[0], "/", &[]).await.expect("request").status, 502);
    gw.stop().await;
}

#[tokio::test]
async fn a_route_can_shorten_the_tls_handshake_timeout_of_its_group() {
    let (backend, mute) = harness::mute_server().await.expect("mute server");
    let gw = harness::start(
        &Toml::new()
            .listener()
            .upstream("secure", &[backend])
            .raw(r#"tls = { sni = "api.test" }"#)
            .raw(r#"tls_handshake_timeout = "30s""#)
            .route("secure")
            .raw("retries = 0")
            .raw(r#"timeouts = { tls_handshake = "200ms" }"#),
    )
    .await
    .expect("gateway");
    let started = std::time::Instant::now();
    let reply = client::get(gw.addrs()[0], "/", &[]).await.expect("request");
    assert_eq!((reply.status.as_u16(), reply.header("x-wasmgate-error")), (504, "upstream-tls-timeout"));
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "the route's 200ms applies, not the group's 30s"
    );
    gw.stop().await;
    mute.abort();
}

/// An HTTP/2 (h2c) server that refuses every stream with `REFUSED_STREAM`; counts them.
async fn refusing_h2_server() -> (std::net::SocketAddr, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let refused = std::sync::Arc::new(AtomicUsize::new(0));
    let count = refused.clone();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let count = count.clone();
            tokio::spawn(async move {
                let Ok(mut connection) = h2::server::handshake(socket).await else { return };
                while let Some(Ok((_request, mut respond))) = connection.accept().await {
                    count.fetch_add(1, Ordering::Relaxed);
                    respond.send_reset(h2::Reason::REFUSED_STREAM);
                }
            });
        }
    });
    (addr, refused)
}

#[tokio::test]
async fn a_refused_stream_is_retried_on_another_backend_even_for_a_post() {
    use std::sync::atomic::Ordering;
    let (refusing, refused) = refusing_h2_server().await;
    let good = Origin::start("good", "127.0.0.1:0".parse().expect("addr"), None).await.expect("origin");
    let gw = harness::start(
        &Toml::new()
            .listener()
            .upstream("h2c", &[refusing, good.addr()])
            .raw(r#"protocol = "http2""#)
            .route("h2c")
            .raw(r#"path_prefix = "/strict""#)
            .raw(r#"retry_on = ["connect-failure"]"#)
            .route("h2c"),
    )
    .await
    .expect("gateway");
    let addr = gw.addrs()[0];
    let post = |path: &str| {
        http::Request::post(format!("http://{addr}{path}"))
            .body(http_body_util::Full::new(bytes::Bytes::from_static(b"payload")))
            .expect("req")
    };
    // Round robin sends every other first attempt to the refusing backend; nothing was
    // processed there, so the POST goes to the other backend, body intact.
    for _ in 0..4 {
        let reply = client::send(&client::http1(), post("/echo")).await.expect("post");
        assert_eq!((reply.status.as_u16(), reply.text().as_str()), (200, "payload"));
    }
    assert!(refused.load(Ordering::Relaxed) >= 2, "the refusing backend was tried");
    // Without `refused-stream` in retry_on, the refusal reaches the client as 503.
    let mut kinds = Vec::new();
    for _ in 0..2 {
        let reply = client::send(&client::http1(), post("/strict/echo")).await.expect("post");
        kinds.push((reply.status.as_u16(), reply.header("x-wasmgate-error").to_owned()));
    }
    assert!(kinds.contains(&(503, "upstream-refused-stream".to_owned())), "{kinds:?}");
    assert!(kinds.contains(&(200, String::new())), "{kinds:?}");
    gw.stop().await;
}

#[tokio::test]
async fn a_refused_http1_response_over_auto_closes_its_connection() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    let dir = harness::TempDir::new("auto-h1").expect("dir");
    let ca = TestCa::new().expect("ca");
    let ca_pem = ca.write_pem(dir.path()).expect("pem");
    // A raw TLS origin that offers only HTTP/1.1 and frames `/cl-te` two ways.
    let (chain, key) = ca.leaf(&["api.test"]).expect("leaf");
    let mut config =
        rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .expect("config");
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let connections = Arc::new(AtomicUsize::new(0));
    let counted = connections.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            counted.fetch_add(1, Ordering::SeqCst);
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else { return };
                harness::answer_heads(tls, |head| {
                    let answer: &[u8] = if head.starts_with("GET /cl-te") {
                        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n"
                    } else {
                        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
                    };
                    (answer.to_vec(), false)
                })
                .await;
            });
        }
    });
    let tls = format!("{{ sni = \"api.test\", ca = \"{}\" }}", ca_pem.display());
    let gw = harness::start(&tls_group(addr, &tls, "auto").raw("retries = 0")).await.expect("gateway");
    let gw_addr = gw.addrs()[0];
    assert_eq!(client::get(gw_addr, "/ok", &[]).await.expect("request").text(), "ok");
    assert_eq!(connections.load(Ordering::SeqCst), 1);
    let refused = client::get(gw_addr, "/cl-te", &[]).await.expect("request");
    assert_eq!(
        (refused.status.as_u16(), refused.header("x-wasmgate-error")),
        (502, "upstream-invalid-response")
    );
    // The next request goes on a new connection: the refused one was never pooled again.
    assert_eq!(client::get(gw_addr, "/ok", &[]).await.expect("request").text(), "ok");
    assert_eq!(connections.load(Ordering::SeqCst), 2, "the refused response's connection was reused");
    gw.stop().await;
}

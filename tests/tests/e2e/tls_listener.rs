//! TLS termination end to end: certificates chosen by SNI, ALPN h2, a certificate replaced on
//! disk served on the next handshake, client certificates required and their identity seen by
//! plugins, and the redirect from plain HTTP.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use wasmgate::server::Running;
use wasmgate_example_origin::Origin;
use wasmgate_tests::harness::{self, Toml};
use wasmgate_tests::tls::TestCa;
use wasmgate_tests::wasm;

async fn origin() -> Origin {
    Origin::start("o", "127.0.0.1:0".parse().expect("addr"), None).await.expect("origin")
}

/// A TLS handshake with `addr` for `name`; the leaf certificate served and the ALPN chosen.
async fn handshake(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
    name: &str,
) -> anyhow::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let name = ServerName::try_from(name.to_owned())?;
    Ok(tokio_rustls::TlsConnector::from(config).connect(name, tcp).await?)
}

fn leaf_served(stream: &tokio_rustls::client::TlsStream<tokio::net::TcpStream>) -> Vec<u8> {
    stream.get_ref().1.peer_certificates().and_then(|c| c.first()).map(|c| c.to_vec()).unwrap_or_default()
}

fn der_of(pem: &Path) -> Vec<u8> {
    CertificateDer::pem_file_iter(pem).expect("read").next().expect("one cert").expect("parse").to_vec()
}

/// One GET over an established TLS stream, as HTTP/2 if ALPN chose it, else HTTP/1.1.
async fn get(
    stream: tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
    path: &str,
) -> anyhow::Result<(http::StatusCode, http::Version, Bytes)> {
    let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
    let io = hyper_util::rt::TokioIo::new(stream);
    let request = Request::get(format!("https://a.test{path}")).body(Full::<Bytes>::default())?;
    let response = if h2 {
        let (mut sender, conn) =
            hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io).await?;
        tokio::spawn(conn);
        sender.send_request(request).await?
    } else {
        let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await?;
        tokio::spawn(conn);
        let mut request = request;
        request.headers_mut().insert(http::header::HOST, http::HeaderValue::from_static("a.test"));
        sender.send_request(request).await?
    };
    let (status, version) = (response.status(), response.version());
    Ok((status, version, response.into_body().collect().await?.to_bytes()))
}

/// A config with a TLS listener serving the certificates of `a.test` and of `b.test` and
/// `*.b.test` from `dir`; `extra` goes in its `[listeners.tls]` table.
fn tls_listener(dir: &Path, extra: &str) -> Toml {
    let certificates = format!(
        r#"certificates = [
  {{ cert = "{d}/a.pem", key = "{d}/a.key", names = ["a.test"] }},
  {{ cert = "{d}/b.pem", key = "{d}/b.key", names = ["b.test", "*.b.test"] }},
]"#,
        d = dir.display()
    );
    Toml::new()
        .listener()
        .raw("[listeners.tls]")
        .raw(r#"reload_interval = "100ms""#)
        .raw(extra)
        .raw(&certificates)
}

async fn start(dir: &Path, backend: SocketAddr) -> Running {
    harness::start(&tls_listener(dir, "").upstream("o", &[backend]).route("o")).await.expect("gateway")
}

#[tokio::test]
async fn certificates_are_chosen_by_sni_and_alpn_picks_h2() {
    let dir = harness::TempDir::new("tls-sni").expect("dir");
    let ca = TestCa::new().expect("ca");
    let (a, _) = ca.write_named(dir.path(), "a", &["a.test"]).expect("a");
    let (b, _) = ca.write_named(dir.path(), "b", &["b.test", "*.b.test"]).expect("b");
    let o = origin().await;
    let gw = start(dir.path(), o.addr()).await;
    let addr = gw.addrs()[0];
    let config = ca.client_config(&[b"h2", b"http/1.1"], None).expect("client");
    for (name, expected) in [("a.test", &a), ("b.test", &b), ("api.b.test", &b)] {
        let stream = handshake(addr, config.clone(), name).await.expect("handshake");
        assert_eq!(leaf_served(&stream), der_of(expected), "{name}");
    }
    let stream = handshake(addr, config.clone(), "a.test").await.expect("handshake");
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (status, version, _) = get(stream, "/").await.expect("request");
    assert_eq!((status, version), (http::StatusCode::OK, http::Version::HTTP_2));

    let h1 = ca.client_config(&[b"http/1.1"], None).expect("client");
    let (status, version, body) =
        get(handshake(addr, h1, "a.test").await.expect("handshake"), "/").await.expect("request");
    assert_eq!(
        (status, version, &body[..]),
        (http::StatusCode::OK, http::Version::HTTP_11, &b"origin o\n"[..])
    );
    gw.stop().await;
}

#[tokio::test]
async fn hellos_below_tls_1_2_are_refused_and_silent_handshakes_dropped() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = harness::TempDir::new("tls-old").expect("dir");
    let ca = TestCa::new().expect("ca");
    ca.write_named(dir.path(), "a", &["a.test"]).expect("a");
    ca.write_named(dir.path(), "b", &["b.test"]).expect("b");
    let o = origin().await;
    let gw = start(dir.path(), o.addr()).await;
    for (version, name) in [([3u8, 1u8], "TLS 1.0"), ([3, 2], "TLS 1.1")] {
        // A ClientHello offering only `version` (no supported_versions extension) and two
        // suites of its time: TLS_RSA_WITH_AES_128_CBC_SHA and _256_.
        let mut hello = vec![version[0], version[1]];
        hello.extend([7u8; 32]);
        hello.extend([0, 0, 4, 0x00, 0x2f, 0x00, 0x35, 1, 0]);
        let mut handshake = vec![1, 0, 0, hello.len() as u8];
        handshake.extend(hello);
        let mut record = vec![0x16, 3, 1, 0, handshake.len() as u8];
        record.extend(handshake);
        let mut stream = tokio::net::TcpStream::connect(gw.addrs()[0]).await.expect("connect");
        stream.write_all(&record).await.expect("write");
        let mut answer = Vec::new();
        let _ =
            tokio::time::timeout(std::time::Duration::from_secs(5), stream.read_to_end(&mut answer)).await;
        // An alert record (21), never a handshake record (22) carrying a ServerHello.
        assert_eq!(answer.first(), Some(&0x15), "{name}: {answer:?}");
    }
    // A client that never finishes its handshake is dropped at the handshake timeout.
    let quick = harness::start(
        &tls_listener(dir.path(), "handshake_timeout = \"300ms\"").upstream("o", &[o.addr()]).route("o"),
    )
    .await
    .expect("gateway");
    let mut silent = tokio::net::TcpStream::connect(quick.addrs()[0]).await.expect("connect");
    let started = std::time::Instant::now();
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(std::time::Duration::from_secs(5), silent.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "a silent TLS client was kept");
    assert!(
        started.elapsed() >= std::time::Duration::from_millis(250),
        "dropped after {:?}",
        started.elapsed()
    );
    quick.stop().await;
    gw.stop().await;
}

#[tokio::test]
async fn a_certificate_replaced_on_disk_is_served_on_the_next_handshake() {
    let dir = harness::TempDir::new("tls-reload").expect("dir");
    let ca = TestCa::new().expect("ca");
    let (a, _) = ca.write_named(dir.path(), "a", &["a.test"]).expect("a");
    ca.write_named(dir.path(), "b", &["b.test"]).expect("b");
    let o = origin().await;
    let gw = start(dir.path(), o.addr()).await;
    let config = ca.client_config(&[b"http/1.1"], None).expect("client");
    let before = handshake(gw.addrs()[0], config.clone(), "a.test").await.expect("handshake");
    assert_eq!(leaf_served(&before), der_of(&a));

    // A new certificate for the same name; the open connection stays up meanwhile.
    std::thread::sleep(Duration::from_millis(20));
    let (a, _) = ca.write_named(dir.path(), "a", &["a.test"]).expect("a again");
    let renewed = der_of(&a);
    let mut served = Vec::new();
    for _ in 0..100 {
        served = leaf_served(&handshake(gw.addrs()[0], config.clone(), "a.test").await.expect("handshake"));
        if served == renewed {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(served, renewed, "the new certificate is served");
    let (status, _, _) = get(before, "/").await.expect("the old connection still works");
    assert_eq!(status, 200);
    gw.stop().await;
}

#[tokio::test]
async fn client_certificates_are_required_and_their_identity_reaches_plugins() {
    let dir = harness::TempDir::new("tls-mutual").expect("dir");
    let ca = TestCa::new().expect("ca");
    let ca_pem = ca.write_pem(dir.path()).expect("ca pem");
    ca.write_named(dir.path(), "a", &["a.test"]).expect("a");
    ca.write_named(dir.path(), "b", &["b.test"]).expect("b");
    let o = origin().await;
    let gw = harness::start(
        &tls_listener(dir.path(), &format!("client_ca = \"{}\"", ca_pem.display()))
            .plugin("tracer", wasm::TRACER, "")
            .upstream("o", &[o.addr()])
            .route("o")
            .raw(r#"plugins = ["tracer"]"#),
    )
    .await
    .expect("gateway");
    let addr = gw.addrs()[0];

    let with_cert = ca.client_config(&[b"http/1.1"], Some(&["billing.internal"])).expect("client");
    let stream = handshake(addr, with_cert, "a.test").await.expect("handshake");
    let io = hyper_util::rt::TokioIo::new(stream);
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await.expect("http");
    tokio::spawn(conn);
    let request = Request::get("/")
        .header("host", "a.test")
        .header("x-trace-id", "mutual")
        .body(Full::<Bytes>::default())
        .expect("request");
    assert_eq!(sender.send_request(request).await.expect("response").status(), 200);
    let record = harness::tracer_record(&gw, "mutual").await;
    assert!(record.contains("|client=billing.internal"), "{record}");

    // Without a client certificate the gateway refuses (TLS 1.3 reports it on first read).
    let without = ca.client_config(&[b"http/1.1"], None).expect("client");
    let refused = match handshake(addr, without, "a.test").await {
        Err(_) => true,
        Ok(stream) => get(stream, "/").await.is_err(),
    };
    assert!(refused, "a client without a certificate must not be served");
    gw.stop().await;
}

#[tokio::test]
async fn plain_http_is_redirected_to_https_where_the_route_asks() {
    let o = origin().await;
    let gw =
        harness::start(&harness::one_backend(o.addr(), "redirect_https = 8443\n")).await.expect("gateway");
    let reply = wasmgate_tests::client::get(gw.addrs()[0], "/a/b?c=1", &[("host", "shop.test")])
        .await
        .expect("request");
    assert_eq!(reply.status, 308);
    assert_eq!(reply.header("location"), "https://shop.test:8443/a/b?c=1");
    gw.stop().await;
}

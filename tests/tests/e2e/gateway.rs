//! The gateway end to end: real origins on 127.0.0.1, real compiled plugins, real HTTP/1.1 and
//! HTTP/2 clients, the gateway in-process or as the real binary.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use wasmgate_example_origin::Origin;
use wasmgate_tests::client::{self, Reply};
use wasmgate_tests::harness::{self, Toml};
use wasmgate_tests::wasm;

async fn origin(name: &str) -> Origin {
    Origin::start(name, "127.0.0.1:0".parse().expect("addr"), None).await.expect("origin")
}

async fn get(addr: SocketAddr, path: &str) -> Reply {
    client::get(addr, path, &[]).await.expect("request")
}

/// The quickstart's config (`examples/load-balancer/gateway.toml`) as it is, but for its
/// addresses and plugin paths: once its health checks have run, both origins (which answer
/// only Host `one.one.one.one`) are still in and take turns.
#[tokio::test]
async fn the_quickstart_config_keeps_both_origins_in_past_its_health_checks() {
    let host = Some("one.one.one.one".to_owned());
    let any: SocketAddr = "127.0.0.1:0".parse().expect("addr");
    let one = Origin::start("one", any, host.clone()).await.expect("origin");
    let two = Origin::start("two", any, host).await.expect("origin");
    let example =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/load-balancer/gateway.toml");
    let mut text = std::fs::read_to_string(example).expect("the example config");
    let plugins = "../../plugins/target/wasm32-wasip2/release";
    for (from, to) in [
        ("127.0.0.1:6188".to_owned(), "127.0.0.1:0"),
        ("127.0.0.1:9901".to_owned(), "127.0.0.1:0"),
        ("127.0.0.1:9001".to_owned(), &one.addr().to_string()),
        ("127.0.0.1:9002".to_owned(), &two.addr().to_string()),
        (format!("{plugins}/request_id.wasm"), wasm::REQUEST_ID),
        (format!("{plugins}/round_robin.wasm"), wasm::ROUND_ROBIN),
        (format!("{plugins}/set_host.wasm"), wasm::SET_HOST),
    ] {
        assert!(text.contains(&from), "the example config no longer has {from}");
        text = text.replace(&from, to);
    }
    let gw = harness::start(&text).await.expect("gateway");
    let checks = |o: &Origin| o.seen().iter().filter(|s| s.target == "/health").count();
    harness::wait_until("two health checks of each origin", || checks(&one) >= 2 && checks(&two) >= 2).await;
    let answers: Vec<String> = [get(gw.addrs()[0], "/").await, get(gw.addrs()[0], "/").await]
        .iter()
        .map(|r| r.header("x-origin").to_owned())
        .collect();
    assert!(answers.contains(&"one".to_owned()) && answers.contains(&"two".to_owned()), "{answers:?}");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_alternates_and_health_checks_follow_a_stopped_origin() {
    let a = origin("a").await;
    let b = origin("b").await;
    let b_addr = b.addr();
    let gw = harness::start(
        &Toml::new()
            .listener()
            .plugin("rr", wasm::ROUND_ROBIN, "{}")
            .upstream("pair", &[a.addr(), b.addr()])
            .raw(
                r#"[upstreams.pair.health_check]
path = "/health"
interval = "100ms"
timeout = "500ms"
healthy_threshold = 2
unhealthy_threshold = 2"#,
            )
            .route("pair")
            .raw(r#"plugins = ["rr"]"#),
    )
    .await
    .expect("gateway");
    let addr = gw.addrs()[0];

    let mut seen = Vec::new();
    for _ in 0..6 {
        let reply = get(addr, "/").await;
        assert_eq!(reply.status, 200);
        seen.push(reply.header("x-origin").to_owned());
    }
    assert!(seen.windows(2).all(|w| w[0] != w[1]), "round robin should alternate: {seen:?}");

    b.stop();
    // Two failed checks at 100 ms: out within well under a few seconds; wait for it, then every
    // request must succeed on `a`.
    let b_healthy = || gw.gateway().upstreams().get("pair").expect("group").backends()[1].is_healthy();
    harness::wait_until("backend b marked unhealthy", || !b_healthy()).await;
    for _ in 0..6 {
        let reply = get(addr, "/").await;
        assert_eq!((reply.status.as_u16(), reply.header("x-origin")), (200, "a"));
    }

    let b = Origin::start("b", b_addr, None).await.expect("restart b");
    harness::wait_until("backend b healthy again", b_healthy).await;
    let origins: Vec<String> = futures_all(addr, 4).await;
    assert!(origins.iter().any(|o| o == "b"), "b should serve again: {origins:?}");
    drop((a, b));
    gw.stop().await;
}

async fn futures_all(addr: SocketAddr, n: usize) -> Vec<String> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(get(addr, "/").await.header("x-origin").to_owned());
    }
    out
}

#[tokio::test]
async fn set_host_add_header_and_deny_each_show_their_effect() {
    let strict =
        Origin::start("strict", "127.0.0.1:0".parse().expect("addr"), Some("one.one.one.one".into()))
            .await
            .expect("origin");
    let gw = harness::start(
        &Toml::new()
            .listener()
            .plugin("set-host", wasm::SET_HOST, r#"{ host = "one.one.one.one" }"#)
            .plugin(
                "add",
                wasm::ADD_HEADER,
                r#"{ request = { x-added = "to-origin" }, response = { x-seen = "by-client" } }"#,
            )
            .plugin(
                "deny",
                wasm::DENY,
                r#"{ prefixes = ["/with/admin"], status = 403, body = "denied here" }"#,
            )
            .upstream("strict", &[strict.addr()])
            .route("strict")
            .raw(
                r#"name = "with-set-host"
path_prefix = "/with"
plugins = ["deny", "add", "set-host"]"#,
            )
            .route("strict")
            .raw(r#"name = "without""#),
    )
    .await
    .expect("gateway");
    let addr = gw.addrs()[0];

    // Without set-host the origin refuses the client's Host.
    assert_eq!(get(addr, "/plain").await.status, 403);
    // With it, the origin sees the Host it wants.
    let reply = get(addr, "/with/page").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let seen = strict.seen();
    let last = seen.last().expect("a request");
    assert_eq!(last.headers["host"], "one.one.one.one");
    assert_eq!(last.headers["x-added"], "to-origin");
    assert_eq!(reply.header("x-seen"), "by-client");

    // A client cannot make a hop-by-hop header of one a plugin adds.
    let reply = client::get(addr, "/with/page", &[("connection", "x-added")]).await.expect("request");
    assert_eq!(reply.status, 200);
    assert_eq!(strict.seen().last().expect("a request").headers["x-added"], "to-origin");

    // deny answers without going upstream, also when the path is dressed up.
    let before = strict.requests();
    for path in ["/with/admin/users", "/with/public/../admin/users", "/with/%61dmin/users", "/with/./admin"] {
        let reply = get(addr, path).await;
        assert_eq!((reply.status.as_u16(), reply.text().as_str()), (403, "denied here"), "{path}");
    }
    assert_eq!(strict.requests(), before, "the origin must not see a denied request");
    gw.stop().await;
}

#[tokio::test]
async fn h2c_client_to_http1_origin_with_forwarding_headers_and_hop_by_hop_stripped() {
    let o = origin("a").await;
    let gw = harness::start(&harness::one_backend(o.addr(), "")).await.expect("gateway");
    let addr = gw.addrs()[0];

    let request = Request::get(format!("http://{addr}/h2"))
        .version(http::Version::HTTP_2)
        .body(Full::default())
        .expect("request");
    let reply = client::h2c(addr, request).await.expect("h2c");
    assert_eq!((reply.status.as_u16(), reply.text().as_str()), (200, "origin a\n"));
    let seen = o.seen();
    assert_eq!(
        seen.last().expect("seen").headers["host"],
        addr.to_string().as_str(),
        ":authority becomes Host"
    );

    let reply = client::get(
        addr,
        "/hop",
        &[
            ("connection", "x-secret"),
            ("x-secret", "must not pass"),
            ("proxy-authorization", "Basic c2VjcmV0"),
            ("x-forwarded-for", "6.6.6.6"),
            ("x-kept", "yes"),
        ],
    )
    .await
    .expect("request");
    assert_eq!(reply.status, 200);
    assert!(reply.header("via").contains("wasmgate"), "Via on the response");
    let seen = o.seen();
    let head = &seen.last().expect("seen").headers;
    assert!(head.get("x-secret").is_none(), "a header named by Connection is hop-by-hop");
    assert!(head.get("proxy-authorization").is_none());
    assert_eq!(head["x-forwarded-for"], "127.0.0.1", "the client's own claim is replaced");
    assert_eq!(head["x-forwarded-proto"], "http");
    assert_eq!(head["x-kept"], "yes");
    assert!(head["via"].to_str().expect("via").contains("wasmgate"));
    gw.stop().await;
}

#[tokio::test]
async fn upstream_failures_become_502_and_504() {
    let o = origin("slow").await;
    let gw = harness::start(
        &Toml::new()
            .listener()
            .upstream("dead", &[harness::closed_port()])
            .upstream("slow", &[o.addr()])
            .raw(r#"response_timeout = "300ms""#)
            .route("dead")
            .raw(r#"path_prefix = "/dead""#)
            .route("slow"),
    )
    .await
    .expect("gateway");
    let addr = gw.addrs()[0];
    let reply = get(addr, "/dead").await;
    assert_eq!((reply.status.as_u16(), reply.header("x-wasmgate-error")), (502, "upstream-connect"));
    let started = Instant::now();
    let reply = get(addr, "/slow").await;
    assert_eq!((reply.status.as_u16(), reply.header("x-wasmgate-error")), (504, "upstream-timeout"));
    assert!(started.elapsed() < Duration::from_secs(5));
    gw.stop().await;
}

#[tokio::test]
async fn a_trapping_plugin_fails_its_request_per_policy_and_the_next_succeeds() {
    let o = origin("a").await;
    let gw = harness::start(
        &Toml::new()
            .listener()
            .plugin("trap", wasm::MISBEHAVE, r#"{ mode = "trap" }"#)
            .plugin("trap-open", wasm::MISBEHAVE, r#"{ mode = "trap" }"#)
            .raw(r#"failure = "fail-open""#)
            .upstream("o", &[o.addr()])
            .route("o")
            .raw(r#"path_prefix = "/open""#)
            .raw(r#"plugins = ["trap-open"]"#)
            .route("o")
            .raw(r#"plugins = ["trap"]"#),
    )
    .await
    .expect("gateway");
    let addr = gw.addrs()[0];
    let reply = get(addr, "/bad").await;
    assert_eq!((reply.status.as_u16(), reply.header("x-wasmgate-error")), (500, "plugin-trap"));
    assert_eq!(get(addr, "/ok").await.status, 200);
    // Fail-open: the trapping plugin is skipped and the origin answers.
    let reply = get(addr, "/open/bad").await;
    assert_eq!((reply.status.as_u16(), reply.header("x-origin")), (200, "a"));
    gw.stop().await;
}

#[tokio::test]
async fn silent_and_slow_clients_are_cut_off_and_bad_requests_get_400() {
    let o = origin("a").await;
    let gw =
        harness::start(&harness::one_backend(o.addr(), "").raw("[server]\nheader_read_timeout = \"300ms\""))
            .await
            .expect("gateway");
    let addr = gw.addrs()[0];

    for first_bytes in [&b""[..], b"GET / HTTP/1.1\r\nHost: x\r\n"] {
        let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        stream.write_all(first_bytes).await.expect("write");
        let started = Instant::now();
        let mut buf = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut buf)).await;
        assert!(read.is_ok(), "connection left open after sending {first_bytes:?}");
        assert!(started.elapsed() >= Duration::from_millis(250), "closed too early");
    }

    // HTTP/1.1 without Host, and with two, are refused.
    for request in ["GET / HTTP/1.1\r\n\r\n", "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"] {
        let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        stream.write_all(request.as_bytes()).await.expect("write");
        let mut buf = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut buf)).await;
        let text = String::from_utf8_lossy(&buf);
        assert!(text.starts_with("HTTP/1.1 400"), "{request:?} got {text:?}");
    }
    assert_eq!(o.requests(), 0);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_mib_streams_both_ways_while_the_gateway_memory_stays_flat() {
    let o = origin("a").await;
    let dir = harness::TempDir::new("stream").expect("dir");
    let gw =
        harness::GatewayProcess::start(dir.path(), &harness::one_backend(o.addr(), "")).expect("gateway");
    // Warm up connections and allocator first, so the peak below reflects the transfer only.
    assert_eq!(get(gw.addr, "/bytes/100000").await.body.len(), 100_000);
    let (peak_before, _) = gw.memory_kib().expect("memory");

    const SIZE: usize = 10 << 20;
    let download = get(gw.addr, &format!("/bytes/{SIZE}")).await;
    assert_eq!(download.body.len(), SIZE);

    let upload = Request::post(format!("http://{}/echo", gw.addr))
        .body(Full::new(Bytes::from(vec![b'u'; SIZE])))
        .expect("request");
    let echoed = client::send(&client::http1(), upload).await.expect("upload");
    assert_eq!((echoed.status.as_u16(), echoed.body.len()), (200, SIZE));

    let (peak_after, _) = gw.memory_kib().expect("memory");
    let growth_kib = peak_after.saturating_sub(peak_before);
    eprintln!("gateway peak RSS: {peak_before} KiB before, {peak_after} KiB after moving 2 × 10 MiB");
    // Buffering either body whole would add at least 10 MiB.
    assert!(growth_kib < 6 * 1024, "gateway peak memory grew by {growth_kib} KiB moving 2 × 10 MiB");
}

#[tokio::test]
async fn sigterm_drains_in_flight_requests_then_exits() {
    let o = origin("a").await;
    let dir = harness::TempDir::new("drain").expect("dir");
    let mut gw =
        harness::GatewayProcess::start(dir.path(), &harness::one_backend(o.addr(), "")).expect("gateway");
    let addr = gw.addr;
    let in_flight = tokio::spawn(async move { client::get(addr, "/delay/700", &[]).await });
    harness::wait_until("the request reached the origin", || o.requests() == 1).await;
    let pid = gw.child.id().to_string();
    let killed = std::process::Command::new("kill").args(["-TERM", &pid]).status().expect("kill");
    assert!(killed.success());
    let reply = in_flight.await.expect("task").expect("the in-flight request must complete");
    assert_eq!(reply.status, 200);
    let status = tokio::task::spawn_blocking(move || gw.child.wait()).await.expect("join").expect("wait");
    assert!(status.success(), "wasmgate exited with {status}");
    assert!(tokio::net::TcpStream::connect(addr).await.is_err(), "still accepting after shutdown");
}

#[test]
fn check_names_the_file_field_and_plugin_of_each_mistake() {
    let dir = harness::TempDir::new("check").expect("dir");
    // The line numbers the errors name are those of this text.
    let base = |extra: &str| {
        format!(
            r#"[[listeners]]
address = "127.0.0.1:0"
[plugins.deny]
path = "{deny}"
config = {{}}

[upstreams.o]
backends = ["127.0.0.1:9"]

[[routes]]
plugins = ["deny"]
upstream = "o"
{extra}"#,
            deny = wasm::DENY
        )
    };
    let (ok, stdout, stderr) = harness::check(dir.path(), &base("")).expect("check");
    assert!(ok, "a good config passes: {stderr}");
    assert!(stdout.contains("plugin deny"), "{stdout}");

    let cases: [(String, &[&str]); 5] = [
        (base("colour = \"red\"\n"), &["check.toml:", "unknown field `colour`"]),
        (
            base("").replace("plugins = [\"deny\"]", "plugins = [\"deny\", \"nope\"]"),
            &["check.toml:11", "routes[0].plugins[1]", "`nope`"],
        ),
        (base("").replace(wasm::DENY, "/nonexistent/deny.wasm"), &["plugins.deny", "/nonexistent/deny.wasm"]),
        (
            base("").replace("config = {}", "config = { status = 42 }"),
            &["plugins.deny", "`deny` rejected its config"],
        ),
        (
            base("").replace("upstream = \"o\"", "upstream = \"elsewhere\""),
            &["check.toml:12", "routes[0].upstream", "`elsewhere`"],
        ),
    ];
    for (config, expected) in cases {
        let (ok, _, stderr) = harness::check(dir.path(), &config).expect("check");
        assert!(!ok, "should fail:\n{config}");
        for needle in expected {
            assert!(stderr.contains(needle), "expected {needle:?} in {stderr:?}");
        }
    }
}

#[tokio::test]
async fn consistent_hashing_keeps_a_key_on_one_backend() {
    let (a, b, c) = (origin("a").await, origin("b").await, origin("c").await);
    let gw = harness::start(
        &Toml::new()
            .listener()
            .upstream("trio", &[a.addr(), b.addr(), c.addr()])
            .raw(r#"balance = "consistent-hash""#)
            .raw(r#"hash_key = "header:x-user""#)
            .route("trio"),
    )
    .await
    .expect("gateway");
    let addr = gw.addrs()[0];
    let mut owners = std::collections::BTreeMap::new();
    for user in 0..30 {
        let name = format!("user-{user}");
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..3 {
            let reply = client::get(addr, "/", &[("x-user", &name)]).await.expect("request");
            seen.insert(reply.header("x-origin").to_owned());
        }
        assert_eq!(seen.len(), 1, "{name} went to {seen:?}");
        owners.insert(name, seen.into_iter().next().unwrap_or_default());
    }
    let used: std::collections::BTreeSet<_> = owners.values().collect();
    assert!(used.len() >= 2, "30 keys should spread over the backends: {used:?}");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_swaps_backends_whole_and_a_bad_one_changes_nothing() {
    let (a, b) = (origin("a").await, origin("b").await);
    let gw = harness::start(&harness::one_backend(a.addr(), "")).await.expect("gateway");
    let addr = gw.addrs()[0];
    assert_eq!(get(addr, "/").await.header("x-origin"), "a");

    // A request under way keeps its generation; later ones see the new backend.
    let in_flight = tokio::spawn(async move { client::get(addr, "/delay/400", &[]).await });
    harness::wait_until("the request reached origin a", || a.requests() == 2).await;
    gw.reload(harness::config(&harness::one_backend(b.addr(), "")).expect("config")).await.expect("reload");
    assert_eq!(get(addr, "/").await.header("x-origin"), "b");
    let reply = in_flight.await.expect("task").expect("in-flight request");
    assert_eq!((reply.status.as_u16(), reply.header("x-origin")), (200, "a"));

    // A config whose plugin cannot load is refused; the current one keeps serving.
    let broken = harness::one_backend(a.addr(), "").plugin("p", "/nonexistent/p.wasm", "{}");
    let err = gw.reload(harness::config(&broken).expect("parses")).await.expect_err("refused");
    assert!(err.to_string().contains("plugins.p"), "{err}");
    assert_eq!(get(addr, "/").await.header("x-origin"), "b");
    gw.stop().await;
}

#[tokio::test]
async fn sighup_reloads_the_config_file() {
    let (a, b) = (origin("a").await, origin("b").await);
    let dir = harness::TempDir::new("hup").expect("dir");
    let gw =
        harness::GatewayProcess::start(dir.path(), &harness::one_backend(a.addr(), "")).expect("gateway");
    assert_eq!(get(gw.addr, "/").await.header("x-origin"), "a");
    // The listener must stay where it is: reuse the bound address.
    let next = harness::one_backend(b.addr(), "").replace("127.0.0.1:0", &gw.addr.to_string());
    std::fs::write(&gw.config, format!("{next}\n{}", harness::runtime_section())).expect("write");
    let pid = gw.child.id().to_string();
    assert!(std::process::Command::new("kill").args(["-HUP", &pid]).status().expect("kill").success());
    let deadline = Instant::now() + Duration::from_secs(10);
    while get(gw.addr, "/").await.header("x-origin") != "b" {
        assert!(Instant::now() < deadline, "SIGHUP did not switch to the new backend");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

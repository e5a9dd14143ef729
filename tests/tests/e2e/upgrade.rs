//! Zero-downtime operations with the real binary: reloads and binary upgrades under keep-alive
//! load lose nothing; a slow response body, a WebSocket tunnel and an HTTP/2 stream in flight
//! across an upgrade finish on the old process; a keep-alive client of the old process is told
//! to close and reconnects to the new one; an upgrade with a broken config changes nothing;
//! SIGUSR2 starts the successor itself; a watched config reloads itself; a reload that changes
//! nothing keeps every plugin.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use wasmgate_example_origin::Origin;
use wasmgate_tests::harness::{self, GatewayProcess, TempDir, Toml};
use wasmgate_tests::rollout::{self, Plan};
use wasmgate_tests::{client, wasm};

async fn origin() -> Origin {
    Origin::start("o", "127.0.0.1:0".parse().expect("addr"), None).await.expect("origin")
}

fn start(dir: &TempDir, backend: SocketAddr, tag: &str) -> GatewayProcess {
    tokio::task::block_in_place(|| GatewayProcess::start(dir.path(), &rollout::config(backend, tag)))
        .expect("gateway")
}

fn upgrade(gateway: &GatewayProcess) -> GatewayProcess {
    tokio::task::block_in_place(|| gateway.upgrade()).expect("upgrade")
}

fn exits_cleanly(gateway: &mut GatewayProcess) {
    let status = tokio::task::block_in_place(|| gateway.wait_exit(Duration::from_secs(30))).expect("exits");
    assert!(status.success(), "the old process exited with {status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_reloads_then_ten_upgrades_under_load_lose_no_request() {
    let o = origin().await;
    let dir = TempDir::new("rollout").expect("dir");
    let plan = Plan { connections: 32, reloads: 20, upgrades: 10, steady_requests: 500 };
    let rollout = rollout::run(dir.path(), o.addr(), plan).await.expect("rollout");
    let report = &rollout.report;
    assert!(
        report.errors.is_empty(),
        "{} failures, first: {:?}",
        report.errors.len(),
        &report.errors[..report.errors.len().min(5)]
    );
    assert_eq!(rollout.windows.len(), 30);
    // Every upgrade closed the old process's keep-alive connections: the load reconnected.
    assert!(report.reconnects >= 10, "{} reconnects", report.reconnects);
    assert!(report.ok > 1000, "{} requests", report.ok);
}

/// An origin that answers every request with ten chunks, 150 ms apart.
async fn slow_origin() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    if stream.read(&mut byte).await.unwrap_or(0) == 0 {
                        return;
                    }
                    head.push(byte[0]);
                }
                let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n").await;
                for i in 0..10 {
                    tokio::time::sleep(Duration::from_millis(150)).await;
                    let _ = stream.write_all(format!("6\r\ntick-{i}\r\n").as_bytes()).await;
                }
                let _ = stream.write_all(b"0\r\n\r\n").await;
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_tunnels_and_h2_in_flight_finish_on_the_old_process() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let (o, slow, echo) =
        (origin().await, slow_origin().await, harness::websocket_echo().await.expect("echo"));
    let dir = TempDir::new("upgrade-in-flight").expect("dir");
    let toml = Toml::new()
        .listener()
        .plugin("tag", wasm::ADD_HEADER, r#"{ response = { x-generation = "old" } }"#)
        .upstream("o", &[o.addr()])
        .upstream("slow", &[slow])
        .upstream("echo", &[echo])
        .route("slow")
        .raw(r#"path_prefix = "/slow""#)
        .route("echo")
        .raw(r#"path_prefix = "/ws""#)
        .route("o")
        .raw(r#"plugins = ["tag"]"#);
    let mut old = tokio::task::block_in_place(|| GatewayProcess::start(dir.path(), &toml)).expect("gateway");
    let addr = old.addr;

    let body = tokio::spawn(async move { client::get(addr, "/slow/stream", &[]).await });
    let h2 = tokio::spawn(async move {
        let request = http::Request::get(format!("http://{addr}/delay/1500")).body(Full::<Bytes>::default());
        client::h2c(addr, request.expect("request")).await
    });
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (mut ws, response) =
        tokio_tungstenite::client_async(format!("ws://{addr}/ws"), stream).await.expect("handshake");
    assert_eq!(response.status(), 101);
    tokio::time::sleep(Duration::from_millis(200)).await;

    let mut new = upgrade(&old);
    // The old process keeps the tunnel: messages still go both ways after the hand-over.
    for text in ["across", "the", "upgrade"] {
        ws.send(Message::text(text)).await.expect("send");
        let back = tokio::time::timeout(Duration::from_secs(5), ws.next()).await.expect("in time");
        assert_eq!(back.expect("message").expect("ok").into_text().expect("text").as_str(), text);
    }
    let slow_reply = body.await.expect("task").expect("slow body");
    assert_eq!(slow_reply.status, 200);
    assert_eq!(slow_reply.text(), (0..10).map(|i| format!("tick-{i}")).collect::<String>());
    let h2_reply = h2.await.expect("task").expect("h2 stream");
    assert_eq!((h2_reply.status.as_u16(), h2_reply.header("x-generation")), (200, "old"));
    assert!(old.child.try_wait().expect("status").is_none(), "the old process waits for the tunnel");
    ws.close(None).await.expect("close");
    exits_cleanly(&mut old);
    assert_eq!(client::get(addr, "/", &[]).await.expect("request").status, 200);
    let _ = new.child.kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keep_alive_client_is_told_to_close_and_reconnects_to_the_successor() {
    let o = origin().await;
    let dir = TempDir::new("upgrade-keep-alive").expect("dir");
    let mut old = start(&dir, o.addr(), "old");
    let admin = rollout::admin_addr(&old).expect("admin");

    async fn connection(addr: SocketAddr) -> hyper::client::conn::http1::SendRequest<Empty<Bytes>> {
        let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let (sender, conn) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.expect("handshake");
        tokio::spawn(conn);
        sender
    }
    async fn get(
        sender: &mut hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
        path: &str,
    ) -> (u16, Option<String>, Option<String>) {
        sender.ready().await.expect("ready");
        let request = http::Request::get(path).header("host", "gw").body(Empty::new()).expect("request");
        let response = sender.send_request(request).await.expect("response");
        let header = |name| response.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let (status, connection, generation) =
            (response.status().as_u16(), header("connection"), header("x-generation"));
        response.into_body().collect().await.expect("body");
        (status, connection, generation)
    }

    let mut proxied = connection(old.addr).await;
    let mut probes = connection(admin).await;
    assert_eq!(get(&mut proxied, "/").await, (200, None, Some("old".into())));
    assert_eq!(get(&mut probes, "/readyz").await.0, 200);

    old.rewrite(&rollout::config(o.addr(), "new")).expect("rewrite");
    let mut new = upgrade(&old);
    // Readiness probes on the old admin connection see it draining (the idle keep-alive
    // connection keeps it alive for a while); new ones reach the new process.
    let mut draining = false;
    for _ in 0..50 {
        if get(&mut probes, "/readyz").await.0 == 503 {
            draining = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(draining, "/readyz of the old process never answered 503");
    let fresh = client::get(admin, "/readyz", &[]).await.expect("probe");
    assert_eq!(fresh.status, 200);
    // The old process answers the next request on this connection, and says it closes.
    assert_eq!(get(&mut proxied, "/").await, (200, Some("close".into()), Some("old".into())));
    assert!(proxied.ready().await.is_err(), "the old process closed the connection");
    let mut again = connection(old.addr).await;
    assert_eq!(get(&mut again, "/").await, (200, None, Some("new".into())));
    drop(probes);
    exits_cleanly(&mut old);
    assert_eq!(get(&mut again, "/").await, (200, None, Some("new".into())));
    let _ = new.child.kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_with_a_broken_config_exits_non_zero_and_the_old_process_keeps_serving() {
    let o = origin().await;
    let dir = TempDir::new("upgrade-broken").expect("dir");
    let old = start(&dir, o.addr(), "old");
    let broken = rollout::config(o.addr(), "new").plugin("missing", "/nonexistent/missing.wasm", "");
    old.rewrite(&broken).expect("rewrite");
    let out = tokio::task::block_in_place(|| {
        std::process::Command::new(harness::wasmgate_bin().expect("binary"))
            .args(["run", "--upgrade", "--config"])
            .arg(&old.config)
            .env("NO_COLOR", "1")
            .output()
    })
    .expect("ran");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("plugins.missing") && stderr.contains("gateway.toml"), "{stderr}");
    let reply = client::get(old.addr, "/", &[]).await.expect("request");
    assert_eq!((reply.status.as_u16(), reply.header("x-generation")), (200, "old"));
    assert!(old.log_lines("draining").is_empty(), "the old process never drained");

    // With no gateway behind the upgrade socket (another config file has another), `--upgrade`
    // says so.
    let lonely = dir.path().join("lonely.toml");
    std::fs::write(&lonely, format!("{}\n{}", rollout::config(o.addr(), "x"), harness::runtime_section()))
        .expect("write");
    let out = tokio::task::block_in_place(|| {
        std::process::Command::new(harness::wasmgate_bin().expect("binary"))
            .args(["run", "--upgrade", "--config"])
            .arg(&lonely)
            .env("NO_COLOR", "1")
            .output()
    })
    .expect("ran");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("upgrade socket"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigusr2_starts_the_successor_itself() {
    let o = origin().await;
    let dir = TempDir::new("upgrade-usr2").expect("dir");
    let mut old = start(&dir, o.addr(), "old");
    old.rewrite(&rollout::config(o.addr(), "new")).expect("rewrite");
    old.signal("USR2").expect("signal");
    rollout::sees(old.addr, "new").await.expect("the successor serves");
    exits_cleanly(&mut old);
    // The successor wrote to the same log; it is stopped by its pid.
    let ready = old.log_lines(" ready ");
    let pid = ready.last().and_then(|l| l.split("pid=").nth(1)).and_then(|p| p.split_whitespace().next());
    let pid = pid.expect("the successor's pid").to_owned();
    assert_ne!(pid, old.child.id().to_string());
    assert_eq!(client::get(old.addr, "/", &[]).await.expect("request").status, 200);
    let _ = std::process::Command::new("kill").arg(&pid).status();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watched_config_reloads_itself_once_written_whole() {
    let o = origin().await;
    let dir = TempDir::new("watch").expect("dir");
    let watched = |tag| {
        rollout::config(o.addr(), tag).raw("[server]").raw("watch = true").raw(r#"watch_interval = "100ms""#)
    };
    let gw =
        tokio::task::block_in_place(|| GatewayProcess::start(dir.path(), &watched("one"))).expect("gateway");
    // A file cut short is refused; the running generation keeps serving.
    let whole = std::fs::read_to_string(&gw.config).expect("config");
    let cut = whole.find("x-generation").expect("the plugin's config");
    std::fs::write(&gw.config, &whole[..cut]).expect("write half");
    harness::wait_until("the half-written file was refused", || !gw.log_lines("reload refused").is_empty())
        .await;
    assert_eq!(client::get(gw.addr, "/", &[]).await.expect("request").header("x-generation"), "one");
    // Written whole, it is taken.
    gw.rewrite(&watched("two")).expect("rewrite");
    rollout::sees(gw.addr, "two").await.expect("reloaded by the watcher");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_that_changes_nothing_keeps_every_plugin() {
    let o = origin().await;
    let dir = TempDir::new("reload-keeps").expect("dir");
    let gw = start(&dir, o.addr(), "same");
    let admin = rollout::admin_addr(&gw).expect("admin");
    let reload = || async {
        let request =
            http::Request::post(format!("http://{admin}/reload")).body(Full::default()).expect("request");
        let reply = client::send(&client::http1(), request).await.expect("reload");
        (reply.status.as_u16(), serde_json::from_slice::<serde_json::Value>(&reply.body).expect("json"))
    };
    let (status, outcome) = reload().await;
    assert_eq!(status, 200, "{outcome}");
    assert_eq!((outcome["plugins_kept"].as_u64(), outcome["plugins_loaded"].as_u64()), (Some(1), Some(0)));

    gw.rewrite(&rollout::config(o.addr(), "changed")).expect("rewrite");
    let (_, outcome) = reload().await;
    assert_eq!((outcome["plugins_kept"].as_u64(), outcome["plugins_loaded"].as_u64()), (Some(0), Some(1)));
    rollout::sees(gw.addr, "changed").await.expect("new generation");

    // A broken file: 422 with the file, field and reason; the running generation keeps serving.
    gw.rewrite(&rollout::config(o.addr(), "x").route("missing")).expect("rewrite");
    let (status, outcome) = reload().await;
    assert_eq!(status, 422, "{outcome}");
    let error = outcome["error"].as_str().expect("error");
    assert!(error.contains("gateway.toml") && error.contains("routes[1].upstream"), "{error}");
    rollout::sees(gw.addr, "changed").await.expect("still serving");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_listeners_pass_and_the_new_config_adds_and_drops_listeners() {
    let o = origin().await;
    let dir = TempDir::new("upgrade-listeners").expect("dir");
    let ca = wasmgate_tests::tls::TestCa::new().expect("ca");
    let (cert, key) = ca.write_leaf(dir.path(), &["a.test"]).expect("leaf");
    let (kept_plain, tls, added) = (harness::closed_port(), harness::closed_port(), harness::closed_port());
    let tls_listener =
        |toml: Toml| {
            toml.raw("[[listeners]]").raw(&format!(r#"address = "{tls}""#)).raw("[listeners.tls]").raw(
                &format!(r#"certificates = [{{ cert = "{}", key = "{}" }}]"#, cert.display(), key.display()),
            )
        };
    let rest = |toml: Toml, tag: &str| {
        toml.plugin("tag", wasm::ADD_HEADER, &format!(r#"{{ response = {{ x-generation = "{tag}" }} }}"#))
            .upstream("o", &[o.addr()])
            .route("o")
            .raw(r#"plugins = ["tag"]"#)
    };
    let old_config = rest(
        tls_listener(Toml::new().raw("[[listeners]]").raw(&format!(r#"address = "{kept_plain}""#))),
        "old",
    );
    let mut old =
        tokio::task::block_in_place(|| GatewayProcess::start(dir.path(), &old_config)).expect("gateway");
    let https = |tag: &'static str| {
        let config = ca.client_config(&[b"h2"], None).expect("client config");
        async move {
            let tcp = tokio::net::TcpStream::connect(tls).await.expect("connect");
            let name = rustls::pki_types::ServerName::try_from("a.test").expect("name");
            let stream =
                tokio_rustls::TlsConnector::from(config).connect(name, tcp).await.expect("handshake");
            let (mut sender, conn) = hyper::client::conn::http2::handshake(
                hyper_util::rt::TokioExecutor::new(),
                TokioIo::new(stream),
            )
            .await
            .expect("h2");
            tokio::spawn(conn);
            let request = http::Request::get("https://a.test/").body(Empty::<Bytes>::new()).expect("request");
            let response = sender.send_request(request).await.expect("response");
            assert_eq!(response.status(), 200);
            assert_eq!(response.headers().get("x-generation").and_then(|v| v.to_str().ok()), Some(tag));
        }
    };
    https("old").await;

    // The new config keeps the TLS listener, adds a plain one and drops the first.
    let new_config =
        rest(tls_listener(Toml::new()).raw("[[listeners]]").raw(&format!(r#"address = "{added}""#)), "new");
    old.rewrite(&new_config).expect("rewrite");
    let mut new = upgrade(&old);
    exits_cleanly(&mut old);
    https("new").await;
    rollout::sees(added, "new").await.expect("the added listener serves");
    assert!(tokio::net::TcpStream::connect(kept_plain).await.is_err(), "the dropped listener is closed");
    let _ = new.child.kill();
}

//! What an operator runs the gateway with: the admin API (token, health, readiness, upstreams,
//! plugins, the redacted config), `/metrics` read back with a Prometheus text parser, and JSON
//! access-log lines from the real binary.

use std::net::SocketAddr;

use wasmgate::server::Running;
use wasmgate_example_origin::Origin;
use wasmgate_tests::client::{self, Reply};
use wasmgate_tests::harness::{self, Toml};
use wasmgate_tests::wasm;

async fn origin() -> Origin {
    Origin::start("o", "127.0.0.1:0".parse().expect("addr"), None).await.expect("origin")
}

async fn with_admin(backend: SocketAddr) -> Running {
    harness::start(
        &Toml::new()
            .listener()
            .raw("[admin]")
            .raw(r#"address = "127.0.0.1:0""#)
            .raw(r#"token = "t0k3n""#)
            .plugin("tag", wasm::ADD_HEADER, r#"{ request = { x-tag = "1" } }"#)
            .plugin("jwt", wasm::JWT_AUTH, r#"{ hs256_secret = "do-not-show" }"#)
            .upstream("o", &[backend])
            .route("o")
            .raw(r#"name = "api""#)
            .raw(r#"path_prefix = "/api""#)
            .raw(r#"plugins = ["tag"]"#),
    )
    .await
    .expect("gateway")
}

async fn admin(gw: &Running, path: &str, token: Option<&str>) -> Reply {
    let auth = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("authorization", a.as_str())).collect();
    client::get(gw.admin_addr().expect("admin listener"), path, &headers).await.expect("admin request")
}

#[tokio::test]
async fn the_admin_api_reports_state_and_refuses_without_the_token() {
    let o = origin().await;
    let gw = with_admin(o.addr()).await;
    for path in ["/healthz", "/readyz", "/status", "/upstreams", "/plugins", "/config", "/metrics"] {
        assert_eq!(admin(&gw, path, None).await.status, 401, "{path} without a token");
        assert_eq!(admin(&gw, path, Some("wrong")).await.status, 401, "{path} with a wrong token");
    }
    let token = Some("t0k3n");
    assert_eq!(admin(&gw, "/healthz", token).await.text(), "ok\n");
    assert_eq!(admin(&gw, "/readyz", token).await.status, 200);

    let upstreams: serde_json::Value =
        serde_json::from_slice(&admin(&gw, "/upstreams", token).await.body).expect("json");
    let backend = &upstreams["o"]["backends"][0];
    assert_eq!(backend["address"], o.addr().to_string());
    assert_eq!(backend["healthy"], true);

    let plugins: serde_json::Value =
        serde_json::from_slice(&admin(&gw, "/plugins", token).await.body).expect("json");
    assert_eq!(plugins["tag"]["sha256"].as_str().map(str::len), Some(64));
    assert!(plugins["tag"]["instances"]["idle"].as_u64().is_some_and(|n| n > 0));

    let config: serde_json::Value =
        serde_json::from_slice(&admin(&gw, "/config", token).await.body).expect("json");
    assert_eq!(config["admin"]["token"], "[redacted]");
    assert_eq!(config["plugins"]["jwt"]["config"]["hs256_secret"], "[redacted]");
    assert_eq!(config["routes"][0]["name"], "api");
    assert_eq!(config["upstreams"]["o"]["connect_timeout"], "2s", "the effective config shows defaults");

    let status: serde_json::Value =
        serde_json::from_slice(&admin(&gw, "/status", token).await.body).expect("json");
    assert_eq!((status["generation"].as_u64(), &status["routes"][0]), (Some(1), &serde_json::json!("api")));
    assert!(status["last_reload"].is_null(), "no reload yet");

    // The dashboard's files hold no data: they are served without the token, kept to
    // themselves by their headers.
    for (path, kind) in
        [("/", "text/html"), ("/dashboard.js", "text/javascript"), ("/dashboard.css", "text/css")]
    {
        let page = admin(&gw, path, None).await;
        assert_eq!(page.status, 200, "{path}");
        assert!(page.header("content-type").starts_with(kind), "{path}");
        assert!(page.header("content-security-policy").contains("default-src 'none'"), "{path}");
    }
    gw.stop().await;
}

#[tokio::test]
async fn metrics_parse_and_count_the_requests_sent() {
    let o = origin().await;
    let gw = with_admin(o.addr()).await;
    for _ in 0..5 {
        assert_eq!(client::get(gw.addrs()[0], "/api/items", &[]).await.expect("request").status, 200);
    }
    for _ in 0..2 {
        assert_eq!(client::get(gw.addrs()[0], "/elsewhere", &[]).await.expect("request").status, 404);
    }
    let value = |samples: &[prometheus_parse::Sample], name: &str, labels: &[(&str, &str)]| -> f64 {
        samples
            .iter()
            .filter(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
            .map(|s| match s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => v,
                prometheus_parse::Value::Histogram(ref buckets) => buckets.last().map_or(0.0, |b| b.count),
                _ => 0.0,
            })
            .sum()
    };
    // Requests are counted when their response body is done: poll until all are.
    let mut scrape = Vec::new();
    for _ in 0..100 {
        let text = admin(&gw, "/metrics", Some("t0k3n")).await.text();
        let lines = text.lines().map(|l| Ok(l.to_owned()));
        scrape = prometheus_parse::Scrape::parse(lines).expect("the Prometheus text parses").samples;
        if value(&scrape, "wasmgate_requests_total", &[]) >= 7.0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let ok = [("route", "api"), ("method", "GET"), ("status", "200")];
    assert_eq!(value(&scrape, "wasmgate_requests_total", &ok), 5.0);
    assert_eq!(value(&scrape, "wasmgate_requests_total", &[("route", "-"), ("status", "404")]), 2.0);
    assert_eq!(value(&scrape, "wasmgate_upstream_requests_total", &[("group", "o")]), 5.0);
    let new = value(&scrape, "wasmgate_upstream_connections_total", &[("group", "o"), ("kind", "new")]);
    let reused = value(&scrape, "wasmgate_upstream_connections_total", &[("group", "o"), ("kind", "reused")]);
    assert_eq!(new + reused, 5.0);
    assert_eq!(value(&scrape, "wasmgate_backend_healthy", &[("group", "o")]), 1.0);
    assert_eq!(value(&scrape, "wasmgate_plugin_instances", &[("plugin", "tag"), ("state", "idle")]), 16.0);
    let calls = value(
        &scrape,
        "wasmgate_plugin_call_duration_seconds",
        &[("plugin", "tag"), ("phase", "request-headers")],
    );
    assert_eq!(calls, 5.0, "five calls timed");
    assert_eq!(value(&scrape, "wasmgate_request_duration_seconds", &[("name", "api")]), 5.0);
    gw.stop().await;
}

#[tokio::test]
async fn json_access_log_lines_carry_the_configured_fields() {
    let o = origin().await;
    let dir = harness::TempDir::new("access-log").expect("dir");
    let gw = harness::GatewayProcess::start(
        dir.path(),
        &harness::one_backend(o.addr(), r#"name = "main""#)
            .raw("[log]")
            .raw(r#"format = "json""#)
            .raw("access = true")
            .raw(r#"access_fields = ["method", "path", "status", "route", "request_id", "duration_ms", "backend"]"#),
    )
    .expect("gateway");
    let reply =
        client::get(gw.addr, "/echo-headers?x=1", &[("x-request-id", "req-42"), ("user-agent", "t/1")])
            .await
            .expect("request");
    assert_eq!(reply.status, 200);
    let mut line = None;
    harness::wait_until("the access-log line", || {
        let lines = gw.log.lock().map(|l| l.clone()).unwrap_or_default();
        line = lines.into_iter().find(|l| l.contains("wasmgate::access"));
        line.is_some()
    })
    .await;
    let line: serde_json::Value = serde_json::from_str(&line.unwrap_or_default()).expect("a JSON line");
    assert_eq!(line["method"], "GET");
    assert_eq!(line["path"], "/echo-headers?x=1");
    assert_eq!(line["status"], 200);
    assert_eq!(line["route"], "main");
    assert_eq!(line["request_id"], "req-42");
    assert_eq!(line["backend"], o.addr().to_string());
    assert!(line["duration_ms"].as_f64().is_some_and(|ms| ms >= 0.0));
    assert!(line.get("user_agent").is_none(), "a field not asked for is left out: {line}");
    assert!(line.get("client").is_none(), "{line}");
}

/// A small OTLP/HTTP receiver: keeps every JSON export body it is sent.
async fn otlp_receiver() -> (SocketAddr, std::sync::Arc<std::sync::Mutex<Vec<serde_json::Value>>>) {
    use http_body_util::BodyExt;
    use hyper::service::service_fn;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let received = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let store = received.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let store = store.clone();
            let service = service_fn(move |request: http::Request<hyper::body::Incoming>| {
                let store = store.clone();
                async move {
                    let body = request.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                    if let Ok(value) = serde_json::from_slice::<serde_json::Value>(&body)
                        && let Ok(mut store) = store.lock()
                    {
                        store.push(value);
                    }
                    Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Full::new(
                        bytes::Bytes::from_static(b"{}"),
                    )))
                }
            });
            tokio::spawn(async move {
                let io = hyper_util::rt::TokioIo::new(stream);
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, service).await;
            });
        }
    });
    (addr, received)
}

/// Every span in the exports received so far.
fn spans(received: &std::sync::Mutex<Vec<serde_json::Value>>) -> Vec<serde_json::Value> {
    let exports = received.lock().map(|r| r.clone()).unwrap_or_default();
    exports
        .iter()
        .flat_map(|e| e["resourceSpans"].as_array().cloned().unwrap_or_default())
        .flat_map(|r| r["scopeSpans"].as_array().cloned().unwrap_or_default())
        .flat_map(|s| s["spans"].as_array().cloned().unwrap_or_default())
        .collect()
}

fn attribute<'a>(span: &'a serde_json::Value, key: &str) -> Option<&'a serde_json::Value> {
    span["attributes"].as_array()?.iter().find(|a| a["key"] == key).map(|a| &a["value"])
}

#[tokio::test]
async fn spans_reach_an_otlp_receiver_with_the_parent_from_traceparent() {
    let o = origin().await;
    let (receiver, received) = otlp_receiver().await;
    let gw = harness::start(
        &Toml::new()
            .listener()
            .raw("[traces]")
            .raw(&format!(r#"endpoint = "http://{receiver}/v1/traces""#))
            .raw(r#"protocol = "http-json""#)
            .raw(r#"export_interval = "100ms""#)
            .plugin("tag", wasm::ADD_HEADER, r#"{ request = { x-tag = "1" } }"#)
            .upstream("o", &[o.addr()])
            .route("o")
            .raw(r#"name = "api""#)
            .raw(r#"plugins = ["tag"]"#),
    )
    .await
    .expect("gateway");
    let (trace_id, parent) = ("0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331");
    let traceparent = format!("00-{trace_id}-{parent}-01");
    let reply =
        client::get(gw.addrs()[0], "/echo-headers", &[("traceparent", &traceparent)]).await.expect("request");
    assert_eq!(reply.status, 200);
    let mut found = Vec::new();
    for _ in 0..100 {
        found = spans(&received);
        if found.len() >= 3 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let server = found
        .iter()
        .find(|s| s["parentSpanId"] == parent)
        .unwrap_or_else(|| panic!("no server span: {found:?}"));
    assert_eq!(server["traceId"], trace_id);
    assert_eq!(server["name"], "GET api");
    assert_eq!(
        attribute(server, "http.request.method").map(|v| &v["stringValue"]),
        Some(&serde_json::json!("GET"))
    );
    assert_eq!(
        attribute(server, "http.response.status_code")
            .map(|v| &v["intValue"])
            .map(|v| v.to_string().replace('"', "")),
        Some("200".to_owned())
    );
    let server_id = server["spanId"].as_str().expect("span id");
    let children: Vec<_> = found.iter().filter(|s| s["parentSpanId"] == server_id).collect();
    let plugin =
        children.iter().find(|s| s["name"] == "plugin tag request-headers").expect("the plugin call's span");
    assert_eq!(plugin["traceId"], trace_id);
    let upstream = children.iter().find(|s| s["name"] == "GET").expect("the upstream attempt's span");
    // The origin got the upstream attempt's span as its parent.
    let sent = format!("traceparent: 00-{trace_id}-{}-01\n", upstream["spanId"].as_str().expect("id"));
    assert!(reply.text().contains(&sent), "{}", reply.text());
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugins_close_to_their_limits_are_flagged_with_the_setting_to_raise() {
    let o = origin().await;
    let gw = harness::start(
        &Toml::new()
            .listener()
            .raw("[admin]")
            .raw(r#"address = "127.0.0.1:0""#)
            .plugin("grow", wasm::MISBEHAVE, r#"{ mode = "grow" }"#)
            .raw("memory_limit = \"16MiB\"\ninstances = 1")
            .plugin("slow", wasm::MISBEHAVE, r#"{ mode = "loop" }"#)
            .raw("deadline = \"200ms\"\ninstances = 1\npool_wait = \"5ms\"")
            .plugin("tag", wasm::ADD_HEADER, r#"{ request = { x-tag = "1" } }"#)
            .upstream("o", &[o.addr()])
            .route("o")
            .raw("path_prefix = \"/bad/grow\"\nplugins = [\"grow\"]")
            .route("o")
            .raw("path_prefix = \"/bad/slow\"\nplugins = [\"slow\"]")
            .route("o")
            .raw("plugins = [\"tag\"]"),
    )
    .await
    .expect("gateway");
    let addr = gw.addrs()[0];
    assert_eq!(client::get(addr, "/", &[]).await.expect("request").status, 200);
    assert_eq!(client::get(addr, "/bad/grow", &[]).await.expect("request").status, 500);
    // Two calls at once on a pool of one: the second waits, then finds none free.
    let (a, b) = tokio::join!(client::get(addr, "/bad/slow", &[]), client::get(addr, "/bad/slow", &[]));
    let mut statuses = [a.expect("request").status.as_u16(), b.expect("request").status.as_u16()];
    statuses.sort();
    assert_eq!(statuses, [500, 503], "one ran past its deadline, one found no instance");

    let plugins: serde_json::Value =
        serde_json::from_slice(&admin(&gw, "/plugins", None).await.body).expect("json");
    let kinds = |name: &str| -> Vec<String> {
        plugins[name]["flags"].as_array().map_or(Vec::new(), |flags| {
            flags.iter().filter_map(|f| f["kind"].as_str().map(str::to_owned)).collect()
        })
    };
    let raise = |name: &str, kind: &str| {
        let flags = plugins[name]["flags"].as_array().cloned().unwrap_or_default();
        flags.into_iter().find(|f| f["kind"] == kind).map(|f| f["raise"].clone())
    };
    // Growing to the limit may also take most of the deadline, and the log phase of the
    // failed request waits for the trapped instance's replacement: flags of their own.
    assert_eq!(kinds("tag"), Vec::<String>::new(), "{plugins}");
    assert_eq!(raise("grow", "memory"), Some("plugins.grow.memory_limit".into()), "{plugins}");
    assert_eq!(raise("slow", "deadline"), Some("plugins.slow.deadline".into()), "{plugins}");
    assert_eq!(raise("slow", "pool-wait"), Some("plugins.slow.instances".into()), "{plugins}");
    assert!(!kinds("slow").contains(&"memory".to_owned()), "{plugins}");
    let peak = plugins["grow"]["memory"]["peak"].as_u64().expect("peak");
    assert!((13 << 20..=16 << 20).contains(&peak), "{peak}");
    assert_eq!(plugins["slow"]["deadline"]["p99_used"], 1.0);
    assert!(plugins["slow"]["pool_wait"]["waits"].as_u64() >= Some(1), "{plugins}");
    assert_eq!(plugins["slow"]["instances"]["max"], 1);

    let scrape = String::from_utf8_lossy(&admin(&gw, "/metrics", None).await.body).into_owned();
    for line in [
        r#"wasmgate_plugin_flagged{plugin="grow",kind="memory"} 1"#,
        r#"wasmgate_plugin_flagged{plugin="tag",kind="memory"} 0"#,
        r#"wasmgate_plugin_flagged{plugin="slow",kind="pool-wait"} 1"#,
        r#"wasmgate_plugin_instances{plugin="slow",state="max"} 1"#,
    ] {
        assert!(scrape.contains(line), "{line} not in\n{scrape}");
    }
    assert!(scrape.contains(r#"wasmgate_plugin_memory_peak_bytes{plugin="grow"} "#), "{scrape}");
    assert!(scrape.contains(r#"wasmgate_plugin_deadline_used_ratio_count{plugin="tag"} 2"#), "{scrape}");
    gw.stop().await;
}

//! The HTTP cache against a real origin that counts what reaches it: fresh hits that never
//! touch the origin (whole, HEAD, ranges, conditional requests), revalidation with 304,
//! variants by `Vary`, what is never stored, one origin request for many concurrent misses,
//! stale-while-revalidate and stale-if-error, plugins steering the key, the bypass and the
//! TTL, purges through the admin API, the memory bound (the real binary's RSS), and a bad
//! `cache` refused by name.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use wasmgate_tests::client::{self, Reply};
use wasmgate_tests::harness::{self, GatewayProcess, Toml};
use wasmgate_tests::wasm;

/// An origin whose answers each path chooses (see [`answer`]); it counts the requests for
/// each path and, once `failing`, answers 503.
struct Origin {
    addr: SocketAddr,
    seen: Arc<Mutex<HashMap<String, Vec<http::HeaderMap>>>>,
    failing: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Origin {
    async fn start() -> Origin {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let seen: Arc<Mutex<HashMap<String, Vec<http::HeaderMap>>>> = Arc::default();
        let failing = Arc::new(AtomicBool::new(false));
        let (state, down) = (seen.clone(), failing.clone());
        let task = tokio::spawn(async move {
            // Dropped with the task: stopping the origin cuts its connections too.
            let mut connections = tokio::task::JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                // Head and body go in separate writes: Nagle would hold the body for an ACK.
                let _ = stream.set_nodelay(true);
                let (state, down) = (state.clone(), down.clone());
                let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                    let (state, down) = (state.clone(), down.clone());
                    async move { Ok::<_, Infallible>(answer(&state, &down, request).await) }
                });
                connections.spawn(async move {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Origin { addr, seen, failing, task }
    }

    /// Requests that reached the origin for `path` (with its query).
    fn count(&self, path: &str) -> usize {
        self.seen.lock().expect("lock").get(path).map_or(0, Vec::len)
    }

    /// The headers of the `n`th request for `path`.
    fn request(&self, path: &str, n: usize) -> http::HeaderMap {
        self.seen.lock().expect("lock")[path][n].clone()
    }
}

/// `/fresh/*`: an hour fresh, `ETag: "v1"`; `/short`: two seconds fresh, revalidated by its
/// ETag (304); `/vary`: varies on Accept-Language; `/no-store`, `/private`, `/cookie`, `/none`:
/// never stored; `/slow`: fresh, after 300 ms; `/swr`, `/sie`: two seconds fresh, then 30 s of
/// stale-while-revalidate or stale-if-error; `/big/*`: 64 KiB, fresh. The body says which
/// request of the path it answers. (Two seconds, not one: `Date` has whole seconds, so a
/// response can be up to a second old when it arrives.)
async fn answer(
    seen: &Mutex<HashMap<String, Vec<http::HeaderMap>>>,
    failing: &AtomicBool,
    request: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let path = request.uri().path_and_query().map_or("/", |p| p.as_str()).to_owned();
    let n = {
        let mut seen = seen.lock().expect("lock");
        let requests = seen.entry(path.clone()).or_default();
        requests.push(request.headers().clone());
        requests.len()
    };
    let reply = |cache_control: &str, body: String| {
        let mut response = Response::new(Full::new(Bytes::from(body)));
        if !cache_control.is_empty() {
            response.headers_mut().insert("cache-control", cache_control.parse().expect("value"));
        }
        response
    };
    if failing.load(Ordering::Relaxed) {
        let mut response = reply("", "down".to_owned());
        *response.status_mut() = http::StatusCode::SERVICE_UNAVAILABLE;
        return response;
    }
    let body = format!("{path} #{n}");
    let route = path.split('?').next().unwrap_or_default();
    match route {
        "/short" => {
            let matches = request.headers().get("if-none-match").is_some_and(|v| v == "\"short-v1\"");
            let mut response = reply("max-age=2", if matches { String::new() } else { body });
            if matches {
                *response.status_mut() = http::StatusCode::NOT_MODIFIED;
            }
            response.headers_mut().insert("etag", "\"short-v1\"".parse().expect("value"));
            response
        }
        "/vary" => {
            let language =
                request.headers().get("accept-language").map_or("-", |v| v.to_str().unwrap_or("?"));
            let mut response = reply("max-age=3600", format!("{body} {language}"));
            response.headers_mut().insert("vary", "Accept-Language".parse().expect("value"));
            response
        }
        "/no-store" => reply("no-store, max-age=3600", body),
        "/private" => reply("private, max-age=3600", body),
        "/cookie" => {
            let mut response = reply("max-age=3600", body);
            response.headers_mut().insert("set-cookie", "session=1".parse().expect("value"));
            response
        }
        "/none" => reply("", body),
        "/slow" => {
            tokio::time::sleep(Duration::from_millis(300)).await;
            reply("max-age=3600", body)
        }
        "/swr" => reply("max-age=2, stale-while-revalidate=30", body),
        "/sie" => reply("max-age=2, stale-if-error=30", body),
        _ if route.starts_with("/big/") => {
            let mut big = body.into_bytes();
            big.resize(64 << 10, b'.');
            reply("max-age=3600", String::from_utf8(big).expect("ascii"))
        }
        _ => {
            let mut response = reply("max-age=3600", body);
            response.headers_mut().insert("etag", "\"v1\"".parse().expect("value"));
            response.headers_mut().insert("content-type", "text/plain".parse().expect("value"));
            response
        }
    }
}

/// A gateway with one caching route (`cache` its table's body) to `origin`, running the tracer
/// plugin; `[admin]` with token `t`.
async fn gateway(origin: &Origin, cache: &str) -> wasmgate::server::Running {
    harness::start(
        &Toml::new()
            .listener()
            .raw("[admin]")
            .raw(r#"address = "127.0.0.1:0""#)
            .raw(r#"token = "t""#)
            .plugin("tracer", wasm::TRACER, "")
            .upstream("o", &[origin.addr])
            .route("o")
            .raw(r#"name = "cached""#)
            .raw(r#"plugins = ["tracer"]"#)
            .raw(&format!("cache = {{ {cache} }}")),
    )
    .await
    .expect("gateway")
}

async fn get(gw: &wasmgate::server::Running, path: &str, headers: &[(&str, &str)]) -> Reply {
    client::get(gw.addrs()[0], path, headers).await.expect("request")
}

async fn metrics(gw: &wasmgate::server::Running) -> String {
    let admin = gw.admin_addr().expect("admin");
    client::get(admin, "/metrics", &[("authorization", "Bearer t")]).await.expect("metrics").text()
}

/// Past the two seconds `/short`, `/swr` and `/sie` are fresh for.
const PAST_FRESH: Duration = Duration::from_millis(3100);

#[tokio::test]
async fn a_fresh_response_is_served_from_the_cache_without_the_origin() {
    let origin = Origin::start().await;
    let gw = gateway(&origin, "").await;
    let first = get(&gw, "/fresh/a", &[]).await;
    assert_eq!((first.status.as_u16(), first.text().as_str()), (200, "/fresh/a #1"));
    assert_eq!(first.header("cache-status"), "wasmgate; fwd=miss; stored");

    let hit = get(&gw, "/fresh/a", &[]).await;
    assert_eq!(hit.text(), "/fresh/a #1", "the stored body");
    assert!(hit.header("cache-status").starts_with("wasmgate; hit; ttl="), "{}", hit.header("cache-status"));
    assert!(hit.header("age").parse::<u64>().is_ok_and(|age| age < 60));
    // Response-header plugins still run on a hit, and see that it is one.
    assert!(hit.header("x-seen-cache-status").contains("hit"), "{:?}", hit.headers);

    let head = client::send(
        &client::http1(),
        Request::head(format!("http://{}/fresh/a", gw.addrs()[0])).body(Full::default()).expect("request"),
    )
    .await
    .expect("HEAD");
    assert_eq!((head.status.as_u16(), head.body.len()), (200, 0));
    assert_eq!(head.header("content-length"), "11");

    let not_modified = get(&gw, "/fresh/a", &[("if-none-match", "\"v1\"")]).await;
    assert_eq!((not_modified.status.as_u16(), not_modified.body.len()), (304, 0));
    assert_eq!(not_modified.header("etag"), "\"v1\"");
    let range = get(&gw, "/fresh/a", &[("range", "bytes=0-5")]).await;
    assert_eq!((range.status.as_u16(), range.text().as_str()), (206, "/fresh"));
    assert_eq!(range.header("content-range"), "bytes 0-5/11");
    let past = get(&gw, "/fresh/a", &[("range", "bytes=50-")]).await;
    assert_eq!((past.status.as_u16(), past.header("content-range")), (416, "bytes */11"));

    assert_eq!(origin.count("/fresh/a"), 1, "every answer after the first came from the cache");
    assert_eq!(get(&gw, "/fresh/a?v=2", &[]).await.text(), "/fresh/a?v=2 #1", "the query is part of the key");
    let text = metrics(&gw).await;
    assert!(text.contains(r#"wasmgate_cache_requests_total{route="cached",result="hit"} 5"#), "{text}");
    assert!(text.contains(r#"wasmgate_cache_requests_total{route="cached",result="miss"} 2"#), "{text}");
    gw.stop().await;
}

#[tokio::test]
async fn an_expired_response_is_revalidated_and_a_304_refreshes_it() {
    let origin = Origin::start().await;
    let gw = gateway(&origin, "").await;
    assert_eq!(get(&gw, "/short", &[]).await.text(), "/short #1");
    tokio::time::sleep(PAST_FRESH).await;
    let revalidated = get(&gw, "/short", &[]).await;
    assert_eq!((revalidated.status.as_u16(), revalidated.text().as_str()), (200, "/short #1"));
    assert_eq!(revalidated.header("cache-status"), "wasmgate; fwd=stale; fwd-status=304");
    assert_eq!(origin.count("/short"), 2);
    assert_eq!(
        origin.request("/short", 1)["if-none-match"],
        "\"short-v1\"",
        "asked with the entry's validator"
    );
    // Fresh again for a second: answered without the origin.
    let hit = get(&gw, "/short", &[]).await;
    assert!(hit.header("cache-status").starts_with("wasmgate; hit"), "{}", hit.header("cache-status"));
    assert_eq!(origin.count("/short"), 2);
    // A client's `no-cache` makes a fresh entry ask the origin too.
    let asked = get(&gw, "/short", &[("cache-control", "no-cache")]).await;
    assert_eq!(asked.header("cache-status"), "wasmgate; fwd=stale; fwd-status=304");
    assert_eq!(origin.count("/short"), 3);
    // Each request counted once, by what came of it.
    let text = metrics(&gw).await;
    for (result, n) in [("miss", 1), ("revalidated", 2), ("hit", 1)] {
        let series = format!(r#"wasmgate_cache_requests_total{{route="cached",result="{result}"}} {n}"#);
        assert!(text.contains(&series), "{series}: {text}");
    }
    gw.stop().await;
}

#[tokio::test]
async fn vary_keeps_one_variant_per_header_value() {
    let origin = Origin::start().await;
    let gw = gateway(&origin, "").await;
    for _ in 0..2 {
        assert_eq!(get(&gw, "/vary", &[("accept-language", "en")]).await.text(), "/vary #1 en");
        assert_eq!(get(&gw, "/vary", &[("accept-language", "fr")]).await.text(), "/vary #2 fr");
        assert_eq!(get(&gw, "/vary", &[]).await.text(), "/vary #3 -");
    }
    assert_eq!(origin.count("/vary"), 3, "one origin request per variant");
    gw.stop().await;
}

#[tokio::test]
async fn what_a_shared_cache_must_not_store_is_never_stored() {
    let origin = Origin::start().await;
    let gw = gateway(&origin, "").await;
    for (path, detail) in [
        ("/no-store", "no-store"),
        ("/private", "private"),
        ("/cookie", "set-cookie"),
        ("/none", "no-freshness"),
    ] {
        for n in 1..=2 {
            let reply = get(&gw, path, &[]).await;
            assert_eq!(reply.text(), format!("{path} #{n}"), "{path} came from the origin each time");
            assert_eq!(reply.header("cache-status"), format!("wasmgate; fwd=miss; detail={detail}"));
        }
    }
    // An answer to an authorised request is the requester's; and a request's `no-store`.
    let authorised = [("authorization", "Bearer secret")];
    assert_eq!(
        get(&gw, "/fresh/auth", &authorised).await.header("cache-status"),
        "wasmgate; fwd=miss; detail=authorization"
    );
    assert_eq!(get(&gw, "/fresh/auth", &[]).await.text(), "/fresh/auth #2");
    get(&gw, "/fresh/ns", &[("cache-control", "no-store")]).await;
    assert_eq!(get(&gw, "/fresh/ns", &[]).await.text(), "/fresh/ns #2");
    // A method that is not GET or HEAD goes by.
    let post = client::send(
        &client::http1(),
        Request::post(format!("http://{}/fresh/a", gw.addrs()[0])).body(Full::default()).expect("request"),
    )
    .await
    .expect("POST");
    assert_eq!(post.header("cache-status"), "wasmgate; fwd=method");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_misses_for_one_key_reach_the_origin_once() {
    let origin = Origin::start().await;
    let gw = gateway(&origin, "").await;
    let addr = gw.addrs()[0];
    let requests: Vec<_> = (0..100)
        .map(|_| tokio::spawn(async move { client::get(addr, "/slow", &[]).await.expect("request") }))
        .collect();
    for request in requests {
        let reply = request.await.expect("task");
        assert_eq!((reply.status.as_u16(), reply.text().as_str()), (200, "/slow #1"));
    }
    assert_eq!(origin.count("/slow"), 1, "the others waited for the first");
    let text = metrics(&gw).await;
    let waits = text
        .lines()
        .find(|l| l.starts_with(r#"wasmgate_cache_lock_waits_total{name="cached"}"#))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap_or(0);
    assert!(waits > 0, "{text}");
    gw.stop().await;
}

#[tokio::test]
async fn stale_while_revalidate_answers_at_once_and_refreshes_in_the_background() {
    let origin = Origin::start().await;
    let gw = gateway(&origin, "").await;
    assert_eq!(get(&gw, "/swr", &[]).await.text(), "/swr #1");
    tokio::time::sleep(PAST_FRESH).await;
    let stale = get(&gw, "/swr", &[]).await;
    assert_eq!(stale.text(), "/swr #1", "the stale entry answered");
    assert!(
        stale.header("cache-status").ends_with("detail=stale-while-revalidate"),
        "{}",
        stale.header("cache-status")
    );
    harness::wait_until("the background refresh", || origin.count("/swr") == 2).await;
    // The refresh is stored once its body is in.
    let mut refreshed = String::new();
    for _ in 0..50 {
        refreshed = get(&gw, "/swr", &[]).await.text();
        if refreshed == "/swr #2" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(refreshed, "/swr #2");
    assert_eq!(origin.count("/swr"), 2, "one refresh");
    gw.stop().await;
}

#[tokio::test]
async fn stale_if_error_answers_while_the_origin_fails_or_is_gone() {
    let origin = Origin::start().await;
    let gw = gateway(&origin, "").await;
    assert_eq!(get(&gw, "/sie", &[]).await.text(), "/sie #1");
    tokio::time::sleep(PAST_FRESH).await;
    origin.failing.store(true, Ordering::Relaxed);
    let failed = get(&gw, "/sie", &[]).await;
    assert_eq!((failed.status.as_u16(), failed.text().as_str()), (200, "/sie #1"));
    assert_eq!(failed.header("cache-status"), "wasmgate; fwd=stale; fwd-status=503; detail=stale-if-error");
    origin.task.abort();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let gone = get(&gw, "/sie", &[]).await;
    assert_eq!((gone.status.as_u16(), gone.text().as_str()), (200, "/sie #1"));
    assert_eq!(gone.header("cache-status"), "wasmgate; fwd=stale; fwd-status=0; detail=stale-if-error");
    // Without stale-if-error, the failure is the client's.
    assert_eq!(get(&gw, "/fresh/never-stored", &[]).await.status.as_u16(), 502);
    gw.stop().await;
}

#[tokio::test]
async fn plugins_set_the_key_bypass_the_cache_and_set_a_ttl() {
    let origin = Origin::start().await;
    let gw = gateway(&origin, "").await;
    let shared = [("x-cache-key", "shared")];
    assert_eq!(get(&gw, "/fresh/one", &shared).await.text(), "/fresh/one #1");
    assert_eq!(get(&gw, "/fresh/two", &shared).await.text(), "/fresh/one #1", "one key for both paths");
    assert_eq!(origin.count("/fresh/two"), 0);
    // A part added to the key: one entry per tenant.
    assert_eq!(get(&gw, "/fresh/t", &[("x-cache-part", "a")]).await.text(), "/fresh/t #1");
    assert_eq!(get(&gw, "/fresh/t", &[("x-cache-part", "b")]).await.text(), "/fresh/t #2");
    assert_eq!(get(&gw, "/fresh/t", &[("x-cache-part", "a")]).await.text(), "/fresh/t #1");
    // A bypass neither reads nor fills.
    for n in 1..=2 {
        let reply = get(&gw, "/fresh/b", &[("x-cache-bypass", "1")]).await;
        assert_eq!(reply.text(), format!("/fresh/b #{n}"));
        assert_eq!(reply.header("cache-status"), "wasmgate; fwd=bypass; detail=plugin");
    }
    assert_eq!(get(&gw, "/fresh/b", &[]).await.text(), "/fresh/b #3");
    let text = metrics(&gw).await;
    assert!(text.contains(r#"wasmgate_cache_requests_total{route="cached",result="bypass"} 2"#), "{text}");
    // A TTL stores what the origin says nothing about, and 0 keeps out what it would store.
    assert_eq!(
        get(&gw, "/none", &[("x-cache-ttl-ms", "60000")]).await.header("cache-status"),
        "wasmgate; fwd=miss; stored"
    );
    assert_eq!(get(&gw, "/none", &[]).await.text(), "/none #1");
    assert_eq!(
        get(&gw, "/fresh/z", &[("x-cache-ttl-ms", "0")]).await.header("cache-status"),
        "wasmgate; fwd=miss; detail=plugin"
    );
    assert_eq!(get(&gw, "/fresh/z", &[]).await.text(), "/fresh/z #2");
    gw.stop().await;
}

#[tokio::test]
async fn purges_through_the_admin_api_by_key_and_by_prefix() {
    let origin = Origin::start().await;
    let gw = gateway(&origin, "").await;
    let admin = gw.admin_addr().expect("admin");
    for path in ["/fresh/p1", "/fresh/p2", "/vary"] {
        get(&gw, path, &[]).await;
    }
    let purge = |query: &'static str, token: Option<&'static str>| async move {
        let mut request = Request::post(format!("http://{admin}/cache/purge?{query}"));
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        client::send(&client::http1(), request.body(Full::default()).expect("request")).await.expect("purge")
    };
    assert_eq!(purge("key=127.0.0.1/fresh/p1", None).await.status.as_u16(), 401);
    let one = purge("key=127.0.0.1%2Ffresh%2Fp1", Some("t")).await;
    assert_eq!((one.status.as_u16(), one.text().as_str()), (200, r#"{"purged":1,"routes":["cached"]}"#));
    assert_eq!(get(&gw, "/fresh/p1", &[]).await.text(), "/fresh/p1 #2", "purged: the origin again");
    assert_eq!(get(&gw, "/fresh/p2", &[]).await.text(), "/fresh/p2 #1", "another key stays");
    let prefix = purge("prefix=127.0.0.1/fresh/&route=cached", Some("t")).await;
    assert_eq!(prefix.text(), r#"{"purged":2,"routes":["cached"]}"#);
    assert_eq!(get(&gw, "/fresh/p2", &[]).await.text(), "/fresh/p2 #2");
    assert_eq!(get(&gw, "/vary", &[]).await.text(), "/vary #1 -", "outside the prefix");
    assert_eq!(purge("prefix=x&route=nope", Some("t")).await.status.as_u16(), 404);
    assert_eq!(purge("everything=1", Some("t")).await.status.as_u16(), 400);
    let sizes = client::get(admin, "/cache", &[("authorization", "Bearer t")]).await.expect("sizes");
    assert!(sizes.text().contains(r#""route":"cached""#), "{}", sizes.text());
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_memory_bound_holds_under_a_stream_of_distinct_keys() {
    let origin = Origin::start().await;
    let dir = harness::TempDir::new("cache-bound").expect("dir");
    let admin = harness::closed_port();
    let toml = Toml::new()
        .listener()
        .raw("[admin]")
        .raw(&format!(r#"address = "{admin}""#))
        .upstream("o", &[origin.addr])
        .route("o")
        .raw(r#"cache = { max_size = "2MiB", max_object = "1MiB" }"#);
    let gw = GatewayProcess::start(dir.path(), &toml).expect("gateway");
    let fetch = |from: usize, to: usize| async move {
        let client = client::http1();
        for n in from..to {
            let request =
                Request::get(format!("http://{}/big/{n}", gw.addr)).body(Full::default()).expect("request");
            let reply = client::send(&client, request).await.expect("request");
            assert_eq!(reply.body.len(), 64 << 10);
        }
    };
    // 4 MiB through a 2 MiB cache, then 24 MiB more.
    fetch(0, 64).await;
    let (_, rss_before) = gw.memory_kib().expect("memory");
    fetch(64, 448).await;
    let (_, rss_after) = gw.memory_kib().expect("memory");
    eprintln!("gateway RSS: {rss_before} KiB after 4 MiB of distinct keys, {rss_after} KiB after 28 MiB");
    assert!(rss_after < rss_before + 6 * 1024, "RSS grew from {rss_before} to {rss_after} KiB");
    let sizes = client::get(admin, "/cache", &[]).await.expect("sizes").text();
    let bytes: u64 = sizes
        .split(r#""bytes":"#)
        .nth(1)
        .and_then(|rest| rest.split(',').next())
        .and_then(|n| n.parse().ok())
        .expect("bytes held");
    assert!(bytes <= 2 << 20, "the cache holds {bytes} bytes: {sizes}");
    let text = client::get(admin, "/metrics", &[]).await.expect("metrics").text();
    assert!(
        text.lines().any(|l| l.starts_with("wasmgate_cache_evictions_total") && !l.ends_with(" 0")),
        "{text}"
    );
}

#[tokio::test]
async fn a_bad_cache_is_refused_naming_the_field() {
    let toml = |cache: &str| {
        Toml::new()
            .listener()
            .upstream("o", &["127.0.0.1:1".parse().expect("addr")])
            .route("o")
            .raw(cache)
            .to_string()
    };
    for (cache, field) in [
        (r#"cache = { max_size = "1MiB", max_object = "2MiB" }"#, "routes[0].cache.max_object"),
        (r#"cache = { max_size = 0 }"#, "routes[0].cache.max_size"),
        (r#"cache = { default_ttl = "0s" }"#, "routes[0].cache.default_ttl"),
        (r#"cache = { ttl = "1m" }"#, "routes[0]"),
    ] {
        let error = harness::config(&toml(cache)).expect_err(cache).to_string();
        assert!(error.contains(field) && error.contains("test.toml"), "{cache}: {error}");
    }
}

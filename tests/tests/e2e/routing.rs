//! Routes end to end: exact paths, path patterns, several hosts, header and query conditions,
//! each on and off; path and host rewrites and header edits both ways, through the gateway to
//! real origins; and `wasmgate check` warning of a route an earlier one makes unreachable and
//! refusing bad route options.

use wasmgate_example_origin::Origin;
use wasmgate_tests::client;
use wasmgate_tests::harness::{self, Toml};
use wasmgate_tests::wasm;

async fn origin(name: &str) -> Origin {
    Origin::start(name, "127.0.0.1:0".parse().expect("addr"), None).await.expect("origin")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_match_kind_takes_its_requests_and_leaves_the_rest() {
    let names = ["exact", "pattern", "hosts", "header", "query", "rest"];
    let mut origins = Vec::new();
    for name in names {
        origins.push(origin(name).await);
    }
    let mut toml = Toml::new().listener();
    for (name, o) in names.iter().zip(&origins) {
        toml = toml.upstream(name, &[o.addr()]);
    }
    let toml = toml
        .route("exact")
        .raw(r#"path = "/health""#)
        .route("pattern")
        .raw(r#"path_regex = "/users/[0-9]+""#)
        .route("hosts")
        .raw(r#"hosts = ["a.test", "*.b.test"]"#)
        .route("header")
        .raw(r#"headers = [{ name = "x-env", value = "canary" }, { name = "x-user", regex = "u[0-9]+" }]"#)
        .route("query")
        .raw(r#"query = [{ name = "v", value = "2" }, { name = "debug", present = false }]"#)
        .route("rest");
    let gw = harness::start(&toml).await.expect("gateway");
    let addr = gw.addrs()[0];
    // Path, request headers, the origin that must answer.
    type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str);
    let cases: [Case<'_>; 14] = [
        ("/health", &[], "exact"),
        ("/health/deep", &[], "rest"),
        ("/users/42", &[], "pattern"),
        ("/users/42/posts", &[], "rest"),
        ("/users/me", &[], "rest"),
        ("/", &[("host", "a.test")], "hosts"),
        ("/", &[("host", "x.b.test")], "hosts"),
        ("/", &[("host", "c.test")], "rest"),
        ("/", &[("x-env", "canary"), ("x-user", "u7")], "header"),
        ("/", &[("x-env", "canary"), ("x-user", "admin")], "rest"),
        ("/", &[("x-env", "prod"), ("x-user", "u7")], "rest"),
        ("/list?v=2", &[], "query"),
        ("/list?v=2&debug", &[], "rest"),
        ("/list?v=1", &[], "rest"),
    ];
    for (path, headers, expected) in cases {
        let reply = client::get(addr, path, headers).await.expect("request");
        assert_eq!((reply.status.as_u16(), reply.header("x-origin")), (200, expected), "{path} {headers:?}");
    }
    gw.stop().await;
}

#[test]
fn check_warns_of_a_route_that_can_never_match_and_refuses_bad_route_options() {
    let dir = harness::TempDir::new("routing-check").expect("dir");
    let backend = harness::closed_port();
    let base = Toml::new().listener().upstream("o", &[backend]);
    let shadowing =
        base.clone().route("o").raw("name = \"api\"\npath_prefix = \"/api\"").route("o").raw(
            "name = \"v1\"\npath_prefix = \"/api/v1\"\nheaders = [{ name = \"x-env\", present = true }]",
        );
    let (ok, out, err) = harness::check(dir.path(), &shadowing).expect("check");
    assert!(ok, "{out}{err}");
    assert!(
        out.contains(
            "warning: route `v1` can never match: route `api`, before it, takes every request it would"
        ),
        "{out}"
    );
    let (ok, out, _) = harness::check(
        dir.path(),
        &base.clone().route("o").raw("path_prefix = \"/api/v1\"").route("o").raw("path_prefix = \"/api\""),
    )
    .expect("check");
    assert!(ok && !out.contains("warning"), "the narrower route first is fine: {out}");
    let refused = [
        (r#"path_regex = "/users/(""#, "routes[0].path_regex", "is not a valid pattern"),
        (r#"rewrite = { prefix = "/a", path = "/b" }"#, "routes[0].rewrite", "not both"),
        (
            r#"request_headers = { set = { content-length = "1" } }"#,
            "routes[0].request_headers",
            "the gateway's to manage",
        ),
        (
            r#"headers = [{ name = "x-a", value = "1", present = true }]"#,
            "routes[0].headers[0]",
            "exactly one of",
        ),
        (r#"redirect = { status = 304 }"#, "routes[0].upstream", "exactly one of"),
        ("[routes.redirect]\nstatus = 200", "routes[0].upstream", "exactly one of"),
        (r#"mirror = { upstream = "nowhere" }"#, "routes[0].mirror.upstream", "no upstream group"),
        (r#"sticky = { header = "x-user" }"#, "routes[0].sticky", "only a route with `backends`"),
        ("plugins = [{ name = \"p\", config = { rate = 1 } }]", "routes[0].plugins[0]", "no plugin `p`"),
    ];
    for (extra, field, reason) in refused {
        let (ok, _, err) = harness::check(dir.path(), &base.clone().route("o").raw(extra)).expect("check");
        assert!(!ok && err.contains(field) && err.contains(reason), "{extra}: {err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_rewrite_paths_and_hosts_and_edit_headers_both_ways() {
    let o = origin("o").await;
    let toml = Toml::new()
        .listener()
        .upstream("o", &[o.addr()])
        .route("o")
        .raw(
            r#"path_prefix = "/old"
rewrite = { prefix = "/new" }
request_headers = { set = { x-set = "s" }, add = { x-add = "a2" }, remove = ["x-drop"] }
response_headers = { set = { x-served-by = "gw" }, remove = ["x-origin"] }"#,
        )
        .route("o")
        .raw(
            r#"path = "/status"
rewrite = { path = "/health", host = "internal.test" }"#,
        );
    let gw = harness::start(&toml).await.expect("gateway");
    let addr = gw.addrs()[0];
    let reply =
        client::get(addr, "/old/items/7?q=1", &[("x-set", "client"), ("x-add", "a1"), ("x-drop", "1")])
            .await
            .expect("request");
    assert_eq!(reply.status, 200);
    assert_eq!((reply.header("x-served-by"), reply.header("x-origin")), ("gw", ""), "response edits");
    let seen = o.seen();
    let first = seen.last().expect("the origin got it");
    assert_eq!(first.target, "/new/items/7?q=1", "the prefix is replaced, the rest and the query kept");
    assert_eq!(first.headers.get_all("x-set").iter().collect::<Vec<_>>(), ["s"], "set replaces");
    assert_eq!(first.headers.get_all("x-add").iter().collect::<Vec<_>>(), ["a1", "a2"], "add appends");
    assert!(!first.headers.contains_key("x-drop"), "remove drops");

    let reply = client::get(addr, "/status?full=1", &[]).await.expect("request");
    assert_eq!((reply.status.as_u16(), reply.header("x-origin")), (200, "o"));
    let seen = o.seen();
    let second = seen.last().expect("the origin got it");
    assert_eq!(second.target, "/health?full=1");
    assert_eq!(second.headers["host"], "internal.test");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_redirect_with_every_status_and_answer_directly() {
    let o = origin("o").await;
    let mut toml = Toml::new().listener().upstream("o", &[o.addr()]);
    for status in [301, 302, 303, 307, 308] {
        toml = toml.raw("[[routes]]").raw(&format!(
            "path_prefix = \"/r{status}\"\nredirect = {{ status = {status}, prefix = \"/to\" }}"
        ));
    }
    let toml = toml
        .raw("[[routes]]")
        .raw(
            r#"path = "/moved"
redirect = { scheme = "https", host = "new.test", port = 8443, path = "/here" }"#,
        )
        .raw("[[routes]]")
        .raw(
            r#"path = "/plain"
redirect = { scheme = "https" }"#,
        )
        .raw("[[routes]]")
        .raw(
            r#"path = "/maintenance"
respond = { status = 503, body = "down for maintenance", headers = { retry-after = "120" } }"#,
        )
        .raw("[[routes]]")
        .raw(
            r#"path = "/healthz"
respond = {}"#,
        )
        .route("o")
        .raw("redirect_https = 8443");
    let gw = harness::start(&toml).await.expect("gateway");
    let addr = gw.addrs()[0];
    let port = addr.port();
    for status in [301, 302, 303, 307, 308] {
        let reply = client::get(addr, &format!("/r{status}/a/b?x=1"), &[]).await.expect("request");
        assert_eq!(reply.status.as_u16(), status);
        assert_eq!(
            reply.header("location"),
            format!("http://127.0.0.1:{port}/to/a/b?x=1"),
            "the prefix replaced, the request's own scheme, host, port and query kept"
        );
    }
    let reply = client::get(addr, "/moved?q=2", &[]).await.expect("request");
    assert_eq!((reply.status.as_u16(), reply.header("location")), (302, "https://new.test:8443/here?q=2"));
    let reply = client::get(addr, "/plain", &[("host", "site.test:8080")]).await.expect("request");
    assert_eq!(reply.header("location"), "https://site.test/plain", "a new scheme drops the request's port");
    let reply = client::get(addr, "/maintenance", &[]).await.expect("request");
    assert_eq!((reply.status.as_u16(), reply.text().as_str()), (503, "down for maintenance"));
    assert_eq!(
        (reply.header("retry-after"), reply.header("content-type")),
        ("120", "text/plain; charset=utf-8")
    );
    let reply = client::get(addr, "/healthz", &[]).await.expect("request");
    assert_eq!((reply.status.as_u16(), reply.body.len()), (200, 0));
    let reply = client::get(addr, "/elsewhere?y", &[("host", "site.test")]).await.expect("request");
    assert_eq!(
        (reply.status.as_u16(), reply.header("location")),
        (308, "https://site.test:8443/elsewhere?y"),
        "redirect_https is a redirect too"
    );
    assert_eq!(o.requests(), 0, "no answer above went upstream");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_split_sends_each_side_its_weight_and_a_cookie_keeps_a_client_on_its_side() {
    let (v1, v2) = (origin("v1").await, origin("v2").await);
    let split = r#"backends = [{ upstream = "v1", weight = 90 }, { upstream = "v2", weight = 10 }]"#;
    let toml = Toml::new()
        .listener()
        .upstream("v1", &[v1.addr()])
        .upstream("v2", &[v2.addr()])
        .raw("[[routes]]")
        .raw("path_prefix = \"/sticky\"")
        .raw(split)
        .raw(r#"sticky = { cookie = "wg-side" }"#)
        .raw("[[routes]]")
        .raw("path_prefix = \"/user\"")
        .raw(split)
        .raw(r#"sticky = { header = "x-user" }"#)
        .raw("[[routes]]")
        .raw(split);
    let gw = harness::start(&toml).await.expect("gateway");
    let addr = gw.addrs()[0];
    let http = client::http1();
    let total = 10_000;
    let mut to_v2 = 0;
    for _ in 0..total {
        let request =
            http::Request::get(format!("http://{addr}/")).body(Default::default()).expect("request");
        let reply = client::send(&http, request).await.expect("request");
        to_v2 += usize::from(reply.header("x-origin") == "v2");
    }
    let share = to_v2 as f64 / f64::from(total);
    assert!((0.07..=0.13).contains(&share), "v2 took {share:.4} of the requests, not 10% ± 3%");

    // A client without the cookie gets a side and the cookie naming it; with it, that side.
    let mut sides = std::collections::HashSet::new();
    for _ in 0..40 {
        let first = client::get(addr, "/sticky", &[]).await.expect("request");
        let cookie = first.header("set-cookie").split(';').next().expect("a cookie").to_owned();
        assert!(cookie.starts_with("wg-side="), "{cookie}");
        let side = first.header("x-origin").to_owned();
        for _ in 0..5 {
            let again = client::get(addr, "/sticky", &[("cookie", &format!("a=b; {cookie}"))])
                .await
                .expect("request");
            assert_eq!(again.header("x-origin"), side, "the cookie keeps the client on its side");
            assert_eq!(again.header("set-cookie"), "", "and is not set again");
        }
        sides.insert(side);
    }
    assert_eq!(sides.len(), 2, "new clients are spread over both sides");
    let reply = client::get(addr, "/sticky", &[("cookie", "wg-side=forged")]).await.expect("request");
    assert!(reply.header("set-cookie").starts_with("wg-side="), "an unknown side gets a new cookie");

    // By header: the same user always lands on the same side.
    for user in 0..50 {
        let user = format!("user-{user}");
        let first = client::get(addr, "/user", &[("x-user", &user)]).await.expect("request");
        let again = client::get(addr, "/user", &[("x-user", &user)]).await.expect("request");
        assert_eq!(first.header("x-origin"), again.header("x-origin"), "{user}");
    }
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mirror_sees_every_request_and_a_slow_one_never_slows_the_client() {
    let (primary, shadow) = (origin("primary").await, origin("shadow").await);
    let (mute, _held) = harness::mute_server().await.expect("a mirror that never answers");
    let toml = Toml::new()
        .listener()
        .upstream("primary", &[primary.addr()])
        .upstream("shadow", &[shadow.addr()])
        .upstream("mute", &[mute])
        .route("primary")
        .raw("path_prefix = \"/quiet\"")
        .raw(r#"mirror = { upstream = "mute", max_in_flight = 4, timeout = "30s" }"#)
        .route("primary")
        .raw(r#"mirror = { upstream = "shadow" }"#);
    let gw = harness::start(&toml).await.expect("gateway");
    let addr = gw.addrs()[0];
    let http = client::http1();
    for i in 0..20 {
        let request = http::Request::post(format!("http://{addr}/echo/{i}"))
            .header("x-n", i.to_string())
            .body(http_body_util::Full::new(bytes::Bytes::from(format!("body {i}"))))
            .expect("request");
        let reply = client::send(&http, request).await.expect("request");
        assert_eq!(
            (reply.status.as_u16(), reply.header("x-origin")),
            (200, "primary"),
            "the primary answers"
        );
    }
    harness::wait_until("the mirror saw every request", || shadow.requests() == 20).await;
    let seen = shadow.seen();
    for i in 0..20 {
        let copy = seen.iter().find(|s| s.target == format!("/echo/{i}")).expect("copied");
        assert_eq!(
            (copy.method.as_str(), copy.headers["x-n"].to_str().ok()),
            ("POST", Some(i.to_string().as_str()))
        );
    }

    // A mirror that never answers: the client's requests go at the primary's pace, and copies
    // beyond the four in flight are dropped, not queued.
    let started = std::time::Instant::now();
    for _ in 0..30 {
        let reply = client::get(addr, "/quiet", &[]).await.expect("request");
        assert_eq!(
            reply.header("x-origin"),
            "primary",
            "{} {}",
            reply.status,
            reply.header("x-wasmgate-error")
        );
    }
    let took = started.elapsed();
    assert!(took < std::time::Duration::from_secs(20), "30 requests took {took:?}");
    let metrics = gw.runtime().metrics().render(None);
    let count = |outcome: &str| {
        metrics
            .lines()
            .find(|l| {
                l.starts_with("wasmgate_mirror_requests_total")
                    && l.contains("route=\"route-0\"")
                    && l.contains(&format!("outcome=\"{outcome}\""))
            })
            .and_then(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .unwrap_or(0)
    };
    assert_eq!(count("dropped"), 26, "four in flight, the rest dropped:\n{metrics}");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_route_hands_a_plugin_its_own_config_from_one_pool() {
    let o = origin("o").await;
    let toml = Toml::new()
        .listener()
        .upstream("o", &[o.addr()])
        .plugin("tag", wasm::ADD_HEADER, r#"{ response = { x-all = "1" } }"#)
        .raw("instances = 2")
        .plugin("limit", wasm::RATE_LIMIT, "{ rate = 1000 }")
        .plugin("old", wasm::CONTRACT_0_1_0, "")
        .route("o")
        .raw("name = \"gold\"\npath_prefix = \"/gold\"")
        .raw(r#"plugins = [{ name = "tag", config = { response = { x-tier = "gold" } } }, "limit"]"#)
        .route("o")
        .raw("name = \"silver\"\npath_prefix = \"/silver\"")
        .raw(r#"plugins = [{ name = "tag", config = { response = { x-tier = "silver" } } }]"#)
        .route("o")
        .raw("name = \"slow\"\npath_prefix = \"/slow-lane\"")
        .raw(r#"plugins = [{ name = "limit", config = { rate = 0.001, burst = 2 } }]"#)
        .route("o")
        .raw("name = \"legacy\"\npath_prefix = \"/legacy\"\nplugins = [\"old\"]")
        .route("o")
        .raw("name = \"plain\"\nplugins = [\"tag\"]");
    let gw = harness::start(&toml).await.expect("gateway");
    let addr = gw.addrs()[0];
    for (path, tier) in [("/gold", "gold"), ("/silver", "silver"), ("/", ""), ("/gold/x", "gold")] {
        let reply = client::get(addr, path, &[]).await.expect("request");
        assert_eq!(
            (reply.status.as_u16(), reply.header("x-all"), reply.header("x-tier")),
            (200, "1", tier),
            "{path}"
        );
    }
    // The instances made at load serve every route: no pool per route.
    let tag = gw.gateway().plugin("tag").expect("loaded").stats();
    assert_eq!(tag.instances_created, 2);

    // The route's own limit, in buckets of its own: two pass, the third is over it, while the
    // plugin's own limit (1000/s) lets the same client through on another route.
    let statuses: Vec<u16> = {
        let mut statuses = Vec::new();
        for _ in 0..3 {
            statuses.push(client::get(addr, "/slow-lane", &[]).await.expect("request").status.as_u16());
        }
        statuses
    };
    assert_eq!(statuses, [200, 200, 429]);
    assert_eq!(client::get(addr, "/gold", &[]).await.expect("request").status.as_u16(), 200);

    // A component built against the 0.1.0 contract still loads and runs on this host.
    let reply = client::get(addr, "/legacy", &[]).await.expect("request");
    assert_eq!((reply.status.as_u16(), reply.header("x-contract")), (200, "0.1.0"));
    let seen = o.seen();
    let legacy = seen.iter().find(|s| s.target == "/legacy").expect("forwarded");
    assert_eq!(legacy.headers.get("x-contract-route").and_then(|v| v.to_str().ok()), Some("legacy"));
    gw.stop().await;
}

#[test]
fn check_refuses_a_routes_plugin_config_the_plugin_refuses_naming_the_route() {
    let dir = harness::TempDir::new("route-plugin-config").expect("dir");
    let base = Toml::new()
        .listener()
        .upstream("o", &[harness::closed_port()])
        .plugin("tag", wasm::ADD_HEADER, "")
        .plugin("old", wasm::CONTRACT_0_1_0, "");
    let refused = [
        (
            r#"plugins = ["old", { name = "tag", config = { response = { "x bad" = "1" } } }]"#,
            "routes[1].plugins[1].config",
            "plugin `tag` rejected the config of route `web`: response header \"x bad\": the name is not an RFC 9110 token",
        ),
        (
            r#"plugins = [{ name = "tag", config = { reponse = {} } }]"#,
            "routes[1].plugins[0].config",
            "unknown field `reponse`",
        ),
        (
            r#"plugins = [{ name = "old", config = { a = 1 } }]"#,
            "routes[1].plugins[0].config",
            "takes no per-route config",
        ),
    ];
    for (plugins, field, reason) in refused {
        let toml = base
            .clone()
            .route("o")
            .raw("name = \"api\"\npath_prefix = \"/api\"")
            .route("o")
            .raw("name = \"web\"")
            .raw(plugins);
        let (ok, _, err) = harness::check(dir.path(), &toml).expect("check");
        assert!(!ok && err.contains(field) && err.contains(reason), "{plugins}: {err}");
    }
    let twice = base.clone().route("o").raw("name = \"a\"").route("o").raw("name = \"a\"");
    let (ok, _, err) = harness::check(dir.path(), &twice).expect("check");
    assert!(!ok && err.contains("routes[1].name") && err.contains("named like routes[0]"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_canary_takes_its_share_of_clients_and_is_rolled_back_when_it_traps() {
    let o = origin("o").await;
    let dir = harness::TempDir::new("canary").expect("dir");
    let canary = |path: &str, config: &str| {
        format!(
            r#"canary = {{ path = "{path}", weight = 10, key = "header:x-user", config = {config}, min_calls = 10, max_fault_rate = 0.5 }}"#
        )
    };
    let toml = Toml::new()
        .listener()
        .upstream("o", &[o.addr()])
        .plugin("tag", wasm::ADD_HEADER, r#"{ response = { x-version = "v1" } }"#)
        .raw("instances = 4")
        .raw(&canary(wasm::ADD_HEADER, r#"{ response = { x-version = "v2" } }"#))
        .plugin("guard", wasm::ADD_HEADER, r#"{ response = { x-guarded = "1" } }"#)
        .raw("instances = 4")
        .raw(&canary(wasm::MISBEHAVE, r#"{ mode = "trap" }"#))
        .route("o")
        .raw("name = \"guarded\"\npath_prefix = \"/bad\"\nplugins = [\"guard\"]")
        .route("o")
        .raw("name = \"main\"\nplugins = [\"tag\"]")
        .raw("[log]\nformat = \"json\"\naccess = true\naccess_fields = [\"path\", \"status\", \"canary\"]");
    let gw = harness::GatewayProcess::start(dir.path(), &toml).expect("gateway");
    let user = |i: usize| format!("user-{i}");

    // A tenth of the clients run v2, and each keeps the version it got.
    let mut versions = Vec::new();
    for i in 0..1_000 {
        let reply = client::get(gw.addr, "/", &[("x-user", &user(i))]).await.expect("request");
        assert_eq!(reply.status, 200);
        versions.push(reply.header("x-version").to_owned());
    }
    let on_v2 = versions.iter().filter(|v| *v == "v2").count();
    assert!((70..=130).contains(&on_v2), "{on_v2} of 1000 clients on the canary");
    for (i, version) in versions.iter().enumerate().take(200) {
        let reply = client::get(gw.addr, "/", &[("x-user", &user(i))]).await.expect("request");
        assert_eq!(reply.header("x-version"), version, "client {i} keeps its version");
    }
    let v2_user = versions.iter().position(|v| v == "v2").expect("a client on the canary");
    harness::wait_until("the access log names the canary", || {
        gw.log_lines("wasmgate::access").iter().any(|l| l.contains(r#""canary":"tag@canary""#))
    })
    .await;
    assert!(gw.log_lines(r#""canary":"-""#).len() >= 900, "the other clients ran no canary");

    // A canary that traps (the guest faults on `/bad`) fails its own clients' requests
    // (fail-closed) until more than half of its calls (at least ten) have faulted; then it is
    // rolled back and every client runs the plugin's own version.
    let mut failed = Vec::new();
    for i in 0..400 {
        let reply = client::get(gw.addr, "/bad", &[("x-user", &user(i))]).await.expect("request");
        match reply.status.as_u16() {
            200 => assert_eq!(reply.header("x-guarded"), "1"),
            500 => failed.push(i),
            other => panic!("client {i}: {other} {}", reply.header("x-wasmgate-error")),
        }
    }
    let on_canary: Vec<usize> = (0..400).filter(|&i| versions[i] == "v2").collect();
    assert!(failed.iter().all(|i| on_canary.contains(i)), "only the canary's clients fail: {failed:?}");
    assert!((5..=10).contains(&failed.len()), "{failed:?}");
    let after = on_canary.iter().filter(|&&i| i > failed[failed.len() - 1]).count();
    assert!(after >= 20, "{after} of the canary's clients came after the rollback");
    let rolled_back = gw.log_lines("canary rolled back");
    assert_eq!(rolled_back.len(), 1, "{rolled_back:?}");
    let faults = format!(r#""faults":{}"#, failed.len());
    assert!(rolled_back[0].contains("guard@canary") && rolled_back[0].contains(&faults), "{rolled_back:?}");
    let reply = client::get(gw.addr, "/bad", &[("x-user", &user(v2_user))]).await.expect("request");
    assert_eq!((reply.status.as_u16(), reply.header("x-guarded")), (200, "1"));
    // The healthy canary is still on.
    let reply = client::get(gw.addr, "/", &[("x-user", &user(v2_user))]).await.expect("request");
    assert_eq!(reply.header("x-version"), "v2");
}

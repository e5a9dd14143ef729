//! Routes end to end: exact paths, path patterns, several hosts, header and query conditions,
//! each on and off; path and host rewrites and header edits both ways, through the gateway to
//! real origins; and `wasmgate check` warning of a route an earlier one makes unreachable and
//! refusing bad route options.

use wasmgate_example_origin::Origin;
use wasmgate_tests::client;
use wasmgate_tests::harness::{self, Toml};

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

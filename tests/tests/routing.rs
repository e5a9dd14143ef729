//! Route matching end to end: exact paths, path patterns, several hosts, header and query
//! conditions, each on and off, through the gateway to real origins; and `wasmgate check`
//! warning of a route an earlier one makes unreachable.

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
fn check_warns_of_a_route_that_can_never_match_and_refuses_a_bad_pattern() {
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
    let (ok, _, err) =
        harness::check(dir.path(), &base.route("o").raw(r#"path_regex = "/users/(""#)).expect("check");
    assert!(!ok && err.contains("routes[0].path_regex") && err.contains("is not a valid pattern"), "{err}");
}

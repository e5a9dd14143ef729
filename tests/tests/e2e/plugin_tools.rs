//! The plugin author's tools and the operator's guards around plugins: `wasmgate plugin
//! inspect` and `plugin test` (the real binary), a route's `record` replayed by `plugin test`,
//! the `sha256` pin, and pools sized by what a component holds.

use std::path::Path;
use std::process::Command;

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use sha2::{Digest, Sha256};
use wasmgate::server::Running;
use wasmgate_example_origin::Origin;
use wasmgate_tests::client::{self, Reply};
use wasmgate_tests::harness::{self, TempDir};
use wasmgate_tests::polyglot::{self, Language};
use wasmgate_tests::wasm;

/// Runs `wasmgate plugin ARGS`; returns (success, stdout, stderr).
fn plugin_tool(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(harness::wasmgate_bin().expect("binary"))
        .arg("plugin")
        .args(args)
        .env("NO_COLOR", "1")
        .env("XDG_CACHE_HOME", harness::cache_dir())
        .output()
        .expect("runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn sha256_of(path: &str) -> String {
    let bytes = std::fs::read(path).expect("component");
    Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect()
}

async fn get(gw: &Running, path: &str, headers: &[(&str, &str)]) -> Reply {
    let mut request = Request::builder().uri(format!("http://{}{path}", gw.addrs()[0]));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    client::send(&client::http1(), request.body(Full::new(Bytes::new())).expect("request"))
        .await
        .expect("response")
}

#[test]
fn inspect_reports_the_contract_imports_instance_and_phases() {
    let (ok, out, err) = plugin_tool(&["inspect", wasm::EXAMPLE_QUOTA, "--config", r#"{"limit": 2}"#]);
    assert!(ok, "{out}\n{err}");
    assert!(out.contains(&format!("sha256      {}", sha256_of(wasm::EXAMPLE_QUOTA))), "{out}");
    assert!(out.contains("contract    wasmgate:plugin@0.1.2"), "{out}");
    assert!(out.contains("phases      request-headers, response-headers"), "{out}");
    assert!(out.contains("instance    3 core instances"), "{out}");
    assert!(out.contains("  provided  wasmgate:plugin/store@0.1.2"), "{out}");
    assert!(!out.contains("MISSING"), "{out}");

    // Built against the first contract, and still loading.
    let (ok, out, err) = plugin_tool(&["inspect", wasm::CONTRACT_0_1_0]);
    assert!(ok, "{out}\n{err}");
    assert!(out.contains("contract    wasmgate:plugin@0.1.0"), "{out}");

    // A config its `init` refuses: the report says why, and the command fails.
    let (ok, out, _) = plugin_tool(&["inspect", wasm::EXAMPLE_QUOTA, "--config", "{}"]);
    assert!(!ok);
    assert!(out.contains("loads       no:") && out.contains("missing field `limit`"), "{out}");

    // Not a component at all.
    let dir = TempDir::new("inspect").expect("dir");
    let junk = dir.path().join("junk.wasm");
    std::fs::write(&junk, b"not wasm").expect("write");
    let (ok, _, err) = plugin_tool(&["inspect", junk.to_str().expect("utf-8")]);
    assert!(!ok && err.contains("junk.wasm: not a WebAssembly component"), "{err}");
}

#[test]
fn plugin_test_says_what_the_plugin_did_and_fails_on_a_broken_expectation() {
    let dir = TempDir::new("plugin-test").expect("dir");
    let requests = dir.path().join("requests.jsonl");
    let config = r#"{"request": {"x-lang": "rust"}, "response": {"x-added": "yes"}}"#;
    std::fs::write(
        &requests,
        concat!(
            r#"{"path": "/a", "headers": {"x-lang": "python"}, "expect": {"status": 200, "request_headers": {"x-lang": "rust"}, "response_headers": {"x-added": "yes"}}}"#,
            "\n\n// a comment\n",
            r#"{"method": "POST", "path": "/b", "response": {"status": 201, "body": "made"}, "expect": {"status": 201, "body": "made"}}"#,
            "\n",
        ),
    )
    .expect("write");
    let path = requests.to_str().expect("utf-8");
    let (ok, out, err) =
        plugin_tool(&["test", wasm::EXAMPLE_ADD_HEADER, "--config", config, "--requests", path]);
    assert!(ok, "{out}\n{err}");
    assert!(out.contains("line 1: GET /a\n  request-headers: set x-lang: rust\n"), "{out}");
    assert!(out.contains("  response-headers: set x-added: yes\n"), "{out}");
    assert!(out.contains("line 4: POST /b"), "{out}");
    assert!(out.contains("2 requests, 0 failed"), "{out}");

    std::fs::write(
        &requests,
        r#"{"path": "/", "expect": {"status": 204, "response_headers": {"x-added": null}}}"#,
    )
    .expect("write");
    let (ok, out, _) =
        plugin_tool(&["test", wasm::EXAMPLE_ADD_HEADER, "--config", config, "--requests", path]);
    assert!(!ok);
    assert!(out.contains("FAILED status: expected 204, got 200"), "{out}");
    assert!(out.contains(r#"FAILED response header x-added: expected absent, got "yes""#), "{out}");
    assert!(out.contains("1 requests, 1 failed"), "{out}");

    // The same harness from Rust, in process: what a plugin's own tests call.
    let outcome = wasmgate::toolkit::rehearsal::run_lines(
        Path::new(wasm::EXAMPLE_QUOTA),
        r#"{"limit": 1}"#,
        "{\"path\": \"/\", \"expect\": {\"status\": 200}}\n{\"path\": \"/\", \"expect\": {\"status\": 429}}",
        Path::new("inline"),
    );
    let outcome = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio")
        .block_on(outcome)
        .expect("runs");
    assert_eq!((outcome.run, outcome.failed), (2, 0), "{}", outcome.text);
    assert!(outcome.text.contains("  store: increment ×1"), "{}", outcome.text);

    std::fs::write(&requests, "{\"path\": \"/\"}\n{\"paths\": \"/\"}\n").expect("write");
    let (ok, _, err) = plugin_tool(&["test", wasm::EXAMPLE_ADD_HEADER, "--requests", path]);
    assert!(!ok && err.contains("requests.jsonl:2: unknown field `paths`"), "{err}");
}

#[tokio::test]
async fn a_route_records_a_sample_of_its_requests_that_plugin_test_replays() {
    let origin = Origin::start("o", "127.0.0.1:0".parse().expect("addr"), None).await.expect("origin");
    let dir = TempDir::new("record").expect("dir");
    let file = dir.path().join("recorded.jsonl");
    let route = format!(
        r#"plugins = ["quota"]
record = {{ path = "{}", share = 0.5, max_body = 8 }}"#,
        file.display()
    );
    let toml = harness::one_backend(origin.addr(), &route).plugin(
        "quota",
        wasm::EXAMPLE_QUOTA,
        r#"{ limit = 100, key_header = "x-api-key" }"#,
    );
    let gw = harness::start(&toml).await.expect("gateway");
    for i in 0..4 {
        let path = format!("/items?n={i}");
        let reply = get(&gw, &path, &[("x-api-key", "alpha"), ("authorization", "Bearer secret")]).await;
        assert_eq!(reply.status, 200);
    }
    harness::wait_until("two lines recorded", || {
        std::fs::read_to_string(&file).is_ok_and(|text| text.lines().count() == 2)
    })
    .await;
    gw.stop().await;
    let text = std::fs::read_to_string(&file).expect("recorded");
    assert!(!text.contains("secret"), "the authorization header is redacted:\n{text}");
    let first: serde_json::Value = serde_json::from_str(text.lines().next().expect("a line")).expect("JSON");
    assert_eq!(first["path"], "/items?n=0", "{first}");
    assert_eq!(first["headers"]["authorization"], "[redacted]", "{first}");
    assert_eq!(first["headers"]["x-api-key"], "alpha", "{first}");
    // The upstream's head, before the plugin added its header; the body as sent, cut at 8 bytes.
    assert_eq!(first["response"]["status"], 200, "{first}");
    assert_eq!(first["response"]["headers"]["x-origin"], "o", "{first}");
    assert!(first["response"]["headers"].get("x-quota-remaining").is_none(), "{first}");
    assert!(first["response"]["body"].as_str().is_some_and(|b| b.len() <= 8), "{first}");
    assert_eq!(first["expect"]["status"], 200, "{first}");

    // The recording replays against the plugin as the file says.
    let path = file.to_str().expect("utf-8");
    let (ok, out, err) = plugin_tool(&[
        "test",
        wasm::EXAMPLE_QUOTA,
        "--config",
        r#"{"limit": 1, "key_header": "x-api-key"}"#,
        "--requests",
        path,
    ]);
    assert!(!ok, "a limit of 1 refuses the second recorded request:\n{out}\n{err}");
    assert!(out.contains("line 2: GET /items?n=2\n  request-headers: answered 429"), "{out}");
    assert!(out.contains("FAILED status: expected 200, got 429"), "{out}");
}

#[tokio::test]
async fn a_pinned_plugin_with_other_content_is_refused_at_start_check_and_reload() {
    let origin = Origin::start("o", "127.0.0.1:0".parse().expect("addr"), None).await.expect("origin");
    let pinned = |path: &str, hash: &str| {
        harness::one_backend(origin.addr(), r#"plugins = ["p"]"#)
            .plugin("p", path, r#"{ request = { "x-lang" = "rust" } }"#)
            .raw(&format!(r#"sha256 = "{hash}""#))
    };
    let right = sha256_of(wasm::EXAMPLE_ADD_HEADER);
    let gw = harness::start(&pinned(wasm::EXAMPLE_ADD_HEADER, &right)).await.expect("the pinned file starts");

    let other = sha256_of(wasm::ADD_HEADER);
    let error = harness::start(&pinned(wasm::ADD_HEADER, &right)).await.map(|_| ()).expect_err("refused");
    let message = format!("{error:#}");
    assert!(
        message.contains(&format!("has SHA-256 {other}, not the {right} that `plugins.p.sha256` pins")),
        "{message}"
    );

    let dir = TempDir::new("pinned").expect("dir");
    let toml = format!("{}\n{}", &*pinned(wasm::ADD_HEADER, &right), harness::runtime_section());
    let (ok, _, err) = harness::check(dir.path(), &toml).expect("check runs");
    assert!(!ok && err.contains("plugins.p") && err.contains("pins"), "{err}");

    // A reload to a file that is not the pinned one changes nothing; the gateway keeps serving.
    let refused = gw.reload(harness::config(&pinned(wasm::ADD_HEADER, &right)).expect("config")).await;
    assert!(refused.is_err());
    assert_eq!(get(&gw, "/", &[]).await.status, 200);

    let error = harness::config(&pinned(wasm::ADD_HEADER, "abc")).map(|_| ()).expect_err("not a hash");
    assert!(format!("{error:#}").contains("plugins.p.sha256"), "{error:#}");
    gw.stop().await;
}

#[tokio::test]
async fn a_pool_the_allocator_cannot_hold_is_refused_with_the_numbers() {
    let origin = Origin::start("o", "127.0.0.1:0".parse().expect("addr"), None).await.expect("origin");
    // The tests' runtime has 64 slots: 512 core instances. A Python instance holds 14.
    let python = polyglot::example("add-header", Language::Python).expect("built");
    let python = python.to_str().expect("utf-8");
    let toml = harness::one_backend(origin.addr(), r#"plugins = ["p"]"#)
        .plugin("p", python, "{}")
        .raw("instances = 40");
    let message = format!("{:#}", harness::start(&toml).await.map(|_| ()).expect_err("refused"));
    assert!(message.contains("`instances = 40` (plus one being replaced) needs 574 core instances (14 each) of the 512 reserved"), "{message}");
    assert!(message.contains("lower `plugins.p.instances` or raise `runtime.instance_slots`"), "{message}");

    // Each fits alone; together they do not.
    let toml = harness::one_backend(origin.addr(), r#"plugins = ["a", "b"]"#)
        .plugin("a", python, "{}")
        .raw("instances = 30")
        .plugin("b", python, "{}")
        .raw("instances = 20");
    let message = format!("{:#}", harness::start(&toml).await.map(|_| ()).expect_err("refused"));
    assert!(
        message.contains("runtime.instance_slots") && message.contains("728 core instances"),
        "{message}"
    );
}

//! What a plugin can make the host hold is bounded: the real binary, with the `misbehave` guest
//! trying to pass each bound (store bytes, local response bodies, log lines), gets the
//! documented answer while the gateway's peak memory stays flat; a guest that loops is stopped at
//! its deadline, and one that reaches for the filesystem, environment or network gets nothing.

use std::time::{Duration, Instant};

use wasmgate_example_origin::Origin;
use wasmgate_tests::client;
use wasmgate_tests::harness::{self, GatewayProcess, Toml};
use wasmgate_tests::wasm;

/// A gateway whose one route runs `misbehave` in `mode`, with `limits` in its plugin table.
async fn gateway(name: &str, mode: &str, limits: &str) -> (GatewayProcess, Origin, harness::TempDir) {
    let origin = Origin::start("o", "127.0.0.1:0".parse().expect("addr"), None).await.expect("origin");
    let dir = harness::TempDir::new(name).expect("dir");
    let toml = Toml::new()
        .listener()
        .upstream("o", &[origin.addr()])
        .route("o")
        .raw(r#"plugins = ["m"]"#)
        .plugin("m", wasm::MISBEHAVE, &format!(r#"{{ mode = "{mode}" }}"#))
        // Generous: a busy machine must not turn a slow call into a deadline fault.
        .raw("deadline = \"2s\"")
        .raw(limits);
    let gw = GatewayProcess::start(dir.path(), &toml).expect("gateway");
    (gw, origin, dir)
}

async fn get(gw: &GatewayProcess, path: &str) -> client::Reply {
    client::get(gw.addr, path, &[]).await.expect("request")
}

/// Peak resident memory, in KiB.
fn peak_kib(gw: &GatewayProcess) -> u64 {
    gw.memory_kib().expect("memory").0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_filling_the_store_drops_its_own_oldest_entries_and_memory_stays_flat() {
    let (gw, _origin, _dir) = gateway("store-flood", "store-flood", r#"store_max_bytes = "4MiB""#).await;
    // Past the share's bound already (each request stores 2 MiB).
    for _ in 0..4 {
        assert_eq!(get(&gw, "/bad").await.text(), "stored 32 refused 0");
    }
    let before = peak_kib(&gw);
    for _ in 0..150 {
        // Every set succeeds: room is made from the plugin's own oldest entries.
        assert_eq!(get(&gw, "/bad").await.text(), "stored 32 refused 0");
    }
    let growth = peak_kib(&gw).saturating_sub(before);
    eprintln!("peak RSS {before} KiB, +{growth} KiB after storing 300 MiB into a 4 MiB share");
    assert!(growth < 8 * 1024, "peak memory grew by {growth} KiB");
    assert_eq!(get(&gw, "/ok").await.status, 200, "the plugin still serves");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_response_over_max_local_body_fails_the_plugin_and_memory_stays_flat() {
    // One instance: its linear memory, where the guest builds each body, is counted once.
    let limits = "max_local_body = \"1MiB\"\ninstances = 1";
    let (gw, origin, _dir) = gateway("big-reply", "big-reply", limits).await;
    let fits = get(&gw, "/bad/1048576").await;
    assert_eq!((fits.status.as_u16(), fits.body.len()), (200, 1 << 20));
    let over = get(&gw, "/bad/1048577").await;
    assert_eq!((over.status.as_u16(), over.header("x-wasmgate-error")), (500, "plugin-invalid-value"));
    // Warm: the instance's memory has held the largest body once.
    assert_eq!(get(&gw, "/bad/4194304").await.status, 500);
    let before = peak_kib(&gw);
    for _ in 0..40 {
        let over = get(&gw, "/bad/4194304").await;
        assert_eq!((over.status.as_u16(), over.header("x-wasmgate-error")), (500, "plugin-invalid-value"));
    }
    let growth = peak_kib(&gw).saturating_sub(before);
    eprintln!("peak RSS {before} KiB, +{growth} KiB after 40 local bodies of 4 MiB refused");
    assert!(growth < 8 * 1024, "peak memory grew by {growth} KiB");
    assert!(!gw.log_lines("over max_local_body (1048576 bytes)").is_empty(), "the log says why");
    assert_eq!(get(&gw, "/ok").await.status, 200);
    assert_eq!(origin.requests(), 1, "only the ordinary request went upstream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_log_lines_are_cut_and_rate_limited_and_memory_stays_flat() {
    const RATE: u64 = 20;
    let (gw, _origin, _dir) = gateway("log-flood", "log-flood", &format!("log_rate = {RATE}")).await;
    let started = Instant::now();
    assert_eq!(get(&gw, "/bad").await.text(), "logged");
    let before = peak_kib(&gw);
    for _ in 0..10 {
        assert_eq!(get(&gw, "/bad").await.text(), "logged");
    }
    let growth = peak_kib(&gw).saturating_sub(before);
    // Let the bucket fill again, so that the next line reports the drops.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let elapsed = started.elapsed().as_secs();
    assert_eq!(get(&gw, "/bad").await.text(), "logged");
    let marker = "l".repeat(64);
    harness::wait_until("the plugin's lines in the log", || gw.log_lines("lines dropped").len() == 1).await;
    let written = gw.log_lines(&marker);
    // One second of burst, then RATE a second, out of 12 × 200 lines tried.
    let most = RATE * (2 + elapsed + 1);
    assert!(
        (RATE as usize..=most as usize).contains(&written.len()),
        "{} lines written in {elapsed} s",
        written.len()
    );
    for line in &written {
        assert!(line.len() < 4096 + 512, "a line of {} bytes", line.len());
        assert!(line.contains("[cut]"), "a cut line says so");
    }
    let dropped = &gw.log_lines("lines dropped")[0];
    assert!(dropped.contains("dropped="), "{dropped}");
    eprintln!("peak RSS {before} KiB, +{growth} KiB after 2000 log lines of 64 KiB tried");
    assert!(growth < 8 * 1024, "peak memory grew by {growth} KiB");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_a_plugin_prints_goes_to_the_log_as_its_lines_within_its_rate() {
    const RATE: u64 = 20;
    let (gw, _origin, _dir) = gateway("print", "print", &format!("log_rate = {RATE}")).await;
    assert_eq!(get(&gw, "/bad/first").await.text(), "printed");
    harness::wait_until("the printed lines in the log", || !gw.log_lines("printed to stderr").is_empty())
        .await;
    let stdout = gw.log_lines("printed to stdout by /bad/first");
    assert_eq!(stdout.len(), 1, "{stdout:?}");
    assert!(
        stdout[0].contains("INFO")
            && stdout[0].contains(r#"plugin="m""#)
            && stdout[0].contains("stream=\"stdout\""),
        "{}",
        stdout[0]
    );
    let stderr = &gw.log_lines("printed to stderr")[0];
    assert!(stderr.contains("WARN") && stderr.contains("stream=\"stderr\""), "{stderr}");
    let long = gw.log_lines(&"p".repeat(64));
    assert_eq!(long.len(), 1);
    assert!(long[0].len() < 4096 + 512 && long[0].contains("[cut]"), "a line of {} bytes", long[0].len());
    // 203 lines tried: one second's burst of RATE went, the rest were dropped.
    let flood = gw.log_lines("flood ");
    assert!(flood.len() as u64 <= 2 * RATE, "{} flood lines written", flood.len());
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(get(&gw, "/bad/again").await.text(), "printed");
    harness::wait_until("the drops reported", || !gw.log_lines("lines dropped").is_empty()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_looping_plugin_is_stopped_at_its_deadline_and_fails_by_its_policy() {
    let origin = Origin::start("o", "127.0.0.1:0".parse().expect("addr"), None).await.expect("origin");
    let looping = r#"{ mode = "loop" }"#;
    let toml = Toml::new()
        .listener()
        .upstream("o", &[origin.addr()])
        .route("o")
        .raw("path_prefix = \"/open\"\nplugins = [\"lenient\"]")
        .route("o")
        .raw("plugins = [\"strict\"]")
        .plugin("strict", wasm::MISBEHAVE, looping)
        .raw("deadline = \"20ms\"")
        .plugin("lenient", wasm::MISBEHAVE, looping)
        .raw("deadline = \"20ms\"\nfailure = \"fail-open\"");
    let gw = harness::start(&toml).await.expect("gateway");
    let addr = gw.addrs()[0];
    let stopped = client::get(addr, "/bad", &[]).await.expect("request");
    assert_eq!((stopped.status.as_u16(), stopped.header("x-wasmgate-error")), (500, "plugin-deadline"));
    // Fail-open: the plugin is skipped, the request served.
    let skipped = client::get(addr, "/open/bad", &[]).await.expect("request");
    assert_eq!((skipped.status.as_u16(), skipped.header("x-wasmgate-error")), (200, ""));
    assert_eq!(client::get(addr, "/ok", &[]).await.expect("request").status, 200, "the next call is served");
    assert_eq!(origin.requests(), 2);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_reaches_no_filesystem_environment_or_network() {
    let origin = Origin::start("o", "127.0.0.1:0".parse().expect("addr"), None).await.expect("origin");
    let toml = harness::one_backend(origin.addr(), r#"plugins = ["m"]"#).plugin(
        "m",
        wasm::MISBEHAVE,
        r#"{ mode = "sandbox" }"#,
    );
    let gw = harness::start(&toml).await.expect("gateway");
    // A port that listens: only the sandbox can stop the connection.
    let port = origin.addr().port().to_string();
    let reply = client::get(gw.addrs()[0], "/bad", &[("x-port", &port)]).await.expect("request");
    assert_eq!(reply.text(), "fs-list=denied fs-read=denied fs-write=denied env=0 net=denied");
    assert!(!std::path::Path::new("/tmp/wasmgate-sandbox").exists());
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outbound_response_over_one_mib_is_refused_to_the_plugin() {
    let origin = Origin::start("o", "127.0.0.1:0".parse().expect("addr"), None).await.expect("origin");
    let toml = harness::one_backend(origin.addr(), r#"plugins = ["m"]"#)
        .plugin("m", wasm::MISBEHAVE, r#"{ mode = "outbound-big" }"#)
        .raw("deadline = \"2s\"");
    let gw = harness::start(&toml).await.expect("gateway");
    let addr = gw.addrs()[0];
    let fits = client::get(addr, "/bad/1048576", &[]).await.expect("request");
    assert_eq!(fits.text(), "ok 1048576");
    for _ in 0..20 {
        let over = client::get(addr, "/bad/8388608", &[]).await.expect("request");
        assert_eq!(over.text(), "err outbound response too large");
    }
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_choices_are_checked_and_request_state_never_reaches_the_next_request() {
    let origin = Origin::start("o", "127.0.0.1:0".parse().expect("addr"), None).await.expect("origin");
    let toml = Toml::new()
        .listener()
        .upstream("o", &[origin.addr()])
        .route("o")
        .raw("path_prefix = \"/bad\"\nplugins = [\"choice\"]")
        .route("o")
        .raw("plugins = [\"state\"]")
        .plugin("choice", wasm::MISBEHAVE, r#"{ mode = "bad-choice" }"#)
        .plugin("state", wasm::MISBEHAVE, r#"{ mode = "state-leak" }"#)
        // One instance: the next request runs on the very instance that kept the state.
        .raw("instances = 1");
    let gw = harness::start(&toml).await.expect("gateway");
    let addr = gw.addrs()[0];
    for path in ["/bad/backend", "/bad/group", "/bad/group-backend"] {
        let reply = client::get(addr, path, &[]).await.expect("request");
        assert_eq!(
            (reply.status.as_u16(), reply.header("x-wasmgate-error")),
            (500, "plugin-invalid-value"),
            "{path}"
        );
    }
    assert_eq!(origin.requests(), 0, "a refused choice went upstream");
    assert_eq!(client::get(addr, "/bad/fine", &[]).await.expect("request").status, 200);
    let set = client::get(addr, "/set", &[]).await.expect("request");
    assert_eq!(set.header("x-state"), "from /set", "the state lasts through its own request");
    let next = client::get(addr, "/next", &[]).await.expect("request");
    assert_eq!(next.header("x-state"), "missing", "one request's state reached the next");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_cannot_grow_a_head_past_256_fields() {
    let origin = Origin::start("o", "127.0.0.1:0".parse().expect("addr"), None).await.expect("origin");
    let toml = harness::one_backend(origin.addr(), r#"plugins = ["m"]"#).plugin(
        "m",
        wasm::MISBEHAVE,
        r#"{ mode = "many-headers" }"#,
    );
    let gw = harness::start(&toml).await.expect("gateway");
    // The request brings Host; the plugin may add fields up to 256 in all.
    let reply = client::get(gw.addrs()[0], "/bad", &[]).await.expect("request");
    assert_eq!(reply.text(), "refused 45");
    gw.stop().await;
}

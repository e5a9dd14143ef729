//! The plugin runtime on its own: real compiled plugins and test guests, called phase by phase
//! through `wasmgate::plugin`, with no HTTP in between.

use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmgate::plugin::{
    Action, Choice, Exchange, Isolation, LogEntry, Logged, Plugin, PluginError, PluginSpec, Runtime,
    RuntimeConfig,
};
use wasmgate_tests::{harness, wasm};

fn runtime() -> Runtime {
    harness::init_tracing();
    Runtime::new(&RuntimeConfig {
        cache_dir: Some(harness::cache_dir()),
        instance_slots: 64,
        ..Default::default()
    })
    .expect("engine")
}

fn spec(name: &str, path: &str, config: &str) -> PluginSpec {
    let mut spec = PluginSpec::new(name, path);
    spec.config_json = config.to_owned();
    spec.instances = 2;
    spec
}

fn misbehave(mode: &str) -> PluginSpec {
    spec(mode, wasm::MISBEHAVE, &format!(r#"{{"mode":"{mode}"}}"#))
}

/// An exchange for `GET path` on a route whose group has two backends.
fn exchange(path: &str) -> Box<Exchange> {
    harness::exchange(path, &[("x-in", "hello")])
}

async fn load(rt: &Runtime, spec: &PluginSpec) -> Plugin {
    rt.load(spec).await.unwrap_or_else(|e| panic!("load {}: {e}", spec.name))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_phase_is_called_with_state_kept_between_phases() {
    let rt = runtime();
    let plugin = load(&rt, &misbehave("phases")).await;
    let mut ex = exchange("/ok");

    assert!(matches!(plugin.on_request_headers(&mut ex).await, Ok(Action::Continue)));
    assert_eq!(ex.request.headers["x-phase"], "request-headers");

    match plugin.select_upstream(&mut ex).await {
        Ok(Choice::Backend(group, 1)) => assert_eq!(&**group.name(), "pair"),
        other => panic!("expected backend 1, got {other:?}"),
    }

    assert!(matches!(plugin.on_upstream_request(&mut ex).await, Ok(Action::Continue)));
    assert_eq!(ex.request.headers["x-upstream-request"], "1");

    ex.response = Some(http::Response::new(()).into_parts().0);
    assert!(matches!(plugin.on_response_headers(&mut ex).await, Ok(Action::Continue)));
    let response = ex.response.as_ref().expect("response");
    assert_eq!(
        response.headers["x-state"], "request-headers",
        "state set in one phase is read in a later one"
    );
    assert_eq!(response.headers["x-request-method"], "GET");

    let entry = LogEntry {
        status: 200,
        duration_us: 10,
        upstream_us: Some(5),
        bytes_in: 0,
        bytes_out: 3,
        backend: Some("127.0.0.1:9002".into()),
        error: None,
    };
    plugin.on_log(&mut ex, &Logged::from(entry)).await.expect("log");
}

#[tokio::test]
async fn a_plugin_only_gets_the_phases_it_declares() {
    let rt = runtime();
    let deny = load(&rt, &spec("deny", wasm::DENY, r#"{"prefixes":["/admin"]}"#)).await;
    use wasmgate::plugin::Phase;
    assert!(deny.has(Phase::RequestHeaders));
    assert!(!deny.has(Phase::SelectUpstream));
    assert!(!deny.has(Phase::ResponseHeaders));
    let rr = load(&rt, &spec("rr", wasm::ROUND_ROBIN, "{}")).await;
    assert!(rr.has(Phase::SelectUpstream));
    assert!(!rr.has(Phase::RequestHeaders));
}

#[tokio::test]
async fn shipped_plugins_work_through_the_runtime() {
    let rt = runtime();
    let deny =
        load(&rt, &spec("deny", wasm::DENY, r#"{"prefixes":["/admin"],"status":403,"body":"no"}"#)).await;
    match deny.on_request_headers(&mut exchange("/admin/users")).await {
        Ok(Action::Respond(reply)) => {
            assert_eq!(reply.status, 403);
            assert_eq!(&reply.body[..], b"no");
        }
        other => panic!("expected a local 403, got {other:?}"),
    }
    assert!(matches!(deny.on_request_headers(&mut exchange("/public")).await, Ok(Action::Continue)));

    let set_host = load(&rt, &spec("set-host", wasm::SET_HOST, r#"{"host":"one.one.one.one"}"#)).await;
    let mut ex = exchange("/");
    set_host.on_upstream_request(&mut ex).await.expect("set-host");
    assert_eq!(ex.request.headers["host"], "one.one.one.one");

    let add =
        load(&rt, &spec("add", wasm::ADD_HEADER, r#"{"request":{"x-a":"1"},"response":{"x-b":"2"}}"#)).await;
    let mut ex = exchange("/");
    add.on_request_headers(&mut ex).await.expect("request");
    assert_eq!(ex.request.headers["x-a"], "1");
    ex.response = Some(http::Response::new(()).into_parts().0);
    add.on_response_headers(&mut ex).await.expect("response");
    assert_eq!(ex.response.as_ref().expect("response").headers["x-b"], "2");

    let mut rr_spec = spec("rr", wasm::ROUND_ROBIN, "{}");
    rr_spec.instances = 1;
    let rr = load(&rt, &rr_spec).await;
    let mut picks = Vec::new();
    for _ in 0..4 {
        match rr.select_upstream(&mut exchange("/")).await {
            Ok(Choice::Backend(_, i)) => picks.push(i),
            other => panic!("expected a backend, got {other:?}"),
        }
    }
    assert_eq!(picks, [0, 1, 0, 1]);
}

#[tokio::test]
async fn a_plugin_that_rejects_its_config_is_refused_with_its_message() {
    let rt = runtime();
    match rt.load(&misbehave("reject-config")).await {
        Err(PluginError::ConfigRejected { plugin, message }) => {
            assert_eq!(plugin, "reject-config");
            assert!(message.contains("refusing this config on purpose"), "{message}");
        }
        other => panic!("expected ConfigRejected, got {other:?}"),
    }
    // A config that does not fit the plugin's config type is refused by the SDK, with serde's words.
    match rt.load(&spec("deny", wasm::DENY, r#"{"prefixes":"not-a-list"}"#)).await {
        Err(PluginError::ConfigRejected { message, .. }) => {
            assert!(message.contains("invalid config"), "{message}")
        }
        other => panic!("expected ConfigRejected, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_looping_guest_is_stopped_at_its_deadline_and_its_instance_replaced() {
    let rt = runtime();
    let mut spec = misbehave("loop");
    spec.deadline = Duration::from_millis(50);
    let plugin = load(&rt, &spec).await;
    let started = Instant::now();
    let result = plugin.on_request_headers(&mut exchange("/bad")).await;
    let elapsed = started.elapsed();
    assert!(matches!(result, Err(PluginError::Deadline { .. })), "{result:?}");
    // Generous bound for a busy machine; what matters is that the loop did not run on.
    assert!(elapsed < Duration::from_secs(5), "stopped after {elapsed:?}");
    let stats = plugin.stats();
    assert_eq!((stats.deadline_hits, stats.instances_discarded), (1, 1));
    // The next call succeeds, and the pool is refilled in the background.
    assert!(matches!(plugin.on_request_headers(&mut exchange("/ok")).await, Ok(Action::Continue)));
    harness::wait_until("the pool refilled", || plugin.stats().instances_idle == 2).await;
    assert_eq!(plugin.stats().instances_created, 3);
}

#[test]
fn a_looping_guest_does_not_block_other_work_on_its_thread() {
    // One thread for everything: if the guest held it, the timer below could not fire before
    // the guest's deadline stopped it.
    let local = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("rt");
    local.block_on(async {
        let rt = runtime();
        let mut spec = misbehave("loop");
        spec.deadline = Duration::from_millis(500);
        let plugin = Arc::new(load(&rt, &spec).await);
        let guest = tokio::spawn(async move {
            let result = plugin.on_request_headers(&mut exchange("/bad")).await;
            (Instant::now(), result)
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        let timer_fired = Instant::now();
        let (guest_stopped, result) = guest.await.expect("guest task");
        assert!(matches!(result, Err(PluginError::Deadline { .. })), "{result:?}");
        assert!(timer_fired < guest_stopped, "the timer fired only after the looping guest was stopped");
    });
}

#[tokio::test]
async fn memory_hogs_loops_and_deep_recursion_fail_only_their_own_call_in_either_isolation() {
    let rt = runtime();
    let mut grow = misbehave("grow");
    grow.memory_limit = 16 << 20;
    // The memory limit is what must stop it, not the deadline on a busy machine.
    grow.deadline = Duration::from_secs(2);
    let mut spin = misbehave("loop");
    spin.deadline = Duration::from_millis(50);
    let cases = [(grow, "memory"), (spin, "deadline"), (misbehave("recurse"), "trap")];
    for ((mut spec, expect), isolation) in
        cases.into_iter().flat_map(|case| [(case.clone(), Isolation::Pooled), (case, Isolation::PerRequest)])
    {
        spec.isolation = isolation;
        let plugin = load(&rt, &spec).await;
        let result = plugin.on_request_headers(&mut exchange("/bad")).await;
        match (&result, expect) {
            (Err(PluginError::MemoryLimit { limit, .. }), "memory") => assert_eq!(*limit, 16 << 20),
            (Err(PluginError::Deadline { deadline, .. }), "deadline") => {
                assert_eq!(*deadline, Duration::from_millis(50))
            }
            (Err(PluginError::Trap { reason, .. }), "trap") => assert!(reason.contains("stack"), "{reason}"),
            _ => panic!("{} ({isolation:?}): unexpected {result:?}", spec.name),
        }
        assert!(
            matches!(plugin.on_request_headers(&mut exchange("/ok")).await, Ok(Action::Continue)),
            "{}",
            spec.name
        );
        assert_eq!(plugin.stats().instances_discarded, 1);
    }
}

#[tokio::test]
async fn a_trap_fails_one_call_and_the_next_succeeds() {
    let rt = runtime();
    let plugin = load(&rt, &misbehave("trap")).await;
    assert!(matches!(plugin.on_request_headers(&mut exchange("/bad")).await, Err(PluginError::Trap { .. })));
    assert!(matches!(plugin.on_request_headers(&mut exchange("/ok")).await, Ok(Action::Continue)));
    assert_eq!(plugin.stats().traps, 1);
}

#[tokio::test]
async fn bad_values_from_a_guest_are_refused() {
    let rt = runtime();
    let plugin = load(&rt, &misbehave("bad-values")).await;
    let mut ex = exchange("/bad");
    match plugin.on_request_headers(&mut ex).await {
        Err(PluginError::InvalidValue { what: "status", reason, .. }) => {
            assert!(reason.contains("42"), "{reason}")
        }
        other => panic!("expected the status 42 to be refused, got {other:?}"),
    }
    // The CR LF header the guest tried to set never reached the request (the guest saw the
    // refusal, or it would have answered 200 instead of 42).
    assert!(ex.request.headers.get("x-bad").is_none());
}

#[tokio::test]
async fn pooled_instances_are_reused() {
    let rt = runtime();
    let mut spec = misbehave("counter");
    spec.instances = 1;
    let plugin = load(&rt, &spec).await;
    for expected in 1..=5 {
        let mut ex = exchange("/ok");
        plugin.on_request_headers(&mut ex).await.expect("call");
        assert_eq!(ex.request.headers["x-instance-calls"], expected.to_string().as_str());
    }
    assert_eq!(plugin.stats().instances_created, 1);
}

/// The `x-instance-calls` the counter guest set on one call.
async fn instance_calls(plugin: &Plugin) -> u64 {
    let mut ex = exchange("/ok");
    plugin.on_request_headers(&mut ex).await.expect("no call fails while an instance is replaced");
    ex.request.headers["x-instance-calls"].to_str().ok().and_then(|n| n.parse().ok()).expect("a count")
}

#[tokio::test]
async fn an_instance_is_retired_after_max_calls_and_serves_until_its_replacement_is_in() {
    let rt = runtime();
    let mut spec = misbehave("counter");
    spec.instances = 1;
    spec.max_calls = Some(3);
    let plugin = load(&rt, &spec).await;
    for round in 1..=3 {
        for expected in 1..=3 {
            assert_eq!(instance_calls(&plugin).await, expected, "round {round}");
        }
        harness::wait_until("the worn instance replaced", || plugin.stats().instances_retired == round).await;
    }
    // Worn again; until the replacement is in, the worn instance serves.
    let next = instance_calls(&plugin).await;
    assert!(next == 1 || next == 4, "{next}");
    let stats = plugin.stats();
    assert_eq!((stats.instances_discarded, stats.instances_idle), (0, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_whose_memory_passed_its_share_is_replaced_before_it_fails_a_request() {
    let rt = runtime();
    let mut spec = misbehave("leak");
    spec.instances = 1;
    spec.memory_limit = 16 << 20;
    spec.retire_memory = 0.25;
    let plugin = load(&rt, &spec).await;
    // A megabyte a call: without retirement the 16th call would pass the limit and fail.
    for call in 0..40 {
        let mut ex = exchange("/ok");
        let result = plugin.on_request_headers(&mut ex).await;
        assert!(result.is_ok(), "call {call}: {result:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let stats = plugin.stats();
    assert!(stats.instances_retired >= 3, "{stats:?}");
    assert_eq!((stats.memory_limit_hits, stats.instances_discarded), (0, 0));
}

#[tokio::test]
async fn instantiation_and_init_have_their_own_deadline() {
    let rt = runtime();
    // `slow-init` busies its `init` for 30 ms: past a 10 ms call deadline, within 1 s.
    let mut spec = misbehave("slow-init");
    spec.deadline = Duration::from_millis(10);
    let plugin = load(&rt, &spec).await;
    let mut ex = exchange("/ok");
    plugin.on_request_headers(&mut ex).await.expect("a call");
    spec.init_deadline = Duration::from_millis(5);
    let Err(refused) = rt.load(&spec).await else { panic!("an init past its deadline was accepted") };
    let refused = refused.to_string();
    assert!(refused.contains("5ms") && refused.contains("init"), "{refused}");
}

#[tokio::test]
async fn per_request_isolation_gives_a_fresh_instance_each_time() {
    let rt = runtime();
    let mut spec = misbehave("counter");
    spec.isolation = Isolation::PerRequest;
    let plugin = load(&rt, &spec).await;
    for _ in 0..5 {
        let mut ex = exchange("/ok");
        plugin.on_request_headers(&mut ex).await.expect("call");
        assert_eq!(ex.request.headers["x-instance-calls"], "1");
    }
    // `init` ran once, at load, for the snapshot every instance starts from.
    let stats = plugin.stats();
    assert_eq!((stats.instances_created, stats.inits), (5, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_init_is_paid_once_at_load_under_per_request_isolation() {
    let rt = runtime();
    // `slow-init` busy-waits 30 ms in `init`: within its init deadline, three times a call's.
    let mut spec = misbehave("slow-init");
    spec.isolation = Isolation::PerRequest;
    spec.deadline = Duration::from_millis(10);
    let plugin = load(&rt, &spec).await;
    for _ in 0..5 {
        let mut ex = exchange("/ok");
        plugin.on_request_headers(&mut ex).await.expect("call");
    }
    let stats = plugin.stats();
    assert_eq!((stats.instances_created, stats.inits, stats.deadline_hits), (5, 1, 0));

    // Pooled, the same plugin runs `init` in each instance it makes at load, and none after.
    spec.isolation = Isolation::Pooled;
    spec.instances = 2;
    let pooled = load(&rt, &spec).await;
    for _ in 0..5 {
        pooled.on_request_headers(&mut exchange("/ok")).await.expect("call");
    }
    assert_eq!(pooled.stats().inits, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exhausted_pool_fails_fast() {
    let rt = runtime();
    let mut spec = misbehave("loop");
    spec.instances = 1;
    spec.deadline = Duration::from_secs(3);
    spec.pool_wait = Duration::from_millis(20);
    let plugin = Arc::new(load(&rt, &spec).await);
    let busy = tokio::spawn({
        let plugin = plugin.clone();
        async move { plugin.on_request_headers(&mut exchange("/bad")).await }
    });
    harness::wait_until("the looping call holds the only instance", || plugin.stats().instances_idle == 0)
        .await;
    let started = Instant::now();
    let result = plugin.on_request_headers(&mut exchange("/ok")).await;
    let waited = started.elapsed();
    assert!(matches!(result, Err(PluginError::PoolExhausted { .. })), "{result:?}");
    assert!(result.as_ref().err().is_some_and(PluginError::is_overload));
    assert!(waited < Duration::from_secs(2), "waited {waited:?}, not failing fast");
    assert!(matches!(busy.await.expect("task"), Err(PluginError::Deadline { .. })));
}

#[tokio::test]
async fn a_restart_with_unchanged_plugins_compiles_nothing() {
    let dir = harness::TempDir::new("cache").expect("dir");
    let config =
        RuntimeConfig { cache_dir: Some(dir.path().to_owned()), instance_slots: 16, ..Default::default() };
    let spec = spec("deny", wasm::DENY, "{}");
    let first = Runtime::new(&config).expect("engine").load(&spec).await.expect("load");
    assert_eq!(first.cache_outcome(), wasmgate::plugin::CacheOutcome::Compiled);
    let second = Runtime::new(&config).expect("engine").load(&spec).await.expect("load");
    assert_eq!(second.cache_outcome(), wasmgate::plugin::CacheOutcome::Hit);
    assert_eq!(first.sha256(), second.sha256());
}

#[tokio::test]
async fn a_file_that_is_not_a_component_is_refused_naming_the_plugin_and_file() {
    let dir = harness::TempDir::new("notwasm").expect("dir");
    let path = dir.path().join("bogus.wasm");
    std::fs::write(&path, b"not wasm at all").expect("write");
    let err = runtime().load(&spec("bogus", path.to_str().expect("utf8"), "{}")).await.expect_err("refused");
    let msg = err.to_string();
    assert!(msg.contains("bogus") && msg.contains("bogus.wasm"), "{msg}");
    let err = runtime().load(&spec("missing", "/nonexistent/p.wasm", "{}")).await.expect_err("refused");
    assert!(matches!(err, PluginError::Read { .. }), "{err}");
    // A file over the size cap is refused before it is read (sparse: it takes no disk).
    let huge = dir.path().join("huge.wasm");
    std::fs::File::create(&huge).expect("create").set_len((128 << 20) + 1).expect("size");
    let err = runtime().load(&spec("huge", huge.to_str().expect("utf8"), "{}")).await.expect_err("refused");
    assert!(err.to_string().contains("over the largest component"), "{err}");
}

#[tokio::test]
async fn a_plugin_is_kept_only_while_its_spec_and_bytes_stay_the_same() {
    let rt = runtime();
    let dir = harness::TempDir::new("keep-plugin").expect("dir");
    let path = dir.path().join("p.wasm");
    std::fs::copy(wasm::ADD_HEADER, &path).expect("copy");
    let spec = spec("p", path.to_str().expect("utf-8"), "{}");
    let (first, kept) = rt.load_or_keep(&spec, None).await.expect("load");
    assert!(!kept);
    let (same, kept) = rt.load_or_keep(&spec, Some(&first)).await.expect("load");
    assert!(kept && Arc::ptr_eq(&first, &same), "same spec and bytes: kept with its instances");

    let mut other = spec.clone();
    other.instances += 1;
    let (changed, kept) = rt.load_or_keep(&other, Some(&first)).await.expect("load");
    assert!(!kept && !Arc::ptr_eq(&first, &changed), "another spec: loaded anew");

    // Other bytes at the same path: loaded anew, with the new component's hash.
    std::fs::copy(wasm::REQUEST_ID, &path).expect("copy");
    let (replaced, kept) = rt.load_or_keep(&spec, Some(&first)).await.expect("load");
    assert!(!kept && replaced.sha256() != first.sha256());
}

#[tokio::test]
async fn only_loading_compiles_never_a_call_nor_a_reload_that_keeps_the_plugin() {
    harness::init_tracing();
    let rt = Runtime::new(&RuntimeConfig { cache_dir: None, instance_slots: 64, ..Default::default() })
        .expect("engine");
    let mut spec = misbehave("counter");
    // A fresh instance for every call: instantiating, from the precompiled component.
    spec.isolation = Isolation::PerRequest;
    let plugin = Arc::new(load(&rt, &spec).await);
    // The component, its instrumented copy that runs `init`, and the snapshot taken after it.
    assert_eq!(rt.components_compiled(), 3);
    for _ in 0..20 {
        plugin.on_request_headers(&mut exchange("/ok")).await.expect("call");
    }
    assert_eq!(rt.components_compiled(), 3, "a call compiled the component");
    let (_, kept) = rt.load_or_keep(&spec, Some(&plugin)).await.expect("reload");
    assert!(kept);
    assert_eq!(rt.components_compiled(), 3, "a reload that kept the plugin compiled it");
}

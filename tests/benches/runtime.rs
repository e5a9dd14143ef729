//! Plugin runtime costs (criterion): one phase call on a reused instance, one call under
//! per-request isolation, each body, trailer, error and log phase call (a plugin that does
//! nothing in them: the cost of the phase itself), a fresh instance for a call of each of three
//! shipped plugins, and loading five plugins from the compiled cache.
//!
//! Run: `cargo bench -p wasmgate-tests --bench runtime`.

#![expect(missing_docs, reason = "criterion_group! generates an undocumented function")]

use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use wasmgate::plugin::{Exchange, Isolation, PluginSpec, Runtime, RuntimeConfig};
use wasmgate_tests::{harness, wasm};

/// Benches `call`, made back to back with `ex` bound to `from`, as `name` in `group`.
macro_rules! calls {
    ($group:expr, $rt:expr, $name:expr, $ex:ident = $from:expr, $call:expr) => {
        $group.bench_function($name, |b| {
            b.iter_custom(|iters| {
                $rt.block_on(async {
                    let $ex = $from;
                    let started = Instant::now();
                    for _ in 0..iters {
                        $call.await.expect("call");
                    }
                    started.elapsed()
                })
            })
        })
    };
}

fn exchange() -> Box<Exchange> {
    // A typical request head: ten headers, one of which the plugin reads.
    harness::exchange(
        "/api/items?id=3",
        &[
            ("x-in", "hello"),
            ("user-agent", "bench/1.0"),
            ("accept", "*/*"),
            ("accept-encoding", "gzip, br"),
            ("accept-language", "en"),
            ("cookie", "session=0123456789abcdef"),
            ("x-request-id", "7f3a2b"),
            ("referer", "https://example.org/"),
            ("cache-control", "no-cache"),
        ],
    )
}

fn runtime(slots: u32) -> Runtime {
    Runtime::new(&RuntimeConfig {
        cache_dir: Some(harness::cache_dir()),
        instance_slots: slots,
        ..Default::default()
    })
    .expect("engine")
}

fn echo(isolation: Isolation) -> PluginSpec {
    let mut spec = PluginSpec::new("echo", wasm::MISBEHAVE);
    spec.config_json = r#"{"mode":"echo"}"#.into();
    spec.instances = 4;
    spec.isolation = isolation;
    spec
}

fn phase_calls(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio");
    let engine = runtime(64);
    for (name, isolation) in [
        ("read one header, set one: reused instance", Isolation::Pooled),
        ("read one header, set one: per-request isolation", Isolation::PerRequest),
    ] {
        let plugin = rt.block_on(engine.load(&echo(isolation))).expect("load");
        let mut ex = exchange();
        rt.block_on(plugin.on_request_headers(&mut ex)).expect("warm-up");
        assert_eq!(ex.request.headers["x-out"], "hello");
        calls!(c, rt, name, ex = &mut ex, plugin.on_request_headers(ex));
        // Criterion gives the middle; the bar for a fresh instance is on its tail.
        tail(&rt, name, async || plugin.on_request_headers(&mut ex).await);
    }
}

/// Times `TAIL_CALLS` calls one by one and prints their p50, p99 and p99.9.
fn tail<T, E: std::fmt::Debug>(
    rt: &tokio::runtime::Runtime,
    name: &str,
    mut call: impl AsyncFnMut() -> Result<T, E>,
) {
    let mut took: Vec<Duration> = rt.block_on(async {
        let mut took = Vec::with_capacity(TAIL_CALLS);
        for _ in 0..TAIL_CALLS {
            let started = Instant::now();
            call().await.expect("call");
            took.push(started.elapsed());
        }
        took
    });
    took.sort_unstable();
    let at = |q: f64| took[((took.len() - 1) as f64 * q) as usize];
    println!("{name}: {TAIL_CALLS} calls, p50 {:?}, p99 {:?}, p99.9 {:?}", at(0.5), at(0.99), at(0.999));
}

/// A fresh instance for one call of a shipped plugin's phase, against the same call on a
/// reused one: the seed's two plugins (round-robin picks the backend, set-host sets `Host`
/// upstream) and request-id (reads the client's id, sets it on the request and in the
/// per-request state). Shipped plugins lower 14–21 host functions; the echo guest above lowers
/// 91, most of them WASI sockets and files it calls to show they are refused.
fn fresh_instances(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio");
    let engine = runtime(64);
    let mut group = c.benchmark_group("fresh instance");
    for isolation in [Isolation::Pooled, Isolation::PerRequest] {
        let mode = match isolation {
            Isolation::Pooled => "reused instance",
            Isolation::PerRequest => "per-request isolation",
        };
        let load = |name: &str, path: &str, config: &str| {
            let mut spec = PluginSpec::new(name, path);
            spec.config_json = config.into();
            spec.instances = 4;
            spec.isolation = isolation;
            rt.block_on(engine.load(&spec)).expect("load")
        };
        let round_robin = load("round-robin", wasm::ROUND_ROBIN, "{}");
        let set_host = load("set-host", wasm::SET_HOST, r#"{"host":"localhost"}"#);
        let request_id = load("request-id", wasm::REQUEST_ID, "{}");
        let mut ex = exchange();
        ex.request.headers.insert("x-request-id", http::HeaderValue::from_static("7f3a2b"));
        macro_rules! case {
            ($plugin:literal, |$ex:ident| $call:expr) => {{
                let name = format!("{}: {mode}", $plugin);
                calls!(group, rt, &name, $ex = &mut ex, $call);
                tail(&rt, &name, async || {
                    let $ex = &mut ex;
                    $call.await
                });
            }};
        }
        case!("round-robin select-upstream", |ex| round_robin.select_upstream(ex));
        case!("set-host on-upstream-request", |ex| set_host.on_upstream_request(ex));
        case!("request-id on-request-headers", |ex| request_id.on_request_headers(ex));
    }
    group.finish();
}

/// Calls timed one by one for the tail figures.
const TAIL_CALLS: usize = 20_000;

fn body_error_and_log_phases(c: &mut Criterion) {
    use wasmgate::plugin::{FailureKind, LogEntry, Logged, UpstreamFailure};
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio");
    let engine = runtime(16);
    let mut spec = PluginSpec::new("tracer", wasm::TRACER);
    spec.config_json = r#"{"quiet":true}"#.into();
    spec.instances = 4;
    let plugin = rt.block_on(engine.load(&spec)).expect("load");
    let mut ex = exchange();
    let mut response = http::Response::new(());
    response.headers_mut().insert("grpc-status", http::HeaderValue::from_static("0"));
    ex.response = Some(response.into_parts().0);
    let chunk = vec![b'a'; 16 * 1024];
    let failure = UpstreamFailure {
        kind: FailureKind::ConnectRefused,
        backend: "127.0.0.1:8080".into(),
        attempt: 1,
        message: "connection refused".into(),
    };
    let entry = Logged::from(LogEntry {
        status: 200,
        duration_us: 1200,
        upstream_us: Some(900),
        bytes_in: 0,
        bytes_out: 5120,
        backend: Some("127.0.0.1:8080".into()),
        error: None,
    });
    let mut group = c.benchmark_group("phases");
    macro_rules! phase {
        ($name:expr, |$ex:ident| $call:expr) => {
            calls!(group, rt, $name, $ex = &mut ex, $call)
        };
    }
    phase!("request body: one 16 KiB chunk", |ex| plugin.on_request_body(ex, &chunk, false, false));
    phase!("response body: one 16 KiB chunk", |ex| plugin.on_response_body(ex, &chunk, false));
    phase!("response trailers", |ex| plugin.on_response_trailers(ex));
    phase!("upstream error", |ex| plugin.on_upstream_error(ex, &failure));
    phase!("log", |ex| plugin.on_log(ex, &entry));
    group.finish();
}

fn load_five_from_cache(c: &mut Criterion) {
    let rt =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("tokio");
    let specs = {
        let mut specs = vec![
            PluginSpec::new("add-header", wasm::ADD_HEADER),
            PluginSpec::new("deny", wasm::DENY),
            PluginSpec::new("round-robin", wasm::ROUND_ROBIN),
            PluginSpec::new("set-host", wasm::SET_HOST),
            echo(Isolation::Pooled),
        ];
        specs[3].config_json = r#"{"host":"example.org"}"#.into();
        specs
    };
    // Fill the cache once.
    rt.block_on(async {
        let engine = runtime(256);
        for spec in &specs {
            engine.load(spec).await.expect("load");
        }
    });
    let mut group = c.benchmark_group("start-up");
    group.sample_size(10).measurement_time(Duration::from_secs(10));
    group.bench_function("load 5 plugins from the compiled cache (16 instances each)", |b| {
        b.iter(|| {
            rt.block_on(async {
                let engine = runtime(256);
                for spec in &specs {
                    let plugin = engine.load(spec).await.expect("load");
                    assert_eq!(plugin.cache_outcome(), wasmgate::plugin::CacheOutcome::Hit);
                }
            })
        })
    });
    group.finish();
}

criterion_group!(benches, phase_calls, fresh_instances, body_error_and_log_phases, load_five_from_cache);
criterion_main!(benches);

//! Plugin runtime costs (criterion): one phase call on a reused instance, one call under
//! per-request isolation, and loading five plugins from the compiled cache.
//!
//! Run: `cargo bench -p wasmgate-tests --bench runtime`.

#![expect(missing_docs, reason = "criterion_group! generates an undocumented function")]

use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use wasmgate::plugin::{Exchange, Isolation, PluginSpec, Runtime, RuntimeConfig};
use wasmgate_tests::{harness, wasm};

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
        c.bench_function(name, |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let started = Instant::now();
                    for _ in 0..iters {
                        plugin.on_request_headers(&mut ex).await.expect("call");
                    }
                    started.elapsed()
                })
            })
        });
    }
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

criterion_group!(benches, phase_calls, load_five_from_cache);
criterion_main!(benches);

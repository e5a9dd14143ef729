//! What a plugin costs by the language it is written in: the same add-header example plugin
//! (`examples/plugins/add-header`) in Rust, Python and JavaScript. Criterion times one
//! `on-request-headers` call on a reused instance (it sets one request header); beside it the
//! bench prints each component's size, its first load (compiling included) and a load from the
//! compiled cache, the linear memory one instance holds, and a soak of 20 000 calls (or
//! `SOAK_CALLS`) on one instance: faults, and the memory it holds after.
//!
//! Run: `cargo bench -p wasmgate-tests --bench languages` (the first run builds the Python and
//! JavaScript components, installing their tools).

#![expect(missing_docs, reason = "criterion_group! generates an undocumented function")]

use std::time::Instant;

use criterion::{Criterion, criterion_group, criterion_main};
use wasmgate::plugin::{PluginSpec, Runtime, RuntimeConfig};
use wasmgate_tests::polyglot::{self, Language};
use wasmgate_tests::{harness, wasm};

/// Calls in the soak, unless `SOAK_CALLS` says otherwise.
fn soak_calls() -> usize {
    std::env::var("SOAK_CALLS").ok().and_then(|n| n.parse().ok()).unwrap_or(20_000)
}

fn languages(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio");
    let components = [
        ("rust", wasm::EXAMPLE_ADD_HEADER.to_owned()),
        ("python", polyglot::example("add-header", Language::Python).expect("built").display().to_string()),
        ("js", polyglot::example("add-header", Language::Js).expect("built").display().to_string()),
    ];
    for (language, path) in components {
        let mut spec = PluginSpec::new("add-header", &path);
        spec.config_json = r#"{"request":{"x-lang":"bench"}}"#.into();
        spec.instances = 1;
        // A fresh cache for the first load, then the shared one twice: the second is a hit.
        let fresh = std::env::temp_dir().join(format!("wasmgate-bench-languages-{}", std::process::id()));
        let first = load_time(&rt, &spec, Some(fresh.clone()));
        let _ = std::fs::remove_dir_all(&fresh);
        load_time(&rt, &spec, Some(harness::cache_dir()));
        let cached = load_time(&rt, &spec, Some(harness::cache_dir()));

        let engine =
            Runtime::new(&RuntimeConfig { cache_dir: Some(harness::cache_dir()), ..Default::default() })
                .expect("engine");
        let plugin = rt.block_on(engine.load(&spec)).expect("load");
        let mut ex = harness::exchange("/items", &[("accept", "*/*")]);
        rt.block_on(plugin.on_request_headers(&mut ex)).expect("warm-up");
        assert_eq!(ex.request.headers["x-lang"], "bench", "{language}");
        let memory = plugin.usage().memory_peak();
        c.bench_function(&format!("{language}: one call on a reused instance"), |b| {
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
        let (soak_started, soak) = (Instant::now(), soak_calls());
        let failed = rt.block_on(async {
            let mut failed = 0;
            for _ in 0..soak {
                failed += usize::from(plugin.on_request_headers(&mut ex).await.is_err());
            }
            failed
        });
        let stats = plugin.stats();
        println!(
            "{language}: {} bytes; first load {first:.0} ms, from the cache {cached:.0} ms; {} KiB of linear memory per instance; soak of {soak} calls on one instance: {failed} failed, {} instance(s) made, {} KiB after, {:.1} µs a call",
            std::fs::metadata(&path).map_or(0, |m| m.len()),
            memory / 1024,
            stats.instances_created,
            plugin.usage().memory_peak() / 1024,
            soak_started.elapsed().as_secs_f64() * 1e6 / soak as f64,
        );
    }
}

/// Milliseconds to load `spec` in a new runtime whose compile cache is `cache_dir`.
fn load_time(rt: &tokio::runtime::Runtime, spec: &PluginSpec, cache_dir: Option<std::path::PathBuf>) -> f64 {
    let engine = Runtime::new(&RuntimeConfig { cache_dir, ..Default::default() }).expect("engine");
    let started = Instant::now();
    rt.block_on(engine.load(spec)).expect("load");
    started.elapsed().as_secs_f64() * 1e3
}

criterion_group!(benches, languages);
criterion_main!(benches);

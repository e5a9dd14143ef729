//! The shared store's latency per operation, memory against a local Redis: 10,000 calls of
//! each operation, one after another, through the same `Store` trait the host API calls.
//! Prints p50 and p99 (`docs/performance.md` keeps the figures). Needs `redis-server`.
//!
//! ```sh
//! cargo run --release -p wasmgate-tests --bin store-bench
//! ```

use std::time::{Duration, Instant};

use wasmgate::store::{MemoryStore, RedisSettings, RedisStore, Store, StoreLimits};
use wasmgate_tests::redis::RedisServer;

const CALLS: usize = 10_000;

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let redis = RedisServer::start()?;
    let settings = RedisSettings {
        url: redis.url(),
        key_prefix: "bench:".into(),
        pool_size: 2,
        command_timeout: Duration::from_secs(1),
        ca: None,
    };
    let limits = StoreLimits { max_entries: 100_000, max_bytes: 64 << 20 };
    let stores: [(&str, std::sync::Arc<dyn Store>); 2] = [
        ("memory", MemoryStore::new(limits).share("bench", limits)),
        ("redis", std::sync::Arc::new(RedisStore::new(&settings).map_err(anyhow::Error::msg)?)),
    ];
    println!("{:<8} {:<18} {:>10} {:>10}", "backend", "operation", "p50 µs", "p99 µs");
    for (name, store) in &stores {
        let store = store.as_ref();
        let set = |i: usize| async move { store.set(&key(i), vec![b'v'; 64], None).await.map(drop) };
        report(name, "set", measure(set).await?);
        report(name, "get", measure(|i| async move { store.get(&key(i)).await.map(drop) }).await?);
        report(
            name,
            "increment",
            measure(|_| async move { store.increment(b"n", 1, None).await.map(drop) }).await?,
        );
        let swap = |i: usize| async move {
            let current = (i.to_string().into_bytes(), (i + 1).to_string().into_bytes());
            store
                .compare_and_swap(b"cas", (i > 0).then_some(current.0.as_slice()), current.1, None)
                .await
                .map(drop)
        };
        report(name, "compare-and-swap", measure(swap).await?);
        report(name, "delete", measure(|i| async move { store.delete(&key(i)).await.map(drop) }).await?);
    }
    Ok(())
}

fn key(i: usize) -> Vec<u8> {
    format!("plugin\0key-{i}").into_bytes()
}

async fn measure<F, Fut>(call: F) -> anyhow::Result<Vec<Duration>>
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = Result<(), wasmgate::store::StoreError>>,
{
    let mut times = Vec::with_capacity(CALLS);
    for i in 0..CALLS {
        let started = Instant::now();
        call(i).await?;
        times.push(started.elapsed());
    }
    times.sort_unstable();
    Ok(times)
}

fn report(backend: &str, op: &str, times: Vec<Duration>) {
    let at = |q: f64| times[((times.len() - 1) as f64 * q) as usize].as_secs_f64() * 1e6;
    println!("{backend:<8} {op:<18} {:>10.1} {:>10.1}", at(0.5), at(0.99));
}

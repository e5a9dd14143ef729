//! Reloads and binary upgrades under load, measured: the release gateway in front of a local
//! origin, 32 keep-alive connections sending back to back, N reloads then M upgrades
//! ([`wasmgate_tests::rollout`]). Prints requests, failures, and p99 during the operations
//! against p99 at steady state (`docs/performance.md` keeps the figures).
//!
//! ```sh
//! cargo build --release -p wasmgate --bin wasmgate
//! cargo run --release -p wasmgate-tests --bin rollout-bench -- 20 10   # reloads, upgrades
//! ```

use std::time::Duration;

use wasmgate_example_origin::Origin;
use wasmgate_tests::harness::TempDir;
use wasmgate_tests::rollout::{self, Plan};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1).map(|a| a.parse::<usize>());
    let reloads = args.next().transpose()?.unwrap_or(20);
    let upgrades = args.next().transpose()?.unwrap_or(10);
    let origin = Origin::start("o", "127.0.0.1:0".parse()?, None).await?;
    let dir = TempDir::new("rollout-bench")?;
    let plan = Plan { connections: 32, reloads, upgrades, steady_requests: 100_000 };
    let rollout = rollout::run(dir.path(), origin.addr(), plan).await?;
    let report = &rollout.report;
    let ms = |d: Option<Duration>| d.map_or("-".to_owned(), |d| format!("{:.2} ms", d.as_secs_f64() * 1e3));
    let ops: Duration = rollout.windows.iter().map(|(a, b)| *b - *a).sum();
    let ready: Duration = rollout.upgrade_ready.iter().sum();
    println!(
        "reloads {reloads}, upgrades {upgrades}, {} connections, {:.1} s",
        plan.connections,
        report.elapsed.as_secs_f64()
    );
    println!("requests ok {}  errors {}  reconnects {}", report.ok, report.errors.len(), report.reconnects);
    println!("req/s {:.0}", report.ok as f64 / report.elapsed.as_secs_f64());
    println!(
        "p50 steady {}  p99 steady {}",
        ms(report.quantile_outside(0.5, &rollout.windows)),
        ms(rollout.p99_steady())
    );
    println!(
        "p50 during {}  p99 during {}  ({:.1} s of operations)",
        ms(report.quantile(0.5, &rollout.windows)),
        ms(rollout.p99_during()),
        ops.as_secs_f64()
    );
    if !rollout.upgrade_ready.is_empty() {
        println!(
            "upgrade to ready: mean {:.0} ms",
            ready.as_secs_f64() * 1e3 / rollout.upgrade_ready.len() as f64
        );
    }
    for error in report.errors.iter().take(10) {
        println!("error: {error}");
    }
    Ok(())
}

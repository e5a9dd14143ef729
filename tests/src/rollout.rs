//! Reloads and binary upgrades under steady load, for the end-to-end test and the benchmark
//! (`cargo run --release -p wasmgate-tests --bin rollout-bench`): the real binary in front of
//! a real origin, an `add-header` plugin whose response header names the generation, N reloads
//! (each changing the header, alternately by SIGHUP and `POST /reload`), then M upgrades
//! (each from the config file as rewritten, the new process taking the sockets over), while
//! keep-alive connections send requests back to back. After each operation a fresh request
//! must see the new generation's header.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::harness::{GatewayProcess, Toml};
use crate::load::{Load, Report};
use crate::{client, wasm};

/// How much to do.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    /// Keep-alive connections of the load.
    pub connections: usize,
    /// Reloads, one after another.
    pub reloads: usize,
    /// Binary upgrades, one after another.
    pub upgrades: usize,
    /// Requests answered before the first operation and after the last (steady state).
    pub steady_requests: u64,
}

/// What the load saw, and when the operations ran.
pub struct Rollout {
    /// The load's requests, failures and latencies.
    pub report: Report,
    /// From each operation's start until a fresh request saw its generation (and, for an
    /// upgrade, until the predecessor exited).
    pub windows: Vec<(Instant, Instant)>,
    /// Each upgrade's duration from start until the successor was ready.
    pub upgrade_ready: Vec<Duration>,
}

impl Rollout {
    /// p99 of requests that finished during an operation.
    pub fn p99_during(&self) -> Option<Duration> {
        self.report.quantile(0.99, &self.windows)
    }

    /// p99 of requests that finished outside every operation.
    pub fn p99_steady(&self) -> Option<Duration> {
        self.report.quantile_outside(0.99, &self.windows)
    }
}

/// The gateway's config for generation `tag`: its responses carry `x-generation: tag`.
pub fn config(backend: SocketAddr, tag: &str) -> Toml {
    Toml::new()
        .listener()
        .raw("[admin]")
        .raw(r#"address = "127.0.0.1:0""#)
        .plugin("tag", wasm::ADD_HEADER, &format!(r#"{{ response = {{ x-generation = "{tag}" }} }}"#))
        .upstream("o", &[backend])
        .route("o")
        .raw(r#"plugins = ["tag"]"#)
}

/// Runs `plan` against a gateway started in `dir` in front of `backend`.
pub async fn run(dir: &Path, backend: SocketAddr, plan: Plan) -> anyhow::Result<Rollout> {
    let mut current = tokio::task::block_in_place(|| GatewayProcess::start(dir, &config(backend, "start")))?;
    let addr = current.addr;
    let admin = admin_addr(&current)?;
    let load = Load::start(addr, plan.connections, "/");
    load.wait_for(plan.steady_requests).await;
    let mut windows = Vec::new();

    for i in 0..plan.reloads {
        let tag = format!("reload-{i}");
        current.rewrite(&config(backend, &tag))?;
        let started = Instant::now();
        if i % 2 == 0 {
            current.signal("HUP")?;
        } else {
            let reply = client::send(
                &client::http1(),
                http::Request::post(format!("http://{admin}/reload")).body(Default::default())?,
            )
            .await?;
            anyhow::ensure!(reply.status == 200, "POST /reload answered {}: {}", reply.status, reply.text());
        }
        sees(addr, &tag).await?;
        windows.push((started, Instant::now()));
        load.wait_for(200).await;
    }

    let mut upgrade_ready = Vec::new();
    for i in 0..plan.upgrades {
        let tag = format!("upgrade-{i}");
        current.rewrite(&config(backend, &tag))?;
        let started = Instant::now();
        let next = tokio::task::block_in_place(|| current.upgrade())?;
        upgrade_ready.push(started.elapsed());
        sees(addr, &tag).await?;
        let status = tokio::task::block_in_place(|| current.wait_exit(Duration::from_secs(30)))?;
        anyhow::ensure!(status.success(), "the predecessor exited with {status}");
        windows.push((started, Instant::now()));
        current = next;
        load.wait_for(200).await;
    }

    load.wait_for(plan.steady_requests).await;
    let report = load.finish().await;
    drop(current);
    Ok(Rollout { report, windows, upgrade_ready })
}

/// The admin listener's address, from the process's log.
pub fn admin_addr(gateway: &GatewayProcess) -> anyhow::Result<SocketAddr> {
    let line = gateway.log_lines("admin listening").pop().context("no admin listener")?;
    let addr =
        line.split("address=").nth(1).and_then(|a| a.split_whitespace().next()).context("no address")?;
    Ok(addr.parse()?)
}

/// Waits (up to 10 s) until a request on a fresh connection gets `x-generation: tag`.
pub async fn sees(addr: SocketAddr, tag: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let reply = client::get(addr, "/", &[]).await?;
        anyhow::ensure!(reply.status == 200, "a fresh request got {}", reply.status);
        if reply.header("x-generation") == tag {
            return Ok(());
        }
        anyhow::ensure!(Instant::now() < deadline, "generation {tag} not seen within 10 s");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

//! Active health checks: a background task per backend probes it (HTTP GET or TCP connect) at
//! an interval, and flips the backend's health after enough consecutive failures or successes.

use std::sync::Arc;

use http_body_util::Empty;
use tokio::net::TcpStream;
use tokio::task::JoinSet;

use super::Group;
use crate::config::{HealthCheckConfig, HealthCheckKind};

/// Starts the checks of every backend of `group` on `tasks`; they stop when `tasks` is dropped
/// (a config swap drops the old generation's set).
pub fn spawn_health_checks(tasks: &mut JoinSet<()>, group: &Arc<Group>, check: &HealthCheckConfig) {
    for index in 0..group.backends().len() {
        let (group, check) = (group.clone(), check.clone());
        tasks.spawn(async move {
            let mut streak = (0u32, 0u32); // consecutive (successes, failures)
            let mut ticker = tokio::time::interval(check.interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticker.tick().await;
                if !check.jitter.is_zero() {
                    tokio::time::sleep(check.jitter.mul_f64(super::balance::random_fraction())).await;
                }
                let backend = &group.backends()[index];
                let outcome = tokio::time::timeout(check.timeout, probe(backend, &check)).await;
                let result = outcome
                    .unwrap_or_else(|_| Err(format!("no answer within {}ms", check.timeout.as_millis())));
                streak = match &result {
                    Ok(()) => (streak.0.saturating_add(1), 0),
                    Err(_) => (0, streak.1.saturating_add(1)),
                };
                let verdict = if streak.0 >= check.healthy_threshold {
                    Some(true)
                } else if streak.1 >= check.unhealthy_threshold {
                    Some(false)
                } else {
                    None
                };
                if let Some(healthy) = verdict
                    && backend.set_healthy(healthy)
                {
                    let (group, backend) = (group.name(), backend.address());
                    match result {
                        Ok(()) => tracing::info!(%group, %backend, "backend healthy again"),
                        Err(reason) => tracing::warn!(%group, %backend, %reason, "backend unhealthy"),
                    }
                }
            }
        });
    }
}

async fn probe(backend: &super::Backend, check: &HealthCheckConfig) -> Result<(), String> {
    let stream = TcpStream::connect(backend.addr()).await.map_err(|e| format!("connect: {e}"))?;
    if check.kind == HealthCheckKind::Tcp {
        return Ok(());
    }
    let _ = stream.set_nodelay(true);
    let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    let conn = tokio::spawn(conn);
    let host = check.host.as_deref().unwrap_or(backend.address());
    let request = http::Request::get(&check.path)
        .header(http::header::HOST, host)
        .header(http::header::USER_AGENT, "wasmgate-health-check")
        .header(http::header::CONNECTION, "close")
        .body(Empty::<bytes::Bytes>::new())
        .map_err(|e| format!("request: {e}"))?;
    let response = sender.send_request(request).await.map_err(|e| format!("request: {e}"));
    conn.abort();
    let status = response?.status();
    if check.expects(status.as_u16()) { Ok(()) } else { Err(format!("status {status}")) }
}

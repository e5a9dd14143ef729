//! Steady keep-alive load from inside a test or a benchmark: N HTTP/1.1 connections, each
//! sending `GET path` back to back, reconnecting only when a response says
//! `Connection: close`. Every failure is kept with what it was (a refused connect, a reset, a
//! non-2xx status), and every request's latency with when it finished, so a report can set the
//! latency during operations against the latency at steady state.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use tokio::task::JoinSet;

/// What one connection's worker saw.
#[derive(Debug, Default)]
struct Tally {
    ok: u64,
    reconnects: u64,
    errors: Vec<String>,
    /// (finished at, latency) of every request that got a 2xx.
    samples: Vec<(Instant, Duration)>,
}

/// Load running in the background until [`Load::finish`].
pub struct Load {
    stop: Arc<AtomicBool>,
    done: Arc<AtomicU64>,
    workers: JoinSet<Tally>,
    started: Instant,
}

impl Load {
    /// Starts `connections` workers sending `GET path` to `addr`.
    pub fn start(addr: SocketAddr, connections: usize, path: &str) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicU64::new(0));
        let mut workers = JoinSet::new();
        for _ in 0..connections {
            workers.spawn(worker(addr, path.to_owned(), stop.clone(), done.clone()));
        }
        Load { stop, done, workers, started: Instant::now() }
    }

    /// Requests answered with a 2xx so far.
    pub fn answered(&self) -> u64 {
        self.done.load(Ordering::Relaxed)
    }

    /// Waits until at least `more` further requests have been answered (at most 30 s).
    pub async fn wait_for(&self, more: u64) {
        let target = self.answered() + more;
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.answered() < target && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Stops every worker after its request in flight and sums up.
    pub async fn finish(mut self) -> Report {
        self.stop.store(true, Ordering::Relaxed);
        let mut report = Report { elapsed: self.started.elapsed(), ..Report::default() };
        while let Some(tally) = self.workers.join_next().await {
            let tally =
                tally.unwrap_or_else(|e| Tally { errors: vec![format!("worker: {e}")], ..Tally::default() });
            report.ok += tally.ok;
            report.reconnects += tally.reconnects;
            report.errors.extend(tally.errors);
            report.samples.extend(tally.samples);
        }
        report.samples.sort_unstable_by_key(|s| s.0);
        report
    }
}

/// What the load saw, whole.
#[derive(Debug, Default)]
pub struct Report {
    /// Requests answered with a 2xx.
    pub ok: u64,
    /// Connections opened again after a `Connection: close`.
    pub reconnects: u64,
    /// Every failure, described.
    pub errors: Vec<String>,
    /// (finished at, latency) of every 2xx, by time.
    pub samples: Vec<(Instant, Duration)>,
    /// How long the load ran.
    pub elapsed: Duration,
}

impl Report {
    /// The `q` quantile (0.0–1.0) of the latencies of requests that finished within one of
    /// `windows` (or of all when `windows` is empty).
    pub fn quantile(&self, q: f64, windows: &[(Instant, Instant)]) -> Option<Duration> {
        let mut latencies: Vec<Duration> = self
            .samples
            .iter()
            .filter(|(at, _)| windows.is_empty() || windows.iter().any(|(a, b)| a <= at && at <= b))
            .map(|(_, latency)| *latency)
            .collect();
        if latencies.is_empty() {
            return None;
        }
        latencies.sort_unstable();
        let rank = ((latencies.len() as f64 - 1.0) * q).round() as usize;
        latencies.get(rank).copied()
    }

    /// The latencies of requests that finished outside every one of `windows`.
    pub fn quantile_outside(&self, q: f64, windows: &[(Instant, Instant)]) -> Option<Duration> {
        let outside: Vec<(Instant, Instant)> = {
            let mut gaps = Vec::new();
            let mut from = self.samples.first()?.0;
            for (a, b) in windows {
                if *a > from {
                    gaps.push((from, *a));
                }
                from = from.max(*b);
            }
            gaps.push((from, self.samples.last()?.0));
            gaps
        };
        self.quantile(q, &outside)
    }
}

async fn worker(addr: SocketAddr, path: String, stop: Arc<AtomicBool>, done: Arc<AtomicU64>) -> Tally {
    let mut tally = Tally::default();
    let mut first = true;
    while !stop.load(Ordering::Relaxed) {
        let stream = match tokio::net::TcpStream::connect(addr).await {
            Ok(stream) => stream,
            Err(error) => {
                tally.errors.push(format!("connect: {error}"));
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        if !first {
            tally.reconnects += 1;
        }
        first = false;
        let _ = stream.set_nodelay(true);
        let (mut sender, connection) = match hyper::client::conn::http1::handshake(TokioIo::new(stream)).await
        {
            Ok(pair) => pair,
            Err(error) => {
                tally.errors.push(format!("handshake: {error}"));
                continue;
            }
        };
        tokio::spawn(connection);
        loop {
            if stop.load(Ordering::Relaxed) {
                return tally;
            }
            if let Err(error) = sender.ready().await {
                tally.errors.push(format!("connection closed between requests: {error}"));
                break;
            }
            let request = http::Request::get(path.as_str())
                .header(http::header::HOST, addr.to_string())
                .body(Empty::<Bytes>::new())
                .unwrap_or_default();
            let sent = Instant::now();
            let response = match sender.send_request(request).await {
                Ok(response) => response,
                Err(error) => {
                    tally.errors.push(format!("request: {error}"));
                    break;
                }
            };
            let status = response.status();
            let close = response
                .headers()
                .get(http::header::CONNECTION)
                .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
            if let Err(error) = response.into_body().collect().await {
                tally.errors.push(format!("body: {error}"));
                break;
            }
            if status.is_success() {
                tally.ok += 1;
                tally.samples.push((Instant::now(), sent.elapsed()));
                done.fetch_add(1, Ordering::Relaxed);
            } else {
                tally.errors.push(format!("status {status}"));
            }
            if close {
                break;
            }
        }
    }
    tally
}

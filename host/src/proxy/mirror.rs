//! Mirroring (`mirror`): a copy of a route's requests, or a sampled share of them, goes to
//! another group. The copy runs on its own task, its response is read and dropped, and
//! nothing about it reaches the client: it can neither fail nor slow the request it copies.
//! Copies in flight are bounded, so a slow mirror cannot build up memory; each is counted in
//! `wasmgate_mirror_requests_total` by how it ended.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::request::Parts;
use http::uri::PathAndQuery;
use prometheus_client::metrics::counter::Counter;
use tokio::sync::Semaphore;

use crate::metrics::{Metrics, MirrorLabels};
use crate::upstream::{self, Group, UpstreamClient};

/// How a copy ended, as `outcome` labels it.
#[derive(Clone, Copy)]
enum Ending {
    /// The mirror answered (any status).
    Answered,
    /// It failed or timed out.
    Failed,
    /// Every place in flight was taken: not sent.
    Dropped,
    /// The request's body streams (it is not kept to send again): not sent.
    Streamed,
}

impl Ending {
    const ALL: [Ending; 4] = [Ending::Answered, Ending::Failed, Ending::Dropped, Ending::Streamed];

    fn label(self) -> &'static str {
        match self {
            Ending::Answered => "answered",
            Ending::Failed => "failed",
            Ending::Dropped => "dropped",
            Ending::Streamed => "streamed-body",
        }
    }
}

/// A route's mirror, ready.
pub(crate) struct Mirror {
    group: Arc<Group>,
    client: Arc<UpstreamClient>,
    percent: u64,
    seen: AtomicU64,
    in_flight: Arc<Semaphore>,
    timeout: Duration,
    /// By [`Ending`] order.
    counted: [Counter; 4],
}

impl Mirror {
    pub(crate) fn new(
        config: &crate::config::Mirror,
        group: Arc<Group>,
        client: Arc<UpstreamClient>,
        route: &Arc<String>,
        metrics: &Metrics,
    ) -> Self {
        let counted = Ending::ALL.map(|ending| {
            let labels = MirrorLabels { route: route.clone(), outcome: ending.label() };
            metrics.mirror_requests.get_or_create(&labels).clone()
        });
        Mirror {
            group,
            client,
            percent: u64::from(config.percent),
            seen: AtomicU64::new(0),
            in_flight: Arc::new(Semaphore::new(config.max_in_flight)),
            timeout: config.timeout,
            counted,
        }
    }

    /// Whether this request is among the share copied: evenly spread, `percent` in every 100.
    pub(crate) fn takes(&self) -> bool {
        if self.percent >= 100 {
            return true;
        }
        let n = self.seen.fetch_add(1, Ordering::Relaxed);
        (n + 1) * self.percent / 100 != n * self.percent / 100
    }

    /// Sends a copy of `request` with `body` (`None`: the body streams and is not kept, so no
    /// copy goes) on a task of its own.
    pub(crate) fn send(&self, request: &Parts, body: Option<&Bytes>) {
        let Some(body) = body else {
            return self.count(Ending::Streamed);
        };
        let Ok(permit) = self.in_flight.clone().try_acquire_owned() else {
            return self.count(Ending::Dropped);
        };
        let path = request.uri.path_and_query().cloned().unwrap_or_else(|| PathAndQuery::from_static("/"));
        let call = upstream::Call {
            method: request.method.clone(),
            path,
            headers: request.headers.clone(),
            body: body.clone(),
        };
        let (group, client, timeout) = (self.group.clone(), self.client.clone(), self.timeout);
        let [answered, failed, ..] = &self.counted;
        let (answered, failed) = (answered.clone(), failed.clone());
        tokio::spawn(async move {
            let result = upstream::call(&group, &client, call, timeout).await;
            drop(permit);
            match result {
                Ok(_) | Err(upstream::CallError::TooLarge) => answered.inc(),
                Err(error) => {
                    tracing::debug!(group = %group.name(), %error, "mirrored request failed");
                    failed.inc()
                }
            };
        });
    }

    fn count(&self, ending: Ending) {
        self.counted[ending as usize].inc();
    }
}

//! Routes: which requests a route takes (host, path prefix, methods) and what it does with them
//! (its plugin chain and upstream group). Routes are tried in config order; the first match wins.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use http::Method;

use crate::config::{RetryOn, RouteConfig, RouteTimeouts};
use crate::metrics::{Metrics, NameLabel, Timing};
use crate::plugin::{Phase, Plugin};
use crate::upstream::{Group, UpstreamClient};

/// How a route matches the host.
#[derive(Debug)]
pub(crate) enum HostMatch {
    Any,
    /// Exactly this host (lowercase, no port).
    Exact(String),
    /// Any subdomain: the suffix starts with a dot (`.example.org`).
    Suffix(String),
}

impl HostMatch {
    pub(crate) fn new(pattern: Option<&str>) -> Self {
        match pattern {
            None => HostMatch::Any,
            Some(p) => match p.strip_prefix('*') {
                Some(suffix) => HostMatch::Suffix(suffix.to_ascii_lowercase()),
                None => HostMatch::Exact(p.to_ascii_lowercase()),
            },
        }
    }

    fn matches(&self, host: &str) -> bool {
        match self {
            HostMatch::Any => true,
            HostMatch::Exact(h) => host.eq_ignore_ascii_case(h),
            HostMatch::Suffix(s) => {
                host.len() > s.len()
                    && host.is_char_boundary(host.len() - s.len())
                    && host[host.len() - s.len()..].eq_ignore_ascii_case(s)
            }
        }
    }
}

/// When a failed upstream attempt is tried again, and how many retries may run at once.
#[derive(Debug, Default)]
pub(crate) struct RetryPolicy {
    /// Further attempts after the first.
    pub(crate) retries: u32,
    /// Request bodies up to this size are buffered so that they can be sent again.
    pub(crate) buffer: usize,
    connect_failure: bool,
    refused_stream: bool,
    reset: bool,
    statuses: [bool; 3],
    budget_percent: u32,
    active: AtomicU32,
    retrying: AtomicU32,
}

/// A request counted as in progress on its route, for the retry budget.
pub(crate) struct Active<'a>(&'a AtomicU32);

impl Drop for Active<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl RetryPolicy {
    /// Counts a request in progress until the guard is dropped.
    pub(crate) fn enter(&self) -> Active<'_> {
        self.active.fetch_add(1, Ordering::Relaxed);
        Active(&self.active)
    }

    /// A place in the retry budget, if there is one left; held for the retry's attempt.
    pub(crate) fn try_retry(&self) -> Option<Active<'_>> {
        let active = self.active.load(Ordering::Relaxed);
        let allowed = (active.saturating_mul(self.budget_percent) / 100).max(3);
        let before = self.retrying.fetch_add(1, Ordering::Relaxed);
        let guard = Active(&self.retrying);
        (before < allowed).then_some(guard)
    }

    pub(crate) fn new(retries: u32, buffer: usize, budget_percent: u32, on: &[RetryOn]) -> Self {
        RetryPolicy {
            retries,
            buffer,
            budget_percent,
            active: AtomicU32::new(0),
            retrying: AtomicU32::new(0),
            connect_failure: on.contains(&RetryOn::ConnectFailure),
            refused_stream: on.contains(&RetryOn::RefusedStream),
            reset: on.contains(&RetryOn::Reset),
            statuses: [
                on.contains(&RetryOn::Status502),
                on.contains(&RetryOn::Status503),
                on.contains(&RetryOn::Status504),
            ],
        }
    }

    pub(crate) fn on_connect_failure(&self) -> bool {
        self.connect_failure
    }

    pub(crate) fn on_refused_stream(&self) -> bool {
        self.refused_stream
    }

    pub(crate) fn on_reset(&self) -> bool {
        self.reset
    }

    pub(crate) fn on_status(&self, status: http::StatusCode) -> bool {
        match status.as_u16() {
            502 => self.statuses[0],
            503 => self.statuses[1],
            504 => self.statuses[2],
            _ => false,
        }
    }
}

/// One route, ready to serve.
pub(crate) struct Route {
    pub(crate) name: Arc<str>,
    /// The name as a metrics label, and the route's request latency.
    pub(crate) label: Arc<String>,
    pub(crate) seconds: Timing,
    pub(crate) host: HostMatch,
    pub(crate) path_prefix: String,
    pub(crate) methods: Vec<Method>,
    pub(crate) group: Arc<Group>,
    pub(crate) client: Arc<UpstreamClient>,
    pub(crate) retry: RetryPolicy,
    pub(crate) timeouts: RouteTimeouts,
    /// Plain-HTTP requests are redirected to HTTPS on this port.
    pub(crate) redirect_https: Option<u16>,
    /// Request bodies read whole up to this size before the upstream is chosen.
    pub(crate) request_buffer: Option<usize>,
    /// WebSocket upgrades are tunnelled, with this idle timeout; refused if `None`.
    pub(crate) websocket: Option<std::time::Duration>,
    /// The chain, in config order, per phase: the proxy walks only plugins that have the phase.
    pub(crate) request_headers: Vec<Arc<Plugin>>,
    pub(crate) request_body: Vec<Arc<Plugin>>,
    pub(crate) select_upstream: Vec<Arc<Plugin>>,
    pub(crate) upstream_request: Vec<Arc<Plugin>>,
    pub(crate) upstream_error: Vec<Arc<Plugin>>,
    /// Response phases run in reverse chain order, so the first plugin sees the final response.
    pub(crate) response_headers: Vec<Arc<Plugin>>,
    pub(crate) response_body: Vec<Arc<Plugin>>,
    pub(crate) response_trailers: Vec<Arc<Plugin>>,
    pub(crate) log: Vec<Arc<Plugin>>,
}

impl Route {
    /// Route `index` of the config, with its plugin chain, group and client resolved.
    pub(crate) fn new(
        index: usize,
        config: &RouteConfig,
        chain: &[Arc<Plugin>],
        group: Arc<Group>,
        client: Arc<UpstreamClient>,
        metrics: &Metrics,
    ) -> Self {
        let name = config.name.clone().unwrap_or_else(|| format!("route-{index}"));
        let label = Arc::new(name.clone());
        let seconds = metrics.request_seconds.get_or_create(&NameLabel { name: label.clone() }).clone();
        let with = |phase: Phase| chain.iter().filter(|p| p.has(phase)).cloned().collect::<Vec<_>>();
        let reversed = |phase: Phase| {
            let mut plugins = with(phase);
            plugins.reverse();
            plugins
        };
        Route {
            name: Arc::from(name),
            label,
            seconds,
            host: HostMatch::new(config.host.as_deref()),
            path_prefix: config.path_prefix.clone(),
            methods: config.methods.clone(),
            group,
            client,
            retry: RetryPolicy::new(
                config.retries,
                config.retry_buffer,
                config.retry_budget,
                &config.retry_on,
            ),
            timeouts: config.timeouts,
            request_buffer: config.request_buffer,
            redirect_https: config.redirect_https,
            websocket: config.websocket.then_some(config.tunnel_idle),
            request_headers: with(Phase::RequestHeaders),
            request_body: with(Phase::RequestBody),
            select_upstream: with(Phase::SelectUpstream),
            upstream_request: with(Phase::UpstreamRequest),
            upstream_error: with(Phase::UpstreamError),
            response_headers: reversed(Phase::ResponseHeaders),
            response_body: reversed(Phase::ResponseBody),
            response_trailers: reversed(Phase::ResponseTrailers),
            log: reversed(Phase::Log),
        }
    }

    fn matches(&self, host: &str, path: &str, method: &Method) -> bool {
        prefix_matches(&self.path_prefix, path)
            && (self.methods.is_empty() || self.methods.contains(method))
            && self.host.matches(host)
    }

    /// True when a phase after forwarding may read the request head, so it must be kept.
    pub(crate) fn reads_request_after_forward(&self) -> bool {
        !self.response_headers.is_empty()
            || !self.response_body.is_empty()
            || !self.response_trailers.is_empty()
            || !self.upstream_error.is_empty()
            || !self.log.is_empty()
    }

    /// True when the response body needs the exchange: response-body, trailer or log plugins.
    pub(crate) fn follows_response_body(&self) -> bool {
        !self.response_body.is_empty() || !self.response_trailers.is_empty() || !self.log.is_empty()
    }
}

/// `/api` takes `/api` and `/api/...` but not `/apix`: prefixes end at a segment boundary.
fn prefix_matches(prefix: &str, path: &str) -> bool {
    path.strip_prefix(prefix)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/') || prefix.ends_with('/'))
}

/// Every route, in config order.
pub(crate) struct Router {
    routes: Vec<Arc<Route>>,
}

impl Router {
    pub(crate) fn new(routes: Vec<Arc<Route>>) -> Self {
        Router { routes }
    }

    /// The first route that takes the request.
    pub(crate) fn find(&self, host: &str, path: &str, method: &Method) -> Option<&Arc<Route>> {
        self.routes.iter().find(|r| r.matches(host, path, method))
    }
}

#[cfg(test)]
mod tests {
    use super::{HostMatch, prefix_matches};

    #[test]
    fn the_retry_budget_allows_a_share_of_requests_in_progress_and_at_least_three() {
        let policy = super::RetryPolicy::new(1, 0, 20, &[]);
        let active: Vec<_> = (0..20).map(|_| policy.enter()).collect();
        let retries: Vec<_> = (0..10).filter_map(|_| policy.try_retry()).collect();
        assert_eq!(retries.len(), 4, "20% of 20 requests in progress");
        drop(retries);
        drop(active);
        let few: Vec<_> = (0..10).filter_map(|_| policy.try_retry()).collect();
        assert_eq!(few.len(), 3, "at least three, however quiet the route");
    }

    #[test]
    fn prefixes_end_at_segment_boundaries() {
        assert!(prefix_matches("/", "/anything"));
        assert!(prefix_matches("/api", "/api"));
        assert!(prefix_matches("/api", "/api/v1"));
        assert!(!prefix_matches("/api", "/apix"));
        assert!(prefix_matches("/api/", "/api/v1"));
        assert!(!prefix_matches("/api/", "/api"));
    }

    #[test]
    fn host_patterns() {
        assert!(HostMatch::new(None).matches("anything"));
        assert!(HostMatch::new(Some("Api.Example.org")).matches("api.example.org"));
        assert!(!HostMatch::new(Some("api.example.org")).matches("www.example.org"));
        let wildcard = HostMatch::new(Some("*.example.org"));
        assert!(wildcard.matches("a.example.org"));
        assert!(wildcard.matches("a.b.EXAMPLE.org"));
        assert!(!wildcard.matches("example.org"));
        assert!(!wildcard.matches("badexample.org"));
    }
}

//! Routes: what a route does with the requests it takes (its own edits, plugin chain, where
//! the request goes ([`Split`], [`Mirror`]) or the answer it gives itself ([`Answer`]),
//! retries and timeouts; what it takes is [`RouteMatch`]'s). Routes are tried in config order;
//! the first match wins.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::request::Parts;

use super::ProxyError;
use super::answer::{Answer, Redirect};
use super::matcher::RouteMatch;
use super::mirror::Mirror;
use super::split::Split;
use crate::config::{HeaderEdits, RetryOn, RouteConfig, RouteTimeouts};
use crate::head::{self, PathEdit};
use crate::metrics::{Metrics, NameLabel, Timing};
use crate::plugin::{ChainOrder, Phase, Plugin};
use crate::upstream::{Upstreams, retry_on_status};

/// When a failed upstream attempt is tried again, and how many retries may run at once.
#[derive(Debug, Default)]
pub(crate) struct RetryPolicy {
    /// Further attempts after the first.
    pub(crate) retries: u32,
    /// Request bodies up to this size are buffered so that they can be sent again.
    pub(crate) buffer: usize,
    /// The `retry_on` conditions, one bit each.
    on: u8,
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
            on: on.iter().fold(0, |bits, &condition| bits | bit(condition)),
        }
    }

    /// Whether the route's `retry_on` names `condition`.
    pub(crate) fn on(&self, condition: RetryOn) -> bool {
        self.on & bit(condition) != 0
    }

    /// Whether the route retries on a response with `status`.
    pub(crate) fn on_status(&self, status: http::StatusCode) -> bool {
        retry_on_status(status).is_some_and(|condition| self.on(condition))
    }
}

fn bit(condition: RetryOn) -> u8 {
    1 << condition as u8
}

/// One route, ready to serve.
pub(crate) struct Route {
    pub(crate) name: Arc<str>,
    /// The name as a metrics label, and the route's request latency.
    pub(crate) label: Arc<String>,
    pub(crate) seconds: Timing,
    /// What the route takes.
    matcher: RouteMatch,
    /// The route's own rewrite of the request's path and host.
    rewrite: Option<Rewrite>,
    /// The route's own edits of the request head, before its plugins.
    request_headers: HeadEdits,
    /// The route's own edits of the upstream's response head, before its plugins.
    pub(crate) response_headers: HeadEdits,
    /// The groups the route's requests go to (none on a route that answers itself).
    pub(crate) split: Split,
    /// Where copies of the route's requests go.
    pub(crate) mirror: Option<Mirror>,
    /// The route's own answer, instead of an upstream's.
    pub(crate) answer: Option<Answer>,
    pub(crate) retry: RetryPolicy,
    pub(crate) timeouts: RouteTimeouts,
    /// Plain-HTTP requests are redirected to HTTPS (`redirect_https`).
    pub(crate) redirect_https: Option<Redirect>,
    /// Request bodies read whole up to this size before the upstream is chosen.
    pub(crate) request_buffer: Option<usize>,
    /// WebSocket upgrades are tunnelled, with this idle timeout; refused if `None`.
    pub(crate) websocket: Option<std::time::Duration>,
    /// Responses are compressed for clients that accept it.
    pub(crate) compress: Option<super::compress::Compression>,
    /// Responses are stored and served from memory.
    pub(crate) cache: Option<Arc<crate::cache::HttpCache>>,
    /// Writes a sample of the route's requests for `plugin test` to replay.
    pub(crate) record: Option<Arc<crate::recording::Recorder>>,
    /// The chain, in config order, per phase: the proxy walks only plugins that have the phase.
    /// The route's plugins that implement each phase, by [`Phase::index`], in the order that
    /// phase runs them ([`Phase::order`]).
    chains: [Vec<Arc<Plugin>>; Phase::ALL.len()],
}

impl Route {
    /// Route `index` of the config, with its plugin chain and groups resolved; fails, naming
    /// the field, on a pattern that does not compile or a group that is not there.
    pub(crate) fn new(
        index: usize,
        config: &RouteConfig,
        chain: &[Arc<Plugin>],
        upstreams: &Upstreams,
        metrics: &Metrics,
        cache: Option<Arc<crate::cache::HttpCache>>,
        record: Option<Arc<crate::recording::Recorder>>,
    ) -> Result<Self, (String, String)> {
        let field = |f: &str| format!("routes[{index}].{f}");
        let matcher = RouteMatch::new(config).map_err(|(f, reason)| (field(&f), reason))?;
        let resolve = |name: &str| match (upstreams.get(name), upstreams.client(name)) {
            (Some(group), Some(client)) => Ok((group.clone(), client)),
            _ => Err((field("upstream"), format!("no upstream group `{name}`"))),
        };
        let mut sides = Vec::new();
        for (group, weight) in config.groups() {
            let (group, client) = resolve(group.get_ref())?;
            sides.push((group, client, weight));
        }
        let name = config.name_at(index);
        let label = Arc::new(name.clone());
        let mirror = match &config.mirror {
            Some(m) => {
                let (group, client) = resolve(m.upstream.get_ref())?;
                Some(Mirror::new(m, group, client, &label, metrics))
            }
            None => None,
        };
        let seconds = metrics.request_seconds.get_or_create(&NameLabel { name: label.clone() }).clone();
        let compress =
            config.compress.as_ref().map(|c| super::compress::Compression::new(c, &label, metrics));
        let chains = Phase::ALL.map(|phase| {
            let mut plugins: Vec<_> = chain.iter().filter(|p| p.has(phase)).cloned().collect();
            if phase.order() == ChainOrder::Reverse {
                plugins.reverse();
            }
            plugins
        });
        Ok(Route {
            name: Arc::from(name),
            label,
            seconds,
            matcher,
            rewrite: config.rewrite.as_ref().map(|r| Rewrite {
                path: PathEdit::new(r.path.as_ref(), r.prefix.as_ref(), &config.path_prefix),
                host: r.host.as_deref().and_then(|h| HeaderValue::from_str(h).ok()),
            }),
            request_headers: HeadEdits::new(&config.request_headers),
            response_headers: HeadEdits::new(&config.response_headers),
            split: Split::new(sides, config.sticky.as_ref()),
            mirror,
            answer: Answer::new(config),
            retry: RetryPolicy::new(
                config.retries,
                config.retry_buffer,
                config.retry_budget,
                &config.retry_on,
            ),
            timeouts: config.timeouts,
            request_buffer: config.request_buffer,
            redirect_https: config.redirect_https.map(Redirect::https),
            websocket: config.websocket.then_some(config.tunnel_idle),
            compress,
            cache,
            record,
            chains,
        })
    }

    fn matches(&self, host: &str, request: &Parts) -> bool {
        self.matcher.matches(host, request)
    }

    /// The route's own edits of the request (rewrite, then headers), before its plugins see
    /// it; a rewrite that leaves no valid target is a 400.
    pub(crate) fn edit_request(&self, request: &mut Parts) -> Result<(), ProxyError> {
        if let Some(rewrite) = &self.rewrite {
            rewrite.apply(request)?;
        }
        self.request_headers.apply(&mut request.headers);
        Ok(())
    }

    /// The route's plugins that implement `phase`, in the order they run.
    pub(crate) fn chain(&self, phase: Phase) -> &[Arc<Plugin>] {
        &self.chains[phase.index()]
    }

    /// True when some plugin of the route implements `phase`.
    pub(crate) fn has(&self, phase: Phase) -> bool {
        !self.chain(phase).is_empty()
    }

    /// True when a phase after forwarding may read the request head, so it must be kept (the
    /// cache keeps it with what it stores, for refreshes).
    pub(crate) fn reads_request_after_forward(&self) -> bool {
        self.cache.is_some()
            || [
                Phase::UpstreamError,
                Phase::ResponseHeaders,
                Phase::ResponseBody,
                Phase::ResponseTrailers,
                Phase::Log,
            ]
            .into_iter()
            .any(|phase| self.has(phase))
    }

    /// True when the response body needs the exchange: response-body, trailer or log plugins.
    pub(crate) fn follows_response_body(&self) -> bool {
        [Phase::ResponseBody, Phase::ResponseTrailers, Phase::Log].into_iter().any(|phase| self.has(phase))
    }
}

/// `rewrite = { ... }`, ready: see [`crate::config::Rewrite`].
#[derive(Debug)]
struct Rewrite {
    path: Option<PathEdit>,
    host: Option<HeaderValue>,
}

impl Rewrite {
    fn apply(&self, request: &mut Parts) -> Result<(), ProxyError> {
        if let Some(edit) = &self.path {
            let new = edit.apply(request.uri.path());
            request.uri = head::with_target(&request.uri, &new, request.uri.query())?;
        }
        if let Some(host) = &self.host {
            request.headers.insert(header::HOST, host.clone());
        }
        Ok(())
    }
}

/// `request_headers` or `response_headers`, parsed once (the config check refused invalid
/// names and values).
#[derive(Debug, Default)]
pub(crate) struct HeadEdits {
    set: Vec<(HeaderName, HeaderValue)>,
    add: Vec<(HeaderName, HeaderValue)>,
    remove: Vec<HeaderName>,
}

impl HeadEdits {
    fn new(config: &HeaderEdits) -> Self {
        let parse = |(name, value): (&String, &String)| {
            Some((HeaderName::from_bytes(name.as_bytes()).ok()?, HeaderValue::from_str(value).ok()?))
        };
        HeadEdits {
            set: config.set.iter().filter_map(parse).collect(),
            add: config.add.iter().filter_map(parse).collect(),
            remove: config.remove.iter().filter_map(|n| HeaderName::from_bytes(n.as_bytes()).ok()).collect(),
        }
    }

    /// Removes, then sets, then adds.
    pub(crate) fn apply(&self, headers: &mut HeaderMap) {
        for name in &self.remove {
            headers.remove(name);
        }
        for (name, value) in &self.set {
            headers.insert(name.clone(), value.clone());
        }
        for (name, value) in &self.add {
            headers.append(name.clone(), value.clone());
        }
    }
}

/// Every route, in config order.
pub(crate) struct Router {
    routes: Vec<Arc<Route>>,
}

impl Router {
    pub(crate) fn new(routes: Vec<Arc<Route>>) -> Self {
        Router { routes }
    }

    /// Each route that an earlier one leaves no request to, with the earlier: the later can
    /// never match.
    /// The routes, in match order.
    pub(crate) fn routes(&self) -> &[Arc<Route>] {
        &self.routes
    }

    pub(crate) fn shadowed(&self) -> Vec<(&str, &str)> {
        let mut shadowed = Vec::new();
        for (j, later) in self.routes.iter().enumerate() {
            if let Some(earlier) = self.routes[..j].iter().find(|e| e.matcher.covers(&later.matcher)) {
                shadowed.push((&*earlier.name, &*later.name));
            }
        }
        shadowed
    }

    /// The first route that takes the request for `host`.
    pub(crate) fn find(&self, host: &str, request: &Parts) -> Option<&Arc<Route>> {
        self.routes.iter().find(|r| r.matches(host, request))
    }
}

#[cfg(test)]
mod tests {
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
}

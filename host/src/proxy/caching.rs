//! The route's cache in the request pipeline: the lookup after `on-request-headers` (a fresh
//! entry answers, a stale one is revalidated or served while one background request refreshes
//! it, a miss waits for the request already filling its key), the origin's answer after the
//! forward step (a 304 refreshes the entry, a failure may be answered stale), and the offer of
//! the origin's response to the cache after `on-response-headers`. A response from the origin
//! or the cache says what the cache did in `cache-status` (RFC 9211).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::uri::PathAndQuery;
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use hyper::body::Incoming;

use super::split::Target;
use super::{ProxyBody, Route};
use crate::cache::policy::Directives;
use crate::cache::{CacheResult, Entry, Hit, HttpCache, Leader, Lookup, Offer, Turn};
use crate::head::{self, request_host};
use crate::plugin::Exchange;
use crate::timed::{self, Timed};
use crate::upstream::{Group, UpstreamBody, UpstreamClient};

/// The header that says what the cache did.
static CACHE_STATUS: header::HeaderName = header::HeaderName::from_static("cache-status");

/// A request's way through the cache, decided at lookup.
pub(super) enum Visit {
    /// A stored response answers.
    Stored(Stored),
    /// The request goes upstream; what the cache makes of the answer.
    Forward(Caching),
}

/// An answer from the cache, before the response phases.
pub(super) struct Stored {
    pub(super) parts: http::response::Parts,
    pub(super) body: Bytes,
    pub(super) result: CacheResult,
    /// The entry, when this is its whole body: compression keeps its copy with it.
    pub(super) hit: Option<Hit>,
}

/// What the cache makes of a request that goes upstream.
pub(super) struct Caching {
    cache: Arc<HttpCache>,
    pub(super) result: CacheResult,
    /// `cache-status` parameters after the result's own.
    detail: Option<&'static str>,
    miss: Option<Miss>,
}

/// A lookup that found no entry to answer with.
struct Miss {
    key: Arc<str>,
    /// The request's head as looked up: its `Vary` values pick the variant stored.
    request: HeaderMap,
    /// The entry being revalidated.
    stale: Option<Arc<Entry>>,
    /// Other misses for the key wait while this is held.
    leader: Option<Leader>,
    /// The answer may be stored (not a HEAD, a range or a `no-store` request).
    fills: bool,
}

/// Looks the request up in `cache`, for the request head as `on-request-headers` left it.
pub(super) async fn visit(
    cache: &Arc<HttpCache>,
    route: &Arc<Route>,
    target: &Target,
    ex: &mut Exchange,
) -> Visit {
    let bypass = |detail| {
        Visit::Forward(Caching {
            cache: cache.clone(),
            result: CacheResult::Bypass,
            detail: Some(detail),
            miss: None,
        })
    };
    let method = ex.request.method.clone();
    if method != Method::GET && method != Method::HEAD {
        return bypass("fwd=method");
    }
    if ex.cache.bypass {
        return bypass("fwd=bypass; detail=plugin");
    }
    let directives = Directives::of(&ex.request.headers);
    let key = key_of(ex);
    let mut lookup = cache.lookup(&key, &directives, &ex.request.headers);
    let ranged = ex.request.headers.contains_key(header::RANGE);
    let mut leader = None;
    let mut collapsed = false;
    if matches!(lookup, Lookup::Miss) && method == Method::GET && !ranged {
        match cache.turn(&key) {
            Turn::Lead(lead) => leader = Some(lead),
            Turn::Wait(mut filled) => {
                // Woken when the fill ends, stored or not; a waiter past the timeout goes on.
                let _ = tokio::time::timeout(cache.config().lock_timeout, filled.changed()).await;
                collapsed = true;
                lookup = cache.lookup(&key, &directives, &ex.request.headers);
            }
        }
    }
    let now = Instant::now();
    let answer = |entry: &Arc<Entry>, result, detail: String, request: &HeaderMap| {
        cache.count(result);
        Visit::Stored(
            stored(entry, result, &detail, &method, request, now).whole(cache, &key, entry, &method),
        )
    };
    match lookup {
        Lookup::Fresh(entry) => {
            let ttl = match entry.standing(now) {
                crate::cache::Standing::Fresh(left) => left.as_secs(),
                _ => 0,
            };
            let collapsed = if collapsed { "; collapsed" } else { "" };
            answer(&entry, CacheResult::Hit, format!("hit; ttl={ttl}{collapsed}"), &ex.request.headers)
        }
        Lookup::WhileRevalidate(entry) => {
            if entry.begin_refresh() {
                spawn_refresh(cache.clone(), key.clone(), entry.clone(), route.clone(), target);
            }
            let stale = entry.age(now).saturating_sub(entry.freshness.lifetime).as_secs();
            let detail = format!("hit; ttl=-{stale}; detail=stale-while-revalidate");
            answer(&entry, CacheResult::Stale, detail, &ex.request.headers)
        }
        Lookup::Stale(_) | Lookup::Miss if directives.only_if_cached => {
            cache.count(CacheResult::Miss);
            let mut parts = http::Response::new(()).into_parts().0;
            parts.status = StatusCode::GATEWAY_TIMEOUT;
            parts.headers.insert(CACHE_STATUS.clone(), status_value("fwd=miss; detail=only-if-cached"));
            Visit::Stored(Stored { parts, body: Bytes::new(), result: CacheResult::Miss, hit: None })
        }
        Lookup::Stale(entry) => {
            // Our validators in place of the client's: a 304 then refreshes the entry, and the
            // client's own condition is answered from it.
            let request = ex.request.headers.clone();
            for name in [header::IF_NONE_MATCH, header::IF_MODIFIED_SINCE] {
                ex.request.headers.remove(name);
            }
            for (name, value) in entry.validators() {
                ex.request.headers.insert(name, value);
            }
            let miss =
                Miss { key, request, stale: Some(entry), leader, fills: fills(&method, &directives, ranged) };
            Visit::Forward(Caching {
                cache: cache.clone(),
                result: CacheResult::Miss,
                detail: None,
                miss: Some(miss),
            })
        }
        Lookup::Miss => {
            let request = ex.request.headers.clone();
            let miss = Miss { key, request, stale: None, leader, fills: fills(&method, &directives, ranged) };
            let detail = ranged.then_some("detail=range");
            Visit::Forward(Caching {
                cache: cache.clone(),
                result: CacheResult::Miss,
                detail,
                miss: Some(miss),
            })
        }
    }
}

/// The conditional request fields: a background refresh sends none of the client's.
const CONDITIONS: [header::HeaderName; 5] = [
    header::IF_NONE_MATCH,
    header::IF_MODIFIED_SINCE,
    header::IF_MATCH,
    header::IF_UNMODIFIED_SINCE,
    header::IF_RANGE,
];

/// `entry`'s answer to a `method` request with `request` headers, marked `cache-status: detail`.
fn stored(
    entry: &Entry,
    result: CacheResult,
    detail: &str,
    method: &Method,
    request: &HeaderMap,
    now: Instant,
) -> Stored {
    let (status, mut headers, body) = entry.answer(method, request, now);
    headers.insert(CACHE_STATUS.clone(), status_value(detail));
    let mut parts = http::Response::new(()).into_parts().0;
    parts.status = status;
    parts.headers = headers;
    Stored { parts, body, result, hit: None }
}

impl Stored {
    /// Lets compression keep its copy with `entry` when this answers a GET with its whole body.
    fn whole(mut self, cache: &Arc<HttpCache>, key: &Arc<str>, entry: &Arc<Entry>, method: &Method) -> Self {
        if *method == Method::GET
            && self.parts.status == StatusCode::OK
            && self.body.len() == entry.body.len()
        {
            self.hit = Some(Hit::new(cache.clone(), key.clone(), entry.clone()));
        }
        self
    }
}

fn fills(method: &Method, request: &Directives, ranged: bool) -> bool {
    *method == Method::GET && !ranged && !request.no_store
}

/// The request's key: a plugin's, or its host and path-and-query; then the parts plugins added.
fn key_of(ex: &Exchange) -> Arc<str> {
    let steer = &ex.cache;
    let mut key = match &steer.key {
        Some(key) => key.clone(),
        None => {
            let path = ex.request.uri.path_and_query().map_or("/", PathAndQuery::as_str);
            let host = request_host(&ex.request).unwrap_or_default();
            let mut key = String::with_capacity(host.len() + path.len() + steer.parts.len());
            key.push_str(host);
            key.push_str(path);
            key
        }
    };
    key.push_str(&steer.parts);
    Arc::from(key)
}

fn status_value(detail: &str) -> HeaderValue {
    HeaderValue::try_from(format!("wasmgate; {detail}")).unwrap_or(HeaderValue::from_static("wasmgate"))
}

/// What the origin's answer (or failure) becomes.
pub(super) enum Answered {
    /// The stored entry answers instead.
    Stored(Stored),
    /// The origin's response goes on.
    Upstream,
}

impl Caching {
    /// After the forward step: an origin's 304 to a revalidation refreshes the entry, which
    /// answers; a failure (`failed`, or a 5xx `status`) is answered by the stale entry while its
    /// `stale-if-error` allows.
    pub(super) fn answered(
        &mut self,
        method: &Method,
        status: Option<StatusCode>,
        fields: Option<&HeaderMap>,
        took: Duration,
    ) -> Answered {
        let Some(miss) = &mut self.miss else { return Answered::Upstream };
        let Some(stale) = miss.stale.clone() else { return Answered::Upstream };
        let now = Instant::now();
        let (entry, result, detail) = match (status, fields) {
            (Some(StatusCode::NOT_MODIFIED), Some(fields)) => {
                match self.cache.refresh(miss.key.clone(), &stale, fields, took) {
                    Some(entry) => (entry, CacheResult::Revalidated, "fwd=stale; fwd-status=304".to_owned()),
                    None => (
                        stale,
                        CacheResult::Revalidated,
                        "fwd=stale; fwd-status=304; detail=not-stored".to_owned(),
                    ),
                }
            }
            (status, _) if status.is_none_or(|s| s.is_server_error()) && stale.serves_on_error(now) => {
                let code = status.map_or(0, |s| s.as_u16());
                (stale, CacheResult::Stale, format!("fwd=stale; fwd-status={code}; detail=stale-if-error"))
            }
            _ => return Answered::Upstream,
        };
        // The fill is over: a waiter finds the refreshed entry.
        miss.leader = None;
        self.result = result;
        let answer = stored(&entry, result, &detail, method, &miss.request, now);
        Answered::Stored(answer.whole(&self.cache, &miss.key, &entry, method))
    }

    /// The origin's response head, copied before plugins edit it, when it may be stored.
    pub(super) fn offered_head(&self, parts: &http::response::Parts) -> Option<(StatusCode, HeaderMap)> {
        self.miss.as_ref().filter(|m| m.fills).map(|_| (parts.status, parts.headers.clone()))
    }

    /// After `on-response-headers`: offers the origin's head to the cache, marks the response
    /// sent with `cache-status`, and wraps its body to fill the cache when it is stored.
    pub(super) fn offer(
        mut self,
        head: Option<(StatusCode, HeaderMap)>,
        ex: &Exchange,
        response: &mut http::response::Parts,
        body: Timed<Incoming>,
        took: Duration,
        in_flight: Option<crate::upstream::InFlight>,
    ) -> ProxyBody {
        let fill = match (self.miss.take(), head) {
            (Some(miss), Some((status, headers))) => {
                let path = ex.request.uri.path_and_query().cloned().unwrap_or(PathAndQuery::from_static("/"));
                let offer = Offer {
                    key: miss.key,
                    method: &ex.request.method,
                    request: &miss.request,
                    upstream_request: Some((path, refresh_head(&ex.request.headers))),
                    status,
                    headers,
                    took,
                    ttl: ex.cache.ttl,
                };
                Some(self.cache.admit(offer, miss.leader))
            }
            _ => None,
        };
        let detail = match (&fill, self.detail) {
            (_, Some(detail)) => detail.to_owned(),
            (Some(Ok(_)), None) => "fwd=miss; stored".to_owned(),
            (Some(Err(why)), None) => format!("fwd=miss; detail={}", why.detail()),
            (None, None) => "fwd=miss".to_owned(),
        };
        response.headers.insert(CACHE_STATUS.clone(), status_value(&detail));
        match fill {
            Some(Ok(fill)) => ProxyBody::filling(fill.into_body(body), in_flight),
            _ => ProxyBody::upstream(body, in_flight),
        }
    }
}

impl Drop for Caching {
    /// Counted once, with what came of it in the end (a miss may end revalidated or stale).
    fn drop(&mut self) {
        self.cache.count(self.result);
    }
}

/// The upstream request kept for a background refresh: without the client's conditions
/// (the refresh sends the entry's own).
fn refresh_head(headers: &HeaderMap) -> HeaderMap {
    let mut headers = headers.clone();
    for name in CONDITIONS.iter().chain([&header::RANGE]) {
        headers.remove(name);
    }
    headers
}

/// Refreshes `entry` in the background, from the route's group by its balancer, with the
/// request that filled it; the next request finds the result. Plugins do not run on it.
fn spawn_refresh(
    cache: Arc<HttpCache>,
    key: Arc<str>,
    entry: Arc<Entry>,
    route: Arc<Route>,
    target: &Target,
) {
    let (group, client) = (target.group.clone(), target.client.clone());
    tokio::spawn(async move {
        let refreshed = refresh(&cache, key, &entry, &route, &group, &client).await;
        if !refreshed {
            entry.end_refresh();
        }
    });
}

async fn refresh(
    cache: &Arc<HttpCache>,
    key: Arc<str>,
    entry: &Entry,
    route: &Route,
    group: &Arc<Group>,
    client: &UpstreamClient,
) -> bool {
    let Some((path, mut headers)) = entry.upstream_request.clone() else { return false };
    for (name, value) in entry.validators() {
        headers.insert(name, value);
    }
    let Some(index) = group.pick(None) else { return false };
    let backend = &group.backends()[index];
    let wait = route.timeouts.response.unwrap_or(client.response_timeout());
    let Ok(_in_flight) = group.admit(index, wait).await else { return false };
    let Ok(request) = client.request(
        backend,
        Method::GET,
        path.clone(),
        headers.clone(),
        UpstreamBody::Full(Default::default()),
    ) else {
        return false;
    };
    let limits = client.connect_limits(route.timeouts.connect, route.timeouts.tls_handshake);
    let sent = Instant::now();
    let response = match client.send(backend, request, limits, route.timeouts.response).await {
        Ok(response) => response,
        Err(error) => {
            group.record(index, true);
            tracing::debug!(route = %route.name, %error, "background cache refresh failed");
            return false;
        }
    };
    group.record(index, response.status().is_server_error());
    let took = sent.elapsed();
    let (mut parts, body) = response.into_parts();
    head::strip_hop_by_hop(&mut parts.headers);
    if parts.status == StatusCode::NOT_MODIFIED {
        return cache.refresh(key, entry, &parts.headers, took).is_some();
    }
    let offer = Offer {
        key,
        method: &Method::GET,
        request: &headers,
        upstream_request: Some((path, headers.clone())),
        status: parts.status,
        headers: parts.headers,
        took,
        ttl: entry.ttl,
    };
    let fill = match cache.admit(offer, None) {
        Ok(fill) => fill,
        Err(why) => {
            tracing::debug!(route = %route.name, reason = why.detail(), "background cache refresh not stored");
            return false;
        }
    };
    let body = Timed::new(body, "response", route.timeouts.body_idle, None);
    match timed::read_whole(body, cache.config().max_object).await {
        Ok(bytes) => {
            fill.store_whole(bytes);
            true
        }
        Err(_) => false,
    }
}

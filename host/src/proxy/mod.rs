//! The request pipeline: every step of one request, in the order they run. `docs/phases.md`
//! describes the same steps in the same order, and this module reads top to bottom in it:
//!
//! - head checks: the request head is checked and normalised (method, Host, path, hop-by-hop
//!   headers removed); a malformed request gets 400 ([`handle`]);
//! - route match: no route, 404; a route that answers itself (`redirect`, `respond`,
//!   `redirect_https`) answers here; a split route picks its side ([`handle`]);
//! - `on-request-headers`, in chain order: any plugin may answer locally ([`run_route`] from
//!   here to `on-response-headers`);
//! - `on-request-body` on a body held whole, before anything goes upstream;
//! - `select-upstream`: the first plugin with an opinion, else the group's balancer;
//! - upstream head: the forwarding headers are added;
//! - `on-upstream-request`, in chain order: any plugin may answer locally; then a copy goes to
//!   the route's mirror, if it has one;
//! - forward: connect, send, wait for the response headers, and retry where safe, with
//!   `on-request-body` on a streamed body and `on-upstream-error` after each failed attempt
//!   ([`forward`], one attempt in [`send`]);
//! - `on-response-headers`, in reverse chain order: any plugin may replace the response;
//! - the body streams to the client through `on-response-body` and `on-response-trailers`
//!   (`filter.rs`), then the route's compression, if it has one and the client accepts it
//!   (`compress.rs`); then `on-log` runs, with what happened (`body.rs`).
//!
//! A request waiting on its upstream holds no plugin instance: each phase call borrows one.

mod access;
mod answer;
mod body;
mod caching;
mod compress;
mod error;
mod filter;
mod headers;
pub mod matcher;
mod mirror;
mod route;
mod split;
mod tunnel;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Instant;

use bytes::Bytes;
use http::uri::PathAndQuery;
use http::{Request, Response, StatusCode, Version};
use http_body::Body as _;
use http_body_util::combinators::UnsyncBoxBody;
use hyper::body::Incoming;

pub(crate) use self::access::AccessLog;
pub use self::body::ProxyBody;
pub use self::error::ProxyError;
pub use self::headers::RequestLimits;
pub(crate) use self::route::{RetryPolicy, Route, Router};

use self::access::AccessEntry;
use self::body::{Outcome, Record};
use self::caching::{Answered, Visit};
use self::filter::{Direction, Filter, FilteredRequest};
use self::split::Target;
use crate::head::{self, request_host};
use crate::metrics::{Metrics, RequestLabels, Timing, method_label};
use crate::plugin::{Action, BodyVerdict, Choice, Exchange, LocalReply, OnError, Phase, UpstreamFailure};
use crate::telemetry::{RequestTrace, Span, Telemetry};
use crate::timed::{self, ReadError, Timed};
use crate::upstream::{
    Backend, Group, InFlight, UpstreamBody, UpstreamClient, UpstreamError, Upstreams, hash_key,
};

/// What the pipeline reads of one generation of the gateway; `gateway::Gateway` builds it and
/// holds it for as long as the generation serves.
pub struct Served {
    pub(crate) router: Router,
    pub(crate) upstreams: Arc<Upstreams>,
    /// Where requests are counted and timed (the runtime's registry: it outlives reloads).
    pub(crate) metrics: Arc<Metrics>,
    /// The tracer, if `[traces]` is configured; kept across reloads.
    pub(crate) telemetry: Option<Arc<Telemetry>>,
    pub(crate) access: Option<Arc<AccessLog>>,
    /// Upstream latency by group, made once per generation.
    pub(crate) upstream_seconds: HashMap<Arc<str>, Timing>,
    /// What a request head may hold beyond what the parser bounds.
    pub(crate) request_limits: RequestLimits,
}

/// Work a request leaves running after its response (WebSocket tunnels): the server counts it
/// as in flight while it drains, and cuts it at the end of the grace period.
#[derive(Debug, Clone, Default)]
pub struct Background {
    tracker: tokio_util::task::TaskTracker,
    cut_off: tokio_util::sync::CancellationToken,
}

impl Background {
    /// Tasks counted by `tracker` and cancelled with `cut_off`.
    pub fn new(tracker: tokio_util::task::TaskTracker, cut_off: tokio_util::sync::CancellationToken) -> Self {
        Background { tracker, cut_off }
    }

    fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        let cut_off = self.cut_off.clone();
        self.tracker.spawn(async move {
            tokio::select! {
                _ = task => {}
                _ = cut_off.cancelled() => {}
            }
        });
    }
}

/// The connection a request arrived on.
#[derive(Debug, Clone)]
pub struct Conn {
    /// The client's address.
    pub client: SocketAddr,
    /// True for TLS connections.
    pub tls: bool,
    /// The client's address as an `X-Forwarded-For` value, made once per connection.
    forwarded_for: http::HeaderValue,
    /// Who the client's TLS certificate says it is, if it presented one.
    pub identity: Option<Arc<str>>,
    /// Where tunnels run.
    background: Arc<Background>,
}

impl Conn {
    /// A connection from `client`.
    pub fn new(client: SocketAddr, tls: bool) -> Self {
        let forwarded_for = http::HeaderValue::from_str(&client.ip().to_string())
            .unwrap_or(http::HeaderValue::from_static("unknown"));
        Conn { client, tls, forwarded_for, identity: None, background: Arc::default() }
    }

    /// With tunnels run as `background` work.
    pub fn with_background(mut self, background: Arc<Background>) -> Self {
        self.background = background;
        self
    }

    /// With the identity from the client's certificate.
    pub fn with_identity(mut self, identity: Option<String>) -> Self {
        self.identity = identity.map(Arc::from);
        self
    }
}

/// Serves one request through every phase. Never fails: every error becomes a response here.
pub async fn handle(gw: &Served, conn: Conn, request: Request<Incoming>) -> Response<ProxyBody> {
    let started = Instant::now();
    let (mut parts, body) = request.into_parts();

    // Head checks. Hop-by-hop headers go before any plugin sees the head, so a client cannot
    // strip what a plugin adds.
    if let Err(error) =
        headers::check_sizes(&parts, gw.request_limits).and_then(|()| headers::check_head(&mut parts))
    {
        return recorded(
            gw,
            None,
            &parts.method,
            Outcome::new(started),
            refuse(gw, &error, &conn, None),
            None,
        );
    }
    // Read before the hop-by-hop headers go; only WebSocket is ever tunnelled (an `h2c`
    // upgrade, or any other, is dropped with the hop-by-hop headers and served normally).
    let websocket = headers::websocket_upgrade(&mut parts);
    head::strip_hop_by_hop(&mut parts.headers);

    // Route match.
    let route = {
        let host = request_host(&parts).unwrap_or_default();
        match gw.router.find(host, &parts) {
            Some(route) => route.clone(),
            None => {
                let error = ProxyError::NoRoute {
                    method: parts.method.clone(),
                    host: host.to_owned(),
                    path: parts.uri.path().to_owned(),
                };
                let response = refuse(gw, &error, &conn, None);
                return recorded(gw, None, &parts.method, Outcome::new(started), response, None);
            }
        }
    };
    let answer = match (&route.redirect_https, conn.tls) {
        (Some(redirect), false) => Some(redirect.respond(&parts, conn.tls)),
        _ => route.answer.as_ref().map(|answer| answer.respond(&parts, conn.tls)),
    };
    if let Some(answer) = answer {
        let response = answer.unwrap_or_else(|error| refuse(gw, &error, &conn, Some(&route)));
        return recorded(gw, Some(&route), &parts.method, Outcome::new(started), response, None);
    }
    if parts.method == http::Method::OPTIONS
        && let Some(response) = headers::max_forwards(&mut parts)
    {
        return recorded(gw, Some(&route), &parts.method, Outcome::new(started), response, None);
    }
    if let Err(error) = route.edit_request(&mut parts) {
        let response = refuse(gw, &error, &conn, Some(&route));
        return recorded(gw, Some(&route), &parts.method, Outcome::new(started), response, None);
    }
    let Some(pick) = route.split.pick(&parts) else {
        let response = refuse(gw, &ProxyError::Internal("a route without a group"), &conn, Some(&route));
        return recorded(gw, Some(&route), &parts.method, Outcome::new(started), response, None);
    };
    let (target, set_cookie) = (pick.target, pick.set_cookie);
    let method = parts.method.clone();
    let trace =
        gw.telemetry.as_ref().map(|t| RequestTrace::start(t, &parts, &route.name, conn.client, conn.tls));
    let mut ex = Box::new(Exchange::new(
        parts,
        conn.client,
        conn.tls,
        route.name.clone(),
        target.group.clone(),
        gw.upstreams.clone(),
    ));
    ex.client_identity = conn.identity.clone();
    ex.trace = trace;
    // Read before the phases: forwarding may move the head away.
    let coding = route.compress.as_ref().and_then(|c| c.negotiate(&ex.request.method, &ex.request.headers));
    // Gathered before the phases: forwarding may move the head away.
    let access = gw.access.as_ref().map(|log| {
        let header = |name: http::header::HeaderName| {
            ex.request.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("-").to_owned()
        };
        Box::new(AccessEntry {
            log: log.clone(),
            client: conn.client,
            method: ex.request.method.clone(),
            host: ex.host().unwrap_or("-").to_owned(),
            path: ex.request.uri.path_and_query().map_or("/", |p| p.as_str()).to_owned(),
            route: route.name.clone(),
            request_id: None,
            user_agent: header(http::header::USER_AGENT),
            tls: conn.tls,
            canaries: None,
        })
    });

    // Only routes with log plugins pay for counting request bytes.
    let mut outcome = Outcome::new(started);
    outcome.bytes_in = route.has(Phase::Log).then(|| Arc::new(AtomicU64::new(0)));
    outcome.recording = route.record.as_ref().and_then(|recorder| {
        let target = ex.request.uri.path_and_query().map_or("/", |p| p.as_str());
        recorder.sample(&ex.request.method, target, &ex.request.headers, conn.client)
    });
    // The total timeout bounds the whole exchange: here until the response headers, then in
    // the bodies (which carry the same deadline).
    let deadline = route.timeouts.total.map(|total| tokio::time::Instant::now() + total);
    let request = Inbound { body, bytes_in: outcome.bytes_in.clone(), websocket, deadline };
    let exchange = run_route(gw, &route, target, &conn, &mut ex, request, &mut outcome);
    let result = match (deadline, route.timeouts.total) {
        (Some(deadline), Some(after)) => tokio::time::timeout_at(deadline, exchange)
            .await
            .unwrap_or(Err(ProxyError::TotalTimeout { after })),
        _ => exchange.await,
    };
    let mut response = match result {
        Ok(response) => response,
        Err(error) => {
            outcome.error = Some(error.kind());
            outcome.message = route.has(Phase::Log).then(|| error.to_string());
            refuse(gw, &error, &conn, Some(&route))
        }
    };
    if let Some(cookie) = set_cookie {
        response.headers_mut().append(http::header::SET_COOKIE, cookie.clone());
    }
    outcome.backend = ex.backend.clone();
    // A plugin may have named the request since (request-id).
    let access = access.map(|mut entry| {
        entry.request_id = Some(ex.request_id());
        entry.canaries = ex.canaries_run();
        entry
    });
    let span = ex.trace.as_ref().map(|trace| trace.context().clone());
    let response = recorded(gw, Some(&route), &method, outcome, response, access);
    let mut response = match span {
        Some(span) => response.map(|body| body.traced(span)),
        None => response,
    };
    if let Some(compress) = &route.compress {
        let (mut parts, mut body) = response.into_parts();
        if let (Some(mut encoder), Some(coding)) =
            (compress.respond(coding, parts.status, &mut parts.headers), coding)
        {
            // A whole stored body is compressed once per coding and kept with its entry; body
            // plugins would change what there is to compress.
            let hit = body.take_hit().filter(|_| !route.has(Phase::ResponseBody));
            let kept = hit.map(|hit| match hit.encoded(coding) {
                Some(bytes) => Ok(bytes),
                None => encoder.whole(hit.body()).inspect(|bytes| hit.keep(coding, bytes.clone())),
            });
            match kept {
                Some(Ok(bytes)) => {
                    parts.headers.insert(http::header::CONTENT_LENGTH, http::HeaderValue::from(bytes.len()));
                    body.replace_stored(bytes);
                }
                // A codec that failed fails the stream the same way.
                _ => body = body.encoded(encoder),
            }
        }
        response = Response::from_parts(parts, body);
    }
    if !route.follows_response_body() {
        return response;
    }
    let (parts, body) = response.into_parts();
    // Trailer and log plugins read the response head too.
    ex.response = Some(head_copy(&parts));
    Response::from_parts(parts, body.follow(route, ex))
}

/// What arrived with the request head.
struct Inbound {
    body: Incoming,
    /// Counts the request body bytes, when the log phase wants them.
    bytes_in: Option<Arc<AtomicU64>>,
    /// The client's side of a WebSocket upgrade, if it asked for one.
    websocket: Option<hyper::upgrade::OnUpgrade>,
    deadline: Option<tokio::time::Instant>,
}

/// The request phases from `on-request-headers` to `on-response-headers`, for a request that
/// matched `route` and goes to `target`'s group unless a plugin chooses another.
async fn run_route(
    gw: &Served,
    route: &Arc<Route>,
    target: &Target,
    conn: &Conn,
    ex: &mut Box<Exchange>,
    inbound: Inbound,
    outcome: &mut Outcome,
) -> Result<Response<ProxyBody>, ProxyError> {
    // on-request-headers (for a WebSocket upgrade, on its handshake).
    for plugin in route.chain(Phase::RequestHeaders) {
        if let Some(Action::Respond(reply)) = plugin.by_policy(plugin.on_request_headers(ex).await)? {
            return Ok(local_response(reply));
        }
    }
    let websocket = inbound.websocket.filter(|_| route.websocket.is_some());

    // The cache: a stored response answers here, and the upstream phases are skipped.
    let mut caching = None;
    if let Some(cache) = &route.cache
        && websocket.is_none()
    {
        match caching::visit(cache, route, target, ex).await {
            Visit::Stored(stored) => {
                outcome.cache = Some(stored.result.label());
                return respond_stored(route, ex, stored).await;
            }
            Visit::Forward(forwarded) => {
                outcome.cache = Some(forwarded.result.label());
                caching = Some(forwarded);
            }
        }
    }

    // on-request-body, on a body held whole; a streamed body meets the plugins in forward.
    let Inbound { body, bytes_in, deadline, .. } = inbound;
    let idle = route.timeouts.body_idle;
    let mut body = Timed::new(body, "request", idle, deadline);
    if let Some(counter) = bytes_in {
        body = body.counting(counter);
    }
    let mut payload = match route.request_buffer {
        Some(limit) => {
            Payload::Kept(read_whole(body, head::content_length(&ex.request.headers), limit).await?)
        }
        None => Payload::new(body, &ex.request.headers, &route.retry, route.mirror.is_some()).await?,
    };
    if payload.is_filtered(route) {
        // Plugins may change the body's length: it goes chunked.
        ex.request.headers.remove(http::header::CONTENT_LENGTH);
    }
    if let (Payload::Kept(bytes), Some(recording)) = (&payload, outcome.recording.as_mut()) {
        recording.request_body(bytes);
    }
    if let Payload::Kept(bytes) = &mut payload
        && route.has(Phase::RequestBody)
        && (route.request_buffer.is_some() || !bytes.is_empty())
    {
        // A body held whole meets the plugins once, whole; only a buffered one while the head
        // is still open.
        match whole_body(route, ex, std::mem::take(bytes), route.request_buffer.is_some()).await? {
            Buffered::Body(whole) => *bytes = whole,
            Buffered::Respond(reply) => return Ok(local_response(reply)),
        }
    }

    // select-upstream.
    let (group, index) = match select_upstream(route, ex).await? {
        Selected::Backend(group, index) => (group, index),
        Selected::Respond(reply) => return Ok(local_response(reply)),
    };

    // Upstream head.
    headers::add_forwarding(&mut ex.request, conn);

    // on-upstream-request.
    for plugin in route.chain(Phase::UpstreamRequest) {
        if let Some(Action::Respond(reply)) = plugin.by_policy(plugin.on_upstream_request(ex).await)? {
            return Ok(local_response(reply));
        }
    }
    if let Some(mirror) = &route.mirror
        && mirror.takes()
    {
        mirror.send(&ex.request, payload.kept());
    }
    headers::ensure_host(&mut ex.request.headers, group.backends()[index].authority());
    if websocket.is_some() {
        headers::request_websocket(&mut ex.request.headers);
    }

    // Forward.
    let sent = Instant::now();
    let forwarded = forward(gw, route, target, conn, ex, &group, index, payload).await;
    if let Some(caching) = &mut caching {
        let (status, fields) = match &forwarded {
            Ok(Forwarded::Response(response, ..)) => (Some(response.status()), Some(response.headers())),
            Ok(Forwarded::Answer(_)) => (Some(StatusCode::OK), None),
            Err(_) => (None, None),
        };
        // A 304 to a revalidation, or a failure the stale entry may answer.
        if let Answered::Stored(stored) = caching.answered(&ex.request.method, status, fields, sent.elapsed())
        {
            outcome.cache = Some(stored.result.label());
            return respond_stored(route, ex, stored).await;
        }
    }
    let (response, in_flight, index) = match forwarded? {
        Forwarded::Response(response, in_flight, index) => (response, in_flight, index),
        Forwarded::Answer(reply) => return Ok(local_response(reply)),
    };
    let upstream = sent.elapsed();
    if let Some(seconds) = gw.upstream_seconds.get(group.name()) {
        seconds.observe(upstream.as_secs_f64());
    }
    ex.backend = Some(group.backends()[index].address().clone());
    outcome.upstream = Some(upstream);

    // A WebSocket handshake the backend accepted: the connection becomes a tunnel.
    if let Some(client_side) = websocket
        && response.status() == http::StatusCode::SWITCHING_PROTOCOLS
    {
        let tunnel_idle = route.websocket.unwrap_or(idle);
        return Ok(tunnel::open(client_side, response, in_flight, tunnel_idle, &conn.background));
    }

    // on-response-headers.
    let (mut parts, body) = response.into_parts();
    // The client gets HTTP/1.1 framing whatever the upstream spoke (hyper ignores this on h2).
    parts.version = Version::HTTP_11;
    head::strip_hop_by_hop(&mut parts.headers);
    if let Some(recording) = outcome.recording.as_mut() {
        recording.response(parts.status, &parts.headers);
    }
    // The cache stores the origin's head, not what the route and its plugins make of it.
    let offered = caching.as_ref().and_then(|caching| caching.offered_head(&parts));
    let mut parts = match on_response_headers(route, ex, parts).await? {
        Ok(parts) => parts,
        Err(reply) => return Ok(local_response(reply)),
    };
    let body = Timed::new(body, "response", idle, deadline);
    let body = match caching {
        Some(caching) => caching.offer(offered, ex, &mut parts, body, upstream, Some(in_flight)),
        None => ProxyBody::upstream(body, Some(in_flight)),
    };
    Ok(Response::from_parts(parts, body))
}

/// A response from the route's cache, through the response phases.
async fn respond_stored(
    route: &Route,
    ex: &mut Box<Exchange>,
    stored: caching::Stored,
) -> Result<Response<ProxyBody>, ProxyError> {
    let caching::Stored { parts, body, hit, .. } = stored;
    match on_response_headers(route, ex, parts).await? {
        Ok(parts) => Ok(Response::from_parts(parts, ProxyBody::stored(body, hit))),
        Err(reply) => Ok(local_response(reply)),
    }
}

/// The route's edits of a response head, then its `on-response-headers` plugins, in reverse
/// chain order: the head they leave, or the answer one of them gave instead.
async fn on_response_headers(
    route: &Route,
    ex: &mut Box<Exchange>,
    mut parts: http::response::Parts,
) -> Result<Result<http::response::Parts, LocalReply>, ProxyError> {
    headers::append_via(&mut parts.headers, Version::HTTP_11);
    route.response_headers.apply(&mut parts.headers);
    if route.has(Phase::ResponseBody) && !headers::bodiless(&ex.request.method, parts.status) {
        // Plugins may change the body's length: it goes chunked.
        parts.headers.remove(http::header::CONTENT_LENGTH);
    }
    if !route.has(Phase::ResponseHeaders) {
        return Ok(Ok(parts));
    }
    ex.response = Some(parts);
    for plugin in route.chain(Phase::ResponseHeaders) {
        if let Some(Action::Respond(reply)) = plugin.by_policy(plugin.on_response_headers(ex).await)? {
            return Ok(Err(reply));
        }
    }
    ex.response.take().map(Ok).ok_or(ProxyError::Internal("the response head went missing"))
}

enum Buffered {
    Body(Bytes),
    Respond(LocalReply),
}

/// Reads the request body whole; 413 past `limit`.
async fn read_whole(body: Timed<Incoming>, declared: Option<u64>, limit: usize) -> Result<Bytes, ProxyError> {
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(ProxyError::BodyTooLarge { limit });
    }
    timed::read_whole(body, limit).await.map_err(|error| match error {
        ReadError::TooLarge(limit) => ProxyError::BodyTooLarge { limit },
        ReadError::Broken(error) if matches!(error.downcast_ref(), Some(timed::Stalled::Idle(..))) => {
            ProxyError::BodyTimeout
        }
        ReadError::Broken(_) => ProxyError::BadRequest("the request body broke off"),
    })
}

/// Runs a whole request body through the request-body plugins, which may edit the head when
/// `head_open`; the body then goes upstream with its length.
async fn whole_body(
    route: &Route,
    ex: &mut Box<Exchange>,
    mut bytes: Bytes,
    head_open: bool,
) -> Result<Buffered, ProxyError> {
    for plugin in route.chain(Phase::RequestBody) {
        match plugin.by_policy(plugin.on_request_body(ex, &bytes, true, head_open).await)? {
            None | Some(BodyVerdict::Continue) => {}
            Some(BodyVerdict::Replace(replaced)) => bytes = replaced,
            Some(BodyVerdict::Respond(reply)) => return Ok(Buffered::Respond(reply)),
        }
    }
    ex.request.headers.insert(http::header::CONTENT_LENGTH, http::HeaderValue::from(bytes.len()));
    Ok(Buffered::Body(bytes))
}

/// The request body as the forward step sends it: streamed once, or kept whole so that a
/// retry can send it again (an empty body, or one within the route's `retry_buffer`).
enum Payload {
    Stream(Option<Timed<Incoming>>),
    Kept(Bytes),
}

impl Payload {
    /// Kept when within the route's `retry_buffer` and a retry or a mirror may send it again.
    async fn new(
        body: Timed<Incoming>,
        headers: &http::HeaderMap,
        retry: &RetryPolicy,
        mirrored: bool,
    ) -> Result<Payload, ProxyError> {
        if body.is_end_stream() {
            return Ok(Payload::Kept(Bytes::new()));
        }
        let length = head::content_length(headers);
        if (retry.retries == 0 && !mirrored) || length.is_none_or(|n| n > retry.buffer as u64) {
            return Ok(Payload::Stream(Some(body)));
        }
        Ok(Payload::Kept(read_whole(body, length, retry.buffer).await?))
    }

    fn replayable(&self) -> bool {
        matches!(self, Payload::Kept(_))
    }

    /// The body, when it is kept whole.
    fn kept(&self) -> Option<&Bytes> {
        match self {
            Payload::Kept(bytes) => Some(bytes),
            Payload::Stream(_) => None,
        }
    }

    /// A streamed body goes through the route's request-body plugins chunk by chunk.
    fn is_filtered(&self, route: &Route) -> bool {
        route.has(Phase::RequestBody) && !self.replayable()
    }

    /// No attempt follows attempt number `attempt` (from 0).
    fn is_last(&self, route: &Route, attempt: u32) -> bool {
        attempt >= route.retry.retries || !self.replayable()
    }

    fn next_attempt(&mut self) -> UpstreamBody {
        match self {
            Payload::Stream(body) => {
                body.take().map_or(UpstreamBody::Full(Default::default()), UpstreamBody::Stream)
            }
            Payload::Kept(bytes) => UpstreamBody::Full(http_body_util::Full::new(bytes.clone())),
        }
    }
}

enum Selected {
    Backend(Arc<Group>, usize),
    Respond(LocalReply),
}

/// The first plugin with an opinion decides; otherwise the balancer of the request's group.
async fn select_upstream(route: &Route, ex: &mut Box<Exchange>) -> Result<Selected, ProxyError> {
    let client = ex.client_addr.ip();
    for plugin in route.chain(Phase::SelectUpstream) {
        match plugin.by_policy(plugin.select_upstream(ex).await)? {
            None | Some(Choice::Default) => continue,
            Some(Choice::Backend(group, index)) => return Ok(Selected::Backend(group, index)),
            Some(Choice::Group(group)) => return balance(&group, ex, client),
            Some(Choice::HashKey(key)) => {
                let group = &ex.group;
                return group
                    .pick_hashed(hash_key(key.as_bytes()))
                    .map(|index| Selected::Backend(group.clone(), index))
                    .ok_or_else(|| ProxyError::NoHealthyBackend { group: group.name().to_string() });
            }
            Some(Choice::Respond(reply)) => return Ok(Selected::Respond(reply)),
        }
    }
    balance(&ex.group, ex, client)
}

/// The group's balancer picks, with the request's hash key when the group hashes.
fn balance(group: &Arc<Group>, ex: &Exchange, client: std::net::IpAddr) -> Result<Selected, ProxyError> {
    let key = group.hash_source().and_then(|source| source.hash(&ex.request, client));
    let index =
        group.pick(key).ok_or_else(|| ProxyError::NoHealthyBackend { group: group.name().to_string() })?;
    Ok(Selected::Backend(group.clone(), index))
}

/// How the forward step ended: the response to pass on (and the backend that gave it), or an
/// answer a plugin gave instead.
enum Forwarded {
    Response(Response<Incoming>, InFlight, usize),
    Answer(LocalReply),
}

/// Sends the request to backend `index` of `group`, and after a failure to another where that
/// is safe: only a request whose body is kept can be sent again, and a non-idempotent one only
/// if the backend cannot have processed it. Error-phase plugins may answer, or ask for a retry.
#[allow(clippy::too_many_arguments)]
async fn forward(
    gw: &Served,
    route: &Arc<Route>,
    target: &Target,
    conn: &Conn,
    ex: &mut Box<Exchange>,
    group: &Arc<Group>,
    mut index: usize,
    mut payload: Payload,
) -> Result<Forwarded, ProxyError> {
    let _active = route.retry.enter();
    let idempotent = ex.request.method.is_idempotent();
    // Held through a retry's attempt: the retry budget counts it.
    let mut _retry_slot = None;
    let mut attempt = 0;
    loop {
        let failure = match send(gw, route, target, ex, group, index, &mut payload, attempt).await? {
            Sent::Response(response, in_flight) => {
                return Ok(Forwarded::Response(response, in_flight, index));
            }
            Sent::Answer(reply) => return Ok(Forwarded::Answer(reply)),
            Sent::Failed(failure) => failure,
        };
        let class = failure.error.class();
        let wanted = match on_upstream_error(route, ex, &failure.error, attempt).await? {
            OnError::Respond(reply) => return Ok(Forwarded::Answer(reply)),
            OnError::Retry => class.may_resend(idempotent),
            OnError::Default => {
                class.retry_on.is_some_and(|condition| route.retry.on(condition))
                    && class.may_resend(idempotent)
            }
        };
        match retry_slot(route, wanted && !payload.is_last(route, attempt)) {
            Some(slot) => _retry_slot = Some(slot),
            None => {
                return match failure.response {
                    Some((response, in_flight)) => Ok(Forwarded::Response(response, in_flight, index)),
                    None => Err(failure.error.into()),
                };
            }
        }
        tracing::debug!(backend = %group.backends()[index].address(), attempt, "retrying on another backend");
        attempt += 1;
        index = another_backend(group, index, ex, conn);
    }
}

/// One attempt's end.
enum Sent {
    Response(Response<Incoming>, InFlight),
    /// A request-body plugin answered while the body streamed.
    Answer(LocalReply),
    Failed(Failure),
}

/// A failed upstream attempt: why, and the response if the backend answered one the route
/// retries on (it is passed on if no retry happens).
struct Failure {
    error: UpstreamError,
    response: Option<(Response<Incoming>, InFlight)>,
}

impl From<UpstreamError> for Failure {
    fn from(error: UpstreamError) -> Self {
        Failure { error, response: None }
    }
}

/// One attempt on backend `index`: admission by its circuit breaker, the request, its span, and
/// the exchange lent to a filtered body and taken back.
#[allow(clippy::too_many_arguments)]
async fn send(
    gw: &Served,
    route: &Arc<Route>,
    target: &Target,
    ex: &mut Box<Exchange>,
    group: &Arc<Group>,
    index: usize,
    payload: &mut Payload,
    attempt: u32,
) -> Result<Sent, ProxyError> {
    let backend = &group.backends()[index];
    let client = client_for(gw, target, group, ex.sni.as_deref())?;
    // Counted until the response body is done: least-request balancing and the circuit breaker
    // read it.
    let wait = route.timeouts.response.unwrap_or(client.response_timeout());
    let in_flight = match group.admit(index, wait).await {
        Ok(in_flight) => in_flight,
        Err(limit) => {
            let backend = backend.address().to_string();
            return Ok(Sent::Failed(UpstreamError::Overloaded { backend, limit: limit.limit() }.into()));
        }
    };
    // The head is moved into the request unless a retry or a later phase needs it again.
    let keep_head = !payload.is_last(route, attempt) || route.reads_request_after_forward();
    let filtered = payload.is_filtered(route);
    let mut request = upstream_request(ex, &client, backend, payload.next_attempt(), keep_head)?;
    // The attempt's span, made while the exchange is here: a filtered body takes it.
    let span = match &ex.trace {
        Some(trace) => trace.upstream_attempt(&mut request, backend.addr(), attempt),
        None => Span::none(),
    };
    // A streamed body through request-body plugins takes the exchange along.
    let back = if filtered {
        let source = std::mem::replace(request.body_mut(), UpstreamBody::Full(Default::default()));
        let UpstreamBody::Stream(source) = source else {
            return Err(ProxyError::Internal("a filtered body that does not stream"));
        };
        let lent = std::mem::replace(ex, Exchange::placeholder());
        let (body, back) = FilteredRequest::new(source, Filter::new(route.clone(), Direction::Request, lent));
        *request.body_mut() = UpstreamBody::Filtered(UnsyncBoxBody::new(body));
        Some(back)
    } else {
        None
    };
    let limits = client.connect_limits(route.timeouts.connect, route.timeouts.tls_handshake);
    let result = client.send(backend, request, limits, route.timeouts.response).await;
    match &result {
        Ok(response) => span.end(response.status().as_u16(), None),
        Err(error) => span.end(0, Some(error.class().name)),
    }
    if let Some(back) = back {
        let returned = match back.await {
            Ok(back) => back.get().await,
            Err(_) => None,
        };
        let back = returned.ok_or(ProxyError::Internal("the request body kept the exchange"))?;
        *ex = back.ex;
        if let Some(reply) = back.answered {
            return Ok(Sent::Answer(reply));
        }
    }
    Ok(match result {
        Ok(response) => {
            let status = response.status();
            group.record(index, status.is_server_error());
            if !route.retry.on_status(status) {
                return Ok(Sent::Response(response, in_flight));
            }
            let error = UpstreamError::Status { backend: backend.address().to_string(), status };
            Sent::Failed(Failure { error, response: Some((response, in_flight)) })
        }
        // The client's own body failed: nothing to retry, nothing against the backend.
        Err(error @ UpstreamError::ClientBody { .. }) => return Err(error.into()),
        Err(error) => {
            group.record(index, true);
            Sent::Failed(error.into())
        }
    })
}

/// The request for the backend: its address as the target, the (possibly edited) head, the
/// client's body streamed. The head is moved, not copied, unless a later phase reads it.
fn upstream_request(
    ex: &mut Exchange,
    client: &UpstreamClient,
    backend: &Backend,
    body: UpstreamBody,
    keep_head: bool,
) -> Result<Request<UpstreamBody>, ProxyError> {
    let path = ex.request.uri.path_and_query().cloned().unwrap_or_else(|| PathAndQuery::from_static("/"));
    let headers =
        if keep_head { ex.request.headers.clone() } else { std::mem::take(&mut ex.request.headers) };
    client
        .request(backend, ex.request.method.clone(), path, headers, body)
        .map_err(|_| ProxyError::BadRequest("invalid request target"))
}

/// The client of `group` (the request's own, or that of the group a plugin chose), for the
/// server name a plugin chose, if any.
fn client_for(
    gw: &Served,
    target: &Target,
    group: &Arc<Group>,
    sni: Option<&str>,
) -> Result<Arc<UpstreamClient>, ProxyError> {
    let client = if Arc::ptr_eq(group, &target.group) {
        target.client.clone()
    } else {
        gw.upstreams.client(group.name()).ok_or(ProxyError::Internal("a group without a client"))?
    };
    match sni {
        None => Ok(client),
        Some(sni) => client.for_sni(sni).map_err(|reason| {
            ProxyError::Upstream(UpstreamError::Connect { backend: group.name().to_string(), reason })
        }),
    }
}

/// Asks the route's error-phase plugins about a failed attempt; the first with an opinion
/// decides.
async fn on_upstream_error(
    route: &Route,
    ex: &mut Box<Exchange>,
    error: &UpstreamError,
    attempt: u32,
) -> Result<OnError, ProxyError> {
    if !route.has(Phase::UpstreamError) {
        return Ok(OnError::Default);
    }
    let report = UpstreamFailure::new(error, attempt + 1);
    for plugin in route.chain(Phase::UpstreamError) {
        match plugin.by_policy(plugin.on_upstream_error(ex, &report).await)? {
            None | Some(OnError::Default) => continue,
            Some(decision) => return Ok(decision),
        }
    }
    Ok(OnError::Default)
}

/// A place in the route's retry budget for a retry that is `wanted`, if one is left.
fn retry_slot(route: &Route, wanted: bool) -> Option<route::Active<'_>> {
    if !wanted {
        return None;
    }
    let slot = route.retry.try_retry();
    if slot.is_none() {
        tracing::warn!(route = %route.name, "retry budget spent; not retrying");
    }
    slot
}

/// For a retry: the balancer's next pick, avoiding the backend that just failed when the group
/// has another.
fn another_backend(group: &Group, failed: usize, ex: &Exchange, conn: &Conn) -> usize {
    let key = group.hash_source().and_then(|source| source.hash(&ex.request, conn.client.ip()));
    (0..4).filter_map(|_| group.pick(key)).find(|&i| i != failed).unwrap_or(failed)
}

/// Sets the request's status and hands its outcome to the response body, which records it
/// (metrics by route, method and status, the access log) when it is done.
fn recorded(
    gw: &Served,
    route: Option<&Route>,
    method: &http::Method,
    mut outcome: Outcome,
    response: Response<ProxyBody>,
    access: Option<Box<AccessEntry>>,
) -> Response<ProxyBody> {
    static NO_ROUTE: std::sync::LazyLock<Arc<String>> = std::sync::LazyLock::new(|| Arc::new("-".to_owned()));
    outcome.status = response.status().as_u16();
    let labels = RequestLabels {
        route: route.map_or_else(|| NO_ROUTE.clone(), |r| r.label.clone()),
        method: method_label(method),
        status: outcome.status,
    };
    let record = Record {
        outcome,
        requests: gw.metrics.requests.get_or_create(&labels).clone(),
        seconds: route.map(|r| r.seconds.clone()),
        access,
        span: None,
    };
    response.map(|body| body.recorded(record))
}

/// A copy of a response head without its extensions, for phases that read it later.
fn head_copy(parts: &http::response::Parts) -> http::response::Parts {
    let mut response = Response::new(());
    *response.status_mut() = parts.status;
    *response.version_mut() = parts.version;
    *response.headers_mut() = parts.headers.clone();
    response.into_parts().0
}

fn local_response(reply: LocalReply) -> Response<ProxyBody> {
    let mut response = Response::new(ProxyBody::local(reply.body));
    *response.status_mut() = reply.status;
    *response.headers_mut() = reply.headers;
    response
}

/// The one place a failure becomes a response (see [`ProxyError::to_response`]); also logs it.
fn refuse(gw: &Served, error: &ProxyError, conn: &Conn, route: Option<&Route>) -> Response<ProxyBody> {
    gw.metrics.errors.get_or_create(&crate::metrics::ErrorLabels { kind: error.kind() }).inc();
    let status = error.status();
    let route = route.map(|r| &*r.name);
    if status.is_server_error() {
        tracing::warn!(%error, kind = error.kind(), client = %conn.client, route, "request failed");
    } else {
        tracing::debug!(%error, kind = error.kind(), client = %conn.client, route, "request refused");
    }
    error.to_response()
}

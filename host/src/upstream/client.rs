//! The HTTP client to one upstream group's backends: pooled keep-alive connections per
//! backend (HTTP/1.1, or HTTP/2 multiplexed), plain or TLS, connect and handshake timeouts, a
//! cap on connections per backend, and a response-header timeout.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::uri::PathAndQuery;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper_rustls::MaybeHttpsStream;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::Connected;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::pki_types::ServerName;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::pool::{Pool, SendFailure};
use super::tls;
use super::{Backend, UpstreamError};
use crate::config::{ResolvedTls, UpstreamConfig, UpstreamProtocol};
use crate::timed::{BoxError, Timed};

/// The body sent upstream.
pub enum UpstreamBody {
    /// The client's body, streamed as it arrives.
    Stream(Timed<Incoming>),
    /// A body held whole: kept for retries, buffered for plugins, or made by the gateway.
    Full(http_body_util::Full<Bytes>),
    /// The client's body streamed through request-body plugins (boxed: only routes with
    /// such plugins pay for it).
    Filtered(http_body_util::combinators::UnsyncBoxBody<Bytes, BoxError>),
}

impl http_body::Body for UpstreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            UpstreamBody::Stream(b) => Pin::new(b).poll_frame(cx),
            UpstreamBody::Full(b) => Pin::new(b).poll_frame(cx).map_err(|never| match never {}),
            UpstreamBody::Filtered(b) => Pin::new(b).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            UpstreamBody::Stream(b) => b.is_end_stream(),
            UpstreamBody::Full(b) => b.is_end_stream(),
            UpstreamBody::Filtered(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> http_body::SizeHint {
        match self {
            UpstreamBody::Stream(b) => b.size_hint(),
            UpstreamBody::Full(b) => b.size_hint(),
            UpstreamBody::Filtered(b) => b.size_hint(),
        }
    }
}

/// The client for one upstream group.
pub struct UpstreamClient {
    transport: Transport,
    /// What it was built from: its timeouts, and how variants for server names plugins
    /// choose are built.
    settings: ClientSettings,
    tls: Option<ResolvedTls>,
    /// One client (and pool) per server name a plugin chose: connections made for one name
    /// are never reused for another.
    by_sni: Mutex<HashMap<String, Arc<UpstreamClient>>>,
    scheme: http::uri::Scheme,
    counts: Arc<Counts>,
}

/// How requests reach the backends: HTTP/1.1 groups through the gateway's own pool, HTTP/2
/// (and ALPN-negotiated) groups through hyper-util's client, which multiplexes.
enum Transport {
    Http1 { pool: Arc<Pool>, dialer: Dialer },
    Pooled(Box<Client<Connector, UpstreamBody>>),
}

/// The group settings a client is built from (the rest of the group's config is the
/// balancer's and the health checks').
#[derive(Debug, Clone, Copy)]
struct ClientSettings {
    protocol: UpstreamProtocol,
    limits: ConnectLimits,
    max_connections: u32,
    pool_idle_timeout: Duration,
    pool_max_idle: usize,
    response_timeout: Duration,
    head: HeadLimits,
}

/// What a response head may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct HeadLimits {
    /// Bytes of status line and fields (the HTTP/1 parser's buffer).
    pub(super) bytes: usize,
    /// Fields.
    pub(super) fields: usize,
}

impl From<&UpstreamConfig> for ClientSettings {
    fn from(config: &UpstreamConfig) -> Self {
        ClientSettings {
            protocol: config.protocol,
            limits: ConnectLimits {
                connect: config.connect_timeout,
                tls_handshake: config.tls_handshake_timeout,
            },
            max_connections: config.max_connections,
            pool_idle_timeout: config.pool_idle_timeout,
            pool_max_idle: config.pool_max_idle,
            response_timeout: config.response_timeout,
            head: HeadLimits { bytes: config.max_response_head, fields: config.max_response_fields },
        }
    }
}

/// Distinct plugin-chosen server names one group keeps clients for; bounds the memory a plugin
/// handing out random names could take.
const MAX_SNI_VARIANTS: usize = 256;

/// Requests sent and connections opened: their ratio is how well keep-alive works.
#[derive(Default)]
struct Counts {
    requests: AtomicU64,
    connections: AtomicU64,
}

/// A snapshot of a client's counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientStats {
    /// Requests sent upstream.
    pub requests: u64,
    /// Connections opened for them; the rest reused a pooled one.
    pub new_connections: u64,
}

/// How long a new connection may take, per step: the group's settings, or a route's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectLimits {
    /// Opening the TCP connection (and waiting for a free one under `max_connections`).
    pub connect: Duration,
    /// The TLS handshake, once TCP is open.
    pub tls_handshake: Duration,
}

tokio::task_local! {
    /// A route's connect limits for the request being sent. hyper-util hands its connector
    /// only the target URI, and the connector runs in the request's task; so a route can
    /// override the limits while connections stay pooled per group.
    static ROUTE_LIMITS: ConnectLimits;
}

/// Why a connection could not be opened.
#[derive(Debug, thiserror::Error)]
pub(super) enum ConnectFailure {
    #[error("TCP connect timed out after {}ms", .0.as_millis())]
    Timeout(Duration),
    #[error("TLS handshake timed out after {}ms", .0.as_millis())]
    HandshakeTimeout(Duration),
    #[error("no connection came free under max_connections within {}ms", .0.as_millis())]
    NoSlot(Duration),
    #[error("{0}")]
    ServerName(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("HTTP/1.1 handshake: {0}")]
    Handshake(hyper::Error),
}

impl ConnectFailure {
    /// The upstream error this failure is, toward `backend`.
    fn upstream_error(&self, backend: String, reason: impl FnOnce() -> String) -> UpstreamError {
        match *self {
            ConnectFailure::Timeout(after) | ConnectFailure::NoSlot(after) => {
                UpstreamError::ConnectTimeout { backend, after }
            }
            ConnectFailure::HandshakeTimeout(after) => UpstreamError::HandshakeTimeout { backend, after },
            _ => UpstreamError::Connect { backend, reason: reason() },
        }
    }
}

/// The TLS step over an open TCP connection, for TLS groups, within its timeout.
async fn secure(
    tcp: Tcp,
    tls: Option<(tokio_rustls::TlsConnector, ServerName<'static>)>,
    limit: Duration,
) -> Result<Stream, ConnectFailure> {
    let Some((tls, name)) = tls else { return Ok(MaybeHttpsStream::Http(tcp)) };
    let handshake = tls.connect(name, TokioIo::new(tcp));
    let stream = tokio::time::timeout(limit, handshake)
        .await
        .map_err(|_| ConnectFailure::HandshakeTimeout(limit))??;
    Ok(MaybeHttpsStream::from(stream))
}

/// Opens connections to backends, for the HTTP/1.1 pool and for hyper-util's client: TCP, then
/// TLS for TLS groups, each step within its timeout, counting the connections it opens.
pub(super) struct Dialer {
    tls: Option<(tokio_rustls::TlsConnector, Arc<tls::ServerNames>)>,
    counts: Arc<Counts>,
}

impl Dialer {
    /// A connection to `backend` (`authority` is its `ip:port`, which names its TLS server
    /// name), holding `slot` until it closes.
    pub(super) async fn dial(
        &self,
        backend: SocketAddr,
        authority: &str,
        limits: ConnectLimits,
        slot: Option<OwnedSemaphorePermit>,
    ) -> Result<Connection, ConnectFailure> {
        let tls = match &self.tls {
            Some((connector, names)) => {
                Some((connector.clone(), names.for_authority(authority).map_err(ConnectFailure::ServerName)?))
            }
            None => None,
        };
        let tcp = tokio::time::timeout(limits.connect, tokio::net::TcpStream::connect(backend))
            .await
            .map_err(|_| ConnectFailure::Timeout(limits.connect))??;
        tcp.set_nodelay(true)?;
        let stream = secure(TokioIo::new(tcp), tls, limits.tls_handshake).await?;
        self.counts.connections.fetch_add(1, Ordering::Relaxed);
        Ok(Connection { stream, _slot: slot })
    }
}

type Tcp = TokioIo<tokio::net::TcpStream>;
type Stream = MaybeHttpsStream<Tcp>;

/// hyper-util's connector: the [`Dialer`]'s connections, at most `max_connections` open per
/// backend.
#[derive(Clone)]
struct Connector {
    dialer: Arc<Dialer>,
    limits: ConnectLimits,
    slots: Arc<Slots>,
}

/// Connections open per backend, bounded: a semaphore per `ip:port`, made on first connect.
struct Slots {
    max: u32,
    by_authority: Mutex<HashMap<String, Arc<Semaphore>>>,
}

impl Slots {
    /// The semaphore for `uri`'s backend; none without a limit. Called per new connection,
    /// never per request.
    fn for_uri(&self, uri: &http::Uri) -> Option<Arc<Semaphore>> {
        if self.max == 0 {
            return None;
        }
        let authority = uri.authority().map(|a| a.as_str()).unwrap_or_default();
        let mut slots = self.by_authority.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let slot =
            slots.entry(authority.to_owned()).or_insert_with(|| Arc::new(Semaphore::new(self.max as usize)));
        Some(slot.clone())
    }
}

impl tower_service::Service<http::Uri> for Connector {
    type Response = Connection;
    type Error = crate::timed::BoxError;
    // Boxed: one allocation per new connection, never per request.
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let limits = ROUTE_LIMITS.try_with(|l| *l).unwrap_or(self.limits);
        let slot = self.slots.for_uri(&uri);
        let dialer = self.dialer.clone();
        Box::pin(async move {
            // Request targets carry the backend's resolved `ip:port` (`Backend::authority`).
            let authority = uri.authority().map_or("", |a| a.as_str());
            let backend: SocketAddr = authority.parse().map_err(|_| {
                let reason = format!("`{authority}` is not an ip:port");
                ConnectFailure::Io(std::io::Error::new(std::io::ErrorKind::InvalidInput, reason))
            })?;
            let permit = match slot {
                Some(slot) => Some(
                    tokio::time::timeout(limits.connect, slot.acquire_owned())
                        .await
                        .map_err(|_| ConnectFailure::NoSlot(limits.connect))??,
                ),
                None => None,
            };
            Ok(dialer.dial(backend, authority, limits, permit).await?)
        })
    }
}

/// An upstream connection, holding its place under `max_connections` until it closes.
pub(super) struct Connection {
    stream: Stream,
    _slot: Option<OwnedSemaphorePermit>,
}

impl hyper_util::client::legacy::connect::Connection for Connection {
    fn connected(&self) -> Connected {
        self.stream.connected()
    }
}

impl hyper::rt::Read for Connection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl hyper::rt::Write for Connection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }
}

impl UpstreamClient {
    /// A client with the group's protocol, TLS, timeouts and pool settings; `backends` pairs
    /// each resolved `ip:port` with its address as configured (for TLS server names). Fails,
    /// with the reason, when TLS files cannot be read.
    pub fn new(
        config: &UpstreamConfig,
        tls: Option<&ResolvedTls>,
        backends: &[(String, &str)],
    ) -> Result<Self, String> {
        UpstreamClient::build(ClientSettings::from(config), tls, backends)
    }

    fn build(
        settings: ClientSettings,
        tls: Option<&ResolvedTls>,
        backends: &[(String, &str)],
    ) -> Result<Self, String> {
        let tls_connector = match tls {
            Some(t) => {
                let mut tls_config = tls::client_config(
                    t.ca.as_deref(),
                    t.client_cert.as_ref().map(|(c, k)| (c.as_path(), k.as_path())),
                )?;
                tls_config.alpn_protocols = match settings.protocol {
                    UpstreamProtocol::Http1 => vec![b"http/1.1".to_vec()],
                    UpstreamProtocol::Http2 => vec![b"h2".to_vec()],
                    UpstreamProtocol::Auto => vec![b"h2".to_vec(), b"http/1.1".to_vec()],
                };
                let names = tls::ServerNames::new(t.sni.as_deref(), backends)?;
                Some((tokio_rustls::TlsConnector::from(Arc::new(tls_config)), Arc::new(names)))
            }
            None => None,
        };
        let counts = Arc::new(Counts::default());
        let dialer = Dialer { tls: tls_connector, counts: counts.clone() };
        let transport = if settings.protocol == UpstreamProtocol::Http1 {
            let pool = Pool::new(
                settings.max_connections,
                settings.pool_max_idle,
                settings.pool_idle_timeout,
                settings.head,
            );
            Transport::Http1 { pool, dialer }
        } else {
            let connector = Connector {
                dialer: Arc::new(dialer),
                limits: settings.limits,
                slots: Arc::new(Slots { max: settings.max_connections, by_authority: Mutex::default() }),
            };
            let client = Client::builder(TokioExecutor::new())
                .pool_timer(TokioTimer::new())
                .timer(TokioTimer::new())
                .pool_idle_timeout(settings.pool_idle_timeout)
                .pool_max_idle_per_host(settings.pool_max_idle)
                .http1_max_buf_size(settings.head.bytes)
                .http1_max_headers(settings.head.fields)
                // Without TLS there is no ALPN: `http2` means prior knowledge (h2c).
                .http2_only(settings.protocol == UpstreamProtocol::Http2)
                // The proxy sets Host itself (the client's, or a plugin's choice).
                .set_host(false)
                .build(connector);
            Transport::Pooled(Box::new(client))
        };
        Ok(UpstreamClient {
            transport,
            settings,
            tls: tls.cloned(),
            by_sni: Mutex::new(HashMap::new()),
            scheme: if tls.is_some() { http::uri::Scheme::HTTPS } else { http::uri::Scheme::HTTP },
            counts,
        })
    }

    /// The client for server name `sni` (a plugin's choice): a pool of its own, made on first
    /// use. `self` for plain-TCP groups, where there is no server name.
    pub fn for_sni(self: &Arc<Self>, sni: &str) -> Result<Arc<UpstreamClient>, String> {
        let Some(tls) = &self.tls else { return Ok(self.clone()) };
        if tls.sni.as_deref() == Some(sni) {
            return Ok(self.clone());
        }
        // Taken only on requests whose plugin chose a name, and never across an await.
        let mut by_sni = self.by_sni.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(client) = by_sni.get(sni) {
            return Ok(client.clone());
        }
        if by_sni.len() >= MAX_SNI_VARIANTS {
            return Err(format!("more than {MAX_SNI_VARIANTS} server names chosen for one group"));
        }
        let tls = ResolvedTls { sni: Some(sni.to_owned()), ..tls.clone() };
        let client = Arc::new(UpstreamClient::build(self.settings, Some(&tls), &[])?);
        by_sni.insert(sni.to_owned(), client.clone());
        Ok(client)
    }

    /// The group's response-header timeout.
    pub fn response_timeout(&self) -> Duration {
        self.settings.response_timeout
    }

    /// `https` for TLS groups, else `http`: the scheme of upstream request targets.
    pub fn scheme(&self) -> &http::uri::Scheme {
        &self.scheme
    }

    /// A request for `backend` with target `path`: in origin form for the HTTP/1.1 pool, which
    /// writes the target as it is; with the backend's address and this group's scheme for
    /// hyper-util's client, which finds its pooled connection by them.
    pub fn request(
        &self,
        backend: &Backend,
        method: http::Method,
        path: PathAndQuery,
        headers: http::HeaderMap,
        body: UpstreamBody,
    ) -> Result<Request<UpstreamBody>, http::Error> {
        let uri = match self.transport {
            Transport::Http1 { .. } => http::Uri::from(path),
            Transport::Pooled(_) => http::Uri::builder()
                .scheme(self.scheme.clone())
                .authority(backend.authority().clone())
                .path_and_query(path)
                .build()?,
        };
        let mut request = Request::new(body);
        *request.method_mut() = method;
        *request.uri_mut() = uri;
        *request.headers_mut() = headers;
        Ok(request)
    }

    /// Requests sent and connections opened so far.
    pub fn stats(&self) -> ClientStats {
        ClientStats {
            requests: self.counts.requests.load(Ordering::Relaxed),
            new_connections: self.counts.connections.load(Ordering::Relaxed),
        }
    }

    /// The group's connect limits with a route's overrides.
    pub fn connect_limits(
        &self,
        connect: Option<Duration>,
        tls_handshake: Option<Duration>,
    ) -> ConnectLimits {
        ConnectLimits {
            connect: connect.unwrap_or(self.settings.limits.connect),
            tls_handshake: tls_handshake.unwrap_or(self.settings.limits.tls_handshake),
        }
    }

    /// Sends `request` (whose URI names the backend) and waits for the response headers, for
    /// `response_timeout` if given, else the group's; a new connection it needs is made within
    /// `limits`.
    pub async fn send(
        &self,
        backend: &Backend,
        request: Request<UpstreamBody>,
        limits: ConnectLimits,
        response_timeout: Option<Duration>,
    ) -> Result<Response<Incoming>, UpstreamError> {
        self.counts.requests.fetch_add(1, Ordering::Relaxed);
        let limit = response_timeout.unwrap_or(self.settings.response_timeout);
        let address = || backend.address().to_string();
        match &self.transport {
            Transport::Http1 { pool, dialer } => {
                let exchange =
                    pool.send(dialer, backend.addr(), backend.authority().as_str(), request, limits);
                match tokio::time::timeout(limit, exchange).await {
                    Ok(Ok((response, closer))) => {
                        framed(address, response, self.settings.head).inspect_err(|_| closer.close())
                    }
                    Ok(Err(failure)) => Err(match failure {
                        SendFailure::Connect(failure) => {
                            failure.upstream_error(address(), || chain(&failure))
                        }
                        SendFailure::Exchange(error) => exchange_error(address(), &error, chain(&error)),
                    }),
                    Err(_) => Err(UpstreamError::ResponseTimeout { backend: address(), after: limit }),
                }
            }
            Transport::Pooled(client) => {
                let mut request = request;
                // ALPN may settle on HTTP/1.1, whose connection a refused response must not
                // return to the pool: keep a handle to poison it. HTTP/2 streams cannot desync
                // their connection, so an `http2` group needs none.
                let captured = (self.settings.protocol == UpstreamProtocol::Auto)
                    .then(|| hyper_util::client::legacy::connect::capture_connection(&mut request));
                let exchange = client.request(request);
                let result = if limits == self.settings.limits {
                    tokio::time::timeout(limit, exchange).await
                } else {
                    tokio::time::timeout(limit, ROUTE_LIMITS.scope(limits, exchange)).await
                };
                match result {
                    Ok(Ok(response)) => {
                        let http1 = response.version() <= http::Version::HTTP_11;
                        framed(address, response, self.settings.head).inspect_err(|_| {
                            if let (true, Some(captured)) = (http1, &captured)
                                && let Some(connection) = captured.connection_metadata().as_ref()
                            {
                                connection.poison();
                            }
                        })
                    }
                    Ok(Err(error)) => Err(classify(address(), &error)),
                    Err(_) => Err(UpstreamError::ResponseTimeout { backend: address(), after: limit }),
                }
            }
        }
    }
}

/// The [`UpstreamError`] for a failed exchange, from the causes hyper and the connector give.
fn classify(backend: String, error: &hyper_util::client::legacy::Error) -> UpstreamError {
    let mut source = std::error::Error::source(error);
    while let Some(e) = source {
        if let Some(failure) = e.downcast_ref::<ConnectFailure>() {
            return failure.upstream_error(backend, || chain(error));
        }
        if let Some(h2) = e.downcast_ref::<h2::Error>()
            && h2.reason() == Some(h2::Reason::REFUSED_STREAM)
        {
            return UpstreamError::RefusedStream { backend };
        }
        source = e.source();
    }
    let reason = chain(error);
    if error.is_connect() {
        return UpstreamError::Connect { backend, reason };
    }
    let mut source = std::error::Error::source(error);
    while let Some(e) = source {
        if let Some(hyper) = e.downcast_ref::<hyper::Error>() {
            return exchange_error(backend, hyper, reason);
        }
        source = e.source();
    }
    UpstreamError::Exchange { backend, reason }
}

/// A failed exchange: a response the parser refused is the backend's fault, told apart from a
/// connection that broke.
fn exchange_error(backend: String, error: &hyper::Error, reason: String) -> UpstreamError {
    if error.is_user()
        && let Some(stalled) = client_body_failure(error)
    {
        UpstreamError::ClientBody { backend, reason, stalled }
    } else if error.is_parse_too_large() {
        UpstreamError::HeadTooLarge { backend, reason }
    } else if error.is_parse() || error.is_parse_status() {
        UpstreamError::InvalidResponse { backend, reason }
    } else {
        UpstreamError::Exchange { backend, reason }
    }
}

/// Whether the request body the client sends failed the exchange: it sent nothing for the
/// body idle timeout (true), or its framing broke as the server's parser read it (false). The
/// request's total timeout running out is neither: that is the exchange's.
fn client_body_failure(error: &hyper::Error) -> Option<bool> {
    let mut source = std::error::Error::source(error);
    while let Some(e) = source {
        if let Some(stalled) = e.downcast_ref::<crate::timed::Stalled>() {
            return matches!(stalled, crate::timed::Stalled::Idle(..)).then_some(true);
        }
        if e.is::<hyper::Error>() {
            return Some(false);
        }
        source = e.source();
    }
    None
}

/// Refuses an HTTP/1 response whose length is framed two ways (RFC 9112 §6.3: a sign of
/// response splitting or smuggling), and one whose head is over `limits` (hyper's parser
/// bounds only a head that arrives in pieces); the caller closes the connection it came on.
fn framed(
    backend: impl Fn() -> String,
    response: Response<Incoming>,
    limits: HeadLimits,
) -> Result<Response<Incoming>, UpstreamError> {
    let headers = response.headers();
    if response.version() <= http::Version::HTTP_11
        && headers.contains_key(http::header::TRANSFER_ENCODING)
        && headers.contains_key(http::header::CONTENT_LENGTH)
    {
        return Err(UpstreamError::InvalidResponse {
            backend: backend(),
            reason: "the response has both Content-Length and Transfer-Encoding".into(),
        });
    }
    // Each field line is `name: value` and CRLF; the status line about 20 bytes.
    let size = 20 + headers.iter().map(|(name, value)| name.as_str().len() + value.len() + 4).sum::<usize>();
    if size > limits.bytes || headers.len() > limits.fields {
        return Err(UpstreamError::HeadTooLarge {
            backend: backend(),
            reason: format!(
                "{size} bytes in {} fields, over the group's {} bytes or {} fields",
                headers.len(),
                limits.bytes,
                limits.fields
            ),
        });
    }
    Ok(response)
}

/// The error and its causes, joined: hyper's top-level messages alone are too vague.
fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text
}

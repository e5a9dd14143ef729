//! The HTTP client to one upstream group's backends: pooled keep-alive connections per
//! backend (HTTP/1.1, or HTTP/2 multiplexed), plain or TLS, a connect timeout and a
//! response-header timeout.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};

use super::tls;
use crate::config::{ResolvedTls, UpstreamConfig, UpstreamProtocol};
use crate::timed::Timed;

/// The body sent upstream: the client's body, streamed, or a body the gateway made.
pub type UpstreamBody = http_body_util::Either<Timed<Incoming>, http_body_util::Full<Bytes>>;

/// Why an upstream exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// The connection was refused or could not be opened.
    #[error("cannot connect to {backend}: {reason}")]
    Connect {
        /// `host:port`.
        backend: String,
        /// Why.
        reason: String,
    },
    /// The connection was not open within the connect timeout.
    #[error("connecting to {backend} took longer than {}ms", after.as_millis())]
    ConnectTimeout {
        /// `host:port`.
        backend: String,
        /// The timeout.
        after: Duration,
    },
    /// No response headers within the response timeout.
    #[error("{backend} sent no response headers within {}ms", after.as_millis())]
    ResponseTimeout {
        /// `host:port`.
        backend: String,
        /// The timeout.
        after: Duration,
    },
    /// The exchange broke (reset, malformed response, body error).
    #[error("exchange with {backend} failed: {reason}")]
    Exchange {
        /// `host:port`.
        backend: String,
        /// Why.
        reason: String,
    },
}

/// The client for one upstream group.
pub struct UpstreamClient {
    client: Client<Connector, UpstreamBody>,
    /// What it was built from, to build variants for server names plugins choose.
    config: UpstreamConfig,
    tls: Option<ResolvedTls>,
    /// One client (and pool) per server name a plugin chose: connections made for one name
    /// are never reused for another.
    by_sni: Mutex<HashMap<String, Arc<UpstreamClient>>>,
    scheme: http::uri::Scheme,
    connect_timeout: Duration,
    response_timeout: Duration,
    counts: Arc<Counts>,
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

/// The connector: TCP, then TLS for https targets, bounded as a whole by the connect timeout
/// (so a backend that accepts TCP but stalls the handshake cannot hold a request), counting
/// the connections it opens.
#[derive(Clone)]
struct Connector {
    inner: HttpsConnector<HttpConnector>,
    timeout: Duration,
    counts: Arc<Counts>,
}

type Https = HttpsConnector<HttpConnector>;

impl tower_service::Service<http::Uri> for Connector {
    type Response = <Https as tower_service::Service<http::Uri>>::Response;
    type Error = crate::timed::BoxError;
    // Boxed: one allocation per new connection, never per request.
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let connecting = self.inner.call(uri);
        let (counts, timeout) = (self.counts.clone(), self.timeout);
        Box::pin(async move {
            let connection = tokio::time::timeout(timeout, connecting).await.map_err(|_| {
                std::io::Error::new(std::io::ErrorKind::TimedOut, "connect and TLS handshake timed out")
            })??;
            counts.connections.fetch_add(1, Ordering::Relaxed);
            Ok(connection)
        })
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
        let mut tcp = HttpConnector::new();
        tcp.set_connect_timeout(Some(config.connect_timeout));
        tcp.set_nodelay(true);
        // The TLS layer above hands https targets down as plain TCP connects.
        tcp.enforce_http(false);

        let tls_config = match tls {
            Some(t) => tls::client_config(
                t.ca.as_deref(),
                t.client_cert.as_ref().map(|(c, k)| (c.as_path(), k.as_path())),
            )?,
            // Plain groups never use it, but the connector wants one.
            None => tls::client_config(None, None)?,
        };
        let names = tls::ServerNames::new(tls.and_then(|t| t.sni.as_deref()), backends)?;
        let builder = HttpsConnectorBuilder::new()
            .with_tls_config(tls_config)
            .https_or_http()
            .with_server_name_resolver(names);
        let https = match config.protocol {
            UpstreamProtocol::Http1 => builder.enable_http1().wrap_connector(tcp),
            UpstreamProtocol::Http2 => builder.enable_http2().wrap_connector(tcp),
            UpstreamProtocol::Auto => builder.enable_all_versions().wrap_connector(tcp),
        };
        let counts = Arc::new(Counts::default());
        let connector = Connector { inner: https, timeout: config.connect_timeout, counts: counts.clone() };
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .pool_idle_timeout(config.pool_idle_timeout)
            .pool_max_idle_per_host(config.pool_max_idle)
            // Without TLS there is no ALPN: `http2` means prior knowledge (h2c).
            .http2_only(config.protocol == UpstreamProtocol::Http2)
            // The proxy sets Host itself (the client's, or a plugin's choice).
            .set_host(false)
            .build(connector);
        Ok(UpstreamClient {
            client,
            config: config.clone(),
            tls: tls.cloned(),
            by_sni: Mutex::new(HashMap::new()),
            scheme: if tls.is_some() { http::uri::Scheme::HTTPS } else { http::uri::Scheme::HTTP },
            connect_timeout: config.connect_timeout,
            response_timeout: config.response_timeout,
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
        let client = Arc::new(UpstreamClient::new(&self.config, Some(&tls), &[])?);
        by_sni.insert(sni.to_owned(), client.clone());
        Ok(client)
    }

    /// `https` for TLS groups, else `http`: the scheme of upstream request targets.
    pub fn scheme(&self) -> &http::uri::Scheme {
        &self.scheme
    }

    /// Requests sent and connections opened so far.
    pub fn stats(&self) -> ClientStats {
        ClientStats {
            requests: self.counts.requests.load(Ordering::Relaxed),
            new_connections: self.counts.connections.load(Ordering::Relaxed),
        }
    }

    /// Sends `request` (whose URI names the backend) and waits for the response headers, for
    /// `response_timeout` if given, else the group's.
    pub async fn send(
        &self,
        backend: &str,
        request: Request<UpstreamBody>,
        response_timeout: Option<Duration>,
    ) -> Result<Response<Incoming>, UpstreamError> {
        self.counts.requests.fetch_add(1, Ordering::Relaxed);
        let limit = response_timeout.unwrap_or(self.response_timeout);
        match tokio::time::timeout(limit, self.client.request(request)).await {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(error)) => Err(self.classify(backend, &error)),
            Err(_) => Err(UpstreamError::ResponseTimeout { backend: backend.to_owned(), after: limit }),
        }
    }

    fn classify(&self, backend: &str, error: &hyper_util::client::legacy::Error) -> UpstreamError {
        let backend = backend.to_owned();
        let reason = chain(error);
        if error.is_connect() {
            if io_kind(error) == Some(std::io::ErrorKind::TimedOut) {
                UpstreamError::ConnectTimeout { backend, after: self.connect_timeout }
            } else {
                UpstreamError::Connect { backend, reason }
            }
        } else {
            UpstreamError::Exchange { backend, reason }
        }
    }
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

fn io_kind(error: &(dyn std::error::Error + 'static)) -> Option<std::io::ErrorKind> {
    let mut source = error.source();
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            return Some(io.kind());
        }
        source = e.source();
    }
    None
}

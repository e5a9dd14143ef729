//! Listeners and connections: accepting, TLS termination where a listener has it, serving
//! HTTP/1.1 and HTTP/2 (over TLS by ALPN, or h2c with prior knowledge) through the proxy, the
//! connection timeouts, and graceful shutdown.
//!
//! Timeouts: a connection must send its first byte within `header_read_timeout` (hyper's own
//! timer only starts once it is reading a request head, and its protocol sniffing would
//! otherwise wait forever); an HTTP/1 request head must be complete within the same time,
//! counted from when the connection is ready for it (so on HTTP/1 it also bounds the idle
//! time between requests); any connection with no request in flight for `idle_timeout` is shut
//! down gracefully (HTTP/2 gets GOAWAY).

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::ServerConfig;
use crate::gateway::Gateway;
use crate::proxy::{self, Conn, ProxyBody};
use crate::timed::BoxError;
use crate::tls::ServerTls;

/// A failure to start serving.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {address}: {source}")]
pub struct BindError {
    /// The listener's `address`.
    pub address: SocketAddr,
    /// What the OS said.
    pub source: std::io::Error,
}

/// Bound listeners, ready to serve.
pub struct Server {
    listeners: Vec<(TcpListener, Option<Arc<ServerTls>>)>,
    settings: ServerConfig,
}

impl Server {
    /// Binds every address (port 0 picks a free port), each with its TLS if it has one.
    pub async fn bind(
        addresses: Vec<(SocketAddr, Option<Arc<ServerTls>>)>,
        settings: ServerConfig,
    ) -> Result<Server, BindError> {
        let mut listeners = Vec::with_capacity(addresses.len());
        for (address, tls) in addresses {
            let listener =
                TcpListener::bind(address).await.map_err(|source| BindError { address, source })?;
            listeners.push((listener, tls));
        }
        Ok(Server { listeners, settings })
    }

    /// The addresses actually bound.
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.listeners.iter().filter_map(|(l, _)| l.local_addr().ok()).collect()
    }

    /// Serves until `shutdown` resolves, then stops accepting, lets in-flight requests finish
    /// within the grace period, and returns.
    pub async fn serve(self, gateway: Arc<ArcSwap<Gateway>>, shutdown: impl Future<Output = ()>) {
        let (stop_tx, stop_rx) = watch::channel(false);
        let tracker = TaskTracker::new();
        let cut_off = CancellationToken::new();
        let slots = Arc::new(Semaphore::new(self.settings.max_connections));
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder.http1().timer(TokioTimer::new()).header_read_timeout(self.settings.header_read_timeout);
        builder.http2().timer(TokioTimer::new()).max_concurrent_streams(256);
        let shared = Arc::new(Shared { gateway, builder, settings: self.settings.clone() });

        let mut accepting = tokio::task::JoinSet::new();
        for (listener, tls) in self.listeners {
            let limits = Limits { stop: stop_rx.clone(), cut_off: cut_off.clone(), slots: slots.clone() };
            accepting.spawn(accept_loop(listener, tls, shared.clone(), limits, tracker.clone()));
        }
        shutdown.await;
        tracing::info!(
            grace_ms = self.settings.grace_period.as_millis() as u64,
            "shutting down: draining connections"
        );
        accepting.abort_all();
        let _ = stop_tx.send(true);
        tracker.close();
        if tokio::time::timeout(self.settings.grace_period, tracker.wait()).await.is_err() {
            tracing::warn!(open = tracker.len(), "grace period over; closing the remaining connections");
            cut_off.cancel();
            tracker.wait().await;
        }
    }
}

struct Shared {
    gateway: Arc<ArcSwap<Gateway>>,
    builder: auto::Builder<TokioExecutor>,
    settings: ServerConfig,
}

/// What every connection task is told: drain (`stop`), close now (`cut_off`), and the
/// connection slot it holds.
#[derive(Clone)]
struct Limits {
    stop: watch::Receiver<bool>,
    cut_off: CancellationToken,
    slots: Arc<Semaphore>,
}

async fn accept_loop(
    listener: TcpListener,
    tls: Option<Arc<ServerTls>>,
    shared: Arc<Shared>,
    limits: Limits,
    tracker: TaskTracker,
) {
    loop {
        // At the connection cap, stop accepting: new clients wait in the kernel's backlog.
        let Ok(slot) = limits.slots.clone().acquire_owned().await else { return };
        match listener.accept().await {
            Ok((stream, client)) => {
                let _ = stream.set_nodelay(true);
                let (shared, limits, tls) = (shared.clone(), limits.clone(), tls.clone());
                tracker.spawn(async move {
                    tokio::select! {
                        _ = open_connection(stream, client, tls, shared, limits.stop) => {}
                        _ = limits.cut_off.cancelled() => {}
                    }
                    drop(slot);
                });
            }
            Err(error) => {
                // Running out of file descriptors must not spin the loop.
                drop(slot);
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Waits for a plain connection's first byte, or completes a TLS handshake, then serves it.
async fn open_connection(
    stream: TcpStream,
    client: SocketAddr,
    tls: Option<Arc<ServerTls>>,
    shared: Arc<Shared>,
    stop: watch::Receiver<bool>,
) {
    let Some(tls) = tls else {
        let mut first = [0u8; 1];
        match tokio::time::timeout(shared.settings.header_read_timeout, stream.peek(&mut first)).await {
            Ok(Ok(n)) if n > 0 => {}
            Ok(_) => return,
            Err(_) => {
                tracing::debug!(%client, "connection sent nothing within the header timeout; closed");
                return;
            }
        }
        return serve_connection(stream, Conn::new(client, false), shared, stop).await;
    };
    let stream = match tokio::time::timeout(tls.handshake_timeout, tls.acceptor().accept(stream)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(error)) => {
            tracing::debug!(%client, %error, "TLS handshake failed");
            return;
        }
        Err(_) => {
            tracing::debug!(%client, "TLS handshake timed out");
            return;
        }
    };
    let identity =
        stream.get_ref().1.peer_certificates().and_then(|c| c.first()).and_then(crate::tls::client_identity);
    serve_connection(stream, Conn::new(client, true).with_identity(identity), shared, stop).await;
}

async fn serve_connection<S>(stream: S, conn: Conn, shared: Arc<Shared>, mut stop: watch::Receiver<bool>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let settings = &shared.settings;
    let client = conn.client;
    let activity = Arc::new(Activity::new());
    let service = {
        let (gateway, activity) = (shared.gateway.clone(), activity.clone());
        service_fn(move |request| {
            let gateway = gateway.load_full();
            let active = ActiveRequest::begin(activity.clone());
            let conn = conn.clone();
            // Boxed: hyper keeps the service's future inside the connection's, so unboxed an
            // idle keep-alive connection would hold room for the largest request in flight.
            Box::pin(async move {
                let response = proxy::handle(gateway.served(), conn, request).await;
                Ok::<_, Infallible>(response.map(|body| TrackedBody { body, _active: active }))
            })
        })
    };
    // With upgrades: a WebSocket handshake hands the connection to its tunnel.
    let connection = shared.builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
    tokio::pin!(connection);
    let mut closing = false;
    loop {
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(error) = result {
                    tracing::debug!(%client, %error, "connection ended with an error");
                }
                return;
            }
            _ = stop.changed(), if !closing => {
                closing = true;
                connection.as_mut().graceful_shutdown();
            }
            _ = activity.idle_for(settings.idle_timeout), if !closing => {
                tracing::debug!(%client, "idle connection closed");
                closing = true;
                connection.as_mut().graceful_shutdown();
            }
        }
    }
}

/// Requests in flight on one connection, and since when it has been idle.
struct Activity {
    active: AtomicUsize,
    /// Milliseconds after `origin` when the last request finished.
    idle_since_ms: AtomicU64,
    origin: Instant,
}

impl Activity {
    fn new() -> Self {
        Activity { active: AtomicUsize::new(0), idle_since_ms: AtomicU64::new(0), origin: Instant::now() }
    }

    /// Resolves once the connection has had no request in flight for `limit`.
    async fn idle_for(&self, limit: Duration) {
        loop {
            let idle_at =
                self.origin + Duration::from_millis(self.idle_since_ms.load(Ordering::Relaxed)) + limit;
            let busy = self.active.load(Ordering::Relaxed) > 0;
            if !busy && Instant::now() >= idle_at {
                return;
            }
            tokio::time::sleep_until(if busy { Instant::now() + limit } else { idle_at }).await;
        }
    }
}

/// Marks a request in flight until its response body is done.
struct ActiveRequest(Arc<Activity>);

impl ActiveRequest {
    fn begin(activity: Arc<Activity>) -> Self {
        activity.active.fetch_add(1, Ordering::Relaxed);
        ActiveRequest(activity)
    }
}

impl Drop for ActiveRequest {
    fn drop(&mut self) {
        let a = &self.0;
        a.idle_since_ms.store(a.origin.elapsed().as_millis() as u64, Ordering::Relaxed);
        a.active.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A response body that keeps its request counted as in flight until it is done.
struct TrackedBody {
    body: ProxyBody,
    _active: ActiveRequest,
}

impl Body for TrackedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The config, or a plugin it names, is refused.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// A listener could not be bound.
    #[error(transparent)]
    Bind(#[from] BindError),
    /// The WebAssembly engine could not be created.
    #[error("cannot create the plugin engine: {0}")]
    Engine(String),
}

/// A gateway serving in the background.
pub struct Running {
    addrs: Vec<SocketAddr>,
    /// The admin listener's address, and what it serves.
    admin: Option<(SocketAddr, Arc<crate::admin::Admin>, tokio::task::JoinHandle<()>)>,
    gateway: Arc<ArcSwap<Gateway>>,
    /// The engine and its epoch ticker; reloads load their plugins into it.
    runtime: Arc<crate::plugin::Runtime>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    done: tokio::task::JoinHandle<()>,
}

impl Running {
    /// The plugin runtime: its shared store and metrics registry outlive reloads.
    pub fn runtime(&self) -> &Arc<crate::plugin::Runtime> {
        &self.runtime
    }

    /// The admin listener's address, if there is one.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().map(|(addr, ..)| *addr)
    }

    /// The bound listener addresses, in config order.
    pub fn addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// The generation being served now.
    pub fn gateway(&self) -> Arc<Gateway> {
        self.gateway.load_full()
    }

    /// Builds a new generation from `config` and swaps it in whole: requests already under
    /// way finish on the generation they started with, every later one sees the new one. A
    /// config that fails to build is refused and the current generation keeps serving.
    /// Listeners and `[server]` settings are read at start only; changing them needs a
    /// restart (a warning says so).
    pub async fn reload(&self, config: crate::config::Config) -> Result<(), crate::config::ConfigError> {
        let current = self.gateway.load_full();
        let old = current.config();
        let listeners = |c: &crate::config::Config| c.listeners.iter().map(|l| l.address).collect::<Vec<_>>();
        let on_restart = listeners(old) != listeners(&config)
            || old.server != config.server
            || old.admin != config.admin
            || old.traces != config.traces
            || old.log.format != config.log.format;
        if on_restart {
            tracing::warn!(
                "listeners, [server], [admin], [traces] and the log format change only on restart; \
                 the rest is reloaded"
            );
        }
        let next = Gateway::build(config, &self.runtime, Some(&current)).await?;
        self.gateway.store(Arc::new(next));
        tracing::info!("config reloaded");
        Ok(())
    }

    /// Drains and stops, as on SIGTERM.
    pub async fn stop(mut self) {
        if let Some((_, admin, _)) = &self.admin {
            admin.draining();
        }
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = (&mut self.done).await;
        if let Some((_, _, task)) = self.admin.take() {
            task.abort();
        }
        // The last spans go out before the process ends.
        if let Some(telemetry) = self.gateway.load().telemetry().cloned() {
            telemetry.shutdown().await;
        }
    }
}

/// Builds the plugin runtime and the gateway from `config`, binds its listeners and serves
/// until [`Running::stop`].
pub async fn start(config: crate::config::Config) -> Result<Running, StartError> {
    let runtime = Arc::new(
        crate::plugin::Runtime::new(&crate::plugin::RuntimeConfig::from_config(&config))
            .map_err(|e| StartError::Engine(format!("{e:#}")))?,
    );
    let mut addresses = Vec::with_capacity(config.listeners.len());
    for (i, listener) in config.listeners.iter().enumerate() {
        let tls = match &listener.tls {
            Some(tls) => Some(
                ServerTls::new(tls, |p| config.resolve(p))
                    .map_err(|reason| config.error(format!("listeners[{i}].tls"), reason))?,
            ),
            None => None,
        };
        addresses.push((listener.address, tls));
    }
    let settings = config.server.clone();
    let admin_config = config.admin.clone();
    let gateway = Arc::new(ArcSwap::from_pointee(Gateway::build(config, &runtime, None).await?));
    let server = Server::bind(addresses, settings).await?;
    let addrs = server.local_addrs();
    for addr in &addrs {
        tracing::info!(address = %addr, "listening");
    }
    let admin = match admin_config {
        Some(config) => {
            let listener = TcpListener::bind(config.address)
                .await
                .map_err(|source| BindError { address: config.address, source })?;
            let address =
                listener.local_addr().map_err(|source| BindError { address: config.address, source })?;
            let admin = crate::admin::Admin::new(gateway.clone(), runtime.clone(), config.token);
            let task = tokio::spawn(crate::admin::serve(listener, admin.clone()));
            tracing::info!(%address, "admin listening");
            Some((address, admin, task))
        }
        None => None,
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let done = tokio::spawn({
        let gateway = gateway.clone();
        async move {
            server
                .serve(gateway, async move {
                    let _ = stopped.await;
                })
                .await;
        }
    });
    Ok(Running { addrs, admin, gateway, runtime, stop: Some(stop), done })
}

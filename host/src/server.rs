//! Listeners and connections: accepting, TLS termination where a listener has it, serving
//! HTTP/1.1 and HTTP/2 (over TLS by ALPN, or h2c with prior knowledge) through the proxy, the
//! connection timeouts, and graceful shutdown.
//!
//! Timeouts: a connection must send its first byte within `header_read_timeout` (hyper's own
//! timer only starts once it is reading a request head, and its protocol sniffing would
//! otherwise wait forever); an HTTP/1 request head must be complete within the same time,
//! counted from when the connection is ready for it (so on HTTP/1 it also bounds the idle
//! time between requests); any connection with no request in flight for `idle_timeout` is shut
//! down gracefully (HTTP/2 gets GOAWAY); a client that takes no byte of a response for
//! `write_timeout` is disconnected.
//!
//! Draining (on SIGTERM, or once a successor has taken the sockets over): accepting stops;
//! HTTP/2 connections get GOAWAY; an HTTP/1 connection answers its next request with
//! `Connection: close` and then closes, or, if no request comes, closes once idle for
//! [`DRAIN_IDLE`]. Closing an idle keep-alive connection at once would race a request the
//! client may be sending on it. Tunnels count as in flight too.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
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
use crate::handover::{Inherited, Role, Socket};
use crate::proxy::{self, Background, Conn, ProxyBody};
use crate::reload::{ReloadError, Reloaded, Reloader};
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

/// How long a draining HTTP/1 connection may stay idle before it is closed.
pub const DRAIN_IDLE: Duration = Duration::from_secs(1);

/// Bound listeners, ready to serve.
pub struct Server {
    listeners: Vec<(TcpListener, Option<Arc<ServerTls>>)>,
    settings: ServerConfig,
}

impl Server {
    /// Binds every address (port 0 picks a free port), each with its TLS if it has one; a
    /// socket `inherited` from a predecessor at the same configured address is used instead.
    pub async fn bind(
        addresses: Vec<(SocketAddr, Option<Arc<ServerTls>>)>,
        settings: ServerConfig,
        inherited: &mut Inherited,
    ) -> Result<Server, BindError> {
        let mut listeners = Vec::with_capacity(addresses.len());
        for (address, tls) in addresses {
            listeners.push((listen(Role::Listener, address, inherited).await?, tls));
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
        let background = Arc::new(Background::new(tracker.clone(), cut_off.clone()));
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(self.settings.header_read_timeout)
            .max_buf_size(self.settings.max_request_head)
            .max_headers(self.settings.max_request_fields);
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_concurrent_streams(256)
            .max_header_list_size(u32::try_from(self.settings.max_request_head).unwrap_or(u32::MAX));
        let shared = Arc::new(Shared { gateway, builder, settings: self.settings.clone(), background });

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
    background: Arc<Background>,
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
        let conn = Conn::new(client, false).with_background(shared.background.clone());
        return serve_connection(stream, conn, shared, stop).await;
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
    let conn = Conn::new(client, true).with_identity(identity).with_background(shared.background.clone());
    serve_connection(stream, conn, shared, stop).await;
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
        service_fn(move |request: http::Request<hyper::body::Incoming>| {
            let gateway = gateway.load_full();
            let h2 = request.version() == http::Version::HTTP_2;
            if h2 {
                activity.h2.store(true, Ordering::Relaxed);
            }
            let active = ActiveRequest::begin(activity.clone());
            let conn = conn.clone();
            // Boxed: hyper keeps the service's future inside the connection's, so unboxed an
            // idle keep-alive connection would hold room for the largest request in flight.
            Box::pin(async move {
                let mut response = proxy::handle(gateway.served(), conn, request).await;
                // Draining: this HTTP/1 connection's last response; hyper closes after it.
                if !h2 && active.0.draining.load(Ordering::Relaxed) {
                    response
                        .headers_mut()
                        .insert(http::header::CONNECTION, http::HeaderValue::from_static("close"));
                }
                Ok::<_, Infallible>(response.map(|body| TrackedBody { body, _active: active }))
            })
        })
    };
    // With upgrades: a WebSocket handshake hands the connection to its tunnel.
    let stream = crate::timed::WriteTimed::new(stream, settings.write_timeout);
    let connection = shared.builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
    tokio::pin!(connection);
    let mut closing = false;
    let mut draining = false;
    loop {
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(error) = result {
                    tracing::debug!(%client, %error, "connection ended with an error");
                }
                return;
            }
            _ = stop.changed(), if !draining => {
                draining = true;
                activity.draining.store(true, Ordering::Relaxed);
                // The idle time to drain counts from now, however long it was idle before.
                activity.idle_since_ms.store(activity.origin.elapsed().as_millis() as u64, Ordering::Relaxed);
                if activity.h2.load(Ordering::Relaxed) && !closing {
                    closing = true;
                    connection.as_mut().graceful_shutdown();
                }
            }
            _ = activity.idle_for(DRAIN_IDLE), if draining && !closing => {
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

/// Requests in flight on one connection, since when it has been idle, its protocol and
/// whether it drains.
struct Activity {
    active: AtomicUsize,
    /// Set by the first request: HTTP/2 connections drain by GOAWAY.
    h2: AtomicBool,
    draining: AtomicBool,
    /// Milliseconds after `origin` when the last request finished.
    idle_since_ms: AtomicU64,
    origin: Instant,
}

impl Activity {
    fn new() -> Self {
        Activity {
            active: AtomicUsize::new(0),
            h2: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            idle_since_ms: AtomicU64::new(0),
            origin: Instant::now(),
        }
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

/// Binds `address` for `role`, or takes the socket a predecessor passed for it.
async fn listen(
    role: Role,
    address: SocketAddr,
    inherited: &mut Inherited,
) -> Result<TcpListener, BindError> {
    match inherited.claim(role, address) {
        Some(listener) => listener,
        None => TcpListener::bind(address).await,
    }
    .map_err(|source| BindError { address, source })
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
    reloader: Reloader,
    /// Resolves backend names again ([`Reloader::follow_dns`]).
    dns: tokio::task::JoinHandle<()>,
    /// Copies of the listening sockets, for a successor.
    sockets: Vec<Socket>,
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

    /// Asks for reloads; every asker's reloads run one at a time.
    pub fn reloader(&self) -> &Reloader {
        &self.reloader
    }

    /// The listening sockets (listeners and admin), to hand to a successor.
    pub fn sockets(&self) -> &[Socket] {
        &self.sockets
    }

    /// Builds a new generation from `config` and swaps it in whole (see [`Reloader`]). A
    /// config that fails to build is refused and the current generation keeps serving.
    pub async fn reload(&self, config: crate::config::Config) -> Result<Reloaded, ReloadError> {
        self.reloader.with(config).await
    }

    /// Drains and stops, as on SIGTERM: `/readyz` answers 503 while connections drain.
    pub async fn stop(self) {
        self.shut_down(false).await;
    }

    /// Drains and stops once a successor serves on the sockets: the admin listener stops
    /// accepting at once (the successor's answers), and `/readyz` answers 503 on the admin
    /// connections still open here.
    pub async fn retire(self) {
        self.shut_down(true).await;
    }

    async fn shut_down(mut self, handed_over: bool) {
        if let Some((_, admin, task)) = &self.admin {
            admin.draining();
            if handed_over {
                task.abort();
            }
        }
        // This process's copies of the listening sockets close; a successor keeps its own.
        self.sockets.clear();
        self.dns.abort();
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = (&mut self.done).await;
        if let Some((_, admin, task)) = self.admin.take() {
            task.abort();
            admin.close();
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
    let runtime = runtime(&config)?;
    let gateway = Gateway::build(config, &runtime, None).await?;
    serve(gateway, runtime, Inherited::default()).await
}

/// The plugin runtime `config` asks for.
pub fn runtime(config: &crate::config::Config) -> Result<Arc<crate::plugin::Runtime>, StartError> {
    crate::plugin::Runtime::new(&crate::plugin::RuntimeConfig::from_config(config))
        .map(Arc::new)
        .map_err(|e| StartError::Engine(format!("{e:#}")))
}

/// Serves a built `gateway`: binds its listeners and the admin listener, each on the socket
/// `inherited` from a predecessor at the same configured address if there is one.
pub async fn serve(
    gateway: Gateway,
    runtime: Arc<crate::plugin::Runtime>,
    mut inherited: Inherited,
) -> Result<Running, StartError> {
    let config = gateway.config();
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
    let configured: Vec<SocketAddr> = addresses.iter().map(|(a, _)| *a).collect();
    let server = Server::bind(addresses, settings, &mut inherited).await?;
    let mut sockets = Vec::with_capacity(configured.len() + 1);
    for ((listener, _), configured) in server.listeners.iter().zip(configured) {
        sockets.push(socket_copy(Role::Listener, configured, listener)?);
    }
    let addrs = server.local_addrs();
    for addr in &addrs {
        tracing::info!(address = %addr, "listening");
    }
    let gateway = Arc::new(ArcSwap::from_pointee(gateway));
    let reloader = Reloader::spawn(gateway.clone(), runtime.clone());
    let dns = tokio::spawn(reloader.clone().follow_dns());
    let admin = match admin_config {
        Some(config) => {
            let listener = listen(Role::Admin, config.address, &mut inherited).await?;
            sockets.push(socket_copy(Role::Admin, config.address, &listener)?);
            let address =
                listener.local_addr().map_err(|source| BindError { address: config.address, source })?;
            let admin =
                crate::admin::Admin::new(gateway.clone(), runtime.clone(), reloader.clone(), config.token);
            let task = tokio::spawn(crate::admin::serve(listener, admin.clone()));
            tracing::info!(%address, "admin listening");
            Some((address, admin, task))
        }
        None => None,
    };
    for (role, address) in inherited.unclaimed() {
        tracing::info!(?role, %address, "the new config drops this listener: closed here");
    }
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
    Ok(Running { addrs, admin, gateway, runtime, reloader, dns, sockets, stop: Some(stop), done })
}

/// A copy of `listener`'s socket, to pass to a successor.
fn socket_copy(role: Role, configured: SocketAddr, listener: &TcpListener) -> Result<Socket, BindError> {
    let fd =
        listener.as_fd().try_clone_to_owned().map_err(|source| BindError { address: configured, source })?;
    Ok(Socket { role, configured, fd })
}

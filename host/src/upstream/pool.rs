//! Keep-alive HTTP/1.1 connections to the backends of one group.
//!
//! A request takes a ready connection of its backend, or opens one, and sends on it; the
//! connection stays in its backend's list while it carries the response, and is ready again
//! once hyper has read that response's body. So a request costs no task, no channel beyond
//! hyper's own and no keyed pool search, which hyper-util's pooled client spends on every
//! request (measured in `docs/performance.md`). HTTP/2 groups keep hyper-util's client, which
//! multiplexes.
//!
//! Limits: at most `max_connections` open per backend (a request past it waits, within the
//! connect timeout, for one to be ready or to close); connections idle longer than
//! `pool_idle_timeout` close, and at most `pool_max_idle` stay idle per backend.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError, RwLock, Weak};
use std::time::{Duration, Instant};

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use super::client::{ConnectFailure, ConnectLimits, Dialer, HeadLimits, UpstreamBody};

/// One connection: the handle requests go out on, and the switch that closes it.
struct Sender {
    send: http1::SendRequest<UpstreamBody>,
    close: CancellationToken,
}

impl Sender {
    fn is_ready(&self) -> bool {
        self.send.is_ready() && !self.close.is_cancelled()
    }

    fn is_closed(&self) -> bool {
        self.send.is_closed() || self.close.is_cancelled()
    }
}

/// Closes the connection a response came on, so that it is never used again (a response
/// whose framing the gateway refused).
pub(super) struct Closer(CancellationToken);

impl Closer {
    pub(super) fn close(&self) {
        self.0.cancel();
    }
}

/// Every backend's connections, by address.
pub(super) struct Pool {
    lanes: RwLock<HashMap<SocketAddr, Arc<Lane>>>,
    max_connections: u32,
    max_idle: usize,
    idle_timeout: Duration,
    head: HeadLimits,
}

/// One backend's open connections, ready or busy.
struct Lane {
    open: Mutex<Vec<Kept>>,
    /// Connections open at most, when limited.
    slots: Option<Arc<Semaphore>>,
}

struct Kept {
    sender: Sender,
    /// When a request last took it: it has been idle for at most this long.
    used: Instant,
}

/// Why a request could not be sent: the connect step failed, or the exchange did.
pub(super) enum SendFailure {
    Connect(ConnectFailure),
    Exchange(hyper::Error),
}

impl Pool {
    pub(super) fn new(
        max_connections: u32,
        max_idle: usize,
        idle_timeout: Duration,
        head: HeadLimits,
    ) -> Arc<Pool> {
        Arc::new(Pool { lanes: RwLock::default(), max_connections, max_idle, idle_timeout, head })
    }

    /// Sends `request` to `backend` on a ready connection, or a new one opened within
    /// `limits`; a reused connection the backend closed meanwhile is replaced once.
    pub(super) async fn send(
        self: &Arc<Self>,
        dialer: &Dialer,
        backend: SocketAddr,
        authority: &str,
        mut request: Request<UpstreamBody>,
        limits: ConnectLimits,
    ) -> Result<(Response<Incoming>, Closer), SendFailure> {
        let lane = self.lane(backend);
        let mut retried = false;
        loop {
            let ready = if retried { None } else { self.take_ready(&lane) };
            let reused = ready.is_some();
            let mut sender = match ready {
                Some(sender) => sender,
                // Boxed: the connect and handshake state is large and rarely needed, and every
                // request's future would otherwise carry room for it.
                None => match Box::pin(self.open(&lane, dialer, backend, authority, limits)).await {
                    Ok(sender) => sender,
                    Err(failure) => return Err(SendFailure::Connect(failure)),
                },
            };
            let sending = sender.send.try_send_request(request);
            let closer = Closer(sender.close.clone());
            lane.keep(sender);
            match sending.await {
                Ok(response) => return Ok((response, closer)),
                Err(mut error) => match error.take_message() {
                    // Not sent: the connection closed as it was taken. Once more, on a new one.
                    Some(unsent) if reused => {
                        request = unsent;
                        retried = true;
                        continue;
                    }
                    _ => return Err(SendFailure::Exchange(error.into_error())),
                },
            }
        }
    }

    fn lane(self: &Arc<Self>, backend: SocketAddr) -> Arc<Lane> {
        let lanes = self.lanes.read().unwrap_or_else(PoisonError::into_inner);
        if let Some(lane) = lanes.get(&backend) {
            return lane.clone();
        }
        drop(lanes);
        let mut lanes = self.lanes.write().unwrap_or_else(PoisonError::into_inner);
        if lanes.is_empty() {
            // The first connection of this pool starts its reaper.
            tokio::spawn(reap(Arc::downgrade(self)));
        }
        let slots =
            (self.max_connections > 0).then(|| Arc::new(Semaphore::new(self.max_connections as usize)));
        lanes.entry(backend).or_insert_with(|| Arc::new(Lane { open: Mutex::default(), slots })).clone()
    }

    /// The most recently kept ready connection, dropping closed and expired ones on the way.
    fn take_ready(&self, lane: &Lane) -> Option<Sender> {
        let now = Instant::now();
        let mut open = lane.lock();
        let mut i = open.len();
        while i > 0 {
            i -= 1;
            let kept = &open[i];
            if kept.stale(now, self.idle_timeout) {
                open.swap_remove(i);
            } else if kept.sender.is_ready() {
                return Some(open.swap_remove(i).sender);
            }
        }
        None
    }

    /// A new connection, or at `max_connections` whichever comes first of a slot and a ready
    /// connection.
    async fn open(
        &self,
        lane: &Lane,
        dialer: &Dialer,
        backend: SocketAddr,
        authority: &str,
        limits: ConnectLimits,
    ) -> Result<Sender, ConnectFailure> {
        let permit = match &lane.slots {
            None => None,
            Some(slots) => match slots.clone().try_acquire_owned() {
                Ok(permit) => Some(permit),
                Err(_) => match self.wait(lane, slots, limits.connect).await? {
                    Waited::Ready(sender) => return Ok(sender),
                    Waited::Slot(permit) => Some(permit),
                },
            },
        };
        let io = dialer.dial(backend, authority, limits, permit).await?;
        let (send, connection) = http1::Builder::new()
            .max_buf_size(self.head.bytes)
            .max_headers(self.head.fields)
            .handshake(io)
            .await
            .map_err(ConnectFailure::Handshake)?;
        let close = CancellationToken::new();
        let closed = close.clone();
        tokio::spawn(async move {
            tokio::select! {
                result = connection.with_upgrades() => {
                    if let Err(error) = result {
                        tracing::debug!(%backend, %error, "upstream connection ended with an error");
                    }
                }
                () = closed.cancelled() => tracing::debug!(%backend, "upstream connection closed after a refused response"),
            }
        });
        Ok(Sender { send, close })
    }

    /// At the cap: the first of a slot (a connection closed) and a connection of the lane
    /// coming ready, looked for every millisecond (hyper says when a connection is ready only
    /// to the one holding it, and any of the busy ones may be first).
    async fn wait(
        &self,
        lane: &Lane,
        slots: &Arc<Semaphore>,
        limit: Duration,
    ) -> Result<Waited, ConnectFailure> {
        let waited = async {
            let acquire = slots.clone().acquire_owned();
            tokio::pin!(acquire);
            let mut look = tokio::time::interval(Duration::from_millis(1));
            loop {
                tokio::select! {
                    permit = &mut acquire => return permit.map(Waited::Slot),
                    _ = look.tick() => {
                        if let Some(sender) = self.take_ready(lane) {
                            return Ok(Waited::Ready(sender));
                        }
                    }
                }
            }
        };
        match tokio::time::timeout(limit, waited).await {
            Ok(Ok(waited)) => Ok(waited),
            Ok(Err(_)) | Err(_) => Err(ConnectFailure::NoSlot(limit)),
        }
    }

    /// Closes connections idle past the timeout, and the oldest idle ones past `max_idle`.
    fn trim(&self) {
        let lanes: Vec<Arc<Lane>> =
            self.lanes.read().unwrap_or_else(PoisonError::into_inner).values().cloned().collect();
        let now = Instant::now();
        for lane in lanes {
            let mut open = lane.lock();
            open.retain(|k| !k.stale(now, self.idle_timeout));
            if open.iter().filter(|k| k.sender.is_ready()).count() > self.max_idle {
                // The most recently used idle ones stay.
                open.sort_by_key(|k| std::cmp::Reverse(k.used));
                let mut idle = 0;
                open.retain(|k| {
                    idle += usize::from(k.sender.is_ready());
                    !k.sender.is_ready() || idle <= self.max_idle
                });
            }
        }
    }
}

impl Kept {
    /// Closed, or idle past `timeout`: to be dropped.
    fn stale(&self, now: Instant, timeout: Duration) -> bool {
        self.sender.is_closed() || (self.sender.is_ready() && now - self.used > timeout)
    }
}

enum Waited {
    Ready(Sender),
    Slot(OwnedSemaphorePermit),
}

impl Lane {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Kept>> {
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Puts a connection back in the list, busy with the request just sent on it.
    fn keep(&self, sender: Sender) {
        self.lock().push(Kept { sender, used: Instant::now() });
    }
}

/// Trims the pool every half idle timeout, between every second and every 5 s (so that the
/// connections a burst left beyond `pool_max_idle` close soon), for as long as it exists.
async fn reap(pool: Weak<Pool>) {
    let every = match pool.upgrade() {
        Some(pool) => (pool.idle_timeout / 2).clamp(Duration::from_secs(1), Duration::from_secs(5)),
        None => return,
    };
    loop {
        tokio::time::sleep(every).await;
        match pool.upgrade() {
            Some(pool) => pool.trim(),
            None => return,
        }
    }
}

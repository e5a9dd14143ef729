//! The body of every response the gateway sends: the upstream's, streamed as it arrives, or
//! one the gateway wrote. It counts the bytes it sends and, when the route has log plugins,
//! runs them once the body is finished or abandoned.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::Full;
use hyper::body::Incoming;

use super::route::Route;
use crate::plugin::{Exchange, LogEntry};
use crate::timed::{BoxError, Timed};
use crate::upstream::InFlight;

enum Source {
    Upstream(Timed<Incoming>),
    Local(Full<Bytes>),
}

/// A response body; see the module docs.
pub struct ProxyBody {
    source: Source,
    sent: u64,
    ended: bool,
    log: Option<Box<PendingLog>>,
    _in_flight: Option<InFlight>,
}

/// What the log phase needs once the body is done.
pub(crate) struct PendingLog {
    pub(crate) route: Arc<Route>,
    pub(crate) ex: Box<Exchange>,
    pub(crate) entry: LogEntry,
    pub(crate) started: Instant,
}

impl ProxyBody {
    /// The upstream's body, streamed; `in_flight` keeps the request counted against its
    /// backend until the body is done.
    pub fn upstream(body: Timed<Incoming>, in_flight: Option<InFlight>) -> Self {
        ProxyBody { source: Source::Upstream(body), sent: 0, ended: false, log: None, _in_flight: in_flight }
    }

    /// A body the gateway wrote.
    pub fn local(bytes: Bytes) -> Self {
        ProxyBody {
            source: Source::Local(Full::new(bytes)),
            sent: 0,
            ended: false,
            log: None,
            _in_flight: None,
        }
    }

    pub(crate) fn with_log(mut self, log: Box<PendingLog>) -> Self {
        self.log = Some(log);
        self
    }
}

impl From<Bytes> for ProxyBody {
    fn from(bytes: Bytes) -> Self {
        ProxyBody::local(bytes)
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = match &mut self.source {
            Source::Upstream(body) => Pin::new(body).poll_frame(cx),
            Source::Local(body) => Pin::new(body).poll_frame(cx).map_err(|never| match never {}),
        };
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    self.sent += data.len() as u64;
                }
            }
            Poll::Ready(None) => self.ended = true,
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        match &self.source {
            Source::Upstream(body) => body.is_end_stream(),
            Source::Local(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.source {
            Source::Upstream(body) => body.size_hint(),
            Source::Local(body) => body.size_hint(),
        }
    }
}

impl Drop for ProxyBody {
    fn drop(&mut self) {
        let Some(mut log) = self.log.take() else { return };
        let ended = self.ended || self.is_end_stream();
        log.entry.bytes_out = self.sent;
        log.entry.duration_us = u64::try_from(log.started.elapsed().as_micros()).unwrap_or(u64::MAX);
        if !ended && log.entry.error.is_none() {
            log.entry.error =
                Some("the response did not finish: the client or upstream went away".to_owned());
        }
        // Log plugins run after the response, off the response's own path.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let PendingLog { route, mut ex, entry, .. } = *log;
                for plugin in &route.log {
                    if let Err(error) = plugin.on_log(&mut ex, &entry).await {
                        tracing::warn!(plugin = plugin.name(), %error, "log phase failed");
                    }
                }
            });
        }
    }
}

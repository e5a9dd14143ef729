//! The body of every response the gateway sends: the upstream's, streamed as it arrives
//! (through the route's response-body and trailer plugins, if it has any), or one the gateway
//! wrote. It counts the bytes it sends and, when the route has log plugins, runs them once the
//! body is finished or abandoned.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::Full;
use hyper::body::Incoming;

use super::filter::{Direction, Filter};
use super::route::Route;
use crate::metrics::Timing;
use crate::plugin::{Exchange, LogEntry, Phase};
use crate::timed::{BoxError, Timed};
use crate::upstream::InFlight;
use prometheus_client::metrics::counter::Counter;

enum Source {
    Upstream(Timed<Incoming>),
    Local(Full<Bytes>),
}

/// A response body; see the module docs.
pub struct ProxyBody {
    source: Source,
    sent: u64,
    ended: bool,
    /// The exchange, once the proxy hands it over: for body plugins and the log phase.
    follow: Option<Box<Follow>>,
    /// Counted and timed when the body is done.
    done: Option<Done>,
    /// The request's span, ended when the body is done.
    span: Option<Span>,
    _in_flight: Option<InFlight>,
}

/// A request's span and what ends it.
pub(crate) struct Span {
    pub(crate) cx: opentelemetry::Context,
    pub(crate) status: u16,
    pub(crate) error: Option<&'static str>,
}

/// The request's entry in the metrics, made when the response head is known.
pub(crate) struct Done {
    pub(crate) started: Instant,
    pub(crate) requests: Counter,
    pub(crate) seconds: Option<Timing>,
    pub(crate) access: Option<Box<super::access::AccessEntry>>,
}

impl Done {
    fn record(&self, bytes_out: u64) {
        let elapsed = self.started.elapsed();
        self.requests.inc();
        if let Some(seconds) = &self.seconds {
            seconds.observe(elapsed.as_secs_f64());
        }
        if let Some(access) = &self.access {
            access.write(elapsed, bytes_out);
        }
    }
}

struct Follow {
    /// Holds the exchange, and the route whose plugins run.
    filter: Filter,
    log: Option<PendingLog>,
}

/// What the log phase needs besides the exchange.
pub(crate) struct PendingLog {
    pub(crate) entry: LogEntry,
    pub(crate) started: Instant,
    /// Request body bytes, counted as they went upstream.
    pub(crate) bytes_in: Option<Arc<AtomicU64>>,
}

impl ProxyBody {
    /// The upstream's body, streamed; `in_flight` keeps the request counted against its
    /// backend until the body is done.
    pub fn upstream(body: Timed<Incoming>, in_flight: Option<InFlight>) -> Self {
        ProxyBody {
            source: Source::Upstream(body),
            sent: 0,
            ended: false,
            follow: None,
            done: None,
            span: None,
            _in_flight: in_flight,
        }
    }

    /// A body the gateway wrote.
    pub fn local(bytes: Bytes) -> Self {
        ProxyBody {
            source: Source::Local(Full::new(bytes)),
            sent: 0,
            ended: false,
            follow: None,
            done: None,
            span: None,
            _in_flight: None,
        }
    }

    /// Hands the body the exchange: an upstream body then goes through the route's body
    /// plugins, and `log` (if any) runs when the body is done.
    pub(crate) fn follow(mut self, route: Arc<Route>, ex: Box<Exchange>, log: Option<PendingLog>) -> Self {
        let filter = Filter::new(route, Direction::Response, ex);
        self.follow = Some(Box::new(Follow { filter, log }));
        self
    }
}

impl ProxyBody {
    /// Counts and times the request when the body is done.
    pub(crate) fn done(mut self, done: Done) -> Self {
        self.done = Some(done);
        self
    }

    /// Ends the request's span when the body is done.
    pub(crate) fn traced(mut self, span: Span) -> Self {
        self.span = Some(span);
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
        let this = &mut *self;
        let polled = match (&mut this.source, &mut this.follow) {
            (Source::Upstream(body), Some(follow)) if !follow.filter.is_transparent() => {
                follow.filter.poll_frame(Pin::new(body), cx)
            }
            (Source::Upstream(body), _) => Pin::new(body).poll_frame(cx),
            (Source::Local(body), _) => Pin::new(body).poll_frame(cx).map_err(|never| match never {}),
        };
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.sent += data.len() as u64;
                }
            }
            Poll::Ready(None) => this.ended = true,
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        if self.ended {
            return true;
        }
        match &self.source {
            // A filter may still have a last chunk to add.
            Source::Upstream(_) if self.filtered() => false,
            Source::Upstream(body) => body.is_end_stream(),
            Source::Local(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.source {
            Source::Upstream(_) if self.filtered() => SizeHint::default(),
            Source::Upstream(body) => body.size_hint(),
            Source::Local(body) => body.size_hint(),
        }
    }
}

impl ProxyBody {
    /// True when the upstream body goes through body or trailer plugins.
    fn filtered(&self) -> bool {
        self.follow.as_ref().is_some_and(|f| !f.filter.is_transparent())
    }
}

impl Drop for ProxyBody {
    fn drop(&mut self) {
        let ended = self.is_end_stream();
        if let Some(done) = &self.done {
            done.record(self.sent);
        }
        if let Some(span) = &self.span {
            let error = span.error.or((!ended).then_some("response-incomplete"));
            crate::telemetry::finish(&span.cx, span.status, error);
        }
        let Some(follow) = self.follow.take() else { return };
        let Follow { filter, log } = *follow;
        let Some(mut log) = log else { return };
        let route = filter.route().clone();
        log.entry.bytes_out = self.sent;
        log.entry.duration_us = u64::try_from(log.started.elapsed().as_micros()).unwrap_or(u64::MAX);
        if let Some(counted) = &log.bytes_in {
            log.entry.bytes_in = counted.load(Ordering::Relaxed);
        }
        if !ended && log.entry.error.is_none() {
            log.entry.error =
                Some("the response did not finish: the client or upstream went away".to_owned());
        }
        // Log plugins run after the response, off the response's own path (and after a body
        // plugin call the client's departure interrupted).
        let back = filter.into_exchange();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let Some(mut ex) = back.get().await else { return };
                for plugin in route.chain(Phase::Log) {
                    if let Err(error) = plugin.on_log(&mut ex, &log.entry).await {
                        tracing::warn!(plugin = plugin.name(), %error, "log phase failed");
                    }
                }
            });
        }
    }
}

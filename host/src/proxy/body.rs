//! The body of every response the gateway sends: the upstream's, streamed as it arrives
//! (through the route's response-body and trailer plugins, if it has any, and into the route's
//! cache when it stores the response), one from the cache (through the same plugins), or one
//! the gateway wrote, compressed on the way out when the route compresses. It counts the bytes it sends
//! and, when the route has log plugins, runs them once the body is finished or abandoned.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::combinators::MapErr;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;

use super::compress::{self, Encoder};
use super::filter::{Direction, Filter};
use super::route::Route;
use crate::cache::{Filling, Hit};
use crate::metrics::Timing;
use crate::plugin::{Exchange, LogEntry, Logged, Phase};
use crate::timed::{BoxError, Timed};
use crate::upstream::InFlight;
use prometheus_client::metrics::counter::Counter;

enum Source {
    Upstream(Timed<Incoming>),
    /// The upstream's body, copied into the route's cache as it streams.
    Filling(Filling<Timed<Incoming>>),
    /// A body from the route's cache: it meets the body plugins like the upstream's. With the
    /// entry when it is the entry's whole body, for compression to keep its copy with.
    Stored(MapErr<Full<Bytes>, fn(Infallible) -> BoxError>, Option<Hit>),
    Local(Full<Bytes>),
}

/// A response body; see the module docs.
pub struct ProxyBody {
    source: Source,
    sent: u64,
    ended: bool,
    /// The exchange, once the proxy hands it over: for body plugins and the log phase.
    follow: Option<Box<Follow>>,
    /// What happened, recorded when the body is done.
    record: Option<Record>,
    /// Compresses what the plugins let through, when the route compresses the response.
    encoder: Option<Box<Encoder>>,
    _in_flight: Option<InFlight>,
}

/// What happened to one request, recorded once as the request goes. When the response body
/// is done it feeds the metrics, the access log, the request's span and the log phase.
pub(crate) struct Outcome {
    pub(crate) started: Instant,
    /// The status sent (0 until there is one).
    pub(crate) status: u16,
    /// The backend that answered, if one did.
    pub(crate) backend: Option<Arc<str>>,
    /// How long the upstream took to send its response head, if the request went upstream.
    pub(crate) upstream: Option<Duration>,
    /// The failure's kind (`x-wasmgate-error`), if the request failed.
    pub(crate) error: Option<&'static str>,
    /// What failed, in words; made only for routes with log plugins, the only readers.
    pub(crate) message: Option<String>,
    /// Request body bytes, counted as they go upstream when the log phase wants them.
    pub(crate) bytes_in: Option<Arc<AtomicU64>>,
    /// What the route's cache did, on a route with one.
    pub(crate) cache: Option<&'static str>,
    /// The request, when the route records it.
    pub(crate) recording: Option<Box<crate::recording::Recording>>,
}

impl Outcome {
    pub(crate) fn new(started: Instant) -> Self {
        Outcome {
            started,
            status: 0,
            backend: None,
            upstream: None,
            error: None,
            message: None,
            bytes_in: None,
            cache: None,
            recording: None,
        }
    }

    /// The log phase's view of it, once the body sent `bytes_out` (and `ended`, or not).
    fn into_log_entry(self, bytes_out: u64, ended: bool) -> LogEntry {
        let micros = |d: Duration| u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        let error = match self.message {
            Some(message) => Some(message),
            None if !ended => {
                Some("the response did not finish: the client or upstream went away".to_owned())
            }
            None => None,
        };
        LogEntry {
            status: self.status,
            duration_us: micros(self.started.elapsed()),
            upstream_us: self.upstream.map(micros),
            bytes_in: self.bytes_in.as_ref().map_or(0, |counted| counted.load(Ordering::Relaxed)),
            bytes_out,
            backend: self.backend.as_deref().map(str::to_owned),
            error,
        }
    }
}

/// Where a request's [`Outcome`] goes when its response body is done.
pub(crate) struct Record {
    pub(crate) outcome: Outcome,
    /// The request's series in the request counter (by route, method and status).
    pub(crate) requests: Counter,
    /// The route's latency histogram.
    pub(crate) seconds: Option<Timing>,
    pub(crate) access: Option<Box<super::access::AccessEntry>>,
    /// The request's server span.
    pub(crate) span: Option<opentelemetry::Context>,
}

struct Follow {
    /// Holds the exchange, and the route whose plugins run.
    filter: Filter,
    /// The route has log plugins.
    log: bool,
}

impl ProxyBody {
    /// The upstream's body, streamed; `in_flight` keeps the request counted against its
    /// backend until the body is done.
    pub fn upstream(body: Timed<Incoming>, in_flight: Option<InFlight>) -> Self {
        ProxyBody::new(Source::Upstream(body), in_flight)
    }

    /// The upstream's body, stored in the route's cache as it streams.
    pub(crate) fn filling(body: Filling<Timed<Incoming>>, in_flight: Option<InFlight>) -> Self {
        ProxyBody::new(Source::Filling(body), in_flight)
    }

    /// A body from the route's cache (all of `hit`'s, if given).
    pub(crate) fn stored(bytes: Bytes, hit: Option<Hit>) -> Self {
        ProxyBody::new(Source::Stored(stored(bytes), hit), None)
    }

    /// The stored response this body answers with whole, if it is one.
    pub(crate) fn take_hit(&mut self) -> Option<Hit> {
        match &mut self.source {
            Source::Stored(_, hit) => hit.take(),
            _ => None,
        }
    }

    /// Sends `bytes` in place of a stored body (what compression made of it).
    pub(crate) fn replace_stored(&mut self, bytes: Bytes) {
        if let Source::Stored(body, _) = &mut self.source {
            *body = stored(bytes);
        }
    }

    /// A body the gateway wrote.
    pub fn local(bytes: Bytes) -> Self {
        ProxyBody::new(Source::Local(Full::new(bytes)), None)
    }

    fn new(source: Source, in_flight: Option<InFlight>) -> Self {
        ProxyBody {
            source,
            sent: 0,
            ended: false,
            follow: None,
            record: None,
            encoder: None,
            _in_flight: in_flight,
        }
    }

    /// Compresses the body with `encoder` on its way to the client.
    pub(crate) fn encoded(mut self, encoder: Encoder) -> Self {
        self.encoder = Some(Box::new(encoder));
        self
    }

    /// Hands the body the exchange: an upstream body then goes through the route's body
    /// plugins, and its log plugins (if any) run when the body is done.
    pub(crate) fn follow(mut self, route: Arc<Route>, ex: Box<Exchange>) -> Self {
        let log = route.has(Phase::Log);
        let filter = Filter::new(route, Direction::Response, ex);
        self.follow = Some(Box::new(Follow { filter, log }));
        self
    }

    /// Records what happened when the body is done.
    pub(crate) fn recorded(mut self, record: Record) -> Self {
        self.record = Some(record);
        self
    }

    /// Ends the request's span `cx` with the record, when the body is done.
    pub(crate) fn traced(mut self, cx: opentelemetry::Context) -> Self {
        if let Some(record) = &mut self.record {
            record.span = Some(cx);
        }
        self
    }
}

fn stored(bytes: Bytes) -> MapErr<Full<Bytes>, fn(Infallible) -> BoxError> {
    let never: fn(Infallible) -> BoxError = |never| match never {};
    Full::new(bytes).map_err(never)
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
        let (source, follow) = (&mut this.source, &mut this.follow);
        let polled = match this.encoder.as_deref_mut() {
            Some(encoder) => encode(encoder, |cx| poll_source(source, follow, cx), cx),
            None => poll_source(source, follow, cx),
        };
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.sent += data.len() as u64;
                    // What the client gets, unless compressed: a replay would not read that.
                    if let Some(recording) = this.record.as_mut().and_then(|r| r.outcome.recording.as_mut())
                        && this.encoder.is_none()
                    {
                        recording.response_chunk(data);
                    }
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
            // A filter may still have a last chunk to add, an encoder the end of its stream.
            _ if self.encoder.is_some() => false,
            Source::Local(body) => body.is_end_stream(),
            _ if self.filtered() => false,
            Source::Upstream(body) => body.is_end_stream(),
            Source::Filling(body) => body.is_end_stream(),
            Source::Stored(body, _) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.source {
            _ if self.encoder.is_some() => SizeHint::default(),
            Source::Local(body) => body.size_hint(),
            _ if self.filtered() => SizeHint::default(),
            Source::Upstream(body) => body.size_hint(),
            Source::Filling(body) => body.size_hint(),
            Source::Stored(body, _) => body.size_hint(),
        }
    }
}

type Polled = Poll<Option<Result<Frame<Bytes>, BoxError>>>;

/// The next frame from the upstream (through the route's body plugins) or the local body.
fn poll_source(source: &mut Source, follow: &mut Option<Box<Follow>>, cx: &mut Context<'_>) -> Polled {
    let filter = follow.as_mut().map(|f| &mut f.filter).filter(|f| !f.is_transparent());
    match (source, filter) {
        (Source::Local(body), _) => Pin::new(body).poll_frame(cx).map_err(|never| match never {}),
        (Source::Upstream(body), Some(filter)) => filter.poll_frame(Pin::new(body), cx),
        (Source::Filling(body), Some(filter)) => filter.poll_frame(Pin::new(body), cx),
        (Source::Stored(body, _), Some(filter)) => filter.poll_frame(Pin::new(body), cx),
        (Source::Upstream(body), None) => Pin::new(body).poll_frame(cx),
        (Source::Filling(body), None) => Pin::new(body).poll_frame(cx),
        (Source::Stored(body, _), None) => Pin::new(body).poll_frame(cx),
    }
}

/// The next compressed frame: input is taken while the source has it, a frame goes out once
/// [`compress::FRAME`] bytes are ready, and whatever is ready goes out (flushed) whenever the
/// source has nothing yet, so a slow stream is never held back. Trailers follow the stream's end.
fn encode(
    encoder: &mut Encoder,
    mut source: impl FnMut(&mut Context<'_>) -> Polled,
    cx: &mut Context<'_>,
) -> Polled {
    let failed = |error: std::io::Error| Poll::Ready(Some(Err(BoxError::from(error))));
    loop {
        if let Some(bytes) = encoder.take(compress::FRAME) {
            return Poll::Ready(Some(Ok(Frame::data(bytes))));
        }
        if encoder.finished {
            if let Some(bytes) = encoder.take(1) {
                return Poll::Ready(Some(Ok(Frame::data(bytes))));
            }
            return Poll::Ready(encoder.trailers.take().map(|trailers| Ok(Frame::trailers(trailers))));
        }
        let done = match source(cx) {
            Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                Ok(data) => encoder.write(&data),
                Err(frame) => {
                    encoder.trailers = frame.into_trailers().ok();
                    encoder.finish()
                }
            },
            Poll::Ready(Some(Err(error))) => return Poll::Ready(Some(Err(error))),
            Poll::Ready(None) => encoder.finish(),
            Poll::Pending => {
                if let Err(error) = encoder.flush() {
                    return failed(error);
                }
                return match encoder.take(1) {
                    Some(bytes) => Poll::Ready(Some(Ok(Frame::data(bytes)))),
                    None => Poll::Pending,
                };
            }
        };
        if let Err(error) = done {
            return failed(error);
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
        let Some(record) = self.record.take() else { return };
        let Record { mut outcome, requests, seconds, access, span } = record;
        if let Some(recording) = outcome.recording.take() {
            (*recording).finish(outcome.status);
        }
        let elapsed = outcome.started.elapsed();
        requests.inc();
        if let Some(seconds) = &seconds {
            seconds.observe(elapsed.as_secs_f64());
        }
        if let Some(access) = &access {
            access.write(&outcome, elapsed, self.sent);
        }
        if let Some(cx) = &span {
            let error = outcome.error.or((!ended).then_some("response-incomplete"));
            crate::telemetry::finish(cx, outcome.status, error);
        }
        let Some(follow) = self.follow.take() else { return };
        let Follow { filter, log } = *follow;
        if !log {
            return;
        }
        let route = filter.route().clone();
        let entry = Logged::from(outcome.into_log_entry(self.sent, ended));
        // Log plugins run after the response, off the response's own path (and after a body
        // plugin call the client's departure interrupted).
        let back = filter.into_exchange();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let Some(super::filter::Back { mut ex, .. }) = back.get().await else { return };
                for plugin in route.chain(Phase::Log) {
                    if let Err(error) = plugin.on_log(&mut ex, &entry).await {
                        tracing::warn!(plugin = plugin.name(), %error, "log phase failed");
                    }
                }
            });
        }
    }
}

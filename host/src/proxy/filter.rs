//! Body plugins on a streaming body: each chunk (and the trailers) goes through the route's
//! request-body or response-body plugins before it moves on, one plugin call at a time.
//!
//! A plugin call needs the request's [`Exchange`], so the filter owns it while the body
//! streams: each call moves it into a future and back. A request-body filter hands it back
//! to the proxy through a channel when the body ends or is dropped, with the answer a plugin
//! gave instead, if one did; a response-body filter keeps it for the log phase.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame};

use super::route::Route;
use crate::plugin::{BodyVerdict, Exchange, LocalReply, Phase, Plugin, PluginError};
use crate::timed::BoxError;

/// Which body a filter works on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Direction {
    Request,
    Response,
}

/// One plugin call's end: the exchange back, the frame to pass on (`None`: the chunk was
/// dropped), and a request-body plugin's local answer.
struct Step {
    ex: Box<Exchange>,
    frame: Result<Option<Frame<Bytes>>, BoxError>,
    answered: Option<LocalReply>,
}

impl Step {
    fn frame(ex: Box<Exchange>, frame: Result<Option<Frame<Bytes>>, BoxError>) -> Self {
        Step { ex, frame, answered: None }
    }
}

/// The filter state of one body; see the module docs.
pub(crate) struct Filter {
    route: Arc<Route>,
    direction: Direction,
    ex: Option<Box<Exchange>>,
    pending: Option<Pin<Box<dyn Future<Output = Step> + Send>>>,
    /// The call with `end` set has been made (or started).
    end_sent: bool,
    /// A request-body plugin's local answer, for the proxy.
    answered: Option<LocalReply>,
}

/// Why a filter stopped a body.
#[derive(Debug, thiserror::Error)]
enum Stopped {
    #[error("a request-body plugin answered the request itself")]
    Answered,
    #[error(transparent)]
    Plugin(#[from] PluginError),
}

impl Filter {
    pub(crate) fn new(route: Arc<Route>, direction: Direction, ex: Box<Exchange>) -> Self {
        Filter { route, direction, ex: Some(ex), pending: None, end_sent: false, answered: None }
    }

    /// The route whose plugins the filter runs.
    pub(crate) fn route(&self) -> &Arc<Route> {
        &self.route
    }

    fn plugins(&self) -> &[Arc<Plugin>] {
        match self.direction {
            Direction::Request => self.route.chain(Phase::RequestBody),
            Direction::Response => self.route.chain(Phase::ResponseBody),
        }
    }

    /// True when the body passes through untouched: no body or trailer plugins.
    pub(crate) fn is_transparent(&self) -> bool {
        self.plugins().is_empty()
            && (self.direction == Direction::Request || !self.route.has(Phase::ResponseTrailers))
    }

    /// Gives the exchange back: at once, or once the plugin call in progress ends.
    pub(crate) fn into_exchange(mut self) -> ExchangeBack {
        match (self.ex.take(), self.pending.take()) {
            (Some(ex), _) => ExchangeBack(Returning::Ready(Back { ex, answered: self.answered.take() })),
            (None, Some(pending)) => ExchangeBack(Returning::Pending(pending)),
            (None, None) => ExchangeBack(Returning::Lost),
        }
    }

    /// The next frame of `source`, filtered.
    pub(crate) fn poll_frame<B>(
        &mut self,
        source: Pin<&mut B>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>>
    where
        B: Body<Data = Bytes, Error = BoxError>,
    {
        let mut source = source;
        loop {
            if let Some(pending) = &mut self.pending {
                let step = ready!(pending.as_mut().poll(cx));
                self.pending = None;
                self.ex = Some(step.ex);
                self.answered = step.answered;
                match step.frame {
                    Ok(Some(frame)) => return Poll::Ready(Some(Ok(frame))),
                    // A dropped chunk: on to the next.
                    Ok(None) => continue,
                    Err(error) => return Poll::Ready(Some(Err(error))),
                }
            }
            if self.end_sent {
                return Poll::Ready(None);
            }
            let Some(ex) = self.ex.take() else { return Poll::Ready(None) };
            let frame = match source.as_mut().poll_frame(cx) {
                Poll::Pending => {
                    self.ex = Some(ex);
                    return Poll::Pending;
                }
                Poll::Ready(frame) => frame,
            };
            let route = self.route.clone();
            let direction = self.direction;
            let step: Pin<Box<dyn Future<Output = Step> + Send>> = match frame {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(chunk) => {
                        let end = source.is_end_stream();
                        self.end_sent = end;
                        Box::pin(filter_chunk(route, direction, ex, chunk, end))
                    }
                    Err(frame) => match frame.into_trailers() {
                        Ok(trailers) if direction == Direction::Response => {
                            Box::pin(filter_trailers(route, ex, trailers))
                        }
                        Ok(trailers) => {
                            self.ex = Some(ex);
                            return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
                        }
                        Err(_) => {
                            self.ex = Some(ex);
                            continue;
                        }
                    },
                },
                Some(Err(error)) => {
                    self.ex = Some(ex);
                    return Poll::Ready(Some(Err(error)));
                }
                None => {
                    self.end_sent = true;
                    Box::pin(filter_chunk(route, direction, ex, Bytes::new(), true))
                }
            };
            self.pending = Some(step);
        }
    }
}

/// The exchange a filter gives back, with a request-body plugin's local answer if one came.
pub(crate) struct Back {
    pub(crate) ex: Box<Exchange>,
    pub(crate) answered: Option<LocalReply>,
}

/// The exchange a filter gives back: now, or once the plugin call in progress ends.
pub(crate) struct ExchangeBack(Returning);

enum Returning {
    Ready(Back),
    Pending(Pin<Box<dyn Future<Output = Step> + Send>>),
    Lost,
}

impl ExchangeBack {
    /// Waits for the plugin call in progress, if any.
    pub(crate) async fn get(self) -> Option<Back> {
        match self.0 {
            Returning::Ready(back) => Some(back),
            Returning::Pending(pending) => {
                let step = pending.await;
                Some(Back { ex: step.ex, answered: step.answered })
            }
            Returning::Lost => None,
        }
    }
}

/// Runs one chunk through the body plugins; `None` if a plugin dropped it.
async fn filter_chunk(
    route: Arc<Route>,
    direction: Direction,
    mut ex: Box<Exchange>,
    chunk: Bytes,
    end: bool,
) -> Step {
    let plugins = match direction {
        Direction::Request => route.chain(Phase::RequestBody),
        Direction::Response => route.chain(Phase::ResponseBody),
    };
    let mut chunk = chunk;
    for plugin in plugins {
        let verdict = match direction {
            Direction::Request => plugin.on_request_body(&mut ex, &chunk, end, false).await,
            Direction::Response => plugin.on_response_body(&mut ex, &chunk, end).await,
        };
        match plugin.by_policy(verdict) {
            Ok(None | Some(BodyVerdict::Continue)) => {}
            Ok(Some(BodyVerdict::Replace(bytes))) => chunk = bytes,
            Ok(Some(BodyVerdict::Respond(reply))) => {
                return Step { ex, frame: Err(Stopped::Answered.into()), answered: Some(reply) };
            }
            Err(error) => {
                tracing::warn!(plugin = plugin.name(), %error, "body plugin failed; body stopped");
                return Step::frame(ex, Err(Stopped::Plugin(error).into()));
            }
        }
    }
    let frame = (!chunk.is_empty()).then(|| Frame::data(chunk));
    Step::frame(ex, Ok(frame))
}

/// Runs the trailers through the trailer plugins, which see them through the response
/// functions while they run.
async fn filter_trailers(route: Arc<Route>, mut ex: Box<Exchange>, trailers: HeaderMap) -> Step {
    let Some(response) = ex.response.as_mut() else {
        return Step::frame(ex, Ok(Some(Frame::trailers(trailers))));
    };
    let head = std::mem::replace(&mut response.headers, trailers);
    let mut failed = None;
    for plugin in route.chain(Phase::ResponseTrailers) {
        if let Err(error) = plugin.by_policy(plugin.on_response_trailers(&mut ex).await) {
            failed = Some(error);
            break;
        }
    }
    let trailers = match ex.response.as_mut() {
        Some(response) => std::mem::replace(&mut response.headers, head),
        None => HeaderMap::new(),
    };
    match failed {
        Some(error) => Step::frame(ex, Err(Stopped::Plugin(error).into())),
        None => Step::frame(ex, Ok(Some(Frame::trailers(trailers)))),
    }
}

/// A request body streamed upstream through the route's request-body plugins. It hands the
/// exchange back through `back` when it ends or is dropped (the upstream finished with it).
pub(crate) struct FilteredRequest<B> {
    source: B,
    filter: Option<Filter>,
    back: Option<tokio::sync::oneshot::Sender<ExchangeBack>>,
}

impl<B> FilteredRequest<B> {
    pub(crate) fn new(source: B, filter: Filter) -> (Self, tokio::sync::oneshot::Receiver<ExchangeBack>) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        (FilteredRequest { source, filter: Some(filter), back: Some(tx) }, rx)
    }

    fn give_back(&mut self) {
        if let (Some(filter), Some(back)) = (self.filter.take(), self.back.take()) {
            // The proxy may have stopped waiting (its request failed): then nobody needs it.
            let _ = back.send(filter.into_exchange());
        }
    }
}

impl<B> Body for FilteredRequest<B>
where
    B: Body<Data = Bytes, Error = BoxError> + Unpin,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let Some(filter) = this.filter.as_mut() else { return Poll::Ready(None) };
        let polled = ready!(filter.poll_frame(Pin::new(&mut this.source), cx));
        if !matches!(polled, Some(Ok(_))) {
            this.give_back();
        }
        Poll::Ready(polled)
    }

    fn is_end_stream(&self) -> bool {
        self.filter.is_none()
    }
}

impl<B> Drop for FilteredRequest<B> {
    fn drop(&mut self) {
        self.give_back();
    }
}

//! Streams that fail when they stall. [`Timed`] bodies: no frame within the idle timeout, or
//! the request's overall deadline passed. Both directions use it: the client's body on its
//! way upstream (a client that trickles its body must not hold a backend connection forever)
//! and the upstream's body on its way back. [`WriteTimed`] connections: a write the peer
//! takes no byte of within the write timeout (a client that stops reading must not hold a
//! response, and its backend, forever). The timer is made only once a stream actually has to
//! wait, so one that is ready at once costs no timer. [`read_whole`] reads a body whole
//! within a size bound, for the request bodies the proxy keeps and the responses of outbound
//! calls.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// The error type of bodies the gateway passes on.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A stream stopped moving.
#[derive(Debug, thiserror::Error)]
pub enum Stalled {
    /// No frame for the idle timeout.
    #[error("the {0} body stalled: no data for {1:?}")]
    Idle(&'static str, Duration),
    /// The request's total timeout passed.
    #[error("the {0} body passed the request's total timeout")]
    Deadline(&'static str),
}

/// Why a body could not be read whole.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// It is longer than the bound.
    #[error("the body is over {0} bytes")]
    TooLarge(usize),
    /// Its stream failed.
    #[error(transparent)]
    Broken(BoxError),
}

/// Reads `body` whole, failing past `limit` bytes.
pub async fn read_whole<B>(body: B, limit: usize) -> Result<Bytes, ReadError>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    match http_body_util::BodyExt::collect(http_body_util::Limited::new(body, limit)).await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) if error.is::<http_body_util::LengthLimitError>() => Err(ReadError::TooLarge(limit)),
        Err(error) => Err(ReadError::Broken(error)),
    }
}

/// `inner`, failing with [`Stalled`] when it stalls.
pub struct Timed<B> {
    inner: B,
    what: &'static str,
    idle: Duration,
    deadline: Option<Instant>,
    timer: Option<Pin<Box<Sleep>>>,
    /// Data bytes that went through, for the log phase; counted only when someone reads it.
    counted: Option<Arc<AtomicU64>>,
}

impl<B> Timed<B> {
    /// `what` names the body in errors (`request`, `response`).
    pub fn new(inner: B, what: &'static str, idle: Duration, deadline: Option<Instant>) -> Self {
        Timed { inner, what, idle, deadline, timer: None, counted: None }
    }

    /// Adds the data bytes that go through to `counter`.
    pub fn counting(mut self, counter: Arc<AtomicU64>) -> Self {
        self.counted = Some(counter);
        self
    }

    fn next_wake(&self) -> Instant {
        let idle = Instant::now() + self.idle;
        self.deadline.map_or(idle, |d| d.min(idle))
    }
}

impl<B> Body for Timed<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                if let (Some(counter), Some(Ok(frame))) = (&self.counted, &frame) {
                    counter.fetch_add(frame.data_ref().map_or(0, |d| d.len() as u64), Ordering::Relaxed);
                }
                if frame.is_some() && self.timer.is_some() {
                    let wake = self.next_wake();
                    if let Some(timer) = self.timer.as_mut() {
                        timer.as_mut().reset(wake);
                    }
                }
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
            Poll::Pending => {
                if self.timer.is_none() {
                    let wake = self.next_wake();
                    self.timer = Some(Box::pin(tokio::time::sleep_until(wake)));
                }
                let Some(timer) = self.timer.as_mut() else { return Poll::Pending };
                ready!(timer.as_mut().poll(cx));
                let stalled = match self.deadline {
                    Some(d) if Instant::now() >= d => Stalled::Deadline(self.what),
                    _ => Stalled::Idle(self.what, self.idle),
                };
                Poll::Ready(Some(Err(stalled.into())))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
/// `inner`, whose writes (and flushes) fail with [`std::io::ErrorKind::TimedOut`] once one
/// has waited `limit` for the peer to take a byte. Reads pass through untouched.
pub struct WriteTimed<S> {
    inner: S,
    limit: Duration,
    /// Armed while a write waits; made at the first wait, then reset for each new one.
    timer: Option<Pin<Box<Sleep>>>,
    waiting: bool,
}

impl<S> WriteTimed<S> {
    /// `inner` with writes bounded by `limit`.
    pub fn new(inner: S, limit: Duration) -> Self {
        WriteTimed { inner, limit, timer: None, waiting: false }
    }

    /// What a write that came back `result` means: a wait starts or goes on the clock, an
    /// answer stops it.
    fn check<T>(
        &mut self,
        cx: &mut Context<'_>,
        result: Poll<std::io::Result<T>>,
    ) -> Poll<std::io::Result<T>> {
        if result.is_ready() {
            self.waiting = false;
            return result;
        }
        if !self.waiting {
            self.waiting = true;
            let wake = Instant::now() + self.limit;
            match self.timer.as_mut() {
                Some(timer) => timer.as_mut().reset(wake),
                None => self.timer = Some(Box::pin(tokio::time::sleep_until(wake))),
            }
        }
        let Some(timer) = self.timer.as_mut() else { return Poll::Pending };
        ready!(timer.as_mut().poll(cx));
        Poll::Ready(Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("the client took no data for {:?}", self.limit),
        )))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for WriteTimed<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for WriteTimed<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.check(cx, result)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.check(cx, result)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let result = Pin::new(&mut self.inner).poll_flush(cx);
        self.check(cx, result)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

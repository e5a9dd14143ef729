//! A response on its way into the cache: the body is copied as it streams to the client, and
//! the entry is stored when the body ends whole within `max_object`. A body that fails, grows
//! too large or carries trailers is passed on and not stored.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};

use super::{Entry, HttpCache, Leader};

/// What a fill holds until the body ends.
pub(crate) struct Fill {
    cache: Arc<HttpCache>,
    key: Arc<str>,
    entry: Entry,
    chunks: Vec<Bytes>,
    size: usize,
    /// Other misses for the key wait until this goes.
    _leader: Option<Leader>,
}

impl Fill {
    pub(super) fn new(cache: Arc<HttpCache>, key: Arc<str>, entry: Entry, leader: Option<Leader>) -> Self {
        Fill { cache, key, entry, chunks: Vec::new(), size: 0, _leader: leader }
    }

    /// Takes one chunk; false once the body is past `max_object`.
    fn take(&mut self, chunk: &Bytes) -> bool {
        self.size += chunk.len();
        if self.size > self.cache.config.max_object {
            return false;
        }
        self.chunks.push(chunk.clone());
        true
    }

    /// Stores the entry with the body taken.
    fn store(self) {
        let Fill { cache, key, mut entry, chunks, size, .. } = self;
        entry.body = match <[Bytes; 1]>::try_from(chunks) {
            Ok([one]) => one,
            Err(chunks) => {
                let mut whole = BytesMut::with_capacity(size);
                chunks.iter().for_each(|chunk| whole.extend_from_slice(chunk));
                whole.freeze()
            }
        };
        entry.headers.insert(http::header::CONTENT_LENGTH, http::HeaderValue::from(size));
        cache.insert(key, entry);
    }

    /// Stores `body` whole (a background refresh read it so).
    pub(crate) fn store_whole(mut self, body: Bytes) {
        if self.take(&body) {
            self.store();
        }
    }

    /// `body`, copied into the cache as it goes.
    pub(crate) fn into_body<B: Body>(self, body: B) -> Filling<B> {
        // An empty body may never be polled.
        if body.is_end_stream() {
            self.store();
            return Filling { body, fill: None };
        }
        Filling { body, fill: Some(Box::new(self)) }
    }
}

/// A body being copied into the cache; see the module docs.
pub(crate) struct Filling<B> {
    body: B,
    fill: Option<Box<Fill>>,
}

impl<B> Body for Filling<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.body).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => match frame.data_ref() {
                Some(data) => {
                    if this.fill.as_mut().is_some_and(|fill| !fill.take(data)) {
                        this.fill = None;
                    }
                    // The reader may stop at the end of the stream without polling again.
                    if this.body.is_end_stream()
                        && let Some(fill) = this.fill.take()
                    {
                        fill.store();
                    }
                }
                None => this.fill = None,
            },
            Poll::Ready(None) => {
                if let Some(fill) = this.fill.take() {
                    fill.store();
                }
            }
            Poll::Ready(Some(Err(_))) => this.fill = None,
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

//! Response compression on routes with `compress`: which coding a request accepts among those
//! the route offers (`Accept-Encoding`, RFC 9110 §12.5.3), whether its response may be
//! compressed and the head changes that go with it, and the streaming encoder its body goes
//! through. A body is compressed as it streams, never held whole: the encoder sends what it
//! has whenever the upstream pauses, so a slow stream reaches the client as it comes.

use std::io;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use compression_codecs::core::Level;
use compression_codecs::core::util::{PartialBuffer, WriteBuffer};
use compression_codecs::{BrotliEncoder, EncodeV2, GzipEncoder};
use http::header::{
    ACCEPT_ENCODING, ACCEPT_RANGES, CACHE_CONTROL, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_RANGE,
    CONTENT_TYPE, ETAG, VARY,
};
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use prometheus_client::metrics::counter::Counter;
use zstd::stream::raw::{CParameter, Operation, OutBuffer};

use crate::config::{Coding, CompressConfig};
use crate::metrics::{CompressionLabels, Metrics};

/// A route's compression, built from its `compress`.
pub(crate) struct Compression {
    /// Preferred first.
    offered: Vec<Coding>,
    levels: Levels,
    /// `(type, subtype)`, lower case; no subtype for `type/*`.
    types: Vec<(String, Option<String>)>,
    min_size: u64,
    /// Bytes in and out, by [`Coding::ALL`] index.
    counters: [(Counter, Counter); 3],
}

#[derive(Clone, Copy)]
struct Levels {
    gzip: u32,
    brotli: u32,
    zstd: i32,
}

impl Compression {
    pub(crate) fn new(config: &CompressConfig, route: &Arc<String>, metrics: &Metrics) -> Self {
        let counter = |coding: Coding, direction| {
            let labels = CompressionLabels { route: route.clone(), algorithm: coding.token(), direction };
            metrics.compression_bytes.get_or_create(&labels).clone()
        };
        let types = config
            .types
            .iter()
            .filter_map(|media| {
                let (kind, sub) = media.split_once('/')?;
                Some((kind.to_ascii_lowercase(), (sub != "*").then(|| sub.to_ascii_lowercase())))
            })
            .collect();
        Compression {
            offered: config.algorithms.clone(),
            levels: Levels { gzip: config.gzip_level, brotli: config.brotli_level, zstd: config.zstd_level },
            types,
            min_size: config.min_size as u64,
            counters: Coding::ALL.map(|coding| (counter(coding, "in"), counter(coding, "out"))),
        }
    }

    /// The coding the request accepts with the highest weight among those offered (ties go to
    /// the route's order); none for HEAD, or when it accepts none of them.
    pub(crate) fn negotiate(&self, method: &Method, headers: &HeaderMap) -> Option<Coding> {
        if method == Method::HEAD || !headers.contains_key(ACCEPT_ENCODING) {
            return None;
        }
        let mut best: Option<(Coding, u16)> = None;
        for &coding in &self.offered {
            let q = weight(headers, coding.token());
            if q > 0 && best.is_none_or(|(_, top)| q > top) {
                best = Some((coding, q));
            }
        }
        best.map(|(coding, _)| coding)
    }

    /// Readies the response head for `coding` and returns the encoder its body goes through,
    /// or none when it goes as it is: a status without a body of its own (1xx, 204, 206, 304),
    /// a part of a representation, one already encoded, a type not listed, `no-transform`,
    /// or a `Content-Length` under `min_size`. A response of a listed type gains
    /// `Vary: Accept-Encoding` whatever the request accepted, since caches must key on it.
    pub(crate) fn respond(
        &self,
        coding: Option<Coding>,
        status: StatusCode,
        headers: &mut HeaderMap,
    ) -> Option<Encoder> {
        let whole = !(status.is_informational()
            || matches!(
                status,
                StatusCode::NO_CONTENT | StatusCode::PARTIAL_CONTENT | StatusCode::NOT_MODIFIED
            )
            || headers.contains_key(CONTENT_RANGE));
        let encoded =
            headers.get(CONTENT_ENCODING).is_some_and(|v| !v.as_bytes().eq_ignore_ascii_case(b"identity"));
        if !whole || encoded || !self.listed(headers) || has_token(headers, &CACHE_CONTROL, "no-transform") {
            return None;
        }
        if !has_token(headers, &VARY, "accept-encoding") && !has_token(headers, &VARY, "*") {
            headers.append(VARY, HeaderValue::from_static("Accept-Encoding"));
        }
        let coding = coding?;
        if crate::head::content_length(headers).is_some_and(|length| length < self.min_size) {
            return None;
        }
        headers.remove(CONTENT_LENGTH);
        // Ranges would be of the encoded bytes, which differ from one response to the next.
        headers.remove(ACCEPT_RANGES);
        headers.insert(CONTENT_ENCODING, HeaderValue::from_static(coding.token()));
        // The encoded bytes are not the origin's: a strong validator no longer holds (RFC 9110
        // §8.8.1).
        if let Some(etag) = headers.get(ETAG)
            && etag.as_bytes().first() == Some(&b'"')
            && let Ok(weak) = HeaderValue::from_bytes(&[b"W/", etag.as_bytes()].concat())
        {
            headers.insert(ETAG, weak);
        }
        let index = Coding::ALL.iter().position(|c| *c == coding).unwrap_or(0);
        let (bytes_in, bytes_out) = self.counters[index].clone();
        Some(Encoder::new(coding, self.levels, bytes_in, bytes_out))
    }

    /// The response's media type is one the route compresses.
    fn listed(&self, headers: &HeaderMap) -> bool {
        let Some(media) = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()) else { return false };
        let essence = media.split(';').next().unwrap_or_default().trim();
        let Some((kind, sub)) = essence.split_once('/') else { return false };
        self.types.iter().any(|(k, s)| {
            k.eq_ignore_ascii_case(kind) && s.as_deref().is_none_or(|s| s.eq_ignore_ascii_case(sub))
        })
    }
}

/// The weight `Accept-Encoding` gives `token`, in thousandths: its own entry's, else `*`'s,
/// else 0. `x-gzip` counts as `gzip`; an entry with a malformed weight is ignored.
fn weight(headers: &HeaderMap, token: &str) -> u16 {
    let (mut own, mut star) = (None::<u16>, None::<u16>);
    let entries =
        headers.get_all(ACCEPT_ENCODING).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(','));
    for entry in entries {
        let mut params = entry.split(';');
        let name = params.next().unwrap_or_default().trim();
        let q = params.find_map(|p| {
            let (key, value) = p.split_once('=')?;
            key.trim().eq_ignore_ascii_case("q").then(|| value.trim())
        });
        let Some(q) = q.map_or(Some(1000), parse_weight) else { continue };
        if name.eq_ignore_ascii_case(token) || (token == "gzip" && name.eq_ignore_ascii_case("x-gzip")) {
            own = Some(own.map_or(q, |o| o.max(q)));
        } else if name == "*" {
            star = Some(q);
        }
    }
    own.or(star).unwrap_or(0)
}

/// `qvalue` (RFC 9110 §12.4.2): `0`, `1`, or either with up to three decimals.
fn parse_weight(text: &str) -> Option<u16> {
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    if fraction.len() > 3 || !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let thousandths = format!("{fraction:0<3}").parse::<u16>().ok()?;
    match whole {
        "0" => Some(thousandths),
        "1" if thousandths == 0 => Some(1000),
        _ => None,
    }
}

/// A comma-separated header lists `token` (case aside).
fn has_token(headers: &HeaderMap, name: &http::HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|item| item.split('=').next().unwrap_or_default().trim().eq_ignore_ascii_case(token))
}

/// How much compressed output is worth a frame of its own while the upstream keeps sending.
pub(crate) const FRAME: usize = 16 << 10;
/// The encoder's output window; what fills it is copied out to the pending bytes.
const WINDOW: usize = 16 << 10;

/// One response body's compressor.
pub(crate) struct Encoder {
    codec: Box<dyn EncodeV2 + Send>,
    window: Box<[u8]>,
    /// Compressed, not yet sent.
    out: BytesMut,
    /// Input taken since the last flush.
    unflushed: bool,
    /// The stream's end is written.
    pub(crate) finished: bool,
    /// Trailers that follow the last compressed bytes.
    pub(crate) trailers: Option<HeaderMap>,
    bytes_in: Counter,
    bytes_out: Counter,
}

impl Encoder {
    fn new(coding: Coding, levels: Levels, bytes_in: Counter, bytes_out: Counter) -> Self {
        let codec: Box<dyn EncodeV2 + Send> = match coding {
            Coding::Gzip => Box::new(GzipEncoder::new(Level::Precise(levels.gzip as i32).into())),
            Coding::Brotli => Box::new(BrotliEncoder::new(
                compression_codecs::brotli::params::EncoderParams::default()
                    .quality(Level::Precise(levels.brotli as i32)),
            )),
            Coding::Zstd => Box::new(PooledZstd::take(levels.zstd)),
        };
        Encoder {
            codec,
            window: vec![0; WINDOW].into_boxed_slice(),
            out: BytesMut::new(),
            unflushed: false,
            finished: false,
            trailers: None,
            bytes_in,
            bytes_out,
        }
    }

    /// Compresses `data`.
    pub(crate) fn write(&mut self, data: &[u8]) -> io::Result<()> {
        self.bytes_in.inc_by(data.len() as u64);
        let mut input = PartialBuffer::new(data);
        while !input.unwritten().is_empty() {
            let mut output = WriteBuffer::new_initialized(&mut self.window);
            self.codec.encode(&mut input, &mut output)?;
            self.out.extend_from_slice(output.written());
        }
        self.unflushed = true;
        Ok(())
    }

    /// `plain` compressed whole (a stored body).
    pub(crate) fn whole(&mut self, plain: &[u8]) -> io::Result<Bytes> {
        self.write(plain)?;
        self.finish()?;
        Ok(self.take(1).unwrap_or_default())
    }

    /// Makes everything written so far decodable by the client, as the upstream pauses.
    pub(crate) fn flush(&mut self) -> io::Result<()> {
        if self.unflushed {
            self.drain(|codec, output| codec.flush(output))?;
            self.unflushed = false;
        }
        Ok(())
    }

    /// Writes the end of the stream.
    pub(crate) fn finish(&mut self) -> io::Result<()> {
        if !self.finished {
            self.drain(|codec, output| codec.finish(output))?;
            self.finished = true;
        }
        Ok(())
    }

    fn drain(
        &mut self,
        mut step: impl FnMut(&mut dyn EncodeV2, &mut WriteBuffer<'_>) -> io::Result<bool>,
    ) -> io::Result<()> {
        loop {
            let mut output = WriteBuffer::new_initialized(&mut self.window);
            let done = step(&mut *self.codec, &mut output)?;
            self.out.extend_from_slice(output.written());
            if done {
                return Ok(());
            }
        }
    }

    /// The compressed bytes pending, once there are at least `at_least` (and one).
    pub(crate) fn take(&mut self, at_least: usize) -> Option<Bytes> {
        if self.out.is_empty() || self.out.len() < at_least {
            return None;
        }
        let bytes = self.out.split().freeze();
        self.bytes_out.inc_by(bytes.len() as u64);
        Some(bytes)
    }
}

thread_local! {
    /// zstd contexts kept for the next response on this worker thread. A context is about a
    /// megabyte, which glibc gives back to the kernel when it is freed and faults in again
    /// when the next one is made: reusing it costs a reset instead (docs/performance.md).
    static ZSTD_KEPT: std::cell::RefCell<Vec<zstd::stream::raw::Encoder<'static>>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

/// zstd contexts a worker thread keeps at most.
const ZSTD_KEEP: usize = 16;

/// A zstd stream on a context taken from this thread's kept ones (or a new one), given back
/// when the stream is dropped, whether it ended or not: taking one resets it.
struct PooledZstd {
    context: Option<zstd::stream::raw::Encoder<'static>>,
}

impl PooledZstd {
    fn take(level: i32) -> Self {
        let kept = ZSTD_KEPT.with(|kept| kept.borrow_mut().pop()).and_then(|mut context| {
            context.reinit().ok()?;
            context.set_parameter(CParameter::CompressionLevel(level)).ok()?;
            Some(context)
        });
        PooledZstd { context: kept.or_else(|| zstd::stream::raw::Encoder::new(level).ok()) }
    }

    fn context(&mut self) -> io::Result<&mut zstd::stream::raw::Encoder<'static>> {
        self.context.as_mut().ok_or_else(|| io::Error::other("no zstd context could be made"))
    }
}

impl Drop for PooledZstd {
    fn drop(&mut self) {
        if let Some(context) = self.context.take() {
            ZSTD_KEPT.with(|kept| {
                let mut kept = kept.borrow_mut();
                if kept.len() < ZSTD_KEEP {
                    kept.push(context);
                }
            });
        }
    }
}

impl EncodeV2 for PooledZstd {
    fn encode(&mut self, input: &mut PartialBuffer<&[u8]>, output: &mut WriteBuffer<'_>) -> io::Result<()> {
        let status = self.context()?.run_on_buffers(input.unwritten(), output.initialize_unwritten())?;
        input.advance(status.bytes_read);
        output.advance(status.bytes_written);
        Ok(())
    }

    fn flush(&mut self, output: &mut WriteBuffer<'_>) -> io::Result<bool> {
        let mut out = OutBuffer::around(output.initialize_unwritten());
        let remaining = self.context()?.flush(&mut out)?;
        let written = out.pos();
        output.advance(written);
        Ok(remaining == 0)
    }

    fn finish(&mut self, output: &mut WriteBuffer<'_>) -> io::Result<bool> {
        let mut out = OutBuffer::around(output.initialize_unwritten());
        let remaining = self.context()?.finish(&mut out, true)?;
        let written = out.pos();
        output.advance(written);
        Ok(remaining == 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accepting(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(ACCEPT_ENCODING, HeaderValue::from_str(value).expect("value"));
        headers
    }

    #[test]
    fn weights_follow_rfc_9110() {
        let h = accepting("gzip;q=0.5, br;q=1.0, zstd;q=0, *;q=0.1");
        assert_eq!((weight(&h, "gzip"), weight(&h, "br"), weight(&h, "zstd")), (500, 1000, 0));
        assert_eq!(weight(&h, "compress"), 100, "the rest take `*`'s weight");
        assert_eq!(weight(&accepting("x-gzip"), "gzip"), 1000);
        assert_eq!(weight(&accepting("GZIP; Q=0.25"), "gzip"), 250);
        assert_eq!(
            weight(&accepting("gzip;q=2, br;q=0.1234, zstd;q=abc"), "gzip"),
            0,
            "malformed weights count for nothing"
        );
        assert_eq!(weight(&accepting("identity"), "gzip"), 0);
        assert_eq!(parse_weight("1.000"), Some(1000));
        assert_eq!(parse_weight("0.05"), Some(50));
        assert_eq!(parse_weight("1.5"), None);
    }

    #[test]
    fn the_round_trip_of_each_coding_restores_the_bytes() {
        let text: Vec<u8> = (0..50_000u32).flat_map(|i| format!("{{\"n\":{i}}},").into_bytes()).collect();
        // zstd twice more: on a kept context after a stream that ended, and after one dropped
        // half-way.
        drop({
            let mut abandoned = Encoder::new(
                Coding::Zstd,
                Levels { gzip: 6, brotli: 4, zstd: 3 },
                Counter::default(),
                Counter::default(),
            );
            abandoned.write(&text[..10_000]).expect("write");
            abandoned
        });
        for coding in Coding::ALL.into_iter().chain([Coding::Zstd, Coding::Zstd]) {
            let levels = Levels { gzip: 6, brotli: 4, zstd: 3 };
            let mut encoder = Encoder::new(coding, levels, Counter::default(), Counter::default());
            let mut sent = Vec::new();
            for chunk in text.chunks(7000) {
                encoder.write(chunk).expect("write");
                encoder.flush().expect("flush");
                sent.extend(encoder.take(1).unwrap_or_default());
            }
            encoder.finish().expect("finish");
            sent.extend(encoder.take(1).unwrap_or_default());
            assert!(sent.len() < text.len() / 4, "{coding:?}: {} of {}", sent.len(), text.len());
            let mut decoder: Box<dyn compression_codecs::DecodeV2> = match coding {
                Coding::Gzip => Box::new(compression_codecs::GzipDecoder::new()),
                Coding::Brotli => Box::new(compression_codecs::BrotliDecoder::new()),
                Coding::Zstd => Box::new(compression_codecs::ZstdDecoder::new()),
            };
            let mut input = PartialBuffer::new(&sent[..]);
            let mut plain = Vec::new();
            let mut window = vec![0; 1 << 16];
            loop {
                let mut output = WriteBuffer::new_initialized(&mut window);
                let done = decoder.decode(&mut input, &mut output).expect("decode");
                let full = output.written_len() == output.capacity();
                plain.extend_from_slice(output.written());
                if done || (input.unwritten().is_empty() && !full) {
                    break;
                }
            }
            assert!(plain == text, "{coding:?} did not round-trip");
        }
    }
}

//! One stored response: its head and body as the origin sent them, when it arrived and how
//! long it stays fresh, and how it answers a request (whole, as a range, as a 304, as HEAD).

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::uri::PathAndQuery;
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};

use super::policy::{self, Freshness};
use crate::config::Coding;

/// A stored response; see the module docs.
#[derive(Debug)]
pub struct Entry {
    pub(crate) status: StatusCode,
    /// The origin's head, hop-by-hop fields removed, `Content-Length` the stored body's.
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
    /// The request header values this variant answers, by the response's `Vary` names.
    pub(crate) vary: Box<[(String, Option<Bytes>)]>,
    pub(crate) stored_at: Instant,
    /// Its age when it arrived.
    pub(crate) initial_age: Duration,
    pub(crate) freshness: Freshness,
    /// A plugin's TTL for it, kept when a revalidation refreshes it.
    pub(crate) ttl: Option<Duration>,
    /// The request that filled it, as it went upstream: a background refresh sends it again.
    pub(crate) upstream_request: Option<(PathAndQuery, HeaderMap)>,
    /// One background refresh at a time.
    refreshing: AtomicBool,
    /// The body compressed, by [`Coding::ALL`] order, once a route's compression made it.
    encoded: [OnceLock<Bytes>; Coding::ALL.len()],
}

/// How an entry may serve a request now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Standing {
    /// Fresh, for this much longer.
    Fresh(Duration),
    /// Stale by this much, within its `stale-while-revalidate`.
    WhileRevalidate(Duration),
    /// Stale by this much: the origin must be asked.
    Stale(Duration),
}

impl Entry {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        status: StatusCode,
        headers: HeaderMap,
        body: Bytes,
        vary: Box<[(String, Option<Bytes>)]>,
        initial_age: Duration,
        freshness: Freshness,
        ttl: Option<Duration>,
        upstream_request: Option<(PathAndQuery, HeaderMap)>,
    ) -> Self {
        Entry {
            status,
            headers,
            body,
            vary,
            stored_at: Instant::now(),
            initial_age,
            freshness,
            ttl,
            upstream_request,
            refreshing: AtomicBool::new(false),
            encoded: Default::default(),
        }
    }

    /// What it costs the cache's memory bound, in bytes.
    pub(crate) fn weight(&self) -> usize {
        let head: usize = self.headers.iter().map(|(n, v)| n.as_str().len() + v.len() + 32).sum();
        let request = self.upstream_request.as_ref().map_or(0, |(path, headers)| {
            path.as_str().len() + headers.iter().map(|(n, v)| n.as_str().len() + v.len() + 32).sum::<usize>()
        });
        let encoded: usize = self.encoded.iter().filter_map(OnceLock::get).map(Bytes::len).sum();
        self.body.len() + encoded + head + request + 256
    }

    /// The body compressed with `coding`, if it was before.
    pub(crate) fn encoded(&self, coding: Coding) -> Option<&Bytes> {
        self.encoded[coding as usize].get()
    }

    /// Keeps the body compressed with `coding`; false if a copy was kept already.
    pub(crate) fn keep_encoded(&self, coding: Coding, bytes: Bytes) -> bool {
        self.encoded[coding as usize].set(bytes).is_ok()
    }

    /// Its age now: what it had on arrival plus the time since.
    pub(crate) fn age(&self, now: Instant) -> Duration {
        self.initial_age + now.saturating_duration_since(self.stored_at)
    }

    pub(crate) fn standing(&self, now: Instant) -> Standing {
        let age = self.age(now);
        let f = &self.freshness;
        if !f.always_revalidate && age < f.lifetime {
            return Standing::Fresh(f.lifetime - age);
        }
        let stale = age.saturating_sub(f.lifetime);
        if !f.never_stale && !f.always_revalidate && stale < f.while_revalidate {
            return Standing::WhileRevalidate(stale);
        }
        Standing::Stale(stale)
    }

    /// May answer for the origin that failed, `stale` past its freshness.
    pub(crate) fn serves_on_error(&self, now: Instant) -> bool {
        let f = &self.freshness;
        !f.never_stale && self.age(now).saturating_sub(f.lifetime) < f.if_error
    }

    /// How long memory keeps it: while it is fresh or may be served stale, and as long again
    /// (at least a minute) when it has a validator to be revalidated with.
    pub(crate) fn keep_for(&self) -> Duration {
        let f = &self.freshness;
        let stale = f.while_revalidate.max(f.if_error);
        let revalidate =
            if self.has_validator() { f.lifetime.max(Duration::from_secs(60)) } else { Duration::ZERO };
        (f.lifetime + stale + revalidate).saturating_sub(self.initial_age).max(Duration::from_secs(1))
    }

    fn has_validator(&self) -> bool {
        self.headers.contains_key(header::ETAG) || self.headers.contains_key(header::LAST_MODIFIED)
    }

    /// True when it is the variant for a request with `headers`.
    pub(crate) fn answers(&self, headers: &HeaderMap) -> bool {
        self.vary.iter().all(|(name, value)| variant_value(headers, name).as_ref() == value.as_ref())
    }

    /// The conditional header fields that ask the origin whether it changed.
    pub(crate) fn validators(&self) -> impl Iterator<Item = (header::HeaderName, HeaderValue)> + '_ {
        let etag = self.headers.get(header::ETAG).map(|v| (header::IF_NONE_MATCH, v.clone()));
        let date = self.headers.get(header::LAST_MODIFIED).map(|v| (header::IF_MODIFIED_SINCE, v.clone()));
        etag.into_iter().chain(date)
    }

    /// Takes the one background refresh; false if one is on its way.
    pub(crate) fn begin_refresh(&self) -> bool {
        !self.refreshing.swap(true, Ordering::AcqRel)
    }

    /// A refresh that did not replace it: the next request may try again.
    pub(crate) fn end_refresh(&self) {
        self.refreshing.store(false, Ordering::Release);
    }

    /// Its answer to a `method` request with `request` headers: a 304 when the request's
    /// condition holds, a 206 (or 416) for one byte range, else the whole response (with no
    /// body for HEAD); `Age` says how old it is.
    pub(crate) fn answer(
        &self,
        method: &Method,
        request: &HeaderMap,
        now: Instant,
    ) -> (StatusCode, HeaderMap, Bytes) {
        let mut headers = self.headers.clone();
        headers.insert(header::AGE, HeaderValue::from(self.age(now).as_secs()));
        if self.status != StatusCode::OK {
            return (self.status, headers, self.body_for(method, self.body.clone()));
        }
        if self.not_modified_for(request) {
            headers.retain_only(NOT_MODIFIED_FIELDS);
            return (StatusCode::NOT_MODIFIED, headers, Bytes::new());
        }
        headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
        let len = self.body.len() as u64;
        let range = request
            .get(header::RANGE)
            .filter(|_| *method == Method::GET && self.if_range_holds(request))
            .and_then(|v| v.to_str().ok())
            .and_then(|v| byte_range(v, len));
        match range {
            Some(Some((first, last))) => {
                let part = self.body.slice(first as usize..=last as usize);
                headers.insert(header::CONTENT_RANGE, content_range(&format!("bytes {first}-{last}/{len}")));
                headers.insert(header::CONTENT_LENGTH, HeaderValue::from(part.len()));
                (StatusCode::PARTIAL_CONTENT, headers, part)
            }
            Some(None) => {
                headers.insert(header::CONTENT_RANGE, content_range(&format!("bytes */{len}")));
                headers.insert(header::CONTENT_LENGTH, HeaderValue::from(0));
                headers.remove(header::CONTENT_TYPE);
                (StatusCode::RANGE_NOT_SATISFIABLE, headers, Bytes::new())
            }
            None => (StatusCode::OK, headers, self.body_for(method, self.body.clone())),
        }
    }

    fn body_for(&self, method: &Method, body: Bytes) -> Bytes {
        if *method == Method::HEAD { Bytes::new() } else { body }
    }

    /// `If-None-Match` (weak comparison), else `If-Modified-Since`, holds: the client's copy is
    /// this one.
    fn not_modified_for(&self, request: &HeaderMap) -> bool {
        if request.contains_key(header::IF_NONE_MATCH) {
            let Some(etag) = self.headers.get(header::ETAG).and_then(|v| v.to_str().ok()) else {
                return false;
            };
            return request
                .get_all(header::IF_NONE_MATCH)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(policy::split_list)
                .any(|tag| tag == "*" || opaque(tag) == opaque(etag));
        }
        let since = policy::http_date_of(request, header::IF_MODIFIED_SINCE);
        let modified = policy::http_date_of(&self.headers, header::LAST_MODIFIED)
            .or_else(|| policy::http_date_of(&self.headers, header::DATE));
        matches!((since, modified), (Some(since), Some(modified)) if modified <= since)
    }

    /// No `If-Range`, or one naming this response (a strong ETag, or its exact `Last-Modified`).
    fn if_range_holds(&self, request: &HeaderMap) -> bool {
        let Some(condition) = request.get(header::IF_RANGE) else { return true };
        let strong = |v: &HeaderValue| !v.as_bytes().starts_with(b"W/");
        match condition.as_bytes().first() {
            Some(b'"') => {
                self.headers.get(header::ETAG).is_some_and(|etag| strong(etag) && etag == condition)
            }
            _ => self.headers.get(header::LAST_MODIFIED) == Some(condition),
        }
    }

    /// The stored head updated with the fields of a 304 (RFC 9111 §4.3.4).
    pub(crate) fn updated_head(&self, fields: &HeaderMap) -> HeaderMap {
        let mut headers = self.headers.clone();
        for name in fields.keys() {
            if SKIPPED_ON_UPDATE.contains(name) {
                continue;
            }
            headers.remove(name);
            for value in fields.get_all(name) {
                headers.append(name.clone(), value.clone());
            }
        }
        headers
    }

    /// A copy with `headers` (its [`updated_head`](Self::updated_head)), arrived `initial_age`
    /// old, with the freshness they give.
    pub(crate) fn refreshed(&self, headers: HeaderMap, initial_age: Duration, freshness: Freshness) -> Entry {
        Entry::new(
            self.status,
            headers,
            self.body.clone(),
            self.vary.clone(),
            initial_age,
            freshness,
            self.ttl,
            self.upstream_request.clone(),
        )
    }
}

/// What a 304 keeps of the full response's head (RFC 9110 §15.4.5).
const NOT_MODIFIED_FIELDS: &[header::HeaderName] = &[
    header::CACHE_CONTROL,
    header::CONTENT_LOCATION,
    header::DATE,
    header::ETAG,
    header::EXPIRES,
    header::VARY,
    header::LAST_MODIFIED,
    header::AGE,
];

/// Fields of a 304 that describe its own (empty) body, not the stored one.
const SKIPPED_ON_UPDATE: &[header::HeaderName] =
    &[header::CONTENT_LENGTH, header::CONTENT_ENCODING, header::TRANSFER_ENCODING, header::CONTENT_RANGE];

trait RetainOnly {
    fn retain_only(&mut self, names: &[header::HeaderName]);
}

impl RetainOnly for HeaderMap {
    fn retain_only(&mut self, names: &[header::HeaderName]) {
        let mut kept = HeaderMap::with_capacity(names.len());
        for name in names {
            for value in self.get_all(name) {
                kept.append(name.clone(), value.clone());
            }
        }
        *self = kept;
    }
}

fn content_range(text: &str) -> HeaderValue {
    HeaderValue::from_str(text).unwrap_or(HeaderValue::from_static("bytes */0"))
}

/// An entity tag without its weakness marker: `If-None-Match` compares weakly.
fn opaque(tag: &str) -> &str {
    tag.strip_prefix("W/").unwrap_or(tag)
}

/// The value of request header `name` that picks a variant: its field lines joined.
pub(crate) fn variant_value(headers: &HeaderMap, name: &str) -> Option<Bytes> {
    let mut values = headers.get_all(name).iter();
    let first = values.next()?;
    let mut joined = first.as_bytes().to_vec();
    for value in values {
        joined.extend_from_slice(b", ");
        joined.extend_from_slice(value.as_bytes());
    }
    Some(Bytes::from(joined))
}

/// The one byte range `bytes=…` asks of a body of `len` bytes: `Some(Some((first, last)))`,
/// `Some(None)` when it lies past the end (416), `None` when the header is not one range the
/// cache serves (several ranges, another unit, malformed: the whole body goes).
pub(crate) fn byte_range(value: &str, len: u64) -> Option<Option<(u64, u64)>> {
    let spec = value.trim().strip_prefix("bytes=")?.trim();
    if spec.contains(',') {
        return None;
    }
    let (first, last) = spec.split_once('-')?;
    let (first, last) = (first.trim(), last.trim());
    let range = if first.is_empty() {
        let suffix: u64 = last.parse().ok()?;
        if suffix == 0 || len == 0 {
            return Some(None);
        }
        (len.saturating_sub(suffix), len - 1)
    } else {
        let first: u64 = first.parse().ok()?;
        let last = if last.is_empty() { u64::MAX } else { last.parse().ok()? };
        if last < first {
            return None;
        }
        if first >= len {
            return Some(None);
        }
        (first, last.min(len - 1))
    };
    Some(Some(range))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(lines: &[(&str, &'static str)], body: &'static str) -> Entry {
        let mut headers = HeaderMap::new();
        for (name, value) in lines {
            headers.append(
                header::HeaderName::from_bytes(name.as_bytes()).expect("as written"),
                HeaderValue::from_static(value),
            );
        }
        let freshness = Freshness {
            lifetime: Duration::from_secs(60),
            while_revalidate: Duration::ZERO,
            if_error: Duration::ZERO,
            always_revalidate: false,
            never_stale: false,
        };
        Entry::new(
            StatusCode::OK,
            headers,
            Bytes::from_static(body.as_bytes()),
            Box::new([]),
            Duration::ZERO,
            freshness,
            None,
            None,
        )
    }

    fn request(lines: &[(&'static str, &'static str)]) -> HeaderMap {
        lines.iter().map(|(n, v)| (header::HeaderName::from_static(n), HeaderValue::from_static(v))).collect()
    }

    #[test]
    fn byte_ranges() {
        assert_eq!(byte_range("bytes=0-3", 10), Some(Some((0, 3))));
        assert_eq!(byte_range("bytes=5-", 10), Some(Some((5, 9))));
        assert_eq!(byte_range("bytes=-4", 10), Some(Some((6, 9))));
        assert_eq!(byte_range("bytes=-40", 10), Some(Some((0, 9))));
        assert_eq!(byte_range("bytes=8-100", 10), Some(Some((8, 9))));
        assert_eq!(byte_range("bytes=10-", 10), Some(None));
        assert_eq!(byte_range("bytes=0-1,4-5", 10), None);
        assert_eq!(byte_range("items=0-1", 10), None);
        assert_eq!(byte_range("bytes=5-2", 10), None);
    }

    #[test]
    fn conditional_requests_get_304_with_the_validators_only() {
        let e = entry(
            &[("etag", "\"v1\""), ("content-type", "text/plain"), ("cache-control", "max-age=60")],
            "hello",
        );
        let (status, headers, body) =
            e.answer(&Method::GET, &request(&[("if-none-match", "\"v0\", W/\"v1\"")]), Instant::now());
        assert_eq!(status, StatusCode::NOT_MODIFIED);
        assert!(body.is_empty() && headers.get("content-type").is_none());
        assert_eq!(headers["etag"], "\"v1\"");
        let (status, ..) = e.answer(&Method::GET, &request(&[("if-none-match", "\"v2\"")]), Instant::now());
        assert_eq!(status, StatusCode::OK);
    }

    #[test]
    fn ranges_honour_if_range_and_head_has_no_body() {
        let e = entry(&[("etag", "\"v1\""), ("content-length", "10")], "0123456789");
        let (status, headers, body) =
            e.answer(&Method::GET, &request(&[("range", "bytes=2-4")]), Instant::now());
        assert_eq!((status, &body[..]), (StatusCode::PARTIAL_CONTENT, &b"234"[..]));
        assert_eq!(headers["content-range"], "bytes 2-4/10");
        assert_eq!(headers["content-length"], "3");
        let (status, ..) = e.answer(
            &Method::GET,
            &request(&[("range", "bytes=2-4"), ("if-range", "\"v0\"")]),
            Instant::now(),
        );
        assert_eq!(status, StatusCode::OK);
        let (status, headers, _) =
            e.answer(&Method::GET, &request(&[("range", "bytes=20-")]), Instant::now());
        assert_eq!(status, StatusCode::RANGE_NOT_SATISFIABLE);
        assert_eq!(headers["content-range"], "bytes */10");
        let (status, headers, body) = e.answer(&Method::HEAD, &request(&[]), Instant::now());
        assert_eq!((status, body.len()), (StatusCode::OK, 0));
        assert_eq!(headers["content-length"], "10");
    }

    #[test]
    fn standing_moves_from_fresh_through_revalidate_to_stale() {
        let mut e = entry(&[], "x");
        e.freshness.while_revalidate = Duration::from_secs(30);
        let at = |s: u64| e.stored_at + Duration::from_secs(s);
        assert_eq!(e.standing(at(10)), Standing::Fresh(Duration::from_secs(50)));
        assert_eq!(e.standing(at(70)), Standing::WhileRevalidate(Duration::from_secs(10)));
        assert_eq!(e.standing(at(100)), Standing::Stale(Duration::from_secs(40)));
        e.freshness.never_stale = true;
        assert_eq!(e.standing(at(70)), Standing::Stale(Duration::from_secs(10)));
    }
}

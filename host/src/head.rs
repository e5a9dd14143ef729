//! The pure rules of an HTTP message head that the proxy and the plugin host both apply, kept
//! in one place so that they cannot drift: the canonical request path, the host a request is
//! for, and which headers are hop-by-hop (RFC 9110 §7.6.1) or reserved to the host. It depends
//! on the `http` crate only.

use std::borrow::Cow;

use http::Uri;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::PathAndQuery;

/// A request path that has no canonical form; the reason is safe to show the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub(crate) struct BadPath(pub(crate) &'static str);

/// The canonical form of a request path, so that the path a plugin authorises and a route
/// matches is byte for byte the path forwarded: percent-encoded unreserved characters are
/// decoded (`%61` → `a`, `%2E` → `.`), other escapes get upper-case hex, and `.` and `..`
/// segments are removed (RFC 3986 §6.2.2, §5.2.4). An encoded NUL is refused. Borrows when
/// the path is already canonical, which is the common case.
pub(crate) fn normalize_path(path: &str) -> Result<Cow<'_, str>, BadPath> {
    let has_dots = path.contains("/.") || path == ".";
    if !path.contains('%') && !has_dots {
        return Ok(Cow::Borrowed(path));
    }
    let bytes = path.as_bytes();
    let mut decoded: Vec<u8> = Vec::with_capacity(path.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
            let (Some(hi), Some(lo)) =
                (bytes.get(i + 1).copied().and_then(hex), bytes.get(i + 2).copied().and_then(hex))
            else {
                return Err(BadPath("invalid percent-encoding in the path"));
            };
            let byte = hi << 4 | lo;
            if byte == 0 {
                return Err(BadPath("NUL in the path"));
            }
            if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
                decoded.push(byte);
            } else {
                const HEX: &[u8; 16] = b"0123456789ABCDEF";
                decoded.extend_from_slice(&[b'%', HEX[usize::from(hi)], HEX[usize::from(lo)]]);
            }
            i += 3;
        } else {
            decoded.push(bytes[i]);
            i += 1;
        }
    }
    // Only ASCII was decoded, so the result is as valid UTF-8 as the input.
    let decoded = String::from_utf8(decoded).map_err(|_| BadPath("invalid path"))?;
    if !decoded.contains("/.") {
        return Ok(if decoded == path { Cow::Borrowed(path) } else { Cow::Owned(decoded) });
    }
    let mut segments: Vec<&str> = Vec::new();
    let mut trailing_slash = false;
    for segment in decoded.split('/').skip(1) {
        trailing_slash = matches!(segment, "." | "..");
        match segment {
            "." => {}
            ".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    let mut normal = String::with_capacity(decoded.len());
    for s in &segments {
        normal.push('/');
        normal.push_str(s);
    }
    if trailing_slash || normal.is_empty() {
        normal.push('/');
    }
    Ok(if normal == path { Cow::Borrowed(path) } else { Cow::Owned(normal) })
}

/// `uri` with its target replaced by `path` and `query`, keeping its scheme and authority.
pub(crate) fn with_target(uri: &Uri, path: &str, query: Option<&str>) -> Result<Uri, BadPath> {
    let pq = match query {
        Some(q) => PathAndQuery::try_from(format!("{path}?{q}")),
        None => PathAndQuery::try_from(path),
    };
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(pq.map_err(|_| BadPath("invalid path"))?);
    Uri::from_parts(parts).map_err(|_| BadPath("invalid path"))
}

/// A route's new path: the whole path (`path`), or its matched `path_prefix` replaced
/// (`prefix`), as rewrites and redirects set them.
#[derive(Debug)]
pub(crate) enum PathEdit {
    Whole(String),
    Prefix { matched: String, with: String },
}

impl PathEdit {
    /// The edit `path` or `prefix` asks for (the config check allows one at most), for a
    /// route matching `matched`.
    pub(crate) fn new(path: Option<&String>, prefix: Option<&String>, matched: &str) -> Option<PathEdit> {
        match (path, prefix) {
            (Some(path), _) => Some(PathEdit::Whole(path.clone())),
            (None, Some(with)) => Some(PathEdit::Prefix { matched: matched.to_owned(), with: with.clone() }),
            (None, None) => None,
        }
    }

    /// What `path` becomes.
    pub(crate) fn apply(&self, path: &str) -> String {
        match self {
            PathEdit::Whole(whole) => whole.clone(),
            PathEdit::Prefix { matched, with } => {
                replace_prefix(with, path.strip_prefix(matched.as_str()).unwrap_or(path))
            }
        }
    }
}

/// `prefix` followed by `rest` (what followed a matched prefix), with one `/` between them.
fn replace_prefix(prefix: &str, rest: &str) -> String {
    match (prefix.ends_with('/'), rest.strip_prefix('/')) {
        (_, _) if rest.is_empty() => prefix.to_owned(),
        (true, Some(rest)) => format!("{prefix}{rest}"),
        (false, None) => format!("{prefix}/{rest}"),
        _ => format!("{prefix}{rest}"),
    }
}

/// The port of the authority a request is for, if it names one.
pub(crate) fn request_port(request: &http::request::Parts) -> Option<u16> {
    let authority = request_authority(request)?;
    authority[strip_port(authority).len()..].strip_prefix(':')?.parse().ok()
}

/// The length a head declares in `Content-Length`, if it declares a valid one.
pub(crate) fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers.get(header::CONTENT_LENGTH)?.to_str().ok()?.parse().ok()
}

/// The host a request is for, without the port: the absolute-form target's authority wins over
/// `Host` (RFC 9112 §3.2.2).
pub(crate) fn request_host(request: &http::request::Parts) -> Option<&str> {
    request_authority(request).map(strip_port)
}

fn request_authority(request: &http::request::Parts) -> Option<&str> {
    match request.uri.authority() {
        Some(a) => Some(a.as_str()),
        None => request.headers.get(http::header::HOST)?.to_str().ok(),
    }
}

fn strip_port(authority: &str) -> &str {
    // An IPv6 literal keeps its brackets; only a trailing `:digits` is a port.
    match authority.rfind(':') {
        Some(i)
            if !authority[i..].contains(']') && authority[i + 1..].bytes().all(|b| b.is_ascii_digit()) =>
        {
            &authority[..i]
        }
        _ => authority,
    }
}

const HOP_BY_HOP_COUNT: usize = 9;

/// Hop-by-hop headers named by RFC 9110 §7.6.1, plus the legacy ones proxies still meet.
pub(crate) const HOP_BY_HOP: [HeaderName; HOP_BY_HOP_COUNT] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::PROXY_AUTHORIZATION,
    header::PROXY_AUTHENTICATE,
    HeaderName::from_static("http2-settings"),
];

/// The header naming an error the gateway answered with itself (`docs/errors.md`): only the
/// gateway writes it, so a client, an upstream or a plugin cannot pass off an answer as one.
pub(crate) const ERROR_HEADER: HeaderName = HeaderName::from_static("x-wasmgate-error");

/// Removes hop-by-hop headers and every header `Connection` names (but never Host, which a
/// client cannot declare hop-by-hop), and [`ERROR_HEADER`]. `TE: trailers` stays: gRPC needs
/// it to reach the backend, and it is the one TE value HTTP/2 allows.
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // One pass over the names finds which hop-by-hop headers are there, so only those are
    // looked up again to be removed: most heads carry none, or only Connection.
    let mut present = 0u16;
    // The bit after those of HOP_BY_HOP.
    const ERROR_BIT: u16 = 1 << HOP_BY_HOP_COUNT;
    for name in headers.keys() {
        if let Some(i) = HOP_BY_HOP.iter().position(|hop| hop == name) {
            present |= 1 << i;
        } else if name == ERROR_HEADER {
            present |= ERROR_BIT;
        }
    }
    if present == 0 {
        return;
    }
    if present & ERROR_BIT != 0 {
        headers.remove(ERROR_HEADER);
    }
    let te_trailers = {
        let mut te = headers.get_all(header::TE).iter();
        matches!((te.next(), te.next()), (Some(v), None) if v.as_bytes().eq_ignore_ascii_case(b"trailers"))
    };
    // The Connection values are taken out of the map first (a cheap clone of shared bytes),
    // so the names they list can be removed while they are read, without allocating.
    let mut connection = headers.get_all(header::CONNECTION).iter().cloned();
    let (first, more) = (connection.next(), connection.next());
    let remaining: Vec<HeaderValue> = match more {
        Some(second) => std::iter::once(second).chain(connection).collect(),
        None => Vec::new(),
    };
    for value in first.iter().chain(&remaining) {
        for name in value.to_str().into_iter().flat_map(|v| v.split(',')).map(str::trim) {
            if !name.eq_ignore_ascii_case("host") {
                headers.remove(name);
            }
        }
    }
    for (i, name) in HOP_BY_HOP.iter().enumerate() {
        if present & (1 << i) != 0 {
            headers.remove(name);
        }
    }
    if te_trailers {
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
}

/// Headers a plugin may not set: the host writes the framing (`Content-Length`), the
/// hop-by-hop headers of each connection, and [`ERROR_HEADER`] itself.
pub(crate) fn is_reserved(name: &HeaderName) -> bool {
    name == header::CONTENT_LENGTH || name == ERROR_HEADER || HOP_BY_HOP.contains(name)
}

/// Every value of `name`, as text (invalid UTF-8 replaced), joined with `, ` as HTTP allows for
/// most fields: how the authors' tools and recordings show a header.
pub(crate) fn joined(headers: &HeaderMap, name: &HeaderName) -> String {
    let values: Vec<Cow<'_, str>> =
        headers.get_all(name).iter().map(|v| String::from_utf8_lossy(v.as_bytes())).collect();
    values.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_and_the_headers_it_names_are_stripped_but_never_host() {
        let mut p = http::Request::get("/")
            .header("host", "a.example")
            .header("connection", "keep-alive, x-secret, host")
            .header("x-secret", "1")
            .header("keep-alive", "timeout=5")
            .header("te", "gzip")
            .header("upgrade", "h2c")
            .header("http2-settings", "AAA")
            .header("proxy-authorization", "Basic x")
            .header("x-kept", "yes")
            .header("x-wasmgate-error", "upstream-timeout")
            .body(())
            .expect("request")
            .into_parts()
            .0;
        strip_hop_by_hop(&mut p.headers);
        let names: Vec<_> = p.headers.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, vec!["host", "x-kept"]);
        // Only the gateway's own answers carry its error header.
        let mut p = http::Request::get("/").header("x-wasmgate-error", "no-route").body(()).expect("request");
        strip_hop_by_hop(p.headers_mut());
        assert!(p.headers().is_empty());
        assert!(is_reserved(&ERROR_HEADER));
    }

    #[test]
    fn paths_are_normalised_once_for_every_phase() {
        let norm = |p: &str| normalize_path(p).map(|c| c.into_owned()).map_err(|_| ());
        assert_eq!(norm("/a/b"), Ok("/a/b".into()));
        assert_eq!(norm("/public/../admin/x"), Ok("/admin/x".into()));
        assert_eq!(norm("/%61dmin/x"), Ok("/admin/x".into()));
        assert_eq!(norm("/%2e%2E/admin"), Ok("/admin".into()));
        assert_eq!(norm("/./admin/./x/"), Ok("/admin/x/".into()));
        assert_eq!(norm("/a/.."), Ok("/".into()));
        assert_eq!(norm("/a%2fb"), Ok("/a%2Fb".into()), "encoded slashes stay encoded");
        assert_eq!(norm("/a%00"), Err(()));
        assert_eq!(norm("/a%zz"), Err(()));
        assert!(matches!(normalize_path("/plain/path"), Ok(Cow::Borrowed(_))));
    }

    #[test]
    fn a_rewritten_prefix_keeps_what_followed_it_with_one_slash() {
        use super::replace_prefix;
        assert_eq!(replace_prefix("/v2", "/items/7"), "/v2/items/7");
        assert_eq!(replace_prefix("/v2/", "/items"), "/v2/items");
        assert_eq!(replace_prefix("/v2", "items"), "/v2/items");
        assert_eq!(replace_prefix("/", "/items"), "/items");
        assert_eq!(replace_prefix("/v2", ""), "/v2");
    }

    #[test]
    fn host_strips_the_port_but_not_ipv6_brackets() {
        assert_eq!(strip_port("example.org:8080"), "example.org");
        assert_eq!(strip_port("example.org"), "example.org");
        assert_eq!(strip_port("[::1]:80"), "[::1]");
        assert_eq!(strip_port("[::1]"), "[::1]");
    }

    #[test]
    fn framing_and_hop_by_hop_headers_are_reserved() {
        for name in ["content-length", "connection", "te", "transfer-encoding", "upgrade", "keep-alive"] {
            assert!(is_reserved(&HeaderName::from_static(name)), "{name}");
        }
        assert!(!is_reserved(&header::AUTHORIZATION));
    }
}

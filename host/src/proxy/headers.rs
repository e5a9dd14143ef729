//! Intermediary rules for the request and response heads (RFC 9110 §7.6, RFC 9112 §3.2,
//! RFC 9113 §8.2): which host and path a request is for, normalised once so that routing,
//! plugins and the upstream all see the same bytes; stripping hop-by-hop headers both ways;
//! and the forwarding headers the gateway adds.

use std::borrow::Cow;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::request::Parts;
use http::uri::PathAndQuery;
use http::{Method, Version};

use super::{Conn, ProxyError};

/// Checks the request head and puts it in the one form every later phase sees:
/// - CONNECT and TRACE are refused (a tunnel, and a reflection of credentials);
/// - an absolute-form target wins over Host (RFC 9112 §3.2.2) and HTTP/2's `:authority`
///   becomes Host; HTTP/1.1 and HTTP/2 need exactly one valid Host, without userinfo;
/// - HTTP/2 header values may not start or end with white space, and split `cookie` fields are
///   joined (RFC 9113 §8.2.3) before going to an HTTP/1.1 upstream;
/// - the path is normalised ([`normalize_path`]).
pub(super) fn check_head(parts: &mut Parts) -> Result<(), ProxyError> {
    if parts.method == Method::CONNECT || parts.method == Method::TRACE {
        return Err(ProxyError::MethodNotAllowed(parts.method.clone()));
    }
    check_host(parts)?;
    if parts.version == Version::HTTP_2 {
        check_h2_values(&mut parts.headers)?;
    }
    if let Some(path) = parts.uri.path_and_query()
        && let Cow::Owned(normal) = normalize_path(path.path())?
    {
        let pq = match path.query() {
            Some(q) => format!("{normal}?{q}"),
            None => normal,
        };
        let mut uri = std::mem::take(&mut parts.uri).into_parts();
        uri.path_and_query =
            Some(PathAndQuery::try_from(pq).map_err(|_| ProxyError::BadRequest("invalid path"))?);
        parts.uri = http::Uri::from_parts(uri).map_err(|_| ProxyError::BadRequest("invalid path"))?;
    }
    Ok(())
}

fn check_host(parts: &mut Parts) -> Result<(), ProxyError> {
    let mut hosts = parts.headers.get_all(header::HOST).iter();
    let (first, second) = (hosts.next(), hosts.next());
    if second.is_some() {
        return Err(ProxyError::BadRequest("more than one Host header"));
    }
    if let Some(authority) = parts.uri.authority() {
        if authority.as_str().contains('@') {
            return Err(ProxyError::BadRequest("userinfo in the request target"));
        }
        // The target's authority wins; Host is rewritten to match it.
        let value = HeaderValue::from_str(authority.as_str())
            .map_err(|_| ProxyError::BadRequest("invalid authority"))?;
        parts.headers.insert(header::HOST, value);
        return Ok(());
    }
    match first {
        Some(value) => {
            let valid = value.to_str().ok().and_then(|v| v.parse::<http::uri::Authority>().ok());
            match valid {
                Some(a) if a.as_str().len() == value.len() && !a.as_str().contains('@') => Ok(()),
                _ => Err(ProxyError::BadRequest("invalid Host header")),
            }
        }
        None if parts.version == Version::HTTP_11 || parts.version == Version::HTTP_2 => {
            Err(ProxyError::BadRequest("missing Host header"))
        }
        None => Ok(()),
    }
}

fn check_h2_values(headers: &mut HeaderMap) -> Result<(), ProxyError> {
    let padded = |v: &HeaderValue| {
        let b = v.as_bytes();
        matches!(b.first(), Some(b' ' | b'\t')) || matches!(b.last(), Some(b' ' | b'\t'))
    };
    if headers.values().any(padded) {
        return Err(ProxyError::BadRequest("header value with leading or trailing white space"));
    }
    let mut cookies = headers.get_all(header::COOKIE).iter();
    if let (Some(first), Some(_)) = (cookies.next(), cookies.next()) {
        let mut joined = first.as_bytes().to_vec();
        for crumb in headers.get_all(header::COOKIE).iter().skip(1) {
            joined.extend_from_slice(b"; ");
            joined.extend_from_slice(crumb.as_bytes());
        }
        let value = HeaderValue::from_bytes(&joined).map_err(|_| ProxyError::BadRequest("invalid cookie"))?;
        headers.insert(header::COOKIE, value);
    }
    Ok(())
}

/// The canonical form of a request path, so that the path a plugin authorises and a route
/// matches is byte for byte the path forwarded: percent-encoded unreserved characters are
/// decoded (`%61` → `a`, `%2E` → `.`), other escapes get upper-case hex, and `.` and `..`
/// segments are removed (RFC 3986 §6.2.2, §5.2.4). An encoded NUL is refused. Borrows when
/// the path is already canonical, which is the common case.
pub(crate) fn normalize_path(path: &str) -> Result<Cow<'_, str>, ProxyError> {
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
                return Err(ProxyError::BadRequest("invalid percent-encoding in the path"));
            };
            let byte = hi << 4 | lo;
            if byte == 0 {
                return Err(ProxyError::BadRequest("NUL in the path"));
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
    let decoded = String::from_utf8(decoded).map_err(|_| ProxyError::BadRequest("invalid path"))?;
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

/// Hop-by-hop headers named by RFC 9110 §7.6.1, plus the legacy ones proxies still meet.
const HOP_BY_HOP: [HeaderName; 9] = [
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

/// Removes hop-by-hop headers and every header `Connection` names (but never Host, which a
/// client cannot declare hop-by-hop). `TE: trailers` stays: gRPC needs it to reach the
/// backend, and it is the one TE value HTTP/2 allows.
pub(super) fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let te_trailers = {
        let mut te = headers.get_all(header::TE).iter();
        matches!((te.next(), te.next()), (Some(v), None) if v.as_bytes().eq_ignore_ascii_case(b"trailers"))
    };
    // Names listed in Connection are collected first: removing while reading the list would
    // borrow the map twice. Most requests carry no Connection header and allocate nothing.
    let listed: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .filter(|name| name != header::HOST)
        .collect();
    for name in listed.iter().chain(HOP_BY_HOP.iter()) {
        headers.remove(name);
    }
    if te_trailers {
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
}

/// A WebSocket handshake (RFC 6455 §4.1: an HTTP/1.1 GET with `Connection: upgrade` and
/// `Upgrade: websocket`): the client connection's upgrade handle, taken from the request.
pub(super) fn websocket_upgrade(parts: &mut Parts) -> Option<hyper::upgrade::OnUpgrade> {
    let asks = parts.version == Version::HTTP_11
        && parts.method == Method::GET
        && parts
            .headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|token| token.trim().eq_ignore_ascii_case("upgrade"))
        && parts
            .headers
            .get(header::UPGRADE)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"));
    if !asks {
        return None;
    }
    parts.extensions.remove::<hyper::upgrade::OnUpgrade>()
}

/// Puts back the two hop-by-hop headers a WebSocket handshake needs on its next hop.
pub(super) fn request_websocket(headers: &mut HeaderMap) {
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
}

/// The 308 that sends a plain-HTTP request to the same host and target over HTTPS on `port`.
pub(super) fn redirect_https(
    parts: &Parts,
    port: u16,
) -> Result<http::Response<super::ProxyBody>, ProxyError> {
    let host = crate::plugin::request_host(parts).ok_or(ProxyError::BadRequest("missing host"))?;
    let target = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let location = match port {
        443 => format!("https://{host}{target}"),
        port => format!("https://{host}:{port}{target}"),
    };
    let location =
        HeaderValue::try_from(location).map_err(|_| ProxyError::BadRequest("invalid request target"))?;
    let mut response = http::Response::new(super::ProxyBody::local(bytes::Bytes::new()));
    *response.status_mut() = http::StatusCode::PERMANENT_REDIRECT;
    response.headers_mut().insert(header::LOCATION, location);
    Ok(response)
}

/// True for responses that never carry a body (RFC 9110 §6.4.1).
pub(super) fn bodiless(method: &Method, status: http::StatusCode) -> bool {
    method == Method::HEAD
        || status.is_informational()
        || status == http::StatusCode::NO_CONTENT
        || status == http::StatusCode::NOT_MODIFIED
}

/// Sets `X-Forwarded-For`, `-Proto`, `-Host` (replacing whatever the client sent: a client's
/// own claims are not to be trusted) and appends this hop to `Via`.
pub(super) fn add_forwarding(parts: &mut Parts, conn: &Conn) {
    let headers = &mut parts.headers;
    headers.insert("x-forwarded-for", conn.forwarded_for.clone());
    headers.insert("x-forwarded-proto", HeaderValue::from_static(if conn.tls { "https" } else { "http" }));
    match headers.get(header::HOST).cloned() {
        Some(host) => headers.insert("x-forwarded-host", host),
        None => headers.remove("x-forwarded-host"),
    };
    append_via(headers, parts.version);
}

/// Appends this hop to `Via` (RFC 9110 §7.6.3).
pub(super) fn append_via(headers: &mut HeaderMap, version: Version) {
    let hop = match version {
        Version::HTTP_10 => "1.0 wasmgate",
        Version::HTTP_2 => "2 wasmgate",
        _ => "1.1 wasmgate",
    };
    headers.append(header::VIA, HeaderValue::from_static(hop));
}

/// The request goes upstream as HTTP/1.1, which needs a Host: an HTTP/1.0 client may not have
/// sent one, and a plugin may have removed it.
pub(super) fn ensure_host(headers: &mut HeaderMap, backend: &http::uri::Authority) {
    if !headers.contains_key(header::HOST)
        && let Ok(value) = HeaderValue::from_str(backend.as_str())
    {
        headers.insert(header::HOST, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(req: http::request::Builder) -> Parts {
        req.body(()).expect("request").into_parts().0
    }

    #[test]
    fn connection_and_the_headers_it_names_are_stripped_but_never_host() {
        let mut p = parts(
            http::Request::get("/")
                .header("host", "a.example")
                .header("connection", "keep-alive, x-secret, host")
                .header("x-secret", "1")
                .header("keep-alive", "timeout=5")
                .header("te", "gzip")
                .header("upgrade", "h2c")
                .header("http2-settings", "AAA")
                .header("proxy-authorization", "Basic x")
                .header("x-kept", "yes"),
        );
        strip_hop_by_hop(&mut p.headers);
        let names: Vec<_> = p.headers.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, vec!["host", "x-kept"]);
    }

    #[test]
    fn host_rules() {
        let ok = |b: http::request::Builder| check_head(&mut parts(b)).is_ok();
        assert!(ok(http::Request::get("/").header("host", "a.example")));
        assert!(!ok(http::Request::get("/").header("host", "a.example").header("host", "b.example")));
        assert!(!ok(http::Request::get("/")));
        assert!(!ok(http::Request::get("/").header("host", "a b")));
        assert!(!ok(http::Request::get("/").header("host", "user@a.example")));
        assert!(!ok(http::Request::get("http://user@a.example/")));
        assert!(!ok(http::Request::builder().method("TRACE").uri("/").header("host", "a")));
        assert!(ok(http::Request::get("/").version(Version::HTTP_10)));
        let mut p = parts(http::Request::get("http://target.example/x").header("host", "other.example"));
        check_head(&mut p).expect("absolute form");
        assert_eq!(p.headers[header::HOST], "target.example");
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

        let mut p = parts(http::Request::get("/x/../admin?q=1").header("host", "a"));
        check_head(&mut p).expect("valid");
        assert_eq!(p.uri, "/admin?q=1");
    }

    #[test]
    fn h2_cookie_crumbs_are_joined_and_padded_values_refused() {
        let h2 = || http::Request::get("/").version(Version::HTTP_2).header("host", "a");
        let mut p = parts(h2().header("cookie", "a=1").header("cookie", "b=2"));
        check_head(&mut p).expect("valid");
        assert_eq!(p.headers.get_all(header::COOKIE).iter().collect::<Vec<_>>(), ["a=1; b=2"]);
        assert!(check_head(&mut parts(h2().header("x", " padded"))).is_err());
    }

    #[test]
    fn forwarding_headers_replace_client_claims() {
        let mut p = parts(
            http::Request::get("/")
                .header("host", "a.example")
                .header("x-forwarded-for", "6.6.6.6")
                .header("via", "1.1 edge"),
        );
        add_forwarding(&mut p, &Conn::new("10.0.0.7:5555".parse().expect("addr"), false));
        assert_eq!(p.headers["x-forwarded-for"], "10.0.0.7");
        assert_eq!(p.headers["x-forwarded-proto"], "http");
        assert_eq!(p.headers["x-forwarded-host"], "a.example");
        let via: Vec<_> = p.headers.get_all("via").iter().collect();
        assert_eq!(via, ["1.1 edge", "1.1 wasmgate"]);
    }
}

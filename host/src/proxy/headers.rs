//! Intermediary rules for the request and response heads (RFC 9110 §7.6, RFC 9112 §3.2,
//! RFC 9113 §8.2): which host and path a request is for, normalised once so that routing,
//! plugins and the upstream all see the same bytes; stripping hop-by-hop headers both ways;
//! and the forwarding headers the gateway adds.

use std::borrow::Cow;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::request::Parts;
use http::{Method, Version};

use super::{Conn, ProxyError};
use crate::head;

/// What one request head may hold (`[server]` `max_request_head`, `max_field_line` and
/// `max_request_target`). The parser bounds the head only when it arrives in pieces, so the
/// whole is checked here too.
#[derive(Debug, Clone, Copy)]
pub struct RequestLimits {
    /// The largest head (request line and field lines), in bytes.
    pub head: usize,
    /// The longest request target, in bytes.
    pub target: usize,
    /// The longest field line (`name: value`), in bytes.
    pub field_line: usize,
}

/// Refuses a target (414), a field line or a whole head (431) over `limits`.
pub(super) fn check_sizes(parts: &Parts, limits: RequestLimits) -> Result<(), ProxyError> {
    let target = parts.uri.path_and_query().map_or(0, |p| p.as_str().len())
        + parts.uri.authority().map_or(0, |a| a.as_str().len());
    if target > limits.target {
        return Err(ProxyError::TargetTooLong { limit: limits.target });
    }
    // The request line: method, target, version, spaces and CRLF.
    let mut head = parts.method.as_str().len() + target + 12;
    for (name, value) in &parts.headers {
        let line = name.as_str().len() + 2 + value.len();
        if line > limits.field_line {
            return Err(ProxyError::FieldTooLarge { limit: limits.field_line });
        }
        head += line + 2;
    }
    if head > limits.head {
        return Err(ProxyError::HeadTooLarge { limit: limits.head });
    }
    Ok(())
}

/// Checks the request head and puts it in the one form every later phase sees:
/// - CONNECT and TRACE are refused (a tunnel, and a reflection of credentials);
/// - an absolute-form target wins over Host (RFC 9112 §3.2.2) and HTTP/2's `:authority`
///   becomes Host; HTTP/1.1 and HTTP/2 need exactly one valid Host, without userinfo;
/// - an HTTP/1.1 body framed as `chunked` more than once is refused (the parser takes it as one
///   chunked body; another server might not, and so read a different message);
/// - HTTP/2 header values may not start or end with white space, and split `cookie` fields are
///   joined (RFC 9113 §8.2.3) before going to an HTTP/1.1 upstream;
/// - the path is normalised ([`head::normalize_path`]).
pub(super) fn check_head(parts: &mut Parts) -> Result<(), ProxyError> {
    if parts.method == Method::CONNECT || parts.method == Method::TRACE {
        return Err(ProxyError::MethodNotAllowed(parts.method.clone()));
    }
    check_host(parts)?;
    if parts.version == Version::HTTP_2 {
        check_h2_values(&mut parts.headers)?;
    } else if chunked_twice(&parts.headers) {
        return Err(ProxyError::BadRequest("Transfer-Encoding chunked more than once"));
    }
    if let Some(target) = parts.uri.path_and_query()
        && let Cow::Owned(normal) = head::normalize_path(target.path())?
    {
        parts.uri = head::with_target(&parts.uri, &normal, target.query())?;
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

fn chunked_twice(headers: &HeaderMap) -> bool {
    let mut codings = headers.get_all(header::TRANSFER_ENCODING).iter();
    // Most requests have no Transfer-Encoding at all, and the rest one line.
    let (Some(first), rest) = (codings.next(), codings) else { return false };
    std::iter::once(first)
        .chain(rest)
        .flat_map(|v| v.as_bytes().split(|b| *b == b','))
        .filter(|coding| coding.trim_ascii().eq_ignore_ascii_case(b"chunked"))
        .nth(1)
        .is_some()
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

/// `Max-Forwards` on OPTIONS (RFC 9110 §7.6.2; TRACE, the other method it applies to, is
/// refused): at 0 the gateway is the final recipient and answers itself; otherwise the count
/// goes down by one on its way upstream. A value that is not a number is left alone.
pub(super) fn max_forwards(parts: &mut Parts) -> Option<http::Response<super::ProxyBody>> {
    const MAX_FORWARDS: HeaderName = HeaderName::from_static("max-forwards");
    let left = parts.headers.get(MAX_FORWARDS)?.to_str().ok()?.trim().parse::<u64>().ok()?;
    if left > 0 {
        parts.headers.insert(MAX_FORWARDS, HeaderValue::from(left - 1));
        return None;
    }
    let mut response = http::Response::new(super::ProxyBody::local(bytes::Bytes::new()));
    response
        .headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD, POST, PUT, DELETE, PATCH, OPTIONS"));
    Some(response)
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
    // Names made once: a `&'static str` name is copied into a new allocation on every insert.
    const FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
    const PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
    const HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
    let headers = &mut parts.headers;
    headers.insert(FOR, conn.forwarded_for.clone());
    headers.insert(PROTO, HeaderValue::from_static(if conn.tls { "https" } else { "http" }));
    match headers.get(header::HOST).cloned() {
        Some(host) => headers.insert(HOST, host),
        None => headers.remove(HOST),
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
        let te = |values: &[&str]| {
            let mut b = http::Request::post("/").header("host", "a");
            for v in values {
                b = b.header("transfer-encoding", *v);
            }
            ok(b)
        };
        assert!(te(&["chunked"]) && te(&["gzip, chunked"]));
        assert!(!te(&["chunked", "chunked"]) && !te(&["chunked, Chunked"]));
        let mut p = parts(http::Request::get("http://target.example/x").header("host", "other.example"));
        check_head(&mut p).expect("absolute form");
        assert_eq!(p.headers[header::HOST], "target.example");
    }

    #[test]
    fn paths_are_normalised_in_the_head() {
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
    fn max_forwards_counts_down_and_zero_is_answered_here() {
        let options = |value: &str| {
            parts(http::Request::options("/").header("host", "a").header("max-forwards", value))
        };
        let mut p = options("3");
        assert!(max_forwards(&mut p).is_none());
        assert_eq!(p.headers["max-forwards"], "2");
        let answered = max_forwards(&mut options("0")).expect("answered here");
        assert_eq!(answered.status(), http::StatusCode::OK);
        assert!(answered.headers().contains_key(header::ALLOW));
        assert!(max_forwards(&mut options("x")).is_none());
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

    /// Property-based fuzzing of the head checks: mutations of valid requests and arbitrary
    /// bytes, through the same parser hyper uses. `PROPTEST_CASES=100000` runs it longer.
    mod fuzz {
        use proptest::prelude::*;

        use super::*;

        const TEMPLATES: [&[u8]; 6] = [
            b"GET /a/b?x=1 HTTP/1.1\r\nHost: a.example\r\n\r\n",
            b"GET http://a.example:8080/p/../q HTTP/1.1\r\nHost: other\r\n\r\n",
            b"POST /%2e%2E/x/%61%7e/./y/ HTTP/1.1\r\nHost: a.example\r\nContent-Length: 3\r\n\r\n",
            b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n",
            b"GET //a//b/.. HTTP/1.0\r\n\r\n",
            b"GET /c HTTP/1.1\r\nHost: a\r\nCookie: a=1\r\nCookie: b=2\r\nX: v\r\n\r\n",
        ];
        /// Bytes that matter to the rules: separators, dots, escapes, controls.
        const ALPHABET: &[u8] = b"/.%2eE0aA:@?#\r\n \t\0\x7f\xffHh*";

        /// What hyper's server would hand the proxy for `bytes`, if it parses.
        fn parse(bytes: &[u8], h2: bool) -> Option<Parts> {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut req = httparse::Request::new(&mut headers);
            let Ok(httparse::Status::Complete(_)) = req.parse(bytes) else { return None };
            let version = match (h2, req.version?) {
                (true, _) => Version::HTTP_2,
                (false, 1) => Version::HTTP_11,
                (false, _) => Version::HTTP_10,
            };
            let mut builder = http::Request::builder().method(req.method?).uri(req.path?).version(version);
            for h in req.headers.iter() {
                builder = builder.header(h.name, h.value);
            }
            builder.body(()).ok().map(|r| r.into_parts().0)
        }

        fn copy(p: &Parts) -> Parts {
            let mut builder =
                http::Request::builder().method(p.method.clone()).uri(p.uri.clone()).version(p.version);
            for (name, value) in &p.headers {
                builder = builder.header(name, value);
            }
            parts(builder)
        }

        /// A template, edits (insert, replace or remove; where; which byte of [`ALPHABET`]),
        /// and whether the head came over HTTP/2.
        fn mutation() -> impl Strategy<Value = (usize, Vec<(usize, usize, usize)>, bool)> {
            let edit = (0..3usize, any::<usize>(), 0..ALPHABET.len());
            (0..TEMPLATES.len(), prop::collection::vec(edit, 0..6), any::<bool>())
        }

        fn mutate(template: &[u8], edits: &[(usize, usize, usize)]) -> Vec<u8> {
            let mut bytes = template.to_vec();
            for &(op, at, b) in edits {
                let at = at % (bytes.len() + 1);
                match op {
                    0 => bytes.insert(at, ALPHABET[b]),
                    1 if at < bytes.len() => bytes[at] = ALPHABET[b],
                    _ if at < bytes.len() => {
                        bytes.remove(at);
                    }
                    _ => {}
                }
            }
            bytes
        }

        /// What must hold of any head `check_head` accepted.
        fn accepted_is_canonical(p: &Parts) -> Result<(), TestCaseError> {
            let path = p.uri.path();
            prop_assert!(
                matches!(head::normalize_path(path), Ok(Cow::Borrowed(_))),
                "accepted path {path:?} is not canonical"
            );
            for dots in ["/./", "/../"] {
                prop_assert!(!path.contains(dots), "dot segment left in {path:?}");
            }
            prop_assert!(!path.ends_with("/.") && !path.ends_with("/.."), "dot segment left in {path:?}");
            if p.version != Version::HTTP_10 {
                prop_assert_eq!(p.headers.get_all(header::HOST).iter().count(), 1);
            }
            if let Some(authority) = p.uri.authority() {
                prop_assert_eq!(p.headers[header::HOST].as_bytes(), authority.as_str().as_bytes());
            }
            // Normalising again changes nothing.
            let mut again = copy(p);
            prop_assert!(check_head(&mut again).is_ok(), "a checked head fails a second check");
            prop_assert_eq!(&again.uri, &p.uri);
            prop_assert_eq!(&again.headers, &p.headers);
            Ok(())
        }

        proptest! {
            #[test]
            fn mutated_requests_are_refused_or_canonical((t, edits, h2) in mutation()) {
                let bytes = mutate(TEMPLATES[t], &edits);
                if let Some(mut p) = parse(&bytes, h2) {
                    let limits = RequestLimits { head: 8192, target: 64, field_line: 32 };
                    let _ = check_sizes(&p, limits);
                    if check_head(&mut p).is_ok() {
                        accepted_is_canonical(&p)?;
                    }
                }
            }

            #[test]
            fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256), h2 in any::<bool>()) {
                let mut request = b"GET ".to_vec();
                request.extend_from_slice(&bytes);
                for candidate in [&bytes[..], &request[..]] {
                    if let Some(mut p) = parse(candidate, h2)
                        && check_head(&mut p).is_ok()
                    {
                        accepted_is_canonical(&p)?;
                    }
                }
            }

            #[test]
            fn arbitrary_paths_normalise_to_a_fixed_point(path in "/[a-z./%0-9A-F~_-]{0,40}") {
                if let Ok(normal) = head::normalize_path(&path) {
                    let normal = normal.into_owned();
                    prop_assert!(matches!(head::normalize_path(&normal), Ok(Cow::Borrowed(_))), "{path:?} → {normal:?}");
                }
            }
        }
    }
}

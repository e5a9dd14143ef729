//! Intermediary header rules (RFC 9110 §7.6): which host a request is for, stripping
//! hop-by-hop headers both ways, and the forwarding headers the gateway adds.

use std::net::SocketAddr;

use http::Version;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::request::Parts;

use super::ProxyError;

/// Checks the request's target and Host and makes them agree: an absolute-form target wins
/// over Host (RFC 9112 §3.2.2), HTTP/2's `:authority` becomes Host, and an HTTP/1.1 request
/// needs exactly one valid Host.
pub(super) fn normalize_host(parts: &mut Parts) -> Result<(), ProxyError> {
    let mut hosts = parts.headers.get_all(header::HOST).iter();
    let (first, second) = (hosts.next(), hosts.next());
    if second.is_some() {
        return Err(ProxyError::BadRequest("more than one Host header"));
    }
    if let Some(authority) = parts.uri.authority() {
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

/// Hop-by-hop headers named by RFC 9110 §7.6.1, plus the legacy ones proxies still meet.
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::PROXY_AUTHORIZATION,
    header::PROXY_AUTHENTICATE,
];

/// Removes hop-by-hop headers and every header `Connection` names.
pub(super) fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Names listed in Connection are collected first: removing while reading the list would
    // borrow the map twice. Most requests carry no Connection header and allocate nothing.
    let listed: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in listed.iter().chain(HOP_BY_HOP.iter()) {
        headers.remove(name);
    }
    headers.remove("http2-settings");
}

/// Sets `X-Forwarded-For`, `-Proto`, `-Host` (replacing whatever the client sent: a client's
/// own claims are not to be trusted) and appends this hop to `Via`.
pub(super) fn add_forwarding(parts: &mut Parts, client: SocketAddr, tls: bool) {
    let headers = &mut parts.headers;
    let xff = HeaderValue::from_str(&client.ip().to_string()).unwrap_or(HeaderValue::from_static("unknown"));
    headers.insert("x-forwarded-for", xff);
    headers.insert("x-forwarded-proto", HeaderValue::from_static(if tls { "https" } else { "http" }));
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

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(req: http::request::Builder) -> Parts {
        req.body(()).expect("request").into_parts().0
    }

    #[test]
    fn connection_and_the_headers_it_names_are_stripped() {
        let mut p = parts(
            http::Request::get("/")
                .header("connection", "keep-alive, x-secret")
                .header("x-secret", "1")
                .header("keep-alive", "timeout=5")
                .header("te", "gzip")
                .header("upgrade", "h2c")
                .header("proxy-authorization", "Basic x")
                .header("x-kept", "yes"),
        );
        strip_hop_by_hop(&mut p.headers);
        let names: Vec<_> = p.headers.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, vec!["x-kept"]);
    }

    #[test]
    fn host_rules() {
        let mut p = parts(http::Request::get("/").header("host", "a.example"));
        assert!(normalize_host(&mut p).is_ok());
        let mut p = parts(http::Request::get("/").header("host", "a.example").header("host", "b.example"));
        assert!(normalize_host(&mut p).is_err());
        let mut p = parts(http::Request::get("/"));
        assert!(normalize_host(&mut p).is_err());
        let mut p = parts(http::Request::get("/").header("host", "a b"));
        assert!(normalize_host(&mut p).is_err());
        let mut p = parts(http::Request::get("http://target.example/x").header("host", "other.example"));
        normalize_host(&mut p).expect("absolute form");
        assert_eq!(p.headers[header::HOST], "target.example");
    }

    #[test]
    fn forwarding_headers_replace_client_claims() {
        let mut p = parts(
            http::Request::get("/")
                .header("host", "a.example")
                .header("x-forwarded-for", "6.6.6.6")
                .header("via", "1.1 edge"),
        );
        add_forwarding(&mut p, "10.0.0.7:5555".parse().expect("addr"), false);
        assert_eq!(p.headers["x-forwarded-for"], "10.0.0.7");
        assert_eq!(p.headers["x-forwarded-proto"], "http");
        assert_eq!(p.headers["x-forwarded-host"], "a.example");
        let via: Vec<_> = p.headers.get_all("via").iter().collect();
        assert_eq!(via, ["1.1 edge", "1.1 wasmgate"]);
    }
}

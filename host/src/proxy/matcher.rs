//! What a route takes ([`RouteMatch`]): its hosts, path (prefix, exact or pattern), methods,
//! request headers and query parameters, all of which must match. Built once at load, with
//! every pattern compiled; matching allocates nothing and tries the cheap tests first.

use http::header::HeaderName;
use http::request::Parts;
use http::{HeaderMap, Method};
use regex::Regex;

use crate::config::{FieldMatch, RouteConfig, whole_match};

/// How a route matches the host.
#[derive(Debug)]
enum HostMatch {
    /// Exactly this host (lowercase, no port).
    Exact(String),
    /// Any subdomain: the suffix starts with a dot (`.example.org`).
    Suffix(String),
}

impl HostMatch {
    fn new(pattern: &str) -> Self {
        match pattern.strip_prefix('*') {
            Some(suffix) => HostMatch::Suffix(suffix.to_ascii_lowercase()),
            None => HostMatch::Exact(pattern.to_ascii_lowercase()),
        }
    }

    fn matches(&self, host: &str) -> bool {
        match self {
            HostMatch::Exact(h) => host.eq_ignore_ascii_case(h),
            HostMatch::Suffix(s) => {
                host.len() > s.len()
                    && host.is_char_boundary(host.len() - s.len())
                    && host[host.len() - s.len()..].eq_ignore_ascii_case(s)
            }
        }
    }
}

/// What one field's value must be.
#[derive(Debug)]
enum Test {
    Equal(String),
    Pattern(Regex),
    Present(bool),
}

impl Test {
    fn new(field: &FieldMatch) -> Result<Test, String> {
        Ok(match (&field.value, &field.regex, field.present) {
            (Some(value), _, _) => Test::Equal(value.clone()),
            (_, Some(pattern), _) => Test::Pattern(whole_match(pattern)?),
            (_, _, present) => Test::Present(present.unwrap_or(true)),
        })
    }

    /// Whether the values a field has (none when absent) pass.
    fn passes<'a>(&self, mut values: impl Iterator<Item = &'a [u8]>) -> bool {
        match self {
            Test::Present(present) => values.next().is_some() == *present,
            Test::Equal(value) => values.any(|v| v == value.as_bytes()),
            Test::Pattern(pattern) => {
                values.any(|v| std::str::from_utf8(v).is_ok_and(|v| pattern.is_match(v)))
            }
        }
    }
}

/// Everything a route requires of a request; see the module docs.
#[derive(Debug)]
pub struct RouteMatch {
    /// Any of these; any host when empty.
    hosts: Vec<HostMatch>,
    path_prefix: String,
    /// The prefix's first eight bytes and the mask of those it has ([`head`]): most routes a
    /// request does not take fail on this one comparison, before any string is compared.
    prefix_head: (u64, u64),
    path: Option<String>,
    path_pattern: Option<Regex>,
    methods: Vec<Method>,
    headers: Vec<(HeaderName, Test)>,
    query: Vec<(String, Test)>,
}

impl RouteMatch {
    /// The route's matches from its config; a pattern that does not compile is refused with
    /// its field (relative to the route) and the reason.
    pub fn new(config: &RouteConfig) -> Result<Self, (String, String)> {
        let at = |field: String| move |reason: String| (field.clone(), reason);
        let path_pattern =
            config.path_regex.as_deref().map(whole_match).transpose().map_err(at("path_regex".to_owned()))?;
        let mut headers = Vec::with_capacity(config.headers.len());
        for (j, field) in config.headers.iter().enumerate() {
            let name = HeaderName::from_bytes(field.name.as_bytes())
                .map_err(|_| (format!("headers[{j}]"), format!("`{}` is not a header name", field.name)))?;
            headers.push((name, Test::new(field).map_err(at(format!("headers[{j}]")))?));
        }
        let mut query = Vec::with_capacity(config.query.len());
        for (j, field) in config.query.iter().enumerate() {
            query.push((field.name.clone(), Test::new(field).map_err(at(format!("query[{j}]")))?));
        }
        Ok(RouteMatch {
            hosts: config.host.iter().chain(&config.hosts).map(|h| HostMatch::new(h)).collect(),
            path_prefix: config.path_prefix.clone(),
            prefix_head: {
                let len = config.path_prefix.len().min(8);
                let mask = if len == 8 { u64::MAX } else { (1u64 << (8 * len)) - 1 };
                (head(config.path_prefix.as_bytes()), mask)
            },
            path: config.path.clone(),
            path_pattern,
            methods: config.methods.clone(),
            headers,
            query,
        })
    }

    /// Whether the route takes `request`, for `host` (the request's, without the port).
    pub fn matches(&self, host: &str, request: &Parts) -> bool {
        let path = request.uri.path();
        let (prefix, mask) = self.prefix_head;
        // A path shorter than the prefix has zeros where the prefix has bytes, and fails too.
        head(path.as_bytes()) & mask == prefix
            && prefix_matches(&self.path_prefix, path)
            && self.path.as_ref().is_none_or(|p| p == path)
            && (self.methods.is_empty() || self.methods.contains(&request.method))
            && (self.hosts.is_empty() || self.hosts.iter().any(|h| h.matches(host)))
            && self.headers.iter().all(|(name, test)| header_passes(&request.headers, name, test))
            && (self.query.is_empty() || self.query_passes(request.uri.query().unwrap_or("")))
            && self.path_pattern.as_ref().is_none_or(|p| p.is_match(path))
    }

    fn query_passes(&self, query: &str) -> bool {
        self.query.iter().all(|(name, test)| {
            let values = query.split('&').filter_map(|pair| {
                let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
                (key == name).then_some(value.as_bytes())
            });
            test.passes(values)
        })
    }

    /// Whether every request this route takes, `later` would take too, by what the two say
    /// (not a proof: only the common case of a prefix with no other condition is told).
    pub fn covers(&self, later: &RouteMatch) -> bool {
        let only_a_prefix = self.path.is_none()
            && self.path_pattern.is_none()
            && self.methods.is_empty()
            && self.headers.is_empty()
            && self.query.is_empty();
        let hosts = self.hosts.is_empty()
            || self.hosts.iter().all(|h| matches!(h, HostMatch::Exact(_)))
                && !later.hosts.is_empty()
                && later.hosts.iter().all(|l| match l {
                    HostMatch::Exact(host) => self.hosts.iter().any(|h| h.matches(host)),
                    HostMatch::Suffix(_) => false,
                });
        let path = later.path.as_deref().unwrap_or(&later.path_prefix);
        only_a_prefix && hosts && prefix_matches(&self.path_prefix, path)
    }
}

fn header_passes(headers: &HeaderMap, name: &HeaderName, test: &Test) -> bool {
    test.passes(headers.get_all(name).iter().map(|v| v.as_bytes()))
}

/// The first eight bytes of `bytes` as a word, zero-padded.
fn head(bytes: &[u8]) -> u64 {
    match bytes.first_chunk::<8>() {
        Some(word) => u64::from_le_bytes(*word),
        None => bytes.iter().rev().fold(0, |word, &b| word << 8 | u64::from(b)),
    }
}

/// `/api` takes `/api` and `/api/...` but not `/apix`: prefixes end at a segment boundary.
fn prefix_matches(prefix: &str, path: &str) -> bool {
    path.strip_prefix(prefix)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/') || prefix.ends_with('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(extra: &str) -> RouteMatch {
        let text = format!("upstream = \"o\"\n{extra}");
        let config: RouteConfig = toml::from_str(&text).expect("route");
        RouteMatch::new(&config).expect("matches")
    }

    fn request(target: &str, headers: &[(&str, &str)]) -> Parts {
        let mut builder = http::Request::get(target);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(()).expect("request").into_parts().0
    }

    #[test]
    fn the_prefix_word_rejects_only_what_the_prefix_would() {
        let cases = [
            ("/", "/", true),
            ("/", "/x", true),
            ("/api", "/ap", false),
            ("/api", "/api", true),
            ("/api", "/apix", false),
            ("/api/", "/api/v1", true),
            ("/abcdefg", "/abcdefg", true),
            ("/abcdefgh", "/abcdefg", false),
            ("/abcdefgh", "/abcdefgh/i", true),
            ("/abcdefghij", "/abcdefghik", false),
            ("/abcdefghij", "/abcdefghij", true),
        ];
        for (prefix, path, takes) in cases {
            let route = route(&format!("path_prefix = \"{prefix}\""));
            assert_eq!(route.matches("h", &request(path, &[])), takes, "{prefix} {path}");
        }
    }

    #[test]
    fn prefixes_end_at_segment_boundaries() {
        assert!(prefix_matches("/", "/anything"));
        assert!(prefix_matches("/api", "/api"));
        assert!(prefix_matches("/api", "/api/v1"));
        assert!(!prefix_matches("/api", "/apix"));
        assert!(prefix_matches("/api/", "/api/v1"));
        assert!(!prefix_matches("/api/", "/api"));
    }

    #[test]
    fn host_patterns() {
        assert!(HostMatch::new("Api.Example.org").matches("api.example.org"));
        assert!(!HostMatch::new("api.example.org").matches("www.example.org"));
        let wildcard = HostMatch::new("*.example.org");
        assert!(wildcard.matches("a.example.org"));
        assert!(wildcard.matches("a.b.EXAMPLE.org"));
        assert!(!wildcard.matches("example.org"));
        assert!(!wildcard.matches("badexample.org"));
        let several = route(r#"hosts = ["a.test", "*.b.test"]"#);
        for (host, taken) in [("a.test", true), ("x.b.test", true), ("c.test", false)] {
            assert_eq!(several.matches(host, &request("/", &[])), taken, "{host}");
        }
    }

    #[test]
    fn exact_paths_and_patterns() {
        let exact = route(r#"path = "/health""#);
        assert!(exact.matches("h", &request("/health?full=1", &[])));
        assert!(!exact.matches("h", &request("/health/x", &[])));
        let pattern = route(r#"path_regex = "/users/[0-9]+""#);
        assert!(pattern.matches("h", &request("/users/42", &[])));
        assert!(!pattern.matches("h", &request("/users/42/posts", &[])), "the whole path must match");
        assert!(!pattern.matches("h", &request("/users/ab", &[])));
    }

    #[test]
    fn header_and_query_conditions_must_all_hold() {
        let r = route(
            r#"headers = [{ name = "x-env", value = "canary" }, { name = "x-user", regex = "u[0-9]+" }, { name = "x-debug", present = false }]
query = [{ name = "v", value = "2" }, { name = "trace", present = true }]"#,
        );
        let good = [("x-env", "canary"), ("x-user", "u7")];
        assert!(r.matches("h", &request("/?v=2&trace", &good)));
        assert!(!r.matches("h", &request("/?v=3&trace", &good)), "query value");
        assert!(!r.matches("h", &request("/?v=2", &good)), "query presence");
        assert!(!r.matches("h", &request("/?v=2&trace", &[("x-env", "canary"), ("x-user", "admin")])));
        assert!(!r.matches("h", &request("/?v=2&trace", &[("x-env", "prod"), ("x-user", "u7")])));
        let debug = [("x-env", "canary"), ("x-user", "u7"), ("x-debug", "1")];
        assert!(!r.matches("h", &request("/?v=2&trace", &debug)), "absence");
    }

    #[test]
    fn a_bare_prefix_covers_the_routes_under_it() {
        let all = route(r#"path_prefix = "/api""#);
        assert!(all.covers(&route(r#"path_prefix = "/api/v1""#)));
        assert!(all.covers(&route(r#"path = "/api/x""#)));
        assert!(!all.covers(&route(r#"path_prefix = "/apix""#)));
        assert!(
            !route("path_prefix = \"/api\"\nmethods = [\"GET\"]")
                .covers(&route(r#"path_prefix = "/api/v1""#))
        );
        assert!(!route(r#"host = "a.test""#).covers(&route("")), "a host-bound route leaves others");
        assert!(route(r#"host = "a.test""#).covers(&route(r#"host = "a.test""#)));
    }
}

//! cors: Cross-Origin Resource Sharing for the routes it is on. It answers preflight requests
//! itself in `on_request_headers`, and adds the `Access-Control-*` headers to the responses to
//! allowed origins in `on_response_headers`.

use serde::Deserialize;
use wasmgate_sdk::{Action, LocalResponse, Plugin, Request, Response, log, state};

/// The `state` key under which an allowed origin waits for the response headers.
const ORIGIN_KEY: &str = "origin";

/// The plugin's table in the gateway config.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    /// Origins allowed to read responses, `scheme://host[:port]`, or just `*` for any.
    allow_origins: Vec<String>,
    /// Methods a preflight allows.
    #[serde(default = "default_methods")]
    allow_methods: Vec<String>,
    /// Request headers a preflight allows (beyond the CORS-safelisted ones).
    #[serde(default)]
    allow_headers: Vec<String>,
    /// Response headers scripts may read (beyond the CORS-safelisted ones).
    #[serde(default)]
    expose_headers: Vec<String>,
    /// Seconds a browser may cache a preflight answer.
    #[serde(default = "default_max_age")]
    max_age: u32,
    /// Whether responses may be read by requests sent with cookies or HTTP authentication.
    #[serde(default)]
    allow_credentials: bool,
}

fn default_methods() -> Vec<String> {
    ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"].map(str::to_owned).to_vec()
}

fn default_max_age() -> u32 {
    600
}

/// Which origins are allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Origins {
    /// Any origin (`*`).
    Any,
    /// These origins, lowercased.
    List(Vec<String>),
}

/// The validated config, with the header values joined once.
#[derive(Debug)]
struct Cors {
    origins: Origins,
    allow_credentials: bool,
    /// `Access-Control-Allow-Methods`.
    methods: String,
    /// `Access-Control-Allow-Headers`, if any are allowed.
    allow_headers: Option<String>,
    /// `Access-Control-Expose-Headers`, if any are exposed.
    expose_headers: Option<String>,
    max_age: String,
}

#[wasmgate_sdk::plugin]
impl Plugin for Cors {
    type Config = Config;

    fn new(config: Config) -> Result<Self, String> {
        let origins = parse_origins(config.allow_origins)?;
        if origins == Origins::Any && config.allow_credentials {
            return Err("`allow_origins` [\"*\"] cannot be used with `allow_credentials = true`: browsers \
                        refuse credentialed responses to any origin; list the origins instead"
                .to_owned());
        }
        if config.allow_methods.is_empty() {
            return Err("`allow_methods` must not be empty".to_owned());
        }
        Ok(Cors {
            origins,
            allow_credentials: config.allow_credentials,
            methods: joined("allow_methods", config.allow_methods, config.allow_credentials)?
                .unwrap_or_default(),
            allow_headers: joined("allow_headers", config.allow_headers, config.allow_credentials)?,
            expose_headers: joined("expose_headers", config.expose_headers, config.allow_credentials)?,
            max_age: config.max_age.to_string(),
        })
    }

    fn on_request_headers(&mut self, req: &mut Request) -> Action {
        let Some(origin) = req.header("origin") else { return Action::Continue };
        let allowed = self.allows(&origin);
        if req.method() == "OPTIONS" && req.header_bytes("access-control-request-method").is_some() {
            return Action::Respond(if allowed { self.preflight(&origin) } else { refused() });
        }
        if allowed && !state::set(ORIGIN_KEY, &origin) {
            log::warn!("no CORS headers for origin {origin:?}: per-request state is full");
        }
        Action::Continue
    }

    fn on_response_headers(&mut self, _req: &Request, resp: &mut Response) -> Action {
        if let Some(origin) = state::get(ORIGIN_KEY) {
            let origin = String::from_utf8_lossy(&origin);
            for (name, value) in self.response_headers(&origin) {
                if let Err(error) = resp.set_header(name, &value) {
                    log::warn!("response header {name:?} not set: {error}");
                }
            }
        }
        // Unless any origin is allowed, whether the CORS headers are there depends on `Origin`:
        // caches must know, for every response (with or without them), or they would serve
        // one origin's answer to another. Added to what the upstream varies on.
        if self.origins != Origins::Any
            && !varies_on_origin(&resp.header_all("vary"))
            && let Err(error) = resp.add_header("vary", "Origin")
        {
            log::warn!("`vary: Origin` not added: {error}");
        }
        Action::Continue
    }
}

impl Cors {
    /// Whether `origin` (an `Origin` header value) may read responses.
    fn allows(&self, origin: &str) -> bool {
        match &self.origins {
            Origins::Any => true,
            Origins::List(list) => list.iter().any(|allowed| allowed.eq_ignore_ascii_case(origin)),
        }
    }

    /// The `Access-Control-Allow-Origin` value for an allowed `origin`: `*` when any origin is
    /// allowed (never with credentials, which `new` refuses), else the origin itself.
    fn allow_origin<'a>(&self, origin: &'a str) -> &'a str {
        if self.origins == Origins::Any { "*" } else { origin }
    }

    /// The headers set on a response to an allowed `origin`.
    fn response_headers(&self, origin: &str) -> Vec<(&'static str, String)> {
        let mut headers = vec![("access-control-allow-origin", self.allow_origin(origin).to_owned())];
        if self.allow_credentials {
            headers.push(("access-control-allow-credentials", "true".to_owned()));
        }
        if let Some(expose) = &self.expose_headers {
            headers.push(("access-control-expose-headers", expose.clone()));
        }
        headers
    }

    /// The answer to a preflight from an allowed `origin`. The browser, not the gateway,
    /// compares the requested method and headers with the lists: the answer is the same for
    /// every preflight from the origin, which keeps it cacheable.
    fn preflight(&self, origin: &str) -> LocalResponse {
        let mut resp = LocalResponse::new(204)
            .header("access-control-allow-origin", self.allow_origin(origin))
            .header("access-control-allow-methods", &self.methods)
            .header("access-control-max-age", &self.max_age);
        if let Some(allow) = &self.allow_headers {
            resp = resp.header("access-control-allow-headers", allow);
        }
        if self.allow_credentials {
            resp = resp.header("access-control-allow-credentials", "true");
        }
        if self.origins != Origins::Any {
            resp = resp.header("vary", "Origin");
        }
        resp
    }
}

/// Whether the `Vary` values already cover `Origin` (by name, or `*`).
fn varies_on_origin(values: &[Vec<u8>]) -> bool {
    values.iter().any(|value| {
        String::from_utf8_lossy(value)
            .split(',')
            .map(str::trim)
            .any(|name| name == "*" || name.eq_ignore_ascii_case("origin"))
    })
}

/// The answer to a preflight from an origin that is not allowed.
fn refused() -> LocalResponse {
    LocalResponse::new(403)
        .header("content-type", "text/plain; charset=utf-8")
        .body("CORS preflight refused: origin not allowed\n")
}

/// Checks `allow_origins`: `["*"]`, or origins as browsers send them in `Origin`.
fn parse_origins(origins: Vec<String>) -> Result<Origins, String> {
    if origins.iter().any(|origin| origin == "*") {
        if origins.len() > 1 {
            return Err("`allow_origins`: `*` allows any origin and cannot be listed with others".to_owned());
        }
        return Ok(Origins::Any);
    }
    if origins.is_empty() {
        return Err("`allow_origins` must not be empty: list origins, or [\"*\"] for any".to_owned());
    }
    for origin in &origins {
        check_origin(origin).map_err(|why| format!("`allow_origins`: {origin:?} {why}"))?;
    }
    Ok(Origins::List(origins.iter().map(|origin| origin.to_ascii_lowercase()).collect()))
}

/// Checks that `origin` is `scheme://host[:port]`, the form of an `Origin` header: a path or a
/// trailing `/` would never match one.
fn check_origin(origin: &str) -> Result<(), &'static str> {
    let (scheme, rest) = origin.split_once("://").ok_or("is not scheme://host[:port]")?;
    if scheme.is_empty() || !scheme.bytes().all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b)) {
        return Err("has no valid scheme (expected scheme://host[:port])");
    }
    if rest.is_empty() {
        return Err("has no host (expected scheme://host[:port])");
    }
    if rest.contains(['/', '?', '#']) {
        return Err("has a path: an Origin is scheme://host[:port], without even a trailing `/`");
    }
    if !rest.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._:[]".contains(&b)) {
        return Err("has characters a host and port cannot have");
    }
    Ok(())
}

/// Checks that the listed names are RFC 9110 tokens and joins them with `, `; `None` if the
/// list is empty. `*` (a token too) is the Fetch standard's wildcard, but only for requests
/// without credentials: with them, browsers read it as a name, so it is refused then.
fn joined(field: &str, names: Vec<String>, credentials: bool) -> Result<Option<String>, String> {
    if let Some(bad) = names.iter().find(|name| name.is_empty() || !name.bytes().all(is_token_char)) {
        return Err(format!("`{field}`: {bad:?} is not a method or header name (an RFC 9110 token)"));
    }
    if credentials && names.iter().any(|name| name == "*") {
        return Err(format!(
            "`{field}`: `*` is no wildcard with `allow_credentials = true` (browsers read it as a name): \
             list the names"
        ));
    }
    Ok((!names.is_empty()).then(|| names.join(", ")))
}

/// `tchar` of RFC 9110 section 5.6.2.
fn is_token_char(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&byte)
}

#[cfg(test)]
mod tests {
    //! Run natively: `cargo test --target x86_64-unknown-linux-gnu`.

    use super::*;

    fn config(origins: &[&str], credentials: bool) -> Config {
        Config {
            allow_origins: origins.iter().map(|o| o.to_string()).collect(),
            allow_methods: default_methods(),
            allow_headers: vec!["content-type".to_owned(), "x-requested-with".to_owned()],
            expose_headers: vec![],
            max_age: default_max_age(),
            allow_credentials: credentials,
        }
    }

    #[test]
    fn allows_listed_origins_case_insensitively_and_no_others() {
        let cors = Cors::new(config(&["https://a.example", "http://localhost:3000"], false)).expect("valid");
        assert!(cors.allows("https://a.example"));
        assert!(cors.allows("HTTPS://A.EXAMPLE"));
        assert!(cors.allows("http://localhost:3000"));
        assert!(!cors.allows("http://localhost:3001"));
        assert!(!cors.allows("https://a.example.evil"));
        assert!(!cors.allows("null"));
    }

    #[test]
    fn answers_preflights_with_the_configured_lists() {
        let cors = Cors::new(config(&["https://a.example"], true)).expect("valid");
        assert_eq!(
            cors.preflight("https://a.example"),
            LocalResponse::new(204)
                .header("access-control-allow-origin", "https://a.example")
                .header("access-control-allow-methods", "GET, HEAD, POST, PUT, PATCH, DELETE")
                .header("access-control-max-age", "600")
                .header("access-control-allow-headers", "content-type, x-requested-with")
                .header("access-control-allow-credentials", "true")
                .header("vary", "Origin")
        );
        assert_eq!(refused().status, 403);
    }

    #[test]
    fn any_origin_answers_with_a_star_and_no_vary() {
        let mut config = config(&["*"], false);
        config.allow_headers.clear();
        config.expose_headers = vec!["x-total-count".to_owned()];
        let cors = Cors::new(config).expect("valid");
        assert!(cors.allows("https://whoever.example"));
        assert_eq!(
            cors.preflight("https://whoever.example"),
            LocalResponse::new(204)
                .header("access-control-allow-origin", "*")
                .header("access-control-allow-methods", "GET, HEAD, POST, PUT, PATCH, DELETE")
                .header("access-control-max-age", "600")
        );
        assert_eq!(
            cors.response_headers("https://whoever.example"),
            [
                ("access-control-allow-origin", "*".to_owned()),
                ("access-control-expose-headers", "x-total-count".to_owned())
            ]
        );
    }

    #[test]
    fn echoes_a_listed_origin_with_credentials() {
        let cors = Cors::new(config(&["https://a.example"], true)).expect("valid");
        assert_eq!(
            cors.response_headers("https://a.example"),
            [
                ("access-control-allow-origin", "https://a.example".to_owned()),
                ("access-control-allow-credentials", "true".to_owned())
            ]
        );
    }

    #[test]
    fn adds_origin_to_vary_only_when_missing() {
        assert!(!varies_on_origin(&[]));
        assert!(!varies_on_origin(&[b"accept-encoding".to_vec(), b"x-origin".to_vec()]));
        assert!(varies_on_origin(&[b"Accept-Encoding, Origin".to_vec()]));
        assert!(varies_on_origin(&[b"accept".to_vec(), b"origin".to_vec()]));
        assert!(varies_on_origin(&[b"*".to_vec()]));
    }

    #[test]
    fn refuses_any_origin_with_credentials() {
        let error = Cors::new(config(&["*"], true)).expect_err("* with credentials");
        assert!(error.contains("cannot be used with `allow_credentials = true`"), "{error}");
    }

    #[test]
    fn refuses_origins_that_could_never_match() {
        for (origin, why) in [
            ("https://a.example/", "has a path"),
            ("https://a.example/app", "has a path"),
            ("a.example", "is not scheme://host[:port]"),
            ("https://", "has no host"),
            ("://a.example", "has no valid scheme"),
            ("https://a example", "has characters"),
        ] {
            let error = Cors::new(config(&[origin], false)).expect_err(origin);
            assert!(error.starts_with(&format!("`allow_origins`: {origin:?} {why}")), "{error}");
        }
        assert!(Cors::new(config(&[], false)).is_err());
        assert!(Cors::new(config(&["*", "https://a.example"], false)).is_err());
        assert!(Cors::new(config(&["http://[::1]:8080"], false)).is_ok());
    }

    #[test]
    fn refuses_bad_method_and_header_names() {
        let mut bad = config(&["*"], false);
        bad.allow_methods = vec!["GET".to_owned(), "BAD METHOD".to_owned()];
        assert_eq!(
            Cors::new(bad).expect_err("space").as_str(),
            r#"`allow_methods`: "BAD METHOD" is not a method or header name (an RFC 9110 token)"#
        );
        // `*` is a wildcard without credentials, and refused with them.
        let mut star = config(&["*"], false);
        star.allow_methods = vec!["*".to_owned()];
        star.allow_headers = vec!["*".to_owned()];
        star.expose_headers = vec!["*".to_owned()];
        assert!(Cors::new(star).is_ok());
        let mut credentialed = config(&["https://a.example"], true);
        credentialed.allow_headers = vec!["x-a".to_owned(), "*".to_owned()];
        let error = Cors::new(credentialed).expect_err("* with credentials");
        assert!(error.starts_with("`allow_headers`: `*` is no wildcard"), "{error}");
        let mut no_methods = config(&["*"], false);
        no_methods.allow_methods.clear();
        assert!(Cors::new(no_methods).is_err());
    }
}

//! add-header: sets the request and response headers listed in its config, replacing any
//! values already present. A route may give its own headers in the same form
//! (`{ name = "add-header", config = { response = { … } } }`), set after the plugin's own. The
//! names and values are checked once, when the gateway starts.

use std::collections::BTreeMap;

use serde::Deserialize;
use wasmgate_sdk::{Action, PerRoute, Plugin, Request, Response, RouteConfig, log};

/// The plugin's table in the gateway config.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    /// Header name → value, set on the request in `on_request_headers`.
    #[serde(default)]
    request: BTreeMap<String, String>,
    /// Header name → value, set on the response in `on_response_headers`.
    #[serde(default)]
    response: BTreeMap<String, String>,
}

/// The validated headers, names lowercased.
#[derive(Debug)]
struct Headers {
    request: Vec<(String, String)>,
    response: Vec<(String, String)>,
}

impl Headers {
    fn new(config: Config) -> Result<Self, String> {
        Ok(Headers {
            request: validated("request", config.request)?,
            response: validated("response", config.response)?,
        })
    }
}

/// The plugin's headers, and each route's own.
#[derive(Debug)]
struct AddHeader {
    all: Headers,
    routes: PerRoute<Headers>,
}

#[wasmgate_sdk::plugin]
impl Plugin for AddHeader {
    type Config = Config;

    fn new(config: Config) -> Result<Self, String> {
        Ok(AddHeader { all: Headers::new(config)?, routes: PerRoute::new() })
    }

    fn init_route(&mut self, route: &str, config: RouteConfig) -> Result<(), String> {
        self.routes.insert(route, Headers::new(config.parse()?)?);
        Ok(())
    }

    fn on_request_headers(&mut self, req: &mut Request) -> Action {
        let route = self.routes.of(req).map(|h| &h.request[..]).unwrap_or_default();
        for (name, value) in self.all.request.iter().chain(route) {
            if let Err(error) = req.set_header(name, value) {
                log::warn!("request header {name:?} not set: {error}");
            }
        }
        Action::Continue
    }

    fn on_response_headers(&mut self, req: &Request, resp: &mut Response) -> Action {
        let route = self.routes.of(req).map(|h| &h.response[..]).unwrap_or_default();
        for (name, value) in self.all.response.iter().chain(route) {
            if let Err(error) = resp.set_header(name, value) {
                log::warn!("response header {name:?} not set: {error}");
            }
        }
        Action::Continue
    }
}

/// Checks one side's headers like the host would, so a bad entry stops the gateway at start
/// instead of being refused on every request.
fn validated(side: &str, headers: BTreeMap<String, String>) -> Result<Vec<(String, String)>, String> {
    let mut valid: Vec<(String, String)> = Vec::with_capacity(headers.len());
    for (name, value) in headers {
        if name.is_empty() || !name.bytes().all(is_token_char) {
            return Err(format!("{side} header {name:?}: the name is not an RFC 9110 token"));
        }
        // RFC 9110 field values: visible characters, spaces and tabs; CR, LF and NUL would
        // split or truncate the header on the wire.
        if let Some(bad) = value.chars().find(|&c| c != '\t' && c.is_control()) {
            return Err(format!("{side} header {name:?}: the value holds the control character {bad:?}"));
        }
        let name = name.to_ascii_lowercase();
        if valid.iter().any(|(seen, _)| *seen == name) {
            return Err(format!(
                "{side} header {name:?} is listed twice (header names are case-insensitive)"
            ));
        }
        valid.push((name, value));
    }
    Ok(valid)
}

/// `tchar` of RFC 9110 section 5.6.2.
fn is_token_char(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&byte)
}

#[cfg(test)]
mod tests {
    //! Run natively: `cargo test --target x86_64-unknown-linux-gnu`.

    use super::*;

    fn config(request: &[(&str, &str)], response: &[(&str, &str)]) -> Config {
        let map =
            |pairs: &[(&str, &str)]| pairs.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect();
        Config { request: map(request), response: map(response) }
    }

    #[test]
    fn accepts_and_lowercases_valid_headers() {
        let plugin = Headers::new(config(
            &[("X-Env", "staging"), ("x-tabbed", "a\tb")],
            &[("Strict-Transport-Security", "max-age=63072000")],
        ))
        .expect("valid config");
        assert_eq!(
            plugin.request,
            [("x-env".to_owned(), "staging".to_owned()), ("x-tabbed".to_owned(), "a\tb".to_owned())]
        );
        assert_eq!(plugin.response[0].0, "strict-transport-security");
    }

    #[test]
    fn refuses_a_bad_name_naming_it() {
        let error = Headers::new(config(&[("x bad", "1")], &[])).expect_err("space in name");
        assert_eq!(error, r#"request header "x bad": the name is not an RFC 9110 token"#);
        let error = Headers::new(config(&[], &[("", "1")])).expect_err("empty name");
        assert_eq!(error, r#"response header "": the name is not an RFC 9110 token"#);
    }

    #[test]
    fn refuses_cr_lf_and_nul_in_values() {
        for bad in ["a\r\nb", "a\nb", "a\0b"] {
            let error = Headers::new(config(&[], &[("x-a", bad)])).expect_err(bad);
            assert!(error.starts_with(r#"response header "x-a": the value holds the control"#), "{error}");
        }
    }

    #[test]
    fn refuses_names_listed_twice() {
        let error = Headers::new(config(&[("X-A", "1"), ("x-a", "2")], &[])).expect_err("duplicate");
        assert!(error.contains(r#"request header "x-a" is listed twice"#), "{error}");
    }

    #[test]
    fn keeps_each_routes_headers_and_refuses_bad_ones_naming_them() {
        let mut plugin = AddHeader::new(config(&[], &[])).expect("empty config");
        plugin.init_route("api", RouteConfig::new(r#"{"response": {"X-Tier": "gold"}}"#)).expect("valid");
        assert_eq!(
            plugin.routes.get("api").map(|h| &h.response[..]),
            Some(&[("x-tier".to_owned(), "gold".to_owned())][..])
        );
        let error = plugin
            .init_route("web", RouteConfig::new(r#"{"response": {"x bad": "1"}}"#))
            .expect_err("bad name");
        assert_eq!(error, r#"response header "x bad": the name is not an RFC 9110 token"#);
        let error =
            plugin.init_route("web", RouteConfig::new(r#"{"responses": {}}"#)).expect_err("unknown field");
        assert!(error.starts_with("invalid config: unknown field `responses`"), "{error}");
    }

    #[test]
    fn accepts_an_empty_config() {
        // Unknown tables are refused by serde (`deny_unknown_fields`); empty ones set nothing.
        let plugin = Headers::new(config(&[], &[])).expect("empty config");
        assert!(plugin.request.is_empty() && plugin.response.is_empty());
    }
}

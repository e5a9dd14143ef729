//! ext-authz: asks an external authorisation service, in `on_request_headers`, whether each
//! request may pass. A 2xx answer lets it through (with headers the service chose copied onto
//! it); any other answer is passed back to the client; a failed call denies (or allows, as
//! configured).

use serde::Deserialize;
use wasmgate_sdk::outbound::{self, OutboundRequest, OutboundResponse};
use wasmgate_sdk::{Action, LocalResponse, Plugin, Request, log};

/// The headers that tell the service what is asked; never taken from the client.
const ORIGINAL_HEADERS: [&str; 3] = ["x-original-method", "x-original-path", "x-original-uri"];

/// The plugin's table in the gateway config.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    /// The upstream group of the authorisation service.
    group: String,
    /// The path (and query) the check is sent to.
    path: String,
    /// Milliseconds the whole check may take.
    #[serde(default = "default_timeout_ms")]
    timeout_ms: u32,
    /// Request headers sent along to the service.
    #[serde(default = "default_forward_headers")]
    forward_headers: Vec<String>,
    /// Headers of the service's 2xx answer copied onto the request.
    #[serde(default)]
    allow_headers_from_authz: Vec<String>,
    /// What a failed call does to the request.
    #[serde(default)]
    failure: Failure,
}

fn default_timeout_ms() -> u32 {
    200
}

fn default_forward_headers() -> Vec<String> {
    vec!["authorization".to_owned(), "cookie".to_owned()]
}

/// What happens to a request when the service cannot be asked.
#[derive(Deserialize, Debug, Clone, Copy, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum Failure {
    /// Answer 503.
    #[default]
    Deny,
    /// Let it through, with a warning in the log.
    Allow,
}

/// The service's decision on a request.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Verdict {
    /// Let it through, setting each header to its values (removing it if there are none).
    Allow(Vec<(String, Vec<Vec<u8>>)>),
    /// Answer the client with this.
    Deny(LocalResponse),
}

#[derive(Debug)]
struct ExtAuthz {
    group: String,
    path: String,
    timeout_ms: u32,
    /// Lowercased.
    forward_headers: Vec<String>,
    /// Lowercased.
    allow_headers_from_authz: Vec<String>,
    failure: Failure,
}

#[wasmgate_sdk::plugin]
impl Plugin for ExtAuthz {
    type Config = Config;

    fn new(config: Config) -> Result<Self, String> {
        if config.group.is_empty() {
            return Err("`group` must name the upstream group of the authorisation service".to_owned());
        }
        if !config.path.starts_with('/') || config.path.bytes().any(|b| b.is_ascii_control() || b == b' ') {
            return Err(format!("`path` {:?} must be an absolute path (starting with `/`)", config.path));
        }
        if config.timeout_ms == 0 {
            return Err("`timeout_ms` must be at least 1".to_owned());
        }
        let forward_headers = header_names("forward_headers", config.forward_headers)?;
        if let Some(name) = forward_headers.iter().find(|name| ORIGINAL_HEADERS.contains(&name.as_str())) {
            return Err(format!("`forward_headers`: {name:?} is set by the plugin itself, not forwarded"));
        }
        Ok(ExtAuthz {
            group: config.group,
            path: config.path,
            timeout_ms: config.timeout_ms,
            forward_headers,
            allow_headers_from_authz: header_names(
                "allow_headers_from_authz",
                config.allow_headers_from_authz,
            )?,
            failure: config.failure,
        })
    }

    fn on_request_headers(&mut self, req: &mut Request) -> Action {
        let forwarded =
            self.forward_headers.iter().map(|name| (name.as_str(), req.header_all(name))).collect::<Vec<_>>();
        let check = self.check_request(&req.method(), &req.path(), req.query().as_deref(), &forwarded);
        let decision = match outbound::call(&self.group, check) {
            Ok(answer) => verdict(&answer, &self.allow_headers_from_authz),
            Err(error) if self.failure == Failure::Allow => {
                log::warn!("authorization service unavailable, request let through unchecked: {error}");
                return Action::Continue;
            }
            Err(error) => {
                log::warn!("authorization service unavailable, request denied: {error}");
                Verdict::Deny(unavailable())
            }
        };
        match decision {
            Verdict::Deny(answer) => Action::Respond(answer),
            Verdict::Allow(headers) => {
                for (name, values) in headers {
                    copy_header(req, &name, &values);
                }
                Action::Continue
            }
        }
    }
}

impl ExtAuthz {
    /// The check sent to the service: `GET <path>` with the forwarded headers (each of their
    /// values) and what the client asked for.
    fn check_request(
        &self,
        method: &str,
        path: &str,
        query: Option<&str>,
        forwarded: &[(&str, Vec<Vec<u8>>)],
    ) -> OutboundRequest {
        let mut check = OutboundRequest::get(self.path.clone()).timeout_ms(self.timeout_ms);
        for (name, values) in forwarded {
            for value in values {
                check = check.header(*name, value);
            }
        }
        let uri = match query {
            Some(query) => format!("{path}?{query}"),
            None => path.to_owned(),
        };
        check
            .header("x-original-method", method)
            .header("x-original-path", path)
            .header("x-original-uri", uri)
    }
}

/// The decision in the service's `answer`. A denial passes on the service's body, with its
/// `content-type` and `www-authenticate` (which tell the client what to do next), and its
/// status if a 4xx: anything else (a redirect, a service error) is no answer for the client,
/// and becomes 403.
fn verdict(answer: &OutboundResponse, allow_headers: &[String]) -> Verdict {
    if (200..300).contains(&answer.status) {
        let headers = allow_headers
            .iter()
            .map(|name| {
                let values = answer
                    .headers
                    .iter()
                    .filter(|(n, _)| n.eq_ignore_ascii_case(name))
                    .map(|(_, v)| v.clone());
                (name.clone(), values.collect())
            })
            .collect();
        return Verdict::Allow(headers);
    }
    let status = if (400..500).contains(&answer.status) { answer.status } else { 403 };
    let mut denial = LocalResponse::new(status).body(answer.body.clone());
    for (name, value) in &answer.headers {
        if name.eq_ignore_ascii_case("content-type") || name.eq_ignore_ascii_case("www-authenticate") {
            denial = denial.header(name.to_ascii_lowercase(), value);
        }
    }
    Verdict::Deny(denial)
}

/// The answer when the service could not be asked and `failure` is `deny`.
fn unavailable() -> LocalResponse {
    LocalResponse::new(503)
        .header("content-type", "text/plain; charset=utf-8")
        .body("authorization service unavailable\n")
}

/// Sets `name` on the request to `values`, or removes it if the service sent none: a client
/// must not be able to send the header itself and have it pass for the service's.
fn copy_header(req: &mut Request, name: &str, values: &[Vec<u8>]) {
    let mut result = req.remove_header(name).map(drop);
    for value in values {
        result = result.and_then(|()| req.add_header(name, value));
    }
    if let Err(error) = result {
        log::warn!("header {name:?} from the authorization service not copied: {error}");
        // Whatever got through, none of it can be trusted as the service's.
        let _ = req.remove_header(name);
    }
}

/// Checks and lowercases header names from the config.
fn header_names(field: &str, names: Vec<String>) -> Result<Vec<String>, String> {
    names
        .into_iter()
        .map(|name| {
            if name.is_empty() || !name.bytes().all(is_token_char) {
                Err(format!("`{field}`: {name:?} is not a header name (an RFC 9110 token)"))
            } else {
                Ok(name.to_ascii_lowercase())
            }
        })
        .collect()
}

/// `tchar` of RFC 9110 section 5.6.2.
fn is_token_char(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&byte)
}

#[cfg(test)]
mod tests {
    //! Run natively: `cargo test --target x86_64-unknown-linux-gnu`. The host calls (the
    //! outbound call, header edits, logging) are not exercised here; the decisions are.

    use super::*;

    fn config() -> Config {
        Config {
            group: "authz".to_owned(),
            path: "/check".to_owned(),
            timeout_ms: default_timeout_ms(),
            forward_headers: default_forward_headers(),
            allow_headers_from_authz: vec!["X-User".to_owned()],
            failure: Failure::default(),
        }
    }

    fn answer(status: u16, headers: &[(&str, &str)], body: &str) -> OutboundResponse {
        OutboundResponse {
            status,
            headers: headers.iter().map(|(n, v)| (n.to_string(), v.as_bytes().to_vec())).collect(),
            body: body.as_bytes().to_vec(),
        }
    }

    #[test]
    fn sends_a_get_with_forwarded_headers_and_the_original_request() {
        let plugin = ExtAuthz::new(config()).expect("valid config");
        let forwarded = [
            ("authorization", vec![b"Bearer t".to_vec()]),
            ("cookie", vec![b"a=1".to_vec(), b"b=2".to_vec()]),
        ];
        let check = plugin.check_request("POST", "/orders/7", Some("x=1&y=2"), &forwarded);
        let expected = OutboundRequest::get("/check")
            .timeout_ms(200)
            .header("authorization", "Bearer t")
            .header("cookie", "a=1")
            .header("cookie", "b=2")
            .header("x-original-method", "POST")
            .header("x-original-path", "/orders/7")
            .header("x-original-uri", "/orders/7?x=1&y=2");
        assert_eq!(check, expected);
        let check = plugin.check_request("GET", "/", None, &[("authorization", vec![])]);
        assert_eq!(check.headers.last(), Some(&("x-original-uri".to_owned(), b"/".to_vec())));
        assert_eq!(check.headers.len(), 3);
    }

    #[test]
    fn a_2xx_allows_with_the_service_headers() {
        let allowed = verdict(
            &answer(204, &[("x-user", "alice"), ("x-other", "no"), ("X-User", "bob")], ""),
            &["x-user".to_owned(), "x-tenant".to_owned()],
        );
        assert_eq!(
            allowed,
            Verdict::Allow(vec![
                ("x-user".to_owned(), vec![b"alice".to_vec(), b"bob".to_vec()]),
                ("x-tenant".to_owned(), vec![]),
            ])
        );
        assert!(matches!(verdict(&answer(299, &[], ""), &[]), Verdict::Allow(_)));
    }

    #[test]
    fn a_4xx_is_passed_back_and_anything_else_becomes_403() {
        let denied = verdict(
            &answer(
                401,
                &[("www-authenticate", "Bearer"), ("content-type", "application/json"), ("x-user", "no")],
                r#"{"error":"login"}"#,
            ),
            &["x-user".to_owned()],
        );
        assert_eq!(
            denied,
            Verdict::Deny(
                LocalResponse::new(401)
                    .header("www-authenticate", "Bearer")
                    .header("content-type", "application/json")
                    .body(r#"{"error":"login"}"#)
            )
        );
        for status in [300, 302, 500, 503, 199] {
            let Verdict::Deny(denial) = verdict(&answer(status, &[], "nope"), &[]) else {
                panic!("{status} must deny");
            };
            assert_eq!((denial.status, denial.body.as_slice()), (403, &b"nope"[..]), "{status}");
        }
        let Verdict::Deny(denial) = verdict(&answer(429, &[], ""), &[]) else { panic!("429 must deny") };
        assert_eq!(denial.status, 429);
    }

    #[test]
    fn answers_503_when_the_service_cannot_be_asked() {
        assert_eq!(
            unavailable(),
            LocalResponse::new(503)
                .header("content-type", "text/plain; charset=utf-8")
                .body("authorization service unavailable\n")
        );
    }

    #[test]
    fn refuses_bad_settings_naming_them() {
        let plugin = ExtAuthz::new(config()).expect("valid config");
        assert_eq!(plugin.allow_headers_from_authz, ["x-user"]);
        assert_eq!(plugin.failure, Failure::Deny);

        let error = ExtAuthz::new(Config { group: String::new(), ..config() }).expect_err("no group");
        assert!(error.starts_with("`group`"), "{error}");
        let error = ExtAuthz::new(Config { path: "check".to_owned(), ..config() }).expect_err("relative");
        assert_eq!(error, r#"`path` "check" must be an absolute path (starting with `/`)"#);
        assert!(ExtAuthz::new(Config { path: "/a b".to_owned(), ..config() }).is_err());
        assert!(ExtAuthz::new(Config { path: "/check?v=2".to_owned(), ..config() }).is_ok());
        assert!(ExtAuthz::new(Config { timeout_ms: 0, ..config() }).is_err());
        let error = ExtAuthz::new(Config { forward_headers: vec!["bad header".to_owned()], ..config() })
            .expect_err("space");
        assert_eq!(error, r#"`forward_headers`: "bad header" is not a header name (an RFC 9110 token)"#);
        let error = ExtAuthz::new(Config { forward_headers: vec!["X-Original-URI".to_owned()], ..config() })
            .expect_err("reserved");
        assert!(error.contains("set by the plugin itself"), "{error}");
        assert!(ExtAuthz::new(Config { allow_headers_from_authz: vec![String::new()], ..config() }).is_err());
    }
}

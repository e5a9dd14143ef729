//! deny: answers requests whose path starts with one of the configured prefixes with a fixed
//! response, in `on_request_headers`, so they never reach an upstream.

use serde::Deserialize;
use wasmgate_sdk::{Action, LocalResponse, Plugin, Request};

/// The plugin's table in the gateway config.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    /// Path prefixes to answer, each starting with `/`; none denies nothing.
    #[serde(default)]
    prefixes: Vec<String>,
    /// The status to answer with, 200 to 599.
    #[serde(default = "default_status")]
    status: u16,
    /// The body to answer with, as `text/plain`.
    #[serde(default = "default_body")]
    body: String,
}

fn default_status() -> u16 {
    403
}

fn default_body() -> String {
    "forbidden\n".to_owned()
}

#[derive(Debug)]
struct Deny {
    prefixes: Vec<String>,
    /// Built once: every denied request gets the same answer.
    response: LocalResponse,
}

#[wasmgate_sdk::plugin]
impl Plugin for Deny {
    type Config = Config;

    fn new(config: Config) -> Result<Self, String> {
        if let Some(bad) = config.prefixes.iter().find(|p| !p.starts_with('/')) {
            return Err(format!("prefix {bad:?} does not start with `/`"));
        }
        if !(200..=599).contains(&config.status) {
            return Err(format!("`status` {} is not a final status (200 to 599)", config.status));
        }
        Ok(Deny {
            prefixes: config.prefixes,
            response: LocalResponse::new(config.status)
                .header("content-type", "text/plain; charset=utf-8")
                .body(config.body),
        })
    }

    fn on_request_headers(&mut self, req: &mut Request) -> Action {
        if denies(&self.prefixes, &req.path()) {
            Action::Respond(self.response.clone())
        } else {
            Action::Continue
        }
    }
}

/// Whether `path` starts with one of `prefixes`.
fn denies(prefixes: &[String], path: &str) -> bool {
    prefixes.iter().any(|prefix| path.starts_with(prefix.as_str()))
}

#[cfg(test)]
mod tests {
    //! Run natively: `cargo test --target x86_64-unknown-linux-gnu`.

    use super::*;

    fn config(prefixes: &[&str], status: u16) -> Config {
        Config { prefixes: prefixes.iter().map(|p| p.to_string()).collect(), status, body: default_body() }
    }

    #[test]
    fn builds_the_answer_once_with_the_defaults() {
        let deny = Deny::new(config(&["/admin"], default_status())).expect("valid config");
        assert_eq!(
            deny.response,
            LocalResponse::new(403).header("content-type", "text/plain; charset=utf-8").body("forbidden\n")
        );
    }

    #[test]
    fn no_prefixes_denies_nothing() {
        let deny = Deny::new(config(&[], 403)).expect("valid config");
        assert!(!denies(&deny.prefixes, "/"));
        assert!(!denies(&deny.prefixes, "/admin"));
    }

    #[test]
    fn matches_prefixes_as_plain_string_prefixes() {
        let prefixes = ["/admin".to_owned(), "/internal/".to_owned()];
        assert!(denies(&prefixes, "/admin"));
        assert!(denies(&prefixes, "/admin/users"));
        assert!(denies(&prefixes, "/administrator"));
        assert!(denies(&prefixes, "/internal/x"));
        assert!(!denies(&prefixes, "/internal"));
        assert!(!denies(&prefixes, "/"));
        assert!(!denies(&prefixes, "/public/admin"));
    }

    #[test]
    fn refuses_bad_settings_naming_them() {
        assert_eq!(
            Deny::new(config(&["admin"], 403)).expect_err("relative prefix"),
            r#"prefix "admin" does not start with `/`"#
        );
        assert_eq!(
            Deny::new(config(&["/a"], 199)).expect_err("1xx"),
            "`status` 199 is not a final status (200 to 599)"
        );
        assert!(Deny::new(config(&["/a"], 600)).is_err());
        assert!(Deny::new(config(&["/a"], 599)).is_ok());
    }
}

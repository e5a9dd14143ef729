//! add-header in Rust: sets the request and response headers its config lists. (The shipped
//! `plugins/add-header` does the same, and checks the headers more strictly.)

use std::collections::BTreeMap;

use serde::Deserialize;
use wasmgate_sdk::{Action, Plugin, Request, Response, log};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default)]
    request: BTreeMap<String, String>,
    #[serde(default)]
    response: BTreeMap<String, String>,
}

struct AddHeader {
    config: Config,
}

#[wasmgate_sdk::plugin]
impl Plugin for AddHeader {
    type Config = Config;

    fn new(config: Config) -> Result<Self, String> {
        let token = |name: &str| {
            !name.is_empty()
                && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
        };
        if let Some(bad) = config.request.keys().chain(config.response.keys()).find(|name| !token(name)) {
            return Err(format!("header {bad:?}: the name is not an RFC 9110 token"));
        }
        Ok(AddHeader { config })
    }

    fn on_request_headers(&mut self, req: &mut Request) -> Action {
        for (name, value) in &self.config.request {
            if let Err(error) = req.set_header(name, value) {
                log::warn(&format!("request header {name:?} not set: {error}"));
            }
        }
        Action::Continue
    }

    fn on_response_headers(&mut self, _req: &Request, resp: &mut Response) -> Action {
        for (name, value) in &self.config.response {
            if let Err(error) = resp.set_header(name, value) {
                log::warn(&format!("response header {name:?} not set: {error}"));
            }
        }
        Action::Continue
    }
}

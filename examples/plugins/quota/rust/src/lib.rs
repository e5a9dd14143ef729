//! quota in Rust: at most `limit` requests per client in each `window_ms`, counted in the shared
//! store (so across every instance, and across replicas on Redis). The client is the value of
//! the `key_header` header, else its IP address. Answers 429 past the limit, and tells every
//! client what it has left in `x-quota-remaining`.

use std::time::Duration;

use serde::Deserialize;
use wasmgate_sdk::{Action, LocalResponse, Plugin, Request, Response, clock, log, metrics, state, store};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    limit: u64,
    #[serde(default = "default_window_ms")]
    window_ms: u64,
    #[serde(default)]
    key_header: String,
}

fn default_window_ms() -> u64 {
    60_000
}

struct Quota {
    config: Config,
}

#[wasmgate_sdk::plugin]
impl Plugin for Quota {
    type Config = Config;

    fn new(config: Config) -> Result<Self, String> {
        if config.limit < 1 || config.window_ms < 1 {
            return Err("`limit` and `window_ms` must be at least 1".to_owned());
        }
        Ok(Quota { config })
    }

    fn on_request_headers(&mut self, req: &mut Request) -> Action {
        let c = &self.config;
        let keyed = (!c.key_header.is_empty()).then(|| req.header(&c.key_header)).flatten();
        let client = keyed.unwrap_or_else(|| client_ip(&req.client_addr()));
        let window = clock::wall_ms() / c.window_ms;
        let used = match store::increment(
            &format!("{client}:{window}"),
            1,
            Some(Duration::from_millis(c.window_ms)),
        ) {
            Ok(used) => used.max(0) as u64,
            Err(error) => {
                // Fail open: a store outage must not refuse every request.
                log::warn(&format!("quota not counted: {error}"));
                return Action::Continue;
            }
        };
        if used > c.limit {
            metrics::counter("quota_refused", &[], 1);
            let retry_after = ((window + 1) * c.window_ms).saturating_sub(clock::wall_ms()) / 1000 + 1;
            return Action::Respond(
                LocalResponse::new(429)
                    .header("retry-after", retry_after.to_string())
                    .header("x-quota-remaining", "0")
                    .body("quota exceeded\n"),
            );
        }
        // The response phase may run on another instance: the count travels in the request's state.
        state::set("remaining", (c.limit - used).to_string());
        Action::Continue
    }

    fn on_response_headers(&mut self, _req: &Request, resp: &mut Response) -> Action {
        if let Some(remaining) = state::get("remaining")
            && let Err(error) = resp.set_header("x-quota-remaining", remaining)
        {
            log::warn(&format!("x-quota-remaining not set: {error}"));
        }
        Action::Continue
    }
}

/// The address of `ip:port` (or `[ip6]:port`) without the port.
fn client_ip(addr: &str) -> String {
    let ip = addr.rsplit_once(':').map_or(addr, |(ip, _)| ip);
    ip.trim_start_matches('[').trim_end_matches(']').to_owned()
}

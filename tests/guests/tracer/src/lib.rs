//! tracer: a test guest that implements every phase and records, per request, the order the
//! host called them in; at the log phase it puts the trace in the shared store under
//! `trace:<x-trace-id>` so that a test can read it. Request headers steer it:
//!
//! - `x-trace-answer: <phase>`: answers 200 `answered in <phase>` from that phase
//!   (request-headers, request-body, select-upstream, upstream-request, upstream-error,
//!   response-headers);
//! - `x-trace-retry`: `on_upstream_error` asks for a retry;
//! - `x-trace-upper`: both body phases turn the chunks to upper case;
//! - `x-cache-key: K`, `x-cache-part: P`, `x-cache-bypass`: `on_request_headers` sets the cache
//!   key, adds a part to it, or bypasses the cache; `x-cache-ttl-ms: N`: `on_response_headers`
//!   sets the response's TTL; and `on_response_headers` copies the response's `cache-status`
//!   into `x-seen-cache-status`, so a test sees what the plugin saw;
//!
//! At the end of the request body it sets request header `x-body-seen` to the last chunk's
//! length (which the host allows only for a buffered body, the whole body then); trailers from
//! the upstream get `x-traced: 1`.

use serde::Deserialize;
use wasmgate_sdk::{
    Action, BodyAction, ErrorAction, LocalResponse, LogEntry, Plugin, Request, Response, Trailers, Upstream,
    UpstreamChoice, UpstreamFailure, cache, log, state, store,
};

/// The guest's config.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    /// Do nothing in any phase (what the benchmark measures: the bare cost of each phase).
    #[serde(default)]
    quiet: bool,
}

struct Tracer {
    quiet: bool,
}

/// Appends `phase` to this request's trace.
fn mark(phase: &str) {
    let mut trace = state::get("trace").unwrap_or_default();
    if !trace.is_empty() {
        trace.push(b',');
    }
    trace.extend_from_slice(phase.as_bytes());
    if !state::set("trace", trace) {
        log::warn("tracer: the state refused the trace");
    }
}

/// The answer asked for by `x-trace-answer`, if this is the phase.
fn answer(req: &Request, phase: &str) -> Option<LocalResponse> {
    let asked = req.header("x-trace-answer")?;
    (asked == phase)
        .then(|| LocalResponse::new(200).header("x-answered-in", phase).body(format!("answered in {phase}")))
}

/// What `x-cache-*` asks of the cache.
fn steer_cache(req: &Request) {
    if let Some(key) = req.header("x-cache-key") {
        report("set-key", cache::set_key(&key));
    }
    if let Some(part) = req.header("x-cache-part") {
        report("add-key-part", cache::add_key_part(&part));
    }
    if req.header("x-cache-bypass").is_some() {
        report("bypass", cache::bypass());
    }
}

fn report(what: &str, result: Result<(), wasmgate_sdk::EditError>) {
    if let Err(error) = result {
        log::warn(&format!("tracer: {what} refused: {error}"));
    }
}

fn upper(req: &Request, chunk: Vec<u8>) -> BodyAction {
    if req.header("x-trace-upper").is_some() {
        BodyAction::Replace(chunk.to_ascii_uppercase())
    } else {
        BodyAction::Continue
    }
}

#[wasmgate_sdk::plugin]
impl Plugin for Tracer {
    type Config = Config;

    fn new(config: Config) -> Result<Self, String> {
        Ok(Tracer { quiet: config.quiet })
    }

    fn on_request_headers(&mut self, req: &mut Request) -> Action {
        if self.quiet {
            return Action::Continue;
        }
        mark("request-headers");
        steer_cache(req);
        answer(req, "request-headers").map_or(Action::Continue, Action::Respond)
    }

    fn on_request_body(&mut self, req: &mut Request, chunk: Vec<u8>, end: bool) -> BodyAction {
        if self.quiet {
            return BodyAction::Continue;
        }
        if end {
            mark("request-body");
            if let Some(reply) = answer(req, "request-body") {
                return BodyAction::Respond(reply);
            }
            // Refused (read-only) unless the body is buffered: not worth a log line.
            let _ = req.set_header("x-body-seen", chunk.len().to_string());
        }
        upper(req, chunk)
    }

    fn select_upstream(&mut self, req: &Request, _upstream: &Upstream) -> UpstreamChoice {
        if self.quiet {
            return UpstreamChoice::Default;
        }
        mark("select-upstream");
        answer(req, "select-upstream").map_or(UpstreamChoice::Default, UpstreamChoice::Respond)
    }

    fn on_upstream_request(&mut self, req: &mut Request) -> Action {
        if self.quiet {
            return Action::Continue;
        }
        mark("upstream-request");
        answer(req, "upstream-request").map_or(Action::Continue, Action::Respond)
    }

    fn on_upstream_error(&mut self, req: &Request, failure: &UpstreamFailure) -> ErrorAction {
        if self.quiet {
            return ErrorAction::Default;
        }
        mark("upstream-error");
        log::info(&format!(
            "tracer: attempt {} to {} failed: {}",
            failure.attempt, failure.backend, failure.message
        ));
        if let Some(reply) = answer(req, "upstream-error") {
            return ErrorAction::Respond(reply);
        }
        if req.header("x-trace-retry").is_some() { ErrorAction::Retry } else { ErrorAction::Default }
    }

    fn on_response_headers(&mut self, req: &Request, resp: &mut Response) -> Action {
        if self.quiet {
            return Action::Continue;
        }
        mark("response-headers");
        if let Some(ttl) = req.header("x-cache-ttl-ms").and_then(|v| v.parse().ok()) {
            report("set-ttl", cache::set_ttl_ms(ttl));
        }
        if let Some(status) = resp.header("cache-status") {
            report("x-seen-cache-status", resp.set_header("x-seen-cache-status", status));
        }
        answer(req, "response-headers").map_or(Action::Continue, Action::Respond)
    }

    fn on_response_body(&mut self, req: &Request, chunk: Vec<u8>, end: bool) -> BodyAction {
        if self.quiet {
            return BodyAction::Continue;
        }
        if end {
            mark("response-body");
        }
        upper(req, chunk)
    }

    fn on_response_trailers(&mut self, trailers: &mut Trailers) {
        if self.quiet {
            return;
        }
        mark("response-trailers");
        if let Err(error) = trailers.set_header("x-traced", "1") {
            log::warn(&format!("tracer: trailer refused: {error}"));
        }
    }

    fn on_log(&mut self, req: &Request, entry: &LogEntry) {
        if self.quiet {
            return;
        }
        mark("log");
        let Some(id) = req.header("x-trace-id") else { return };
        let trace = state::get("trace").unwrap_or_default();
        let record = format!(
            "{}|status={}|id={}|in={}|out={}|error={}|client={}",
            String::from_utf8_lossy(&trace),
            entry.status,
            req.header("x-request-id").as_deref().unwrap_or("-"),
            entry.bytes_in,
            entry.bytes_out,
            entry.error.as_deref().unwrap_or("-"),
            req.client_identity().as_deref().unwrap_or("-")
        );
        if let Err(error) = store::set(&format!("trace:{id}"), record, None) {
            log::warn(&format!("tracer: cannot store the trace: {error}"));
        }
    }
}

//! contract-0_1_0: a plugin built against `wasmgate:plugin@0.1.0` as released
//! (`wit/released/0.1.0.wit`), with bindings of its own rather than the SDK's. It tags each
//! response `x-contract: 0.1.0` and each upstream request with its route, so a test can see
//! that a gateway on a newer contract loads it and calls its phases.

// The generated exports are `#[export_name]` functions, which the workspace's lints count as
// unsafe code; the SDK's plugins get them from the SDK.
#![allow(unsafe_code)]

mod bindings {
    wit_bindgen::generate!({
        world: "plugin",
        path: "../../../wit/released/0.1.0.wit",
    });
}

use bindings::exports::wasmgate::plugin::handler::Guest;
use bindings::wasmgate::plugin::types::{
    Action, BodyAction, ErrorAction, LogEntry, Phases, UpstreamChoice, UpstreamFailure,
};
use bindings::wasmgate::plugin::{request, response};

struct Contract;

impl Guest for Contract {
    fn init(_config: String) -> Result<Phases, String> {
        Ok(Phases::UPSTREAM_REQUEST | Phases::RESPONSE_HEADERS)
    }

    fn on_request_headers() -> Action {
        Action::Continue
    }

    fn on_request_body(_chunk: Vec<u8>, _end: bool) -> BodyAction {
        BodyAction::Continue
    }

    fn select_upstream() -> UpstreamChoice {
        UpstreamChoice::Default
    }

    fn on_upstream_request() -> Action {
        // A refused edit would show as a missing header in the test.
        let _ = request::set_header("x-contract-route", request::route().as_bytes());
        Action::Continue
    }

    fn on_upstream_error(_failure: UpstreamFailure) -> ErrorAction {
        ErrorAction::Default
    }

    fn on_response_headers() -> Action {
        let _ = response::set_header("x-contract", b"0.1.0");
        Action::Continue
    }

    fn on_response_body(_chunk: Vec<u8>, _end: bool) -> BodyAction {
        BodyAction::Continue
    }

    fn on_response_trailers() {}

    fn on_log(_entry: LogEntry) {}
}

bindings::export!(Contract with_types_in bindings);

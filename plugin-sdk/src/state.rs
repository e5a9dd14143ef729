//! Per-request state kept by the host between the phases of one request.
//!
//! Instances are pooled and shared between requests, and one request's phases may run on
//! different instances, so anything a plugin carries from one phase to a later one goes here,
//! never in its own fields. The store is private to each plugin and lives as long as the
//! request; the host bounds it (at most 64 entries and 64 KiB per plugin and request).
//!
//! ```no_run
//! use wasmgate_sdk::{Request, state};
//!
//! // In `on_request_headers`: remember the path as the client sent it.
//! fn remember(req: &Request) {
//!     let _ = state::set("path", req.path());
//! }
//!
//! // In `on_log`, after other plugins may have rewritten it: read it back.
//! fn recall() -> String {
//!     state::get("path").map(|p| String::from_utf8_lossy(&p).into_owned()).unwrap_or_default()
//! }
//! ```

use crate::__private::bindings::wasmgate::plugin::state as host;

/// The value stored under `key` for this request, if any.
///
/// ```no_run
/// let seen = wasmgate_sdk::state::get("seen").is_some();
/// ```
pub fn get(key: &str) -> Option<Vec<u8>> {
    host::get(key)
}

/// Stores `value` under `key` for this request; `false` if the host's bounds refuse it.
///
/// ```no_run
/// if !wasmgate_sdk::state::set("user", "alice") {
///     wasmgate_sdk::log::warn("per-request state is full");
/// }
/// ```
pub fn set(key: &str, value: impl AsRef<[u8]>) -> bool {
    host::set(key, value.as_ref())
}

/// Removes `key`; `true` if it was there.
///
/// ```no_run
/// let was_there = wasmgate_sdk::state::remove("user");
/// ```
pub fn remove(key: &str) -> bool {
    host::remove(key)
}

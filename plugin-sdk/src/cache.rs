//! Steering the gateway's HTTP cache, on a route with `cache = { ... }`: the key a request is
//! stored under, a bypass, and the TTL of a response. On a route without a cache these succeed
//! and change nothing. The cache's own lookup runs after `on_request_headers`; a hit skips the
//! upstream phases, and `on_response_headers` sees it in the response's `cache-status` header.
//!
//! ```no_run
//! use wasmgate_sdk::{Request, Response, cache};
//!
//! // In on_request_headers: one cached copy per tenant, none for the admin pages.
//! fn steer(req: &Request) {
//!     if req.path().starts_with("/admin") {
//!         let _ = cache::bypass();
//!     } else if let Some(tenant) = req.header("x-tenant") {
//!         let _ = cache::add_key_part(&tenant);
//!     }
//! }
//!
//! // In on_response_headers: keep the price list a minute, whatever the origin says.
//! fn keep(resp: &Response, path: &str) {
//!     if path == "/prices" && resp.status() == 200 {
//!         let _ = cache::set_ttl_ms(60_000);
//!     }
//! }
//! ```

use crate::__private::bindings::wasmgate::plugin::cache as host;
use crate::EditError;

/// In `on_request_headers`: the key the request is looked up and stored under, in place of its
/// host and path-and-query (`example.com/a?b=1`). [`EditError::InvalidValue`] past 1024 bytes
/// or with a control character.
pub fn set_key(key: &str) -> Result<(), EditError> {
    host::set_key(key).map_err(EditError::from)
}

/// In `on_request_headers`: adds `part` to the key, after a `|`.
pub fn add_key_part(part: &str) -> Result<(), EditError> {
    host::add_key_part(part).map_err(EditError::from)
}

/// In `on_request_headers`: the request neither reads nor fills the cache.
pub fn bypass() -> Result<(), EditError> {
    host::bypass().map_err(EditError::from)
}

/// In `on_response_headers`: store the response for `ttl_ms` whatever its own headers say (a
/// `Set-Cookie` is left out of the stored copy), or, with 0, do not store it.
pub fn set_ttl_ms(ttl_ms: u64) -> Result<(), EditError> {
    host::set_ttl(ttl_ms).map_err(EditError::from)
}

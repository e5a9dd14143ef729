//! A route's `cache = { ... }`: how much its HTTP cache holds, the largest response it
//! stores, and what it does for responses that say nothing about their freshness.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{defaults, units};

/// `cache = { ... }` on a route.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CacheConfig {
    /// What the route's cache holds at most: bodies and heads, in bytes.
    #[serde(default = "defaults::cache_max_size", with = "units::size")]
    pub max_size: usize,
    /// Larger responses are passed on and not stored.
    #[serde(default = "defaults::cache_max_object", with = "units::size")]
    pub max_object: usize,
    /// How long a response without `Cache-Control: max-age`, `s-maxage` or `Expires` stays
    /// fresh; unset (the default), such a response is not stored.
    #[serde(default, with = "units::option_duration", skip_serializing_if = "Option::is_none")]
    pub default_ttl: Option<Duration>,
    /// Requests that miss while another request for the same key is on its way upstream wait
    /// this long for it, then go upstream themselves.
    #[serde(default = "defaults::cache_lock_timeout", with = "units::duration")]
    pub lock_timeout: Duration,
    /// A stale response is served while one request refreshes it in the background, for this
    /// long past its freshness, when the response gives no `stale-while-revalidate` of its own.
    #[serde(default, with = "units::duration_or_zero")]
    pub stale_while_revalidate: Duration,
    /// A stale response is served when the upstream fails (an error or a 5xx), for this long
    /// past its freshness, when the response gives no `stale-if-error` of its own.
    #[serde(default, with = "units::duration_or_zero")]
    pub stale_if_error: Duration,
}

impl CacheConfig {
    /// Checks the sizes; the error names the field.
    pub(super) fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.max_size == 0 {
            return Err(("max_size", "a cache of 0 bytes stores nothing; remove `cache` instead".to_owned()));
        }
        if self.max_object == 0 || self.max_object > self.max_size {
            return Err((
                "max_object",
                format!("{} is not between 1 and max_size ({})", self.max_object, self.max_size),
            ));
        }
        // The memory bound weighs entries in u32.
        if self.max_object > u32::MAX as usize / 2 {
            return Err(("max_object", "at most 2 GiB".to_owned()));
        }
        if self.default_ttl.is_some_and(|ttl| ttl.is_zero()) {
            return Err(("default_ttl", "0 stores nothing; leave it unset instead".to_owned()));
        }
        Ok(())
    }
}

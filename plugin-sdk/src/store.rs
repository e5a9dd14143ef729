//! A key-value store shared by every instance of the plugin, on every worker thread.
//!
//! Unlike [`state`](crate::state), which lives as long as one request, entries here outlive
//! requests: counters, caches, rate-limit buckets. Keys are private to the plugin. The store
//! is in memory on one gateway by default and bounded: when full it evicts expired entries,
//! then the oldest. Keys are at most 256 bytes, values at most 64 KiB. A `ttl` of `None` never
//! expires.
//!
//! ```no_run
//! use std::time::Duration;
//! use wasmgate_sdk::store;
//!
//! // Count a client's requests in the current minute.
//! let count = store::increment("hits:10.0.0.7", 1, Some(Duration::from_secs(60)));
//! # let _ = count;
//! ```

use std::time::Duration;

use crate::__private::bindings::wasmgate::plugin::store as host;
use crate::__private::wit;

/// Why the store refused an operation.
///
/// ```
/// use wasmgate_sdk::store::StoreError;
///
/// let e = StoreError::Unavailable("connection refused".to_owned());
/// assert_eq!(e.to_string(), "store unavailable: connection refused");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreError {
    /// The key or value is larger than the store accepts (256-byte keys, 64 KiB values), or
    /// the in-memory store is full for all plugins and this one has no entry of its own left
    /// to drop. Past its own share, a plugin's oldest entries are dropped instead.
    TooLarge,
    /// [`increment`] found a value that is not a decimal 64-bit integer.
    NotAnInteger,
    /// The store could not be reached.
    Unavailable(String),
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreError::TooLarge => f.write_str("key or value too large for the store"),
            StoreError::NotAnInteger => f.write_str("the stored value is not an integer"),
            StoreError::Unavailable(why) => write!(f, "store unavailable: {why}"),
        }
    }
}

impl std::error::Error for StoreError {}

impl From<wit::StoreError> for StoreError {
    fn from(e: wit::StoreError) -> Self {
        match e {
            wit::StoreError::TooLarge => StoreError::TooLarge,
            wit::StoreError::NotAnInteger => StoreError::NotAnInteger,
            wit::StoreError::Unavailable(why) => StoreError::Unavailable(why),
        }
    }
}

fn ttl_ms(ttl: Option<Duration>) -> u64 {
    // A TTL that rounds to 0 ms would mean "never": keep it at least 1 ms.
    ttl.map_or(0, |t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX).max(1))
}

/// The value under `key`, unless absent or expired.
///
/// ```no_run
/// let cached = wasmgate_sdk::store::get("jwks").ok().flatten();
/// # let _ = cached;
/// ```
pub fn get(key: &str) -> Result<Option<Vec<u8>>, StoreError> {
    host::get(key).map_err(Into::into)
}

/// Sets `key` to `value`, expiring after `ttl`.
///
/// ```no_run
/// use std::time::Duration;
/// wasmgate_sdk::store::set("greeting", "hello", Some(Duration::from_secs(5))).unwrap();
/// ```
pub fn set(key: &str, value: impl AsRef<[u8]>, ttl: Option<Duration>) -> Result<(), StoreError> {
    host::set(key, value.as_ref(), ttl_ms(ttl)).map_err(Into::into)
}

/// Removes `key`; `true` if it was there.
///
/// ```no_run
/// let removed = wasmgate_sdk::store::delete("greeting").unwrap_or(false);
/// # let _ = removed;
/// ```
pub fn delete(key: &str) -> Result<bool, StoreError> {
    host::delete(key).map_err(Into::into)
}

/// Adds `delta` to the integer under `key` (absent counts as 0) and returns the result,
/// atomically across instances and threads. A key it creates expires after `ttl`; an existing
/// key keeps its expiry.
///
/// ```no_run
/// use std::time::Duration;
/// let n = wasmgate_sdk::store::increment("visits", 1, Some(Duration::from_secs(60))).unwrap();
/// assert!(n >= 1);
/// ```
pub fn increment(key: &str, delta: i64, ttl: Option<Duration>) -> Result<i64, StoreError> {
    host::increment(key, delta, ttl_ms(ttl)).map_err(Into::into)
}

/// Sets `key` to `new` only if its value is `expected` (`None`: only if absent), atomically;
/// `true` if it did. The entry then expires after `ttl`.
///
/// ```no_run
/// // Claim a lock only if nobody holds it.
/// let mine = wasmgate_sdk::store::compare_and_swap("lock", None, "me", None).unwrap();
/// # let _ = mine;
/// ```
pub fn compare_and_swap(
    key: &str,
    expected: Option<&[u8]>,
    new: impl AsRef<[u8]>,
    ttl: Option<Duration>,
) -> Result<bool, StoreError> {
    host::compare_and_swap(key, expected, new.as_ref(), ttl_ms(ttl)).map_err(Into::into)
}

//! The key-value store plugins share across instances and worker threads: the [`Store`] trait
//! (what a backend offers: get, set with a TTL, delete, atomic increment, compare-and-swap),
//! the limits every backend enforces, and the backends: [`MemoryStore`], bounded and in this
//! process, the default, and [`RedisStore`], for state shared between replicas.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

mod memory;
mod redis;

pub use self::memory::{MemoryShare, MemoryStore, StoreLimits};
pub use self::redis::{RedisSettings, RedisStore};

/// The longest key a plugin may use, in bytes.
pub const MAX_KEY: usize = 256;
/// The largest value a plugin may store, in bytes.
pub const MAX_VALUE: usize = 64 * 1024;

/// Why the store refused an operation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The key or value is over [`MAX_KEY`] or [`MAX_VALUE`].
    #[error("key or value too large")]
    TooLarge,
    /// `increment` found a value that is not a decimal 64-bit integer.
    #[error("the stored value is not an integer")]
    NotAnInteger,
    /// The in-memory store is at its bound for all plugins, and the plugin has no entry of
    /// its own left to drop to make room.
    #[error("the store is full")]
    Full,
    /// A remote store could not be reached.
    #[error("store unavailable: {0}")]
    Unavailable(String),
}

/// What a store operation returns: boxed, so that the trait stays object-safe for remote
/// backends whose operations wait on the network.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// A shared key-value store. Keys arrive already scoped to their plugin. A `ttl` of `None`
/// never expires.
pub trait Store: Send + Sync {
    /// The value under `key`, unless absent or expired.
    fn get<'a>(&'a self, key: &'a [u8]) -> StoreFuture<'a, Option<Vec<u8>>>;
    /// Sets `key` to `value`.
    fn set<'a>(&'a self, key: &'a [u8], value: Vec<u8>, ttl: Option<Duration>) -> StoreFuture<'a, ()>;
    /// Removes `key`; true if it was there.
    fn delete<'a>(&'a self, key: &'a [u8]) -> StoreFuture<'a, bool>;
    /// Adds `delta` to the decimal integer under `key` (absent: 0), atomically; a key it
    /// creates gets `ttl`, an existing one keeps its expiry.
    fn increment<'a>(&'a self, key: &'a [u8], delta: i64, ttl: Option<Duration>) -> StoreFuture<'a, i64>;
    /// Sets `key` to `new` if its value is `expected` (`None`: absent), atomically; true if it
    /// did.
    fn compare_and_swap<'a>(
        &'a self,
        key: &'a [u8],
        expected: Option<&'a [u8]>,
        new: Vec<u8>,
        ttl: Option<Duration>,
    ) -> StoreFuture<'a, bool>;

    /// The backend's name, for metrics: `memory` or `redis`.
    fn backend(&self) -> &'static str;
}

/// The key under which `plugin`'s `key` is stored: the plugin's name, a NUL, then the key, so
/// that no plugin can reach another's entries.
pub fn store_key(plugin: &str, key: &str) -> Vec<u8> {
    let mut scoped = Vec::with_capacity(plugin.len() + 1 + key.len());
    scoped.extend_from_slice(plugin.as_bytes());
    scoped.push(0);
    scoped.extend_from_slice(key.as_bytes());
    scoped
}

/// Checks the sizes every backend enforces.
pub fn check_sizes(key: &[u8], value: Option<&[u8]>) -> Result<(), StoreError> {
    if key.len() > MAX_KEY || value.is_some_and(|v| v.len() > MAX_VALUE) {
        return Err(StoreError::TooLarge);
    }
    Ok(())
}

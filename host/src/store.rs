//! The key-value store plugins share across instances and worker threads: the [`Store`] trait
//! (what a backend offers: get, set with a TTL, delete, atomic increment, compare-and-swap),
//! [`MemoryStore`], the bounded in-memory backend every gateway has by default, and
//! [`RedisStore`], for state shared between replicas.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::hash::{BuildHasher, RandomState};
use std::pin::Pin;
use std::sync::Mutex;
use std::time::{Duration, Instant};

mod redis;

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

/// Shards: operations on different keys rarely meet on one lock.
const SHARDS: usize = 64;

/// The in-memory store: shards of maps, each under its own short lock (never held across an
/// await: every operation is synchronous), bounded in entries. When a shard is full it drops
/// the entry set longest ago; expired entries are dropped when met.
pub struct MemoryStore {
    shards: Box<[Mutex<Shard>]>,
    per_shard: usize,
    hasher: RandomState,
}

#[derive(Default)]
struct Shard {
    entries: HashMap<Box<[u8]>, Entry>,
    /// Keys in the order they were set, with the generation they were set at: an older
    /// generation in the queue is a stale record of a key set again since.
    order: VecDeque<(Box<[u8]>, u64)>,
    generation: u64,
}

struct Entry {
    value: Vec<u8>,
    expires: Option<Instant>,
    generation: u64,
}

impl Entry {
    fn live(&self, now: Instant) -> bool {
        self.expires.is_none_or(|at| at > now)
    }
}

impl Shard {
    fn live(&mut self, key: &[u8], now: Instant) -> Option<&mut Entry> {
        if self.entries.get(key).is_some_and(|e| !e.live(now)) {
            self.entries.remove(key);
        }
        self.entries.get_mut(key)
    }

    fn put(&mut self, key: &[u8], value: Vec<u8>, expires: Option<Instant>, capacity: usize) {
        self.generation += 1;
        let generation = self.generation;
        if !self.entries.contains_key(key) {
            while self.entries.len() >= capacity && self.evict_oldest() {}
        }
        self.entries.insert(key.into(), Entry { value, expires, generation });
        self.order.push_back((key.into(), generation));
        // Stale queue records pile up when the same keys are set again and again; compact.
        if self.order.len() > 2 * capacity.max(8) {
            let entries = &self.entries;
            self.order.retain(|(k, g)| entries.get(k).is_some_and(|e| e.generation == *g));
        }
    }

    /// Drops the entry set longest ago; false if there is none.
    fn evict_oldest(&mut self) -> bool {
        while let Some((key, generation)) = self.order.pop_front() {
            if self.entries.get(&key).is_some_and(|e| e.generation == generation) {
                self.entries.remove(&key);
                return true;
            }
        }
        false
    }
}

impl MemoryStore {
    /// A store of at most about `max_entries` entries.
    pub fn new(max_entries: usize) -> Self {
        MemoryStore {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            per_shard: max_entries.div_ceil(SHARDS).max(1),
            hasher: RandomState::new(),
        }
    }

    fn with_shard<T>(&self, key: &[u8], f: impl FnOnce(&mut Shard, usize) -> T) -> T {
        let index = (self.hasher.hash_one(key) as usize) % SHARDS;
        let mut shard = self.shards[index].lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut shard, self.per_shard)
    }

    /// The number of live and not yet dropped expired entries (for tests and metrics).
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(std::sync::PoisonError::into_inner).entries.len())
            .sum()
    }

    /// True when the store holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn get_now(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        check_sizes(key, None)?;
        let now = Instant::now();
        Ok(self.with_shard(key, |shard, _| shard.live(key, now).map(|e| e.value.clone())))
    }

    fn set_now(&self, key: &[u8], value: Vec<u8>, ttl: Option<Duration>) -> Result<(), StoreError> {
        check_sizes(key, Some(&value))?;
        let expires = ttl.map(|t| Instant::now() + t);
        self.with_shard(key, |shard, capacity| shard.put(key, value, expires, capacity));
        Ok(())
    }

    fn delete_now(&self, key: &[u8]) -> Result<bool, StoreError> {
        check_sizes(key, None)?;
        let now = Instant::now();
        Ok(self.with_shard(key, |shard, _| {
            let live = shard.live(key, now).is_some();
            shard.entries.remove(key);
            live
        }))
    }

    fn increment_now(&self, key: &[u8], delta: i64, ttl: Option<Duration>) -> Result<i64, StoreError> {
        check_sizes(key, None)?;
        let now = Instant::now();
        self.with_shard(key, |shard, capacity| {
            let (current, expires) = match shard.live(key, now) {
                Some(entry) => {
                    let text = std::str::from_utf8(&entry.value).map_err(|_| StoreError::NotAnInteger)?;
                    (text.parse::<i64>().map_err(|_| StoreError::NotAnInteger)?, entry.expires)
                }
                None => (0, ttl.map(|t| now + t)),
            };
            let next = current.saturating_add(delta);
            match shard.entries.get_mut(key) {
                // In place: an increment does not make the key younger for eviction.
                Some(entry) => entry.value = next.to_string().into_bytes(),
                None => shard.put(key, next.to_string().into_bytes(), expires, capacity),
            }
            Ok(next)
        })
    }

    fn compare_and_swap_now(
        &self,
        key: &[u8],
        expected: Option<&[u8]>,
        new: Vec<u8>,
        ttl: Option<Duration>,
    ) -> Result<bool, StoreError> {
        check_sizes(key, Some(&new))?;
        let now = Instant::now();
        self.with_shard(key, |shard, capacity| {
            let current = shard.live(key, now).map(|e| e.value.as_slice());
            if current != expected {
                return Ok(false);
            }
            shard.put(key, new, ttl.map(|t| now + t), capacity);
            Ok(true)
        })
    }
}

impl Store for MemoryStore {
    fn get<'a>(&'a self, key: &'a [u8]) -> StoreFuture<'a, Option<Vec<u8>>> {
        Box::pin(std::future::ready(self.get_now(key)))
    }

    fn set<'a>(&'a self, key: &'a [u8], value: Vec<u8>, ttl: Option<Duration>) -> StoreFuture<'a, ()> {
        Box::pin(std::future::ready(self.set_now(key, value, ttl)))
    }

    fn delete<'a>(&'a self, key: &'a [u8]) -> StoreFuture<'a, bool> {
        Box::pin(std::future::ready(self.delete_now(key)))
    }

    fn increment<'a>(&'a self, key: &'a [u8], delta: i64, ttl: Option<Duration>) -> StoreFuture<'a, i64> {
        Box::pin(std::future::ready(self.increment_now(key, delta, ttl)))
    }

    fn compare_and_swap<'a>(
        &'a self,
        key: &'a [u8],
        expected: Option<&'a [u8]>,
        new: Vec<u8>,
        ttl: Option<Duration>,
    ) -> StoreFuture<'a, bool> {
        Box::pin(std::future::ready(self.compare_and_swap_now(key, expected, new, ttl)))
    }

    fn backend(&self) -> &'static str {
        "memory"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn entries_expire_after_their_ttl() {
        let store = MemoryStore::new(100);
        store.set(b"k", b"v".to_vec(), Some(Duration::from_millis(30))).await.expect("set");
        store.set(b"forever", b"v".to_vec(), None).await.expect("set");
        assert_eq!(store.get(b"k").await.expect("get"), Some(b"v".to_vec()));
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert_eq!(store.get(b"k").await.expect("get"), None);
        assert_eq!(store.get(b"forever").await.expect("get"), Some(b"v".to_vec()));
        assert!(!store.delete(b"k").await.expect("delete"), "an expired key is not there");
    }

    #[tokio::test]
    async fn compare_and_swap_sets_only_over_the_expected_value() {
        let store = MemoryStore::new(100);
        assert!(store.compare_and_swap(b"lock", None, b"a".to_vec(), None).await.expect("cas"));
        assert!(!store.compare_and_swap(b"lock", None, b"b".to_vec(), None).await.expect("cas"));
        assert!(!store.compare_and_swap(b"lock", Some(b"x"), b"b".to_vec(), None).await.expect("cas"));
        assert!(store.compare_and_swap(b"lock", Some(b"a"), b"b".to_vec(), None).await.expect("cas"));
        assert_eq!(store.get(b"lock").await.expect("get"), Some(b"b".to_vec()));
    }

    #[tokio::test]
    async fn increments_are_atomic_across_threads() {
        let store = std::sync::Arc::new(MemoryStore::new(100));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let store = store.clone();
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        store.increment_now(b"n", 1, None).expect("increment");
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("thread");
        }
        assert_eq!(store.increment(b"n", 0, None).await.expect("read"), 4000);
        store.set(b"text", b"abc".to_vec(), None).await.expect("set");
        assert_eq!(store.increment(b"text", 1, None).await, Err(StoreError::NotAnInteger));
    }

    #[tokio::test]
    async fn a_full_store_evicts_the_oldest_entries() {
        let store = MemoryStore::new(SHARDS * 4);
        for i in 0..(SHARDS * 40) {
            store.set(format!("k{i}").as_bytes(), vec![1], None).await.expect("set");
        }
        assert!(store.len() <= SHARDS * 4, "{} entries", store.len());
        let newest = format!("k{}", SHARDS * 40 - 1);
        assert_eq!(store.get(newest.as_bytes()).await.expect("get"), Some(vec![1]));
        assert_eq!(store.get(b"k0").await.expect("get"), None, "the oldest went first");
        assert_eq!(store.set(b"big", vec![0; MAX_VALUE + 1], None).await, Err(StoreError::TooLarge));
    }
}

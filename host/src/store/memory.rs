//! The in-memory store: [`MemoryStore`], the whole of it with its bound across all plugins,
//! and [`MemoryShare`], one plugin's part with its own bound. A plugin over its own bound
//! drops its own oldest entries, never another plugin's; a plugin that meets the bound for all
//! plugins drops its own oldest entries too, and is refused ([`StoreError::Full`]) when it has
//! none left.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, TryLockError};
use std::time::{Duration, Instant};

use super::{MAX_KEY, MAX_VALUE, Store, StoreError, StoreFuture, check_sizes};

/// How much of the in-memory store something may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreLimits {
    /// Entries, live or expired but not yet dropped.
    pub max_entries: usize,
    /// Bytes, counted by [`StoreLimits::cost`].
    pub max_bytes: usize,
}

/// What an entry is counted as besides its key and value: the map's and the queue's records.
const ENTRY_OVERHEAD: usize = 96;

/// Shards of one plugin's share: operations on different keys rarely meet on one lock.
const SHARDS: usize = 16;

impl StoreLimits {
    /// The bytes an entry counts for: its key twice (the map and the eviction queue each hold
    /// one), its value and a fixed overhead.
    pub const fn cost(key: usize, value: usize) -> usize {
        2 * key + value + ENTRY_OVERHEAD
    }

    /// The smallest `max_bytes` of a plugin's share: each shard must hold the largest entry.
    pub const MIN_SHARE_BYTES: usize = SHARDS * Self::cost(MAX_KEY + 64, MAX_VALUE);

    /// One shard's part of these limits.
    fn per_shard(self) -> StoreLimits {
        StoreLimits {
            max_entries: self.max_entries.div_ceil(SHARDS).max(1),
            max_bytes: self.max_bytes / SHARDS,
        }
    }
}

/// The in-memory store of one process: the bound for all plugins, and each plugin's share,
/// which a reload keeps.
pub struct MemoryStore {
    total: Arc<Budget>,
    /// Only met when a plugin is loaded, never on a request.
    shares: Mutex<HashMap<String, Arc<MemoryShare>>>,
}

impl MemoryStore {
    /// A store of at most `total` across all plugins.
    pub fn new(total: StoreLimits) -> Self {
        MemoryStore {
            total: Arc::new(Budget {
                entries: AtomicUsize::new(0),
                bytes: AtomicUsize::new(0),
                limits: total,
            }),
            shares: Mutex::new(HashMap::new()),
        }
    }

    /// Plugin `plugin`'s share, made on first use, its limits set to `limits`; the entries it
    /// holds are kept (a smaller bound drops the oldest as new ones come).
    pub fn share(&self, plugin: &str, limits: StoreLimits) -> Arc<MemoryShare> {
        let mut shares = self.shares.lock().unwrap_or_else(PoisonError::into_inner);
        let share = shares.entry(plugin.to_owned()).or_insert_with(|| {
            Arc::new(MemoryShare {
                shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
                max_entries: AtomicUsize::new(0),
                max_bytes: AtomicUsize::new(0),
                hasher: RandomState::new(),
                total: self.total.clone(),
            })
        });
        let per_shard = limits.per_shard();
        share.max_entries.store(per_shard.max_entries, Ordering::Relaxed);
        share.max_bytes.store(per_shard.max_bytes, Ordering::Relaxed);
        share.clone()
    }

    /// Plugin `plugin`'s share, if it has one.
    pub fn find(&self, plugin: &str) -> Option<Arc<MemoryShare>> {
        self.shares.lock().unwrap_or_else(PoisonError::into_inner).get(plugin).cloned()
    }

    /// Entries and bytes held across all plugins.
    pub fn used(&self) -> (usize, usize) {
        (self.total.entries.load(Ordering::Relaxed), self.total.bytes.load(Ordering::Relaxed))
    }
}

/// What all plugins hold together, against its limits. Atomics rather than a lock: every
/// plugin's writes meet here.
struct Budget {
    entries: AtomicUsize,
    bytes: AtomicUsize,
    limits: StoreLimits,
}

impl Budget {
    /// Counts `entries` and `bytes` more, unless that would pass the limits.
    fn reserve(&self, entries: usize, bytes: usize) -> bool {
        let held_entries = self.entries.fetch_add(entries, Ordering::Relaxed) + entries;
        let held_bytes = self.bytes.fetch_add(bytes, Ordering::Relaxed) + bytes;
        if held_entries > self.limits.max_entries || held_bytes > self.limits.max_bytes {
            self.release(entries, bytes);
            return false;
        }
        true
    }

    /// Counts `entries` and `bytes` more, whatever the limits (a few bytes of an integer
    /// growing in place, or a refused set's old value put back).
    fn force(&self, entries: usize, bytes: usize) {
        self.entries.fetch_add(entries, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    fn release(&self, entries: usize, bytes: usize) {
        self.entries.fetch_sub(entries, Ordering::Relaxed);
        self.bytes.fetch_sub(bytes, Ordering::Relaxed);
    }
}

/// One plugin's part of the store: shards of maps, each under its own short lock (never held
/// across an await: every operation is synchronous), each holding its part of the plugin's
/// bound. Expired entries are dropped when met, or as the oldest when room is needed.
pub struct MemoryShare {
    shards: Box<[Mutex<Shard>]>,
    /// Per shard.
    max_entries: AtomicUsize,
    /// Per shard.
    max_bytes: AtomicUsize,
    hasher: RandomState,
    total: Arc<Budget>,
}

#[derive(Default)]
struct Shard {
    entries: HashMap<Box<[u8]>, Entry>,
    /// Keys in the order they were set, with the generation they were set at: an older
    /// generation in the queue is a stale record of a key set again since.
    order: VecDeque<(Box<[u8]>, u64)>,
    generation: u64,
    /// What the entries count for, by [`StoreLimits::cost`].
    bytes: usize,
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
    fn live(&mut self, key: &[u8], now: Instant, total: &Budget) -> Option<&mut Entry> {
        if self.entries.get(key).is_some_and(|e| !e.live(now)) {
            self.remove(key, total);
        }
        self.entries.get_mut(key)
    }

    fn remove(&mut self, key: &[u8], total: &Budget) -> Option<Entry> {
        let entry = self.entries.remove(key)?;
        let cost = StoreLimits::cost(key.len(), entry.value.len());
        self.bytes -= cost;
        total.release(1, cost);
        Some(entry)
    }

    /// Stores `key`, first dropping the shard's oldest entries until it fits the shard's part
    /// of the plugin's bound, then, while the whole store is full, the plugin's oldest in this
    /// shard or else in another (`elsewhere`). Refused, with nothing changed, when the whole
    /// store is full and nothing of this plugin's is left to drop.
    fn put(
        &mut self,
        key: &[u8],
        value: Vec<u8>,
        expires: Option<Instant>,
        limits: StoreLimits,
        total: &Budget,
        elsewhere: &dyn Fn() -> bool,
    ) -> Result<(), StoreError> {
        let cost = StoreLimits::cost(key.len(), value.len());
        if cost > limits.max_bytes {
            return Err(StoreError::TooLarge);
        }
        // Replacing: the old value's room is the new one's, and it comes back on a refusal.
        let old = self.remove(key, total);
        while self.entries.len() >= limits.max_entries || self.bytes + cost > limits.max_bytes {
            if !self.evict_oldest(total) {
                break;
            }
        }
        while !total.reserve(1, cost) {
            if !self.evict_oldest(total) && !elsewhere() {
                if let Some(old) = old {
                    // Room it just held; a moment over the bound rather than a lost value.
                    let old_cost = StoreLimits::cost(key.len(), old.value.len());
                    self.bytes += old_cost;
                    total.force(1, old_cost);
                    self.entries.insert(key.into(), old);
                }
                return Err(StoreError::Full);
            }
        }
        self.generation += 1;
        let generation = self.generation;
        self.bytes += cost;
        self.entries.insert(key.into(), Entry { value, expires, generation });
        self.order.push_back((key.into(), generation));
        // Stale queue records pile up when the same keys are set again and again; compact.
        if self.order.len() > 2 * self.entries.len().max(8) {
            let entries = &self.entries;
            self.order.retain(|(k, g)| entries.get(k).is_some_and(|e| e.generation == *g));
        }
        Ok(())
    }

    /// Replaces the value of a present entry in place, keeping its age: an increment does not
    /// make the key younger for eviction. The few bytes a longer number takes are counted
    /// without a check.
    fn rewrite(&mut self, key: &[u8], value: Vec<u8>, total: &Budget) {
        let Some(entry) = self.entries.get_mut(key) else { return };
        let (before, after) = (entry.value.len(), value.len());
        entry.value = value;
        if after >= before {
            self.bytes += after - before;
            total.force(0, after - before);
        } else {
            self.bytes -= before - after;
            total.release(0, before - after);
        }
    }

    /// Drops the entry set longest ago; false if there is none.
    fn evict_oldest(&mut self, total: &Budget) -> bool {
        while let Some((key, generation)) = self.order.pop_front() {
            if self.entries.get(&key).is_some_and(|e| e.generation == generation) {
                self.remove(&key, total);
                return true;
            }
        }
        false
    }
}

/// What an operation on one shard may use to make room.
struct Room<'a> {
    /// The shard's part of the plugin's bound.
    limits: StoreLimits,
    total: &'a Budget,
    elsewhere: &'a dyn Fn() -> bool,
}

impl Room<'_> {
    fn put(
        &self,
        shard: &mut Shard,
        key: &[u8],
        value: Vec<u8>,
        expires: Option<Instant>,
    ) -> Result<(), StoreError> {
        shard.put(key, value, expires, self.limits, self.total, self.elsewhere)
    }
}

impl MemoryShare {
    fn with_shard<T>(&self, key: &[u8], f: impl FnOnce(&mut Shard, Room<'_>) -> T) -> T {
        let index = (self.hasher.hash_one(key) as usize) % SHARDS;
        let mut shard = self.shards[index].lock().unwrap_or_else(PoisonError::into_inner);
        let limits = StoreLimits {
            max_entries: self.max_entries.load(Ordering::Relaxed),
            max_bytes: self.max_bytes.load(Ordering::Relaxed),
        };
        f(&mut shard, Room { limits, total: &self.total, elsewhere: &|| self.evict_elsewhere(index) })
    }

    /// Drops the oldest entry of a shard other than `index`, if one is free to lock: a shard
    /// held while waiting on another could deadlock with a writer doing the opposite.
    fn evict_elsewhere(&self, index: usize) -> bool {
        self.shards.iter().enumerate().filter(|(i, _)| *i != index).any(|(_, shard)| {
            let mut shard = match shard.try_lock() {
                Ok(shard) => shard,
                Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
                Err(TryLockError::WouldBlock) => return false,
            };
            shard.evict_oldest(&self.total)
        })
    }

    /// The entries held, live and expired but not yet dropped, and what they count for.
    pub fn used(&self) -> (usize, usize) {
        self.shards.iter().fold((0, 0), |(entries, bytes), s| {
            let s = s.lock().unwrap_or_else(PoisonError::into_inner);
            (entries + s.entries.len(), bytes + s.bytes)
        })
    }

    fn get_now(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        check_sizes(key, None)?;
        let now = Instant::now();
        Ok(self.with_shard(key, |shard, room| shard.live(key, now, room.total).map(|e| e.value.clone())))
    }

    fn set_now(&self, key: &[u8], value: Vec<u8>, ttl: Option<Duration>) -> Result<(), StoreError> {
        check_sizes(key, Some(&value))?;
        let expires = ttl.map(|t| Instant::now() + t);
        self.with_shard(key, |shard, room| room.put(shard, key, value, expires))
    }

    fn delete_now(&self, key: &[u8]) -> Result<bool, StoreError> {
        check_sizes(key, None)?;
        let now = Instant::now();
        Ok(self.with_shard(key, |shard, room| {
            let live = shard.live(key, now, room.total).is_some();
            shard.remove(key, room.total);
            live
        }))
    }

    fn increment_now(&self, key: &[u8], delta: i64, ttl: Option<Duration>) -> Result<i64, StoreError> {
        check_sizes(key, None)?;
        let now = Instant::now();
        self.with_shard(key, |shard, room| {
            let current = match shard.live(key, now, room.total) {
                Some(entry) => {
                    let text = std::str::from_utf8(&entry.value).map_err(|_| StoreError::NotAnInteger)?;
                    Some(text.parse::<i64>().map_err(|_| StoreError::NotAnInteger)?)
                }
                None => None,
            };
            let next = current.unwrap_or(0).saturating_add(delta);
            let value = next.to_string().into_bytes();
            match current {
                Some(_) => shard.rewrite(key, value, room.total),
                None => room.put(shard, key, value, ttl.map(|t| now + t))?,
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
        self.with_shard(key, |shard, room| {
            let current = shard.live(key, now, room.total).map(|e| e.value.as_slice());
            if current != expected {
                return Ok(false);
            }
            room.put(shard, key, new, ttl.map(|t| now + t))?;
            Ok(true)
        })
    }
}

impl Store for MemoryShare {
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

    const ROOMY: StoreLimits = StoreLimits { max_entries: 1 << 20, max_bytes: 1 << 30 };

    fn share(limits: StoreLimits) -> Arc<MemoryShare> {
        MemoryStore::new(ROOMY).share("p", limits)
    }

    #[tokio::test]
    async fn entries_expire_after_their_ttl() {
        let store = share(ROOMY);
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
        let store = share(ROOMY);
        assert!(store.compare_and_swap(b"lock", None, b"a".to_vec(), None).await.expect("cas"));
        assert!(!store.compare_and_swap(b"lock", None, b"b".to_vec(), None).await.expect("cas"));
        assert!(!store.compare_and_swap(b"lock", Some(b"x"), b"b".to_vec(), None).await.expect("cas"));
        assert!(store.compare_and_swap(b"lock", Some(b"a"), b"b".to_vec(), None).await.expect("cas"));
        assert_eq!(store.get(b"lock").await.expect("get"), Some(b"b".to_vec()));
    }

    #[tokio::test]
    async fn increments_are_atomic_across_threads() {
        let store = share(ROOMY);
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
    async fn a_full_share_drops_its_oldest_entries() {
        let store = share(StoreLimits { max_entries: SHARDS * 4, max_bytes: 1 << 30 });
        for i in 0..(SHARDS * 40) {
            store.set(format!("k{i}").as_bytes(), vec![1], None).await.expect("set");
        }
        assert!(store.used().0 <= SHARDS * 4, "{} entries", store.used().0);
        let newest = format!("k{}", SHARDS * 40 - 1);
        assert_eq!(store.get(newest.as_bytes()).await.expect("get"), Some(vec![1]));
        assert_eq!(store.get(b"k0").await.expect("get"), None, "the oldest went first");
        assert_eq!(store.set(b"big", vec![0; MAX_VALUE + 1], None).await, Err(StoreError::TooLarge));
    }

    #[tokio::test]
    async fn a_share_holds_no_more_bytes_than_its_bound() {
        let limits = StoreLimits { max_entries: 1 << 20, max_bytes: StoreLimits::MIN_SHARE_BYTES };
        let store = share(limits);
        for i in 0..2000 {
            store.set(format!("k{i}").as_bytes(), vec![7; 10_000], None).await.expect("set");
        }
        let (entries, bytes) = store.used();
        assert!(bytes <= limits.max_bytes, "{bytes} bytes held over a bound of {}", limits.max_bytes);
        assert!(entries > 50, "only {entries} entries kept");
        // A value of the largest size still fits.
        store.set(b"largest", vec![1; MAX_VALUE], None).await.expect("largest value");
        assert_eq!(store.get(b"largest").await.expect("get").map(|v| v.len()), Some(MAX_VALUE));
    }

    #[tokio::test]
    async fn one_plugin_never_drops_another_plugins_entries() {
        let whole = MemoryStore::new(StoreLimits { max_entries: 100, max_bytes: 1 << 30 });
        let quiet = whole.share("quiet", ROOMY);
        let noisy = whole.share("noisy", ROOMY);
        for i in 0..50 {
            quiet.set(format!("q{i}").as_bytes(), vec![1], None).await.expect("set");
        }
        let mut refused = 0;
        for i in 0..1000 {
            match noisy.set(format!("n{i}").as_bytes(), vec![1], None).await {
                Ok(()) => {}
                Err(StoreError::Full) => refused += 1,
                Err(other) => panic!("unexpected {other:?}"),
            }
        }
        // The noisy plugin filled the rest, then made room from its own entries only (its
        // other shards are free to lock: one thread).
        assert_eq!(refused, 0, "it always had its own entries to drop");
        assert_eq!(whole.used().0, 100);
        assert_eq!(quiet.used().0, 50);
        for i in 0..50 {
            assert_eq!(quiet.get(format!("q{i}").as_bytes()).await.expect("get"), Some(vec![1]));
        }
        // A plugin with nothing of its own to drop is refused, and loses nothing.
        let late = whole.share("late", ROOMY);
        assert_eq!(late.set(b"x", vec![1], None).await, Err(StoreError::Full));
        noisy.delete(b"n999").await.expect("delete");
        late.set(b"x", vec![1], None).await.expect("room was made");
    }

    #[tokio::test]
    async fn counts_go_back_to_zero_when_everything_is_deleted() {
        let whole = MemoryStore::new(ROOMY);
        let store = whole.share("p", ROOMY);
        for i in 0..100 {
            let key = format!("k{i}");
            store.set(key.as_bytes(), vec![1; i], None).await.expect("set");
            store.set(key.as_bytes(), vec![2; 2 * i], None).await.expect("set again");
            store.increment(format!("n{i}").as_bytes(), 999, None).await.expect("increment");
            store.increment(format!("n{i}").as_bytes(), 1, None).await.expect("one more digit");
        }
        for i in 0..100 {
            assert!(store.delete(format!("k{i}").as_bytes()).await.expect("delete"));
            assert!(store.delete(format!("n{i}").as_bytes()).await.expect("delete"));
        }
        assert_eq!(store.used(), (0, 0));
        assert_eq!(whole.used(), (0, 0));
    }
}

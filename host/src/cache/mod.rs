//! The HTTP cache: one per route with `cache = { ... }`. It holds responses in memory within
//! the route's `max_size` (moka: weighed entries, TinyLFU admission, reads without a lock),
//! keyed by a string (host and path, or a plugin's) with one entry per `Vary` variant, and
//! lets one request per key fill a missing entry while the others wait for it. What may be
//! stored and for how long is RFC 9111's ([`policy`]); how a stored response answers a request
//! is its [`Entry`]'s. The proxy decides when to look up, fill and revalidate.

mod entry;
mod fill;
pub(crate) mod policy;

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::uri::PathAndQuery;
use http::{HeaderMap, Method, StatusCode};
use moka::notification::RemovalCause;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::watch;

pub use self::entry::Entry;
pub(crate) use self::entry::Standing;
pub(crate) use self::fill::{Fill, Filling};

use self::policy::{Defaults, Directives, Freshness, NotStored};
use crate::config::{CacheConfig, Coding};
use crate::metrics::{CacheLabels, Metrics, NameLabel};

/// A route's cache; see the module docs.
pub struct HttpCache {
    config: CacheConfig,
    entries: moka::sync::Cache<Arc<str>, Arc<Variants>>,
    /// Keys being filled, by shard: a miss that finds its key here waits on it.
    filling: Box<[Mutex<Shard>]>,
    hasher: std::collections::hash_map::RandomState,
    counts: Counts,
}

/// One shard of the keys being filled, each with what its waiters are woken by.
type Shard = HashMap<Arc<str>, watch::Receiver<()>>;

const SHARDS: usize = 16;
/// Variants kept per key; past it the oldest goes.
const MAX_VARIANTS: usize = 16;

/// The variants stored under one key.
#[derive(Debug)]
pub(crate) struct Variants {
    entries: Vec<Arc<Entry>>,
    weight: u32,
}

/// What a lookup found; [`HttpCache::lookup`].
#[derive(Debug)]
pub(crate) enum Lookup {
    /// An entry that may answer now.
    Fresh(Arc<Entry>),
    /// A stale entry that may answer while one request refreshes it.
    WhileRevalidate(Arc<Entry>),
    /// A stale entry (or one the request will not take as it is): the origin is asked, with
    /// the entry's validators.
    Stale(Arc<Entry>),
    Miss,
}

/// What came of a request's visit to the cache: its metric series and `cache-status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheResult {
    /// A fresh entry answered.
    Hit,
    /// A stale entry answered: while it is refreshed, or because the origin failed.
    Stale,
    /// The origin answered.
    Miss,
    /// The origin said the stale entry is still good (304), and it answered.
    Revalidated,
    /// The request does not use the cache (its method, or a plugin's word).
    Bypass,
}

impl CacheResult {
    /// Every result, in the order of their metric series.
    pub const ALL: [CacheResult; 5] = [
        CacheResult::Hit,
        CacheResult::Stale,
        CacheResult::Miss,
        CacheResult::Revalidated,
        CacheResult::Bypass,
    ];

    /// Its metric label and access-log field.
    pub fn label(self) -> &'static str {
        match self {
            CacheResult::Hit => "hit",
            CacheResult::Stale => "stale",
            CacheResult::Miss => "miss",
            CacheResult::Revalidated => "revalidated",
            CacheResult::Bypass => "bypass",
        }
    }
}

struct Counts {
    results: [Counter; CacheResult::ALL.len()],
    lock_waits: Counter,
    bytes: Gauge,
}

/// Leads the fill of a key: misses for it wait until this is dropped (the entry stored, or
/// the fill abandoned).
pub(crate) struct Leader {
    cache: Arc<HttpCache>,
    key: Arc<str>,
    _done: watch::Sender<()>,
}

impl Drop for Leader {
    fn drop(&mut self) {
        // A panic while holding the lock cannot leave the map inconsistent: keep using it.
        self.cache.shard(&self.key).lock().unwrap_or_else(PoisonError::into_inner).remove(&self.key);
    }
}

/// The turn a miss gets.
pub(crate) enum Turn {
    /// Fill the key.
    Lead(Leader),
    /// Another request is filling it: wait for the end of its fill.
    Wait(watch::Receiver<()>),
}

/// A response the proxy offers the cache, with what the cache needs to know of its request.
pub(crate) struct Offer<'a> {
    pub(crate) key: Arc<str>,
    pub(crate) method: &'a Method,
    /// The request's head as the lookup saw it: the `Vary` values come from it.
    pub(crate) request: &'a HeaderMap,
    /// The request as it went upstream, for background refreshes.
    pub(crate) upstream_request: Option<(PathAndQuery, HeaderMap)>,
    pub(crate) status: StatusCode,
    /// The origin's response head.
    pub(crate) headers: HeaderMap,
    /// How long the origin took to send it.
    pub(crate) took: Duration,
    /// A plugin's TTL: zero for "do not store", any other for "store this long".
    pub(crate) ttl: Option<Duration>,
}

impl HttpCache {
    /// The cache of route `route` (its metric label), as `config` bounds it.
    pub fn new(config: &CacheConfig, route: &Arc<String>, metrics: &Metrics) -> Arc<Self> {
        let name = NameLabel { name: route.clone() };
        let bytes = metrics.cache_bytes.get_or_create(&name).clone();
        let evictions = metrics.cache_evictions.get_or_create(&name).clone();
        let results = CacheResult::ALL.map(|result| {
            metrics
                .cache_requests
                .get_or_create(&CacheLabels { route: route.clone(), result: result.label() })
                .clone()
        });
        let counts = Counts {
            results,
            lock_waits: metrics.cache_lock_waits.get_or_create(&name).clone(),
            bytes: bytes.clone(),
        };
        let entries = moka::sync::Cache::builder()
            .max_capacity(config.max_size as u64)
            .weigher(|_key: &Arc<str>, variants: &Arc<Variants>| variants.weight)
            .expire_after(KeepFor)
            .eviction_listener(move |_key, variants: Arc<Variants>, cause| {
                bytes.dec_by(i64::from(variants.weight));
                if cause == RemovalCause::Size {
                    evictions.inc();
                }
            })
            .build();
        Arc::new(HttpCache {
            config: config.clone(),
            entries,
            filling: (0..SHARDS).map(|_| Mutex::default()).collect(),
            hasher: Default::default(),
            counts,
        })
    }

    /// What bounds it.
    pub fn config(&self) -> &CacheConfig {
        &self.config
    }

    /// Counts a request's result.
    pub(crate) fn count(&self, result: CacheResult) {
        self.counts.results[result as usize].inc();
    }

    /// The variant under `key` for a request with `headers`, and how it may answer by the
    /// request's own `Cache-Control` (`no-cache` and `max-age` make a fresh entry stale).
    pub(crate) fn lookup(&self, key: &str, request: &Directives, headers: &HeaderMap) -> Lookup {
        let Some(variants) = self.entries.get(key) else { return Lookup::Miss };
        let Some(entry) = variants.entries.iter().find(|e| e.answers(headers)) else { return Lookup::Miss };
        let now = Instant::now();
        let too_old = request.no_cache || request.max_age.is_some_and(|max| entry.age(now).as_secs() > max);
        match entry.standing(now) {
            _ if too_old => Lookup::Stale(entry.clone()),
            Standing::Fresh(_) => Lookup::Fresh(entry.clone()),
            Standing::WhileRevalidate(_) => Lookup::WhileRevalidate(entry.clone()),
            Standing::Stale(_) => Lookup::Stale(entry.clone()),
        }
    }

    /// Leads the fill of `key`, or waits for the request that does.
    pub(crate) fn turn(self: &Arc<Self>, key: &Arc<str>) -> Turn {
        let mut filling = self.shard(key).lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(waiting) = filling.get(key) {
            self.counts.lock_waits.inc();
            return Turn::Wait(waiting.clone());
        }
        let (done, waiting) = watch::channel(());
        filling.insert(key.clone(), waiting);
        drop(filling);
        Turn::Lead(Leader { cache: self.clone(), key: key.clone(), _done: done })
    }

    fn shard(&self, key: &str) -> &Mutex<Shard> {
        &self.filling[self.hasher.hash_one(key) as usize % SHARDS]
    }

    /// The freshness a response may be stored with, or why it may not be.
    fn freshness_of(
        &self,
        method: &Method,
        authorized: bool,
        status: StatusCode,
        headers: &HeaderMap,
        ttl: Option<Duration>,
    ) -> Result<Freshness, NotStored> {
        let defaults = Defaults {
            ttl: self.config.default_ttl,
            while_revalidate: self.config.stale_while_revalidate,
            if_error: self.config.stale_if_error,
        };
        match ttl {
            Some(ttl) if ttl.is_zero() => Err(NotStored::Plugin),
            // A plugin's word stands over the response's own, but never for another method.
            Some(ttl) if *method == Method::GET => Ok(Freshness {
                lifetime: ttl,
                while_revalidate: defaults.while_revalidate,
                if_error: defaults.if_error,
                always_revalidate: false,
                never_stale: false,
            }),
            _ => policy::freshness(method, authorized, status, headers, defaults),
        }
    }

    /// Takes `offer` to store once its body has come (see [`Fill`]), or says why not.
    pub(crate) fn admit(
        self: &Arc<Self>,
        offer: Offer<'_>,
        leader: Option<Leader>,
    ) -> Result<Fill, NotStored> {
        let authorized = offer.request.contains_key(http::header::AUTHORIZATION);
        let freshness =
            self.freshness_of(offer.method, authorized, offer.status, &offer.headers, offer.ttl)?;
        if crate::head::content_length(&offer.headers).is_some_and(|n| n > self.config.max_object as u64) {
            return Err(NotStored::TooLarge);
        }
        let mut headers = offer.headers;
        // Only a plugin's TTL gets here with a cookie: the stored copy goes without it.
        headers.remove(http::header::SET_COOKIE);
        let vary = policy::vary_names(&headers)
            .map(|name| {
                let value = entry::variant_value(offer.request, &name);
                (name, value)
            })
            .collect();
        let initial_age = policy::initial_age(&headers, offer.took, SystemTime::now());
        let entry = Entry::new(
            offer.status,
            headers,
            Bytes::new(),
            vary,
            initial_age,
            freshness,
            offer.ttl,
            offer.upstream_request,
        );
        Ok(Fill::new(self.clone(), offer.key, entry, leader))
    }

    /// Stores `entry` under `key`, in place of the variant it answers for.
    pub(crate) fn insert(&self, key: Arc<str>, entry: Entry) -> Arc<Entry> {
        let entry = Arc::new(entry);
        let mut entries: Vec<Arc<Entry>> = match self.entries.get(&key) {
            Some(variants) => variants.entries.iter().filter(|e| e.vary != entry.vary).cloned().collect(),
            None => Vec::new(),
        };
        if entries.len() >= MAX_VARIANTS {
            entries.remove(0);
        }
        entries.push(entry.clone());
        self.put(key, entries);
        entry
    }

    /// Refreshes `stale` with the fields of the origin's 304 (`took` to come): its new
    /// freshness, or none if the 304 says it may no longer be stored.
    pub(crate) fn refresh(
        &self,
        key: Arc<str>,
        stale: &Entry,
        fields: &HeaderMap,
        took: Duration,
    ) -> Option<Arc<Entry>> {
        let headers = stale.updated_head(fields);
        match self.freshness_of(&Method::GET, false, stale.status, &headers, stale.ttl) {
            Ok(freshness) => {
                let initial_age = policy::initial_age(&headers, took, SystemTime::now());
                Some(self.insert(key, stale.refreshed(headers, initial_age, freshness)))
            }
            Err(_) => {
                self.entries.invalidate(&key);
                None
            }
        }
    }

    /// Removes what `purge` names; how many keys went.
    pub fn purge(&self, purge: &Purge) -> usize {
        let purged = match purge {
            Purge::Key(key) => usize::from(self.entries.remove(key.as_str()).is_some()),
            Purge::Prefix(prefix) => {
                let keys: Vec<Arc<Arc<str>>> =
                    self.entries.iter().map(|(k, _)| k).filter(|k| k.starts_with(prefix.as_str())).collect();
                keys.iter().filter(|k| self.entries.remove(&***k).is_some()).count()
            }
        };
        self.entries.run_pending_tasks();
        purged
    }

    /// Keys and bytes held, for the admin API.
    pub fn size(&self) -> (u64, u64) {
        self.entries.run_pending_tasks();
        (self.entries.entry_count(), self.entries.weighted_size())
    }
}

/// A stored response answering a GET whole: a route's compression can keep what it made of
/// the body with it, so the next hit that asks for the same coding is not compressed again.
pub(crate) struct Hit {
    cache: Arc<HttpCache>,
    key: Arc<str>,
    entry: Arc<Entry>,
}

impl Hit {
    pub(crate) fn new(cache: Arc<HttpCache>, key: Arc<str>, entry: Arc<Entry>) -> Self {
        Hit { cache, key, entry }
    }

    /// The stored body.
    pub(crate) fn body(&self) -> &Bytes {
        &self.entry.body
    }

    /// The body compressed with `coding`, if a copy is kept.
    pub(crate) fn encoded(&self, coding: Coding) -> Option<Bytes> {
        self.entry.encoded(coding).cloned()
    }

    /// Keeps `bytes`, the body compressed with `coding`, weighed against the memory bound.
    pub(crate) fn keep(&self, coding: Coding, bytes: Bytes) {
        if self.entry.keep_encoded(coding, bytes) {
            self.cache.reweigh(&self.key, &self.entry);
        }
    }
}

impl HttpCache {
    /// Weighs `key` again, now that `entry` (one of its variants) holds more.
    fn reweigh(&self, key: &Arc<str>, entry: &Arc<Entry>) {
        let Some(variants) = self.entries.get(key) else { return };
        if !variants.entries.iter().any(|e| Arc::ptr_eq(e, entry)) {
            return;
        }
        self.put(key.clone(), variants.entries.clone());
    }

    /// Stores `entries` as the variants of `key`, weighed.
    fn put(&self, key: Arc<str>, entries: Vec<Arc<Entry>>) {
        let weight: usize = entries.iter().map(|e| e.weight()).sum::<usize>() + key.len();
        let weight = u32::try_from(weight).unwrap_or(u32::MAX);
        self.counts.bytes.inc_by(i64::from(weight));
        self.entries.insert(key, Arc::new(Variants { entries, weight }));
    }
}

/// What an admin purge removes.
#[derive(Debug, Clone)]
pub enum Purge {
    /// One key, every variant.
    Key(String),
    /// Every key that starts with this.
    Prefix(String),
}

/// Memory keeps a key as long as its longest-kept variant ([`Entry::keep_for`]).
struct KeepFor;

impl moka::Expiry<Arc<str>, Arc<Variants>> for KeepFor {
    fn expire_after_create(
        &self,
        _key: &Arc<str>,
        variants: &Arc<Variants>,
        _at: Instant,
    ) -> Option<Duration> {
        variants.entries.iter().map(|e| e.keep_for()).max()
    }

    fn expire_after_update(
        &self,
        key: &Arc<str>,
        variants: &Arc<Variants>,
        at: Instant,
        _left: Option<Duration>,
    ) -> Option<Duration> {
        self.expire_after_create(key, variants, at)
    }
}

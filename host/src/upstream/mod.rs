//! Upstream groups: their backends, each backend's health and load, and the group's balancer.
//!
//! A group is immutable once built (a config swap builds new groups); only health flags,
//! request counts and the balancer's counters change while serving, and all are atomics, so
//! picking a backend takes no lock.

mod balance;
mod call;
mod client;
mod dns;
mod error;
mod health;
mod pool;
mod tls;

pub use self::balance::{Policy, hash_key};
pub use self::call::{Call, CallError, MAX_CALL_BODY, call};
pub use self::client::{ClientStats, ConnectLimits, UpstreamBody, UpstreamClient};
pub use self::dns::{Resolved, Resolver};
pub use self::error::{Class, FailureKind, UpstreamError, retry_on_status};
pub use self::health::spawn_health_checks;
pub use crate::config::HashKey;

use self::balance::Balancer;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

/// All configured upstream groups, by name.
#[derive(Default)]
pub struct Upstreams {
    groups: HashMap<Arc<str>, Arc<Group>>,
    clients: HashMap<Arc<str>, Arc<UpstreamClient>>,
}

impl Upstreams {
    /// The groups given, by their names.
    pub fn new(groups: impl IntoIterator<Item = Group>) -> Self {
        Upstreams {
            groups: groups.into_iter().map(|g| (g.name.clone(), Arc::new(g))).collect(),
            clients: HashMap::new(),
        }
    }

    /// With the clients of the groups, by group name.
    pub fn with_clients(mut self, clients: HashMap<Arc<str>, Arc<UpstreamClient>>) -> Self {
        self.clients = clients;
        self
    }

    /// The client of group `name`.
    pub fn client(&self, name: &str) -> Option<Arc<UpstreamClient>> {
        self.clients.get(name).cloned()
    }

    /// A shared empty set, for contexts that have none.
    pub fn empty() -> Arc<Upstreams> {
        static EMPTY: LazyLock<Arc<Upstreams>> = LazyLock::new(Default::default);
        EMPTY.clone()
    }

    /// The group called `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<Group>> {
        self.groups.get(name)
    }

    /// Every group, in no particular order.
    pub fn groups(&self) -> impl Iterator<Item = &Arc<Group>> {
        self.groups.values()
    }
}

/// One upstream group: backends and how to balance over them.
pub struct Group {
    name: Arc<str>,
    backends: Vec<Backend>,
    balancer: Balancer,
    hash_source: Option<HashKey>,
    outlier: Option<OutlierPolicy>,
    /// When no backend is available: pick among all of them anyway (true), or fail (false).
    route_to_all: bool,
    limits: Limits,
}

/// A group's circuit breaker, per backend.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    /// Requests in flight at most; 0 for no limit.
    pub max_requests: u32,
    /// For HTTP/1 groups with a connection limit: requests holding a connection at most
    /// (the limit), and requests waiting for one at most.
    pub queue: Option<(u32, u32)>,
}

/// Why the circuit breaker turned a request away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Saturation {
    /// As many requests in flight as `max_requests` allows.
    Requests,
    /// As many requests waiting for a connection as `max_pending` allows.
    Pending,
    /// No connection came free within the wait allowed.
    Wait,
}

impl Saturation {
    /// The limit that was hit, as the config names it.
    pub fn limit(self) -> &'static str {
        match self {
            Saturation::Requests => "max_requests",
            Saturation::Pending => "max_pending",
            Saturation::Wait => "max_connections",
        }
    }
}

impl Group {
    /// A group of `backends`, balanced by weighted round robin.
    pub fn new(name: impl Into<Arc<str>>, backends: Vec<Backend>) -> Self {
        Group::with_policy(name, backends, Policy::RoundRobin)
    }

    /// A group of `backends`, balanced by `policy`.
    pub fn with_policy(name: impl Into<Arc<str>>, backends: Vec<Backend>, policy: Policy) -> Self {
        let balancer = Balancer::new(policy, &backends);
        Group {
            name: name.into(),
            backends,
            balancer,
            hash_source: None,
            outlier: None,
            route_to_all: false,
            limits: Limits::default(),
        }
    }

    /// Ejects backends that keep failing.
    pub fn with_outlier_detection(mut self, policy: OutlierPolicy) -> Self {
        self.outlier = Some(policy);
        self
    }

    /// When no backend is available, picks among all of them instead of failing.
    pub fn with_route_to_all(mut self, route_to_all: bool) -> Self {
        self.route_to_all = route_to_all;
        self
    }

    /// Sets the circuit breaker.
    pub fn with_limits(mut self, limits: Limits) -> Self {
        if let Some((connections, _)) = limits.queue {
            for backend in &mut self.backends {
                backend.queue = Some(tokio::sync::Semaphore::new(connections as usize));
            }
        }
        self.limits = limits;
        self
    }

    /// Records how an exchange with backend `index` went, for outlier detection: `failed` for
    /// a connect error, a broken exchange or a 5xx answer.
    pub fn record(&self, index: usize, failed: bool) {
        let Some(policy) = self.outlier else { return };
        let backend = &self.backends[index];
        if !failed {
            backend.failures.store(0, Ordering::Relaxed);
            return;
        }
        let failures = backend.failures.fetch_add(1, Ordering::Relaxed) + 1;
        if failures < policy.consecutive_failures || backend.is_ejected() {
            return;
        }
        let ejected = self.backends.iter().filter(|b| b.is_ejected()).count();
        if (ejected + 1) * 100 > policy.max_ejected_percent as usize * self.backends.len() {
            return;
        }
        let n = (backend.ejections.fetch_add(1, Ordering::Relaxed) + 1).min(10);
        let length = policy.base_ejection * n;
        backend.ejected_until.store(clock_ms() + length.as_millis() as u64, Ordering::Relaxed);
        backend.failures.store(0, Ordering::Relaxed);
        tracing::warn!(
            group = %self.name,
            backend = %backend.address,
            failures,
            ejection_ms = length.as_millis() as u64,
            "backend ejected as an outlier"
        );
    }

    /// Where consistent hashing takes each request's key from.
    pub fn with_hash_source(mut self, source: HashKey) -> Self {
        self.hash_source = Some(source);
        self
    }

    /// The request key's source, for consistent hashing.
    pub fn hash_source(&self) -> Option<&HashKey> {
        self.hash_source.as_ref()
    }

    /// The balancing policy.
    pub fn policy(&self) -> Policy {
        self.balancer.policy()
    }

    /// A shared group with no backends.
    pub fn empty() -> Arc<Group> {
        static EMPTY: LazyLock<Arc<Group>> = LazyLock::new(|| Arc::new(Group::new("", Vec::new())));
        EMPTY.clone()
    }

    /// The group's name.
    pub fn name(&self) -> &Arc<str> {
        &self.name
    }

    /// The backends, in config order.
    pub fn backends(&self) -> &[Backend] {
        &self.backends
    }

    /// The index of a healthy backend by the group's policy (`key`: the request's hash key,
    /// for consistent hashing); `None` if none is healthy.
    pub fn pick(&self, key: Option<u64>) -> Option<usize> {
        self.balancer.pick(&self.backends, key).or_else(|| self.fallback())
    }

    /// With every backend out, `route_to_all` spreads requests over all of them anyway (a
    /// health check can be wrong; failing everything certainly is).
    fn fallback(&self) -> Option<usize> {
        if !self.route_to_all || self.backends.is_empty() {
            return None;
        }
        Some(balance::next_any(&self.balancer, self.backends.len()))
    }

    /// Admits a request to backend `index` past the circuit breaker, waiting up to `wait` for
    /// a connection when the group queues, and counts it as in flight until the guard is
    /// dropped.
    pub async fn admit(self: &Arc<Self>, index: usize, wait: Duration) -> Result<InFlight, Saturation> {
        let backend = &self.backends[index];
        let max = self.limits.max_requests;
        if max != 0 && backend.in_flight() >= max {
            return Err(Saturation::Requests);
        }
        if let (Some(queue), Some((_, max_pending))) = (&backend.queue, self.limits.queue) {
            match queue.try_acquire() {
                Ok(permit) => permit.forget(),
                Err(_) => {
                    if backend.pending.fetch_add(1, Ordering::Relaxed) >= max_pending {
                        backend.pending.fetch_sub(1, Ordering::Relaxed);
                        return Err(Saturation::Pending);
                    }
                    let waited = tokio::time::timeout(wait, queue.acquire()).await;
                    backend.pending.fetch_sub(1, Ordering::Relaxed);
                    match waited {
                        Ok(Ok(permit)) => permit.forget(),
                        // The semaphore is never closed.
                        Ok(Err(_)) | Err(_) => return Err(Saturation::Wait),
                    }
                }
            }
        }
        backend.enter();
        Ok(InFlight { group: self.clone(), index })
    }

    /// The index of the healthy backend that owns `key` on the group's hash ring, whatever the
    /// group's policy (a plugin may ask for a hashed pick).
    pub fn pick_hashed(&self, key: u64) -> Option<usize> {
        self.balancer.hashed(&self.backends, key).or_else(|| self.fallback())
    }
}

impl std::fmt::Debug for Group {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Group").field("name", &self.name).field("backends", &self.backends.len()).finish()
    }
}

/// One backend server.
pub struct Backend {
    address: Arc<str>,
    addr: SocketAddr,
    /// `address`, or for a name `address (addr)`: unique in its group, for metrics and plugins.
    label: Arc<str>,
    authority: http::uri::Authority,
    weight: u32,
    healthy: AtomicBool,
    in_flight: AtomicU32,
    /// With a connection limit on HTTP/1: a permit per connection a request may hold.
    queue: Option<tokio::sync::Semaphore>,
    /// Requests waiting on `queue`.
    pending: AtomicU32,
    /// Consecutive failed exchanges (connect errors, 5xx), for outlier detection.
    failures: AtomicU32,
    /// How many times the backend was ejected; each ejection lasts longer.
    ejections: AtomicU32,
    /// Until when (milliseconds on [`clock_ms`]) the backend is ejected; 0 if it is not.
    ejected_until: AtomicU64,
}

impl Backend {
    /// A backend configured as `address` (`host:port`), resolved to `addr`. Backends start
    /// healthy: a health check takes them out.
    pub fn new(address: impl Into<Arc<str>>, addr: SocketAddr, weight: u32) -> Self {
        let authority = http::uri::Authority::try_from(addr.to_string())
            .expect("a socket address is always a valid URI authority");
        let address: Arc<str> = address.into();
        let label = match address.parse::<SocketAddr>() {
            Ok(_) => address.clone(),
            Err(_) => Arc::from(format!("{address} ({addr})")),
        };
        Backend {
            address,
            addr,
            label,
            authority,
            weight,
            healthy: AtomicBool::new(true),
            in_flight: AtomicU32::new(0),
            queue: None,
            pending: AtomicU32::new(0),
            failures: AtomicU32::new(0),
            ejections: AtomicU32::new(0),
            ejected_until: AtomicU64::new(0),
        }
    }

    /// The resolved address as a URI authority, for upstream request targets (connecting to
    /// the resolved address avoids a DNS lookup per new connection).
    pub fn authority(&self) -> &http::uri::Authority {
        &self.authority
    }

    /// `host:port` as configured.
    pub fn address(&self) -> &Arc<str> {
        &self.address
    }

    /// The resolved socket address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The configured address, with the resolved one when the configured one is a name.
    pub fn label(&self) -> &Arc<str> {
        &self.label
    }

    /// Takes over `previous`'s health and outlier state: the same backend in the generation
    /// before (same configured and resolved address).
    pub fn keep_state_of(&self, previous: &Backend) {
        self.healthy.store(previous.healthy.load(Ordering::Relaxed), Ordering::Relaxed);
        self.failures.store(previous.failures.load(Ordering::Relaxed), Ordering::Relaxed);
        self.ejections.store(previous.ejections.load(Ordering::Relaxed), Ordering::Relaxed);
        self.ejected_until.store(previous.ejected_until.load(Ordering::Relaxed), Ordering::Relaxed);
    }

    /// The balancing weight.
    pub fn weight(&self) -> u32 {
        self.weight
    }

    /// False while health checks hold the backend out.
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// True when the balancer may pick it: healthy, and not ejected as an outlier.
    pub fn is_available(&self) -> bool {
        self.is_healthy() && !self.is_ejected()
    }

    /// True while outlier detection holds the backend out.
    pub fn is_ejected(&self) -> bool {
        // Most backends are never ejected: skip the clock read for them.
        let until = self.ejected_until.load(Ordering::Relaxed);
        until != 0 && clock_ms() < until
    }

    /// How many times outlier detection has ejected it.
    pub fn ejections(&self) -> u32 {
        self.ejections.load(Ordering::Relaxed)
    }

    /// Requests sent to this backend and not yet finished.
    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Requests waiting for a connection to this backend under `max_connections`.
    pub fn pending(&self) -> u32 {
        self.pending.load(Ordering::Relaxed)
    }

    fn enter(&self) {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
    }

    fn leave(&self) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
    }

    /// Records a health-check verdict; true if it changed.
    pub fn set_healthy(&self, healthy: bool) -> bool {
        self.healthy.swap(healthy, Ordering::Relaxed) != healthy
    }
}

/// Milliseconds since the process's first call: a monotonic clock that fits an atomic.
fn clock_ms() -> u64 {
    static START: LazyLock<Instant> = LazyLock::new(Instant::now);
    START.elapsed().as_millis() as u64
}

/// Passive outlier detection for a group: consecutive failures eject a backend for
/// `base × n` (n: how often it was ejected, at most 10), never more than `max_percent` of
/// the group at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutlierPolicy {
    /// Consecutive failures (connect errors or 5xx) that eject a backend.
    pub consecutive_failures: u32,
    /// The first ejection's length.
    pub base_ejection: Duration,
    /// The largest share of the group, in percent, that may be ejected at once.
    pub max_ejected_percent: u32,
}

/// A request in flight to one backend of a group, counted (for least-request balancing) until
/// the guard is dropped; see [`Group::admit`].
pub struct InFlight {
    group: Arc<Group>,
    index: usize,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let backend = &self.group.backends[self.index];
        backend.leave();
        if let Some(queue) = &backend.queue {
            queue.add_permits(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(policy: OutlierPolicy) -> Group {
        let backends = (1..=4)
            .map(|i| Backend::new(format!("b{i}"), SocketAddr::from(([127, 0, 0, 1], 9000 + i)), 1))
            .collect();
        Group::new("g", backends).with_outlier_detection(policy)
    }

    fn ejected_for_ms(group: &Group, index: usize) -> u64 {
        group.backends[index].ejected_until.load(Ordering::Relaxed).saturating_sub(clock_ms())
    }

    #[test]
    fn each_ejection_lasts_longer_and_at_most_the_share_is_ejected() {
        let base = Duration::from_secs(10);
        let g =
            group(OutlierPolicy { consecutive_failures: 2, base_ejection: base, max_ejected_percent: 50 });
        g.record(0, true);
        g.record(0, false);
        g.record(0, true);
        assert!(!g.backends[0].is_ejected(), "a success in between resets the count");
        g.record(0, true);
        assert!(g.backends[0].is_ejected());
        let first = ejected_for_ms(&g, 0);
        assert!((9_000..=10_000).contains(&first), "{first} ms");
        // Back early (as if the time had passed), then ejected again: twice as long.
        g.backends[0].ejected_until.store(0, Ordering::Relaxed);
        g.record(0, true);
        g.record(0, true);
        let second = ejected_for_ms(&g, 0);
        assert!((19_000..=20_000).contains(&second), "{second} ms");
        // It grows to ten times the base, and no further.
        for _ in 0..12 {
            g.backends[0].ejected_until.store(0, Ordering::Relaxed);
            g.record(0, true);
            g.record(0, true);
        }
        let longest = ejected_for_ms(&g, 0);
        assert!((99_000..=100_000).contains(&longest), "{longest} ms");
        // Half the group may be out at once, never more.
        for index in [1, 2] {
            g.record(index, true);
            g.record(index, true);
        }
        let out: Vec<bool> = g.backends.iter().map(Backend::is_ejected).collect();
        assert_eq!(out, [true, true, false, false]);
    }
}

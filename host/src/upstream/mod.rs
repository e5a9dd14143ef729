//! Upstream groups: their backends, each backend's health, and the group's balancer.
//!
//! A group is immutable once built (a config swap builds new groups); only health flags and the
//! balancer's counter change while serving, and both are atomics, so picking a backend takes no
//! lock.

mod client;
mod health;

pub use self::client::{UpstreamBody, UpstreamClient, UpstreamError};
pub use self::health::spawn_health_checks;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock};

/// All configured upstream groups, by name.
#[derive(Default)]
pub struct Upstreams {
    groups: HashMap<Arc<str>, Arc<Group>>,
}

impl Upstreams {
    /// The groups given, by their names.
    pub fn new(groups: impl IntoIterator<Item = Group>) -> Self {
        Upstreams { groups: groups.into_iter().map(|g| (g.name.clone(), Arc::new(g))).collect() }
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
    /// Backend indices interleaved by weight (smooth weighted round robin, precomputed).
    schedule: Vec<u32>,
    next: AtomicUsize,
}

impl Group {
    /// A group of `backends`, balanced by weighted round robin.
    pub fn new(name: impl Into<Arc<str>>, backends: Vec<Backend>) -> Self {
        let schedule = smooth_schedule(&backends);
        Group { name: name.into(), backends, schedule, next: AtomicUsize::new(0) }
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

    /// The index of the next healthy backend in weighted round-robin order; `None` if none is
    /// healthy.
    pub fn pick(&self) -> Option<usize> {
        let len = self.schedule.len();
        if len == 0 {
            return None;
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        (0..len).map(|i| self.schedule[(start + i) % len] as usize).find(|&i| self.backends[i].is_healthy())
    }
}

/// Expands weights into one cycle of smooth weighted round robin (as nginx orders it), so
/// that heavy backends are spread through the cycle rather than served in bursts.
fn smooth_schedule(backends: &[Backend]) -> Vec<u32> {
    let total: u64 = backends.iter().map(|b| u64::from(b.weight)).sum();
    let mut current = vec![0i64; backends.len()];
    let mut schedule = Vec::with_capacity(total as usize);
    for _ in 0..total {
        let mut best = 0;
        for (i, b) in backends.iter().enumerate() {
            current[i] += i64::from(b.weight);
            if current[i] > current[best] {
                best = i;
            }
        }
        current[best] -= total as i64;
        schedule.push(best as u32);
    }
    schedule
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
    authority: http::uri::Authority,
    weight: u32,
    healthy: AtomicBool,
}

impl Backend {
    /// A backend configured as `address` (`host:port`), resolved to `addr`. Backends start
    /// healthy: a health check takes them out.
    pub fn new(address: impl Into<Arc<str>>, addr: SocketAddr, weight: u32) -> Self {
        let authority = http::uri::Authority::try_from(addr.to_string())
            .expect("a socket address is always a valid URI authority");
        Backend { address: address.into(), addr, authority, weight, healthy: AtomicBool::new(true) }
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

    /// The balancing weight.
    pub fn weight(&self) -> u32 {
        self.weight
    }

    /// False while health checks hold the backend out.
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// Records a health-check verdict; true if it changed.
    pub fn set_healthy(&self, healthy: bool) -> bool {
        self.healthy.swap(healthy, Ordering::Relaxed) != healthy
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backend(port: u16, weight: u32) -> Backend {
        Backend::new(format!("127.0.0.1:{port}"), SocketAddr::from(([127, 0, 0, 1], port)), weight)
    }

    #[test]
    fn round_robin_follows_weights_and_skips_unhealthy() {
        let g = Group::new("g", vec![backend(1, 1), backend(2, 3)]);
        let mut counts = [0; 2];
        for _ in 0..400 {
            counts[g.pick().expect("a backend")] += 1;
        }
        assert_eq!(counts, [100, 300]);
        g.backends()[1].set_healthy(false);
        assert!((0..10).all(|_| g.pick() == Some(0)));
        g.backends()[0].set_healthy(false);
        assert!(g.pick().is_none());
    }

    #[test]
    fn smooth_schedule_interleaves() {
        let s = smooth_schedule(&[backend(1, 5), backend(2, 1), backend(3, 1)]);
        assert_eq!(s, vec![0, 0, 1, 0, 2, 0, 0]);
    }
}

//! Balancing: how a group picks one of its healthy backends. Each policy's tables are built
//! once per group (a config swap builds new ones); while serving only atomics change, so a
//! pick takes no lock, and costs O(1) (round robin, random, least request) or O(log n)
//! (consistent hashing). Unhealthy backends are skipped by every policy.

use std::cell::Cell;
use std::hash::{BuildHasher, Hasher};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::Backend;
use crate::config::{BalanceSetting, HashKey};

/// How a group spreads requests over its backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Policy {
    /// Smooth weighted round robin.
    #[default]
    RoundRobin,
    /// Weighted random.
    Random,
    /// The less busy of two weighted random picks (power of two choices).
    LeastRequest,
    /// Ketama consistent hashing of a request key (1024 points per unit of weight); requests
    /// without a key are balanced round robin.
    ConsistentHash,
}

impl From<BalanceSetting> for Policy {
    fn from(setting: BalanceSetting) -> Policy {
        match setting {
            BalanceSetting::RoundRobin => Policy::RoundRobin,
            BalanceSetting::Random => Policy::Random,
            BalanceSetting::LeastRequest => Policy::LeastRequest,
            BalanceSetting::ConsistentHash => Policy::ConsistentHash,
        }
    }
}

// The config names the part of a request a consistent-hashing group hashes; reading it from
// a request is the balancer's.
impl HashKey {
    /// The hashed key of a request; `None` when the request has no such key.
    pub fn hash(&self, request: &http::request::Parts, client: std::net::IpAddr) -> Option<u64> {
        match self {
            HashKey::ClientAddr => Some(match client {
                std::net::IpAddr::V4(ip) => hash_key(&ip.octets()),
                std::net::IpAddr::V6(ip) => hash_key(&ip.octets()),
            }),
            HashKey::Path => Some(hash_key(request.uri.path().as_bytes())),
            HashKey::Header(name) => request.headers.get(name).map(|v| hash_key(v.as_bytes())),
            HashKey::Cookie(name) => request
                .headers
                .get_all(http::header::COOKIE)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(';'))
                .filter_map(|pair| pair.trim().split_once('='))
                .find(|(n, _)| n == name)
                .map(|(_, value)| hash_key(value.as_bytes())),
        }
    }
}

/// Points on the hash ring per unit of weight. Ketama used 160; with 1024 a backend's share
/// of keys stays within about 1% of its weight's share (160 gives about 2% deviation).
const POINTS_PER_WEIGHT: u32 = 1024;

/// A group's balancing state.
pub(crate) struct Balancer {
    policy: Policy,
    /// Backend indices interleaved by weight, one round-robin cycle.
    schedule: Vec<u32>,
    next: AtomicUsize,
    /// Running totals of the weights, for weighted random picks.
    cumulative: Vec<u64>,
    /// The hash ring, built on first use (a plugin may ask any group for a hashed pick).
    ring: OnceLock<Vec<(u64, u32)>>,
}

impl Balancer {
    pub(crate) fn new(policy: Policy, backends: &[Backend]) -> Self {
        let cumulative = backends
            .iter()
            .scan(0u64, |total, b| {
                *total += u64::from(b.weight());
                Some(*total)
            })
            .collect();
        Balancer {
            policy,
            schedule: smooth_schedule(backends),
            next: AtomicUsize::new(0),
            cumulative,
            ring: OnceLock::new(),
        }
    }

    pub(crate) fn policy(&self) -> Policy {
        self.policy
    }

    /// A healthy backend by the group's policy; `key` is the request's hash key, if any.
    pub(crate) fn pick(&self, backends: &[Backend], key: Option<u64>) -> Option<usize> {
        match (self.policy, key) {
            (Policy::RoundRobin, _) | (Policy::ConsistentHash, None) => self.round_robin(backends),
            (Policy::Random, _) => self.random(backends),
            (Policy::LeastRequest, _) => self.least_request(backends),
            (Policy::ConsistentHash, Some(key)) => self.hashed(backends, key),
        }
    }

    fn round_robin(&self, backends: &[Backend]) -> Option<usize> {
        let len = self.schedule.len();
        if len == 0 {
            return None;
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        (0..len).map(|i| self.schedule[(start + i) % len] as usize).find(|&i| backends[i].is_available())
    }

    fn random(&self, backends: &[Backend]) -> Option<usize> {
        let total = *self.cumulative.last()?;
        // A few weighted draws; if they all land on unhealthy backends, scan from the last.
        let mut index = 0;
        for _ in 0..4 {
            let r = random_u64() % total;
            index = self.cumulative.partition_point(|&c| c <= r);
            if backends[index].is_available() {
                return Some(index);
            }
        }
        (0..backends.len()).map(|i| (index + i) % backends.len()).find(|&i| backends[i].is_available())
    }

    fn least_request(&self, backends: &[Backend]) -> Option<usize> {
        let a = self.random(backends)?;
        let b = self.random(backends)?;
        // Fewer requests in flight per unit of weight wins; cross-multiplied to stay integral.
        let load = |i: usize| u64::from(backends[i].in_flight());
        let (wa, wb) = (u64::from(backends[a].weight()), u64::from(backends[b].weight()));
        Some(if load(b) * wa < load(a) * wb { b } else { a })
    }

    /// The first healthy backend clockwise from `key` on the ring.
    pub(crate) fn hashed(&self, backends: &[Backend], key: u64) -> Option<usize> {
        let ring = self.ring.get_or_init(|| ketama_ring(backends));
        if ring.is_empty() {
            return None;
        }
        let start = ring.partition_point(|&(point, _)| point < key);
        (0..ring.len())
            .map(|i| ring[(start + i) % ring.len()].1 as usize)
            .find(|&i| backends[i].is_available())
    }
}

/// The next backend in round-robin order, healthy or not (the all-unhealthy fallback).
pub(crate) fn next_any(balancer: &Balancer, len: usize) -> usize {
    balancer.next.fetch_add(1, Ordering::Relaxed) % len
}

/// One cycle of smooth weighted round robin (as nginx orders it): heavy backends are spread
/// through the cycle rather than served in bursts.
fn smooth_schedule(backends: &[Backend]) -> Vec<u32> {
    let total: i64 = backends.iter().map(|b| i64::from(b.weight())).sum();
    let mut current = vec![0i64; backends.len()];
    let mut schedule = Vec::with_capacity(usize::try_from(total).unwrap_or(0));
    for _ in 0..total {
        let mut best = 0;
        for (i, b) in backends.iter().enumerate() {
            current[i] += i64::from(b.weight());
            if current[i] > current[best] {
                best = i;
            }
        }
        current[best] -= total;
        schedule.push(best as u32);
    }
    schedule
}

fn ketama_ring(backends: &[Backend]) -> Vec<(u64, u32)> {
    let mut ring = Vec::new();
    for (i, b) in backends.iter().enumerate() {
        for point in 0..POINTS_PER_WEIGHT * b.weight() {
            // Points depend only on the backend's label (its address, and for a name the address
            // it resolved to), so a backend keeps its arcs of the ring when others come or go.
            let mut h = Fnv64::default();
            h.write(b.label().as_bytes());
            h.write(&point.to_le_bytes());
            ring.push((mix(h.finish()), i as u32));
        }
    }
    ring.sort_unstable();
    ring
}

/// A stable 64-bit hash of a request key (the same across processes and restarts, so every
/// replica sends a key to the same backend).
pub fn hash_key(key: &[u8]) -> u64 {
    let mut h = Fnv64::default();
    h.write(key);
    mix(h.finish())
}

/// FNV-1a, 64 bits: stable and cheap; [`mix`] fixes its weak high bits.
struct Fnv64(u64);

impl Default for Fnv64 {
    fn default() -> Self {
        Fnv64(0xcbf2_9ce4_8422_2325)
    }
}

impl Hasher for Fnv64 {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// The splitmix64 finaliser: spreads every input bit over the output.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A random number in [0, 1).
pub(crate) fn random_fraction() -> f64 {
    (random_u64() >> 11) as f64 / (1u64 << 53) as f64
}

/// A per-thread xorshift generator, seeded from the OS-keyed hasher: random enough to spread
/// load, and no shared state between workers.
fn random_u64() -> u64 {
    thread_local! {
        static STATE: Cell<u64> = Cell::new(std::hash::RandomState::new().build_hasher().finish() | 1);
    }
    STATE.with(|s| {
        let mut x = s.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        s.set(x);
        x
    })
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::*;
    use crate::config::HashKeySetting;

    fn backends(weights: &[u32]) -> Vec<Backend> {
        weights
            .iter()
            .enumerate()
            .map(|(i, &w)| {
                let port = 9000 + i as u16;
                Backend::new(format!("10.0.0.{i}:{port}"), SocketAddr::from(([10, 0, 0, i as u8], port)), w)
            })
            .collect()
    }

    fn shares(policy: Policy, weights: &[u32], picks: usize, key: impl Fn(usize) -> Option<u64>) -> Vec<f64> {
        let list = backends(weights);
        let b = Balancer::new(policy, &list);
        let mut counts = vec![0usize; list.len()];
        for n in 0..picks {
            counts[b.pick(&list, key(n)).expect("a healthy backend")] += 1;
        }
        counts.iter().map(|&c| c as f64 / picks as f64).collect()
    }

    #[test]
    fn weights_one_to_three_hold_within_two_percent() {
        for policy in [Policy::RoundRobin, Policy::Random, Policy::LeastRequest] {
            let s = shares(policy, &[1, 3], 100_000, |_| None);
            assert!((s[0] - 0.25).abs() < 0.02 && (s[1] - 0.75).abs() < 0.02, "{policy:?}: {s:?}");
        }
        let s = shares(Policy::ConsistentHash, &[1, 3], 100_000, |n| Some(hash_key(&n.to_le_bytes())));
        assert!((s[0] - 0.25).abs() < 0.02 && (s[1] - 0.75).abs() < 0.02, "ketama: {s:?}");
    }

    #[test]
    fn unhealthy_backends_are_skipped_by_every_policy() {
        let list = backends(&[1, 1, 1]);
        list[1].set_healthy(false);
        for policy in [Policy::RoundRobin, Policy::Random, Policy::LeastRequest, Policy::ConsistentHash] {
            let b = Balancer::new(policy, &list);
            for n in 0..1000u64 {
                assert_ne!(b.pick(&list, Some(hash_key(&n.to_le_bytes()))), Some(1), "{policy:?}");
            }
        }
        for b in &list {
            b.set_healthy(false);
        }
        assert_eq!(Balancer::new(Policy::Random, &list).pick(&list, None), None);
    }

    #[test]
    fn ketama_moves_about_one_nth_of_the_keys_when_a_backend_leaves() {
        let n = 5;
        let all = backends(&[1; 5]);
        let fewer: Vec<Backend> = backends(&[1; 5]).into_iter().take(n - 1).collect();
        let (before, after) =
            (Balancer::new(Policy::ConsistentHash, &all), Balancer::new(Policy::ConsistentHash, &fewer));
        let keys = 20_000u64;
        let mut moved = 0;
        for k in 0..keys {
            let key = hash_key(&k.to_le_bytes());
            let (a, b) = (before.hashed(&all, key).expect("pick"), after.hashed(&fewer, key).expect("pick"));
            if a != n - 1 {
                assert_eq!(a, b, "a key on a backend that stayed must not move");
            } else {
                moved += 1;
            }
        }
        let share = moved as f64 / keys as f64;
        assert!((share - 1.0 / n as f64).abs() < 0.05, "moved {share}");
    }

    #[test]
    fn least_request_prefers_the_idle_backend() {
        let list = backends(&[1, 1]);
        let b = Balancer::new(Policy::LeastRequest, &list);
        for _ in 0..10 {
            list[0].enter();
        }
        let picks: usize = (0..1000).filter(|_| b.pick(&list, None) == Some(1)).count();
        // Only when both draws land on the busy backend is it chosen: about a quarter of the time.
        assert!(picks > 650, "idle backend picked {picks} of 1000");
    }

    #[test]
    fn smooth_schedule_interleaves() {
        assert_eq!(smooth_schedule(&backends(&[5, 1, 1])), vec![0, 0, 1, 0, 2, 0, 0]);
    }

    #[test]
    fn hash_sources_read_the_request() {
        let (parts, ()) = http::Request::get("/p?q=1")
            .header("x-user", "alice")
            .header("cookie", "a=1; session=xyz")
            .body(())
            .expect("request")
            .into_parts();
        let ip = "192.0.2.1".parse().expect("ip");
        let parse = |src: &str| HashKeySetting::try_from(src.to_owned()).ok().map(|s| s.key().clone());
        let key = |src: &str| parse(src).expect("source").hash(&parts, ip);
        assert_eq!(key("header:x-user"), Some(hash_key(b"alice")));
        assert_eq!(key("cookie:session"), Some(hash_key(b"xyz")));
        assert_eq!(key("path"), Some(hash_key(b"/p")));
        assert_eq!(key("client-addr"), Some(hash_key(&[192, 0, 2, 1])));
        assert_eq!(key("header:x-missing"), None);
        assert_eq!(parse("body"), None);
    }

    #[test]
    fn hash_keys_are_stable() {
        assert_eq!(hash_key(b"user-42"), hash_key(b"user-42"));
        assert_ne!(hash_key(b"user-42"), hash_key(b"user-43"));
    }
}

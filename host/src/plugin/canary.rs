//! A plugin's canary: a second version of the plugin that runs for a share of clients, picked
//! per request by a hash of the client's key and kept for the rest of the request, and that
//! rolls itself back, with no reload, when too many of its calls fault.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use super::{Plugin, PluginError, PluginSpec};
use crate::config::{CanaryConfig, HashKey, HashKeySetting};

/// Put after the plugin's name to name its canary in logs, metrics and spans.
pub const SUFFIX: &str = "@canary";

/// The resolution of `weight`: a hundredth of a percent.
const SLOTS: u64 = 10_000;

/// What the config says of a canary, ready to load.
#[derive(Debug, Clone, PartialEq)]
pub struct CanarySpec {
    /// The candidate, named `NAME@canary`, with the plugin's limits.
    pub spec: PluginSpec,
    /// Of [`SLOTS`] client hashes, those below this run the canary.
    share: u64,
    /// What keeps a client on one version; a request without it goes by its IP.
    key: HashKey,
    max_fault_rate: f64,
    window: Duration,
    min_calls: u64,
}

impl CanarySpec {
    /// The canary of `plugin` (`spec`) as `config` describes it, its path already resolved.
    pub(crate) fn new(
        plugin: &PluginSpec,
        config: &CanaryConfig,
        path: std::path::PathBuf,
        json: String,
    ) -> Self {
        // The config check refused a key that does not parse.
        let key =
            HashKeySetting::try_from(config.key.clone()).map_or(HashKey::ClientAddr, |k| k.key().clone());
        let spec = PluginSpec {
            name: format!("{}{SUFFIX}", plugin.name),
            path,
            config_json: json,
            // The pin is the plugin's file's; a candidate is a new file.
            sha256: None,
            canary: None,
            ..plugin.clone()
        };
        CanarySpec {
            spec,
            share: (config.weight * (SLOTS as f64 / 100.0)).round() as u64,
            key,
            max_fault_rate: config.max_fault_rate,
            window: config.window,
            min_calls: config.min_calls,
        }
    }
}

/// A loaded canary and its fault count.
pub struct Canary {
    pub(crate) plugin: Plugin,
    spec: CanarySpec,
    guard: Guard,
}

impl Canary {
    pub(crate) fn new(plugin: Plugin, spec: CanarySpec) -> Self {
        Canary { plugin, guard: Guard::new(spec.window), spec }
    }

    /// Whether the canary runs for this client: false for every client once rolled back.
    pub(crate) fn picks(&self, ex: &super::Exchange) -> bool {
        if self.guard.rolled_back.load(Ordering::Relaxed) {
            return false;
        }
        let ip = ex.client_addr.ip();
        let hash = self.spec.key.hash(&ex.request, ip).or_else(|| HashKey::ClientAddr.hash(&ex.request, ip));
        hash.is_some_and(|hash| hash % SLOTS < self.spec.share)
    }

    /// Counts one call of the canary; rolls it back, logging why, when its faults pass the
    /// threshold. Pool waits and a store that is down are the gateway's load, not the
    /// canary's faults.
    pub(crate) fn record<T>(&self, result: &Result<T, PluginError>) {
        let fault = matches!(result, Err(error) if !error.is_overload());
        let Some((faults, calls)) = self.guard.record(fault, &self.spec) else {
            return;
        };
        let reason = format!(
            "{faults} of its last {calls} calls faulted, over max_fault_rate {} (window {}s)",
            self.spec.max_fault_rate,
            self.spec.window.as_secs_f64()
        );
        tracing::error!(
            plugin = %self.plugin.name,
            faults,
            calls,
            last_error = %result.as_ref().err().map(ToString::to_string).unwrap_or_default(),
            "canary rolled back: {reason}; every request runs the plugin's own version again"
        );
        *self.guard.reason.lock().unwrap_or_else(PoisonError::into_inner) = Some(reason);
    }

    /// The canary's share of clients, in percent.
    pub fn weight(&self) -> f64 {
        self.spec.share as f64 * 100.0 / SLOTS as f64
    }

    /// Why it was rolled back, once it was.
    pub fn rolled_back(&self) -> Option<String> {
        self.guard.reason.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// The loaded candidate.
    pub fn plugin(&self) -> &Plugin {
        &self.plugin
    }
}

/// Faults and calls in the current window, counted without a lock: a call that lands just
/// as a window turns may be counted in either, which a rate over a window can bear.
struct Guard {
    started: Instant,
    window_ms: u64,
    /// The window the counts are of, as a count of windows since `started`.
    window: AtomicU64,
    calls: AtomicU64,
    faults: AtomicU64,
    rolled_back: AtomicBool,
    reason: Mutex<Option<String>>,
}

impl Guard {
    fn new(window: Duration) -> Self {
        Guard {
            started: Instant::now(),
            window_ms: u64::try_from(window.as_millis()).unwrap_or(u64::MAX).max(1),
            window: AtomicU64::new(0),
            calls: AtomicU64::new(0),
            faults: AtomicU64::new(0),
            rolled_back: AtomicBool::new(false),
            reason: Mutex::new(None),
        }
    }

    /// Counts a call; `Some((faults, calls))` for the one call that trips the rollback.
    fn record(&self, fault: bool, spec: &CanarySpec) -> Option<(u64, u64)> {
        let now = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX) / self.window_ms;
        let seen = self.window.load(Ordering::Relaxed);
        if now != seen
            && self.window.compare_exchange(seen, now, Ordering::Relaxed, Ordering::Relaxed).is_ok()
        {
            self.calls.store(0, Ordering::Relaxed);
            self.faults.store(0, Ordering::Relaxed);
        }
        let calls = self.calls.fetch_add(1, Ordering::Relaxed) + 1;
        if !fault {
            return None;
        }
        let faults = self.faults.fetch_add(1, Ordering::Relaxed) + 1;
        let over = calls >= spec.min_calls && faults as f64 > spec.max_fault_rate * calls as f64;
        (over && !self.rolled_back.swap(true, Ordering::Relaxed)).then_some((faults, calls))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(max_fault_rate: f64, min_calls: u64) -> CanarySpec {
        let config = CanaryConfig {
            path: "v2.wasm".into(),
            weight: 12.5,
            config: None,
            key: "header:x-user".to_owned(),
            max_fault_rate,
            window: Duration::from_secs(60),
            min_calls,
        };
        CanarySpec::new(&PluginSpec::new("p", "v1.wasm"), &config, "v2.wasm".into(), "{}".to_owned())
    }

    #[test]
    fn names_the_candidate_and_keeps_the_plugins_limits() {
        let canary = spec(0.05, 20);
        assert_eq!((canary.spec.name.as_str(), canary.share), ("p@canary", 1_250));
        assert_eq!(canary.key, HashKey::Header(http::HeaderName::from_static("x-user")));
        assert_eq!(canary.spec.deadline, PluginSpec::new("p", "v1.wasm").deadline);
    }

    #[test]
    fn trips_once_past_the_rate_and_only_with_enough_calls() {
        let spec = spec(0.25, 8);
        let guard = Guard::new(spec.window);
        // Faults before `min_calls` do not count yet.
        for _ in 0..3 {
            assert_eq!(guard.record(true, &spec), None);
        }
        for _ in 0..4 {
            assert_eq!(guard.record(false, &spec), None);
        }
        // The eighth call: 4 faults of 8 is over 25%.
        assert_eq!(guard.record(true, &spec), Some((4, 8)));
        assert_eq!(guard.record(true, &spec), None, "rolled back once");
        assert!(guard.rolled_back.load(Ordering::Relaxed));
    }

    #[test]
    fn a_healthy_canary_is_never_rolled_back() {
        let spec = spec(0.05, 20);
        let guard = Guard::new(spec.window);
        for i in 0..1_000 {
            assert_eq!(guard.record(i % 50 == 0, &spec), None);
        }
    }

    #[test]
    fn a_tenth_of_the_clients_run_a_tenth_canary() {
        let under = (0..10_000)
            .filter(|i| crate::upstream::hash_key(format!("user-{i}").as_bytes()) % SLOTS < 1_000)
            .count();
        assert!((900..1_100).contains(&under), "{under} of 10000 keys under 10%");
    }
}

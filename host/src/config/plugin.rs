//! `[plugins.NAME]`: which component a plugin is, its config, and its limits, plus the two
//! choices the plugin runtime takes straight from here ([`FailurePolicy`], [`Isolation`]).

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{Check, ConfigError, defaults, units};
use crate::store::StoreLimits;

/// `[plugins.NAME]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PluginConfig {
    /// The `.wasm` component, relative to the config file's folder unless absolute.
    pub path: PathBuf,
    /// The component's SHA-256 (hex): a file with other content is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// Handed to the plugin's `init` as JSON.
    #[serde(default)]
    pub config: toml::Table,
    /// How long one call may run.
    #[serde(default = "defaults::deadline", with = "units::duration")]
    pub deadline: Duration,
    /// How long making an instance may take: instantiation, `init` and each `init-route`.
    #[serde(default = "defaults::init_deadline", with = "units::duration")]
    pub init_deadline: Duration,
    /// An instance is replaced after this many calls; never if unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_calls: Option<u64>,
    /// An instance whose linear memory passed this share of `memory_limit` is replaced.
    #[serde(default = "defaults::retire_memory")]
    pub retire_memory: f64,
    /// Memory limit of one instance (`"64MiB"`).
    #[serde(default = "defaults::memory_limit", with = "units::size")]
    pub memory_limit: usize,
    /// Instances kept in the plugin's pool.
    #[serde(default = "defaults::instances")]
    pub instances: usize,
    /// How long a call waits for a free instance.
    #[serde(default = "defaults::pool_wait", with = "units::duration")]
    pub pool_wait: Duration,
    /// `fail-closed` (default) or `fail-open`.
    #[serde(default)]
    pub failure: FailurePolicy,
    /// `pooled` (default) or `per-request`.
    #[serde(default)]
    pub isolation: Isolation,
    /// Entries the plugin's share of the in-memory store holds at most.
    #[serde(default = "defaults::plugin_store_max_entries")]
    pub store_max_entries: usize,
    /// Bytes the plugin's share of the in-memory store holds at most.
    #[serde(default = "defaults::plugin_store_max_bytes", with = "units::size")]
    pub store_max_bytes: usize,
    /// The largest body the plugin may hand the host in one value: a local response's body,
    /// or a body chunk it replaces.
    #[serde(default = "defaults::max_local_body", with = "units::size")]
    pub max_local_body: usize,
    /// Log lines per second the plugin may write (bursts of as many); the rest are dropped
    /// and counted.
    #[serde(default = "defaults::log_rate")]
    pub log_rate: u32,
    /// A second version that runs for a share of clients, rolled back on faults.
    #[serde(default)]
    pub canary: Option<CanaryConfig>,
}

/// `[plugins.NAME] canary = { path = "v2.wasm", weight = 5 }`: a candidate version of the
/// plugin that runs for `weight` percent of clients (sticky by `key`) with the plugin's limits
/// and its share of the store, and stops getting traffic when its faults pass
/// `max_fault_rate` of its calls over a `window`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CanaryConfig {
    /// The candidate `.wasm` component.
    pub path: PathBuf,
    /// Percent of clients that run it, 0 to 100 (fractions allowed: `0.5`).
    pub weight: f64,
    /// Its `init` config; the plugin's own when not set.
    #[serde(default)]
    pub config: Option<toml::Table>,
    /// What keeps a client on one version: `client-addr` (its IP), `header:NAME` or
    /// `cookie:NAME` (a request without it goes by its IP), as a group's `hash_key` reads it.
    #[serde(default = "defaults::canary_key")]
    pub key: String,
    /// The share of its calls that may fault (trap, deadline, memory, a bad value) within a
    /// window before it is rolled back.
    #[serde(default = "defaults::canary_max_fault_rate")]
    pub max_fault_rate: f64,
    /// The window faults are counted over.
    #[serde(default = "defaults::canary_window", with = "units::duration")]
    pub window: Duration,
    /// Calls a window needs before its fault rate counts.
    #[serde(default = "defaults::canary_min_calls")]
    pub min_calls: u64,
}

impl CanaryConfig {
    fn validate(&self) -> Result<(), (&'static str, String)> {
        if !(0.0..=100.0).contains(&self.weight) {
            return Err(("weight", format!("{} is not a percentage from 0 to 100", self.weight)));
        }
        if !(0.0..=1.0).contains(&self.max_fault_rate) {
            return Err(("max_fault_rate", format!("{} is not a share from 0 to 1", self.max_fault_rate)));
        }
        if self.window.is_zero() {
            return Err(("window", "must be more than 0".to_owned()));
        }
        if self.min_calls == 0 {
            return Err(("min_calls", "must be at least 1".to_owned()));
        }
        match super::HashKeySetting::try_from(self.key.clone()) {
            Ok(_) => Ok(()),
            Err(_) => Err(("key", format!("`{}` is not client-addr, header:NAME or cookie:NAME", self.key))),
        }
    }
}

impl PluginConfig {
    /// Checks plugin `name` against the runtime's `max_memory`.
    pub(super) fn validate(&self, name: &str, max_memory: usize, at: &Check<'_>) -> Result<(), ConfigError> {
        let field = |f: &str| format!("plugins.{name}.{f}");
        // Names go into metric labels and logs, and `NAME@canary` names a canary.
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)) {
            return Err(
                at.invalid(format!("plugins.{name}"), "a plugin's name is letters, digits, `-`, `_` and `.`")
            );
        }
        if let Some(hash) = &self.sha256
            && (hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()))
        {
            return Err(
                at.invalid(field("sha256"), format!("{hash:?} is not a SHA-256: 64 hexadecimal digits"))
            );
        }
        if self.instances == 0 {
            return Err(at.invalid(field("instances"), "must be at least 1"));
        }
        if self.deadline.is_zero() {
            return Err(at.invalid(field("deadline"), "must be more than 0"));
        }
        if self.init_deadline.is_zero() {
            return Err(at.invalid(field("init_deadline"), "must be more than 0"));
        }
        if self.max_calls == Some(0) {
            return Err(at.invalid(field("max_calls"), "must be at least 1; leave it unset for no limit"));
        }
        if !(self.retire_memory > 0.0 && self.retire_memory <= 1.0) {
            return Err(at.invalid(
                field("retire_memory"),
                format!("{} is not a share of memory_limit above 0 and at most 1", self.retire_memory),
            ));
        }
        if self.store_max_entries == 0 {
            return Err(at.invalid(field("store_max_entries"), "must be at least 1"));
        }
        if self.store_max_bytes < StoreLimits::MIN_SHARE_BYTES {
            return Err(at.invalid(
                field("store_max_bytes"),
                format!(
                    "{} bytes is too small: at least {} bytes, so that the largest value fits",
                    self.store_max_bytes,
                    StoreLimits::MIN_SHARE_BYTES
                ),
            ));
        }
        if self.max_local_body == 0 {
            return Err(at.invalid(field("max_local_body"), "must be at least 1"));
        }
        if self.log_rate == 0 {
            return Err(at.invalid(field("log_rate"), "must be at least 1"));
        }
        if let Some(canary) = &self.canary {
            canary.validate().map_err(|(f, reason)| at.invalid(field(&format!("canary.{f}")), reason))?;
        }
        if self.memory_limit > max_memory {
            return Err(at.invalid(
                field("memory_limit"),
                format!("{} bytes is above runtime.max_memory ({max_memory} bytes)", self.memory_limit),
            ));
        }
        Ok(())
    }
}

/// What to do with a request when its plugin fails: `failure = "fail-closed" | "fail-open"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FailurePolicy {
    /// Fail the request: 500 for a plugin fault, 503 when the pool is exhausted.
    #[default]
    FailClosed,
    /// Skip the plugin and carry on as if it had said "continue".
    FailOpen,
}

/// How instances are shared between requests: `isolation = "pooled" | "per-request"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Isolation {
    /// Instances are pooled and reused across calls.
    #[default]
    Pooled,
    /// Every call gets a fresh instance, dropped after: nothing can leak between requests, at
    /// the cost of an instantiation per call.
    PerRequest,
}

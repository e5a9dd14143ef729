//! `[plugins.NAME]`: which component a plugin is, its config, and its limits, plus the two
//! choices the plugin runtime takes straight from here ([`FailurePolicy`], [`Isolation`]).

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{Check, ConfigError, defaults, units};

/// `[plugins.NAME]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PluginConfig {
    /// The `.wasm` component, relative to the config file's folder unless absolute.
    pub path: PathBuf,
    /// Handed to the plugin's `init` as JSON.
    #[serde(default)]
    pub config: toml::Table,
    /// How long one call may run.
    #[serde(default = "defaults::deadline", with = "units::duration")]
    pub deadline: Duration,
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
}

impl PluginConfig {
    /// Checks plugin `name` against the runtime's `max_memory`.
    pub(super) fn validate(&self, name: &str, max_memory: usize, at: &Check<'_>) -> Result<(), ConfigError> {
        let field = |f: &str| format!("plugins.{name}.{f}");
        if self.instances == 0 {
            return Err(at.invalid(field("instances"), "must be at least 1"));
        }
        if self.deadline.is_zero() {
            return Err(at.invalid(field("deadline"), "must be more than 0"));
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

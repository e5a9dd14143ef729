//! What can go wrong loading or calling a plugin; every error names the plugin and, for calls,
//! the phase.

use std::path::PathBuf;
use std::time::Duration;

use super::Phase;

/// A plugin failed to load, refused its config, or failed one call.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    /// The `.wasm` file could not be read.
    #[error("plugin `{plugin}`: cannot read {}: {source}", path.display())]
    Read {
        /// The plugin's name.
        plugin: String,
        /// The `.wasm` file, as the config names it.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The file is not a component that fits the `wasmgate:plugin` world.
    #[error("plugin `{plugin}`: {} is not a usable wasmgate plugin: {reason}", path.display())]
    Invalid {
        /// The plugin's name.
        plugin: String,
        /// The `.wasm` file, as the config names it.
        path: PathBuf,
        /// The compiler's or linker's complaint.
        reason: String,
    },
    /// The file's content is not the one `sha256` pins.
    #[error(
        "plugin `{plugin}`: {} has SHA-256 {actual}, not the {expected} that `plugins.{plugin}.sha256` pins",
        path.display()
    )]
    Pinned {
        /// The plugin's name.
        plugin: String,
        /// The `.wasm` file, as the config names it.
        path: PathBuf,
        /// The hash the config pins.
        expected: String,
        /// The file's hash.
        actual: String,
    },
    /// Its pool would take more from the pooling allocator than the runtime reserves.
    #[error("plugin `{plugin}`: {reason}")]
    Capacity {
        /// The plugin's name.
        plugin: String,
        /// What it needs and what there is.
        reason: String,
    },
    /// The plugin's `init` refused its configuration.
    #[error("plugin `{plugin}` rejected its config: {message}")]
    ConfigRejected {
        /// The plugin's name.
        plugin: String,
        /// The plugin's own message.
        message: String,
    },
    /// The plugin refused a route's own config for it.
    #[error("plugin `{plugin}` rejected the config of route `{route}`: {message}")]
    RouteConfigRejected {
        /// The plugin's name.
        plugin: String,
        /// The route whose config it refused.
        route: String,
        /// The plugin's own message.
        message: String,
    },
    /// A new instance could not be made (allocator slots used up, or a fault in `init`).
    #[error("plugin `{plugin}`: cannot create an instance: {reason}")]
    Instantiate {
        /// The plugin's name.
        plugin: String,
        /// What wasmtime said.
        reason: String,
    },
    /// The guest trapped (a panic, an out-of-bounds access, a stack overflow…).
    #[error("plugin `{plugin}` trapped in {phase}: {reason}")]
    Trap {
        /// The plugin's name.
        plugin: String,
        /// The phase being called.
        phase: Phase,
        /// The trap, as wasmtime describes it.
        reason: String,
    },
    /// The guest ran past its epoch deadline and was stopped.
    #[error("plugin `{plugin}` ran past its {}ms deadline in {phase}", deadline.as_millis())]
    Deadline {
        /// The plugin's name.
        plugin: String,
        /// The phase being called.
        phase: Phase,
        /// The plugin's `deadline` setting.
        deadline: Duration,
    },
    /// The guest asked for more memory than its limit.
    #[error("plugin `{plugin}` passed its memory limit of {limit} bytes in {phase}")]
    MemoryLimit {
        /// The plugin's name.
        plugin: String,
        /// The phase being called.
        phase: Phase,
        /// The limit in bytes.
        limit: usize,
    },
    /// Every pooled instance stayed busy for the whole wait.
    #[error("plugin `{plugin}`: no free instance within {}ms in {phase}", wait.as_millis())]
    PoolExhausted {
        /// The plugin's name.
        plugin: String,
        /// The phase being called.
        phase: Phase,
        /// How long the call waited.
        wait: Duration,
    },
    /// A store call found the store unreachable, and `[store] when_unavailable` is
    /// `fail-closed`: the request is answered 503 whatever the plugin's own failure policy.
    #[error("plugin `{plugin}`: the store is unavailable in {phase}: {reason}")]
    StoreUnavailable {
        /// The plugin's name.
        plugin: String,
        /// The phase being called.
        phase: Phase,
        /// What the store said.
        reason: String,
    },
    /// The guest returned a value the host refuses (a bad status, header, or upstream choice).
    #[error("plugin `{plugin}` returned an invalid {what} in {phase}: {reason}")]
    InvalidValue {
        /// The plugin's name.
        plugin: String,
        /// The phase being called.
        phase: Phase,
        /// What kind of value.
        what: &'static str,
        /// Why it is refused.
        reason: String,
    },
}

impl PluginError {
    /// The plugin the error is about.
    pub fn plugin(&self) -> &str {
        match self {
            PluginError::Read { plugin, .. }
            | PluginError::Invalid { plugin, .. }
            | PluginError::Pinned { plugin, .. }
            | PluginError::Capacity { plugin, .. }
            | PluginError::ConfigRejected { plugin, .. }
            | PluginError::RouteConfigRejected { plugin, .. }
            | PluginError::Instantiate { plugin, .. }
            | PluginError::Trap { plugin, .. }
            | PluginError::Deadline { plugin, .. }
            | PluginError::MemoryLimit { plugin, .. }
            | PluginError::PoolExhausted { plugin, .. }
            | PluginError::StoreUnavailable { plugin, .. }
            | PluginError::InvalidValue { plugin, .. } => plugin,
        }
    }

    /// True when the plugin had no capacity, or the store it needs is down (rather than
    /// misbehaving): a 503, not a 500.
    pub fn is_overload(&self) -> bool {
        matches!(
            self,
            PluginError::PoolExhausted { .. }
                | PluginError::Instantiate { .. }
                | PluginError::StoreUnavailable { .. }
        )
    }

    /// A short stable name for the kind of failure, for headers, logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            PluginError::Read { .. } => "plugin-read",
            PluginError::Invalid { .. } => "plugin-invalid",
            PluginError::Pinned { .. } => "plugin-pinned",
            PluginError::Capacity { .. } => "plugin-capacity",
            PluginError::ConfigRejected { .. } | PluginError::RouteConfigRejected { .. } => "plugin-config",
            PluginError::Instantiate { .. } => "plugin-instantiate",
            PluginError::Trap { .. } => "plugin-trap",
            PluginError::Deadline { .. } => "plugin-deadline",
            PluginError::MemoryLimit { .. } => "plugin-memory",
            PluginError::PoolExhausted { .. } => "plugin-pool-exhausted",
            PluginError::StoreUnavailable { .. } => "store-unavailable",
            PluginError::InvalidValue { .. } => "plugin-invalid-value",
        }
    }
}

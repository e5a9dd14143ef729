//! The process-wide sections: `[server]` (workers, connection timeouts and limits),
//! `[[listeners]]` with their TLS, `[runtime]` (the plugin runtime's shared settings) and
//! `[store]` (where the plugins' shared store lives).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{Check, ConfigError, PluginConfig, defaults, units};

/// `[server]`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Tokio worker threads; 0 means one per core.
    pub workers: usize,
    /// How long a client has to send a complete request head (and its first byte).
    #[serde(with = "units::duration")]
    pub header_read_timeout: Duration,
    /// How long an idle keep-alive connection stays open.
    #[serde(with = "units::duration")]
    pub idle_timeout: Duration,
    /// How long a response write may wait for a client that reads nothing.
    #[serde(with = "units::duration")]
    pub write_timeout: Duration,
    /// On SIGTERM or Ctrl-C, how long in-flight requests have to finish.
    #[serde(with = "units::duration")]
    pub grace_period: Duration,
    /// Open client connections at most; past it the gateway stops accepting until one closes.
    pub max_connections: usize,
    /// The largest request head (request line and fields); past it, 431.
    #[serde(with = "units::size")]
    pub max_request_head: usize,
    /// The most fields a request head may have; past it, 431.
    pub max_request_fields: usize,
    /// The longest field line (`name: value`); past it, 431.
    #[serde(with = "units::size")]
    pub max_field_line: usize,
    /// The longest request target; past it, 414.
    #[serde(with = "units::size")]
    pub max_request_target: usize,
    /// The Unix socket `wasmgate run --upgrade` takes the listening sockets over through;
    /// unset means one under the runtime dir named after the config file
    /// (`$XDG_RUNTIME_DIR/wasmgate/upgrade-<hash>.sock`, else under `/tmp/wasmgate-<uid>/`).
    pub upgrade_socket: Option<PathBuf>,
    /// Reload by itself when the config file or a plugin's `.wasm` changes.
    pub watch: bool,
    /// How often watched files are looked at; a change is taken once a second look finds the
    /// file unchanged, so a file being written is not read half-way.
    #[serde(with = "units::duration")]
    pub watch_interval: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            workers: 0,
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            write_timeout: Duration::from_secs(60),
            grace_period: Duration::from_secs(30),
            max_connections: 10_000,
            max_request_head: 64 * 1024,
            max_request_fields: 100,
            max_field_line: 8 * 1024,
            max_request_target: 8 * 1024,
            upgrade_socket: None,
            watch: false,
            watch_interval: Duration::from_secs(1),
        }
    }
}

impl ServerConfig {
    pub(super) fn validate(&self, at: &Check<'_>) -> Result<(), ConfigError> {
        for (field, value) in [
            ("header_read_timeout", self.header_read_timeout),
            ("idle_timeout", self.idle_timeout),
            ("write_timeout", self.write_timeout),
            ("watch_interval", self.watch_interval),
        ] {
            if value.is_zero() {
                return Err(at.invalid(format!("server.{field}"), "must be more than 0"));
            }
        }
        if self.max_connections == 0 {
            return Err(at.invalid("server.max_connections", "must be at least 1"));
        }
        // hyper's HTTP/1 parser keeps at least an 8 KiB buffer.
        if self.max_request_head < 8 * 1024 {
            return Err(at.invalid("server.max_request_head", "must be at least 8KiB"));
        }
        for (field, value) in [
            ("max_request_fields", self.max_request_fields),
            ("max_field_line", self.max_field_line),
            ("max_request_target", self.max_request_target),
        ] {
            if value == 0 {
                return Err(at.invalid(format!("server.{field}"), "must be at least 1"));
            }
        }
        Ok(())
    }
}

/// `[runtime]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RuntimeSection {
    /// Where compiled plugins are cached; unset means the plugin runtime's default,
    /// `$XDG_CACHE_HOME/wasmgate` (else `$HOME/.cache/wasmgate`).
    pub cache_dir: Option<PathBuf>,
    /// False compiles every plugin at every start.
    pub cache: bool,
    /// Instance slots the pooling allocator reserves across all plugins.
    pub instance_slots: u32,
    /// The largest memory limit any plugin may set.
    #[serde(with = "units::size")]
    pub max_memory: usize,
    /// Entries the in-memory store holds at most, across all plugins.
    pub store_max_entries: usize,
    /// Bytes the in-memory store holds at most, across all plugins.
    #[serde(with = "units::size")]
    pub store_max_bytes: usize,
}

impl Default for RuntimeSection {
    fn default() -> Self {
        RuntimeSection {
            cache_dir: None,
            cache: true,
            instance_slots: defaults::INSTANCE_SLOTS,
            max_memory: defaults::MAX_MEMORY,
            store_max_entries: defaults::STORE_LIMITS.max_entries,
            store_max_bytes: defaults::STORE_LIMITS.max_bytes,
        }
    }
}

impl RuntimeSection {
    pub(super) fn validate(
        &self,
        plugins: &BTreeMap<String, PluginConfig>,
        at: &Check<'_>,
    ) -> Result<(), ConfigError> {
        // Every pooled instance holds a slot; each plugin may also be replacing one instance
        // and making its per-request ones.
        if self.store_max_entries == 0 {
            return Err(at.invalid("runtime.store_max_entries", "must be at least 1"));
        }
        if self.store_max_bytes < crate::store::StoreLimits::MIN_SHARE_BYTES {
            return Err(at.invalid(
                "runtime.store_max_bytes",
                format!("must be at least {} bytes", crate::store::StoreLimits::MIN_SHARE_BYTES),
            ));
        }
        // A canary has a pool of its own, as large.
        let needed: usize =
            plugins.values().map(|p| (p.instances + 1) * (1 + usize::from(p.canary.is_some()))).sum();
        if needed > self.instance_slots as usize {
            return Err(at.invalid(
                "runtime.instance_slots",
                format!(
                    "{} is too few: the plugins need {needed} (their instances, plus one each)",
                    self.instance_slots
                ),
            ));
        }
        Ok(())
    }
}

/// `[store]`: where the store plugins share lives.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct StoreSection {
    /// `memory` (per process, the default) or `redis` (shared by every replica using it).
    pub backend: StoreBackend,
    /// With `redis`: `redis://[user:password@]host:port[/db]`, or `rediss://` for TLS.
    pub url: Option<String>,
    /// With `redis`: put before every key, so that several gateways can share one Redis.
    pub key_prefix: String,
    /// With `redis`: multiplexed connections, used in turn.
    pub pool_size: usize,
    /// With `redis`: how long one command, or one connection attempt, may take.
    #[serde(with = "units::duration")]
    pub command_timeout: Duration,
    /// With `redis`: what a store call does while Redis cannot be reached.
    pub when_unavailable: WhenUnavailable,
    /// With `rediss://`: a PEM file of the CAs the server's certificate must chain to; the
    /// webpki roots when unset.
    pub ca: Option<PathBuf>,
}

impl Default for StoreSection {
    fn default() -> Self {
        StoreSection {
            backend: StoreBackend::Memory,
            url: None,
            key_prefix: "wasmgate:".to_owned(),
            pool_size: 2,
            command_timeout: Duration::from_millis(250),
            when_unavailable: WhenUnavailable::FailOpen,
            ca: None,
        }
    }
}

/// `[store] backend`.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum StoreBackend {
    /// In this process's memory.
    #[default]
    Memory,
    /// In Redis.
    Redis,
}

/// `[store] when_unavailable`.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum WhenUnavailable {
    /// The call returns the `unavailable` error and the plugin decides.
    #[default]
    FailOpen,
    /// The request is answered 503 (`x-wasmgate-error: store-unavailable`).
    FailClosed,
}

impl StoreSection {
    pub(super) fn validate(&self, at: &Check<'_>) -> Result<(), ConfigError> {
        if self.backend == StoreBackend::Memory {
            return Ok(());
        }
        let Some(url) = &self.url else {
            return Err(at.invalid("store.url", "is needed with backend = \"redis\""));
        };
        if !url.starts_with("redis://") && !url.starts_with("rediss://") {
            return Err(at.invalid("store.url", "must start with redis:// or rediss://"));
        }
        if let Err(error) = redis::Client::open(url.as_str()) {
            return Err(at.invalid("store.url", error.to_string()));
        }
        if self.pool_size == 0 {
            return Err(at.invalid("store.pool_size", "must be at least 1"));
        }
        if self.ca.is_some() && !url.starts_with("rediss://") {
            return Err(at.invalid("store.ca", "is for rediss:// URLs only"));
        }
        if self.command_timeout.is_zero() {
            return Err(at.invalid("store.command_timeout", "must be more than 0"));
        }
        Ok(())
    }
}

/// `[[listeners]]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerConfig {
    /// `ip:port` to bind; HTTP/1.1 and HTTP/2 with prior knowledge (h2c) are both served.
    pub address: SocketAddr,
    /// TLS termination; plain TCP unless present.
    pub tls: Option<ListenerTlsConfig>,
}

impl ListenerConfig {
    /// Checks listener `index`.
    pub(super) fn validate(&self, index: usize, at: &Check<'_>) -> Result<(), ConfigError> {
        let Some(tls) = &self.tls else { return Ok(()) };
        if tls.certificates.is_empty() {
            return Err(at.invalid(
                format!("listeners[{index}].tls.certificates"),
                "at least one certificate is needed",
            ));
        }
        for (field, value) in
            [("handshake_timeout", tls.handshake_timeout), ("reload_interval", tls.reload_interval)]
        {
            if value.is_zero() {
                return Err(at.invalid(format!("listeners[{index}].tls.{field}"), "must be more than 0"));
            }
        }
        Ok(())
    }
}

/// `[listeners.tls]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerTlsConfig {
    /// Certificates chosen by the server name the client asks for; the first is the default.
    pub certificates: Vec<CertificateConfig>,
    /// A PEM file of CAs whose client certificates are accepted (mutual TLS); none by default.
    pub client_ca: Option<PathBuf>,
    /// With `client_ca`: `required` (default) or `optional` client certificates.
    #[serde(default)]
    pub client_auth: ClientAuth,
    /// Time allowed for the handshake.
    #[serde(default = "defaults::handshake_timeout", with = "units::duration")]
    pub handshake_timeout: Duration,
    /// How often the certificate and key files are checked for changes.
    #[serde(default = "defaults::reload_interval", with = "units::duration")]
    pub reload_interval: Duration,
}

/// One certificate of a TLS listener.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CertificateConfig {
    /// PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
    /// Server names it is chosen for (`api.example.org`, `*.example.org`).
    #[serde(default)]
    pub names: Vec<String>,
}

/// Whether a TLS listener with a `client_ca` insists on a client certificate.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum ClientAuth {
    /// Handshakes without a valid client certificate fail.
    #[default]
    Required,
    /// A client may present none; one it presents must be valid.
    Optional,
}

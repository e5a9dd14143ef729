//! The gateway's TOML configuration: what an operator writes, its defaults, and the checks run
//! before anything serves. Every error names the file, the field (and line where known) and the
//! reason; unknown fields are refused.
//!
//! The reference for operators is `docs/config.md`; keep the two in step.

mod units;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::plugin::{FailurePolicy, Isolation, PluginSpec, RuntimeConfig};

/// A config that could not be read or is not valid.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{}: cannot read: {source}", file.display())]
    Read {
        /// The config file.
        file: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The TOML is malformed or does not fit the schema (unknown field, wrong type…).
    #[error("{}:{line}:{column}: {message}", file.display())]
    Parse {
        /// The config file.
        file: PathBuf,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What the parser said.
        message: String,
    },
    /// A value is well-formed but wrong (an unknown name, an empty list…).
    #[error("{}:{}{field}: {reason}", file.display(), line.map(|l| format!("{l}: ")).unwrap_or_default())]
    Invalid {
        /// The config file.
        file: PathBuf,
        /// The line, when the field's position is known.
        line: Option<usize>,
        /// The field, as a TOML path (`routes[0].upstream`).
        field: String,
        /// Why it is refused.
        reason: String,
    },
}

/// The whole config file.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Process-wide settings.
    #[serde(default)]
    pub server: ServerConfig,
    /// Plugin runtime settings.
    #[serde(default)]
    pub runtime: RuntimeSection,
    /// Where to accept connections.
    #[serde(default)]
    pub listeners: Vec<ListenerConfig>,
    /// Plugins by name.
    #[serde(default)]
    pub plugins: BTreeMap<String, PluginConfig>,
    /// Upstream groups by name.
    #[serde(default)]
    pub upstreams: BTreeMap<String, UpstreamConfig>,
    /// Routes, matched in order; the first that fits a request takes it.
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
    /// The admin listener; none unless present.
    pub admin: Option<AdminConfig>,
    /// Log format and the access log.
    #[serde(default)]
    pub log: LogConfig,
    /// OpenTelemetry traces; off unless present.
    pub traces: Option<TracesConfig>,
    /// The file this was read from; relative plugin paths are resolved against its folder.
    #[serde(skip)]
    pub file: PathBuf,
}

/// `[log]`.
#[derive(Debug, Clone, Deserialize, serde::Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `pretty` (one human-readable line per event) or `json` (one JSON object per line).
    pub format: LogFormat,
    /// An access-log line per request (target `wasmgate::access`).
    pub access: bool,
    /// The fields access-log lines carry; all of them by default.
    pub access_fields: Vec<AccessField>,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig { format: LogFormat::Pretty, access: false, access_fields: AccessField::ALL.to_vec() }
    }
}

/// `[log] format`.
#[derive(Debug, Clone, Copy, Default, Deserialize, serde::Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Pretty,
    /// One JSON object per line.
    Json,
}

/// A field of the access log.
#[derive(Debug, Clone, Copy, Deserialize, serde::Serialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum AccessField {
    /// The client's `ip:port`.
    Client,
    /// The method.
    Method,
    /// The host asked for.
    Host,
    /// The path and query.
    Path,
    /// The status sent.
    Status,
    /// Milliseconds from arrival to the end of the response.
    DurationMs,
    /// Response body bytes sent.
    BytesOut,
    /// The route that matched.
    Route,
    /// The backend that answered.
    Backend,
    /// `x-request-id`, or the gateway's own number for the request.
    RequestId,
    /// `user-agent`.
    UserAgent,
    /// True over TLS.
    Tls,
}

impl AccessField {
    /// Every field, in log order.
    pub const ALL: [AccessField; 12] = [
        AccessField::Client,
        AccessField::Method,
        AccessField::Host,
        AccessField::Path,
        AccessField::Status,
        AccessField::DurationMs,
        AccessField::BytesOut,
        AccessField::Route,
        AccessField::Backend,
        AccessField::RequestId,
        AccessField::UserAgent,
        AccessField::Tls,
    ];
}

/// `[traces]`.
#[derive(Debug, Clone, Deserialize, serde::Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TracesConfig {
    /// The OTLP/HTTP traces endpoint, e.g. `http://127.0.0.1:4318/v1/traces`.
    pub endpoint: String,
    /// `http-protobuf` (default) or `http-json`.
    #[serde(default)]
    pub protocol: TraceProtocol,
    /// The `service.name` of the spans.
    #[serde(default = "defaults::service_name")]
    pub service_name: String,
    /// The share of new traces recorded (0 to 1); a request that comes with a sampled
    /// `traceparent` is recorded whatever this says.
    #[serde(default = "defaults::sample_ratio")]
    pub sample_ratio: f64,
    /// How often batched spans are sent.
    #[serde(default = "defaults::export_interval", with = "units::duration")]
    pub export_interval: Duration,
    /// How long one export may take.
    #[serde(default = "defaults::export_timeout", with = "units::duration")]
    pub export_timeout: Duration,
}

/// How spans are sent.
#[derive(Debug, Clone, Copy, Default, Deserialize, serde::Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum TraceProtocol {
    /// OTLP/HTTP with protobuf bodies.
    #[default]
    HttpProtobuf,
    /// OTLP/HTTP with JSON bodies.
    HttpJson,
}

/// `[admin]`.
#[derive(Debug, Clone, Deserialize, serde::Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// `ip:port` to bind.
    #[serde(default = "defaults::admin_address")]
    pub address: SocketAddr,
    /// A bearer token every admin request must carry; none by default.
    pub token: Option<String>,
}

/// `[server]`.
#[derive(Debug, Clone, Deserialize, serde::Serialize, PartialEq, Eq)]
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
    /// On SIGTERM or Ctrl-C, how long in-flight requests have to finish.
    #[serde(with = "units::duration")]
    pub grace_period: Duration,
    /// Open client connections at most; past it the gateway stops accepting until one closes.
    pub max_connections: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            workers: 0,
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            grace_period: Duration::from_secs(30),
            max_connections: 10_000,
        }
    }
}

/// `[runtime]`.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RuntimeSection {
    /// Where compiled plugins are cached; default `$XDG_CACHE_HOME/wasmgate`.
    pub cache_dir: Option<PathBuf>,
    /// False compiles every plugin at every start.
    pub cache: bool,
    /// Instance slots the pooling allocator reserves across all plugins.
    pub instance_slots: u32,
    /// The largest memory limit any plugin may set.
    #[serde(with = "units::size")]
    pub max_memory: usize,
    /// Entries the key-value store plugins share holds at most.
    pub store_max_entries: usize,
}

impl Default for RuntimeSection {
    fn default() -> Self {
        let d = RuntimeConfig::default();
        RuntimeSection {
            cache_dir: None,
            cache: true,
            instance_slots: d.instance_slots,
            max_memory: d.max_memory,
            store_max_entries: d.store_max_entries,
        }
    }
}

/// `[[listeners]]`.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerConfig {
    /// `ip:port` to bind; HTTP/1.1 and HTTP/2 with prior knowledge (h2c) are both served.
    pub address: SocketAddr,
    /// TLS termination; plain TCP unless present.
    pub tls: Option<ListenerTlsConfig>,
}

/// `[listeners.tls]`.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
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
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
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
#[derive(Debug, Clone, Copy, Default, Deserialize, serde::Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum ClientAuth {
    /// Handshakes without a valid client certificate fail.
    #[default]
    Required,
    /// A client may present none; one it presents must be valid.
    Optional,
}

/// `[plugins.NAME]`.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
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
    /// Pooled instances.
    #[serde(default = "defaults::instances")]
    pub instances: usize,
    /// How long a call waits for a free instance.
    #[serde(default = "defaults::pool_wait", with = "units::duration")]
    pub pool_wait: Duration,
    /// `fail-closed` (default) or `fail-open`.
    #[serde(default)]
    pub failure: FailureSetting,
    /// `pooled` (default) or `per-request`.
    #[serde(default)]
    pub isolation: IsolationSetting,
}

/// `failure = "fail-closed" | "fail-open"`.
#[derive(Debug, Clone, Copy, Default, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FailureSetting {
    /// Fail the request.
    #[default]
    FailClosed,
    /// Skip the plugin.
    FailOpen,
}

/// `isolation = "pooled" | "per-request"`.
#[derive(Debug, Clone, Copy, Default, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum IsolationSetting {
    /// Reuse pooled instances.
    #[default]
    Pooled,
    /// A fresh instance per call.
    PerRequest,
}

/// `[upstreams.NAME]`.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// `"host:port"` or `{ address = "host:port", weight = 2 }`.
    pub backends: Vec<BackendConfig>,
    /// Time allowed to open a TCP connection.
    #[serde(default = "defaults::connect_timeout", with = "units::duration")]
    pub connect_timeout: Duration,
    /// Time allowed for the TLS handshake, once the TCP connection is open.
    #[serde(default = "defaults::tls_handshake_timeout", with = "units::duration")]
    pub tls_handshake_timeout: Duration,
    /// Time allowed from sending the request to the response headers.
    #[serde(default = "defaults::response_timeout", with = "units::duration")]
    pub response_timeout: Duration,
    /// How long an unused keep-alive connection is kept.
    #[serde(default = "defaults::pool_idle_timeout", with = "units::duration")]
    pub pool_idle_timeout: Duration,
    /// Idle connections kept per backend.
    #[serde(default = "defaults::pool_max_idle")]
    pub pool_max_idle: usize,
    /// Active health checks; none by default.
    pub health_check: Option<HealthCheckConfig>,
    /// `round-robin` (default), `random`, `least-request` or `consistent-hash`.
    #[serde(default)]
    pub balance: BalanceSetting,
    /// For `consistent-hash`: `client-addr`, `path`, `header:NAME` or `cookie:NAME`.
    pub hash_key: Option<String>,
    /// Passive outlier detection; off unless present.
    pub outlier_detection: Option<OutlierConfig>,
    /// With every backend unhealthy or ejected: `fail` (503, the default) or `route-to-all`.
    #[serde(default)]
    pub when_all_unhealthy: AllUnhealthy,
    /// Circuit breaker: requests in flight per backend at most (0: no limit); past it, 503.
    #[serde(default)]
    pub max_requests: u32,
    /// Circuit breaker: connections open per backend at most (0: no limit). On `http1`
    /// groups a request needs a connection of its own, so past it requests wait (see
    /// `max_pending`).
    #[serde(default)]
    pub max_connections: u32,
    /// Circuit breaker, with `max_connections` on an `http1` group: requests waiting for a
    /// connection per backend at most; past it, 503 at once.
    #[serde(default = "defaults::max_pending")]
    pub max_pending: u32,
    /// `http1` (default), `http2` (h2c with prior knowledge, or h2 over TLS) or `auto`
    /// (TLS only: ALPN picks h2 or HTTP/1.1).
    #[serde(default)]
    pub protocol: UpstreamProtocol,
    /// TLS to the backends; plain TCP unless present.
    pub tls: Option<UpstreamTlsConfig>,
}

/// `protocol = "..."` toward the backends.
#[derive(Debug, Clone, Copy, Default, Deserialize, serde::Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum UpstreamProtocol {
    /// HTTP/1.1.
    #[default]
    Http1,
    /// HTTP/2 only.
    Http2,
    /// Negotiated by ALPN (TLS only).
    Auto,
}

/// `[upstreams.NAME.tls]`. Certificates are always verified.
#[derive(Debug, Clone, Deserialize, serde::Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct UpstreamTlsConfig {
    /// The name sent (SNI) and verified; default: each backend's host as configured.
    pub sni: Option<String>,
    /// A PEM file of CA certificates trusted besides the bundled web PKI roots.
    pub ca: Option<PathBuf>,
    /// A PEM client certificate chain, for backends that ask for one (with `client_key`).
    pub client_cert: Option<PathBuf>,
    /// The PEM private key of `client_cert`.
    pub client_key: Option<PathBuf>,
}

/// [`UpstreamTlsConfig`] with its paths resolved against the config file's folder.
#[derive(Debug, Clone)]
pub struct ResolvedTls {
    /// See [`UpstreamTlsConfig::sni`].
    pub sni: Option<String>,
    /// See [`UpstreamTlsConfig::ca`].
    pub ca: Option<PathBuf>,
    /// Certificate chain and key.
    pub client_cert: Option<(PathBuf, PathBuf)>,
}

/// `[upstreams.NAME.outlier_detection]`.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct OutlierConfig {
    /// Consecutive connect errors or 5xx answers that eject a backend.
    #[serde(default = "defaults::consecutive_failures")]
    pub consecutive_failures: u32,
    /// The first ejection's length; the n-th lasts n times as long (n at most 10).
    #[serde(default = "defaults::base_ejection", with = "units::duration")]
    pub base_ejection: Duration,
    /// The largest share of the group, in percent, ejected at once.
    #[serde(default = "defaults::max_ejected_percent")]
    pub max_ejected_percent: u32,
}

/// `when_all_unhealthy = "fail" | "route-to-all"`.
#[derive(Debug, Clone, Copy, Default, Deserialize, serde::Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum AllUnhealthy {
    /// Answer 503.
    #[default]
    Fail,
    /// Spread requests over every backend anyway.
    RouteToAll,
}

/// `balance = "..."`.
#[derive(Debug, Clone, Copy, Default, Deserialize, serde::Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum BalanceSetting {
    /// Smooth weighted round robin.
    #[default]
    RoundRobin,
    /// Weighted random.
    Random,
    /// Power of two choices by requests in flight.
    LeastRequest,
    /// Ketama over `hash_key`.
    ConsistentHash,
}

impl BalanceSetting {
    /// The balancer's policy.
    pub fn policy(self) -> crate::upstream::Policy {
        use crate::upstream::Policy;
        match self {
            BalanceSetting::RoundRobin => Policy::RoundRobin,
            BalanceSetting::Random => Policy::Random,
            BalanceSetting::LeastRequest => Policy::LeastRequest,
            BalanceSetting::ConsistentHash => Policy::ConsistentHash,
        }
    }
}

/// One backend.
#[derive(Debug, Clone, Deserialize, serde::Serialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum BackendConfig {
    /// `"host:port"`, weight 1.
    Address(String),
    /// `{ address = "host:port", weight = N }`.
    Weighted {
        /// `host:port`.
        address: String,
        /// Relative share of requests.
        #[serde(default = "defaults::weight")]
        weight: u32,
    },
}

impl UpstreamConfig {
    /// True when a client built for `self` serves `other` as well, so that a reload can keep
    /// the client and its pooled connections: same timeouts, pool, protocol and TLS (and, for
    /// TLS without a fixed `sni`, the same backends, whose names it verifies).
    pub fn same_client(&self, other: &UpstreamConfig) -> bool {
        self.connect_timeout == other.connect_timeout
            && self.tls_handshake_timeout == other.tls_handshake_timeout
            && self.max_connections == other.max_connections
            && self.response_timeout == other.response_timeout
            && self.pool_idle_timeout == other.pool_idle_timeout
            && self.pool_max_idle == other.pool_max_idle
            && self.protocol == other.protocol
            && self.tls == other.tls
            && (self.tls.as_ref().is_none_or(|t| t.sni.is_some()) || self.backends == other.backends)
    }
}

impl BackendConfig {
    /// `host:port`.
    pub fn address(&self) -> &str {
        match self {
            BackendConfig::Address(a) | BackendConfig::Weighted { address: a, .. } => a,
        }
    }

    /// The weight (1 unless set).
    pub fn weight(&self) -> u32 {
        match self {
            BackendConfig::Address(_) => 1,
            BackendConfig::Weighted { weight, .. } => *weight,
        }
    }
}

/// `[upstreams.NAME.health_check]`.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheckConfig {
    /// `http` (GET `path`, healthy on 2xx/3xx) or `tcp` (connect).
    #[serde(default)]
    pub kind: HealthCheckKind,
    /// The path an HTTP check requests.
    #[serde(default = "defaults::health_path")]
    pub path: String,
    /// Time between checks.
    #[serde(default = "defaults::health_interval", with = "units::duration")]
    pub interval: Duration,
    /// Time one check may take.
    #[serde(default = "defaults::health_timeout", with = "units::duration")]
    pub timeout: Duration,
    /// Consecutive successes that bring a backend back.
    #[serde(default = "defaults::threshold")]
    pub healthy_threshold: u32,
    /// Consecutive failures that take a backend out.
    #[serde(default = "defaults::threshold")]
    pub unhealthy_threshold: u32,
    /// Statuses an HTTP check counts as healthy: `"200-399"` (default), `"204"`, …
    #[serde(default = "defaults::expected_status")]
    pub expected_status: Vec<String>,
    /// The Host an HTTP check sends; default: the backend's address as configured.
    pub host: Option<String>,
    /// Up to this much random delay is added to each interval, so that checks from many
    /// replicas do not arrive in step.
    #[serde(default, with = "units::duration_or_zero")]
    pub jitter: Duration,
}

impl HealthCheckConfig {
    /// True if `status` is one of the expected ones.
    pub fn expects(&self, status: u16) -> bool {
        self.expected_status
            .iter()
            .filter_map(|r| parse_status_range(r))
            .any(|(lo, hi)| (lo..=hi).contains(&status))
    }
}

/// `"200-299"` or `"204"`.
fn parse_status_range(text: &str) -> Option<(u16, u16)> {
    let (lo, hi) = match text.split_once('-') {
        Some((lo, hi)) => (lo.trim().parse().ok()?, hi.trim().parse().ok()?),
        None => {
            let s = text.trim().parse().ok()?;
            (s, s)
        }
    };
    ((100..=599).contains(&lo) && (lo..=599).contains(&hi)).then_some((lo, hi))
}

/// How a health check probes.
#[derive(Debug, Clone, Copy, Default, Deserialize, serde::Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum HealthCheckKind {
    /// An HTTP GET.
    #[default]
    Http,
    /// A TCP connect.
    Tcp,
}

/// `[[routes]]`.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Shown to plugins and in logs; default `route-N`.
    pub name: Option<String>,
    /// Match this host exactly, or any subdomain with `*.example.org`; any host if unset.
    pub host: Option<String>,
    /// Match paths starting with this; default `/`.
    #[serde(default = "defaults::path_prefix")]
    pub path_prefix: String,
    /// Match only these methods; any if empty.
    #[serde(default)]
    pub methods: Vec<String>,
    /// Plugins, in the order their request phases run.
    #[serde(default)]
    pub plugins: Vec<Spanned<String>>,
    /// The upstream group.
    pub upstream: Spanned<String>,
    /// Further attempts after a failed one, each on another backend where there is one. Only
    /// requests without a body are retried, and a non-idempotent one only when nothing was
    /// sent (the connection failed).
    #[serde(default = "defaults::retries")]
    pub retries: u32,
    /// What a retry may follow: `connect-failure`, `reset` (the exchange broke before a
    /// response), `502`, `503`, `504`.
    #[serde(default = "defaults::retry_on")]
    pub retry_on: Vec<RetryOn>,
    /// Request bodies up to this size (by Content-Length) are read whole before forwarding so
    /// that a retry can send them again; larger or unsized ones stream and are not retried.
    #[serde(default = "defaults::retry_buffer", with = "units::size")]
    pub retry_buffer: usize,
    /// Retries in progress at most, in percent of the route's requests in progress (at least 3
    /// are always allowed): a failing backend cannot multiply the load.
    #[serde(default = "defaults::retry_budget")]
    pub retry_budget: u32,
    /// How long the route's requests may take.
    #[serde(default)]
    pub timeouts: RouteTimeouts,
    /// Request bodies are read whole, up to this size (413 beyond), before the upstream is
    /// chosen; request-body plugins then see the whole body at once. Streamed if unset.
    #[serde(default, with = "units::option_size")]
    pub request_buffer: Option<usize>,
    /// Requests that arrive over plain HTTP are answered 308 to `https://` on this port.
    pub redirect_https: Option<u16>,
    /// WebSocket upgrades are tunnelled to the upstream (true), or dropped.
    #[serde(default = "defaults::yes")]
    pub websocket: bool,
    /// How long a WebSocket tunnel may carry no data in either direction before it is closed.
    #[serde(default = "defaults::tunnel_idle", with = "units::duration")]
    pub tunnel_idle: Duration,
}

/// `timeouts = { response = "5s", body_idle = "30s", total = "1m" }` on a route.
#[derive(Debug, Clone, Copy, Deserialize, serde::Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct RouteTimeouts {
    /// Time allowed to open a TCP connection to a backend; default: the group's
    /// `connect_timeout`.
    #[serde(with = "units::option_duration")]
    pub connect: Option<Duration>,
    /// Time allowed for the TLS handshake with a backend; default: the group's
    /// `tls_handshake_timeout`.
    #[serde(with = "units::option_duration")]
    pub tls_handshake: Option<Duration>,
    /// From sending the request to the response headers (each attempt); default: the
    /// group's `response_timeout`.
    #[serde(with = "units::option_duration")]
    pub response: Option<Duration>,
    /// How long a request or response body may go without data.
    #[serde(with = "units::duration")]
    pub body_idle: Duration,
    /// From the request's arrival to the end of its response, across retries; none by default.
    #[serde(with = "units::option_duration")]
    pub total: Option<Duration>,
}

impl Default for RouteTimeouts {
    fn default() -> Self {
        RouteTimeouts {
            connect: None,
            tls_handshake: None,
            response: None,
            body_idle: Duration::from_secs(60),
            total: None,
        }
    }
}

/// One condition a retry may follow.
#[derive(Debug, Clone, Copy, Deserialize, serde::Serialize, PartialEq, Eq)]
pub enum RetryOn {
    /// The connection was refused or timed out: nothing was sent.
    #[serde(rename = "connect-failure")]
    ConnectFailure,
    /// The exchange broke before any response byte (idempotent requests only).
    #[serde(rename = "reset")]
    Reset,
    /// An HTTP/2 backend refused the stream (`REFUSED_STREAM`): it did not process it.
    #[serde(rename = "refused-stream")]
    RefusedStream,
    /// The backend answered 502.
    #[serde(rename = "502")]
    Status502,
    /// The backend answered 503.
    #[serde(rename = "503")]
    Status503,
    /// The backend answered 504.
    #[serde(rename = "504")]
    Status504,
}

mod defaults {
    use std::time::Duration;

    pub(super) fn deadline() -> Duration {
        Duration::from_millis(10)
    }
    pub(super) fn memory_limit() -> usize {
        64 << 20
    }
    pub(super) fn instances() -> usize {
        16
    }
    pub(super) fn pool_wait() -> Duration {
        Duration::from_millis(10)
    }
    pub(super) fn connect_timeout() -> Duration {
        Duration::from_secs(2)
    }
    pub(super) fn service_name() -> String {
        "wasmgate".to_owned()
    }
    pub(super) fn sample_ratio() -> f64 {
        1.0
    }
    pub(super) fn export_interval() -> Duration {
        Duration::from_secs(5)
    }
    pub(super) fn export_timeout() -> Duration {
        Duration::from_secs(10)
    }
    pub(super) fn admin_address() -> std::net::SocketAddr {
        std::net::SocketAddr::from(([127, 0, 0, 1], 9901))
    }
    pub(super) fn handshake_timeout() -> Duration {
        Duration::from_secs(10)
    }
    pub(super) fn reload_interval() -> Duration {
        Duration::from_secs(5)
    }
    pub(super) fn yes() -> bool {
        true
    }
    pub(super) fn tunnel_idle() -> Duration {
        Duration::from_secs(300)
    }
    pub(super) fn tls_handshake_timeout() -> Duration {
        Duration::from_secs(5)
    }
    pub(super) fn max_pending() -> u32 {
        1024
    }
    pub(super) fn response_timeout() -> Duration {
        Duration::from_secs(30)
    }
    pub(super) fn pool_idle_timeout() -> Duration {
        Duration::from_secs(90)
    }
    pub(super) fn pool_max_idle() -> usize {
        128
    }
    pub(super) fn weight() -> u32 {
        1
    }
    pub(super) fn health_path() -> String {
        "/".to_owned()
    }
    pub(super) fn health_interval() -> Duration {
        Duration::from_secs(2)
    }
    pub(super) fn health_timeout() -> Duration {
        Duration::from_secs(1)
    }
    pub(super) fn threshold() -> u32 {
        2
    }
    pub(super) fn path_prefix() -> String {
        "/".to_owned()
    }
    pub(super) fn expected_status() -> Vec<String> {
        vec!["200-399".to_owned()]
    }
    pub(super) fn consecutive_failures() -> u32 {
        5
    }
    pub(super) fn base_ejection() -> Duration {
        Duration::from_secs(30)
    }
    pub(super) fn max_ejected_percent() -> u32 {
        50
    }
    pub(super) fn retry_buffer() -> usize {
        64 << 10
    }
    pub(super) fn retry_budget() -> u32 {
        20
    }
    pub(super) fn retries() -> u32 {
        1
    }
    pub(super) fn retry_on() -> Vec<super::RetryOn> {
        vec![super::RetryOn::ConnectFailure, super::RetryOn::RefusedStream, super::RetryOn::Reset]
    }
}

impl Config {
    /// Reads and checks the config at `file`.
    pub fn load(file: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(file)
            .map_err(|source| ConfigError::Read { file: file.to_owned(), source })?;
        Config::parse(file, &text)
    }

    /// Parses and checks `text`, read from `file`.
    pub fn parse(file: &Path, text: &str) -> Result<Config, ConfigError> {
        let mut config: Config = toml::from_str(text).map_err(|e| {
            let (line, column) = e.span().map_or((1, 1), |s| line_col(text, s));
            ConfigError::Parse { file: file.to_owned(), line, column, message: e.message().trim().to_owned() }
        })?;
        config.file = file.to_owned();
        config.validate(text)?;
        Ok(config)
    }

    fn validate(&self, text: &str) -> Result<(), ConfigError> {
        let invalid = |field: String, span: Option<Range<usize>>, reason: String| ConfigError::Invalid {
            file: self.file.clone(),
            line: span.map(|s| line_col(text, s).0),
            field,
            reason,
        };
        if self.listeners.is_empty() {
            return Err(invalid("listeners".into(), None, "at least one listener is needed".into()));
        }
        for (i, listener) in self.listeners.iter().enumerate() {
            let Some(tls) = &listener.tls else { continue };
            if tls.certificates.is_empty() {
                let field = format!("listeners[{i}].tls.certificates");
                return Err(invalid(field, None, "at least one certificate is needed".into()));
            }
            for (field, value) in
                [("handshake_timeout", tls.handshake_timeout), ("reload_interval", tls.reload_interval)]
            {
                if value.is_zero() {
                    return Err(invalid(
                        format!("listeners[{i}].tls.{field}"),
                        None,
                        "must be more than 0".into(),
                    ));
                }
            }
        }
        if self.admin.as_ref().and_then(|a| a.token.as_deref()).is_some_and(str::is_empty) {
            return Err(invalid(
                "admin.token".into(),
                None,
                "must not be empty (leave it out for no token)".into(),
            ));
        }
        if let Some(traces) = &self.traces {
            if !(0.0..=1.0).contains(&traces.sample_ratio) {
                return Err(invalid("traces.sample_ratio".into(), None, "must be between 0 and 1".into()));
            }
            if traces.export_interval.is_zero() || traces.export_timeout.is_zero() {
                return Err(invalid(
                    "traces".into(),
                    None,
                    "export_interval and export_timeout must be more than 0".into(),
                ));
            }
        }
        let s = &self.server;
        for (field, value) in
            [("header_read_timeout", s.header_read_timeout), ("idle_timeout", s.idle_timeout)]
        {
            if value.is_zero() {
                return Err(invalid(format!("server.{field}"), None, "must be more than 0".into()));
            }
        }
        if s.max_connections == 0 {
            return Err(invalid("server.max_connections".into(), None, "must be at least 1".into()));
        }
        // Every pooled instance holds a slot; each plugin may also be replacing one instance
        // and making its per-request ones.
        let needed: usize = self.plugins.values().map(|p| p.instances + 1).sum();
        if needed > self.runtime.instance_slots as usize {
            return Err(invalid(
                "runtime.instance_slots".into(),
                None,
                format!(
                    "{} is too few: the plugins need {needed} (their instances, plus one each)",
                    self.runtime.instance_slots
                ),
            ));
        }
        for (name, p) in &self.plugins {
            let field = |f: &str| format!("plugins.{name}.{f}");
            if p.instances == 0 {
                return Err(invalid(field("instances"), None, "must be at least 1".into()));
            }
            if p.deadline.is_zero() {
                return Err(invalid(field("deadline"), None, "must be more than 0".into()));
            }
            if p.memory_limit > self.runtime.max_memory {
                return Err(invalid(
                    field("memory_limit"),
                    None,
                    format!(
                        "{} bytes is above runtime.max_memory ({} bytes)",
                        p.memory_limit, self.runtime.max_memory
                    ),
                ));
            }
        }
        for (name, u) in &self.upstreams {
            let field = |f: &str| format!("upstreams.{name}.{f}");
            if u.backends.is_empty() {
                return Err(invalid(field("backends"), None, "at least one backend is needed".into()));
            }
            for (i, b) in u.backends.iter().enumerate() {
                if b.weight() == 0 {
                    return Err(invalid(
                        field(&format!("backends[{i}].weight")),
                        None,
                        "must be at least 1".into(),
                    ));
                }
                if !b
                    .address()
                    .rsplit_once(':')
                    .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok())
                {
                    return Err(invalid(
                        field(&format!("backends[{i}]")),
                        None,
                        format!("`{}` is not host:port", b.address()),
                    ));
                }
            }
            match (&u.balance, &u.hash_key) {
                (BalanceSetting::ConsistentHash, None) => {
                    return Err(invalid(
                        field("hash_key"),
                        None,
                        "`consistent-hash` needs a hash_key".into(),
                    ));
                }
                (BalanceSetting::ConsistentHash, Some(key))
                    if crate::upstream::HashSource::parse(key).is_none() =>
                {
                    return Err(invalid(
                        field("hash_key"),
                        None,
                        format!("`{key}` is not client-addr, path, header:NAME or cookie:NAME"),
                    ));
                }
                (BalanceSetting::ConsistentHash, Some(_)) | (_, None) => {}
                (_, Some(_)) => {
                    return Err(invalid(
                        field("hash_key"),
                        None,
                        "only `consistent-hash` uses a hash_key".into(),
                    ));
                }
            }
            if let Some(o) = &u.outlier_detection
                && (o.consecutive_failures == 0 || o.base_ejection.is_zero() || o.max_ejected_percent > 100)
            {
                return Err(invalid(
                    field("outlier_detection"),
                    None,
                    "consecutive_failures and base_ejection must be more than 0, max_ejected_percent at most 100".into(),
                ));
            }
            if u.protocol == UpstreamProtocol::Auto && u.tls.is_none() {
                return Err(invalid(
                    field("protocol"),
                    None,
                    "`auto` needs tls (ALPN); use `http2` for h2c".into(),
                ));
            }
            if let Some(t) = &u.tls
                && t.client_cert.is_some() != t.client_key.is_some()
            {
                return Err(invalid(field("tls"), None, "client_cert and client_key go together".into()));
            }
            if let Some(h) = &u.health_check {
                if h.healthy_threshold == 0 || h.unhealthy_threshold == 0 {
                    return Err(invalid(field("health_check"), None, "thresholds must be at least 1".into()));
                }
                if h.interval.is_zero() {
                    return Err(invalid(field("health_check.interval"), None, "must be more than 0".into()));
                }
                if !h.path.starts_with('/') {
                    return Err(invalid(field("health_check.path"), None, "must start with `/`".into()));
                }
                if let Some(bad) = h.expected_status.iter().find(|r| parse_status_range(r).is_none()) {
                    return Err(invalid(
                        field("health_check.expected_status"),
                        None,
                        format!("`{bad}` is not a status or a range like \"200-299\""),
                    ));
                }
                if let Some(host) = &h.host
                    && http::HeaderValue::from_str(host).is_err()
                {
                    return Err(invalid(
                        field("health_check.host"),
                        None,
                        format!("`{host}` is not a valid Host"),
                    ));
                }
            }
        }
        for (i, r) in self.routes.iter().enumerate() {
            let field = |f: &str| format!("routes[{i}].{f}");
            if !self.upstreams.contains_key(r.upstream.get_ref()) {
                return Err(invalid(
                    field("upstream"),
                    Some(r.upstream.span()),
                    format!("no upstream group `{}` is configured", r.upstream.get_ref()),
                ));
            }
            for (j, p) in r.plugins.iter().enumerate() {
                if !self.plugins.contains_key(p.get_ref()) {
                    return Err(invalid(
                        field(&format!("plugins[{j}]")),
                        Some(p.span()),
                        format!("no plugin `{}` is configured", p.get_ref()),
                    ));
                }
            }
            if let Some(host) = &r.host
                && (host.is_empty()
                    || (host.starts_with('*') && !host.starts_with("*."))
                    || host[1..].contains('*'))
            {
                return Err(invalid(
                    field("host"),
                    None,
                    format!("`{host}` is not a host name or a `*.suffix` pattern"),
                ));
            }
            let t = &r.timeouts;
            if t.body_idle.is_zero()
                || t.response.is_some_and(|d| d.is_zero())
                || t.total.is_some_and(|d| d.is_zero())
            {
                return Err(invalid(field("timeouts"), None, "timeouts must be more than 0".into()));
            }
            if !r.path_prefix.starts_with('/') {
                return Err(invalid(field("path_prefix"), None, "must start with `/`".into()));
            }
            for m in &r.methods {
                if http::Method::from_bytes(m.as_bytes()).is_err() {
                    return Err(invalid(field("methods"), None, format!("`{m}` is not a method")));
                }
            }
        }
        Ok(())
    }

    /// The plugin runtime's settings.
    pub fn runtime_config(&self) -> RuntimeConfig {
        let defaults = RuntimeConfig::default();
        RuntimeConfig {
            cache_dir: match (&self.runtime.cache, &self.runtime.cache_dir) {
                (false, _) => None,
                (true, Some(dir)) => Some(self.resolve(dir)),
                (true, None) => defaults.cache_dir,
            },
            instance_slots: self.runtime.instance_slots,
            max_memory: self.runtime.max_memory,
            epoch_tick: defaults.epoch_tick,
            store_max_entries: self.runtime.store_max_entries,
        }
    }

    /// The TLS settings of upstream `u`, paths resolved.
    pub fn upstream_tls(&self, u: &UpstreamConfig) -> Option<ResolvedTls> {
        let tls = u.tls.as_ref()?;
        Some(ResolvedTls {
            sni: tls.sni.clone(),
            ca: tls.ca.as_deref().map(|p| self.resolve(p)),
            client_cert: match (&tls.client_cert, &tls.client_key) {
                (Some(c), Some(k)) => Some((self.resolve(c), self.resolve(k))),
                _ => None,
            },
        })
    }

    /// The runtime's view of plugin `name`.
    pub fn plugin_spec(&self, name: &str, p: &PluginConfig) -> PluginSpec {
        PluginSpec {
            name: name.to_owned(),
            path: self.resolve(&p.path),
            // A TOML table always has a JSON form; an empty one is `{}`.
            config_json: serde_json::to_string(&p.config).unwrap_or_else(|_| "{}".to_owned()),
            deadline: p.deadline,
            memory_limit: p.memory_limit,
            instances: p.instances,
            pool_wait: p.pool_wait,
            failure: match p.failure {
                FailureSetting::FailClosed => FailurePolicy::FailClosed,
                FailureSetting::FailOpen => FailurePolicy::FailOpen,
            },
            isolation: match p.isolation {
                IsolationSetting::Pooled => Isolation::Pooled,
                IsolationSetting::PerRequest => Isolation::PerRequest,
            },
        }
    }

    /// `path` relative to the config file's folder, unless absolute.
    pub fn resolve(&self, path: &Path) -> PathBuf {
        match self.file.parent() {
            Some(dir) if path.is_relative() => dir.join(path),
            _ => path.to_owned(),
        }
    }

    /// An error about `field` of this config, for checks made after parsing (plugin loading,
    /// address resolution).
    pub fn error(&self, field: String, reason: String) -> ConfigError {
        ConfigError::Invalid { file: self.file.clone(), line: None, field, reason }
    }
}

/// 1-based line and column of a byte offset.
fn line_col(text: &str, span: Range<usize>) -> (usize, usize) {
    let before = &text[..span.start.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(Path::new("gw.toml"), text)
    }

    const MINIMAL: &str = r#"
[[listeners]]
address = "127.0.0.1:8080"

[upstreams.origins]
backends = ["127.0.0.1:9001", { address = "127.0.0.1:9002", weight = 3 }]

[[routes]]
upstream = "origins"
"#;

    #[test]
    fn a_ten_line_config_works_with_defaults() {
        let c = parse(MINIMAL).expect("valid");
        assert_eq!(c.server.header_read_timeout, Duration::from_secs(10));
        assert_eq!(c.upstreams["origins"].backends[1].weight(), 3);
        assert_eq!(c.routes[0].path_prefix, "/");
    }

    #[test]
    fn unknown_fields_are_refused_with_their_line() {
        let err = parse(&MINIMAL.replace("upstream = \"origins\"", "upstream = \"origins\"\ncolour = 1"))
            .expect_err("unknown field");
        let msg = err.to_string();
        assert!(msg.starts_with("gw.toml:10:"), "{msg}");
        assert!(msg.contains("unknown field `colour`"), "{msg}");
    }

    #[test]
    fn names_that_point_nowhere_are_refused_with_field_and_line() {
        let err =
            parse(&MINIMAL.replace("upstream = \"origins\"", "upstream = \"elsewhere\"")).expect_err("bad");
        assert_eq!(
            err.to_string(),
            "gw.toml:9: routes[0].upstream: no upstream group `elsewhere` is configured"
        );
        let err =
            parse(&MINIMAL.replace("upstream = \"origins\"", "upstream = \"origins\"\nplugins = [\"nope\"]"))
                .expect_err("bad");
        assert_eq!(err.to_string(), "gw.toml:10: routes[0].plugins[0]: no plugin `nope` is configured");
    }

    #[test]
    fn consistent_hashing_needs_a_valid_key_and_only_it_takes_one() {
        let with =
            |extra: &str| parse(&MINIMAL.replace("weight = 3 }]", &format!("weight = 3 }}]\n{extra}")));
        assert!(with("balance = \"consistent-hash\"\nhash_key = \"cookie:session\"").is_ok());
        let err = with("balance = \"consistent-hash\"").expect_err("no key");
        assert!(err.to_string().contains("upstreams.origins.hash_key"), "{err}");
        let err = with("balance = \"consistent-hash\"\nhash_key = \"body\"").expect_err("bad key");
        assert!(err.to_string().contains("`body`"), "{err}");
        assert!(with("hash_key = \"path\"").is_err());
        assert!(with("balance = \"least-request\"").is_ok());
        assert!(with("balance = \"fastest\"").is_err());
    }

    #[test]
    fn operator_sections_are_checked_naming_the_field() {
        let with = |extra: &str| parse(&format!("{extra}\n{MINIMAL}"));
        let err = with("[traces]\nendpoint = \"http://127.0.0.1:4318/v1/traces\"\nsample_ratio = 2.0")
            .expect_err("ratio");
        assert!(err.to_string().contains("traces.sample_ratio: must be between 0 and 1"), "{err}");
        let err = with("[admin]\ntoken = \"\"").expect_err("empty token");
        assert!(err.to_string().contains("admin.token"), "{err}");
        let err = with("[log]\naccess_fields = [\"colour\"]").expect_err("unknown field");
        assert!(err.to_string().contains("colour"), "{err}");
        let ok = with("[admin]\n[log]\nformat = \"json\"\naccess = true").expect("valid");
        assert_eq!(ok.admin.map(|a| a.address.to_string()).as_deref(), Some("127.0.0.1:9901"));
    }

    #[test]
    fn durations_and_sizes_are_read_with_units() {
        let c = parse(&format!(
            "{MINIMAL}\n[plugins.p]\npath = \"p.wasm\"\ndeadline = \"25ms\"\nmemory_limit = \"8MiB\"\nconfig = {{ a = 1 }}\n"
        ))
        .expect("valid");
        let p = &c.plugins["p"];
        assert_eq!(p.deadline, Duration::from_millis(25));
        assert_eq!(p.memory_limit, 8 << 20);
        let spec = c.plugin_spec("p", p);
        assert_eq!(spec.config_json, r#"{"a":1}"#);
        assert_eq!(spec.path, PathBuf::from("p.wasm"));
        let err = parse(&MINIMAL.replace("[[routes]]", "[server]\nidle_timeout = \"soon\"\n\n[[routes]]"))
            .expect_err("bad");
        assert!(err.to_string().contains("idle_timeout") || err.to_string().contains("soon"), "{err}");
    }
}

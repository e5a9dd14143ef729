//! `[upstreams.NAME]`: a group's backends and how they are reached (timeouts, pool, protocol,
//! TLS), balanced ([`BalanceSetting`], [`HashKeySetting`]), checked ([`HealthCheckConfig`],
//! [`StatusRange`]) and limited (outlier detection, circuit breaker).

use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{Check, ConfigError, defaults, typed_error, units};

/// `[upstreams.NAME]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
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
    pub hash_key: Option<HashKeySetting>,
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
    /// How often backends named by DNS are resolved again (sooner when their records' TTL
    /// runs out first).
    #[serde(default = "defaults::resolve_interval", with = "units::duration")]
    pub resolve_interval: Duration,
    /// The largest response head (status line and fields) a backend may send; past it the
    /// response is refused (502, `upstream-head-too-large`).
    #[serde(default = "defaults::max_response_head", with = "units::size")]
    pub max_response_head: usize,
    /// The most fields a response head may have; past it, 502 (`upstream-head-too-large`).
    #[serde(default = "defaults::max_response_fields")]
    pub max_response_fields: usize,
}

/// `[resolver]`: the name servers backends named by DNS are resolved with.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct ResolverSection {
    /// `ip:port` of each name server; none means the system's (`/etc/resolv.conf`, and
    /// `/etc/hosts`).
    pub nameservers: Vec<std::net::SocketAddr>,
}

/// The smallest `max_response_head`: the HTTP/1 parser's buffer is never smaller.
const MIN_RESPONSE_HEAD: usize = 8 * 1024;

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
            && self.max_response_head == other.max_response_head
            && self.max_response_fields == other.max_response_fields
            && self.tls == other.tls
            && (self.tls.as_ref().is_none_or(|t| t.sni.is_some()) || self.backends == other.backends)
    }

    /// Checks group `name`.
    pub(super) fn validate(&self, name: &str, at: &Check<'_>) -> Result<(), ConfigError> {
        let field = |f: &str| format!("upstreams.{name}.{f}");
        if self.resolve_interval.is_zero() {
            return Err(at.invalid(field("resolve_interval"), "must be more than 0"));
        }
        if self.max_response_head < MIN_RESPONSE_HEAD {
            return Err(at.invalid(field("max_response_head"), "must be at least 8KiB"));
        }
        if self.max_response_fields == 0 {
            return Err(at.invalid(field("max_response_fields"), "must be at least 1"));
        }
        if self.backends.is_empty() {
            return Err(at.invalid(field("backends"), "at least one backend is needed"));
        }
        for (i, b) in self.backends.iter().enumerate() {
            if b.weight() == 0 {
                return Err(at.invalid(field(&format!("backends[{i}].weight")), "must be at least 1"));
            }
            if !b.address().rsplit_once(':').is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok()) {
                return Err(at.invalid(
                    field(&format!("backends[{i}]")),
                    format!("`{}` is not host:port", b.address()),
                ));
            }
        }
        // The key itself was checked when it was read.
        match (self.balance, &self.hash_key) {
            (BalanceSetting::ConsistentHash, None) => {
                return Err(at.invalid(field("hash_key"), "`consistent-hash` needs a hash_key"));
            }
            (BalanceSetting::ConsistentHash, Some(_)) | (_, None) => {}
            (_, Some(_)) => {
                return Err(at.invalid(field("hash_key"), "only `consistent-hash` uses a hash_key"));
            }
        }
        if let Some(o) = &self.outlier_detection
            && (o.consecutive_failures == 0 || o.base_ejection.is_zero() || o.max_ejected_percent > 100)
        {
            return Err(at.invalid(
                field("outlier_detection"),
                "consecutive_failures and base_ejection must be more than 0, max_ejected_percent at most 100",
            ));
        }
        if self.protocol == UpstreamProtocol::Auto && self.tls.is_none() {
            return Err(at.invalid(field("protocol"), "`auto` needs tls (ALPN); use `http2` for h2c"));
        }
        if let Some(t) = &self.tls
            && t.client_cert.is_some() != t.client_key.is_some()
        {
            return Err(at.invalid(field("tls"), "client_cert and client_key go together"));
        }
        if let Some(h) = &self.health_check {
            h.validate(&field("health_check"), at)?;
        }
        Ok(())
    }
}

/// `protocol = "..."` toward the backends.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
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
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
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
    /// The client certificate chain and its key, from `client_cert` and `client_key`.
    pub client_cert: Option<(PathBuf, PathBuf)>,
}

/// `[upstreams.NAME.outlier_detection]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
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
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum AllUnhealthy {
    /// Answer 503.
    #[default]
    Fail,
    /// Spread requests over every backend anyway.
    RouteToAll,
}

/// `balance = "..."`; the balancer's own `Policy` is made from it.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
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

/// `hash_key`, checked when read: where a consistent-hashing group takes a request's key from.
/// It is written back as the operator wrote it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(try_from = "String", into = "String")]
pub struct HashKeySetting {
    key: HashKey,
    written: String,
}

/// The parts of a request a [`HashKeySetting`] can name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashKey {
    /// `client-addr`: the client's IP address.
    ClientAddr,
    /// `path`: the request path, without the query.
    Path,
    /// `header:NAME`: the first value of a header.
    Header(http::HeaderName),
    /// `cookie:NAME`: the value of a cookie.
    Cookie(String),
}

impl HashKeySetting {
    /// The part of the request it names.
    pub fn key(&self) -> &HashKey {
        &self.key
    }
}

impl TryFrom<String> for HashKeySetting {
    type Error = String;

    fn try_from(written: String) -> Result<Self, String> {
        let key = match written.split_once(':') {
            None if written == "client-addr" => Some(HashKey::ClientAddr),
            None if written == "path" => Some(HashKey::Path),
            Some(("header", name)) => http::HeaderName::from_bytes(name.as_bytes()).ok().map(HashKey::Header),
            Some(("cookie", name)) if !name.is_empty() => Some(HashKey::Cookie(name.to_owned())),
            _ => None,
        };
        match key {
            Some(key) => Ok(HashKeySetting { key, written }),
            None => Err(typed_error(
                "hash_key",
                format!("`{written}` is not client-addr, path, header:NAME or cookie:NAME"),
            )),
        }
    }
}

impl From<HashKeySetting> for String {
    fn from(setting: HashKeySetting) -> String {
        setting.written
    }
}

/// One backend of a group, as written: a bare address or a weighted table.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
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

impl BackendConfig {
    /// `host:port` as configured: resolved at build time, and the TLS name unless `sni` is set.
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
#[derive(Debug, Clone, Deserialize, Serialize)]
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
    pub expected_status: Vec<StatusRange>,
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
        self.expected_status.iter().any(|r| r.contains(status))
    }

    /// Checks the section at `field` (`upstreams.NAME.health_check`).
    fn validate(&self, field: &str, at: &Check<'_>) -> Result<(), ConfigError> {
        if self.healthy_threshold == 0 || self.unhealthy_threshold == 0 {
            return Err(at.invalid(field, "thresholds must be at least 1"));
        }
        if self.interval.is_zero() {
            return Err(at.invalid(format!("{field}.interval"), "must be more than 0"));
        }
        if !self.path.starts_with('/') {
            return Err(at.invalid(format!("{field}.path"), "must start with `/`"));
        }
        if let Some(host) = &self.host
            && http::HeaderValue::from_str(host).is_err()
        {
            return Err(at.invalid(format!("{field}.host"), format!("`{host}` is not a valid Host")));
        }
        Ok(())
    }
}

/// A status or an inclusive range of them, `"204"` or `"200-299"`, within 100–599; written
/// back as the operator wrote it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(try_from = "String", into = "String")]
pub struct StatusRange {
    range: RangeInclusive<u16>,
    written: String,
}

impl StatusRange {
    /// `lo-hi`, for defaults.
    pub(super) fn between(lo: u16, hi: u16) -> Self {
        StatusRange { range: lo..=hi, written: format!("{lo}-{hi}") }
    }

    /// True if `status` is in the range.
    pub fn contains(&self, status: u16) -> bool {
        self.range.contains(&status)
    }
}

impl TryFrom<String> for StatusRange {
    type Error = String;

    fn try_from(written: String) -> Result<Self, String> {
        let parse = |text: &str| -> Option<(u16, u16)> {
            let (lo, hi) = match text.split_once('-') {
                Some((lo, hi)) => (lo.trim().parse().ok()?, hi.trim().parse().ok()?),
                None => {
                    let s = text.trim().parse().ok()?;
                    (s, s)
                }
            };
            ((100..=599).contains(&lo) && (lo..=599).contains(&hi)).then_some((lo, hi))
        };
        match parse(&written) {
            Some((lo, hi)) => Ok(StatusRange { range: lo..=hi, written }),
            None => Err(typed_error(
                "expected_status",
                format!("`{written}` is not a status or a range like \"200-299\""),
            )),
        }
    }
}

impl From<StatusRange> for String {
    fn from(range: StatusRange) -> String {
        range.written
    }
}

/// How a health check probes.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum HealthCheckKind {
    /// An HTTP GET.
    #[default]
    Http,
    /// A TCP connect.
    Tcp,
}

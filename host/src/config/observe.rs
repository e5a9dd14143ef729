//! The operator-facing sections: `[log]` (format and the access log), `[traces]`
//! (OpenTelemetry export) and `[admin]` (the admin listener).

use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{Check, ConfigError, defaults, units};

/// `[log]`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
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
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Pretty,
    /// One JSON object per line.
    Json,
}

/// A field of the access log; each is written under its own snake_case name.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum AccessField {
    /// The client's `ip:port`.
    Client,
    /// The request method, as the client sent it.
    Method,
    /// The host asked for.
    Host,
    /// The path and query.
    Path,
    /// The status sent to the client (the gateway's own on a local answer).
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
    /// The plugin canaries the request ran (`NAME@canary`, comma-separated), `-` for none.
    Canary,
    /// What the route's cache did: `hit`, `stale`, `miss`, `revalidated`, `bypass`; `-` on a
    /// route without a cache.
    Cache,
}

impl AccessField {
    /// Every field, in log order.
    pub const ALL: [AccessField; 14] = [
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
        AccessField::Canary,
        AccessField::Cache,
    ];
}

/// `[traces]`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
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

impl TracesConfig {
    pub(super) fn validate(&self, at: &Check<'_>) -> Result<(), ConfigError> {
        if !(0.0..=1.0).contains(&self.sample_ratio) {
            return Err(at.invalid("traces.sample_ratio", "must be between 0 and 1"));
        }
        if self.export_interval.is_zero() || self.export_timeout.is_zero() {
            return Err(at.invalid("traces", "export_interval and export_timeout must be more than 0"));
        }
        Ok(())
    }
}

/// How spans are sent.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum TraceProtocol {
    /// OTLP/HTTP with protobuf bodies.
    #[default]
    HttpProtobuf,
    /// OTLP/HTTP with JSON bodies.
    HttpJson,
}

/// `[admin]`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// `ip:port` to bind.
    #[serde(default = "defaults::admin_address")]
    pub address: SocketAddr,
    /// A bearer token every admin request must carry; none by default.
    pub token: Option<String>,
}

impl AdminConfig {
    pub(super) fn validate(&self, at: &Check<'_>) -> Result<(), ConfigError> {
        if self.token.as_deref().is_some_and(str::is_empty) {
            return Err(at.invalid("admin.token", "must not be empty (leave it out for no token)"));
        }
        Ok(())
    }
}

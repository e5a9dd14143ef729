//! Every default the config fills in, kept once. The plugin runtime's own defaults
//! (`PluginSpec::new`, `RuntimeConfig::default`) read the constants here too, so a plugin
//! built in code and one read from a file get the same limits.

use std::net::SocketAddr;
use std::time::Duration;

use super::{RetryOn, StatusRange};
use crate::store::StoreLimits;

/// How long one plugin call may run.
pub const DEADLINE: Duration = Duration::from_millis(10);
/// The memory limit of one plugin instance, in bytes (64 MiB).
pub const MEMORY_LIMIT: usize = 64 << 20;
/// Instances in a plugin's pool.
pub const INSTANCES: usize = 16;
/// How long a plugin call waits for a free instance.
pub const POOL_WAIT: Duration = Duration::from_millis(10);
/// Instance slots the pooling allocator reserves across all plugins.
pub const INSTANCE_SLOTS: u32 = 256;
/// The largest memory limit any plugin may set, in bytes (256 MiB).
pub const MAX_MEMORY: usize = 256 << 20;
/// How often the runtime's epoch advances: the granularity of plugin deadlines. Not
/// configurable.
pub const EPOCH_TICK: Duration = Duration::from_millis(1);
/// What the in-memory store holds at most, across all plugins.
pub const STORE_LIMITS: StoreLimits = StoreLimits { max_entries: 1_000_000, max_bytes: 256 << 20 };
/// What one plugin's share of the in-memory store holds at most.
pub const PLUGIN_STORE_LIMITS: StoreLimits = StoreLimits { max_entries: 100_000, max_bytes: 64 << 20 };
/// The largest component file the gateway loads (128 MiB): compiling is bounded by it too.
pub const MAX_COMPONENT: usize = 128 << 20;
/// The largest body a plugin may hand the host in one value (1 MiB).
pub const MAX_LOCAL_BODY: usize = 1 << 20;
/// Log lines per second one plugin may write.
pub const LOG_RATE: u32 = 100;
/// How long making an instance (instantiation, `init`, each `init-route`) may take: a guest
/// with a language runtime to start needs far more than one call's deadline.
pub const INIT_DEADLINE: Duration = Duration::from_secs(1);
/// An instance whose memory passed this share of its limit is replaced.
pub const RETIRE_MEMORY: f64 = 0.9;

pub(super) fn deadline() -> Duration {
    DEADLINE
}
pub(super) fn init_deadline() -> Duration {
    INIT_DEADLINE
}
pub(super) fn retire_memory() -> f64 {
    RETIRE_MEMORY
}
pub(super) fn memory_limit() -> usize {
    MEMORY_LIMIT
}
pub(super) fn instances() -> usize {
    INSTANCES
}
pub(super) fn pool_wait() -> Duration {
    POOL_WAIT
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
pub(super) fn admin_address() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9901))
}
pub(super) fn handshake_timeout() -> Duration {
    Duration::from_secs(10)
}
pub(super) fn reload_interval() -> Duration {
    Duration::from_secs(5)
}
pub(super) fn mirror_percent() -> u32 {
    100
}
pub(super) fn mirror_in_flight() -> usize {
    64
}
pub(super) fn mirror_timeout() -> Duration {
    Duration::from_secs(10)
}
pub(super) fn redirect_status() -> u16 {
    302
}
pub(super) fn respond_status() -> u16 {
    200
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
pub(super) fn expected_status() -> Vec<StatusRange> {
    vec![StatusRange::between(200, 399)]
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
pub(super) fn retry_on() -> Vec<RetryOn> {
    vec![RetryOn::ConnectFailure, RetryOn::RefusedStream, RetryOn::Reset]
}

pub(super) fn resolve_interval() -> Duration {
    Duration::from_secs(5)
}

pub(super) fn max_response_head() -> usize {
    64 * 1024
}

pub(super) fn max_response_fields() -> usize {
    100
}

pub(super) fn plugin_store_max_entries() -> usize {
    PLUGIN_STORE_LIMITS.max_entries
}

pub(super) fn plugin_store_max_bytes() -> usize {
    PLUGIN_STORE_LIMITS.max_bytes
}

pub(super) fn max_local_body() -> usize {
    MAX_LOCAL_BODY
}

pub(super) fn log_rate() -> u32 {
    LOG_RATE
}

/// A canary's sticky key: the client's IP.
pub(super) fn canary_key() -> String {
    "client-addr".to_owned()
}

/// A canary is rolled back when more than 5% of its calls fault in a window…
pub(super) fn canary_max_fault_rate() -> f64 {
    0.05
}

/// …of one minute…
pub(super) fn canary_window() -> Duration {
    Duration::from_secs(60)
}

/// …with at least 20 calls in it.
pub(super) fn canary_min_calls() -> u64 {
    20
}
/// zstd first: the cheapest to compress and the smallest result of the three at these levels;
/// then brotli, then gzip, which every client takes.
pub(super) fn compress_codings() -> Vec<super::Coding> {
    vec![super::Coding::Zstd, super::Coding::Brotli, super::Coding::Gzip]
}
pub(super) fn gzip_level() -> u32 {
    6
}
pub(super) fn brotli_level() -> u32 {
    4
}
pub(super) fn zstd_level() -> i32 {
    3
}
pub(super) fn compress_types() -> Vec<String> {
    [
        "text/*",
        "application/json",
        "application/javascript",
        "application/xml",
        "application/wasm",
        "image/svg+xml",
    ]
    .map(str::to_owned)
    .to_vec()
}
/// Below this, a compressed body saves less than its framing costs.
pub(super) fn compress_min_size() -> usize {
    256
}
pub(super) fn cache_max_size() -> usize {
    64 << 20
}
pub(super) fn cache_max_object() -> usize {
    8 << 20
}
/// Long enough for an upstream's slow answer; a waiter past it goes upstream itself.
pub(super) fn cache_lock_timeout() -> Duration {
    Duration::from_secs(5)
}

pub(super) fn record_share() -> f64 {
    0.01
}

pub(super) fn record_max_body() -> usize {
    4 << 10
}

/// The most of a body `record` keeps.
pub const RECORD_MAX_BODY_LIMIT: usize = 1 << 20;

pub(super) fn record_redact() -> Vec<String> {
    ["authorization", "proxy-authorization", "cookie", "set-cookie"].map(str::to_owned).to_vec()
}

pub(super) fn record_max_file() -> usize {
    64 << 20
}

//! The metrics registry the gateway exports in the Prometheus text format: what the proxy
//! records per request (requests by route, method and status; request, upstream and plugin
//! call latencies), what is read from the live gateway at each scrape (upstream connections,
//! backend health, plugin pools and faults), and the metrics plugins record through the host
//! API (`wasmgate:plugin/metrics`), with the bounds that keep a plugin from growing the
//! registry without limit.
//!
//! Plugin metrics are exported as `wasmgate_plugin_<name>` with a `plugin` label. A series is
//! made once (under a write lock) and then recorded through a handle each instance keeps, so
//! recording takes no shared lock.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

use std::borrow::Cow;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::exponential_buckets;
use prometheus_client::registry::Registry;

/// Label pairs of one series, the `plugin` label first.
pub type Labels = Vec<(String, String)>;

/// Series one plugin may make at most.
pub const MAX_SERIES_PER_PLUGIN: usize = 1000;
const MAX_NAME: usize = 64;
const MAX_LABELS: usize = 8;
const MAX_LABEL_VALUE: usize = 128;

/// A request, by route, method and status.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// The route's name (`-` when none matched).
    pub route: Arc<String>,
    /// Borrowed for the standard methods; only an extension method allocates.
    pub method: Cow<'static, str>,
    /// The status sent.
    pub status: u16,
}

/// One label: a route, a group.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NameLabel {
    /// As the config names it.
    pub name: Arc<String>,
}

/// A plugin and a phase.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PluginPhaseLabels {
    /// The plugin's name in the config.
    pub plugin: Arc<String>,
    /// The phase, as the WIT names it.
    pub phase: &'static str,
}

/// What the gateway answered a request with itself, as its `x-wasmgate-error` names it.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    /// `no-route`, `upstream-invalid-response`, `field-too-large`…
    pub kind: &'static str,
}

/// A store operation and the backend that served it.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StoreLabels {
    /// `get`, `set`, `delete`, `increment` or `compare-and-swap`.
    pub op: &'static str,
    /// `memory` or `redis`.
    pub backend: &'static str,
}

/// A failed store operation and how it failed.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StoreErrorLabels {
    /// As in [`StoreLabels`].
    pub op: &'static str,
    /// `too-large`, `not-an-integer`, `full` or `unavailable`.
    pub kind: &'static str,
}

/// A mirrored request, by route and how it ended.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MirrorLabels {
    /// The route whose request was copied.
    pub route: Arc<String>,
    /// `answered`, `failed`, `dropped` (every place in flight taken) or `streamed-body`.
    pub outcome: &'static str,
}

/// Bytes through a route's compression, by coding, in (as the upstream sent them) or out (as
/// the client got them).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CompressionLabels {
    /// The route's name.
    pub route: Arc<String>,
    /// `gzip`, `br` or `zstd`.
    pub algorithm: &'static str,
    /// `in` or `out`.
    pub direction: &'static str,
}

/// A route's cache lookups, by what came of them.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CacheLabels {
    /// The route's name.
    pub route: Arc<String>,
    /// `hit`, `stale`, `miss`, `revalidated` or `bypass`.
    pub result: &'static str,
}

/// A plugin, by its name in the config.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PluginLabels {
    /// The plugin's name in the config.
    pub plugin: Arc<String>,
}

/// A histogram recorded with atomics only: observing takes no lock, so every worker can
/// record into the same series on the request path. Buckets are fixed at creation.
#[derive(Debug, Clone)]
pub struct Timing(Arc<TimingInner>);

#[derive(Debug)]
struct TimingInner {
    /// Upper bounds, ascending; the last bucket (`+Inf`) has no bound here.
    bounds: Box<[f64]>,
    /// One more than `bounds`: the last counts what is above every bound.
    counts: Box<[AtomicU64]>,
    /// The sum, in nanoseconds (or billionths of the unit).
    sum_nanos: AtomicU64,
}

impl Timing {
    /// A histogram with these upper bounds.
    pub fn new(bounds: impl Iterator<Item = f64>) -> Self {
        let bounds: Box<[f64]> = bounds.collect();
        let counts = (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect();
        Timing(Arc::new(TimingInner { bounds, counts, sum_nanos: AtomicU64::new(0) }))
    }

    /// Records one observation.
    pub fn observe(&self, value: f64) {
        let inner = &self.0;
        let bucket = inner.bounds.partition_point(|bound| *bound < value);
        inner.counts[bucket].fetch_add(1, Ordering::Relaxed);
        inner.sum_nanos.fetch_add((value.max(0.0) * 1e9) as u64, Ordering::Relaxed);
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.0.counts.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }

    /// The upper bound of the bucket holding quantile `q` (0 to 1) of the observations (the
    /// highest bound for those above it), or none before the first.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let inner = &self.0;
        let counts: Vec<u64> = inner.counts.iter().map(|c| c.load(Ordering::Relaxed)).collect();
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return None;
        }
        let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
        let mut seen = 0;
        let bucket = counts.iter().position(|&c| {
            seen += c;
            seen >= rank
        })?;
        inner.bounds.get(bucket).or(inner.bounds.last()).copied()
    }
}

impl prometheus_client::metrics::TypedMetric for Timing {
    const TYPE: prometheus_client::metrics::MetricType = prometheus_client::metrics::MetricType::Histogram;
}

impl EncodeMetric for Timing {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::MetricEncoder<'_>,
    ) -> Result<(), std::fmt::Error> {
        let inner = &self.0;
        let counts: Vec<u64> = inner.counts.iter().map(|c| c.load(Ordering::Relaxed)).collect();
        let buckets: Vec<(f64, u64)> =
            inner.bounds.iter().copied().chain([f64::MAX]).zip(counts.iter().copied()).collect();
        let sum = inner.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        encoder.encode_histogram::<prometheus_client::encoding::NoLabelSet>(
            sum,
            counts.iter().sum(),
            &buckets,
            None,
        )
    }

    fn metric_type(&self) -> prometheus_client::metrics::MetricType {
        <Self as prometheus_client::metrics::TypedMetric>::TYPE
    }
}

type Histograms<L> = Family<L, Timing, fn() -> Timing>;

fn latency() -> Timing {
    // 100 µs to about 26 s.
    Timing::new(exponential_buckets(0.0001, 2.0, 19))
}

fn short_latency() -> Timing {
    // 10 µs to about 1.3 s: the in-memory store answers in microseconds, Redis in a round trip
    // or a timeout; a wait for a plugin instance is bounded by `pool_wait` (10 ms by default).
    Timing::new(exponential_buckets(0.000_01, 2.0, 18))
}

fn deadline_share() -> Timing {
    Timing::new([0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.8, 1.0].into_iter())
}

fn plugin_latency() -> Timing {
    // 1 µs to about 16 ms: plugin calls are short, and their deadline is ~10 ms.
    Timing::new(exponential_buckets(0.000_001, 2.0, 15))
}

/// The method as a label without allocating for the standard ones.
pub fn method_label(method: &http::Method) -> Cow<'static, str> {
    const KNOWN: [&str; 9] = ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE"];
    match KNOWN.iter().find(|m| **m == method.as_str()) {
        Some(known) => Cow::Borrowed(known),
        None => Cow::Owned(method.as_str().to_owned()),
    }
}

/// The gateway's registry: what `/metrics` renders.
pub struct Metrics {
    registry: Registry,
    plugins: Arc<PluginMetrics>,
    /// Requests answered.
    pub requests: Family<RequestLabels, Counter>,
    /// From a request's arrival to the end of its response body, by route.
    pub request_seconds: Histograms<NameLabel>,
    /// From sending upstream to the response headers, by group.
    pub upstream_seconds: Histograms<NameLabel>,
    /// Plugin calls, by plugin and phase.
    pub plugin_seconds: Histograms<PluginPhaseLabels>,
    /// Plugin calls' time over their deadline, by plugin.
    pub plugin_deadline_used: Histograms<PluginLabels>,
    /// Waits for a free plugin instance (calls that found one idle are not counted), by plugin.
    pub plugin_pool_wait: Histograms<PluginLabels>,
    /// Store operations, by operation and backend.
    pub store_seconds: Histograms<StoreLabels>,
    /// Store operations that failed, by operation and kind.
    pub store_errors: Family<StoreErrorLabels, Counter>,
    /// Requests answered with an error of the gateway's own, by kind.
    pub errors: Family<ErrorLabels, Counter>,
    /// Plugin log lines dropped over the plugin's `log_rate`.
    pub plugin_logs_dropped: Family<PluginLabels, Counter>,
    /// Mirrored requests, by route and outcome.
    pub mirror_requests: Family<MirrorLabels, Counter>,
    /// Bytes into and out of response compression, by route and coding.
    pub compression_bytes: Family<CompressionLabels, Counter>,
    /// Cache lookups, by route and result.
    pub cache_requests: Family<CacheLabels, Counter>,
    /// Cache misses that waited for another request filling the same key, by route.
    pub cache_lock_waits: Family<NameLabel, Counter>,
    /// Entries the cache's memory bound pushed out, by route.
    pub cache_evictions: Family<NameLabel, Counter>,
    /// Bytes the cache holds, by route.
    pub cache_bytes: Family<NameLabel, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        let plugins = Arc::new(PluginMetrics::default());
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        let request_seconds = Histograms::<NameLabel>::new_with_constructor(latency as fn() -> Timing);
        let upstream_seconds = Histograms::<NameLabel>::new_with_constructor(latency as fn() -> Timing);
        let plugin_seconds =
            Histograms::<PluginPhaseLabels>::new_with_constructor(plugin_latency as fn() -> Timing);
        registry.register(
            "wasmgate_requests",
            "Requests answered, by route, method and status",
            requests.clone(),
        );
        registry.register(
            "wasmgate_request_duration_seconds",
            "From a request's arrival to the end of its response, by route (`name`)",
            request_seconds.clone(),
        );
        registry.register(
            "wasmgate_upstream_duration_seconds",
            "From sending a request upstream to its response headers, by group (`name`)",
            upstream_seconds.clone(),
        );
        registry.register(
            "wasmgate_plugin_call_duration_seconds",
            "Plugin calls, by plugin and phase",
            plugin_seconds.clone(),
        );
        let plugin_deadline_used =
            Histograms::<PluginLabels>::new_with_constructor(deadline_share as fn() -> Timing);
        registry.register(
            "wasmgate_plugin_deadline_used_ratio",
            "Plugin calls' time over the plugin's deadline, by plugin",
            plugin_deadline_used.clone(),
        );
        let plugin_pool_wait =
            Histograms::<PluginLabels>::new_with_constructor(short_latency as fn() -> Timing);
        registry.register(
            "wasmgate_plugin_pool_wait_seconds",
            "Time plugin calls waited for a free instance, by plugin (calls that found one idle are not counted)",
            plugin_pool_wait.clone(),
        );
        registry.register_collector(Box::new(PluginCollector(plugins.clone())));
        let store_seconds = Histograms::<StoreLabels>::new_with_constructor(short_latency as fn() -> Timing);
        let store_errors = Family::<StoreErrorLabels, Counter>::default();
        registry.register(
            "wasmgate_store_duration_seconds",
            "Store operations plugins made, by operation and backend",
            store_seconds.clone(),
        );
        registry.register(
            "wasmgate_store_errors",
            "Store operations that failed, by operation and kind",
            store_errors.clone(),
        );
        let errors = Family::<ErrorLabels, Counter>::default();
        registry.register(
            "wasmgate_errors",
            "Requests the gateway answered with an error of its own, by kind (its x-wasmgate-error)",
            errors.clone(),
        );
        let plugin_logs_dropped = Family::<PluginLabels, Counter>::default();
        registry.register(
            "wasmgate_plugin_log_lines_dropped",
            "Plugin log lines dropped because the plugin wrote more than its log_rate",
            plugin_logs_dropped.clone(),
        );
        let mirror_requests = Family::<MirrorLabels, Counter>::default();
        registry.register(
            "wasmgate_mirror_requests",
            "Copies of requests sent to a route's mirror, by route and outcome",
            mirror_requests.clone(),
        );
        let compression_bytes = Family::<CompressionLabels, Counter>::default();
        registry.register(
            "wasmgate_compression_bytes",
            "Response bytes into (`in`) and out of (`out`) compression, by route and coding",
            compression_bytes.clone(),
        );
        let cache_requests = Family::<CacheLabels, Counter>::default();
        registry.register(
            "wasmgate_cache_requests",
            "Cache lookups, by route and result (hit, stale, miss, revalidated, bypass)",
            cache_requests.clone(),
        );
        let cache_lock_waits = Family::<NameLabel, Counter>::default();
        registry.register(
            "wasmgate_cache_lock_waits",
            "Cache misses that waited for another request filling the same key, by route (`name`)",
            cache_lock_waits.clone(),
        );
        let cache_evictions = Family::<NameLabel, Counter>::default();
        registry.register(
            "wasmgate_cache_evictions",
            "Cache entries pushed out by the memory bound, by route (`name`)",
            cache_evictions.clone(),
        );
        let cache_bytes = Family::<NameLabel, Gauge>::default();
        registry.register(
            "wasmgate_cache_bytes",
            "Bytes the cache holds, by route (`name`)",
            cache_bytes.clone(),
        );
        Metrics {
            registry,
            mirror_requests,
            compression_bytes,
            cache_requests,
            cache_lock_waits,
            cache_evictions,
            cache_bytes,
            plugins,
            requests,
            request_seconds,
            upstream_seconds,
            plugin_seconds,
            plugin_deadline_used,
            plugin_pool_wait,
            store_seconds,
            store_errors,
            errors,
            plugin_logs_dropped,
        }
    }
}

impl Metrics {
    /// The plugins' metrics.
    pub fn plugins(&self) -> &Arc<PluginMetrics> {
        &self.plugins
    }

    /// Everything recorded, plus `live` (values read from the serving gateway now), in the
    /// Prometheus (OpenMetrics) text format.
    pub fn render(&self, live: Option<&Registry>) -> String {
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode_registry(&mut text, &self.registry);
        if let Some(live) = live {
            let _ = prometheus_client::encoding::text::encode_registry(&mut text, live);
        }
        let _ = prometheus_client::encoding::text::encode_eof(&mut text);
        text
    }

    /// Only what plugins recorded through the `metrics` interface, in the same format.
    pub fn render_plugins(&self) -> String {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(PluginCollector(self.plugins.clone())));
        let mut text = String::new();
        let _ = prometheus_client::encoding::text::encode_registry(&mut text, &registry);
        text
    }
}

/// What kind a metric name was first used as; it keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// Only goes up.
    Counter,
    /// Set to a value.
    Gauge,
    /// Observations in buckets.
    Histogram,
}

type HistogramFamily = Family<Labels, Timing, fn() -> Timing>;

#[derive(Debug)]
enum PluginFamily {
    Counter(Family<Labels, Counter>),
    Gauge(Family<Labels, Gauge<f64, AtomicU64>>),
    Histogram(HistogramFamily),
}

/// A recorded series: cheap to clone, records without locks.
#[derive(Debug, Clone)]
pub enum Series {
    /// A counter.
    Counter(Counter),
    /// A gauge.
    Gauge(Gauge<f64, AtomicU64>),
    /// A histogram.
    Histogram(Timing),
}

impl Series {
    /// Records `value` as the series' kind does: added, set or observed.
    pub fn record(&self, value: f64) {
        match self {
            // Counters take whole increments; the WIT passes a u64.
            Series::Counter(c) => {
                c.inc_by(value as u64);
            }
            Series::Gauge(g) => {
                g.set(value);
            }
            Series::Histogram(h) => h.observe(value),
        }
    }
}

/// Why a plugin's metric call was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetricError {
    /// The name or a label is malformed or too long, or there are too many labels.
    #[error("invalid metric `{0}`")]
    Invalid(String),
    /// The name is in use as another kind.
    #[error("metric `{name}` is a {existing:?}")]
    Kind {
        /// The metric's name, as the plugin gave it.
        name: String,
        /// The kind it has.
        existing: Kind,
    },
    /// The plugin has made as many series as it may.
    #[error("the plugin has {MAX_SERIES_PER_PLUGIN} series already")]
    TooManySeries,
}

/// Every plugin metric family, by exported name.
#[derive(Debug, Default)]
pub struct PluginMetrics {
    families: RwLock<HashMap<String, PluginFamily>>,
    series: RwLock<HashMap<Arc<str>, Arc<AtomicUsize>>>,
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

impl PluginMetrics {
    /// The series `name` with `labels` of `plugin`, made if new; what an instance caches.
    pub fn series(
        &self,
        plugin: &Arc<str>,
        kind: Kind,
        name: &str,
        labels: &[(String, String)],
    ) -> Result<Series, MetricError> {
        let invalid = || MetricError::Invalid(name.to_owned());
        if !valid_name(name) || labels.len() > MAX_LABELS {
            return Err(invalid());
        }
        for (key, value) in labels {
            if !valid_name(key) || key.starts_with("__") || key == "plugin" || value.len() > MAX_LABEL_VALUE {
                return Err(invalid());
            }
        }
        // OpenMetrics adds `_total` to counters itself; stripped from every kind, so that a
        // gauge cannot take the name a counter is exported under.
        let base = name.strip_suffix("_total").unwrap_or(name);
        let exported = format!("wasmgate_plugin_{base}");
        let mut key: Labels = Vec::with_capacity(labels.len() + 1);
        key.push(("plugin".to_owned(), plugin.to_string()));
        key.extend(labels.iter().cloned());

        let count = self.series_count(plugin);
        let read = self.families.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(family) = read.get(&exported) {
            return Self::get_or_create(family, &key, kind, name, &count);
        }
        drop(read);
        let mut write = self.families.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        let family = write.entry(exported).or_insert_with(|| match kind {
            Kind::Counter => PluginFamily::Counter(Family::default()),
            Kind::Gauge => PluginFamily::Gauge(Family::default()),
            Kind::Histogram => PluginFamily::Histogram(Family::new_with_constructor(|| {
                Timing::new(exponential_buckets(0.0005, 2.0, 15))
            })),
        });
        Self::get_or_create(family, &key, kind, name, &count)
    }

    fn series_count(&self, plugin: &Arc<str>) -> Arc<AtomicUsize> {
        if let Some(count) = self.series.read().unwrap_or_else(std::sync::PoisonError::into_inner).get(plugin)
        {
            return count.clone();
        }
        let mut write = self.series.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        write.entry(plugin.clone()).or_default().clone()
    }

    fn get_or_create(
        family: &PluginFamily,
        key: &Labels,
        kind: Kind,
        name: &str,
        count: &AtomicUsize,
    ) -> Result<Series, MetricError> {
        let existing = match family {
            PluginFamily::Counter(_) => Kind::Counter,
            PluginFamily::Gauge(_) => Kind::Gauge,
            PluginFamily::Histogram(_) => Kind::Histogram,
        };
        if existing != kind {
            return Err(MetricError::Kind { name: name.to_owned(), existing });
        }
        let exists = match family {
            PluginFamily::Counter(f) => f.get(key).is_some(),
            PluginFamily::Gauge(f) => f.get(key).is_some(),
            PluginFamily::Histogram(f) => f.get(key).is_some(),
        };
        if !exists && count.fetch_add(1, Ordering::Relaxed) >= MAX_SERIES_PER_PLUGIN {
            count.fetch_sub(1, Ordering::Relaxed);
            return Err(MetricError::TooManySeries);
        }
        Ok(match family {
            PluginFamily::Counter(f) => Series::Counter(f.get_or_create(key).clone()),
            PluginFamily::Gauge(f) => Series::Gauge(f.get_or_create(key).clone()),
            PluginFamily::Histogram(f) => Series::Histogram(f.get_or_create(key).clone()),
        })
    }
}

/// Renders the plugin families at each scrape: they come and go as plugins name them, so they
/// cannot be registered up front.
#[derive(Debug)]
struct PluginCollector(Arc<PluginMetrics>);

impl Collector for PluginCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let families = self.0.families.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut names: Vec<_> = families.keys().collect();
        names.sort();
        for name in names {
            let help = "recorded by a plugin";
            match &families[name] {
                PluginFamily::Counter(f) => {
                    f.encode(encoder.encode_descriptor(name, help, None, f.metric_type())?)?
                }
                PluginFamily::Gauge(f) => {
                    f.encode(encoder.encode_descriptor(name, help, None, f.metric_type())?)?
                }
                PluginFamily::Histogram(f) => {
                    f.encode(encoder.encode_descriptor(name, help, None, f.metric_type())?)?
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plugin_series_are_exported_with_the_plugin_label_and_bounded() {
        let metrics = Metrics::default();
        let plugin: Arc<str> = Arc::from("limiter");
        let labels = vec![("reason".to_owned(), "quota".to_owned())];
        let denied =
            metrics.plugins().series(&plugin, Kind::Counter, "denied_total", &labels).expect("counter");
        denied.record(2.0);
        denied.record(1.0);
        let gauge = metrics.plugins().series(&plugin, Kind::Gauge, "tokens", &[]).expect("gauge");
        gauge.record(7.5);
        let seconds =
            metrics.plugins().series(&plugin, Kind::Histogram, "wait_seconds", &[]).expect("histogram");
        seconds.record(0.003);
        let text = metrics.render(None);
        assert!(
            text.contains("wasmgate_plugin_denied_total{plugin=\"limiter\",reason=\"quota\"} 3"),
            "{text}"
        );
        assert!(text.contains("wasmgate_plugin_tokens{plugin=\"limiter\"} 7.5"), "{text}");
        assert!(text.contains("wasmgate_plugin_wait_seconds_count{plugin=\"limiter\"} 1"), "{text}");

        assert!(matches!(
            metrics.plugins().series(&plugin, Kind::Gauge, "denied_total", &[]),
            Err(MetricError::Kind { .. })
        ));
        for bad in ["", "1abc", "a-b", "x".repeat(65).as_str()] {
            assert!(metrics.plugins().series(&plugin, Kind::Gauge, bad, &[]).is_err(), "{bad}");
        }
        let plugin_label = vec![("plugin".to_owned(), "other".to_owned())];
        assert!(metrics.plugins().series(&plugin, Kind::Gauge, "g", &plugin_label).is_err());

        let greedy: Arc<str> = Arc::from("greedy");
        for i in 0..MAX_SERIES_PER_PLUGIN {
            let labels = vec![("i".to_owned(), i.to_string())];
            metrics.plugins().series(&greedy, Kind::Counter, "c", &labels).expect("within the bound");
        }
        let one_more = vec![("i".to_owned(), "x".to_owned())];
        assert_eq!(
            metrics.plugins().series(&greedy, Kind::Counter, "c", &one_more).err(),
            Some(MetricError::TooManySeries)
        );
        // An existing series is still recorded.
        let again = vec![("i".to_owned(), "0".to_owned())];
        assert!(metrics.plugins().series(&greedy, Kind::Counter, "c", &again).is_ok());
    }
}

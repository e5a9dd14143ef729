//! Metrics a plugin records: counters, gauges and histograms with labels.
//!
//! The gateway keeps them in its registry and exports them with its own metrics, named
//! `wasmgate_plugin_<name>` and labelled `plugin="<the plugin's name>"`. Names are
//! `[a-zA-Z_][a-zA-Z0-9_]*` (at most 64 bytes); at most 8 labels per series; a plugin may make
//! at most 1000 distinct series. A refused call returns `false` and records nothing: metrics
//! never fail a request.
//!
//! ```no_run
//! use wasmgate_sdk::metrics;
//!
//! // Count denied requests by reason.
//! metrics::counter("denied_total", &[("reason", "missing-token")], 1);
//! ```

use crate::__private::bindings::wasmgate::plugin::metrics as host;

fn owned(labels: &[(&str, &str)]) -> Vec<(String, String)> {
    labels.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
}

/// Adds `value` to the counter `name` with `labels`; `false` if refused.
///
/// ```no_run
/// wasmgate_sdk::metrics::counter("requests_seen_total", &[], 1);
/// ```
pub fn counter(name: &str, labels: &[(&str, &str)], value: u64) -> bool {
    host::counter_add(name, &owned(labels), value)
}

/// Sets the gauge `name` with `labels` to `value`; `false` if refused.
///
/// ```no_run
/// wasmgate_sdk::metrics::gauge("tokens_left", &[("key", "tenant-7")], 12.0);
/// ```
pub fn gauge(name: &str, labels: &[(&str, &str)], value: f64) -> bool {
    host::gauge_set(name, &owned(labels), value)
}

/// Records `value` (e.g. seconds) in the histogram `name` with `labels`; `false` if refused.
/// The buckets run from 0.5 ms to 10 s.
///
/// ```no_run
/// wasmgate_sdk::metrics::histogram("authz_seconds", &[], 0.004);
/// ```
pub fn histogram(name: &str, labels: &[(&str, &str)], value: f64) -> bool {
    host::histogram_record(name, &owned(labels), value)
}

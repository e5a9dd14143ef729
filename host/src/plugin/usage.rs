//! What each plugin uses of its limits: the most linear memory one of its instances reached,
//! the share of its deadline its calls take, and its calls' waits for a free instance; and the
//! flags raised, and logged at most once a minute each, when it comes close to one, with the
//! setting to raise.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::metrics::{Metrics, PluginLabels, Timing};

/// An instance's memory at this share of `memory_limit` or more is flagged…
const MEMORY_SHARE: f64 = 0.8;
/// …and so is a p99 call time at this share of the deadline or more.
const DEADLINE_SHARE: f64 = 0.5;
/// One log line per flag and plugin at most this often.
const WARN_EVERY: Duration = Duration::from_secs(60);

/// A limit a plugin can come close to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pressure {
    /// An instance's linear memory near `memory_limit`.
    Memory,
    /// Calls near their `deadline`.
    Deadline,
    /// Calls that waited for a free instance: too few `instances`.
    PoolWait,
}

impl Pressure {
    /// Every kind, in the order flags are listed.
    pub const ALL: [Pressure; 3] = [Pressure::Memory, Pressure::Deadline, Pressure::PoolWait];

    /// `memory`, `deadline` or `pool-wait`.
    pub fn as_str(self) -> &'static str {
        match self {
            Pressure::Memory => "memory",
            Pressure::Deadline => "deadline",
            Pressure::PoolWait => "pool-wait",
        }
    }

    /// The plugin setting that gives it more room.
    pub fn setting(self) -> &'static str {
        match self {
            Pressure::Memory => "memory_limit",
            Pressure::Deadline => "deadline",
            Pressure::PoolWait => "instances",
        }
    }
}

/// A plugin close to one of its limits.
#[derive(Debug, Clone, PartialEq)]
pub struct Flag {
    /// Which limit.
    pub pressure: Pressure,
    /// What was seen, with the figures.
    pub message: String,
}

/// One plugin's use of its limits, shared by its instances and its pool.
pub struct Usage {
    plugin: Arc<str>,
    memory_limit: usize,
    deadline: Duration,
    memory_peak: AtomicUsize,
    /// Each call's time over the deadline.
    deadline_used: Timing,
    /// Each wait for a free instance (calls that found one idle do not count).
    pool_wait: Timing,
    started: Instant,
    /// When each [`Pressure`] was last logged, in milliseconds since `started` plus one (0:
    /// never).
    warned: [AtomicU64; 3],
}

impl Usage {
    pub(crate) fn new(plugin: Arc<str>, memory_limit: usize, deadline: Duration, metrics: &Metrics) -> Self {
        let labels = PluginLabels { plugin: Arc::new(plugin.to_string()) };
        Usage {
            memory_limit,
            deadline,
            memory_peak: AtomicUsize::new(0),
            deadline_used: metrics.plugin_deadline_used.get_or_create(&labels).clone(),
            pool_wait: metrics.plugin_pool_wait.get_or_create(&labels).clone(),
            started: Instant::now(),
            warned: Default::default(),
            plugin,
        }
    }

    /// An instance's memory grew to `bytes` (within its limit).
    pub(crate) fn memory_grew(&self, bytes: usize) {
        let before = self.memory_peak.fetch_max(bytes, Ordering::Relaxed);
        if bytes > before && bytes as f64 >= MEMORY_SHARE * self.memory_limit as f64 {
            self.warn(Pressure::Memory, || self.memory_message(bytes));
        }
    }

    /// A call ran for `took` (of guest time and host calls, not counting waits).
    pub(crate) fn call_took(&self, took: Duration) {
        self.deadline_used.observe(took.as_secs_f64() / self.deadline.as_secs_f64());
        if took.as_secs_f64() >= DEADLINE_SHARE * self.deadline.as_secs_f64() {
            self.warn(Pressure::Deadline, || {
                format!(
                    "a call took {:.2} ms of its {} ms deadline",
                    took.as_secs_f64() * 1e3,
                    self.deadline.as_millis()
                )
            });
        }
    }

    /// A call waited `took` for a free instance.
    pub(crate) fn waited(&self, took: Duration) {
        self.pool_wait.observe(took.as_secs_f64());
        self.warn(Pressure::PoolWait, || {
            format!("a call waited {:.2} ms for a free instance", took.as_secs_f64() * 1e3)
        });
    }

    /// The plugin's `memory_limit`, in bytes.
    pub fn memory_limit(&self) -> usize {
        self.memory_limit
    }

    /// The plugin's `deadline` for one call.
    pub fn deadline(&self) -> Duration {
        self.deadline
    }

    /// The most linear memory one instance reached, in bytes.
    pub fn memory_peak(&self) -> usize {
        self.memory_peak.load(Ordering::Relaxed)
    }

    /// The 99th percentile of call time over the deadline (to the histogram's bucket), once
    /// there were calls.
    pub fn deadline_p99(&self) -> Option<f64> {
        self.deadline_used.quantile(0.99)
    }

    /// Calls that waited for a free instance, and the 99th percentile of those waits in seconds.
    pub fn pool_waits(&self) -> (u64, Option<f64>) {
        (self.pool_wait.count(), self.pool_wait.quantile(0.99))
    }

    /// The limits the plugin is close to now.
    pub fn flags(&self) -> Vec<Flag> {
        Pressure::ALL
            .into_iter()
            .filter_map(|pressure| {
                let message = match pressure {
                    Pressure::Memory => {
                        let peak = self.memory_peak();
                        (peak as f64 >= MEMORY_SHARE * self.memory_limit as f64)
                            .then(|| self.memory_message(peak))
                    }
                    Pressure::Deadline => {
                        self.deadline_p99().filter(|p99| *p99 >= DEADLINE_SHARE).map(|p99| {
                            format!(
                                "p99 call time is {:.0}% of the {} ms deadline",
                                p99 * 100.0,
                                self.deadline.as_millis()
                            )
                        })
                    }
                    Pressure::PoolWait => {
                        let (waits, _) = self.pool_waits();
                        (waits > 0).then(|| format!("{waits} calls waited for a free instance"))
                    }
                };
                message.map(|message| Flag { pressure, message })
            })
            .collect()
    }

    fn memory_message(&self, bytes: usize) -> String {
        format!(
            "an instance reached {bytes} bytes of linear memory, {:.0}% of its memory_limit ({} bytes)",
            bytes as f64 * 100.0 / self.memory_limit as f64,
            self.memory_limit
        )
    }

    /// Logs `message` unless `pressure` was logged for this plugin within the last minute.
    fn warn(&self, pressure: Pressure, message: impl FnOnce() -> String) {
        let now = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX).saturating_add(1);
        let slot = &self.warned[pressure as usize];
        let last = slot.load(Ordering::Relaxed);
        let due = last == 0 || now.saturating_sub(last) >= WARN_EVERY.as_millis() as u64;
        if !due || slot.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_err() {
            return;
        }
        let message = message();
        tracing::warn!(
            plugin = %self.plugin,
            pressure = pressure.as_str(),
            setting = %format!("plugins.{}.{}", self.plugin, pressure.setting()),
            "plugin close to its limit: {message}; raise the setting"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage() -> Usage {
        Usage::new(Arc::from("p"), 1000, Duration::from_millis(10), &Metrics::default())
    }

    #[test]
    fn flags_memory_at_four_fifths_of_the_limit() {
        let usage = usage();
        usage.memory_grew(500);
        assert!(usage.flags().is_empty());
        usage.memory_grew(800);
        usage.memory_grew(600);
        let flags = usage.flags();
        assert_eq!(flags.len(), 1);
        assert_eq!(flags[0].pressure, Pressure::Memory);
        assert!(flags[0].message.contains("800 bytes of linear memory, 80%"), "{flags:?}");
        assert_eq!(usage.memory_peak(), 800);
    }

    #[test]
    fn flags_a_p99_at_half_the_deadline_and_any_wait() {
        let usage = usage();
        for _ in 0..99 {
            usage.call_took(Duration::from_micros(100));
        }
        assert_eq!(usage.deadline_p99(), Some(0.01));
        assert!(usage.flags().is_empty());
        for _ in 0..5 {
            usage.call_took(Duration::from_millis(6));
        }
        assert_eq!(usage.deadline_p99(), Some(0.8));
        usage.waited(Duration::from_millis(2));
        let kinds: Vec<Pressure> = usage.flags().iter().map(|f| f.pressure).collect();
        assert_eq!(kinds, [Pressure::Deadline, Pressure::PoolWait]);
        assert_eq!(usage.pool_waits().0, 1);
    }

    #[test]
    fn logs_each_pressure_once_a_minute_at_most() {
        let usage = usage();
        let mut logged = 0;
        for _ in 0..3 {
            usage.warn(Pressure::PoolWait, || {
                logged += 1;
                String::new()
            });
        }
        assert_eq!(logged, 1);
        usage.warn(Pressure::Memory, || {
            logged += 1;
            String::new()
        });
        assert_eq!(logged, 2);
    }
}

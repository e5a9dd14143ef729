//! [`LogLimit`]: how much one plugin may write to the gateway's log. A line is cut at
//! [`MAX_LOG_LINE`] bytes, and lines past the plugin's `log_rate` are dropped and counted, so
//! that a plugin cannot flood the log or hold the host up writing it.

use std::sync::LazyLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use prometheus_client::metrics::counter::Counter;

/// The longest message a plugin log line keeps, in bytes; the rest is cut.
pub(super) const MAX_LOG_LINE: usize = 4096;

/// One plugin's log rate, shared by all its instances: a token bucket of one second's worth
/// of lines, kept as the time at which it is empty again (GCRA), so that admitting a line is
/// one compare-and-swap and takes no lock.
pub(crate) struct LogLimit {
    /// Nanoseconds since [`EPOCH`] until which the bucket is spent.
    spent_until: AtomicU64,
    /// Nanoseconds one line costs; a burst may use one second's credit.
    per_line: u64,
    /// Lines dropped since the last line written.
    dropped: AtomicU64,
    dropped_total: Counter,
}

static EPOCH: LazyLock<Instant> = LazyLock::new(Instant::now);

const SECOND: u64 = 1_000_000_000;

impl LogLimit {
    /// `rate` lines per second (at least 1), counting drops in `dropped_total`.
    pub(crate) fn new(rate: u32, dropped_total: Counter) -> Self {
        LogLimit {
            spent_until: AtomicU64::new(0),
            per_line: SECOND / u64::from(rate.max(1)),
            dropped: AtomicU64::new(0),
            dropped_total,
        }
    }

    /// Whether a line may be written now; if so, with how many were dropped before it.
    pub(crate) fn admit(&self) -> Option<u64> {
        let now = u64::try_from(EPOCH.elapsed().as_nanos()).unwrap_or(u64::MAX);
        let mut spent = self.spent_until.load(Ordering::Relaxed);
        loop {
            let next = spent.max(now) + self.per_line;
            if next - now > SECOND {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                self.dropped_total.inc();
                return None;
            }
            match self.spent_until.compare_exchange_weak(spent, next, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return Some(self.dropped.swap(0, Ordering::Relaxed)),
                Err(actual) => spent = actual,
            }
        }
    }
}

impl LogLimit {
    /// Whether `plugin` may write a line now; the lines dropped before it, if any, are
    /// reported first.
    pub(crate) fn admit_line(&self, plugin: &str) -> bool {
        let Some(dropped) = self.admit() else { return false };
        if dropped > 0 {
            tracing::warn!(target: "wasmgate::plugin", plugin, dropped, "plugin log lines dropped: over its log_rate");
        }
        true
    }
}

/// `message` cut to at most [`MAX_LOG_LINE`] bytes on a character boundary, and how many
/// bytes were cut.
pub(crate) fn cut(message: &str) -> (&str, usize) {
    if message.len() <= MAX_LOG_LINE {
        return (message, 0);
    }
    let end = message.floor_char_boundary(MAX_LOG_LINE);
    (&message[..end], message.len() - end)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_of_one_second_passes_then_lines_are_dropped_and_counted() {
        let counter = Counter::default();
        let limit = LogLimit::new(50, counter.clone());
        let admitted = (0..200).filter(|_| limit.admit().is_some()).count();
        // One second's credit, plus what a busy machine earns while the loop runs.
        assert!((50..=70).contains(&admitted), "{admitted} admitted");
        assert_eq!(counter.get(), 200 - admitted as u64);
        std::thread::sleep(std::time::Duration::from_millis(100));
        assert_eq!(limit.admit(), Some(200 - admitted as u64), "the next line says how many were dropped");
    }

    #[test]
    fn long_lines_are_cut_on_a_character_boundary() {
        let line = "é".repeat(MAX_LOG_LINE);
        let (kept, cut_bytes) = cut(&line);
        assert!(kept.len() <= MAX_LOG_LINE && kept.len() > MAX_LOG_LINE - 2);
        assert_eq!(kept.len() + cut_bytes, line.len());
        assert_eq!(cut("short"), ("short", 0));
    }
}

//! How a long compile shows while it runs: a spinner with the plugin's name and the seconds so
//! far on a terminal (`check`, or `run` by hand), else a log line every few seconds. A component
//! with a language runtime inside compiles for seconds on its first load.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::ProgressBar;

/// How often the log line repeats, and how long a compile runs before anything shows.
pub(super) const EVERY: Duration = Duration::from_secs(2);

/// One plugin's compile, shown.
pub(super) struct Progress<'a> {
    plugin: &'a str,
    bytes: usize,
    started: Instant,
    spinner: Option<ProgressBar>,
}

impl<'a> Progress<'a> {
    pub(super) fn new(plugin: &'a str, bytes: usize, started: Instant) -> Self {
        Progress { plugin, bytes, started, spinner: None }
    }

    /// The compile is still running.
    pub(super) fn tick(&mut self) {
        let seconds = self.started.elapsed().as_secs();
        if self.spinner.is_none() && !std::io::stderr().is_terminal() {
            tracing::info!(plugin = self.plugin, bytes = self.bytes, seconds, "plugin still compiling");
            return;
        }
        let spinner = self.spinner.get_or_insert_with(|| {
            let spinner = ProgressBar::new_spinner();
            spinner.enable_steady_tick(Duration::from_millis(120));
            spinner
        });
        let mb = self.bytes as f64 / 1e6;
        spinner.set_message(format!("compiling plugin {} ({mb:.1} MB): {seconds} s", self.plugin));
    }
}

impl Drop for Progress<'_> {
    fn drop(&mut self) {
        if let Some(spinner) = self.spinner.take() {
            spinner.finish_and_clear();
        }
    }
}

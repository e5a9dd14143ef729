//! The plugin's log: messages appear in the gateway's log under the plugin's name. Also
//! [`LogEntry`], what [`Plugin::on_log`](crate::Plugin::on_log) is told about a finished
//! request.
//!
//! Each level has a function taking a `&str` and a macro taking `format!` arguments:
//!
//! ```no_run
//! use wasmgate_sdk::log;
//!
//! log::info("config loaded");
//! let backends = 3;
//! log::warn!("only {backends} backends healthy");
//! ```

use crate::__private::bindings::wasmgate::plugin::{log as host, types as wit};

/// Writes `message` at trace level.
///
/// ```no_run
/// wasmgate_sdk::log::trace("entering select_upstream");
/// ```
pub fn trace(message: &str) {
    host::write(wit::Level::Trace, message);
}

/// Writes `message` at debug level.
///
/// ```no_run
/// wasmgate_sdk::log::debug("cache miss");
/// ```
pub fn debug(message: &str) {
    host::write(wit::Level::Debug, message);
}

/// Writes `message` at info level.
///
/// ```no_run
/// wasmgate_sdk::log::info("request tagged");
/// ```
pub fn info(message: &str) {
    host::write(wit::Level::Info, message);
}

/// Writes `message` at warn level.
///
/// ```no_run
/// wasmgate_sdk::log::warn("header refused by the host");
/// ```
pub fn warn(message: &str) {
    host::write(wit::Level::Warn, message);
}

/// Writes `message` at error level.
///
/// ```no_run
/// wasmgate_sdk::log::error("no backend left");
/// ```
pub fn error(message: &str) {
    host::write(wit::Level::Error, message);
}

/// Writes a `format!` message at trace level.
///
/// ```no_run
/// let n = 2;
/// wasmgate_sdk::log::trace!("attempt {n}");
/// ```
#[doc(inline)]
pub use crate::__log_trace as trace;

/// Writes a `format!` message at debug level.
///
/// ```no_run
/// let key = "user-1";
/// wasmgate_sdk::log::debug!("hashing on {key}");
/// ```
#[doc(inline)]
pub use crate::__log_debug as debug;

/// Writes a `format!` message at info level.
///
/// ```no_run
/// let status = 200;
/// wasmgate_sdk::log::info!("answered {status}");
/// ```
#[doc(inline)]
pub use crate::__log_info as info;

/// Writes a `format!` message at warn level.
///
/// ```no_run
/// let name = "x-tag";
/// wasmgate_sdk::log::warn!("{name} refused");
/// ```
#[doc(inline)]
pub use crate::__log_warn as warn;

/// Writes a `format!` message at error level.
///
/// ```no_run
/// let group = "canary";
/// wasmgate_sdk::log::error!("no such group {group:?}");
/// ```
#[doc(inline)]
pub use crate::__log_error as error;

// The macros live at the crate root because `#[macro_export]` puts them there; the `pub use`
// lines above give them their public names next to the functions of the same level.

#[doc(hidden)]
#[macro_export]
macro_rules! __log_trace {
    ($($arg:tt)+) => { $crate::log::trace(&::std::format!($($arg)+)) };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __log_debug {
    ($($arg:tt)+) => { $crate::log::debug(&::std::format!($($arg)+)) };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __log_info {
    ($($arg:tt)+) => { $crate::log::info(&::std::format!($($arg)+)) };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __log_warn {
    ($($arg:tt)+) => { $crate::log::warn(&::std::format!($($arg)+)) };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __log_error {
    ($($arg:tt)+) => { $crate::log::error(&::std::format!($($arg)+)) };
}

/// What [`Plugin::on_log`](crate::Plugin::on_log) is told about a finished request.
///
/// ```
/// use wasmgate_sdk::LogEntry;
///
/// fn slow(entry: &LogEntry) -> bool {
///     entry.duration_us > 1_000_000
/// }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEntry {
    /// The status sent to the client (0 if none was sent).
    pub status: u16,
    /// Microseconds from the request's arrival to the end of the response.
    pub duration_us: u64,
    /// Microseconds waiting for the upstream's response headers, if it went upstream.
    pub upstream_us: Option<u64>,
    /// Request body bytes read from the client.
    pub bytes_in: u64,
    /// Response body bytes sent to the client.
    pub bytes_out: u64,
    /// `host:port` of the backend that answered, if any.
    pub backend: Option<String>,
    /// Why the request failed, if it did.
    pub error: Option<String>,
}

impl From<wit::LogEntry> for LogEntry {
    fn from(entry: wit::LogEntry) -> Self {
        Self {
            status: entry.status,
            duration_us: entry.duration_us,
            upstream_us: entry.upstream_us,
            bytes_in: entry.bytes_in,
            bytes_out: entry.bytes_out,
            backend: entry.backend,
            error: entry.error,
        }
    }
}

//! Clocks and randomness from the host.
//!
//! ```no_run
//! use wasmgate_sdk::clock;
//!
//! let started = clock::monotonic_ns();
//! let id = clock::random_bytes(16);
//! let elapsed_ns = clock::monotonic_ns() - started;
//! # let _ = (id, elapsed_ns);
//! ```

use crate::__private::bindings::wasmgate::plugin::clock as host;

/// Nanoseconds on a monotonic clock: only differences mean anything.
///
/// ```no_run
/// let t = wasmgate_sdk::clock::monotonic_ns();
/// assert!(wasmgate_sdk::clock::monotonic_ns() >= t);
/// ```
pub fn monotonic_ns() -> u64 {
    host::monotonic_ns()
}

/// Milliseconds since the Unix epoch, from the system clock (it may step).
///
/// ```no_run
/// let now_s = wasmgate_sdk::clock::wall_ms() / 1000;
/// # let _ = now_s;
/// ```
pub fn wall_ms() -> u64 {
    host::wall_ms()
}

/// `len` bytes (at most 1024) from a cryptographically secure generator.
///
/// ```no_run
/// let nonce = wasmgate_sdk::clock::random_bytes(12);
/// assert_eq!(nonce.len(), 12);
/// ```
pub fn random_bytes(len: u32) -> Vec<u8> {
    host::random_bytes(len)
}

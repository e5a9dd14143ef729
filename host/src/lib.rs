//! wasmgate: an HTTP gateway whose per-request logic runs in sandboxed WebAssembly components.

pub mod config;
pub mod plugin;
pub mod upstream;

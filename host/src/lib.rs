//! wasmgate: an HTTP gateway whose per-request logic runs in sandboxed WebAssembly components.
//!
//! Operators run the `wasmgate` binary with a TOML config ([`config`]); plugin authors write
//! components against the `wasmgate:plugin` WIT contract (see `wit/plugin.wit` and the
//! `wasmgate-sdk` crate). The request's phases, in order, are documented once, in
//! `docs/phases.md`, and [`proxy`] reads in that order.
//!
//! The modules: [`config`] (what the operator writes), [`server`] (listeners, connections,
//! shutdown), [`gateway`] (one generation of loaded config), [`proxy`] (the phases of a
//! request), [`plugin`] (the WebAssembly runtime), [`upstream`] (groups, balancing, health,
//! the upstream client), [`store`] (the key-value store plugins share), [`metrics`] (the
//! registry the gateway exports), [`timed`] (bodies that fail when they stall), [`cli`] (the
//! command line).

pub mod admin;
pub mod cli;
pub mod config;
pub mod gateway;
pub mod metrics;
pub mod plugin;
pub mod proxy;
pub mod server;
pub mod store;
pub mod telemetry;
pub mod timed;
pub mod tls;
pub mod upstream;

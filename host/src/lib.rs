//! wasmgate: an HTTP gateway whose per-request logic runs in sandboxed WebAssembly components.
//!
//! Operators run the `wasmgate` binary with a TOML config ([`config`]); plugin authors write
//! components against the `wasmgate:plugin` WIT contract (see `wit/plugin.wit` and the
//! `wasmgate-sdk` crate). The request's phases, in order, are documented once, in
//! `docs/phases.md`, and [`proxy`] reads in that order.
//!
//! The modules, leaf first; each imports only modules listed before it (`.ci/module-cycles.py`
//! checks that no cycle comes back):
//!
//! - [`timed`] (bodies that fail when they stall), [`store`] (the key-value store plugins
//!   share), [`handover`] (passing listening sockets to a successor), `head` (the rules of an HTTP head that the proxy and plugins share), [`config`]
//!   (what the operator writes), [`metrics`] (the registry the gateway exports);
//! - [`telemetry`] (traces), [`tls`] (listener certificates), [`upstream`] (groups, balancing,
//!   health, the upstream client, and what each upstream failure is), [`cache`] (the HTTP
//!   cache: stored responses and RFC 9111's rules for them), [`recording`] (a sample of a
//!   route's requests, written for `plugin test` to replay);
//! - [`plugin`] (the WebAssembly runtime and the host API);
//! - [`proxy`] (the steps and phases of a request);
//! - [`toolkit`] (the plugin author's tools: `plugin inspect` and `plugin test`);
//! - [`gateway`] (one generation of loaded config), [`reload`] (swapping generations in);
//! - [`admin`] (the admin API), [`server`] (listeners, connections, draining);
//! - [`cli`] (the command line).
//!
//! `lib.rs` and `main.rs` stand above them all.

pub mod admin;
pub mod cache;
pub mod cli;
pub mod config;
pub mod gateway;
pub mod handover;
pub(crate) mod head;
pub mod metrics;
pub mod plugin;
pub mod proxy;
pub mod recording;
pub mod reload;
pub mod server;
pub mod store;
pub mod telemetry;
pub mod timed;
pub mod tls;
pub mod toolkit;
pub mod upstream;

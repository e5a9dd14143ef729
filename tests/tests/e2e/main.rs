//! The end-to-end tests: the real gateway (in process, or the `wasmgate` binary), real
//! compiled plugins and real origins on 127.0.0.1. One test executable holds every module, so
//! the suite links once; run one module or test with
//! `cargo test -p wasmgate-tests --test e2e <module>::<name>`.

mod cache;
mod compression;
mod dashboard;
mod dns;
mod gateway;
mod guest_outputs;
mod http2_abuse;
mod lifecycle;
mod operations;
mod packaging;
mod plugin_bounds;
mod plugin_tools;
mod plugins;
mod polyglot;
mod request_framing;
mod request_limits;
mod routing;
mod runtime;
mod store_redis;
mod tls_listener;
mod upgrade;
mod upstream;
mod upstream_responses;
mod upstream_tls;

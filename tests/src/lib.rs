//! Support for wasmgate's end-to-end tests.
//!
//! [`wasm`]: the paths of the compiled plugins and test guests, built by `build.rs`;
//! [`harness`]: starting gateways (in-process or the real binary); [`client`]: HTTP/1.1 and
//! HTTP/2 clients; [`tls`]: test certificates and a TLS origin; [`load`]: steady keep-alive
//! load; [`polyglot`]: the Python and JavaScript example plugins; [`rollout`]: reloads and
//! upgrades under that load; [`redis`]: a real Redis server; [`browser`]: a headless Chromium
//! over WebDriver.

pub mod browser;
pub mod client;
pub mod harness;
pub mod load;
pub mod polyglot;
pub mod redis;
pub mod rollout;
pub mod tls;
pub mod wasm;

//! Write wasmgate plugins in Rust.
//!
//! A wasmgate plugin is a WebAssembly component whose code runs at fixed points ("phases") of
//! each request the gateway handles. With this crate a plugin is a type implementing
//! [`Plugin`]: every phase method has a no-op default, so implement only the ones you need, put
//! [`#[wasmgate_sdk::plugin]`](macro@plugin) on the impl, and build the crate (`crate-type =
//! ["cdylib"]`) with `cargo build --target wasm32-wasip2 --release`. The host calls only the
//! phases the impl defines.
//!
//! ```
//! use serde::Deserialize;
//! use wasmgate_sdk::{Action, LocalResponse, Plugin, Request, log};
//!
//! /// Answers `/healthz` itself and tags every other request.
//! struct Tagger {
//!     tag: String,
//! }
//!
//! #[derive(Deserialize)]
//! struct Config {
//!     tag: String,
//! }
//!
//! #[wasmgate_sdk::plugin]
//! impl Plugin for Tagger {
//!     type Config = Config;
//!
//!     fn new(config: Config) -> Result<Self, String> {
//!         if config.tag.is_empty() {
//!             return Err("`tag` must not be empty".to_owned());
//!         }
//!         Ok(Tagger { tag: config.tag })
//!     }
//!
//!     fn on_request_headers(&mut self, req: &mut Request) -> Action {
//!         if req.path() == "/healthz" {
//!             return Action::Respond(LocalResponse::new(200).body("ok\n"));
//!         }
//!         if let Err(error) = req.set_header("x-tag", &self.tag) {
//!             log::warn(&format!("cannot tag the request: {error}"));
//!         }
//!         Action::Continue
//!     }
//! }
//! ```
//!
//! The gateway keeps a pool of instances of each plugin and lends one to each phase call, so
//! one request's phases may run on different instances: carry data between the phases of a
//! request in [`state`], never in the plugin's fields.

// Lets the `#[plugin]` expansion, which names `::wasmgate_sdk`, work in this crate's own tests.
extern crate self as wasmgate_sdk;

mod action;
mod config;
mod edit;
mod request;
mod response;
mod route;
mod upstream;

pub mod cache;
pub mod clock;
pub mod log;
pub mod metrics;
pub mod outbound;
pub mod state;
pub mod store;

#[doc(hidden)]
pub mod __private;

pub use action::{Action, BodyAction, ErrorAction, LocalResponse, UpstreamChoice};
pub use config::NoConfig;
pub use edit::EditError;
pub use log::LogEntry;
pub use request::Request;
pub use response::{Response, Trailers};
pub use route::{PerRoute, RouteConfig};
pub use upstream::{Backend, FailureKind, Upstream, UpstreamFailure};

/// Exports a [`Plugin`] impl as the component's `handler`.
///
/// Put it on `impl Plugin for YourType { .. }`, once per crate. It keeps the impl as written
/// and generates the component exports; `init` reports exactly the phase methods the impl
/// defines, so the host never calls the others.
///
/// ```
/// use wasmgate_sdk::{Action, NoConfig, Plugin, Request};
///
/// struct Nothing;
///
/// #[wasmgate_sdk::plugin]
/// impl Plugin for Nothing {
///     type Config = NoConfig;
///
///     fn new(_config: NoConfig) -> Result<Self, String> {
///         Ok(Nothing)
///     }
///
///     // The only phase the host will call.
///     fn on_request_headers(&mut self, _req: &mut Request) -> Action {
///         Action::Continue
///     }
/// }
/// ```
pub use wasmgate_sdk_macros::plugin;

/// A wasmgate plugin: a config type, a constructor and the phase methods it needs.
///
/// The phases run in this order for one request; each method's default does nothing:
///
/// - [`on_request_headers`](Plugin::on_request_headers): edit the request or answer it.
/// - [`on_request_body`](Plugin::on_request_body): the request body, whole or per chunk.
/// - [`select_upstream`](Plugin::select_upstream): choose where the request goes.
/// - [`on_upstream_request`](Plugin::on_upstream_request): edit the head sent upstream.
/// - [`on_upstream_error`](Plugin::on_upstream_error): an upstream attempt failed.
/// - [`on_response_headers`](Plugin::on_response_headers): edit the response head.
/// - [`on_response_body`](Plugin::on_response_body): each response body chunk.
/// - [`on_response_trailers`](Plugin::on_response_trailers): the trailers, if any.
/// - [`on_log`](Plugin::on_log): the request is over.
///
/// The host creates several instances (a pool) and calls [`new`](Plugin::new) on each; one
/// request's phases may run on different instances, and one instance serves many requests.
/// Keep per-request data in [`state`].
///
/// ```
/// use wasmgate_sdk::{NoConfig, Plugin, Request, Response, Action};
///
/// /// Copies the request's `x-request-id` onto the response.
/// struct EchoId;
///
/// #[wasmgate_sdk::plugin]
/// impl Plugin for EchoId {
///     type Config = NoConfig;
///
///     fn new(_config: NoConfig) -> Result<Self, String> {
///         Ok(EchoId)
///     }
///
///     fn on_response_headers(&mut self, req: &Request, resp: &mut Response) -> Action {
///         if let Some(id) = req.header_bytes("x-request-id") {
///             // A refused value is not worth failing the response for.
///             let _ = resp.set_header("x-request-id", id);
///         }
///         Action::Continue
///     }
/// }
/// ```
pub trait Plugin: Sized + 'static {
    /// The plugin's settings, deserialised from the JSON form of its table in the gateway
    /// config. Use [`NoConfig`] if it has none.
    type Config: serde::de::DeserializeOwned;

    /// Builds an instance from its config, once per pooled instance. An `Err` makes the
    /// gateway refuse to start, with this message: name the bad setting.
    fn new(config: Self::Config) -> Result<Self, String>;

    /// A route's own config for the plugin (`plugins = [{ name = "…", config = { … } }]` in
    /// a route), handed to each instance after [`new`](Plugin::new), once for each route that
    /// gives one. Parse it with [`RouteConfig::parse`] and keep it in a [`PerRoute`], which
    /// finds it again for a request by [`Request::route`]. An `Err` makes the gateway refuse
    /// the config, naming the route. The default refuses any: a route cannot hand settings to
    /// a plugin that would ignore them.
    fn init_route(&mut self, route: &str, config: RouteConfig) -> Result<(), String> {
        let _ = (route, config);
        Err("the plugin takes no per-route config".to_owned())
    }

    /// The request headers arrived: edit them (`req`), or answer with [`Action::Respond`].
    fn on_request_headers(&mut self, req: &mut Request) -> Action {
        let _ = req;
        Action::Continue
    }

    /// The request body. On a route with `request_buffer` set, called once with the whole
    /// body (`end` is true) before the upstream is chosen: `req` may still be edited, and
    /// [`BodyAction::Replace`] sets the body sent upstream. Otherwise called for each chunk as
    /// it streams upstream (`end` on the last, which may be empty), and `req` is read-only.
    /// [`BodyAction::Respond`] answers the client instead, while its response has not begun.
    fn on_request_body(&mut self, req: &mut Request, chunk: Vec<u8>, end: bool) -> BodyAction {
        let _ = (req, chunk, end);
        BodyAction::Continue
    }

    /// Chooses where the request goes; [`UpstreamChoice::Default`] leaves it to the route's
    /// balancer.
    fn select_upstream(&mut self, req: &Request, upstream: &Upstream) -> UpstreamChoice {
        let _ = (req, upstream);
        UpstreamChoice::Default
    }

    /// The head about to go upstream (hop-by-hop headers stripped, forwarding headers added):
    /// edit it, or answer with [`Action::Respond`].
    fn on_upstream_request(&mut self, req: &mut Request) -> Action {
        let _ = req;
        Action::Continue
    }

    /// An upstream attempt failed: retry, answer, or let the host answer.
    fn on_upstream_error(&mut self, req: &Request, failure: &UpstreamFailure) -> ErrorAction {
        let _ = (req, failure);
        ErrorAction::Default
    }

    /// The response headers arrived: edit the status and headers (`resp`), or replace the
    /// response with [`Action::Respond`].
    fn on_response_headers(&mut self, req: &Request, resp: &mut Response) -> Action {
        let _ = (req, resp);
        Action::Continue
    }

    /// A chunk of the response body as it streams to the client; `end` on the last one (which
    /// may be empty). Keep what must span chunks (a partial token) in [`state`].
    /// [`BodyAction::Respond`] is not allowed here: the response has begun.
    fn on_response_body(&mut self, req: &Request, chunk: Vec<u8>, end: bool) -> BodyAction {
        let _ = (req, chunk, end);
        BodyAction::Continue
    }

    /// The upstream sent trailers after the response body: read and edit them.
    fn on_response_trailers(&mut self, trailers: &mut Trailers) {
        let _ = trailers;
    }

    /// The request is over; `entry` says how it went. Nothing can be edited any more.
    fn on_log(&mut self, req: &Request, entry: &LogEntry) {
        let _ = (req, entry);
    }
}

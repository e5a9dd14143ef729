//! The host side of the WIT contract (`wit/plugin.wit`), generated in this one place.
//!
//! Imports are synchronous (each one is a short read or edit of the request context, and a
//! sync host function costs no boxed future), except those that may wait on I/O: the shared
//! store (a remote backend waits on the network) and outbound calls. Exports are called
//! asynchronously so that the epoch deadline can yield a long-running guest back to tokio
//! instead of blocking a worker.
//!
//! The generated code stays in a private module; the rest of `plugin` uses the items named
//! below, and nothing outside `plugin` sees a generated type.

mod generated {
    wasmtime::component::bindgen!({
        world: "plugin",
        path: "../wit",
        imports: {
            "wasmgate:plugin/store.get": async,
            "wasmgate:plugin/store.set": async,
            "wasmgate:plugin/store.delete": async,
            "wasmgate:plugin/store.increment": async,
            "wasmgate:plugin/store.compare-and-swap": async,
            "wasmgate:plugin/outbound.call": async,
        },
        exports: { default: async },
        additional_derives: [PartialEq],
    });
}

pub(crate) use self::generated::exports::wasmgate::plugin::handler::Guest as Handler;
pub(crate) use self::generated::wasmgate::plugin::{
    cache, clock, log, metrics, outbound, request, response, state, store, types, upstream,
};
pub(crate) use self::generated::{Plugin, PluginIndices};

/// The optional export of `plugin-with-routes` (0.1.1), looked up by name: the host's bindings
/// are those of `plugin`, which every component exports, so that one without it still loads.
pub(crate) const ROUTES: &str = "wasmgate:plugin/routes@0.1.2";
/// The function of [`ROUTES`].
pub(crate) const INIT_ROUTE: &str = "init-route";

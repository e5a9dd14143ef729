//! The host side of the WIT contract (`wit/plugin.wit`), generated in this one place.
//!
//! Imports are synchronous (each one is a short read or edit of the request context, and a
//! sync host function costs no boxed future), except those that may wait on I/O: the shared
//! store (a remote backend waits on the network) and outbound calls. Exports are called
//! asynchronously so that the epoch deadline can yield a long-running guest back to tokio
//! instead of blocking a worker.

#![allow(missing_docs, unreachable_pub, reason = "generated code")]

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

pub use self::wasmgate::plugin::types;

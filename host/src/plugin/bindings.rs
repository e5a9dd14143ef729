//! The host side of the WIT contract (`wit/plugin.wit`), generated in this one place.
//!
//! Imports are synchronous (each one is a short read or edit of the request context, and a
//! sync host function costs no boxed future); exports are called asynchronously so that the
//! epoch deadline can yield a long-running guest back to tokio instead of blocking a worker.

#![allow(missing_docs, unreachable_pub, reason = "generated code")]

wasmtime::component::bindgen!({
    world: "plugin",
    path: "../wit",
    exports: { default: async },
    additional_derives: [PartialEq],
});

pub use self::wasmgate::plugin::types;

//! The compiled WebAssembly components the tests load: one constant per component, holding the
//! absolute path of its `.wasm` file.
//!
//! `build.rs` builds them before this crate compiles, in release and for wasm32-wasip2: the
//! shipped plugins of `plugins/` ([`ADD_HEADER`], [`DENY`], [`ROUND_ROBIN`], [`SET_HOST`]) and
//! the test guest of `tests/guests/` ([`MISBEHAVE`], whose config `{"mode": "..."}` picks how it
//! misbehaves; see `tests/guests/README.md`). [`ALL`] lists them by package name.
//!
//! ```no_run
//! let bytes = std::fs::read(wasmgate_tests::wasm::DENY).expect("built by build.rs");
//! ```

include!(concat!(env!("OUT_DIR"), "/wasm_paths.rs"));

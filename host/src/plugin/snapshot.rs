//! Snapshots of a plugin taken after its `init`, so that fresh instances start configured.
//!
//! Under per-request isolation every call gets a fresh instance, and running `init` for each
//! (parsing the config, a language runtime's start) would cost more than the call itself. At
//! load the gateway instead runs `init` once, in an instrumented copy of the component, reads
//! back every core instance's memories and globals, and writes them into a new component as
//! its initial state (Wizer's approach, through `wasmtime-wizer`). Instances of that component
//! start where `init` left off, and the pooling allocator maps their memory copy-on-write.
//!
//! A snapshot is refused, and the plugin keeps running `init` in each instance, when `init`
//! leaves the guest holding host resources (a WASI stream, say): their handles would dangle in
//! every instance made from it.

use wasmtime::Store;
use wasmtime::component::{Component, Instance, Lift, Linker, WasmList};
use wasmtime_wizer::{ComponentInstanceState, Wizer};

use super::PluginError;
use super::bindings::types::Phases;
use super::cache::CompileCache;
use super::host_api::InstanceState;
use super::pool::{Factory, Template};

/// Why a plugin could not be snapshotted after `init`.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SnapshotError {
    #[error("the component cannot be instrumented: {0}")]
    Instrument(String),
    #[error("the instrumented component does not compile or link: {0}")]
    Compile(String),
    #[error(transparent)]
    Init(#[from] PluginError),
    #[error(
        "`init` left the guest holding host resources (a WASI stream, say), whose handles a snapshot cannot keep"
    )]
    HoldsResources,
    #[error("reading the instance's state failed: {0}")]
    Read(String),
}

/// Runs the plugin's `init` in an instrumented copy of `component` and returns the template
/// of its snapshot, and the phases `init` declared. Blocking work (instrumenting, compiling):
/// call it off the runtime's workers.
pub(crate) async fn take(
    factory: &Factory,
    linker: &Linker<InstanceState>,
    cache: &CompileCache,
    component: &[u8],
) -> Result<(Template, Phases), SnapshotError> {
    let wizer = Wizer::new();
    let (context, instrumented) =
        wizer.instrument_component(component).map_err(|e| SnapshotError::Instrument(format!("{e:#}")))?;
    let hash = CompileCache::content_hash(&instrumented);
    let probe = cache
        .load(&factory.engine, &instrumented, &hash)
        .and_then(|(compiled, _)| template(linker, &compiled, false))
        .map_err(|e| SnapshotError::Compile(format!("{e:#}")))?;
    let (mut store, made) = factory.instantiate(&probe).await?;
    let phases = factory.initialize(&mut store, &probe, &made).await?;
    if store.data().holds_resources() {
        return Err(SnapshotError::HoldsResources);
    }
    factory.arm(&mut store, super::Phase::Init, false);
    let mut access = Access { store: &mut store, instance: made.instance, failed: None };
    let snapshot = wizer.snapshot_component(&context, &mut access).await;
    if let Some(error) = access.failed {
        return Err(SnapshotError::Read(error));
    }
    let snapshot = snapshot.map_err(|e| SnapshotError::Read(format!("{e:#}")))?;
    // The snapshot holds what `init` drew from the clock and the random source: it is this
    // load's own, never cached on disk.
    let template = cache
        .compile(&factory.engine, &snapshot)
        .and_then(|compiled| template(linker, &compiled, true))
        .map_err(|e| SnapshotError::Compile(format!("{e:#}")))?;
    Ok((template, phases))
}

fn template(
    linker: &Linker<InstanceState>,
    component: &Component,
    initialized: bool,
) -> wasmtime::Result<Template> {
    Template::new(linker.instantiate_pre(component)?, initialized)
}

/// The instrumented instance, read through the accessor functions the instrumentation
/// exports. Wizer's trait has no error path: the first failure is kept and reported after.
struct Access<'a> {
    store: &'a mut Store<InstanceState>,
    instance: Instance,
    failed: Option<String>,
}

impl Access<'_> {
    async fn call<R, T: Default>(
        &mut self,
        instance: &str,
        func: &str,
        read: impl FnOnce(&Store<InstanceState>, R) -> T,
    ) -> T
    where
        R: Lift + Send + Sync + 'static,
    {
        if self.failed.is_some() {
            return T::default();
        }
        let store = &mut *self.store;
        let exported = self.instance.get_export_index(&mut *store, None, instance);
        let index = exported.and_then(|e| self.instance.get_export_index(&mut *store, Some(&e), func));
        let Some(index) = index else {
            self.failed = Some(format!("the instrumented component does not export `{instance}#{func}`"));
            return T::default();
        };
        let called = match self.instance.get_typed_func::<(), (R,)>(&mut *store, index) {
            Ok(typed) => typed.call_async(&mut *store, ()).await,
            Err(error) => Err(error),
        };
        match called {
            Ok((value,)) => read(store, value),
            Err(error) => {
                self.failed = Some(format!("{error:#}"));
                T::default()
            }
        }
    }
}

impl ComponentInstanceState for Access<'_> {
    async fn call_func_ret_list_u8(
        &mut self,
        instance: &str,
        func: &str,
        contents: impl FnOnce(&[u8]) + Send,
    ) {
        self.call(instance, func, |store, list: WasmList<u8>| contents(list.as_le_slice(store))).await
    }

    async fn call_func_ret_s32(&mut self, instance: &str, func: &str) -> i32 {
        self.call(instance, func, |_, value| value).await
    }

    async fn call_func_ret_s64(&mut self, instance: &str, func: &str) -> i64 {
        self.call(instance, func, |_, value| value).await
    }

    async fn call_func_ret_f32(&mut self, instance: &str, func: &str) -> u32 {
        self.call(instance, func, |_, value: f32| value.to_bits()).await
    }

    async fn call_func_ret_f64(&mut self, instance: &str, func: &str) -> u64 {
        self.call(instance, func, |_, value: f64| value.to_bits()).await
    }
}

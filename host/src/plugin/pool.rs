//! Ready instances of one plugin, and how a call borrows one.
//!
//! Pooled plugins keep a fixed number of instances, made at load time; a call pops one and
//! pushes it back when the call succeeds. Idle instances form a stack, so the most recently
//! used (warm in cache, and carrying any state the plugin keeps on purpose, such as a
//! round-robin counter) is used next; the stack's lock is held only for the push or pop. An
//! instance that trapped, ran out of time or memory, or whose call was cancelled is dropped,
//! never reused, and a replacement is made in the background, off the request path.
//! Per-request isolation instead makes a fresh instance for every call and drops it after.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use wasmtime::component::{ComponentExportIndex, InstancePre};
use wasmtime::{Engine, Store, StoreContextMut, Trap, UpdateDeadline};

use super::bindings::{self, types::Phases};
use super::host_api::InstanceState;
use super::log_limit::LogLimit;
use super::usage::Usage;
use super::{Isolation, Phase, PluginError, PluginSpec, Shared};
use crate::metrics::PluginLabels;

/// One live instance and its store. The export table is boxed: an instance moves in and out
/// of its pool on every call, and a pointer moves cheaper than the table.
pub(crate) struct Instance {
    pub(crate) store: Store<InstanceState>,
    pub(crate) bindings: Box<bindings::Plugin>,
    /// Calls it completed.
    calls: u64,
    /// Set once it is worn (`max_calls`, `retire_memory`): true when its replacement is in the
    /// pool, and it goes the next time it comes back.
    retiring: Option<Arc<AtomicBool>>,
}

/// A component linked and ready to instantiate, with the indices of its exports.
pub(crate) struct Template {
    pre: InstancePre<InstanceState>,
    indices: bindings::PluginIndices,
    /// `init-route`, if the component exports `routes`.
    init_route: Option<ComponentExportIndex>,
    /// A snapshot taken after `init`: its instances start configured.
    pub(crate) initialized: bool,
}

impl Template {
    pub(crate) fn new(pre: InstancePre<InstanceState>, initialized: bool) -> wasmtime::Result<Template> {
        let component = pre.component();
        let init_route = component
            .get_export_index(None, bindings::ROUTES)
            .and_then(|routes| component.get_export_index(Some(&routes), bindings::INIT_ROUTE));
        let indices = bindings::PluginIndices::new(&pre)?;
        Ok(Template { pre, indices, init_route, initialized })
    }
}

/// An instance just made, before it is configured.
pub(crate) struct Made {
    pub(crate) instance: wasmtime::component::Instance,
    bindings: bindings::Plugin,
}

impl Made {
    fn into_instance(self, store: Store<InstanceState>) -> Instance {
        Instance { store, bindings: Box::new(self.bindings), calls: 0, retiring: None }
    }
}

/// Makes instances of one plugin: instantiation, limits and `init`.
pub(crate) struct Factory {
    pub(crate) engine: Engine,
    /// What instances are made from: the component, or its snapshot after `init`.
    pub(crate) template: Template,
    pub(crate) id: u32,
    pub(crate) name: Arc<str>,
    /// The name its store entries are kept under (a canary's is its plugin's).
    pub(crate) family: Arc<str>,
    pub(crate) config_json: String,
    /// `(route, config JSON)` for each route that gives the plugin its own config.
    pub(crate) route_configs: Vec<(String, String)>,
    pub(crate) deadline: Duration,
    pub(crate) deadline_ticks: u32,
    init_deadline: Duration,
    init_ticks: u32,
    max_calls: Option<u64>,
    /// Linear memory past which an instance is worn, in bytes.
    retire_bytes: usize,
    pub(crate) memory_limit: usize,
    pub(crate) shared: Arc<Shared>,
    /// The plugin's store: its share of the in-memory one, or Redis.
    pub(crate) store: Arc<dyn crate::store::Store>,
    /// The plugin's log rate, shared by its instances.
    pub(crate) log: Arc<LogLimit>,
    /// What its instances and calls use of its limits.
    pub(crate) usage: Arc<Usage>,
    /// `init` calls run: one per instance, or one in all when instances start from a snapshot.
    inits: AtomicU64,
}

impl Factory {
    /// Worn out: past `max_calls`, or its memory past `retire_memory` of its limit.
    fn worn(&self, instance: &Instance) -> bool {
        self.max_calls.is_some_and(|max| instance.calls >= max)
            || instance.store.data().limits.peak > self.retire_bytes
    }

    pub(crate) fn new(
        engine: Engine,
        pre: InstancePre<InstanceState>,
        id: u32,
        spec: &PluginSpec,
        tick: Duration,
        shared: Arc<Shared>,
    ) -> Result<Self, PluginError> {
        let ticks_of =
            |d: Duration| u32::try_from(d.as_micros().div_ceil(tick.as_micros().max(1))).unwrap_or(u32::MAX);
        let labels = PluginLabels { plugin: Arc::new(spec.name.clone()) };
        let dropped = shared.metrics.plugin_logs_dropped.get_or_create(&labels).clone();
        let template = Template::new(pre, false).map_err(|error| PluginError::Invalid {
            plugin: spec.name.clone(),
            path: spec.path.clone(),
            reason: format!("{error:#}"),
        })?;
        if template.init_route.is_none()
            && let Some((route, _)) = spec.route_configs.first()
        {
            return Err(PluginError::RouteConfigRejected {
                plugin: spec.name.clone(),
                route: route.clone(),
                message: format!(
                    "the component takes no per-route config (it does not export `{}`)",
                    bindings::ROUTES
                ),
            });
        }
        Ok(Factory {
            engine,
            template,
            id,
            name: Arc::from(spec.name.as_str()),
            family: Arc::from(spec.family()),
            config_json: spec.config_json.clone(),
            route_configs: spec.route_configs.clone(),
            deadline: spec.deadline,
            deadline_ticks: ticks_of(spec.deadline),
            init_deadline: spec.init_deadline,
            init_ticks: ticks_of(spec.init_deadline),
            max_calls: spec.max_calls,
            retire_bytes: (spec.memory_limit as f64 * spec.retire_memory) as usize,
            memory_limit: spec.memory_limit,
            store: shared.store_for(spec.family(), spec.store),
            log: Arc::new(LogLimit::new(spec.log_rate, dropped)),
            usage: Arc::new(Usage::new(
                Arc::from(spec.name.as_str()),
                spec.memory_limit,
                spec.deadline,
                &shared.metrics,
            )),
            inits: AtomicU64::new(0),
            shared,
        })
    }

    /// A new instance, ready for its first call: made from the template, and configured by
    /// its `init` unless the template is a snapshot taken after `init`.
    pub(crate) async fn create(&self) -> Result<Instance, PluginError> {
        let (mut store, instance) = self.instantiate(&self.template).await?;
        if !self.template.initialized {
            self.initialize(&mut store, &self.template, &instance).await?;
        }
        Ok(instance.into_instance(store))
    }

    /// The first instance, always configured by its `init`, and the phases `init` declared.
    pub(crate) async fn create_first(&self) -> Result<(Instance, Phases), PluginError> {
        let (mut store, instance) = self.instantiate(&self.template).await?;
        let phases = self.initialize(&mut store, &self.template, &instance).await?;
        Ok((instance.into_instance(store), phases))
    }

    /// A store with the plugin's limits, and an instance of `template` in it.
    pub(crate) async fn instantiate(
        &self,
        template: &Template,
    ) -> Result<(Store<InstanceState>, Made), PluginError> {
        let state = InstanceState::new(
            self.id,
            self.name.clone(),
            self.family.clone(),
            self.usage.clone(),
            self.shared.clone(),
            self.store.clone(),
            self.log.clone(),
        );
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limits);
        store.epoch_deadline_callback(on_epoch_tick);
        self.arm(&mut store, Phase::Init, false);
        let instantiated = match template.pre.instantiate_async(&mut store).await {
            Ok(instance) => template.indices.load(&mut store, &instance).map(|b| (instance, b)),
            Err(error) => Err(error),
        };
        let (instance, bindings) = instantiated.map_err(|error| PluginError::Instantiate {
            plugin: self.name.to_string(),
            reason: format!("{error:#}"),
        })?;
        Ok((store, Made { instance, bindings }))
    }

    /// Runs `init` with the plugin's config, then `init-route` for each route's own config.
    pub(crate) async fn initialize(
        &self,
        store: &mut Store<InstanceState>,
        template: &Template,
        made: &Made,
    ) -> Result<Phases, PluginError> {
        self.inits.fetch_add(1, Ordering::Relaxed);
        self.arm(store, Phase::Init, false);
        let handler = made.bindings.wasmgate_plugin_handler();
        let phases = match handler.call_init(&mut *store, &self.config_json).await {
            Ok(Ok(phases)) => phases,
            Ok(Err(message)) => {
                return Err(PluginError::ConfigRejected { plugin: self.name.to_string(), message });
            }
            Err(error) => return Err(self.fault(Phase::Init, &error, store.data())),
        };
        if let Some(index) = &template.init_route {
            self.init_routes(store, &made.instance, index).await?;
        }
        Ok(phases)
    }

    /// Hands the new instance each route's own config, after `init`.
    async fn init_routes(
        &self,
        store: &mut Store<InstanceState>,
        instance: &wasmtime::component::Instance,
        index: &ComponentExportIndex,
    ) -> Result<(), PluginError> {
        if self.route_configs.is_empty() {
            return Ok(());
        }
        let func = instance
            .get_typed_func::<(&str, &str), (Result<(), String>,)>(&mut *store, index)
            .map_err(|error| PluginError::Instantiate {
                plugin: self.name.to_string(),
                reason: format!("`{}.{}`: {error:#}", bindings::ROUTES, bindings::INIT_ROUTE),
            })?;
        for (route, config) in &self.route_configs {
            self.arm(store, Phase::Init, false);
            match func.call_async(&mut *store, (route, config)).await {
                Ok((Ok(()),)) => {}
                Ok((Err(message),)) => {
                    return Err(PluginError::RouteConfigRejected {
                        plugin: self.name.to_string(),
                        route: route.clone(),
                        message,
                    });
                }
                Err(error) => return Err(self.fault(Phase::Init, &error, store.data())),
            }
        }
        Ok(())
    }

    /// Gives the next call its phase, what it may edit and its full deadline.
    pub(crate) fn arm(&self, store: &mut Store<InstanceState>, phase: Phase, head_open: bool) {
        let state = store.data_mut();
        state.phase = phase;
        state.head_open = head_open;
        state.ticks_left = if phase == Phase::Init { self.init_ticks } else { self.deadline_ticks };
        state.limits.hit = false;
        store.set_epoch_deadline(1);
    }

    /// Names what went wrong in a failed guest call.
    pub(crate) fn fault(&self, phase: Phase, error: &wasmtime::Error, state: &InstanceState) -> PluginError {
        let plugin = self.name.to_string();
        if error.downcast_ref::<Trap>() == Some(&Trap::Interrupt) {
            let deadline = if phase == Phase::Init { self.init_deadline } else { self.deadline };
            PluginError::Deadline { plugin, phase, deadline }
        } else if state.limits.hit {
            PluginError::MemoryLimit { plugin, phase, limit: self.memory_limit }
        } else {
            let reason = match error.downcast_ref::<Trap>() {
                Some(trap) => trap.to_string(),
                None => format!("{error:#}"),
            };
            PluginError::Trap { plugin, phase, reason }
        }
    }
}

/// Every tick, yield to tokio so a long guest call never holds a worker, and stop the call once
/// its ticks run out.
fn on_epoch_tick(mut ctx: StoreContextMut<'_, InstanceState>) -> wasmtime::Result<UpdateDeadline> {
    let state = ctx.data_mut();
    if state.ticks_left == 0 {
        return Ok(UpdateDeadline::Interrupt);
    }
    state.ticks_left -= 1;
    Ok(UpdateDeadline::Yield(1))
}

/// Counters for one plugin, for tests, metrics and the admin API.
#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) created: AtomicU64,
    pub(crate) discarded: AtomicU64,
    pub(crate) retired: AtomicU64,
    pub(crate) traps: AtomicU64,
    pub(crate) deadlines: AtomicU64,
    pub(crate) memory: AtomicU64,
    pub(crate) exhausted: AtomicU64,
}

/// A snapshot of one plugin's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PluginStats {
    /// Instances made since load (including the initial pool).
    pub instances_created: u64,
    /// Instances dropped after a fault or a cancelled call.
    pub instances_discarded: u64,
    /// Instances replaced once worn (`max_calls`, `retire_memory`).
    pub instances_retired: u64,
    /// Instances idle in the pool now.
    pub instances_idle: u64,
    /// Instances the pool holds at most (alive at once, under per-request isolation).
    pub instances_max: u64,
    /// Calls that trapped.
    pub traps: u64,
    /// Calls stopped at their deadline.
    pub deadline_hits: u64,
    /// Calls that passed the memory limit.
    pub memory_limit_hits: u64,
    /// Calls that found no free instance in time.
    pub pool_exhausted: u64,
    /// `init` calls run (instances made from a snapshot run none).
    pub inits: u64,
}

/// The instances of one plugin.
pub(crate) struct Pool {
    pub(crate) factory: Factory,
    isolation: Isolation,
    idle: Mutex<Vec<Instance>>,
    capacity: usize,
    /// The instances alive at once at most: the pool's size.
    max: usize,
    /// Per-request isolation: bounds the fresh instances alive at once.
    fresh: Arc<Semaphore>,
    returned: Notify,
    wait: Duration,
    pub(crate) counters: Counters,
}

impl Pool {
    /// A pool holding `first`, filled up to `size` instances now (at load, not per request).
    pub(crate) async fn new(
        factory: Factory,
        isolation: Isolation,
        size: usize,
        wait: Duration,
        first: Option<Instance>,
    ) -> Result<Arc<Pool>, PluginError> {
        let capacity = if isolation == Isolation::PerRequest { 1 } else { size.max(1) };
        let pool = Arc::new(Pool {
            factory,
            isolation,
            idle: Mutex::new(Vec::with_capacity(capacity)),
            capacity,
            max: size.max(1),
            fresh: Arc::new(Semaphore::new(size.max(1))),
            returned: Notify::new(),
            wait,
            counters: Counters::default(),
        });
        if let Some(first) = first {
            pool.counters.created.fetch_add(1, Ordering::Relaxed);
            pool.push(first);
            for _ in 1..capacity {
                let instance = pool.factory.create().await?;
                pool.counters.created.fetch_add(1, Ordering::Relaxed);
                pool.push(instance);
            }
        }
        Ok(pool)
    }

    /// Borrows an instance for one call.
    pub(crate) async fn checkout(self: &Arc<Self>, phase: Phase) -> Result<Lease, PluginError> {
        let (mut permit, mut waited) = (None, Duration::ZERO);
        let instance = match self.isolation {
            Isolation::PerRequest => {
                let fresh = match self.fresh.clone().try_acquire_owned() {
                    Ok(p) => Ok(p),
                    Err(_) => {
                        let started = tokio::time::Instant::now();
                        let acquire = self.fresh.clone().acquire_owned();
                        let acquired = tokio::time::timeout(self.wait, acquire).await;
                        waited = started.elapsed();
                        self.factory.usage.waited(waited);
                        acquired.map_err(drop).and_then(|p| p.map_err(drop))
                    }
                };
                match fresh {
                    Ok(p) => permit = Some(p),
                    Err(()) => return Err(self.exhausted(phase)),
                }
                let instance = self.factory.create().await.map_err(|e| match e {
                    PluginError::Instantiate { plugin, .. } => {
                        self.counters.exhausted.fetch_add(1, Ordering::Relaxed);
                        PluginError::PoolExhausted { plugin, phase, wait: Duration::ZERO }
                    }
                    other => other,
                })?;
                self.counters.created.fetch_add(1, Ordering::Relaxed);
                instance
            }
            Isolation::Pooled => {
                let (instance, wait) = self.pop(phase).await?;
                waited = wait;
                instance
            }
        };
        Ok(Lease { pool: self.clone(), instance: Some(instance), waited, _permit: permit })
    }

    fn idle(&self) -> std::sync::MutexGuard<'_, Vec<Instance>> {
        // A panic while holding this lock cannot leave the Vec inconsistent: keep using it.
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn push(&self, instance: Instance) {
        let mut idle = self.idle();
        if idle.len() < self.capacity {
            idle.push(instance);
        }
    }

    /// An idle instance, and how long the call waited for it.
    async fn pop(&self, phase: Phase) -> Result<(Instance, Duration), PluginError> {
        if let Some(instance) = self.idle().pop() {
            return Ok((instance, Duration::ZERO));
        }
        let started = tokio::time::Instant::now();
        let deadline = started + self.wait;
        loop {
            // Register interest before looking again, so a return in between is not missed.
            let notified = self.returned.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(instance) = self.idle().pop() {
                let waited = started.elapsed();
                self.factory.usage.waited(waited);
                return Ok((instance, waited));
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                self.factory.usage.waited(started.elapsed());
                return Err(self.exhausted(phase));
            }
        }
    }

    fn exhausted(&self, phase: Phase) -> PluginError {
        self.counters.exhausted.fetch_add(1, Ordering::Relaxed);
        PluginError::PoolExhausted { plugin: self.factory.name.to_string(), phase, wait: self.wait }
    }

    fn put_back(self: &Arc<Self>, mut instance: Instance) {
        if self.isolation == Isolation::PerRequest {
            return drop(instance);
        }
        if instance.retiring.is_none() && self.factory.worn(&instance) {
            // It keeps serving until its replacement is in the pool.
            let replaced = Arc::new(AtomicBool::new(false));
            instance.retiring = Some(replaced.clone());
            self.replace_in_background(Some(replaced));
        }
        let gone = {
            let mut idle = self.idle();
            match &instance.retiring {
                Some(replaced) if replaced.load(Ordering::Acquire) => Some(instance),
                _ if idle.len() < self.capacity => {
                    idle.push(instance);
                    None
                }
                _ => Some(instance),
            }
        };
        if gone.is_some() {
            self.counters.retired.fetch_add(1, Ordering::Relaxed);
        }
        drop(gone);
        self.returned.notify_one();
    }

    /// Puts `fresh`, the replacement of a worn instance, in the pool: in the worn one's place
    /// if it is idle, else beside it, to be dropped when it comes back.
    fn swap_in(&self, fresh: Instance, replaced: &Arc<AtomicBool>) {
        let worn = {
            let mut idle = self.idle();
            let at = idle.iter().position(|i| i.retiring.as_ref().is_some_and(|r| Arc::ptr_eq(r, replaced)));
            match at {
                Some(at) => Some(std::mem::replace(&mut idle[at], fresh)),
                None => {
                    replaced.store(true, Ordering::Release);
                    idle.push(fresh);
                    None
                }
            }
        };
        if worn.is_some() {
            self.counters.retired.fetch_add(1, Ordering::Relaxed);
        }
        drop(worn);
        self.returned.notify_one();
    }

    /// Drops a faulty or abandoned instance and, for pooled plugins, makes its replacement in
    /// the background.
    fn discard(self: &Arc<Self>, instance: Instance) {
        let retiring = instance.retiring.clone();
        drop(instance);
        self.counters.discarded.fetch_add(1, Ordering::Relaxed);
        if self.isolation == Isolation::PerRequest {
            return;
        }
        // A worn instance's replacement is on its way already: it takes the place.
        if let Some(replaced) = retiring {
            replaced.store(true, Ordering::Release);
            return;
        }
        self.replace_in_background(None);
    }

    /// Makes an instance in the background, retrying with backoff: a discarded one's
    /// replacement, or (`replaced`) a worn one's.
    fn replace_in_background(self: &Arc<Self>, replaced: Option<Arc<AtomicBool>>) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        // The task holds the pool weakly: a pool dropped by a config swap stops refilling.
        let pool = Arc::downgrade(self);
        runtime.spawn(async move {
            let mut backoff = Duration::from_millis(50);
            while let Some(pool) = pool.upgrade() {
                match pool.factory.create().await {
                    Ok(instance) => {
                        pool.counters.created.fetch_add(1, Ordering::Relaxed);
                        match &replaced {
                            Some(replaced) => pool.swap_in(instance, replaced),
                            None => pool.put_back(instance),
                        }
                        return;
                    }
                    Err(error) => {
                        let retry_ms = backoff.as_millis() as u64;
                        tracing::error!(
                            plugin = %pool.factory.name,
                            %error,
                            retry_ms,
                            "cannot make a replacement instance"
                        );
                    }
                }
                drop(pool);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        });
    }

    pub(crate) fn stats(&self) -> PluginStats {
        let c = &self.counters;
        PluginStats {
            instances_created: c.created.load(Ordering::Relaxed),
            instances_discarded: c.discarded.load(Ordering::Relaxed),
            instances_retired: c.retired.load(Ordering::Relaxed),
            instances_idle: self.idle().len() as u64,
            instances_max: self.max as u64,
            traps: c.traps.load(Ordering::Relaxed),
            deadline_hits: c.deadlines.load(Ordering::Relaxed),
            memory_limit_hits: c.memory.load(Ordering::Relaxed),
            pool_exhausted: c.exhausted.load(Ordering::Relaxed),
            inits: self.factory.inits.load(Ordering::Relaxed),
        }
    }
}

/// An instance borrowed for one call. Dropped without [`Lease::release`] (a fault, or the
/// request future was cancelled mid-call) the instance is discarded, never reused.
pub(crate) struct Lease {
    pool: Arc<Pool>,
    instance: Option<Instance>,
    /// How long the call waited for a free instance.
    pub(crate) waited: Duration,
    _permit: Option<OwnedSemaphorePermit>,
}

impl Lease {
    pub(crate) fn instance(&mut self) -> Option<&mut Instance> {
        self.instance.as_mut()
    }

    /// The call succeeded: the instance goes back to the pool.
    pub(crate) fn release(mut self) {
        if let Some(mut instance) = self.instance.take() {
            instance.calls += 1;
            self.pool.put_back(instance);
        }
    }

    /// The call failed: counts the fault and discards the instance.
    pub(crate) fn fail(self, phase: Phase, error: &wasmtime::Error) -> PluginError {
        let err = match &self.instance {
            Some(instance) => self.pool.factory.fault(phase, error, instance.store.data()),
            None => PluginError::Trap {
                plugin: self.pool.factory.name.to_string(),
                phase,
                reason: format!("{error:#}"),
            },
        };
        let counter = match err {
            PluginError::Deadline { .. } => &self.pool.counters.deadlines,
            PluginError::MemoryLimit { .. } => &self.pool.counters.memory,
            _ => &self.pool.counters.traps,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(
            plugin = %self.pool.factory.name,
            phase = phase.as_str(),
            error = %err,
            "plugin call failed; instance discarded"
        );
        err
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(instance) = self.instance.take() {
            self.pool.discard(instance);
        }
    }
}

//! The plugin runtime: one wasmtime engine, compiled and cached components, pools of ready
//! instances, per-call limits, and the typed calls the proxy makes at each phase.
//!
//! Loading (compile or read from the cache, link, pre-instantiate, fill the pool, run `init`)
//! happens before serving. A phase call borrows an instance, lends it the request's
//! [`Exchange`], calls the export under an epoch deadline and a memory limit, takes the
//! exchange back, and checks every value the guest returned before the proxy sees it.

mod bindings;
mod cache;
mod canary;
mod error;
mod exchange;
mod footprint;
mod host_api;
mod log_limit;
mod output;
mod pool;
mod progress;
mod snapshot;
mod usage;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use wasmtime::component::{HasSelf, Linker};
use wasmtime::{Engine, EngineWeak, InstanceAllocationStrategy, PoolingAllocationConfig};

pub use self::cache::{CacheOutcome, default_dir as default_cache_dir};
pub use self::canary::{Canary, CanarySpec, SUFFIX as CANARY_SUFFIX};
pub use self::error::PluginError;
pub use self::exchange::Exchange;
pub use self::footprint::Footprint;
pub use self::pool::PluginStats;
pub use self::usage::{Flag, Pressure, Usage};
// The two choices a config makes for a plugin are the config's own types.
pub use crate::config::{FailurePolicy, Isolation};

use self::bindings::{Handler, types};
use self::cache::CompileCache;
use self::host_api::{InstanceState, header_name, header_value, valid_status};
use self::pool::{Factory, Pool};
use self::progress::Progress;
use self::snapshot::SnapshotError;
use crate::config::{Config, PluginConfig, StoreBackend, WhenUnavailable, defaults};
use crate::metrics::{Metrics, PluginPhaseLabels, StoreLabels, Timing};
use crate::store::{MemoryStore, RedisSettings, RedisStore, Store, StoreLimits};
use crate::telemetry::Span;
pub use crate::upstream::FailureKind;
use crate::upstream::{Group, UpstreamError};

/// Writes [`Phase`] and its tables from one list, so that the enum, the WIT names, the phase
/// flags and the chain order cannot drift apart.
macro_rules! phases {
    ($($(#[$doc:meta])* $phase:ident = $name:literal, $flag:expr, $order:ident;)*) => {
        /// A phase a plugin can implement, in the order the proxy calls them.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Phase {
            $($(#[$doc])* $phase,)*
        }

        impl Phase {
            /// Every phase, in order.
            pub const ALL: [Phase; [$($name),*].len()] = [$(Phase::$phase),*];

            /// The phase's name as the WIT's `phases` flags spell it.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Phase::$phase => $name,)*
                }
            }

            fn flag(self) -> types::Phases {
                match self {
                    $(Phase::$phase => $flag,)*
                }
            }

            /// The order in which a route's plugins meet this phase.
            pub fn order(self) -> ChainOrder {
                match self {
                    $(Phase::$phase => ChainOrder::$order,)*
                }
            }
        }
    };
}

phases! {
    /// `init`, when an instance is made (not a request phase).
    Init = "init", types::Phases::empty(), Forward;
    /// `on-request-headers`: the request head arrived.
    RequestHeaders = "request-headers", types::Phases::REQUEST_HEADERS, Forward;
    /// `on-request-body`: a request body chunk, or the whole body.
    RequestBody = "request-body", types::Phases::REQUEST_BODY, Forward;
    /// `select-upstream`: choosing where the request goes.
    SelectUpstream = "select-upstream", types::Phases::SELECT_UPSTREAM, Forward;
    /// `on-upstream-request`: the head about to go upstream.
    UpstreamRequest = "upstream-request", types::Phases::UPSTREAM_REQUEST, Forward;
    /// `on-upstream-error`: an upstream attempt failed.
    UpstreamError = "upstream-error", types::Phases::UPSTREAM_ERROR, Forward;
    /// `on-response-headers`: the response head arrived.
    ResponseHeaders = "response-headers", types::Phases::RESPONSE_HEADERS, Reverse;
    /// `on-response-body`: a response body chunk.
    ResponseBody = "response-body", types::Phases::RESPONSE_BODY, Reverse;
    /// `on-response-trailers`: the response trailers arrived.
    ResponseTrailers = "response-trailers", types::Phases::RESPONSE_TRAILERS, Reverse;
    /// `on-log`: the request is over.
    Log = "log", types::Phases::LOG, Reverse;
}

/// Which way a route's plugin chain runs for a phase: the request side in the order the route
/// lists its plugins, the response side in reverse, so that the first plugin is outermost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChainOrder {
    /// In the route's order.
    Forward,
    /// Last plugin first.
    Reverse,
}

impl Phase {
    /// The phase's place in [`Phase::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Settings shared by every plugin.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Where compiled components are cached; `None` compiles at every start.
    pub cache_dir: Option<PathBuf>,
    /// Instance slots reserved by the pooling allocator, across all plugins.
    pub instance_slots: u32,
    /// The largest memory any instance may have, in bytes (per-plugin limits sit below it).
    pub max_memory: usize,
    /// How often the epoch advances: the granularity of deadlines and of yielding to tokio.
    pub epoch_tick: Duration,
    /// What the in-memory store holds at most, across all plugins.
    pub store_limits: StoreLimits,
    /// The Redis store plugins share instead of the in-memory one, if set.
    pub redis: Option<RedisSettings>,
    /// While the store cannot be reached, answer the request 503 rather than let the plugin
    /// decide.
    pub store_fail_closed: bool,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            cache_dir: cache::default_dir(),
            instance_slots: defaults::INSTANCE_SLOTS,
            max_memory: defaults::MAX_MEMORY,
            epoch_tick: defaults::EPOCH_TICK,
            store_limits: defaults::STORE_LIMITS,
            redis: None,
            store_fail_closed: false,
        }
    }
}

impl RuntimeConfig {
    /// The runtime's settings from the `[runtime]` section: an unset `cache_dir` means the
    /// default directory, and `cache = false` means no cache at all.
    pub fn from_config(config: &Config) -> Self {
        let runtime = &config.runtime;
        RuntimeConfig {
            cache_dir: match (runtime.cache, &runtime.cache_dir) {
                (false, _) => None,
                (true, Some(dir)) => Some(config.resolve(dir)),
                (true, None) => cache::default_dir(),
            },
            instance_slots: runtime.instance_slots,
            max_memory: runtime.max_memory,
            epoch_tick: defaults::EPOCH_TICK,
            store_limits: StoreLimits {
                max_entries: runtime.store_max_entries,
                max_bytes: runtime.store_max_bytes,
            },
            redis: (config.store.backend == StoreBackend::Redis).then(|| RedisSettings {
                url: config.store.url.clone().unwrap_or_default(),
                key_prefix: config.store.key_prefix.clone(),
                pool_size: config.store.pool_size,
                command_timeout: config.store.command_timeout,
                ca: config.store.ca.as_ref().map(|ca| config.resolve(ca)),
            }),
            store_fail_closed: config.store.when_unavailable == WhenUnavailable::FailClosed,
        }
    }
}

/// One plugin as the config describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct PluginSpec {
    /// The name routes refer to.
    pub name: String,
    /// The `.wasm` component.
    pub path: PathBuf,
    /// The SHA-256 (lowercase hex) the component must have, if pinned.
    pub sha256: Option<String>,
    /// The plugin's config, as JSON, handed to `init`.
    pub config_json: String,
    /// `(route, config JSON)` for each route that gives the plugin its own config, in route
    /// order, handed to `init-route` after `init`.
    pub route_configs: Vec<(String, String)>,
    /// How long one call may run.
    pub deadline: Duration,
    /// How long making an instance may take (instantiation, `init`, `init-route`).
    pub init_deadline: Duration,
    /// Calls after which an instance is replaced, if any.
    pub max_calls: Option<u64>,
    /// The share of `memory_limit` past which an instance is replaced.
    pub retire_memory: f64,
    /// The memory limit of one instance, in bytes.
    pub memory_limit: usize,
    /// Pooled instances.
    pub instances: usize,
    /// How long a call waits for a free instance before it fails.
    pub pool_wait: Duration,
    /// What a failure does to the request.
    pub failure: FailurePolicy,
    /// Pooled or fresh per call.
    pub isolation: Isolation,
    /// The plugin's share of the in-memory store.
    pub store: StoreLimits,
    /// The largest body the plugin may hand the host in one value.
    pub max_local_body: usize,
    /// Log lines per second.
    pub log_rate: u32,
    /// A second version for a share of clients.
    pub canary: Option<Box<CanarySpec>>,
}

impl PluginSpec {
    /// A spec with the defaults a config file gets ([`crate::config::defaults`]: 10 ms deadline,
    /// 64 MiB memory, 16 pooled instances, 10 ms pool wait), fail-closed and pooled.
    pub fn new(name: impl Into<String>, path: impl Into<PathBuf>) -> Self {
        PluginSpec {
            name: name.into(),
            path: path.into(),
            sha256: None,
            config_json: "{}".to_owned(),
            route_configs: Vec::new(),
            deadline: defaults::DEADLINE,
            init_deadline: defaults::INIT_DEADLINE,
            max_calls: None,
            retire_memory: defaults::RETIRE_MEMORY,
            memory_limit: defaults::MEMORY_LIMIT,
            instances: defaults::INSTANCES,
            pool_wait: defaults::POOL_WAIT,
            failure: FailurePolicy::FailClosed,
            isolation: Isolation::Pooled,
            store: defaults::PLUGIN_STORE_LIMITS,
            max_local_body: defaults::MAX_LOCAL_BODY,
            log_rate: defaults::LOG_RATE,
            canary: None,
        }
    }

    /// The name the plugin's store entries are kept under: a canary shares its plugin's.
    pub fn family(&self) -> &str {
        self.name.strip_suffix(CANARY_SUFFIX).unwrap_or(&self.name)
    }

    /// Plugin `name` as `[plugins.NAME]` of `config` describes it, its path resolved against
    /// the config file's folder.
    pub fn from_config(name: &str, plugin: &PluginConfig, config: &Config) -> Self {
        let mut spec = PluginSpec {
            name: name.to_owned(),
            path: config.resolve(&plugin.path),
            sha256: plugin.sha256.as_ref().map(|hash| hash.to_ascii_lowercase()),
            // A TOML table always has a JSON form; an empty one is `{}`.
            config_json: json(&plugin.config),
            route_configs: config
                .routes
                .iter()
                .enumerate()
                .flat_map(|(i, route)| {
                    let own = route.plugins.iter().map(|p| p.get_ref());
                    own.filter(|p| p.name == name)
                        .filter_map(|p| p.config.as_ref())
                        .map(move |c| (route.name_at(i), json(c)))
                })
                .collect(),
            deadline: plugin.deadline,
            init_deadline: plugin.init_deadline,
            max_calls: plugin.max_calls,
            retire_memory: plugin.retire_memory,
            memory_limit: plugin.memory_limit,
            instances: plugin.instances,
            pool_wait: plugin.pool_wait,
            failure: plugin.failure,
            isolation: plugin.isolation,
            store: StoreLimits { max_entries: plugin.store_max_entries, max_bytes: plugin.store_max_bytes },
            max_local_body: plugin.max_local_body,
            log_rate: plugin.log_rate,
            canary: None,
        };
        spec.canary = plugin.canary.as_ref().map(|canary| {
            let json = canary.config.as_ref().map_or_else(|| spec.config_json.clone(), json);
            Box::new(CanarySpec::new(&spec, canary, config.resolve(&canary.path), json))
        });
        spec
    }
}

/// A config table's JSON form (a TOML table always has one; an empty one is `{}`).
fn json(table: &toml::Table) -> String {
    serde_json::to_string(table).unwrap_or_else(|_| "{}".to_owned())
}

/// The SHA-256 of a component's bytes, lowercase hex: what `sha256 = "…"` pins.
pub fn content_hash(bytes: &[u8]) -> String {
    CompileCache::content_hash(bytes)
}

/// The engine and everything shared by all plugins.
pub struct Runtime {
    engine: Engine,
    linker: Linker<InstanceState>,
    cache: CompileCache,
    epoch_tick: Duration,
    next_id: AtomicU32,
    /// What the pooling allocator reserves, across all plugins.
    capacity: Footprint,
    shared: Arc<Shared>,
}

/// What every instance of every plugin reaches through the host API, for the life of the
/// process (a reload keeps it).
pub struct Shared {
    /// The key-value store.
    stores: Stores,
    /// Whether a store that cannot be reached fails the request (503).
    pub fail_closed: bool,
    /// Store operation durations, by [`host_api::StoreOp`].
    store_seconds: [Timing; 5],
    /// The registry plugin metrics go to.
    pub metrics: Arc<Metrics>,
}

/// The store's backend: in this process, each plugin with its share, or one Redis for all.
enum Stores {
    Memory(MemoryStore),
    Redis(Arc<RedisStore>),
}

impl Shared {
    /// The store plugin `plugin` reaches: its share of the in-memory store, or Redis. Called
    /// when a plugin is loaded, never on a request.
    pub(crate) fn store_for(&self, plugin: &str, limits: StoreLimits) -> Arc<dyn Store> {
        match &self.stores {
            Stores::Memory(memory) => memory.share(plugin, limits),
            Stores::Redis(redis) => redis.clone(),
        }
    }
}

/// How much of each freed memory slot is kept mapped and reset in place rather than unmapped.
const KEEP_RESIDENT: usize = 1 << 20;

impl Runtime {
    /// Builds the engine (pooling allocator, epoch interruption) and starts its epoch ticker,
    /// with an in-memory store and a metrics registry for the plugins to share.
    pub fn new(config: &RuntimeConfig) -> Result<Runtime, wasmtime::Error> {
        let slots = config.instance_slots.max(1);
        let capacity = Self::capacity_of(slots);
        let mut pooling = PoolingAllocationConfig::new();
        pooling
            .total_component_instances(slots)
            .total_core_instances(capacity.core_instances as u32)
            .total_memories(capacity.memories as u32)
            .total_tables(capacity.tables as u32)
            .total_stacks(slots)
            .max_memory_size(config.max_memory)
            // A slot freed by a dropped instance is reset by copying back only its dirty pages
            // (found with PAGEMAP_SCAN where the kernel has it), not by `madvise`: the next
            // instance in that slot then takes no page faults. Per-request isolation drops an
            // instance per call, so this is most of a fresh instance's cost.
            .linear_memory_keep_resident(KEEP_RESIDENT)
            .table_keep_resident(KEEP_RESIDENT / 16)
            .pagemap_scan(wasmtime::Enabled::Auto);
        let mut wasm = wasmtime::Config::new();
        wasm.epoch_interruption(true)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pooling))
            .max_wasm_stack(512 << 10)
            .async_stack_size(1 << 20);
        let engine = Engine::new(&wasm)?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        bindings::Plugin::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)?;
        let stores = match &config.redis {
            Some(redis) => Stores::Redis(Arc::new(RedisStore::new(redis).map_err(wasmtime::Error::msg)?)),
            None => Stores::Memory(MemoryStore::new(config.store_limits)),
        };
        let metrics = Arc::new(Metrics::default());
        let backend = match &stores {
            Stores::Memory(_) => "memory",
            Stores::Redis(redis) => redis.backend(),
        };
        let store_seconds = host_api::StoreOp::ALL.map(|op| {
            let labels = StoreLabels { op: op.as_str(), backend };
            metrics.store_seconds.get_or_create(&labels).clone()
        });
        spawn_ticker(engine.weak(), config.epoch_tick);
        Ok(Runtime {
            cache: CompileCache::new(&engine, config.cache_dir.clone()),
            engine,
            linker,
            epoch_tick: config.epoch_tick,
            next_id: AtomicU32::new(1),
            capacity,
            shared: Arc::new(Shared {
                stores,
                fail_closed: config.store_fail_closed,
                store_seconds,
                metrics,
            }),
        })
    }

    /// What the pooling allocator reserves for `slots` instance slots. A Rust component holds a
    /// few core instances (its module plus adapter shims) and a memory and table or two; a
    /// language runtime more, so a plugin's pool is checked against these totals at load.
    fn capacity_of(slots: u32) -> Footprint {
        let slots = u64::from(slots);
        Footprint { core_instances: slots * 8, memories: slots * 2, tables: slots * 4 }
    }

    /// Store operations made so far by all plugins, by kind (`get`, `set`, `delete`,
    /// `increment`, `compare-and-swap`).
    pub fn store_calls(&self) -> [(&'static str, u64); 5] {
        host_api::StoreOp::ALL.map(|op| (op.as_str(), self.shared.store_seconds[op as usize].count()))
    }

    /// What the pooling allocator reserves, across all plugins.
    pub fn capacity(&self) -> Footprint {
        self.capacity
    }

    /// The registry plugin metrics are recorded in.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.shared.metrics
    }

    /// Components compiled since the runtime began (a cache hit compiles nothing): only
    /// loading compiles, never a request.
    pub fn components_compiled(&self) -> u64 {
        self.cache.compiled()
    }

    /// The store plugin `plugin` reaches, once a plugin of that name was loaded.
    pub fn store_of(&self, plugin: &str) -> Option<Arc<dyn Store>> {
        match &self.shared.stores {
            Stores::Memory(memory) => memory.find(plugin).map(|share| share as Arc<dyn Store>),
            Stores::Redis(redis) => Some(redis.clone()),
        }
    }

    /// What `spec`'s pool (and its canary's) would take from the pooling allocator at most;
    /// refused if one alone cannot fit. Reads the files, compiles nothing.
    pub async fn footprint(&self, spec: &PluginSpec) -> Result<Footprint, PluginError> {
        let mut total = Footprint::default();
        for version in std::iter::once(spec).chain(spec.canary.as_ref().map(|c| &c.spec)) {
            let (bytes, _) = Self::read(version).await?;
            total = total + self.pool_footprint(version, &bytes)?;
        }
        Ok(total)
    }

    /// What a pool of `spec.instances` of the component `bytes` takes: each instance, plus one
    /// being made to replace a worn one; refused, with the numbers, if it cannot fit.
    fn pool_footprint(&self, spec: &PluginSpec, bytes: &[u8]) -> Result<Footprint, PluginError> {
        let per = Footprint::of(bytes).map_err(|e| PluginError::Invalid {
            plugin: spec.name.clone(),
            path: spec.path.clone(),
            reason: format!("not a WebAssembly component: {e}"),
        })?;
        let footprint = per * (spec.instances as u64 + 1);
        if !footprint.fits(&self.capacity) {
            return Err(PluginError::Capacity {
                plugin: spec.name.clone(),
                reason: format!(
                    "`instances = {}` (plus one being replaced) needs {}: lower `plugins.{}.instances` or raise `runtime.instance_slots` (each slot reserves 8 core instances, 2 memories and 4 tables)",
                    spec.instances,
                    footprint.overflow(&per, &self.capacity),
                    spec.family(),
                ),
            });
        }
        Ok(footprint)
    }

    /// Compiles (or loads from the cache), links and pre-instantiates the plugin, makes its
    /// instances and runs their `init` with the plugin's config. Blocking work runs on tokio's
    /// blocking pool.
    pub async fn load(&self, spec: &PluginSpec) -> Result<Plugin, PluginError> {
        let (main, canary) = (Self::read(spec).await?, Self::read_canary(spec).await?);
        self.load_versions(spec, main, canary).await
    }

    /// Like [`Runtime::load`], but keeps `previous` (its compiled code, pool and instances)
    /// when the spec and the component's bytes are the same: a reload that changes nothing
    /// compiles and instantiates nothing. The flag says whether it was kept.
    pub async fn load_or_keep(
        &self,
        spec: &PluginSpec,
        previous: Option<&Arc<Plugin>>,
    ) -> Result<(Arc<Plugin>, bool), PluginError> {
        let (main, canary) = (Self::read(spec).await?, Self::read_canary(spec).await?);
        let canary_hash = canary.as_ref().map(|(_, hash)| hash.as_str());
        if let Some(previous) = previous.filter(|p| {
            p.spec == *spec && p.hash == main.1 && p.canary.as_ref().map(|c| c.plugin.sha256()) == canary_hash
        }) {
            return Ok((previous.clone(), true));
        }
        Ok((Arc::new(self.load_versions(spec, main, canary).await?), false))
    }

    /// The plugin, and its canary when it has one.
    async fn load_versions(
        &self,
        spec: &PluginSpec,
        (bytes, hash): (Vec<u8>, String),
        canary: Option<(Vec<u8>, String)>,
    ) -> Result<Plugin, PluginError> {
        let mut plugin = self.load_bytes(spec, bytes, hash).await?;
        if let (Some(canary_spec), Some((bytes, hash))) = (&spec.canary, canary) {
            let candidate = self.load_bytes(&canary_spec.spec, bytes, hash).await?;
            plugin.canary = Some(Box::new(Canary::new(candidate, (**canary_spec).clone())));
        }
        Ok(plugin)
    }

    /// The canary's component and its hash, if the plugin has one.
    async fn read_canary(spec: &PluginSpec) -> Result<Option<(Vec<u8>, String)>, PluginError> {
        match &spec.canary {
            Some(canary) => Ok(Some(Self::read(&canary.spec).await?)),
            None => Ok(None),
        }
    }

    /// Reads the component, refusing one over [`defaults::MAX_COMPONENT`] before reading it
    /// and one that is not the content `sha256` pins; returns it with its content hash.
    async fn read(spec: &PluginSpec) -> Result<(Vec<u8>, String), PluginError> {
        let failed =
            |source| PluginError::Read { plugin: spec.name.clone(), path: spec.path.clone(), source };
        let size = tokio::fs::metadata(&spec.path).await.map_err(failed)?.len();
        if size > defaults::MAX_COMPONENT as u64 {
            return Err(PluginError::Invalid {
                plugin: spec.name.clone(),
                path: spec.path.clone(),
                reason: format!(
                    "{size} bytes is over the largest component the gateway loads ({} bytes)",
                    defaults::MAX_COMPONENT
                ),
            });
        }
        let bytes = tokio::fs::read(&spec.path).await.map_err(failed)?;
        let hash = CompileCache::content_hash(&bytes);
        if let Some(expected) = spec.sha256.as_ref().filter(|expected| **expected != hash) {
            return Err(PluginError::Pinned {
                plugin: spec.name.clone(),
                path: spec.path.clone(),
                expected: expected.clone(),
                actual: hash,
            });
        }
        Ok((bytes, hash))
    }

    async fn load_bytes(
        &self,
        spec: &PluginSpec,
        bytes: Vec<u8>,
        hash: String,
    ) -> Result<Plugin, PluginError> {
        let started = Instant::now();
        let invalid = |reason: String| PluginError::Invalid {
            plugin: spec.name.clone(),
            path: spec.path.clone(),
            reason,
        };
        // Counted before compiling, which may take seconds: a pool that cannot fit is refused now.
        self.pool_footprint(spec, &bytes)?;
        // Compiling is CPU work of tens of milliseconds to seconds: keep it off the workers.
        let (engine, cache, key) = (self.engine.clone(), self.cache.clone(), hash.clone());
        let size = bytes.len();
        let bytes: Arc<[u8]> = bytes.into();
        let source = bytes.clone();
        let mut compiling = tokio::task::spawn_blocking(move || cache.load(&engine, &source, &key));
        // A large component (a language runtime inside) compiles for seconds: say so while it does.
        let mut ticks =
            tokio::time::interval_at(tokio::time::Instant::now() + progress::EVERY, progress::EVERY);
        let mut shown = Progress::new(&spec.name, size, started);
        let loaded = loop {
            tokio::select! {
                loaded = &mut compiling => break loaded,
                _ = ticks.tick() => shown.tick(),
            }
        };
        drop(shown);
        let (component, outcome) = loaded
            .map_err(|e| invalid(format!("compilation did not finish: {e}")))?
            .map_err(|e| invalid(format!("{e:#}")))?;
        let pre = self.linker.instantiate_pre(&component).map_err(|e| invalid(format!("{e:#}")))?;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let factory = Factory::new(self.engine.clone(), pre, id, spec, self.epoch_tick, self.shared.clone())?;
        let name = factory.name.clone();
        let (factory, phases, first) = match spec.isolation {
            Isolation::Pooled => {
                let (first, phases) = factory.create_first().await?;
                (factory, phases, Some(first))
            }
            Isolation::PerRequest => {
                let (factory, phases) = self.snapshot(factory, bytes).await?;
                (factory, phases, None)
            }
        };
        let pool = Pool::new(factory, spec.isolation, spec.instances, spec.pool_wait, first).await?;
        tracing::info!(
            plugin = %name,
            path = %spec.path.display(),
            sha256 = %hash,
            cache = ?outcome,
            ms = started.elapsed().as_secs_f64() * 1e3,
            "plugin loaded"
        );
        let label = Arc::new(name.to_string());
        let seconds = Phase::ALL.map(|phase| {
            let labels = PluginPhaseLabels { plugin: label.clone(), phase: phase.as_str() };
            self.shared.metrics.plugin_seconds.get_or_create(&labels).clone()
        });
        Ok(Plugin {
            name,
            hash,
            spec: spec.clone(),
            phases,
            failure: spec.failure,
            outcome,
            pool,
            seconds,
            canary: None,
        })
    }
}

impl Runtime {
    /// Moves `factory` onto a snapshot of the plugin taken after `init`, so that its instances
    /// start configured; when none can be taken, each instance keeps running `init`, and the
    /// log says why.
    async fn snapshot(
        &self,
        factory: Factory,
        bytes: Arc<[u8]>,
    ) -> Result<(Factory, types::Phases), PluginError> {
        let started = Instant::now();
        let (linker, cache, runtime) =
            (self.linker.clone(), self.cache.clone(), tokio::runtime::Handle::current());
        let name = factory.name.clone();
        // Instrumenting and compiling are CPU work: keep them off the workers.
        let taken = tokio::task::spawn_blocking(move || {
            let taken = runtime.block_on(snapshot::take(&factory, &linker, &cache, &bytes));
            (factory, taken)
        })
        .await;
        let (mut factory, taken) = taken.map_err(|error| PluginError::Instantiate {
            plugin: name.to_string(),
            reason: format!("taking the snapshot after init failed: {error}"),
        })?;
        let refused = match taken {
            // The config was refused, or `init` failed: the plugin does not load.
            Err(SnapshotError::Init(error)) => return Err(error),
            Err(error) => error.to_string(),
            Ok((template, phases)) => {
                let plain = std::mem::replace(&mut factory.template, template);
                // One instance made from the snapshot proves it before a request depends on it.
                match factory.create().await {
                    Ok(_) => {
                        tracing::info!(
                            plugin = %name,
                            ms = started.elapsed().as_secs_f64() * 1e3,
                            "snapshot taken after init: instances start configured"
                        );
                        return Ok((factory, phases));
                    }
                    Err(error) => {
                        factory.template = plain;
                        format!("the snapshot does not instantiate: {error}")
                    }
                }
            }
        };
        tracing::warn!(plugin = %name, error = %refused, "no snapshot after init: each instance runs init");
        let (_, phases) = factory.create_first().await?;
        Ok((factory, phases))
    }
}

/// Advances the engine's epoch every `tick` until the engine is gone. A plain thread: it must
/// keep ticking even when every tokio worker is busy running guests.
fn spawn_ticker(engine: EngineWeak, tick: Duration) {
    let spawned = std::thread::Builder::new().name("wasmgate-epoch".into()).spawn(move || {
        while let Some(engine) = engine.upgrade() {
            engine.increment_epoch();
            drop(engine);
            std::thread::sleep(tick);
        }
    });
    if let Err(error) = spawned {
        tracing::error!(%error, "cannot start the epoch ticker: plugin deadlines will not fire");
    }
}

/// A response a plugin wrote itself, checked and ready to send.
#[derive(Debug)]
pub struct LocalReply {
    /// Checked to be in 200..=599.
    pub status: StatusCode,
    /// Checked like client input: valid names and values, no reserved header.
    pub headers: HeaderMap,
    /// Sent whole, with its length.
    pub body: Bytes,
}

/// What a header phase decided.
#[derive(Debug)]
pub enum Action {
    /// Go on.
    Continue,
    /// Answer with this response instead.
    Respond(LocalReply),
}

/// Where a plugin wants the request to go, already checked against the configured groups.
#[derive(Debug)]
pub enum Choice {
    /// The route's group and its balancer.
    Default,
    /// This backend of this group.
    Backend(Arc<Group>, usize),
    /// This group, balanced by its balancer.
    Group(Arc<Group>),
    /// The route's group by consistent hashing of this key.
    HashKey(String),
    /// Do not go upstream; answer with this.
    Respond(LocalReply),
}

/// What a body phase decided for one chunk.
#[derive(Debug)]
pub enum BodyVerdict {
    /// Pass the chunk on.
    Continue,
    /// Pass this instead (empty drops the chunk).
    Replace(Bytes),
    /// Answer with this instead (request body only).
    Respond(LocalReply),
}

/// What a plugin wants after an upstream failure.
#[derive(Debug)]
pub enum OnError {
    /// Let the host decide.
    Default,
    /// Try again, within the route's retry policy.
    Retry,
    /// Answer with this.
    Respond(LocalReply),
}

/// A failed upstream attempt, as error-phase plugins are told it.
#[derive(Debug, Clone)]
pub struct UpstreamFailure {
    /// From [`UpstreamError::class`].
    pub kind: FailureKind,
    /// `host:port` of the backend tried.
    pub backend: String,
    /// 1 for the first attempt.
    pub attempt: u32,
    /// What failed, for the plugin's logs.
    pub message: String,
}

impl UpstreamFailure {
    /// The report of `error` on attempt number `attempt` (from 1).
    pub fn new(error: &UpstreamError, attempt: u32) -> Self {
        UpstreamFailure {
            kind: error.class().kind,
            backend: error.backend().to_owned(),
            attempt,
            message: error.to_string(),
        }
    }

    fn to_wit(&self) -> types::UpstreamFailure {
        types::UpstreamFailure {
            kind: match self.kind {
                FailureKind::ConnectRefused => types::FailureKind::ConnectRefused,
                FailureKind::ConnectTimeout => types::FailureKind::ConnectTimeout,
                FailureKind::ResponseTimeout => types::FailureKind::ResponseTimeout,
                FailureKind::Reset => types::FailureKind::Reset,
                FailureKind::Overloaded => types::FailureKind::Overloaded,
                FailureKind::Status => types::FailureKind::Status,
            },
            backend: self.backend.clone(),
            attempt: self.attempt,
            message: self.message.clone(),
        }
    }
}

/// What happened to a request, as log plugins are told it.
#[derive(Debug, Clone, Default)]
pub struct LogEntry {
    /// The status sent to the client (0 if none was sent).
    pub status: u16,
    /// Microseconds from the request's arrival to the end of the response.
    pub duration_us: u64,
    /// Microseconds waiting for the upstream's response headers, if it went upstream.
    pub upstream_us: Option<u64>,
    /// Request body bytes read from the client.
    pub bytes_in: u64,
    /// Response body bytes sent to the client.
    pub bytes_out: u64,
    /// `host:port` of the backend that answered, if any.
    pub backend: Option<String>,
    /// Why the request failed, if it did; also set when the client went away.
    pub error: Option<String>,
}

/// A [`LogEntry`] in the form log plugins are called with: made once per request (moving,
/// not copying, its strings) and lent to each log plugin in turn.
pub struct Logged(types::LogEntry);

impl From<LogEntry> for Logged {
    fn from(entry: LogEntry) -> Self {
        let LogEntry { status, duration_us, upstream_us, bytes_in, bytes_out, backend, error } = entry;
        Logged(types::LogEntry { status, duration_us, upstream_us, bytes_in, bytes_out, backend, error })
    }
}

/// A loaded plugin: its pool of instances and what it declared.
pub struct Plugin {
    name: Arc<str>,
    hash: String,
    /// What it was loaded from: a reload with the same spec and bytes keeps it.
    spec: PluginSpec,
    phases: types::Phases,
    failure: FailurePolicy,
    outcome: CacheOutcome,
    pool: Arc<Pool>,
    /// Call durations, by [`Phase::index`].
    seconds: [Timing; Phase::ALL.len()],
    /// The version a share of clients runs instead.
    canary: Option<Box<Canary>>,
}

impl Plugin {
    /// The plugin's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The SHA-256 of the component file.
    pub fn sha256(&self) -> &str {
        &self.hash
    }

    /// Whether the component was compiled at load or came from the cache.
    pub fn cache_outcome(&self) -> CacheOutcome {
        self.outcome
    }

    /// True if the plugin (or its canary) implements `phase`; the proxy calls no other.
    pub fn has(&self, phase: Phase) -> bool {
        self.phases.contains(phase.flag()) || self.canary.as_ref().is_some_and(|c| c.plugin.has(phase))
    }

    /// The plugin's canary, if it has one.
    pub fn canary(&self) -> Option<&Canary> {
        self.canary.as_deref()
    }

    /// Runs `call` on the version this request runs (the canary's choice is made at the
    /// request's first call of the plugin and kept), or gives `skipped` when that version does
    /// not implement `phase`. A canary's faults count towards its rollback.
    async fn run<T>(
        &self,
        phase: Phase,
        ex: &mut Box<Exchange>,
        skipped: T,
        call: impl AsyncFnOnce(&Plugin, &mut Box<Exchange>) -> Result<T, PluginError>,
    ) -> Result<T, PluginError> {
        let Some(canary) = self.canary.as_deref() else {
            return call(self, ex).await;
        };
        let id = self.pool.factory.id;
        let picked = match ex.canary_pick(id) {
            Some(picked) => picked,
            None => {
                let picked = canary.picks(ex);
                ex.pick_canary(id, picked.then(|| canary.plugin.name.clone()));
                picked
            }
        };
        let version = if picked { &canary.plugin } else { self };
        if !version.phases.contains(phase.flag()) {
            return Ok(skipped);
        }
        let result = call(version, ex).await;
        if picked {
            canary.record(&result);
        }
        result
    }

    /// What the plugin uses of its limits, and the flags of those it is close to.
    pub fn usage(&self) -> &Usage {
        &self.pool.factory.usage
    }

    /// Counters of the plugin's instances and faults.
    pub fn stats(&self) -> PluginStats {
        self.pool.stats()
    }

    /// Applies the plugin's failure policy to a call's result: a fail-open plugin's error is
    /// logged and skipped (`None`), a fail-closed one's is returned.
    pub fn by_policy<T>(&self, result: Result<T, PluginError>) -> Result<Option<T>, PluginError> {
        match result {
            Ok(value) => Ok(Some(value)),
            // The operator's `[store] when_unavailable`, not the plugin's policy, decides this.
            Err(error @ PluginError::StoreUnavailable { .. }) => Err(error),
            Err(error) if self.failure == FailurePolicy::FailOpen => {
                tracing::warn!(plugin = %self.name, %error, "plugin failed; skipped (fail-open)");
                Ok(None)
            }
            Err(error) => Err(error),
        }
    }

    /// Borrows an instance, lends it the exchange, makes the call, takes the exchange back,
    /// and settles the instance: back to the pool on success, discarded on any fault or
    /// cancellation.
    async fn call<T>(
        &self,
        phase: Phase,
        head_open: bool,
        ex: &mut Box<Exchange>,
        call: impl AsyncFnOnce(&Handler, &mut wasmtime::Store<InstanceState>) -> wasmtime::Result<T>,
    ) -> Result<T, PluginError> {
        let span = match &ex.trace {
            Some(trace) => trace.plugin_call(&self.name, phase.as_str()),
            None => Span::none(),
        };
        let mut lease = match self.pool.checkout(phase).await {
            Ok(lease) => lease,
            Err(error) => {
                span.end(0, Some(error.kind()));
                return Err(error);
            }
        };
        let lease_waited = lease.waited;
        let result = match lease.instance() {
            Some(instance) => {
                std::mem::swap(&mut instance.store.data_mut().ex, ex);
                self.pool.factory.arm(&mut instance.store, phase, head_open);
                let started = Instant::now();
                let result = call(instance.bindings.wasmgate_plugin_handler(), &mut instance.store).await;
                let took = started.elapsed();
                self.seconds[phase.index()].observe(took.as_secs_f64());
                self.pool.factory.usage.call_took(took);
                span.describe(took, self.spec.deadline, instance.store.data().limits.peak, lease_waited);
                std::mem::swap(&mut instance.store.data_mut().ex, ex);
                let store_down = instance.store.data_mut().store_down.take();
                match (result, store_down) {
                    // The instance did nothing wrong: it goes back to the pool.
                    (Ok(_), Some(reason)) => {
                        lease.release();
                        let error =
                            PluginError::StoreUnavailable { plugin: self.name.to_string(), phase, reason };
                        span.end(0, Some(error.kind()));
                        return Err(error);
                    }
                    (result, _) => result,
                }
            }
            None => Err(wasmtime::Error::msg("instance already settled")),
        };
        match result {
            Ok(value) => {
                lease.release();
                span.end(0, None);
                Ok(value)
            }
            Err(error) => {
                let error = lease.fail(phase, &error);
                span.end(0, Some(error.kind()));
                Err(error)
            }
        }
    }

    /// The request headers arrived.
    pub async fn on_request_headers(&self, ex: &mut Box<Exchange>) -> Result<Action, PluginError> {
        let phase = Phase::RequestHeaders;
        self.run(phase, ex, Action::Continue, async |p, ex| {
            let action = p.call(phase, true, ex, async |h, s| h.call_on_request_headers(s).await).await?;
            p.action(phase, action)
        })
        .await
    }

    /// A request body chunk, or the whole body; `head_open` when nothing has gone upstream
    /// yet (a body the route buffers), so the call may still edit the request head.
    pub async fn on_request_body(
        &self,
        ex: &mut Box<Exchange>,
        chunk: &[u8],
        end: bool,
        head_open: bool,
    ) -> Result<BodyVerdict, PluginError> {
        let phase = Phase::RequestBody;
        self.run(phase, ex, BodyVerdict::Continue, async |p, ex| {
            let action = p
                .call(phase, head_open, ex, async |h, s| h.call_on_request_body(s, chunk, end).await)
                .await?;
            p.body_verdict(phase, action)
        })
        .await
    }

    /// Where should the request go?
    pub async fn select_upstream(&self, ex: &mut Box<Exchange>) -> Result<Choice, PluginError> {
        let phase = Phase::SelectUpstream;
        self.run(phase, ex, Choice::Default, async |p, ex| {
            let choice = p.call(phase, false, ex, async |h, s| h.call_select_upstream(s).await).await?;
            p.choice(phase, ex, choice)
        })
        .await
    }

    /// A guest's upstream choice, checked against the groups in view.
    fn choice(
        &self,
        phase: Phase,
        ex: &Exchange,
        choice: types::UpstreamChoice,
    ) -> Result<Choice, PluginError> {
        let invalid = |reason: String| self.invalid(phase, "upstream choice", reason);
        let backend_of = |group: &Arc<Group>, index: u32| match usize::try_from(index) {
            Ok(i) if i < group.backends().len() => Ok(Choice::Backend(group.clone(), i)),
            _ => Err(invalid(format!(
                "backend {index} of group `{}`, which has {}",
                group.name(),
                group.backends().len()
            ))),
        };
        let named = |name: &str| {
            ex.upstreams.get(name).cloned().ok_or_else(|| invalid(format!("unknown group `{name}`")))
        };
        match choice {
            types::UpstreamChoice::Default => Ok(Choice::Default),
            types::UpstreamChoice::Backend(index) => backend_of(&ex.group, index),
            types::UpstreamChoice::Group(name) => Ok(Choice::Group(named(&name)?)),
            types::UpstreamChoice::GroupBackend((name, index)) => backend_of(&named(&name)?, index),
            types::UpstreamChoice::HashKey(key) => Ok(Choice::HashKey(key)),
            types::UpstreamChoice::Respond(r) => Ok(Choice::Respond(self.local_reply(phase, r)?)),
        }
    }

    /// The head is about to go upstream.
    pub async fn on_upstream_request(&self, ex: &mut Box<Exchange>) -> Result<Action, PluginError> {
        let phase = Phase::UpstreamRequest;
        self.run(phase, ex, Action::Continue, async |p, ex| {
            let action = p.call(phase, true, ex, async |h, s| h.call_on_upstream_request(s).await).await?;
            p.action(phase, action)
        })
        .await
    }

    /// An upstream attempt failed.
    pub async fn on_upstream_error(
        &self,
        ex: &mut Box<Exchange>,
        failure: &UpstreamFailure,
    ) -> Result<OnError, PluginError> {
        let phase = Phase::UpstreamError;
        let failure = failure.to_wit();
        self.run(phase, ex, OnError::Default, async |p, ex| {
            let action =
                p.call(phase, false, ex, async |h, s| h.call_on_upstream_error(s, &failure).await).await?;
            Ok(match action {
                types::ErrorAction::Default => OnError::Default,
                types::ErrorAction::Retry => OnError::Retry,
                types::ErrorAction::Respond(r) => OnError::Respond(p.local_reply(phase, r)?),
            })
        })
        .await
    }

    /// The response headers arrived (in `ex.response`).
    pub async fn on_response_headers(&self, ex: &mut Box<Exchange>) -> Result<Action, PluginError> {
        let phase = Phase::ResponseHeaders;
        self.run(phase, ex, Action::Continue, async |p, ex| {
            let action = p.call(phase, false, ex, async |h, s| h.call_on_response_headers(s).await).await?;
            p.action(phase, action)
        })
        .await
    }

    /// A response body chunk.
    pub async fn on_response_body(
        &self,
        ex: &mut Box<Exchange>,
        chunk: &[u8],
        end: bool,
    ) -> Result<BodyVerdict, PluginError> {
        let phase = Phase::ResponseBody;
        self.run(phase, ex, BodyVerdict::Continue, async |p, ex| {
            let action =
                p.call(phase, false, ex, async |h, s| h.call_on_response_body(s, chunk, end).await).await?;
            match p.body_verdict(phase, action)? {
                BodyVerdict::Respond(_) => {
                    Err(p.invalid(phase, "body action", "`respond` after the response began".to_owned()))
                }
                verdict => Ok(verdict),
            }
        })
        .await
    }

    /// The response trailers arrived; `ex.response`'s headers are the trailers during the call.
    pub async fn on_response_trailers(&self, ex: &mut Box<Exchange>) -> Result<(), PluginError> {
        let phase = Phase::ResponseTrailers;
        self.run(phase, ex, (), async |p, ex| {
            p.call(phase, false, ex, async |h, s| h.call_on_response_trailers(s).await).await
        })
        .await
    }

    /// The request is over.
    pub async fn on_log(&self, ex: &mut Box<Exchange>, entry: &Logged) -> Result<(), PluginError> {
        let phase = Phase::Log;
        self.run(phase, ex, (), async |p, ex| {
            p.call(phase, false, ex, async |h, s| h.call_on_log(s, &entry.0).await).await
        })
        .await
    }

    fn body_verdict(&self, phase: Phase, action: types::BodyAction) -> Result<BodyVerdict, PluginError> {
        Ok(match action {
            types::BodyAction::Continue => BodyVerdict::Continue,
            types::BodyAction::Replace(bytes) => {
                self.check_body(phase, "replaced body chunk", bytes.len())?;
                BodyVerdict::Replace(Bytes::from(bytes))
            }
            types::BodyAction::Respond(r) => BodyVerdict::Respond(self.local_reply(phase, r)?),
        })
    }

    fn action(&self, phase: Phase, action: types::Action) -> Result<Action, PluginError> {
        match action {
            types::Action::Continue => Ok(Action::Continue),
            types::Action::Respond(r) => Ok(Action::Respond(self.local_reply(phase, r)?)),
        }
    }

    fn local_reply(&self, phase: Phase, r: types::LocalResponse) -> Result<LocalReply, PluginError> {
        if r.headers.len() > host_api::MAX_HEADERS {
            return Err(self.invalid(phase, "header count", format!("{} headers", r.headers.len())));
        }
        let status = valid_status(r.status)
            .ok_or_else(|| self.invalid(phase, "status", format!("{} is not in 200..=599", r.status)))?;
        self.check_body(phase, "local response body", r.body.len())?;
        let mut headers = HeaderMap::with_capacity(r.headers.len());
        for h in r.headers {
            let name = header_name(&h.name)
                .map_err(|e| self.invalid(phase, "header name", format!("`{}`: {e:?}", h.name)))?;
            let value = header_value(h.value)
                .map_err(|e| self.invalid(phase, "header value", format!("`{name}`: {e:?}")))?;
            headers.append(name, value);
        }
        Ok(LocalReply { status, headers, body: Bytes::from(r.body) })
    }

    /// A body the plugin hands over is held until it is sent: bounded by `max_local_body`.
    fn check_body(&self, phase: Phase, what: &'static str, len: usize) -> Result<(), PluginError> {
        let max = self.spec.max_local_body;
        if len > max {
            return Err(self.invalid(
                phase,
                what,
                format!("{len} bytes is over max_local_body ({max} bytes)"),
            ));
        }
        Ok(())
    }

    fn invalid(&self, phase: Phase, what: &'static str, reason: String) -> PluginError {
        PluginError::InvalidValue { plugin: self.name.to_string(), phase, what, reason }
    }
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin").field("name", &self.name).field("sha256", &self.hash).finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use super::*;

    const ONE_PLUGIN: &str = "[[listeners]]\naddress = \"127.0.0.1:8080\"\n\
        [upstreams.o]\nbackends = [\"127.0.0.1:9001\"]\n[[routes]]\nupstream = \"o\"\n\
        [plugins.p]\npath = \"p.wasm\"\n";

    #[test]
    fn a_spec_from_the_config_carries_its_json_config_and_path() {
        let c = Config::parse(Path::new("gw.toml"), &format!("{ONE_PLUGIN}config = {{ a = 1 }}\n"))
            .expect("valid");
        let spec = PluginSpec::from_config("p", &c.plugins["p"], &c);
        assert_eq!(spec.config_json, r#"{"a":1}"#);
        assert_eq!(spec.path, PathBuf::from("p.wasm"));
    }

    #[test]
    fn code_and_config_get_the_same_defaults() {
        let c = Config::parse(Path::new("gw.toml"), ONE_PLUGIN).expect("valid");
        let (read, built) =
            (PluginSpec::from_config("p", &c.plugins["p"], &c), PluginSpec::new("p", "p.wasm"));
        assert_eq!(read, PluginSpec { path: read.path.clone(), ..built });
        let (read, built) = (RuntimeConfig::from_config(&c), RuntimeConfig::default());
        assert_eq!(
            (read.cache_dir, read.instance_slots, read.max_memory, read.epoch_tick, read.store_limits),
            (built.cache_dir, built.instance_slots, built.max_memory, built.epoch_tick, built.store_limits)
        );
    }
}

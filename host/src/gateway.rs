//! One generation of the running gateway: the config, its loaded plugins, upstream groups with
//! their clients and health checks, and the routes. The server holds the current generation
//! behind one atomic swap, so a reload builds a new generation and swaps it in whole: each
//! request sees exactly one generation. What the request pipeline reads of a generation is
//! its [`Served`]; the rest (the config, the plugins by name, the health-check tasks) is for the
//! admin API and the next reload.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::task::JoinSet;

use crate::cache::HttpCache;
use crate::config::{AllUnhealthy, Config, ConfigError, UpstreamProtocol};
use crate::metrics::NameLabel;
use crate::plugin::{Footprint, Plugin, PluginError, PluginSpec, Runtime};
use crate::proxy::{AccessLog, RequestLimits, Route, Router, Served};
use crate::recording::Recorder;
use crate::telemetry::Telemetry;
use crate::upstream::{
    Backend, Group, Limits, OutlierPolicy, Resolver, UpstreamClient, Upstreams, spawn_health_checks,
};

/// A built, ready-to-serve gateway.
pub struct Gateway {
    served: Served,
    plugins: BTreeMap<String, Arc<Plugin>>,
    config: Config,
    /// Resolves backends named by DNS, now and when they are looked at again.
    resolver: Arc<Resolver>,
    /// How soon the names should be resolved again; none when every backend is an address.
    resolve_in: Option<Duration>,
    /// Counts from 1 at start; each reload or DNS rebuild swaps in the next.
    generation: u64,
    /// When this generation was built.
    built_at: SystemTime,
    /// Health-check tasks; dropping the generation stops them.
    _health: JoinSet<()>,
}

impl Gateway {
    /// Loads every plugin (each `init` must accept its config), resolves every backend, starts
    /// health checks and builds the routes. Any failure names the config field it came from.
    /// Given the generation it replaces, it keeps what did not change: upstream clients (and
    /// so their pooled connections) and the health of backends that stay.
    pub async fn build(
        config: Config,
        runtime: &Runtime,
        previous: Option<&Gateway>,
    ) -> Result<Gateway, ConfigError> {
        let plugins = load_plugins(&config, runtime, previous).await?;
        let resolver = match previous {
            Some(p) if p.config.resolver == config.resolver => p.resolver.clone(),
            _ => Arc::new(
                Resolver::new(&config.resolver.nameservers)
                    .map_err(|e| config.error("resolver.nameservers".into(), e))?,
            ),
        };
        let (upstreams, resolve_in) = build_upstreams(&config, &resolver, previous).await?;
        let upstreams = Arc::new(upstreams);
        let mut health = JoinSet::new();
        for (name, u) in &config.upstreams {
            if let (Some(check), Some(group)) = (&u.health_check, upstreams.get(name)) {
                spawn_health_checks(&mut health, group, check);
            }
        }
        let routes = build_routes(&config, &plugins, &upstreams, runtime, previous)?;

        let metrics = runtime.metrics().clone();
        let upstream_seconds = upstreams
            .groups()
            .map(|g| {
                let label = NameLabel { name: Arc::new(g.name().to_string()) };
                (g.name().clone(), metrics.upstream_seconds.get_or_create(&label).clone())
            })
            .collect();
        let access = AccessLog::new(&config.log);
        // Made once: an exporter holds a task and a batch; `[traces]` changes on restart.
        let telemetry = match previous {
            Some(previous) => previous.served.telemetry.clone(),
            None => match &config.traces {
                Some(traces) => Some(Telemetry::new(traces).map_err(|e| config.error("traces".into(), e))?),
                None => None,
            },
        };
        let request_limits = RequestLimits {
            head: config.server.max_request_head,
            target: config.server.max_request_target,
            field_line: config.server.max_field_line,
        };
        let router = Router::new(routes);
        for warning in shadowing(&router) {
            tracing::warn!(file = %config.file.display(), "{warning}");
        }
        let served =
            Served { router, upstreams, metrics, telemetry, access, upstream_seconds, request_limits };
        Ok(Gateway {
            served,
            plugins,
            config,
            resolver,
            resolve_in,
            generation: previous.map_or(1, |p| p.generation + 1),
            built_at: SystemTime::now(),
            _health: health,
        })
    }

    /// The caches of the routes that have one, by route name.
    pub fn caches(&self) -> impl Iterator<Item = (&str, &Arc<HttpCache>)> {
        self.served.router.routes().iter().filter_map(|r| Some((&*r.name, r.cache.as_ref()?)))
    }

    /// How soon backends named by DNS should be resolved again; none if there are none.
    pub fn resolve_in(&self) -> Option<Duration> {
        self.resolve_in
    }

    /// Resolves every backend named by DNS again: true if a group's addresses are not the
    /// ones it serves with. A name that does not resolve now counts as unchanged (it keeps
    /// the addresses it has), with a warning.
    pub async fn dns_changed(&self) -> bool {
        for (name, u) in &self.config.upstreams {
            let Some(group) = self.served.upstreams.get(name) else { continue };
            let mut now = Vec::new();
            for b in u.backends.iter().filter(|b| b.address().parse::<SocketAddr>().is_err()) {
                match self.resolver.resolve(b.address()).await {
                    Ok(resolved) => now.extend(resolved.addrs.into_iter().map(|a| (b.address(), a))),
                    Err(error) => {
                        tracing::warn!(group = %name, %error, "backend name did not resolve; its addresses stay");
                        now.extend(addresses_of(group, b.address()).map(|a| (b.address(), a)));
                    }
                }
            }
            let mut serving: Vec<(&str, SocketAddr)> = group
                .backends()
                .iter()
                .filter(|b| b.address().parse::<SocketAddr>().is_err())
                .map(|b| (&**b.address(), b.addr()))
                .collect();
            now.sort_unstable();
            serving.sort_unstable();
            if now != serving {
                tracing::info!(group = %name, addresses = ?now.iter().map(|(_, a)| a).collect::<Vec<_>>(), "backend addresses changed in DNS");
                return true;
            }
        }
        false
    }

    /// What the request pipeline reads: [`crate::proxy::handle`] serves a request from it.
    pub fn served(&self) -> &Served {
        &self.served
    }

    /// The tracer, if `[traces]` is configured.
    pub fn telemetry(&self) -> Option<&Arc<Telemetry>> {
        self.served.telemetry.as_ref()
    }

    /// This generation's number: 1 for the one the gateway started with, one more for each
    /// swapped in after it.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// When this generation was built.
    pub fn built_at(&self) -> SystemTime {
        self.built_at
    }

    /// The config this generation was built from.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// A loaded plugin by name.
    pub fn plugin(&self, name: &str) -> Option<&Arc<Plugin>> {
        self.plugins.get(name)
    }

    /// What the config allows but is likely a mistake: routes that can never match.
    pub fn warnings(&self) -> Vec<String> {
        shadowing(&self.served.router)
    }

    /// Every loaded plugin, by name.
    pub fn plugins(&self) -> impl Iterator<Item = (&String, &Arc<Plugin>)> {
        self.plugins.iter()
    }

    /// The upstream client of group `name`: its counts of requests and new connections.
    pub fn client(&self, name: &str) -> Option<Arc<UpstreamClient>> {
        self.served.upstreams.client(name)
    }

    /// The upstream groups.
    pub fn upstreams(&self) -> &Arc<Upstreams> {
        &self.served.upstreams
    }
}

/// Loads every plugin of `config`; each `init` must accept its config. A plugin of the
/// generation replaced whose spec and `.wasm` bytes are unchanged is kept as it is.
async fn load_plugins(
    config: &Config,
    runtime: &Runtime,
    previous: Option<&Gateway>,
) -> Result<BTreeMap<String, Arc<Plugin>>, ConfigError> {
    let mut plugins = BTreeMap::new();
    let refused = |name: &str, e: PluginError| {
        let field = match &e {
            PluginError::RouteConfigRejected { route, .. } => route_config_field(config, name, route),
            _ => None,
        };
        config.error(field.unwrap_or_else(|| format!("plugins.{name}")), e.to_string())
    };
    // Counted before any is loaded: a config whose pools cannot all fit makes no instance.
    let mut need = Footprint::default();
    for (name, p) in &config.plugins {
        let spec = PluginSpec::from_config(name, p, config);
        need = need + runtime.footprint(&spec).await.map_err(|e| refused(name, e))?;
    }
    let have = runtime.capacity();
    if !need.fits(&have) {
        return Err(config.error(
            "runtime.instance_slots".to_owned(),
            format!(
                "the plugins' pools together need {} core instances, {} memories and {} tables, more than the {}, {} and {} reserved: raise it or lower the plugins' `instances`",
                need.core_instances, need.memories, need.tables, have.core_instances, have.memories, have.tables
            ),
        ));
    }
    for (name, p) in &config.plugins {
        let (plugin, kept) = runtime
            .load_or_keep(&PluginSpec::from_config(name, p, config), previous.and_then(|g| g.plugin(name)))
            .await
            .map_err(|e| refused(name, e))?;
        if kept {
            tracing::debug!(plugin = %name, "plugin unchanged: kept with its instances");
        }
        plugins.insert(name.clone(), plugin);
    }
    Ok(plugins)
}

/// Where route `route` gives plugin `plugin` its config: `routes[i].plugins[j].config`.
fn route_config_field(config: &Config, plugin: &str, route: &str) -> Option<String> {
    config.routes.iter().enumerate().filter(|(i, r)| r.name_at(*i) == route).find_map(|(i, r)| {
        let j = r.plugins.iter().position(|p| p.get_ref().name == plugin)?;
        Some(format!("routes[{i}].plugins[{j}].config"))
    })
}

/// Resolves every backend (a name to every address it has) and builds the upstream groups
/// with their clients, and says how soon the names should be resolved again. From the
/// generation it replaces it keeps the client of a group whose client settings did not change
/// (and so its pooled connections), and the health and outlier state of backends that stay.
async fn build_upstreams(
    config: &Config,
    resolver: &Resolver,
    previous: Option<&Gateway>,
) -> Result<(Upstreams, Option<Duration>), ConfigError> {
    let mut groups = Vec::new();
    let mut clients = HashMap::new();
    let mut resolve_in: Option<Duration> = None;
    for (name, u) in &config.upstreams {
        let mut backends = Vec::with_capacity(u.backends.len());
        let mut names = Vec::with_capacity(u.backends.len());
        let old_group = previous.and_then(|p| p.served.upstreams.get(name));
        for (i, b) in u.backends.iter().enumerate() {
            let resolved = match resolver.resolve(b.address()).await {
                Ok(resolved) => resolved,
                // A name that resolved before keeps its addresses while it does not.
                Err(reason) => match old_group.map(|g| addresses_of(g, b.address()).collect::<Vec<_>>()) {
                    Some(addrs) if !addrs.is_empty() => {
                        tracing::warn!(group = %name, error = %reason, "backend name did not resolve; its addresses stay");
                        let again = std::time::Instant::now() + u.resolve_interval;
                        crate::upstream::Resolved { addrs, valid_until: Some(again) }
                    }
                    _ => return Err(config.error(format!("upstreams.{name}.backends[{i}]"), reason)),
                },
            };
            if let Some(until) = resolved.valid_until {
                let ttl = until.saturating_duration_since(std::time::Instant::now());
                let next = u.resolve_interval.min(ttl.max(MIN_RESOLVE_INTERVAL));
                resolve_in = Some(resolve_in.map_or(next, |r| r.min(next)));
            }
            for addr in resolved.addrs {
                backends.push(Backend::new(b.address(), addr, b.weight()));
                names.push((addr.to_string(), b.address()));
            }
        }
        let kept = previous.and_then(|p| {
            // A TLS client without a fixed `sni` knows each address's server name: new
            // addresses (a name that resolved to others) need a new client.
            let by_address = u.tls.as_ref().is_some_and(|t| t.sni.is_none());
            let same_addrs = old_group.is_some_and(|g| {
                g.backends().iter().map(Backend::addr).eq(backends.iter().map(Backend::addr))
            });
            let same = (same_addrs || !by_address)
                && p.config.upstreams.get(name).is_some_and(|old| old.same_client(u));
            same.then(|| p.served.upstreams.client(name)).flatten()
        });
        let client = match kept {
            Some(client) => client,
            None => {
                let client = UpstreamClient::new(u, config.upstream_tls(u).as_ref(), &names)
                    .map_err(|reason| config.error(format!("upstreams.{name}.tls"), reason))?;
                Arc::new(client)
            }
        };
        clients.insert(Arc::from(name.as_str()), client);
        if let Some(old) = old_group {
            for b in &backends {
                if let Some(same) =
                    old.backends().iter().find(|o| o.address() == b.address() && o.addr() == b.addr())
                {
                    b.keep_state_of(same);
                }
            }
        }
        let mut group = Group::with_policy(name.as_str(), backends, u.balance.into());
        if let Some(key) = &u.hash_key {
            group = group.with_hash_source(key.key().clone());
        }
        if let Some(o) = &u.outlier_detection {
            group = group.with_outlier_detection(OutlierPolicy {
                consecutive_failures: o.consecutive_failures,
                base_ejection: o.base_ejection,
                max_ejected_percent: o.max_ejected_percent,
            });
        }
        group =
            group.with_route_to_all(u.when_all_unhealthy == AllUnhealthy::RouteToAll).with_limits(Limits {
                max_requests: u.max_requests,
                queue: (u.max_connections != 0 && u.protocol == UpstreamProtocol::Http1)
                    .then_some((u.max_connections, u.max_pending)),
            });
        groups.push(group);
    }
    Ok((Upstreams::new(groups).with_clients(clients), resolve_in))
}

/// The addresses `group` serves for the configured backend `address`.
fn addresses_of<'a>(group: &'a Group, address: &'a str) -> impl Iterator<Item = SocketAddr> + 'a {
    group.backends().iter().filter(move |b| &**b.address() == address).map(Backend::addr)
}

/// Names are not looked up more often than this, whatever their TTL.
const MIN_RESOLVE_INTERVAL: Duration = Duration::from_millis(100);

/// The routes, in config order, each with its group, client and plugin chain.
fn build_routes(
    config: &Config,
    plugins: &BTreeMap<String, Arc<Plugin>>,
    upstreams: &Upstreams,
    runtime: &Runtime,
    previous: Option<&Gateway>,
) -> Result<Vec<Arc<Route>>, ConfigError> {
    let mut routes = Vec::with_capacity(config.routes.len());
    for (i, r) in config.routes.iter().enumerate() {
        let chain: Vec<Arc<Plugin>> =
            r.plugins.iter().filter_map(|p| plugins.get(&p.get_ref().name).cloned()).collect();
        let name = r.name_at(i);
        let old = previous.and_then(|p| p.served.router.routes().iter().find(|route| *route.name == *name));
        // A reload keeps a route's stored responses while its cache config stays the same.
        let cache = r.cache.as_ref().map(|config| {
            let kept = old.and_then(|route| route.cache.clone()).filter(|cache| cache.config() == config);
            kept.unwrap_or_else(|| HttpCache::new(config, &Arc::new(name.clone()), runtime.metrics()))
        });
        // And its recorder (and so the one writer of its file) while its record config does.
        let record = r.record.as_ref().map(|record| {
            let kept = old.and_then(|route| route.record.clone()).filter(|kept| kept.config() == record);
            kept.unwrap_or_else(|| Recorder::open(record, config.resolve(&record.path), &name))
        });
        let route = Route::new(i, r, &chain, upstreams, runtime.metrics(), cache, record)
            .map_err(|(field, reason)| config.error(field, reason))?;
        routes.push(Arc::new(route));
    }
    Ok(routes)
}
/// A warning for each route an earlier one makes unreachable, naming both.
fn shadowing(router: &Router) -> Vec<String> {
    router
        .shadowed()
        .into_iter()
        .map(|(earlier, later)| {
            format!(
                "route `{later}` can never match: route `{earlier}`, before it, takes every request it would"
            )
        })
        .collect()
}

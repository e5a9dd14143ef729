//! One generation of the running gateway: the config, its loaded plugins, upstream groups with
//! their clients and health checks, and the routes. The server holds the current generation
//! behind one atomic swap, so a reload builds a new generation and swaps it in whole: each
//! request sees exactly one generation. What the request pipeline reads of a generation is
//! its [`Served`]; the rest (the config, the plugins by name, the health-check tasks) is for the
//! admin API and the next reload.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use tokio::task::JoinSet;

use crate::config::{AllUnhealthy, Config, ConfigError, UpstreamProtocol};
use crate::metrics::NameLabel;
use crate::plugin::{Plugin, PluginSpec, Runtime};
use crate::proxy::{AccessLog, Route, Router, Served};
use crate::telemetry::Telemetry;
use crate::upstream::{
    Backend, Group, Limits, OutlierPolicy, UpstreamClient, Upstreams, spawn_health_checks,
};

/// A built, ready-to-serve gateway.
pub struct Gateway {
    served: Served,
    plugins: BTreeMap<String, Arc<Plugin>>,
    config: Config,
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
        let upstreams = Arc::new(build_upstreams(&config, previous).await?);
        let mut health = JoinSet::new();
        for (name, u) in &config.upstreams {
            if let (Some(check), Some(group)) = (&u.health_check, upstreams.get(name)) {
                spawn_health_checks(&mut health, group, check);
            }
        }
        let routes = build_routes(&config, &plugins, &upstreams, runtime)?;

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
        let served =
            Served { router: Router::new(routes), upstreams, metrics, telemetry, access, upstream_seconds };
        Ok(Gateway { served, plugins, config, _health: health })
    }

    /// What the request pipeline reads: [`crate::proxy::handle`] serves a request from it.
    pub fn served(&self) -> &Served {
        &self.served
    }

    /// The tracer, if `[traces]` is configured.
    pub fn telemetry(&self) -> Option<&Arc<Telemetry>> {
        self.served.telemetry.as_ref()
    }

    /// The config this generation was built from.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// A loaded plugin by name.
    pub fn plugin(&self, name: &str) -> Option<&Arc<Plugin>> {
        self.plugins.get(name)
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
    for (name, p) in &config.plugins {
        let (plugin, kept) = runtime
            .load_or_keep(&PluginSpec::from_config(name, p, config), previous.and_then(|g| g.plugin(name)))
            .await
            .map_err(|e| config.error(format!("plugins.{name}"), e.to_string()))?;
        if kept {
            tracing::debug!(plugin = %name, "plugin unchanged: kept with its instances");
        }
        plugins.insert(name.clone(), plugin);
    }
    Ok(plugins)
}

/// Resolves every backend and builds the upstream groups with their clients. From the
/// generation it replaces it keeps the client of a group whose client settings did not change
/// (and so its pooled connections), and the health of backends that stay.
async fn build_upstreams(config: &Config, previous: Option<&Gateway>) -> Result<Upstreams, ConfigError> {
    let mut groups = Vec::new();
    let mut clients = HashMap::new();
    for (name, u) in &config.upstreams {
        let mut backends = Vec::with_capacity(u.backends.len());
        for (i, b) in u.backends.iter().enumerate() {
            let addr = tokio::net::lookup_host(b.address())
                .await
                .ok()
                .and_then(|mut addrs| addrs.next())
                .ok_or_else(|| {
                    config.error(
                        format!("upstreams.{name}.backends[{i}]"),
                        format!("cannot resolve `{}`", b.address()),
                    )
                })?;
            backends.push(Backend::new(b.address(), addr, b.weight()));
        }
        let kept = previous.and_then(|p| {
            let same = p.config.upstreams.get(name).is_some_and(|old| old.same_client(u));
            same.then(|| p.served.upstreams.client(name)).flatten()
        });
        let client = match kept {
            Some(client) => client,
            None => {
                let names: Vec<(String, &str)> = backends
                    .iter()
                    .zip(&u.backends)
                    .map(|(b, c)| (b.addr().to_string(), c.address()))
                    .collect();
                let client = UpstreamClient::new(u, config.upstream_tls(u).as_ref(), &names)
                    .map_err(|reason| config.error(format!("upstreams.{name}.tls"), reason))?;
                Arc::new(client)
            }
        };
        clients.insert(Arc::from(name.as_str()), client);
        if let Some(old) = previous.and_then(|p| p.served.upstreams.get(name)) {
            for b in &backends {
                if let Some(same) = old.backends().iter().find(|o| o.address() == b.address()) {
                    b.set_healthy(same.is_healthy());
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
    Ok(Upstreams::new(groups).with_clients(clients))
}

/// The routes, in config order, each with its group, client and plugin chain.
fn build_routes(
    config: &Config,
    plugins: &BTreeMap<String, Arc<Plugin>>,
    upstreams: &Upstreams,
    runtime: &Runtime,
) -> Result<Vec<Arc<Route>>, ConfigError> {
    let mut routes = Vec::with_capacity(config.routes.len());
    for (i, r) in config.routes.iter().enumerate() {
        let group_name = r.upstream.get_ref().as_str();
        let (Some(group), Some(client)) = (upstreams.get(group_name), upstreams.client(group_name)) else {
            return Err(
                config.error(format!("routes[{i}].upstream"), format!("no upstream group `{group_name}`"))
            );
        };
        let chain: Vec<Arc<Plugin>> =
            r.plugins.iter().filter_map(|p| plugins.get(p.get_ref()).cloned()).collect();
        routes.push(Arc::new(Route::new(i, r, &chain, group.clone(), client, runtime.metrics())));
    }
    Ok(routes)
}

//! The admin listener: `/healthz`, `/readyz`, `/status` (the generation serving and the last
//! reload's outcome), `/upstreams`, `/plugins`, `/config` (the effective config, defaults
//! filled in, secrets redacted), `/metrics` (Prometheus text, with the values read live from
//! the serving generation), `POST /reload` (reload the config file; the answer is the
//! outcome) and the dashboard at `/`, which reads them. It binds to loopback unless configured
//! otherwise, and refuses requests without the bearer token when one is set (the dashboard's
//! page and script excepted: they hold no data).

mod dashboard;

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde_json::json;
use tokio::net::TcpListener;

use crate::cache::Purge;
use crate::gateway::Gateway;
use crate::plugin::Runtime;
use crate::reload::{ReloadError, Reloader};

/// What the admin endpoints read.
pub struct Admin {
    gateway: Arc<ArcSwap<Gateway>>,
    runtime: Arc<Runtime>,
    reloader: Reloader,
    token: Option<String>,
    /// False once the gateway drains: load balancers should stop sending.
    ready: AtomicBool,
    /// True once the gateway has stopped: open admin connections end.
    closed: tokio::sync::watch::Sender<bool>,
}

impl Admin {
    /// Admin endpoints over `gateway`, reloading through `reloader`; `token`, if set, is
    /// required.
    pub fn new(
        gateway: Arc<ArcSwap<Gateway>>,
        runtime: Arc<Runtime>,
        reloader: Reloader,
        token: Option<String>,
    ) -> Arc<Admin> {
        let closed = tokio::sync::watch::Sender::new(false);
        Arc::new(Admin { gateway, runtime, reloader, token, ready: AtomicBool::new(true), closed })
    }

    /// Ends the admin connections still open, once the gateway has stopped (a browser's
    /// keep-alive connection would otherwise be answered by a stopped gateway).
    pub fn close(&self) {
        self.closed.send_replace(true);
    }

    /// Marks the gateway as draining: `/readyz` answers 503 from now on.
    pub fn draining(&self) {
        self.ready.store(false, Ordering::Relaxed);
    }

    fn authorised(&self, request: &Request<Incoming>) -> bool {
        let Some(token) = &self.token else { return true };
        let given = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "))
            .unwrap_or_default();
        // Compares every byte whatever the first difference, so timing does not leak the token.
        given.len() == token.len()
            && given.iter().zip(token.as_bytes()).fold(0, |acc, (a, b)| acc | (a ^ b)) == 0
    }

    async fn answer(&self, request: &Request<Incoming>) -> Response<Full<Bytes>> {
        if let Some(asset) = dashboard::asset(request.uri().path())
            && matches!(*request.method(), Method::GET | Method::HEAD)
        {
            return page(asset);
        }
        if !self.authorised(request) {
            let mut response = text(StatusCode::UNAUTHORIZED, "a bearer token is required\n");
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
            return response;
        }
        if request.uri().path() == "/reload" {
            return match *request.method() {
                Method::POST => self.reload().await,
                _ => text(StatusCode::METHOD_NOT_ALLOWED, "POST /reload reloads the config file\n"),
            };
        }
        let gateway = self.gateway.load_full();
        if request.uri().path() == "/cache/purge" {
            return match *request.method() {
                Method::POST => purge(&gateway, request.uri().query().unwrap_or_default()),
                _ => text(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "POST /cache/purge?key=KEY or ?prefix=PREFIX purges\n",
                ),
            };
        }
        match request.uri().path() {
            "/healthz" => text(StatusCode::OK, "ok\n"),
            "/readyz" if self.ready.load(Ordering::Relaxed) => text(StatusCode::OK, "ready\n"),
            "/readyz" => text(StatusCode::SERVICE_UNAVAILABLE, "draining\n"),
            "/status" => json_response(self.status(&gateway)),
            "/upstreams" => json_response(upstreams(&gateway)),
            "/plugins" => json_response(plugins(&gateway)),
            "/cache" => json_response(caches(&gateway)),
            "/config" => json_response(redacted_config(gateway.config())),
            "/metrics" => {
                let live = live_metrics(&gateway);
                let mut response = text(StatusCode::OK, &self.runtime.metrics().render(Some(&live)));
                response.headers_mut().insert(
                    header::CONTENT_TYPE,
                    header::HeaderValue::from_static(
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    ),
                );
                response
            }
            _ => text(StatusCode::NOT_FOUND, "not found\n"),
        }
    }
}

impl Admin {
    /// Reloads the config file: 200 with what was kept and loaded, or 422 with the file, field
    /// and reason it was refused for (the running generation keeps serving).
    async fn reload(&self) -> Response<Full<Bytes>> {
        match self.reloader.from_file().await {
            Ok(done) => json_response(json!({
                "ok": true,
                "plugins_kept": done.plugins_kept,
                "plugins_loaded": done.plugins_loaded,
            })),
            Err(error) => {
                let status = match error {
                    ReloadError::Config(_) => StatusCode::UNPROCESSABLE_ENTITY,
                    ReloadError::Stopped => StatusCode::SERVICE_UNAVAILABLE,
                };
                let mut response = json_response(json!({ "ok": false, "error": error.to_string() }));
                *response.status_mut() = status;
                response
            }
        }
    }
}

/// Each route's cache: keys and bytes held, and its bounds.
fn caches(gateway: &Gateway) -> serde_json::Value {
    let routes: Vec<serde_json::Value> = gateway
        .caches()
        .map(|(route, cache)| {
            let (keys, bytes) = cache.size();
            json!({ "route": route, "keys": keys, "bytes": bytes, "max_size": cache.config().max_size })
        })
        .collect();
    json!({ "routes": routes })
}

/// `POST /cache/purge?key=KEY` (or `prefix=PREFIX`), on every caching route or on `route=NAME`.
fn purge(gateway: &Gateway, query: &str) -> Response<Full<Bytes>> {
    let (mut which, mut route) = (None, None);
    for (name, value) in form_urlencoded::parse(query.as_bytes()) {
        match &*name {
            "key" if which.is_none() => which = Some(Purge::Key(value.into_owned())),
            "prefix" if which.is_none() => which = Some(Purge::Prefix(value.into_owned())),
            "route" => route = Some(value.into_owned()),
            _ => {
                let message =
                    format!("`{name}`: give one of `key` or `prefix`, and `route` if one route only\n");
                return text(StatusCode::BAD_REQUEST, &message);
            }
        }
    }
    let Some(which) = which else {
        return text(StatusCode::BAD_REQUEST, "give `key=KEY` or `prefix=PREFIX`\n");
    };
    let caches: Vec<_> =
        gateway.caches().filter(|(name, _)| route.as_deref().is_none_or(|route| route == *name)).collect();
    if caches.is_empty() {
        let message = match &route {
            Some(route) => format!("no route `{route}` with a cache\n"),
            None => "no route has a cache\n".to_owned(),
        };
        return text(StatusCode::NOT_FOUND, &message);
    }
    let purged: usize = caches.iter().map(|(_, cache)| cache.purge(&which)).sum();
    let routes: Vec<&str> = caches.iter().map(|(name, _)| *name).collect();
    tracing::info!(?which, purged, ?routes, "cache purged");
    json_response(json!({ "purged": purged, "routes": routes }))
}

impl Admin {
    /// The generation serving (its number, when it was built, its config file and routes) and
    /// the last reload's outcome, with a refused reload's reason.
    fn status(&self, gateway: &Gateway) -> serde_json::Value {
        let config = gateway.config();
        let routes: Vec<String> = config.routes.iter().enumerate().map(|(i, r)| r.name_at(i)).collect();
        let last_reload = self.reloader.last().map(|last| match &last.outcome {
            Ok(done) => json!({
                "at_ms": unix_ms(last.at),
                "ok": true,
                "plugins_kept": done.plugins_kept,
                "plugins_loaded": done.plugins_loaded,
            }),
            Err(error) => json!({ "at_ms": unix_ms(last.at), "ok": false, "error": error }),
        });
        json!({
            "version": env!("CARGO_PKG_VERSION"),
            "generation": gateway.generation(),
            "loaded_at_ms": unix_ms(gateway.built_at()),
            "config_file": config.file.display().to_string(),
            "routes": routes,
            "draining": !self.ready.load(Ordering::Relaxed),
            "last_reload": last_reload,
        })
    }
}

/// Milliseconds since the Unix epoch, as the dashboard's `Date` takes them.
fn unix_ms(at: std::time::SystemTime) -> u64 {
    at.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// A dashboard file, with the headers that keep the page to itself.
fn page(asset: dashboard::Asset) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(asset.body)));
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, asset.content_type);
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        header::HeaderValue::from_static(dashboard::CONTENT_SECURITY_POLICY),
    );
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, header::HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, header::HeaderValue::from_static("no-referrer"));
    headers.insert(header::CACHE_CONTROL, header::HeaderValue::from_static("no-cache"));
    response
}

fn text(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_owned())));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, header::HeaderValue::from_static("text/plain; charset=utf-8"));
    response
}

fn json_response(value: serde_json::Value) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(value.to_string())));
    response.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static("application/json"));
    response
}

fn upstreams(gateway: &Gateway) -> serde_json::Value {
    let mut groups = serde_json::Map::new();
    for group in gateway.upstreams().groups() {
        let stats = gateway.client(group.name()).map(|c| c.stats());
        let backends: Vec<_> = group
            .backends()
            .iter()
            .map(|b| {
                json!({
                    "address": b.address().to_string(),
                    "resolved": b.addr().to_string(),
                    "weight": b.weight(),
                    "healthy": b.is_available(),
                    "ejected": b.is_ejected(),
                    "in_flight": b.in_flight(),
                })
            })
            .collect();
        groups.insert(
            group.name().to_string(),
            json!({
                "backends": backends,
                "requests": stats.map(|s| s.requests),
                "new_connections": stats.map(|s| s.new_connections),
            }),
        );
    }
    serde_json::Value::Object(groups)
}

fn plugins(gateway: &Gateway) -> serde_json::Value {
    let mut plugins = serde_json::Map::new();
    for (name, plugin) in gateway.plugins() {
        let mut entry = plugin_json(plugin);
        if let Some(canary) = plugin.canary() {
            let mut version = plugin_json(canary.plugin());
            version["weight"] = json!(canary.weight());
            version["rolled_back"] = json!(canary.rolled_back());
            entry["canary"] = version;
        }
        plugins.insert(name.clone(), entry);
    }
    serde_json::Value::Object(plugins)
}

/// One loaded version of a plugin: what it is, its instances, its faults, what it uses of
/// its limits, and the flags of those it is close to.
fn plugin_json(plugin: &crate::plugin::Plugin) -> serde_json::Value {
    let s = plugin.stats();
    let usage = plugin.usage();
    let (waits, wait_p99) = usage.pool_waits();
    let flags: Vec<serde_json::Value> = usage
        .flags()
        .into_iter()
        .map(|flag| {
            json!({
                "kind": flag.pressure.as_str(),
                "message": flag.message,
                "raise": format!("plugins.{}.{}", plugin.name(), flag.pressure.setting()),
            })
        })
        .collect();
    json!({
        "sha256": plugin.sha256(),
        "cache": format!("{:?}", plugin.cache_outcome()),
        "instances": {
            "created": s.instances_created,
            "discarded": s.instances_discarded,
            "retired": s.instances_retired,
            "idle": s.instances_idle,
            "in_use": in_use(&s),
            "max": s.instances_max,
        },
        "faults": {
            "traps": s.traps,
            "deadline": s.deadline_hits,
            "memory": s.memory_limit_hits,
            "pool_exhausted": s.pool_exhausted,
        },
        "memory": { "limit": usage.memory_limit(), "peak": usage.memory_peak() },
        "deadline": { "ms": usage.deadline().as_secs_f64() * 1e3, "p99_used": usage.deadline_p99() },
        "pool_wait": { "waits": waits, "p99_ms": wait_p99.map(|s| s * 1e3) },
        "flags": flags,
    })
}

/// Instances lent to calls now: alive and not idle.
fn in_use(s: &crate::plugin::PluginStats) -> u64 {
    live(s).saturating_sub(s.instances_idle)
}

/// Instances alive now: made, less those discarded or retired.
fn live(s: &crate::plugin::PluginStats) -> u64 {
    s.instances_created.saturating_sub(s.instances_discarded).saturating_sub(s.instances_retired)
}

/// Key names whose values are never shown, in any table (plugin configs included).
const SECRET_WORDS: [&str; 6] = ["secret", "token", "password", "passwd", "private", "credential"];

/// The effective config (what the file says, defaults filled in) as JSON, with the values of
/// secret-looking keys replaced, and the password of any URL (`redis://user:pw@host`).
fn redacted_config(config: &crate::config::Config) -> serde_json::Value {
    fn redact(value: &mut serde_json::Value) {
        match value {
            serde_json::Value::Object(map) => {
                for (key, value) in map.iter_mut() {
                    let lower = key.to_ascii_lowercase();
                    if SECRET_WORDS.iter().any(|w| lower.contains(w)) {
                        *value = serde_json::Value::String("[redacted]".to_owned());
                    } else {
                        redact(value);
                    }
                }
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(redact),
            serde_json::Value::String(text) => {
                if let Some((scheme, rest)) = text.split_once("://")
                    && let Some((user_info, host)) = rest.split_once('@')
                    && let Some((user, _password)) = user_info.split_once(':')
                {
                    *text = format!("{scheme}://{user}:[redacted]@{host}");
                }
            }
            _ => {}
        }
    }
    let mut value = serde_json::to_value(config).unwrap_or_default();
    redact(&mut value);
    value
}

/// Serves the admin endpoints on `listener` until the task is dropped; the connections it
/// accepted stay open until [`Admin::close`].
pub async fn serve(listener: TcpListener, admin: Arc<Admin>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        let admin = admin.clone();
        let mut closed = admin.closed.subscribe();
        tokio::spawn(async move {
            let answering = admin.clone();
            let service = service_fn(move |request: Request<Incoming>| {
                let admin = answering.clone();
                async move { Ok::<_, Infallible>(admin.answer(&request).await) }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(std::time::Duration::from_secs(10))
                .serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                _ = connection => {}
                _ = closed.wait_for(|closed| *closed) => {}
            }
        });
    }
}

/// Values read from the serving gateway at a scrape: upstream requests and connections (new
/// and reused), backend health, plugin instances and faults.
fn live_metrics(gateway: &Gateway) -> Registry {
    type Pairs = Vec<(&'static str, String)>;
    let mut registry = Registry::default();
    let upstream_requests = Family::<Pairs, Counter>::default();
    let connections = Family::<Pairs, Counter>::default();
    let healthy = Family::<Pairs, Gauge>::default();
    let ejected = Family::<Pairs, Gauge>::default();
    let in_flight = Family::<Pairs, Gauge>::default();
    for group in gateway.upstreams().groups() {
        let name = group.name().to_string();
        if let Some(client) = gateway.client(&name) {
            let stats = client.stats();
            upstream_requests.get_or_create(&vec![("group", name.clone())]).inc_by(stats.requests);
            let reused = stats.requests.saturating_sub(stats.new_connections);
            connections
                .get_or_create(&vec![("group", name.clone()), ("kind", "new".into())])
                .inc_by(stats.new_connections);
            connections
                .get_or_create(&vec![("group", name.clone()), ("kind", "reused".into())])
                .inc_by(reused);
        }
        for backend in group.backends() {
            let labels = vec![("group", name.clone()), ("backend", backend.label().to_string())];
            healthy.get_or_create(&labels).set(i64::from(backend.is_available()));
            ejected.get_or_create(&labels).set(i64::from(backend.is_ejected()));
            in_flight.get_or_create(&labels).set(i64::from(backend.in_flight()));
        }
    }
    registry.register("wasmgate_upstream_requests", "Requests sent upstream, by group", upstream_requests);
    registry.register(
        "wasmgate_upstream_connections",
        "Requests sent upstream on a new connection (`new`) or a pooled one (`reused`), by group",
        connections,
    );
    registry.register("wasmgate_backend_healthy", "1 while the backend takes requests", healthy);
    registry.register("wasmgate_backend_ejected", "1 while outlier detection holds the backend out", ejected);
    registry.register("wasmgate_backend_in_flight", "Requests in flight to the backend", in_flight);

    let instances = Family::<Pairs, Gauge>::default();
    let faults = Family::<Pairs, Counter>::default();
    let active = Family::<Pairs, Gauge>::default();
    let memory = Family::<Pairs, Gauge>::default();
    let flagged = Family::<Pairs, Gauge>::default();
    let versions = gateway.plugins().flat_map(|(name, plugin)| {
        let canary = plugin.canary().map(|canary| {
            let running = canary.rolled_back().is_none();
            active.get_or_create(&vec![("plugin", name.clone())]).set(i64::from(running));
            (canary.plugin().name().to_owned(), canary.plugin())
        });
        std::iter::once((name.clone(), &**plugin)).chain(canary)
    });
    for (name, plugin) in versions {
        let stats = plugin.stats();
        let live = live(&stats);
        let of = |k: &'static str, v: &str| vec![("plugin", name.clone()), (k, v.to_owned())];
        let gauge = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        instances.get_or_create(&of("state", "live")).set(gauge(live));
        instances.get_or_create(&of("state", "idle")).set(gauge(stats.instances_idle));
        instances.get_or_create(&of("state", "in_use")).set(gauge(in_use(&stats)));
        instances.get_or_create(&of("state", "max")).set(gauge(stats.instances_max));
        let usage = plugin.usage();
        memory.get_or_create(&vec![("plugin", name.clone())]).set(gauge(usage.memory_peak() as u64));
        let flags = usage.flags();
        for pressure in crate::plugin::Pressure::ALL {
            let on = flags.iter().any(|f| f.pressure == pressure);
            flagged.get_or_create(&of("kind", pressure.as_str())).set(i64::from(on));
        }
        faults.get_or_create(&of("kind", "trap")).inc_by(stats.traps);
        faults.get_or_create(&of("kind", "deadline")).inc_by(stats.deadline_hits);
        faults.get_or_create(&of("kind", "memory")).inc_by(stats.memory_limit_hits);
        faults.get_or_create(&of("kind", "pool-exhausted")).inc_by(stats.pool_exhausted);
    }
    registry.register(
        "wasmgate_plugin_instances",
        "Plugin instances: live, idle in the pool, in_use by calls, and the pool's max",
        instances,
    );
    registry.register(
        "wasmgate_plugin_memory_peak_bytes",
        "The most linear memory one instance of the plugin reached",
        memory,
    );
    registry.register(
        "wasmgate_plugin_flagged",
        "1 while the plugin is close to a limit, by kind: memory (80% of memory_limit), deadline (p99 call at 50% of it), pool-wait (calls waited for an instance)",
        flagged,
    );
    registry.register(
        "wasmgate_plugin_canary_active",
        "1 while the plugin's canary takes its share of clients, 0 once rolled back",
        active,
    );
    registry.register(
        "wasmgate_plugin_faults",
        "Plugin calls that trapped, hit their deadline or memory limit, or found no instance",
        faults,
    );
    registry
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_redacted_at_any_depth_and_defaults_shown() {
        let text = "[admin]\ntoken = \"t0p\"\n[[listeners]]\naddress = \"127.0.0.1:8080\"\n\
                    [plugins.jwt]\npath = \"a.wasm\"\nconfig = { hs256_secret = \"s3cret\", audience = \"api\" }\n\
                    [upstreams.o]\nbackends = [\"127.0.0.1:9001\"]\n[[routes]]\nupstream = \"o\"\n\
                    [store]\nbackend = \"redis\"\nurl = \"redis://app:pw@127.0.0.1:6379/0\"\n";
        let config = crate::config::Config::parse(std::path::Path::new("gw.toml"), text).expect("valid");
        let config = redacted_config(&config);
        assert_eq!(config["upstreams"]["o"]["connect_timeout"], "2s", "defaults are filled in");
        assert_eq!(config["admin"]["token"], "[redacted]");
        assert_eq!(config["plugins"]["jwt"]["config"]["hs256_secret"], "[redacted]");
        assert_eq!(config["plugins"]["jwt"]["config"]["audience"], "api");
        assert_eq!(config["plugins"]["jwt"]["path"], "a.wasm");
        assert_eq!(config["store"]["url"], "redis://app:[redacted]@127.0.0.1:6379/0");
    }
}

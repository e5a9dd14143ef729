//! The host functions plugins import (`log`, `request`, `response`, `upstream`, `state`,
//! `metrics`, `store`, `clock`, `outbound`) and the per-instance store data they work on.
//!
//! Every value coming from a guest is checked here as strictly as client input: header names
//! must be tokens, values must hold no CR, LF or NUL and stay short, framing and hop-by-hop
//! headers belong to the host, paths must parse.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use http::header::{HeaderName, HeaderValue};
use http::uri::PathAndQuery;
use wasmtime::{ResourceLimiter, Result as WasmResult};
use wasmtime_wasi::{ResourceTable, WasiCtx, WasiCtxView, WasiView};

use super::Phase;
use super::Shared;
use super::bindings::types::{
    Backend as WitBackend, EditError, Header, Level, OutboundError, OutboundRequest, OutboundResponse,
    StoreError as WitStoreError,
};
use super::bindings::{
    cache, clock, log, metrics, outbound, request, response, state, store, types, upstream,
};
use super::exchange::Exchange;
use super::log_limit::{self, LogLimit};
use super::output::{GuestOutput, Stream};
use super::usage::Usage;
use crate::head;
use crate::metrics::{Kind, Series};
use crate::store::StoreError;

/// The longest header value a plugin may set.
pub(crate) const MAX_VALUE_LEN: usize = 8 * 1024;
/// The most header fields a plugin may leave in a head or put in a local response: bounds the
/// host memory a guest can make the host hold, outside its own memory limit.
pub(crate) const MAX_HEADERS: usize = 256;

/// What one instance's store holds.
pub(crate) struct InstanceState {
    /// The request being served by the current call; a placeholder between calls.
    pub(crate) ex: Box<Exchange>,
    /// The phase being called, which decides what may be edited.
    pub(crate) phase: Phase,
    /// Whether the call may edit the request head: in `on-request-headers` and
    /// `on-upstream-request`, and in `on-request-body` for a body read whole before anything
    /// went upstream.
    pub(crate) head_open: bool,
    pub(crate) plugin_id: u32,
    pub(crate) plugin: Arc<str>,
    /// The name the store keys are kept under: the plugin's, also for its canary.
    family: Arc<str>,
    /// Epoch ticks the current call may still run before it is stopped.
    pub(crate) ticks_left: u32,
    pub(crate) limits: MemoryLimit,
    /// Set when a store call found the store unreachable and `[store] when_unavailable` is
    /// `fail-closed`: the call's request is answered 503 once the call returns.
    pub(crate) store_down: Option<String>,
    /// What every instance of every plugin shares: store timings and the metrics registry.
    shared: Arc<Shared>,
    /// The plugin's store.
    store: Arc<dyn crate::store::Store>,
    /// The plugin's log rate.
    log: Arc<LogLimit>,
    /// Series this instance recorded before, so recording again takes no shared lock.
    series: HashMap<(Kind, String, crate::metrics::Labels), Series>,
    wasi: WasiCtx,
    table: ResourceTable,
}

impl InstanceState {
    pub(crate) fn new(
        plugin_id: u32,
        plugin: Arc<str>,
        family: Arc<str>,
        usage: Arc<Usage>,
        shared: Arc<Shared>,
        store: Arc<dyn crate::store::Store>,
        log: Arc<LogLimit>,
    ) -> Self {
        // No preopens, no environment, no network: plugins get nothing beyond the WIT, and
        // what they print goes to the log as theirs.
        let wasi = WasiCtx::builder()
            .stdout(GuestOutput::new(plugin.clone(), Stream::Stdout, log.clone()))
            .stderr(GuestOutput::new(plugin.clone(), Stream::Stderr, log.clone()))
            .build();
        InstanceState {
            ex: Exchange::placeholder(),
            phase: Phase::Init,
            head_open: false,
            plugin_id,
            plugin,
            family,
            ticks_left: 0,
            limits: MemoryLimit { limit: usage.memory_limit(), hit: false, peak: 0, usage },
            store_down: None,
            shared,
            store,
            log,
            series: HashMap::new(),
            wasi,
            table: ResourceTable::new(),
        }
    }

    /// Whether the guest holds host resources (WASI streams and the like) now.
    pub(crate) fn holds_resources(&self) -> bool {
        !self.table.is_empty()
    }

    fn request_editable(&self) -> Result<(), EditError> {
        if self.head_open { Ok(()) } else { Err(EditError::ReadOnly) }
    }

    fn response_editable(&mut self) -> Result<&mut http::response::Parts, EditError> {
        match self.phase {
            Phase::ResponseHeaders | Phase::ResponseTrailers => {
                self.ex.response.as_mut().ok_or(EditError::ReadOnly)
            }
            _ => Err(EditError::ReadOnly),
        }
    }
}

impl WasiView for InstanceState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

/// The per-instance memory cap; remembers a refusal so a trap that follows can be reported as
/// a memory-limit failure rather than a bare trap, and tells the plugin's [`Usage`] how far
/// the instance's memory grew.
pub(crate) struct MemoryLimit {
    pub(crate) limit: usize,
    pub(crate) hit: bool,
    /// The most linear memory this instance reached.
    pub(crate) peak: usize,
    usage: Arc<Usage>,
}

impl ResourceLimiter for MemoryLimit {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> WasmResult<bool> {
        let ok = desired <= self.limit;
        self.hit |= !ok;
        if ok && desired > self.peak {
            self.peak = desired;
            self.usage.memory_grew(desired);
        }
        Ok(ok)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> WasmResult<bool> {
        Ok(desired <= 100_000)
    }
}

/// Checks a header name from a guest; names are lowercased.
pub(crate) fn header_name(name: &str) -> Result<HeaderName, EditError> {
    let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| EditError::InvalidName)?;
    if head::is_reserved(&name) {
        return Err(EditError::ReservedHeader);
    }
    Ok(name)
}

/// Checks a header value from a guest.
pub(crate) fn header_value(value: Vec<u8>) -> Result<HeaderValue, EditError> {
    if value.len() > MAX_VALUE_LEN {
        return Err(EditError::InvalidValue);
    }
    // Rejects every control byte but tab, so CR, LF and NUL never reach the wire.
    HeaderValue::from_maybe_shared(bytes::Bytes::from(value)).map_err(|_| EditError::InvalidValue)
}

fn get(headers: &http::HeaderMap, name: &str) -> Option<Vec<u8>> {
    headers.get(name).map(|v| v.as_bytes().to_vec())
}

fn get_all(headers: &http::HeaderMap, name: &str) -> Vec<Vec<u8>> {
    headers.get_all(name).iter().map(|v| v.as_bytes().to_vec()).collect()
}

fn names(headers: &http::HeaderMap) -> Vec<String> {
    headers.keys().map(|k| k.as_str().to_owned()).collect()
}

fn set(headers: &mut http::HeaderMap, name: &str, value: Vec<u8>, append: bool) -> Result<(), EditError> {
    let name = header_name(name)?;
    let value = header_value(value)?;
    if headers.len() >= MAX_HEADERS && (append || !headers.contains_key(&name)) {
        return Err(EditError::InvalidValue);
    }
    if append {
        headers.append(name, value);
    } else {
        headers.insert(name, value);
    }
    Ok(())
}

fn remove(headers: &mut http::HeaderMap, name: &str) -> Result<bool, EditError> {
    let name = header_name(name)?;
    Ok(headers.remove(name).is_some())
}

impl types::Host for InstanceState {}

impl log::Host for InstanceState {
    fn write(&mut self, level: Level, message: String) {
        let plugin = &*self.plugin;
        if !self.log.admit_line(plugin) {
            return;
        }
        let phase = self.phase.as_str();
        // `init` has no request.
        let request_id = if phase == "init" { None } else { Some(self.ex.request_id()) };
        let request_id = request_id.as_deref().unwrap_or("-");
        let (message, cut) = log_limit::cut(&message);
        let message = format_args!("{message}{}", if cut > 0 { " [cut]" } else { "" });
        match level {
            Level::Trace => {
                tracing::trace!(target: "wasmgate::plugin", plugin, phase, request_id, "{message}")
            }
            Level::Debug => {
                tracing::debug!(target: "wasmgate::plugin", plugin, phase, request_id, "{message}")
            }
            Level::Info => tracing::info!(target: "wasmgate::plugin", plugin, phase, request_id, "{message}"),
            Level::Warn => tracing::warn!(target: "wasmgate::plugin", plugin, phase, request_id, "{message}"),
            Level::Error => {
                tracing::error!(target: "wasmgate::plugin", plugin, phase, request_id, "{message}")
            }
        }
    }
}

impl request::Host for InstanceState {
    fn method(&mut self) -> String {
        self.ex.request.method.as_str().to_owned()
    }

    fn path(&mut self) -> String {
        self.ex.request.uri.path().to_owned()
    }

    fn query(&mut self) -> Option<String> {
        self.ex.request.uri.query().map(str::to_owned)
    }

    fn host(&mut self) -> Option<String> {
        self.ex.host().map(str::to_owned)
    }

    fn scheme(&mut self) -> String {
        if self.ex.tls { "https" } else { "http" }.to_owned()
    }

    fn client_addr(&mut self) -> String {
        self.ex.client_addr.to_string()
    }

    fn client_identity(&mut self) -> Option<String> {
        self.ex.client_identity.as_deref().map(str::to_owned)
    }

    fn route(&mut self) -> String {
        self.ex.route.to_string()
    }

    fn header(&mut self, name: String) -> Option<Vec<u8>> {
        get(&self.ex.request.headers, &name)
    }

    fn header_all(&mut self, name: String) -> Vec<Vec<u8>> {
        get_all(&self.ex.request.headers, &name)
    }

    fn header_names(&mut self) -> Vec<String> {
        names(&self.ex.request.headers)
    }

    fn set_header(&mut self, name: String, value: Vec<u8>) -> Result<(), EditError> {
        self.request_editable()?;
        // A plugin naming the request (request-id) names it in the gateway's logs too.
        let id =
            name.eq_ignore_ascii_case("x-request-id").then(|| String::from_utf8_lossy(&value).into_owned());
        set(&mut self.ex.request.headers, &name, value, false)?;
        if let Some(id) = id {
            self.ex.name_request(&id);
        }
        Ok(())
    }

    fn add_header(&mut self, name: String, value: Vec<u8>) -> Result<(), EditError> {
        self.request_editable()?;
        set(&mut self.ex.request.headers, &name, value, true)
    }

    fn remove_header(&mut self, name: String) -> Result<bool, EditError> {
        self.request_editable()?;
        remove(&mut self.ex.request.headers, &name)
    }

    fn set_path(&mut self, path_and_query: String) -> Result<(), EditError> {
        self.request_editable()?;
        if !path_and_query.starts_with('/') || path_and_query.len() > MAX_VALUE_LEN {
            return Err(EditError::InvalidPath);
        }
        // The same canonical form the proxy gives client paths, so a later plugin authorises
        // exactly what is forwarded.
        let (path, query) = match path_and_query.split_once('?') {
            Some((path, query)) => (path, Some(query)),
            None => (path_and_query.as_str(), None),
        };
        let normal = head::normalize_path(path).map_err(|_| EditError::InvalidPath)?;
        self.ex.request.uri =
            head::with_target(&self.ex.request.uri, &normal, query).map_err(|_| EditError::InvalidPath)?;
        Ok(())
    }
}

impl response::Host for InstanceState {
    fn status(&mut self) -> u16 {
        self.ex.response.as_ref().map_or(0, |r| r.status.as_u16())
    }

    fn set_status(&mut self, status: u16) -> Result<(), EditError> {
        let response = self.response_editable()?;
        response.status = valid_status(status).ok_or(EditError::InvalidStatus)?;
        Ok(())
    }

    fn header(&mut self, name: String) -> Option<Vec<u8>> {
        self.ex.response.as_ref().and_then(|r| get(&r.headers, &name))
    }

    fn header_all(&mut self, name: String) -> Vec<Vec<u8>> {
        self.ex.response.as_ref().map(|r| get_all(&r.headers, &name)).unwrap_or_default()
    }

    fn header_names(&mut self) -> Vec<String> {
        self.ex.response.as_ref().map(|r| names(&r.headers)).unwrap_or_default()
    }

    fn set_header(&mut self, name: String, value: Vec<u8>) -> Result<(), EditError> {
        set(&mut self.response_editable()?.headers, &name, value, false)
    }

    fn add_header(&mut self, name: String, value: Vec<u8>) -> Result<(), EditError> {
        set(&mut self.response_editable()?.headers, &name, value, true)
    }

    fn remove_header(&mut self, name: String) -> Result<bool, EditError> {
        remove(&mut self.response_editable()?.headers, &name)
    }
}

/// A status a plugin may set or answer with: 1xx belong to the host's own protocol handling.
pub(crate) fn valid_status(status: u16) -> Option<http::StatusCode> {
    if (200..=599).contains(&status) { http::StatusCode::from_u16(status).ok() } else { None }
}

/// The longest cache key a plugin may set.
const MAX_CACHE_KEY: usize = 1024;

impl cache::Host for InstanceState {
    fn set_key(&mut self, key: String) -> Result<(), EditError> {
        self.in_phase(Phase::RequestHeaders)?;
        if key.len() > MAX_CACHE_KEY || key.chars().any(char::is_control) {
            return Err(EditError::InvalidValue);
        }
        self.ex.cache.key = Some(key);
        Ok(())
    }

    fn add_key_part(&mut self, part: String) -> Result<(), EditError> {
        self.in_phase(Phase::RequestHeaders)?;
        let steer = &mut self.ex.cache;
        if steer.parts.len() + part.len() + 1 > MAX_CACHE_KEY || part.chars().any(char::is_control) {
            return Err(EditError::InvalidValue);
        }
        steer.parts.push('|');
        steer.parts.push_str(&part);
        Ok(())
    }

    fn bypass(&mut self) -> Result<(), EditError> {
        self.in_phase(Phase::RequestHeaders)?;
        self.ex.cache.bypass = true;
        Ok(())
    }

    fn set_ttl(&mut self, ttl_ms: u64) -> Result<(), EditError> {
        self.in_phase(Phase::ResponseHeaders)?;
        self.ex.cache.ttl = Some(std::time::Duration::from_millis(ttl_ms));
        Ok(())
    }
}

impl InstanceState {
    fn in_phase(&self, phase: Phase) -> Result<(), EditError> {
        if self.phase == phase { Ok(()) } else { Err(EditError::ReadOnly) }
    }
}

impl upstream::Host for InstanceState {
    fn group(&mut self) -> String {
        self.ex.group.name().to_string()
    }

    fn set_sni(&mut self, name: String) -> Result<(), EditError> {
        self.choose_sni(name)
    }

    fn backends(&mut self, group: Option<String>) -> Option<Vec<WitBackend>> {
        let group = match group {
            None => &self.ex.group,
            Some(name) => self.ex.upstreams.get(&name)?,
        };
        Some(
            group
                .backends()
                .iter()
                .map(|b| WitBackend {
                    address: String::from(&**b.label()),
                    weight: b.weight(),
                    healthy: b.is_available(),
                    ejected: b.is_ejected(),
                })
                .collect(),
        )
    }
}

impl InstanceState {
    fn choose_sni(&mut self, name: String) -> Result<(), EditError> {
        if self.phase != Phase::SelectUpstream {
            return Err(EditError::ReadOnly);
        }
        match rustls::pki_types::ServerName::try_from(name.as_str()) {
            Ok(rustls::pki_types::ServerName::DnsName(_)) if name.len() <= 253 => {
                self.ex.sni = Some(name);
                Ok(())
            }
            _ => Err(EditError::InvalidValue),
        }
    }
}

impl state::Host for InstanceState {
    fn get(&mut self, key: String) -> Option<Vec<u8>> {
        self.ex.state.get(self.plugin_id, &key).map(<[u8]>::to_vec)
    }

    fn set(&mut self, key: String, value: Vec<u8>) -> bool {
        self.ex.state.set(self.plugin_id, key, value)
    }

    fn remove(&mut self, key: String) -> bool {
        self.ex.state.remove(self.plugin_id, &key)
    }
}

impl InstanceState {
    /// This plugin's key in the shared store: keys are private to each plugin.
    fn store_key(&self, key: &str) -> Result<Vec<u8>, WitStoreError> {
        if key.len() > crate::store::MAX_KEY {
            return Err(WitStoreError::TooLarge);
        }
        Ok(crate::store::store_key(&self.family, key))
    }

    fn record(&mut self, kind: Kind, name: String, labels: Vec<(String, String)>, value: f64) -> bool {
        let key = (kind, name, labels);
        if let Some(series) = self.series.get(&key) {
            series.record(value);
            return true;
        }
        match self.shared.metrics.plugins().series(&self.plugin, kind, &key.1, &key.2) {
            Ok(series) => {
                series.record(value);
                self.series.insert(key, series);
                true
            }
            Err(error) => {
                tracing::debug!(plugin = %self.plugin, %error, "metric refused");
                false
            }
        }
    }
}

impl metrics::Host for InstanceState {
    fn counter_add(&mut self, name: String, labels: Vec<(String, String)>, value: u64) -> bool {
        self.record(Kind::Counter, name, labels, value as f64)
    }

    fn gauge_set(&mut self, name: String, labels: Vec<(String, String)>, value: f64) -> bool {
        self.record(Kind::Gauge, name, labels, value)
    }

    fn histogram_record(&mut self, name: String, labels: Vec<(String, String)>, value: f64) -> bool {
        value.is_finite() && self.record(Kind::Histogram, name, labels, value)
    }
}

/// A store operation, for its metrics.
#[derive(Clone, Copy)]
pub(crate) enum StoreOp {
    Get,
    Set,
    Delete,
    Increment,
    CompareAndSwap,
}

impl StoreOp {
    pub(crate) const ALL: [StoreOp; 5] =
        [StoreOp::Get, StoreOp::Set, StoreOp::Delete, StoreOp::Increment, StoreOp::CompareAndSwap];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            StoreOp::Get => "get",
            StoreOp::Set => "set",
            StoreOp::Delete => "delete",
            StoreOp::Increment => "increment",
            StoreOp::CompareAndSwap => "compare-and-swap",
        }
    }
}

/// Times `operation` and counts its failure by kind; when the store cannot be reached and the
/// operator chose `fail-closed`, marks the request (`store_down`) to be answered 503. Takes
/// the instance's fields apart, so that the call borrows the shared store rather than
/// cloning its handle.
async fn stored<T>(
    shared: &Shared,
    store_down: &mut Option<String>,
    op: StoreOp,
    operation: impl Future<Output = Result<T, StoreError>>,
) -> Result<T, WitStoreError> {
    let started = std::time::Instant::now();
    let result = operation.await;
    shared.store_seconds[op as usize].observe(started.elapsed().as_secs_f64());
    let Err(error) = result else { return result.map_err(wit_store_error) };
    let kind = match &error {
        StoreError::TooLarge => "too-large",
        StoreError::NotAnInteger => "not-an-integer",
        StoreError::Full => "full",
        StoreError::Unavailable(why) => {
            if shared.fail_closed {
                *store_down = Some(why.clone());
            }
            "unavailable"
        }
    };
    let labels = crate::metrics::StoreErrorLabels { op: op.as_str(), kind };
    shared.metrics.store_errors.get_or_create(&labels).inc();
    Err(wit_store_error(error))
}

fn wit_store_error(error: StoreError) -> WitStoreError {
    match error {
        // The contract has no `full`: to the plugin, a full store refuses the value as too large.
        StoreError::TooLarge | StoreError::Full => WitStoreError::TooLarge,
        StoreError::NotAnInteger => WitStoreError::NotAnInteger,
        StoreError::Unavailable(why) => WitStoreError::Unavailable(why),
    }
}

fn ttl(ms: u64) -> Option<Duration> {
    (ms != 0).then(|| Duration::from_millis(ms))
}

impl store::Host for InstanceState {
    async fn get(&mut self, key: String) -> Result<Option<Vec<u8>>, WitStoreError> {
        let key = self.store_key(&key)?;
        stored(&self.shared, &mut self.store_down, StoreOp::Get, self.store.get(&key)).await
    }

    async fn set(&mut self, key: String, value: Vec<u8>, ttl_ms: u64) -> Result<(), WitStoreError> {
        let key = self.store_key(&key)?;
        stored(&self.shared, &mut self.store_down, StoreOp::Set, self.store.set(&key, value, ttl(ttl_ms)))
            .await
    }

    async fn delete(&mut self, key: String) -> Result<bool, WitStoreError> {
        let key = self.store_key(&key)?;
        stored(&self.shared, &mut self.store_down, StoreOp::Delete, self.store.delete(&key)).await
    }

    async fn increment(&mut self, key: String, delta: i64, ttl_ms: u64) -> Result<i64, WitStoreError> {
        let key = self.store_key(&key)?;
        stored(
            &self.shared,
            &mut self.store_down,
            StoreOp::Increment,
            self.store.increment(&key, delta, ttl(ttl_ms)),
        )
        .await
    }

    async fn compare_and_swap(
        &mut self,
        key: String,
        expected: Option<Vec<u8>>,
        new: Vec<u8>,
        ttl_ms: u64,
    ) -> Result<bool, WitStoreError> {
        let key = self.store_key(&key)?;
        let swap = self.store.compare_and_swap(&key, expected.as_deref(), new, ttl(ttl_ms));
        stored(&self.shared, &mut self.store_down, StoreOp::CompareAndSwap, swap).await
    }
}

/// The most random bytes one call returns.
const MAX_RANDOM: u32 = 1024;

impl clock::Host for InstanceState {
    fn monotonic_ns(&mut self) -> u64 {
        static START: std::sync::LazyLock<std::time::Instant> =
            std::sync::LazyLock::new(std::time::Instant::now);
        u64::try_from(START.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    fn wall_ms(&mut self) -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    fn random_bytes(&mut self, len: u32) -> Vec<u8> {
        let mut bytes = vec![0; len.min(MAX_RANDOM) as usize];
        // The OS generator failing leaves zeros; ring's generator is the OS one.
        let _ = rustls::crypto::ring::default_provider().secure_random.fill(&mut bytes);
        bytes
    }
}

/// The timeout of an outbound call that names none.
const DEFAULT_OUTBOUND_TIMEOUT: Duration = Duration::from_millis(1000);

impl outbound::Host for InstanceState {
    async fn call(
        &mut self,
        group: String,
        request: OutboundRequest,
    ) -> Result<OutboundResponse, OutboundError> {
        if matches!(self.phase, Phase::Init | Phase::Log) {
            return Err(OutboundError::NotAllowed);
        }
        let upstreams = self.ex.upstreams.clone();
        let (Some(target), Some(client)) = (upstreams.get(&group), upstreams.client(&group)) else {
            return Err(OutboundError::UnknownGroup);
        };
        let invalid = |what: &str| OutboundError::InvalidRequest(what.to_owned());
        let method = http::Method::from_bytes(request.method.as_bytes()).map_err(|_| invalid("method"))?;
        let path = PathAndQuery::try_from(request.path).map_err(|_| invalid("path"))?;
        if !path.as_str().starts_with('/') {
            return Err(invalid("path"));
        }
        if request.headers.len() > MAX_HEADERS {
            return Err(invalid("too many headers"));
        }
        let mut headers = http::HeaderMap::with_capacity(request.headers.len());
        for Header { name, value } in request.headers {
            let name = header_name(&name).map_err(|_| invalid(&format!("header `{name}`")))?;
            let value = header_value(value).map_err(|_| invalid(&format!("value of `{name}`")))?;
            headers.append(name, value);
        }
        let timeout = match request.timeout_ms {
            0 => DEFAULT_OUTBOUND_TIMEOUT,
            ms => Duration::from_millis(u64::from(ms)),
        };
        let call = crate::upstream::Call { method, path, headers, body: bytes::Bytes::from(request.body) };
        let started = std::time::Instant::now();
        let result = crate::upstream::call(target, &client, call, timeout).await;
        let ms = started.elapsed().as_secs_f64() * 1e3;
        tracing::debug!(plugin = %self.plugin, group, ms, ok = result.is_ok(), "outbound call");
        match result {
            Ok((parts, body)) => Ok(OutboundResponse {
                status: parts.status.as_u16(),
                headers: parts
                    .headers
                    .iter()
                    .map(|(n, v)| Header { name: n.as_str().to_owned(), value: v.as_bytes().to_vec() })
                    .collect(),
                body: body.to_vec(),
            }),
            Err(crate::upstream::CallError::Timeout) => Err(OutboundError::Timeout),
            Err(crate::upstream::CallError::TooLarge) => Err(OutboundError::TooLarge),
            Err(crate::upstream::CallError::Failed(why)) => Err(OutboundError::Failed(why)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guest_header_values_are_checked_like_client_input() {
        assert!(header_value(b"ok value\twith tab".to_vec()).is_ok());
        for bad in [&b"a\r\nb"[..], b"a\nb", b"a\0b", b"a\rb"] {
            assert_eq!(header_value(bad.to_vec()).err(), Some(EditError::InvalidValue), "{bad:?}");
        }
        assert_eq!(header_value(vec![b'a'; MAX_VALUE_LEN + 1]).err(), Some(EditError::InvalidValue));
    }

    #[test]
    fn guest_header_names_must_be_tokens_and_not_framing() {
        assert_eq!(header_name("X-Mixed").map(|n| n.to_string()), Ok("x-mixed".to_owned()));
        assert_eq!(header_name("bad name").err(), Some(EditError::InvalidName));
        assert_eq!(header_name("bad:name").err(), Some(EditError::InvalidName));
        for reserved in ["content-length", "Transfer-Encoding", "connection", "keep-alive", "upgrade", "te"] {
            assert_eq!(header_name(reserved).err(), Some(EditError::ReservedHeader), "{reserved}");
        }
    }

    #[test]
    fn statuses_outside_200_to_599_are_refused() {
        assert!(valid_status(42).is_none());
        assert!(valid_status(101).is_none());
        assert!(valid_status(600).is_none());
        assert_eq!(valid_status(204), Some(http::StatusCode::NO_CONTENT));
    }
}

//! The host functions plugins import (`log`, `request`, `response`, `upstream`, `state`) and the
//! per-instance store data they work on.
//!
//! Every value coming from a guest is checked here as strictly as client input: header names
//! must be tokens, values must hold no CR, LF or NUL and stay short, framing and hop-by-hop
//! headers belong to the host, paths must parse.

use std::sync::Arc;

use http::header::{HeaderName, HeaderValue};
use http::uri::PathAndQuery;
use wasmtime::{ResourceLimiter, Result as WasmResult};
use wasmtime_wasi::{ResourceTable, WasiCtx, WasiCtxView, WasiView};

use super::Phase;
use super::bindings::types::{Backend as WitBackend, EditError, Level};
use super::bindings::wasmgate::plugin::{log, request, response, state, types, upstream};
use super::exchange::Exchange;

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
    pub(crate) plugin_id: u32,
    pub(crate) plugin: Arc<str>,
    /// Epoch ticks the current call may still run before it is stopped.
    pub(crate) ticks_left: u32,
    pub(crate) limits: MemoryLimit,
    wasi: WasiCtx,
    table: ResourceTable,
}

impl InstanceState {
    pub(crate) fn new(plugin_id: u32, plugin: Arc<str>, memory_limit: usize) -> Self {
        InstanceState {
            ex: Exchange::placeholder(),
            phase: Phase::Init,
            plugin_id,
            plugin,
            ticks_left: 0,
            limits: MemoryLimit { limit: memory_limit, hit: false },
            // No preopens, no environment, no network: plugins get nothing beyond the WIT.
            wasi: WasiCtx::builder().build(),
            table: ResourceTable::new(),
        }
    }

    fn request_editable(&self) -> Result<(), EditError> {
        match self.phase {
            Phase::RequestHeaders | Phase::UpstreamRequest => Ok(()),
            _ => Err(EditError::ReadOnly),
        }
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
/// a memory-limit failure rather than a bare trap.
pub(crate) struct MemoryLimit {
    pub(crate) limit: usize,
    pub(crate) hit: bool,
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
    if is_reserved(&name) {
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

/// Framing and hop-by-hop headers: the host writes these itself.
fn is_reserved(name: &HeaderName) -> bool {
    use http::header::{CONNECTION, CONTENT_LENGTH, TE, TRANSFER_ENCODING, UPGRADE};
    name == CONNECTION
        || name == CONTENT_LENGTH
        || name == TE
        || name == TRANSFER_ENCODING
        || name == UPGRADE
        || name.as_str() == "keep-alive"
        || name.as_str() == "proxy-connection"
        || name.as_str() == "http2-settings"
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
        let phase = self.phase.as_str();
        match level {
            Level::Trace => tracing::trace!(target: "wasmgate::plugin", plugin, phase, "{message}"),
            Level::Debug => tracing::debug!(target: "wasmgate::plugin", plugin, phase, "{message}"),
            Level::Info => tracing::info!(target: "wasmgate::plugin", plugin, phase, "{message}"),
            Level::Warn => tracing::warn!(target: "wasmgate::plugin", plugin, phase, "{message}"),
            Level::Error => tracing::error!(target: "wasmgate::plugin", plugin, phase, "{message}"),
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
        set(&mut self.ex.request.headers, &name, value, false)
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
        let normal = crate::proxy::normalize_path(path_and_query.split('?').next().unwrap_or_default())
            .map_err(|_| EditError::InvalidPath)?;
        let pq = match path_and_query.split_once('?') {
            Some((_, query)) => format!("{normal}?{query}"),
            None => normal.into_owned(),
        };
        let pq = PathAndQuery::try_from(pq).map_err(|_| EditError::InvalidPath)?;
        let mut parts = self.ex.request.uri.clone().into_parts();
        parts.path_and_query = Some(pq);
        self.ex.request.uri = http::Uri::from_parts(parts).map_err(|_| EditError::InvalidPath)?;
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
                    address: b.address().to_string(),
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

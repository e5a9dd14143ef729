//! The per-request data plugins read and edit: the request head, the response head once there
//! is one, request metadata, the upstream groups in view, and each plugin's private state.
//!
//! One boxed [`Exchange`] exists per request, and it is always in exactly one place:
//!
//! 1. From the head checks to `on-response-headers`, `proxy::handle` and `proxy::run_route`
//!    hold it.
//! 2. For each plugin call, `Plugin::call` swaps it into the instance's store (a pointer swap:
//!    nothing is copied, so the guest's header functions edit the live request) and back when
//!    the call returns; a cancelled call drops it with the instance.
//! 3. A request body streamed through request-body plugins takes it along: `proxy::send` lends
//!    it to the body's `Filter` (`proxy/filter.rs`), leaving a placeholder, and gets it back
//!    over a oneshot as `ExchangeBack` when the body ends or is dropped, with a plugin's local
//!    answer if one came.
//! 4. On a route with response-body, trailer or log plugins, the `ProxyBody` (`proxy/body.rs`)
//!    takes it for good.
//! 5. When that body is dropped, it moves into the task that runs `on-log`, and ends there.
//!
//! What a call may edit is part of how the call is armed (`Factory::arm`), not of the exchange.

use std::cell::Cell;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::head::request_host;
use crate::telemetry::RequestTrace;
use crate::upstream::{Group, Upstreams};

/// What one request looks like to its plugins.
pub struct Exchange {
    /// The request head as it will go upstream (method, URI, headers).
    pub request: http::request::Parts,
    /// The response head, from the response-header phase on.
    pub response: Option<http::response::Parts>,
    /// The client's address.
    pub client_addr: SocketAddr,
    /// True when the client connected over TLS.
    pub tls: bool,
    /// Who the client's certificate says it is, on a listener that verifies them.
    pub client_identity: Option<Arc<str>>,
    /// The name of the route that matched.
    pub route: Arc<str>,
    /// The route's upstream group.
    pub group: Arc<Group>,
    /// Every configured group, for plugins that choose another one.
    pub upstreams: Arc<Upstreams>,
    /// The TLS server name a plugin chose for this request's upstream connection.
    pub sni: Option<String>,
    /// The request's span and its tracer, when traces are on.
    pub(crate) trace: Option<RequestTrace>,
    /// The id the request is logged under, made when first needed.
    request_id: Option<Arc<str>>,
    /// The backend that answered, once one did.
    pub backend: Option<Arc<str>>,
    pub(crate) state: PluginState,
    /// Each plugin with a canary that the request met: which version it runs (the canary's
    /// name, or none for the plugin's own). Empty, and never allocated, without canaries.
    canaries: Vec<(u32, Option<Arc<str>>)>,
    /// What plugins asked of the route's cache.
    pub(crate) cache: CacheSteer,
}

/// What plugins asked of the route's cache for one request (the WIT `cache` interface).
#[derive(Debug, Default)]
pub(crate) struct CacheSteer {
    /// The key, in place of the host and path.
    pub(crate) key: Option<String>,
    /// Parts added to the key, each after a `|`.
    pub(crate) parts: String,
    pub(crate) bypass: bool,
    /// Store the response this long (zero: not at all), whatever its headers say.
    pub(crate) ttl: Option<std::time::Duration>,
}

impl Exchange {
    /// An exchange for `request` on `route`, bound for `group`.
    pub fn new(
        request: http::request::Parts,
        client_addr: SocketAddr,
        tls: bool,
        route: Arc<str>,
        group: Arc<Group>,
        upstreams: Arc<Upstreams>,
    ) -> Self {
        Exchange {
            request,
            response: None,
            client_addr,
            tls,
            client_identity: None,
            route,
            group,
            upstreams,
            sni: None,
            backend: None,
            request_id: None,
            trace: None,
            state: PluginState::default(),
            canaries: Vec::new(),
            cache: CacheSteer::default(),
        }
    }

    /// The host the client asked for, without the port: the absolute-form target's authority
    /// wins over `Host` (RFC 9112 §3.2.2).
    pub fn host(&self) -> Option<&str> {
        request_host(&self.request)
    }

    /// The id the request is logged under: its `x-request-id`, else a number of the gateway's
    /// own (`<thread>-<count>`, made without shared state: each thread counts for itself).
    pub fn request_id(&mut self) -> Arc<str> {
        if let Some(id) = &self.request_id {
            return id.clone();
        }
        let id: Arc<str> = match self.request.headers.get("x-request-id").and_then(|v| v.to_str().ok()) {
            Some(id) => Arc::from(id),
            None => {
                static THREADS: AtomicU64 = AtomicU64::new(0);
                thread_local! {
                    static NEXT: Cell<(u64, u64)> = Cell::new((THREADS.fetch_add(1, Ordering::Relaxed), 0));
                }
                NEXT.with(|next| {
                    let (thread, count) = next.get();
                    next.set((thread, count + 1));
                    Arc::from(format!("{thread}-{count}"))
                })
            }
        };
        self.request_id = Some(id.clone());
        id
    }

    /// Whether the request runs plugin `plugin`'s canary, once that was chosen.
    pub(crate) fn canary_pick(&self, plugin: u32) -> Option<bool> {
        self.canaries.iter().find(|(id, _)| *id == plugin).map(|(_, canary)| canary.is_some())
    }

    /// Keeps the version of plugin `plugin` the request runs: `canary` names it, if it is the
    /// canary.
    pub(crate) fn pick_canary(&mut self, plugin: u32, canary: Option<Arc<str>>) {
        self.canaries.push((plugin, canary));
    }

    /// The canaries the request ran, by name, comma-separated; none if it ran none.
    pub fn canaries_run(&self) -> Option<String> {
        let mut names = self.canaries.iter().filter_map(|(_, canary)| canary.as_deref());
        let first = names.next()?;
        Some(names.fold(first.to_owned(), |all, name| all + "," + name))
    }

    /// Names the request `id` in the logs from now on (a plugin set its `x-request-id`).
    pub(crate) fn name_request(&mut self, id: &str) {
        self.request_id = Some(Arc::from(id));
    }

    /// What an idle instance holds between calls, made once per instance.
    pub(crate) fn placeholder() -> Box<Self> {
        let (request, ()) = http::Request::new(()).into_parts();
        let upstreams = Upstreams::empty();
        Box::new(Exchange::new(
            request,
            SocketAddr::from(([0, 0, 0, 0], 0)),
            false,
            Arc::from(""),
            Group::empty(),
            upstreams,
        ))
    }
}

/// Bounds on one plugin's state for one request.
const STATE_MAX_ENTRIES: usize = 64;
const STATE_MAX_BYTES: usize = 64 * 1024;

/// Each plugin's key → bytes map for one request, kept by the host so that no instance is held
/// between phases. Most requests store nothing, so this allocates only on first use.
#[derive(Default)]
pub(crate) struct PluginState {
    entries: Vec<StateEntry>,
}

struct StateEntry {
    plugin: u32,
    key: String,
    value: Vec<u8>,
}

impl PluginState {
    pub(crate) fn get(&self, plugin: u32, key: &str) -> Option<&[u8]> {
        self.entries.iter().find(|e| e.plugin == plugin && e.key == key).map(|e| e.value.as_slice())
    }

    /// Stores `value`; false if that would pass the plugin's bounds.
    pub(crate) fn set(&mut self, plugin: u32, key: String, value: Vec<u8>) -> bool {
        let (mut count, mut bytes) = (0, key.len() + value.len());
        let mut existing = None;
        for (i, e) in self.entries.iter().enumerate().filter(|(_, e)| e.plugin == plugin) {
            if e.key == key {
                existing = Some(i);
            } else {
                count += 1;
                bytes += e.key.len() + e.value.len();
            }
        }
        if count + 1 > STATE_MAX_ENTRIES || bytes > STATE_MAX_BYTES {
            return false;
        }
        match existing {
            Some(i) => self.entries[i].value = value,
            None => self.entries.push(StateEntry { plugin, key, value }),
        }
        true
    }

    pub(crate) fn remove(&mut self, plugin: u32, key: &str) -> bool {
        let before = self.entries.len();
        self.entries.retain(|e| !(e.plugin == plugin && e.key == key));
        self.entries.len() != before
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_is_private_to_each_plugin_and_bounded() {
        let mut s = PluginState::default();
        assert!(s.set(1, "k".into(), b"one".to_vec()));
        assert!(s.set(2, "k".into(), b"two".to_vec()));
        assert_eq!(s.get(1, "k"), Some(&b"one"[..]));
        assert_eq!(s.get(2, "k"), Some(&b"two"[..]));
        assert!(s.set(1, "k".into(), b"uno".to_vec()));
        assert_eq!(s.get(1, "k"), Some(&b"uno"[..]));
        assert!(s.remove(1, "k"));
        assert!(!s.remove(1, "k"));
        assert_eq!(s.get(2, "k"), Some(&b"two"[..]));
        for i in 0..STATE_MAX_ENTRIES {
            assert!(s.set(3, format!("k{i}"), vec![]), "entry {i}");
        }
        assert!(!s.set(3, "one-too-many".into(), vec![]));
        assert!(!s.set(4, "big".into(), vec![0; STATE_MAX_BYTES]));
    }
}

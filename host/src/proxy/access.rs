//! The access log: one line per request, at target `wasmgate::access`, with the fields the
//! config selects (`[log] access_fields`), written when the response is done.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tracing::field::{Empty, display};

use super::body::Outcome;
use crate::config::{AccessField, LogConfig};

/// Which fields the lines carry, by [`AccessField::ALL`] order.
#[derive(Debug)]
pub(crate) struct AccessLog {
    fields: [bool; AccessField::ALL.len()],
}

impl AccessLog {
    /// The access log `config` asks for, if any.
    pub(crate) fn new(config: &LogConfig) -> Option<Arc<AccessLog>> {
        config.access.then(|| {
            Arc::new(AccessLog { fields: AccessField::ALL.map(|f| config.access_fields.contains(&f)) })
        })
    }
}

/// What one request's line says, gathered as the request goes.
pub(crate) struct AccessEntry {
    pub(crate) log: Arc<AccessLog>,
    pub(crate) client: SocketAddr,
    pub(crate) method: http::Method,
    pub(crate) host: String,
    pub(crate) path: String,
    pub(crate) route: Arc<str>,
    /// Known once the phases ran: a plugin may name the request.
    pub(crate) request_id: Option<Arc<str>>,
    pub(crate) user_agent: String,
    pub(crate) tls: bool,
    /// The plugin canaries that ran, known once the phases ran.
    pub(crate) canaries: Option<String>,
}

impl AccessEntry {
    /// Writes the line for the request that ended with `outcome`.
    pub(crate) fn write(&self, outcome: &Outcome, duration: Duration, bytes_out: u64) {
        let on = |field: AccessField| self.log.fields[field as usize];
        let client = display(self.client);
        let method = display(&self.method);
        let duration_ms = duration.as_secs_f64() * 1e3;
        let backend = outcome.backend.as_deref().unwrap_or("-");
        let (host, path, route) = (self.host.as_str(), self.path.as_str(), &*self.route);
        let (request_id, user_agent) = (self.request_id.as_deref().unwrap_or("-"), self.user_agent.as_str());
        let canary = self.canaries.as_deref().unwrap_or("-");
        let cache = outcome.cache.unwrap_or("-");
        // Unselected fields are `Empty`: formatters leave them out.
        tracing::info!(
            target: "wasmgate::access",
            client = if on(AccessField::Client) { &client as &dyn Value } else { &Empty },
            method = if on(AccessField::Method) { &method as &dyn Value } else { &Empty },
            host = if on(AccessField::Host) { &host as &dyn Value } else { &Empty },
            path = if on(AccessField::Path) { &path as &dyn Value } else { &Empty },
            status = if on(AccessField::Status) { &outcome.status as &dyn Value } else { &Empty },
            duration_ms = if on(AccessField::DurationMs) { &duration_ms as &dyn Value } else { &Empty },
            bytes_out = if on(AccessField::BytesOut) { &bytes_out as &dyn Value } else { &Empty },
            route = if on(AccessField::Route) { &route as &dyn Value } else { &Empty },
            backend = if on(AccessField::Backend) { &backend as &dyn Value } else { &Empty },
            request_id = if on(AccessField::RequestId) { &request_id as &dyn Value } else { &Empty },
            user_agent = if on(AccessField::UserAgent) { &user_agent as &dyn Value } else { &Empty },
            tls = if on(AccessField::Tls) { &self.tls as &dyn Value } else { &Empty },
            canary = if on(AccessField::Canary) { &canary as &dyn Value } else { &Empty },
            cache = if on(AccessField::Cache) { &cache as &dyn Value } else { &Empty },
            "access"
        );
    }
}

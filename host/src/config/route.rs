//! `[[routes]]`: what a route matches (hosts, path prefix, exact path or pattern, methods,
//! request headers and query parameters, [`FieldMatch`]), how it rewrites the request
//! ([`Rewrite`], [`HeaderEdits`]), its plugin chain ([`RoutePlugin`]), where its requests go
//! (one upstream group, a split, or an answer of its own: `traffic.rs`), and how they are
//! retried ([`RetryOn`]) and timed ([`RouteTimeouts`]).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use toml::Spanned;

use super::traffic::{Mirror, Redirect, Respond, SplitBackend, Sticky};
use super::{
    CacheConfig, Check, CompressConfig, ConfigError, PluginConfig, RecordConfig, UpstreamConfig, defaults,
    units,
};

/// `[[routes]]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Shown to plugins and in logs; default `route-N`.
    pub name: Option<String>,
    /// Match this host exactly, or any subdomain with `*.example.org`; any host if unset.
    pub host: Option<String>,
    /// Match any of these hosts, each like `host` (which may not be set as well).
    #[serde(default)]
    pub hosts: Vec<String>,
    /// Match paths starting with this; default `/`.
    #[serde(default = "defaults::path_prefix")]
    pub path_prefix: String,
    /// Match this path exactly (as normalised, without the query).
    pub path: Option<String>,
    /// Match paths this regular expression matches whole (`regex` crate syntax, linear time).
    pub path_regex: Option<String>,
    /// Request headers that must all match.
    #[serde(default)]
    pub headers: Vec<FieldMatch>,
    /// Query parameters that must all match, compared as sent (not percent-decoded).
    #[serde(default)]
    pub query: Vec<FieldMatch>,
    /// The request's path or host, rewritten before the route's plugins see it.
    pub rewrite: Option<Rewrite>,
    /// Request headers set, added or removed before the route's plugins see them.
    #[serde(default)]
    pub request_headers: HeaderEdits,
    /// Response headers set, added or removed before the route's response plugins see them.
    #[serde(default)]
    pub response_headers: HeaderEdits,
    /// Match only these methods; any if empty.
    #[serde(default, with = "methods")]
    pub methods: Vec<http::Method>,
    /// Plugins, in the order their request phases run (response phases run in reverse).
    #[serde(default)]
    pub plugins: Vec<Spanned<RoutePlugin>>,
    /// The group under `[upstreams]` that serves the route; its span locates a wrong name.
    pub upstream: Option<Spanned<String>>,
    /// Instead of `upstream`: groups that share the route's requests by weight.
    #[serde(default)]
    pub backends: Vec<SplitBackend>,
    /// What keeps a client on one side of `backends`; none by default.
    pub sticky: Option<Sticky>,
    /// A copy of the route's requests sent to another group.
    pub mirror: Option<Mirror>,
    /// Instead of an upstream: the route answers with this redirect.
    pub redirect: Option<Redirect>,
    /// Instead of an upstream: the route answers with this fixed response.
    pub respond: Option<Respond>,
    /// Further attempts after a failed one, each on another backend where there is one. Only
    /// requests without a body are retried, and a non-idempotent one only when nothing was
    /// sent (the connection failed).
    #[serde(default = "defaults::retries")]
    pub retries: u32,
    /// What a retry may follow: `connect-failure`, `reset` (the exchange broke before a
    /// response), `502`, `503`, `504`.
    #[serde(default = "defaults::retry_on")]
    pub retry_on: Vec<RetryOn>,
    /// Request bodies up to this size (by Content-Length) are read whole before forwarding so
    /// that a retry can send them again; larger or unsized ones stream and are not retried.
    #[serde(default = "defaults::retry_buffer", with = "units::size")]
    pub retry_buffer: usize,
    /// Retries in progress at most, in percent of the route's requests in progress (at least 3
    /// are always allowed): a failing backend cannot multiply the load.
    #[serde(default = "defaults::retry_budget")]
    pub retry_budget: u32,
    /// How long the route's requests may take.
    #[serde(default)]
    pub timeouts: RouteTimeouts,
    /// Request bodies are read whole, up to this size (413 beyond), before the upstream is
    /// chosen; request-body plugins then see the whole body at once. Streamed if unset.
    #[serde(default, with = "units::option_size")]
    pub request_buffer: Option<usize>,
    /// Requests that arrive over plain HTTP are answered 308 to `https://` on this port.
    pub redirect_https: Option<u16>,
    /// WebSocket upgrades are tunnelled to the upstream (true), or dropped.
    #[serde(default = "defaults::yes")]
    pub websocket: bool,
    /// How long a WebSocket tunnel may carry no data in either direction before it is closed.
    #[serde(default = "defaults::tunnel_idle", with = "units::duration")]
    pub tunnel_idle: Duration,
    /// Responses are compressed for clients that accept it; off if unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compress: Option<CompressConfig>,
    /// Responses are stored and served from the gateway's memory (RFC 9111); off if unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<CacheConfig>,
    /// A sample of the route's requests is written to a file that `wasmgate plugin test`
    /// replays; off if unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record: Option<RecordConfig>,
}

impl RouteConfig {
    /// The route's name: its `name`, else `route-INDEX`.
    pub fn name_at(&self, index: usize) -> String {
        self.name.clone().unwrap_or_else(|| format!("route-{index}"))
    }

    /// The upstream groups the route's requests go to, with their weights: `upstream` alone
    /// (weight 1), or `backends`; none on a route that answers itself.
    pub fn groups(&self) -> Vec<(&Spanned<String>, u32)> {
        match &self.upstream {
            Some(upstream) => vec![(upstream, 1)],
            None => self.backends.iter().map(|b| (&b.upstream, b.weight)).collect(),
        }
    }

    /// Checks route `index`, whose upstream and plugins must be among those configured.
    pub(super) fn validate(
        &self,
        index: usize,
        upstreams: &BTreeMap<String, UpstreamConfig>,
        plugins: &BTreeMap<String, PluginConfig>,
        at: &Check<'_>,
    ) -> Result<(), ConfigError> {
        let field = |f: &str| format!("routes[{index}].{f}");
        let targets = [
            self.upstream.is_some(),
            !self.backends.is_empty(),
            self.redirect.is_some(),
            self.respond.is_some(),
        ];
        if targets.iter().filter(|t| **t).count() != 1 {
            return Err(at.invalid(
                field("upstream"),
                "give exactly one of `upstream`, `backends`, `redirect` or `respond`",
            ));
        }
        let answers = self.redirect.is_some() || self.respond.is_some();
        if answers && (!self.plugins.is_empty() || self.mirror.is_some() || self.redirect_https.is_some()) {
            return Err(at.invalid(
                field(if self.plugins.is_empty() { "mirror" } else { "plugins" }),
                "a route that answers itself (`redirect`, `respond`) runs no plugins, mirror or `redirect_https`",
            ));
        }
        let named = self.upstream.iter().map(|u| ("upstream".to_owned(), u));
        let named = named
            .chain(
                self.backends
                    .iter()
                    .enumerate()
                    .map(|(j, b)| (format!("backends[{j}].upstream"), &b.upstream)),
            )
            .chain(self.mirror.iter().map(|m| ("mirror.upstream".to_owned(), &m.upstream)));
        for (name, group) in named {
            if !upstreams.contains_key(group.get_ref()) {
                return Err(at.invalid_at(
                    field(&name),
                    group.span(),
                    format!("no upstream group `{}` is configured", group.get_ref()),
                ));
            }
        }
        let total: u64 = self.backends.iter().map(|b| u64::from(b.weight)).sum();
        if !self.backends.is_empty() && total == 0 {
            return Err(at.invalid(field("backends"), "every weight is 0: no side takes a request"));
        }
        if total > u64::from(MAX_SPLIT_WEIGHT) {
            return Err(
                at.invalid(field("backends"), format!("the weights add up to more than {MAX_SPLIT_WEIGHT}"))
            );
        }
        if let Some(sticky) = &self.sticky {
            if self.backends.is_empty() {
                return Err(at.invalid(field("sticky"), "only a route with `backends` has sides to stick to"));
            }
            sticky.validate().map_err(|reason| at.invalid(field("sticky"), reason))?;
        }
        if let Some(mirror) = &self.mirror {
            mirror.validate().map_err(|reason| at.invalid(field("mirror"), reason))?;
        }
        if let Some(redirect) = &self.redirect {
            redirect.validate().map_err(|reason| at.invalid(field("redirect"), reason))?;
        }
        if let Some(respond) = &self.respond {
            respond.validate().map_err(|reason| at.invalid(field("respond"), reason))?;
        }
        if let Some(compress) = &self.compress {
            compress
                .validate()
                .map_err(|(name, reason)| at.invalid(field(&format!("compress.{name}")), reason))?;
        }
        if let Some(cache) = &self.cache {
            if answers {
                return Err(
                    at.invalid(field("cache"), "a route that answers itself has nothing to cache".to_owned())
                );
            }
            cache.validate().map_err(|(name, reason)| at.invalid(field(&format!("cache.{name}")), reason))?;
        }
        if let Some(record) = &self.record {
            record.validate(&field("record"), at)?;
        }
        for (j, p) in self.plugins.iter().enumerate() {
            let name = &p.get_ref().name;
            if !plugins.contains_key(name) {
                return Err(at.invalid_at(
                    field(&format!("plugins[{j}]")),
                    p.span(),
                    format!("no plugin `{name}` is configured"),
                ));
            }
            if self.plugins[..j].iter().any(|q| q.get_ref().name == *name) {
                return Err(at.invalid_at(
                    field(&format!("plugins[{j}]")),
                    p.span(),
                    format!("plugin `{name}` is in the chain twice"),
                ));
            }
        }
        if self.host.is_some() && !self.hosts.is_empty() {
            return Err(at.invalid(field("hosts"), "set `host` or `hosts`, not both"));
        }
        // A `*` only as a leading `*.` label; Host headers are ASCII, so a route host is too.
        let hosts = self.host.iter().map(|h| ("host".to_owned(), h));
        for (name, host) in
            hosts.chain(self.hosts.iter().enumerate().map(|(j, h)| (format!("hosts[{j}]"), h)))
        {
            let rest = host.strip_prefix("*.").unwrap_or(host);
            if rest.is_empty() || rest.contains('*') || !host.is_ascii() {
                return Err(
                    at.invalid(field(&name), format!("`{host}` is not a host name or a `*.suffix` pattern"))
                );
            }
        }
        if let Some(path) = &self.path
            && !path.starts_with('/')
        {
            return Err(at.invalid(field("path"), "must start with `/`"));
        }
        if let Some(pattern) = &self.path_regex {
            whole_match(pattern).map_err(|reason| at.invalid(field("path_regex"), reason))?;
        }
        if let Some(rewrite) = &self.rewrite {
            rewrite.validate().map_err(|reason| at.invalid(field("rewrite"), reason))?;
        }
        for (name, edits) in
            [("request_headers", &self.request_headers), ("response_headers", &self.response_headers)]
        {
            edits.validate().map_err(|reason| at.invalid(field(name), reason))?;
        }
        for (kind, matches) in [("headers", &self.headers), ("query", &self.query)] {
            for (j, m) in matches.iter().enumerate() {
                m.validate(kind == "headers")
                    .map_err(|reason| at.invalid(field(&format!("{kind}[{j}]")), reason))?;
            }
        }
        let t = &self.timeouts;
        if t.body_idle.is_zero()
            || t.response.is_some_and(|d| d.is_zero())
            || t.total.is_some_and(|d| d.is_zero())
        {
            return Err(at.invalid(field("timeouts"), "timeouts must be more than 0"));
        }
        if !self.path_prefix.starts_with('/') {
            return Err(at.invalid(field("path_prefix"), "must start with `/`"));
        }
        // The methods were checked when they were read.
        Ok(())
    }
}

/// One request header or query parameter a route requires: `{ name, value }` (equal),
/// `{ name, regex }` (matched whole) or `{ name, present = true | false }`. With several values
/// of one name, any may match.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct FieldMatch {
    /// The header (case-insensitive) or parameter (exact) name.
    pub name: String,
    /// The value, exactly (a header's compared byte for byte, as sent).
    pub value: Option<String>,
    /// A regular expression the whole value must match.
    pub regex: Option<String>,
    /// True: the field must be there, whatever its value; false: it must not be.
    pub present: Option<bool>,
}

impl FieldMatch {
    fn validate(&self, header: bool) -> Result<(), String> {
        let tests = [self.value.is_some(), self.regex.is_some(), self.present.is_some()];
        if tests.iter().filter(|t| **t).count() != 1 {
            return Err(format!("`{}`: give exactly one of `value`, `regex` or `present`", self.name));
        }
        if header && http::HeaderName::from_bytes(self.name.as_bytes()).is_err() {
            return Err(format!("`{}` is not a header name", self.name));
        }
        if self.name.is_empty() {
            return Err("the name is empty".to_owned());
        }
        if let Some(pattern) = &self.regex {
            whole_match(pattern)?;
        }
        Ok(())
    }
}

/// `rewrite = { prefix = "/v2" }`: the matched `path_prefix` replaced, the rest kept;
/// `{ path = "/status" }`: the whole path replaced (the query kept); `host`: the Host sent
/// upstream.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Rewrite {
    /// What the matched path prefix becomes.
    pub prefix: Option<String>,
    /// What the whole path becomes.
    pub path: Option<String>,
    /// The Host header sent upstream.
    pub host: Option<String>,
}

impl Rewrite {
    fn validate(&self) -> Result<(), String> {
        check_paths(self.prefix.as_ref(), self.path.as_ref())?;
        if let Some(host) = &self.host
            && host.parse::<http::uri::Authority>().is_err()
        {
            return Err(format!("`{host}` is not a host"));
        }
        Ok(())
    }
}

/// `{ set = { name = "value" }, add = { name = "value" }, remove = ["name"] }`: `remove` drops
/// a header, `set` replaces every value of one, `add` appends one; applied in that order.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct HeaderEdits {
    /// Headers given this one value.
    #[serde(default)]
    pub set: BTreeMap<String, String>,
    /// Headers given one more value.
    #[serde(default)]
    pub add: BTreeMap<String, String>,
    /// Headers removed.
    #[serde(default)]
    pub remove: Vec<String>,
}

impl HeaderEdits {
    /// True when there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.add.is_empty() && self.remove.is_empty()
    }

    fn validate(&self) -> Result<(), String> {
        check_headers(self.set.iter().chain(&self.add))?;
        let none = String::new();
        check_headers(self.remove.iter().map(|name| (name, &none)))
    }
}

/// A replacement `prefix` or whole `path` (not both), each an absolute path without query.
pub(super) fn check_paths(prefix: Option<&String>, path: Option<&String>) -> Result<(), String> {
    if prefix.is_some() && path.is_some() {
        return Err("set `prefix` or `path`, not both".to_owned());
    }
    for path in prefix.into_iter().chain(path) {
        if !path.starts_with('/') || path.contains(['?', '#']) || crate::head::normalize_path(path).is_err() {
            return Err(format!("`{path}` is not an absolute path"));
        }
    }
    Ok(())
}

/// Header names and values a route sets: valid, and none the gateway manages itself.
pub(super) fn check_headers<'a>(
    headers: impl Iterator<Item = (&'a String, &'a String)>,
) -> Result<(), String> {
    for (name, value) in headers {
        let header = http::HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| format!("`{name}` is not a header name"))?;
        if crate::head::is_reserved(&header) {
            return Err(format!("`{name}` is the gateway's to manage"));
        }
        http::HeaderValue::from_str(value).map_err(|_| format!("`{value}` is not a header value"))?;
    }
    Ok(())
}

/// The most a split's weights may add up to: each request's side is looked up in a table of
/// that many slots.
pub const MAX_SPLIT_WEIGHT: u32 = 10_000;

/// One plugin of a route's chain: `"name"`, or `{ name = "…", config = { … } }` with the
/// route's own config for it, which the plugin's `init-route` checks and keeps.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RoutePlugin {
    /// The plugin under `[plugins]`.
    pub name: String,
    /// The route's config for it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub config: Option<toml::Table>,
}

impl<'de> Deserialize<'de> for RoutePlugin {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct WithConfig {
            name: String,
            #[serde(default)]
            config: toml::Table,
        }
        struct Entry;
        impl<'de> serde::de::Visitor<'de> for Entry {
            type Value = RoutePlugin;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a plugin name, or `{ name = \"…\", config = { … } }`")
            }
            fn visit_str<E: serde::de::Error>(self, name: &str) -> Result<RoutePlugin, E> {
                Ok(RoutePlugin { name: name.to_owned(), config: None })
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<RoutePlugin, A::Error> {
                let entry = WithConfig::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
                Ok(RoutePlugin { name: entry.name, config: Some(entry.config) })
            }
        }
        d.deserialize_any(Entry)
    }
}

/// The most memory one compiled pattern may take: bounds what a config can make the gateway
/// hold, and keeps matching fast.
const PATTERN_SIZE: usize = 1 << 20;

/// `pattern` compiled to match a whole path or value.
pub fn whole_match(pattern: &str) -> Result<regex::Regex, String> {
    regex::RegexBuilder::new(&format!("^(?:{pattern})$"))
        .size_limit(PATTERN_SIZE)
        .build()
        .map_err(|error| format!("`{pattern}` is not a valid pattern: {error}"))
}

/// `methods = ["GET", "HEAD"]`: read as [`http::Method`]s, written back as their names.
mod methods {
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(value: &[http::Method], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(value.iter().map(http::Method::as_str))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<http::Method>, D::Error> {
        Vec::<String>::deserialize(d)?
            .iter()
            .map(|m| {
                http::Method::from_bytes(m.as_bytes()).map_err(|_| {
                    serde::de::Error::custom(super::super::typed_error(
                        "methods",
                        format!("`{m}` is not a method"),
                    ))
                })
            })
            .collect()
    }
}

/// `timeouts = { response = "5s", body_idle = "30s", total = "1m" }` on a route.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct RouteTimeouts {
    /// Time allowed to open a TCP connection to a backend; default: the group's
    /// `connect_timeout`.
    #[serde(with = "units::option_duration")]
    pub connect: Option<Duration>,
    /// Time allowed for the TLS handshake with a backend; default: the group's
    /// `tls_handshake_timeout`.
    #[serde(with = "units::option_duration")]
    pub tls_handshake: Option<Duration>,
    /// From sending the request to the response headers (each attempt); default: the
    /// group's `response_timeout`.
    #[serde(with = "units::option_duration")]
    pub response: Option<Duration>,
    /// How long a request or response body may go without data.
    #[serde(with = "units::duration")]
    pub body_idle: Duration,
    /// From the request's arrival to the end of its response, across retries; none by default.
    #[serde(with = "units::option_duration")]
    pub total: Option<Duration>,
}

impl Default for RouteTimeouts {
    fn default() -> Self {
        RouteTimeouts {
            connect: None,
            tls_handshake: None,
            response: None,
            body_idle: Duration::from_secs(60),
            total: None,
        }
    }
}

/// One condition a retry may follow.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
pub enum RetryOn {
    /// The connection was refused or timed out: nothing was sent.
    #[serde(rename = "connect-failure")]
    ConnectFailure,
    /// The exchange broke before any response byte (idempotent requests only).
    #[serde(rename = "reset")]
    Reset,
    /// An HTTP/2 backend refused the stream (`REFUSED_STREAM`): it did not process it.
    #[serde(rename = "refused-stream")]
    RefusedStream,
    /// The backend answered 502.
    #[serde(rename = "502")]
    Status502,
    /// The backend answered 503.
    #[serde(rename = "503")]
    Status503,
    /// The backend answered 504.
    #[serde(rename = "504")]
    Status504,
}

//! The gateway's TOML configuration: what an operator writes, its defaults, and the checks run
//! before anything serves. Every error names the file, the field (and line where known) and the
//! reason; unknown fields are refused.
//!
//! This module owns [`Config`], reading and checking it ([`Config::load`], [`ConfigError`]);
//! each section lives in its own submodule and checks itself. It is a leaf: it depends on
//! serde, `toml` and `http` only, and the runtime modules build their own types from it.
//!
//! The reference for operators is `docs/config.md`; keep the two in step.

mod cache;
mod compress;
pub mod defaults;
mod observe;
mod plugin;
mod record;
mod route;
mod server;
mod traffic;
mod units;
mod upstream;

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use self::cache::CacheConfig;
pub use self::compress::{Coding, CompressConfig};
pub use self::observe::{AccessField, AdminConfig, LogConfig, LogFormat, TraceProtocol, TracesConfig};
pub use self::plugin::{CanaryConfig, FailurePolicy, Isolation, PluginConfig};
pub use self::record::RecordConfig;
pub use self::route::{
    FieldMatch, HeaderEdits, MAX_SPLIT_WEIGHT, RetryOn, Rewrite, RouteConfig, RoutePlugin, RouteTimeouts,
    whole_match,
};
pub use self::server::{
    CertificateConfig, ClientAuth, ListenerConfig, ListenerTlsConfig, RuntimeSection, ServerConfig,
    StoreBackend, StoreSection, WhenUnavailable,
};
pub use self::traffic::{Mirror, Redirect, Respond, SplitBackend, Sticky};
pub use self::upstream::{
    AllUnhealthy, BackendConfig, BalanceSetting, HashKey, HashKeySetting, HealthCheckConfig, HealthCheckKind,
    OutlierConfig, ResolvedTls, ResolverSection, StatusRange, UpstreamConfig, UpstreamProtocol,
    UpstreamTlsConfig,
};

/// A config that could not be read or is not valid.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{}: cannot read: {source}", file.display())]
    Read {
        /// The config file, as it was named.
        file: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The TOML is malformed or does not fit the schema (unknown field, wrong type…).
    #[error("{}:{line}:{column}: {message}", file.display())]
    Parse {
        /// The config file, as it was named.
        file: PathBuf,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What the parser said.
        message: String,
    },
    /// A value is well-formed but wrong (an unknown name, an empty list…).
    #[error("{}:{}{field}: {reason}", file.display(), line.map(|l| format!("{l}: ")).unwrap_or_default())]
    Invalid {
        /// The config file, as it was named.
        file: PathBuf,
        /// The line, when the field's position is known.
        line: Option<usize>,
        /// The field, as a TOML path (`routes[0].upstream`).
        field: String,
        /// Why it is refused.
        reason: String,
    },
}

/// The whole config file.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Process-wide settings.
    #[serde(default)]
    pub server: ServerConfig,
    /// Plugin runtime settings.
    #[serde(default)]
    pub runtime: RuntimeSection,
    /// Where the plugins' shared store lives.
    #[serde(default)]
    pub store: StoreSection,
    /// The name servers backends named by DNS are resolved with.
    #[serde(default)]
    pub resolver: ResolverSection,
    /// Where to accept connections.
    #[serde(default)]
    pub listeners: Vec<ListenerConfig>,
    /// Plugins by name.
    #[serde(default)]
    pub plugins: BTreeMap<String, PluginConfig>,
    /// Upstream groups by name.
    #[serde(default)]
    pub upstreams: BTreeMap<String, UpstreamConfig>,
    /// Routes, matched in order; the first that fits a request takes it.
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
    /// The admin listener; none unless present.
    pub admin: Option<AdminConfig>,
    /// Log format and the access log.
    #[serde(default)]
    pub log: LogConfig,
    /// OpenTelemetry traces; off unless present.
    pub traces: Option<TracesConfig>,
    /// The file this was read from; relative plugin paths are resolved against its folder.
    #[serde(skip)]
    pub file: PathBuf,
}

impl Config {
    /// Reads and checks the config at `file`.
    pub fn load(file: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(file)
            .map_err(|source| ConfigError::Read { file: file.to_owned(), source })?;
        Config::parse(file, &text)
    }

    /// Parses and checks `text`, read from `file`.
    pub fn parse(file: &Path, text: &str) -> Result<Config, ConfigError> {
        let at = Check { file, text };
        let mut config: Config = toml::from_str(text).map_err(|e| at.parse_error(&e))?;
        config.file = file.to_owned();
        config.validate(&at)?;
        Ok(config)
    }

    /// The checks serde cannot make: limits, names that must point somewhere, and fields
    /// that go together. Sections are checked in file order and the first mistake is reported.
    fn validate(&self, at: &Check<'_>) -> Result<(), ConfigError> {
        if self.listeners.is_empty() {
            return Err(at.invalid("listeners", "at least one listener is needed"));
        }
        for (i, listener) in self.listeners.iter().enumerate() {
            listener.validate(i, at)?;
        }
        if let Some(admin) = &self.admin {
            admin.validate(at)?;
        }
        if let Some(traces) = &self.traces {
            traces.validate(at)?;
        }
        self.server.validate(at)?;
        self.runtime.validate(&self.plugins, at)?;
        self.store.validate(at)?;
        for (name, p) in &self.plugins {
            p.validate(name, self.runtime.max_memory, at)?;
        }
        for (name, u) in &self.upstreams {
            u.validate(name, at)?;
        }
        for (i, r) in self.routes.iter().enumerate() {
            r.validate(i, &self.upstreams, &self.plugins, at)?;
            // Metrics, logs and a plugin's per-route config know a route by its name.
            let name = r.name_at(i);
            if let Some(first) = (0..i).find(|&j| self.routes[j].name_at(j) == name) {
                return Err(at.invalid(
                    format!("routes[{i}].name"),
                    format!("route `{name}` is named like routes[{first}]: route names must differ"),
                ));
            }
        }
        Ok(())
    }

    /// The TLS settings of upstream `u`, paths resolved.
    pub fn upstream_tls(&self, u: &UpstreamConfig) -> Option<ResolvedTls> {
        let tls = u.tls.as_ref()?;
        Some(ResolvedTls {
            sni: tls.sni.clone(),
            ca: tls.ca.as_deref().map(|p| self.resolve(p)),
            client_cert: match (&tls.client_cert, &tls.client_key) {
                (Some(c), Some(k)) => Some((self.resolve(c), self.resolve(k))),
                _ => None,
            },
        })
    }

    /// `path` relative to the config file's folder, unless absolute.
    pub fn resolve(&self, path: &Path) -> PathBuf {
        match self.file.parent() {
            Some(dir) if path.is_relative() => dir.join(path),
            _ => path.to_owned(),
        }
    }

    /// An error about `field` of this config, for checks made after parsing (plugin loading,
    /// address resolution).
    pub fn error(&self, field: String, reason: String) -> ConfigError {
        ConfigError::Invalid { file: self.file.clone(), line: None, field, reason }
    }
}

/// What a section's check needs to name a mistake: the file, and its text for line numbers.
struct Check<'a> {
    file: &'a Path,
    text: &'a str,
}

impl Check<'_> {
    /// `field` is refused for `reason`; its line is not known.
    fn invalid(&self, field: impl Into<String>, reason: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            file: self.file.to_owned(),
            line: None,
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// `field`, found at `span` of the text, is refused for `reason`.
    fn invalid_at(
        &self,
        field: impl Into<String>,
        span: Range<usize>,
        reason: impl Into<String>,
    ) -> ConfigError {
        ConfigError::Invalid {
            file: self.file.to_owned(),
            line: Some(line_col(self.text, span).0),
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// A TOML or schema error. A typed value's own refusal (see [`typed_error`]) becomes an
    /// `Invalid` naming the whole field path, like the checks made after parsing.
    fn parse_error(&self, e: &toml::de::Error) -> ConfigError {
        let message = e.message().trim();
        // Name the field the error is at, whenever its position says which.
        if let Some(span) = e.span()
            && let Some((field, key)) = field_at(self.text, &span)
        {
            let reason = message.strip_prefix(&format!("{key}: ")).unwrap_or(message);
            return self.invalid_at(field, span, reason);
        }
        let (line, column) = e.span().map_or((1, 1), |s| line_col(self.text, s));
        ConfigError::Parse { file: self.file.to_owned(), line, column, message: message.to_owned() }
    }
}

/// The message of a typed value that refuses its text (`hash_key`, `expected_status`,
/// `methods`). serde hands such an error over as text only, without the field's path; the key
/// at its front is how [`Check::parse_error`] recognises it and puts the path back.
fn typed_error(key: &str, reason: String) -> String {
    format!("{key}: {reason}")
}

/// The path (`routes[0].methods`) and last key (`methods`) of the value at `span`: the
/// innermost non-table value containing it, without indices into that value's own array.
fn field_at(text: &str, span: &Range<usize>) -> Option<(String, String)> {
    use toml::de::{DeTable, DeValue};

    fn in_table(table: &DeTable<'_>, path: &str, span: &Range<usize>) -> Option<(String, String)> {
        table.iter().find_map(|(key, value)| {
            let key_span = key.span();
            let key = key.get_ref();
            let here = if path.is_empty() { key.to_string() } else { format!("{path}.{key}") };
            // An unknown field's error is at its key.
            let at_key = key_span.start <= span.start && span.end <= key_span.end;
            if at_key { Some((here.clone(), key.to_string())) } else { in_value(value, &here, key, span) }
        })
    }
    fn in_value(
        value: &toml::Spanned<DeValue<'_>>,
        path: &str,
        key: &str,
        span: &Range<usize>,
    ) -> Option<(String, String)> {
        let covers = value.span().start <= span.start && span.end <= value.span().end;
        match value.get_ref() {
            // A table's span may be its header only, so look inside whatever it says; a
            // missing field's error is at the table itself.
            DeValue::Table(table) => {
                in_table(table, path, span).or_else(|| covers.then(|| (path.to_owned(), key.to_owned())))
            }
            DeValue::Array(items) => {
                let inner = items.iter().enumerate().find_map(|(i, item)| match item.get_ref() {
                    DeValue::Table(table) => in_table(table, &format!("{path}[{i}]"), span),
                    DeValue::Array(_) => in_value(item, &format!("{path}[{i}]"), key, span),
                    _ => None,
                });
                inner.or_else(|| covers.then(|| (path.to_owned(), key.to_owned())))
            }
            _ => covers.then(|| (path.to_owned(), key.to_owned())),
        }
    }

    let document = DeTable::parse(text).ok()?;
    in_table(document.get_ref(), "", span)
}

/// 1-based line and column of a byte offset.
fn line_col(text: &str, span: Range<usize>) -> (usize, usize) {
    let before = &text[..span.start.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(Path::new("gw.toml"), text)
    }

    const MINIMAL: &str = r#"
[[listeners]]
address = "127.0.0.1:8080"

[upstreams.origins]
backends = ["127.0.0.1:9001", { address = "127.0.0.1:9002", weight = 3 }]

[[routes]]
upstream = "origins"
"#;

    #[test]
    fn a_ten_line_config_works_with_defaults() {
        let c = parse(MINIMAL).expect("valid");
        assert_eq!(c.server.header_read_timeout, Duration::from_secs(10));
        assert_eq!(c.upstreams["origins"].backends[1].weight(), 3);
        assert_eq!(c.routes[0].path_prefix, "/");
    }

    #[test]
    fn unknown_fields_are_refused_with_their_line() {
        let err = parse(&MINIMAL.replace("upstream = \"origins\"", "upstream = \"origins\"\ncolour = 1"))
            .expect_err("unknown field");
        let msg = err.to_string();
        assert!(msg.starts_with("gw.toml:10:"), "{msg}");
        assert!(msg.contains("unknown field `colour`"), "{msg}");
    }

    #[test]
    fn names_that_point_nowhere_are_refused_with_field_and_line() {
        let err =
            parse(&MINIMAL.replace("upstream = \"origins\"", "upstream = \"elsewhere\"")).expect_err("bad");
        assert_eq!(
            err.to_string(),
            "gw.toml:9: routes[0].upstream: no upstream group `elsewhere` is configured"
        );
        let err =
            parse(&MINIMAL.replace("upstream = \"origins\"", "upstream = \"origins\"\nplugins = [\"nope\"]"))
                .expect_err("bad");
        assert_eq!(err.to_string(), "gw.toml:10: routes[0].plugins[0]: no plugin `nope` is configured");
    }

    #[test]
    fn consistent_hashing_needs_a_valid_key_and_only_it_takes_one() {
        let with =
            |extra: &str| parse(&MINIMAL.replace("weight = 3 }]", &format!("weight = 3 }}]\n{extra}")));
        assert!(with("balance = \"consistent-hash\"\nhash_key = \"cookie:session\"").is_ok());
        let err = with("balance = \"consistent-hash\"").expect_err("no key");
        assert!(err.to_string().contains("upstreams.origins.hash_key"), "{err}");
        let err = with("balance = \"consistent-hash\"\nhash_key = \"body\"").expect_err("bad key");
        assert!(err.to_string().contains("`body`"), "{err}");
        assert!(with("hash_key = \"path\"").is_err());
        assert!(with("balance = \"least-request\"").is_ok());
        assert!(with("balance = \"fastest\"").is_err());
    }

    #[test]
    fn operator_sections_are_checked_naming_the_field() {
        let with = |extra: &str| parse(&format!("{extra}\n{MINIMAL}"));
        let err = with("[traces]\nendpoint = \"http://127.0.0.1:4318/v1/traces\"\nsample_ratio = 2.0")
            .expect_err("ratio");
        assert!(err.to_string().contains("traces.sample_ratio: must be between 0 and 1"), "{err}");
        let err = with("[admin]\ntoken = \"\"").expect_err("empty token");
        assert!(err.to_string().contains("admin.token"), "{err}");
        let err = with("[log]\naccess_fields = [\"colour\"]").expect_err("unknown field");
        assert!(err.to_string().contains("colour"), "{err}");
        let ok = with("[admin]\n[log]\nformat = \"json\"\naccess = true").expect("valid");
        assert_eq!(ok.admin.map(|a| a.address.to_string()).as_deref(), Some("127.0.0.1:9901"));
    }

    #[test]
    fn durations_and_sizes_are_read_with_units() {
        let c = parse(&format!(
            "{MINIMAL}\n[plugins.p]\npath = \"p.wasm\"\ndeadline = \"25ms\"\nmemory_limit = \"8MiB\"\nconfig = {{ a = 1 }}\n"
        ))
        .expect("valid");
        let p = &c.plugins["p"];
        assert_eq!(p.deadline, Duration::from_millis(25));
        assert_eq!(p.memory_limit, 8 << 20);
        let err = parse(&MINIMAL.replace("[[routes]]", "[server]\nidle_timeout = \"soon\"\n\n[[routes]]"))
            .expect_err("bad");
        assert!(err.to_string().contains("idle_timeout") || err.to_string().contains("soon"), "{err}");
        assert_eq!((p.init_deadline, p.max_calls, p.retire_memory), (Duration::from_secs(1), None, 0.9));
        for (setting, field) in [
            ("init_deadline = \"0s\"", "plugins.p.init_deadline"),
            ("max_calls = 0", "plugins.p.max_calls"),
            ("retire_memory = 1.5", "plugins.p.retire_memory"),
            ("retire_memory = 0.0", "plugins.p.retire_memory"),
        ] {
            let err =
                parse(&format!("{MINIMAL}\n[plugins.p]\npath = \"p.wasm\"\n{setting}\n")).expect_err(setting);
            assert!(err.to_string().contains(field), "{setting}: {err}");
        }
    }

    #[test]
    fn checked_strings_are_refused_when_read_naming_field_and_line() {
        let with =
            |extra: &str| parse(&MINIMAL.replace("weight = 3 }]", &format!("weight = 3 }}]\n{extra}")));
        let err = with("balance = \"consistent-hash\"\nhash_key = \"header:bad name\"").expect_err("bad key");
        assert_eq!(
            err.to_string(),
            "gw.toml:8: upstreams.origins.hash_key: \
             `header:bad name` is not client-addr, path, header:NAME or cookie:NAME"
        );
        let err = with("[upstreams.origins.health_check]\nexpected_status = [\"200-299\", \"700\"]")
            .expect_err("status");
        assert_eq!(
            err.to_string(),
            "gw.toml:8: upstreams.origins.health_check.expected_status: \
             `700` is not a status or a range like \"200-299\""
        );
        let err = parse(&format!("{MINIMAL}methods = [\"GET\", \"G T\"]\n")).expect_err("method");
        assert_eq!(err.to_string(), "gw.toml:10: routes[0].methods: `G T` is not a method");
        // A value of the wrong type names its field too.
        let err = parse(&format!("{MINIMAL}methods = \"GET\"\n")).expect_err("not a list");
        assert_eq!(
            err.to_string(),
            "gw.toml:10: routes[0].methods: invalid type: string \"GET\", expected a sequence"
        );
        let err = parse(&format!("{MINIMAL}colour = 1\n")).expect_err("unknown field");
        assert!(err.to_string().starts_with("gw.toml:10: routes[0].colour: unknown field `colour`"), "{err}");
    }

    #[test]
    fn checked_strings_are_used_typed_and_written_back_as_read() {
        let c = parse(&format!(
            "{}methods = [\"GET\", \"purge\"]\n",
            MINIMAL.replace(
                "weight = 3 }]",
                "weight = 3 }]\nhealth_check = { expected_status = [\" 200 - 204\", \"404\"] }\n\
                 balance = \"consistent-hash\"\nhash_key = \"header:X-User\"",
            )
        ))
        .expect("valid");
        let u = &c.upstreams["origins"];
        let check = u.health_check.as_ref().expect("health check");
        assert!(check.expects(204) && check.expects(404) && !check.expects(205));
        assert_eq!(
            u.hash_key.as_ref().map(HashKeySetting::key),
            Some(&HashKey::Header("x-user".parse().expect("name")))
        );
        assert_eq!(
            c.routes[0].methods,
            [http::Method::GET, http::Method::from_bytes(b"purge").expect("method")]
        );
        let json = serde_json::to_value(&c).expect("json");
        assert_eq!(
            json["upstreams"]["origins"]["health_check"]["expected_status"],
            serde_json::json!([" 200 - 204", "404"])
        );
        assert_eq!(json["upstreams"]["origins"]["hash_key"], "header:X-User");
        assert_eq!(json["routes"][0]["methods"], serde_json::json!(["GET", "purge"]));
        let defaults =
            parse(&MINIMAL.replace("weight = 3 }]", "weight = 3 }]\nhealth_check = {}")).expect("valid");
        let json = serde_json::to_value(&defaults).expect("json");
        assert_eq!(
            json["upstreams"]["origins"]["health_check"]["expected_status"],
            serde_json::json!(["200-399"])
        );
    }

    #[test]
    fn route_hosts_are_ascii_names_or_a_leading_wildcard_label() {
        // Found by the fuzzing below: a non-ASCII host used to panic the check.
        for bad in ["Ѩ", "*", "*.", "a.*.b", "*x.org", ""] {
            let err = parse(&format!("{MINIMAL}host = \"{bad}\"\n")).expect_err(bad);
            assert!(err.to_string().contains("routes[0].host"), "{bad}: {err}");
        }
        for good in ["a.example", "*.example.org"] {
            parse(&format!("{MINIMAL}host = \"{good}\"\n")).expect(good);
        }
    }

    /// Property-based fuzzing of parsing and validation: a valid config with values replaced
    /// by arbitrary ones, keys removed and unknown keys added. `PROPTEST_CASES=100000` runs it
    /// longer.
    mod fuzz {
        use proptest::prelude::*;
        use toml::{Table, Value};

        use super::*;

        const BASE: &str = r#"
[server]
workers = 1
max_request_head = "64KiB"
grace_period = "5s"
[runtime]
store_max_bytes = "64MiB"
[store]
backend = "memory"
[admin]
address = "127.0.0.1:9901"
[log]
format = "json"
access = true
[[listeners]]
address = "127.0.0.1:8080"
[upstreams.o]
backends = ["127.0.0.1:9001", { address = "127.0.0.1:9002", weight = 2 }]
balance = "consistent-hash"
hash_key = "header:x-user"
max_response_head = "16KiB"
[upstreams.o.health_check]
interval = "1s"
expected_status = ["200-299", "301"]
[upstreams.o.outlier_detection]
consecutive_failures = 3
[plugins.p]
path = "p.wasm"
deadline = "5ms"
store_max_bytes = "4MiB"
config = { a = 1 }
[[routes]]
host = "*.example.org"
path_prefix = "/api"
methods = ["GET", "POST"]
upstream = "o"
plugins = ["p"]
retries = 2
retry_on = ["connect-failure", "503"]
timeouts = { connect = "1s", total = "1m" }
"#;

        /// Values likely to find the edges: sizes, durations, names, numbers at the limits.
        fn value() -> impl Strategy<Value = Value> {
            let leaf = prop_oneof![
                any::<i64>().prop_map(Value::Integer),
                (-3i64..70000).prop_map(Value::Integer),
                any::<bool>().prop_map(Value::Boolean),
                any::<f64>().prop_map(Value::Float),
                prop::sample::select(vec![
                    "",
                    "x",
                    "0",
                    "-1",
                    "1s",
                    "0s",
                    "1ms",
                    "64KiB",
                    "0B",
                    "1EiB",
                    "99999999999999h",
                    "fail-open",
                    "per-request",
                    "127.0.0.1:0",
                    "[::1]:80",
                    "host:99999",
                    "redis://",
                    "http://",
                    "*.",
                    "/",
                    "o",
                    "p",
                    "GET",
                    "header:",
                    "cookie:x",
                    "200-100",
                    "redis",
                    "json",
                ])
                .prop_map(|s| Value::String(s.to_owned())),
                "\\PC{0,12}".prop_map(Value::String),
            ];
            leaf.prop_recursive(2, 8, 4, |inner| {
                prop_oneof![
                    prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                    prop::collection::btree_map("[a-z_]{1,8}", inner, 0..3)
                        .prop_map(|m| Value::Table(m.into_iter().collect())),
                ]
            })
        }

        /// Every path to a value in `table`, as keys and array indices.
        fn paths(value: &Value, here: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
            out.push(here.clone());
            let children: Vec<(String, &Value)> = match value {
                Value::Table(t) => t.iter().map(|(k, v)| (k.clone(), v)).collect(),
                Value::Array(a) => a.iter().enumerate().map(|(i, v)| (i.to_string(), v)).collect(),
                _ => return,
            };
            for (key, child) in children {
                here.push(key);
                paths(child, here, out);
                here.pop();
            }
        }

        fn at<'a>(value: &'a mut Value, path: &[String]) -> Option<&'a mut Value> {
            path.iter().try_fold(value, |v, key| match v {
                Value::Table(t) => t.get_mut(key),
                Value::Array(a) => key.parse::<usize>().ok().and_then(|i| a.get_mut(i)),
                _ => None,
            })
        }

        /// `op` 0 replaces the value at the path, 1 removes it, 2 adds an unknown key beside it.
        fn mutate(base: &Value, edits: &[(usize, u8, Value)]) -> Value {
            let mut config = base.clone();
            for (pick, op, new) in edits {
                let mut all = Vec::new();
                paths(&config, &mut Vec::new(), &mut all);
                let path = &all[pick % all.len()];
                let Some((last, parent)) = path.split_last() else { continue };
                let Some(parent) = at(&mut config, parent) else { continue };
                match (op % 3, parent) {
                    (0, Value::Table(t)) => {
                        t.insert(last.clone(), new.clone());
                    }
                    (0, Value::Array(a)) => {
                        if let Some(slot) = last.parse::<usize>().ok().and_then(|i| a.get_mut(i)) {
                            *slot = new.clone();
                        }
                    }
                    (1, Value::Table(t)) => {
                        t.remove(last);
                    }
                    (1, Value::Array(a)) => {
                        if let Ok(i) = last.parse::<usize>()
                            && i < a.len()
                        {
                            a.remove(i);
                        }
                    }
                    (_, Value::Table(t)) => {
                        t.insert("unknown_key".to_owned(), new.clone());
                    }
                    _ => {}
                }
            }
            config
        }

        proptest! {
            #[test]
            fn a_refused_config_names_the_file_and_the_field(
                edits in prop::collection::vec((any::<usize>(), any::<u8>(), value()), 1..4)
            ) {
                let base = Value::Table(BASE.parse::<Table>().expect("the base parses"));
                let Value::Table(config) = mutate(&base, &edits) else { unreachable!("a table stays one") };
                let Ok(text) = toml::to_string(&config) else { return Ok(()) };
                match Config::parse(Path::new("gw.toml"), &text) {
                    Ok(_) => {}
                    Err(ConfigError::Invalid { field, .. }) => prop_assert!(!field.is_empty()),
                    Err(error @ ConfigError::Parse { .. }) => {
                        let message = error.to_string();
                        prop_assert!(message.starts_with("gw.toml:"), "{message}");
                        prop_assert!(false, "no field named: {message}\n{text}");
                    }
                    Err(other) => prop_assert!(false, "unexpected {other}"),
                }
            }
        }

        #[test]
        fn the_base_config_is_valid() {
            Config::parse(Path::new("gw.toml"), BASE).expect("valid");
        }
    }
}

//! `wasmgate plugin test`: runs a plugin's phases against requests read from a file (JSON
//! lines), without a gateway or a network, and says what the plugin did to each: headers set
//! or removed, local answers, the upstream it chose, body edits, the store operations it made;
//! its log lines go to stderr as they are written, and the metrics it recorded are listed at
//! the end. A line may say what it expects (`expect`); a failed expectation or a plugin fault
//! makes the run fail, so authors can use it in their own CI.
//!
//! A line: `{"method": "GET", "path": "/a?b=1", "headers": {"x-api-key": "k"}, "body": "",
//! "client": "10.0.0.7:4000", "response": {"status": 200, "headers": {}, "body": "hello"},
//! "expect": {"status": 200, "request_headers": {"x-env": "staging", "cookie": null},
//! "response_headers": {}, "body": "hello", "upstream": "127.0.0.1:9001"}}`. Every field but
//! `path` may be left out; `response` is what the upstream pretends to answer, and the route's
//! group, `upstream`, has the backends `127.0.0.1:9001` and `127.0.0.1:9002`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode};
use serde::Deserialize;

use crate::head::joined;
use crate::plugin::{
    Action, BodyVerdict, Choice, Exchange, LocalReply, LogEntry, Logged, Phase, Plugin, PluginError,
    PluginSpec, Runtime, RuntimeConfig,
};
use crate::proxy::ProxyError;
use crate::upstream::{Backend, Group, Upstreams};

/// Why a run could not be made (as against a run whose expectations failed).
#[derive(Debug, thiserror::Error)]
pub enum RehearsalError {
    /// The requests file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// A line of the requests file is not a request.
    #[error("{}:{line}: {reason}", path.display())]
    BadLine {
        /// The file.
        path: PathBuf,
        /// Its 1-based line number.
        line: usize,
        /// What is wrong with it.
        reason: String,
    },
    /// The plugin did not load or refused its config.
    #[error(transparent)]
    Load(#[from] PluginError),
    /// The engine could not be built.
    #[error("cannot start the plugin runtime: {0}")]
    Runtime(String),
}

/// One request of the file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Case {
    #[serde(default = "get")]
    method: String,
    path: String,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default)]
    body: String,
    #[serde(default = "client")]
    client: SocketAddr,
    #[serde(default)]
    response: Pretend,
    #[serde(default)]
    expect: Expect,
}

/// What the upstream answers.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct Pretend {
    status: u16,
    headers: BTreeMap<String, String>,
    body: String,
}

impl Default for Pretend {
    fn default() -> Self {
        Pretend { status: 200, headers: BTreeMap::new(), body: String::new() }
    }
}

/// What the request should come to; `null` for a header means absent.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct Expect {
    status: Option<u16>,
    request_headers: BTreeMap<String, Option<String>>,
    response_headers: BTreeMap<String, Option<String>>,
    body: Option<String>,
    upstream: Option<String>,
}

fn get() -> String {
    "GET".to_owned()
}

fn client() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 40000))
}

/// What a run printed, and how many requests failed.
#[derive(Debug)]
pub struct Outcome {
    /// The report, one block per request.
    pub text: String,
    /// Requests with a failed expectation or a plugin fault.
    pub failed: usize,
    /// Requests run.
    pub run: usize,
}

/// Loads the component at `file` with `config_json` (one pooled instance, the defaults of a
/// config file otherwise) and runs each request of the file `requests` through it.
pub async fn run(file: &Path, config_json: &str, requests: &Path) -> Result<Outcome, RehearsalError> {
    let text = tokio::fs::read_to_string(requests)
        .await
        .map_err(|source| RehearsalError::Read { path: requests.to_owned(), source })?;
    run_lines(file, config_json, &text, requests).await
}

/// [`run`] on requests given as text, for a plugin's own Rust tests; `requests` names them in
/// errors.
///
/// ```no_run
/// # async fn t() {
/// use std::path::Path;
/// let requests = r#"{"path": "/", "expect": {"status": 200}}"#;
/// let wasm = Path::new("target/wasm32-wasip2/release/my_plugin.wasm");
/// let outcome = wasmgate::toolkit::rehearsal::run_lines(wasm, "{}", requests, Path::new("inline"))
///     .await
///     .expect("runs");
/// assert_eq!(outcome.failed, 0, "{}", outcome.text);
/// # }
/// ```
pub async fn run_lines(
    file: &Path,
    config_json: &str,
    text: &str,
    requests: &Path,
) -> Result<Outcome, RehearsalError> {
    let mut cases = Vec::new();
    for (i, line) in
        text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty() && !l.trim_start().starts_with("//"))
    {
        let case: Case = serde_json::from_str(line).map_err(|e| RehearsalError::BadLine {
            path: requests.to_owned(),
            line: i + 1,
            reason: e.to_string(),
        })?;
        cases.push((i + 1, case));
    }
    let runtime =
        Runtime::new(&RuntimeConfig::default()).map_err(|e| RehearsalError::Runtime(format!("{e:#}")))?;
    let mut spec = PluginSpec::new(crate::toolkit::name_of(file), file);
    spec.config_json = config_json.to_owned();
    spec.instances = 1;
    let plugin = runtime.load(&spec).await?;
    let label = format!("plugin=\"{}\"", spec.name);
    let backend = |port: u16| Backend::new(format!("127.0.0.1:{port}"), ([127, 0, 0, 1], port).into(), 1);
    let upstreams = Arc::new(Upstreams::new([Group::new("upstream", vec![backend(9001), backend(9002)])]));
    let mut outcome = Outcome { text: String::new(), failed: 0, run: 0 };
    for (line, case) in cases {
        let mut out = String::new();
        let _ = writeln!(out, "line {line}: {} {}", case.method, case.path);
        let before = runtime.store_calls();
        let ok = rehearse(&plugin, &upstreams, &case, &mut out)
            .await
            .map_err(|reason| RehearsalError::BadLine { path: requests.to_owned(), line, reason })?;
        let calls: Vec<String> = runtime
            .store_calls()
            .iter()
            .zip(before)
            .filter(|((_, now), (_, then))| now > then)
            .map(|((op, now), (_, then))| format!("{op} ×{}", now - then))
            .collect();
        if !calls.is_empty() {
            let _ = writeln!(out, "  store: {}", calls.join(", "));
        }
        outcome.run += 1;
        outcome.failed += usize::from(!ok);
        outcome.text.push_str(&out);
    }
    let metrics: Vec<String> = runtime
        .metrics()
        .render_plugins()
        .lines()
        .filter(|l| !l.starts_with('#') && !l.contains("_bucket{") && l.contains(&label))
        .map(str::to_owned)
        .collect();
    if !metrics.is_empty() {
        let _ = writeln!(outcome.text, "metrics recorded:\n  {}", metrics.join("\n  "));
    }
    let _ = writeln!(outcome.text, "{} requests, {} failed", outcome.run, outcome.failed);
    Ok(outcome)
}

/// The final answer to the client as the run saw it.
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl From<LocalReply> for Answer {
    fn from(reply: LocalReply) -> Self {
        Answer { status: reply.status, headers: reply.headers, body: reply.body }
    }
}

/// Runs `case` through the plugin's phases, writing what happened to `out`; false if an
/// expectation failed or the plugin faulted. `Err` for a request that cannot be built.
async fn rehearse(
    plugin: &Plugin,
    upstreams: &Arc<Upstreams>,
    case: &Case,
    out: &mut String,
) -> Result<bool, String> {
    let mut request = http::Request::builder().method(case.method.as_str()).uri(case.path.as_str());
    for (name, value) in &case.headers {
        request = request.header(name.as_str(), value.as_str());
    }
    let (parts, ()) = request.body(()).map_err(|e| format!("not a valid request: {e}"))?.into_parts();
    let group = upstreams.get("upstream").cloned().unwrap_or_else(Group::empty);
    let mut ex =
        Box::new(Exchange::new(parts, case.client, false, Arc::from("test"), group, upstreams.clone()));
    let mut ok = true;
    let mut fault = |phase: Phase, error: PluginError, out: &mut String| {
        let _ = writeln!(out, "  {}: FAULT {}: {error}", phase.as_str(), error.kind());
        ok = false;
        // What the gateway answers a fail-closed plugin's fault with.
        Answer { status: ProxyError::Plugin(error).status(), headers: HeaderMap::new(), body: Bytes::new() }
    };
    let mut answered: Option<Answer> = None;
    let mut upstream = "default".to_owned();

    if plugin.has(Phase::RequestHeaders) {
        let before = ex.request.headers.clone();
        match plugin.on_request_headers(&mut ex).await {
            Ok(action) => answered = local(Phase::RequestHeaders, action, out),
            Err(error) => answered = Some(fault(Phase::RequestHeaders, error, out)),
        }
        edits(Phase::RequestHeaders, &before, &ex.request.headers, out);
    }
    if answered.is_none() && plugin.has(Phase::RequestBody) {
        match plugin.on_request_body(&mut ex, case.body.as_bytes(), true, true).await {
            Ok(verdict) => {
                body(Phase::RequestBody, case.body.len(), &verdict, out);
                if let BodyVerdict::Respond(reply) = verdict {
                    answered = Some(reply.into());
                }
            }
            Err(error) => answered = Some(fault(Phase::RequestBody, error, out)),
        }
    }
    if answered.is_none() && plugin.has(Phase::SelectUpstream) {
        match plugin.select_upstream(&mut ex).await {
            Ok(Choice::Respond(reply)) => answered = Some(local_answer(Phase::SelectUpstream, reply, out)),
            Ok(choice) => {
                upstream = match choice {
                    Choice::Backend(group, i) => {
                        group.backends().get(i).map_or_else(String::new, |b| b.address().to_string())
                    }
                    Choice::Group(group) => format!("group {}", group.name()),
                    Choice::HashKey(key) => format!("hash-key {key}"),
                    _ => "default".to_owned(),
                };
                let _ = writeln!(out, "  {}: {upstream}", Phase::SelectUpstream.as_str());
            }
            Err(error) => answered = Some(fault(Phase::SelectUpstream, error, out)),
        }
    }
    if answered.is_none() && plugin.has(Phase::UpstreamRequest) {
        let before = ex.request.headers.clone();
        match plugin.on_upstream_request(&mut ex).await {
            Ok(action) => answered = local(Phase::UpstreamRequest, action, out),
            Err(error) => answered = Some(fault(Phase::UpstreamRequest, error, out)),
        }
        edits(Phase::UpstreamRequest, &before, &ex.request.headers, out);
    }
    if answered.is_none() {
        let mut response = http::Response::builder().status(case.response.status);
        for (name, value) in &case.response.headers {
            response = response.header(name.as_str(), value.as_str());
        }
        let (parts, ()) = response.body(()).map_err(|e| format!("not a valid response: {e}"))?.into_parts();
        ex.response = Some(parts);
        if plugin.has(Phase::ResponseHeaders) {
            let before = ex.response.as_ref().map(|r| r.headers.clone()).unwrap_or_default();
            match plugin.on_response_headers(&mut ex).await {
                Ok(action) => answered = local(Phase::ResponseHeaders, action, out),
                Err(error) => answered = Some(fault(Phase::ResponseHeaders, error, out)),
            }
            if let Some(after) = &ex.response {
                edits(Phase::ResponseHeaders, &before, &after.headers, out);
            }
        }
    }
    let answer = match answered {
        Some(answer) => answer,
        None => {
            let mut sent = Bytes::from(case.response.body.clone());
            if plugin.has(Phase::ResponseBody) {
                match plugin.on_response_body(&mut ex, case.response.body.as_bytes(), true).await {
                    Ok(verdict) => {
                        body(Phase::ResponseBody, sent.len(), &verdict, out);
                        if let BodyVerdict::Replace(with) = verdict {
                            sent = with;
                        }
                    }
                    Err(error) => {
                        fault(Phase::ResponseBody, error, out);
                    }
                }
            }
            let response = ex.response.take().unwrap_or_else(|| http::Response::new(()).into_parts().0);
            Answer { status: response.status, headers: response.headers, body: sent }
        }
    };
    if plugin.has(Phase::Log) {
        let entry = LogEntry {
            status: answer.status.as_u16(),
            duration_us: 0,
            upstream_us: None,
            bytes_in: case.body.len() as u64,
            bytes_out: answer.body.len() as u64,
            backend: None,
            error: None,
        };
        if let Err(error) = plugin.on_log(&mut ex, &Logged::from(entry)).await {
            fault(Phase::Log, error, out);
        }
    }
    let _ = writeln!(out, "  answer: {} with {} bytes", answer.status.as_u16(), answer.body.len());
    Ok(expectations(case, &ex.request.headers, &answer, &upstream, out) && ok)
}

/// What a header phase's action was, and the answer if it answered.
fn local(phase: Phase, action: Action, out: &mut String) -> Option<Answer> {
    match action {
        Action::Continue => None,
        Action::Respond(reply) => Some(local_answer(phase, reply, out)),
    }
}

/// A phase answered the request itself.
fn local_answer(phase: Phase, reply: LocalReply, out: &mut String) -> Answer {
    let _ = writeln!(out, "  {}: answered {}", phase.as_str(), reply.status.as_u16());
    reply.into()
}

/// What a body phase did with the `len` bytes it was handed.
fn body(phase: Phase, len: usize, verdict: &BodyVerdict, out: &mut String) {
    match verdict {
        BodyVerdict::Continue => {}
        BodyVerdict::Replace(with) => {
            let _ = writeln!(out, "  {}: replaced {len} bytes with {}", phase.as_str(), with.len());
        }
        BodyVerdict::Respond(reply) => {
            let _ = writeln!(out, "  {}: answered {}", phase.as_str(), reply.status.as_u16());
        }
    }
}

/// The headers a phase set or removed.
fn edits(phase: Phase, before: &HeaderMap, after: &HeaderMap, out: &mut String) {
    for name in after.keys() {
        let now = joined(after, name);
        if joined(before, name) != now {
            let _ = writeln!(out, "  {}: set {name}: {now}", phase.as_str());
        }
    }
    for name in before.keys().filter(|name| !after.contains_key(*name)) {
        let _ = writeln!(out, "  {}: removed {name}", phase.as_str());
    }
}

/// Checks `case`'s expectations, writing each failed one; true if all held.
fn expectations(case: &Case, request: &HeaderMap, answer: &Answer, upstream: &str, out: &mut String) -> bool {
    let mut held = true;
    let mut check = |what: String, expected: String, got: String| {
        if expected != got {
            let _ = writeln!(out, "  FAILED {what}: expected {expected}, got {got}");
            held = false;
        }
    };
    let shown = |v: Option<&HeaderValue>| {
        v.map_or_else(|| "absent".to_owned(), |v| format!("{:?}", String::from_utf8_lossy(v.as_bytes())))
    };
    let e = &case.expect;
    if let Some(status) = e.status {
        check("status".into(), status.to_string(), answer.status.as_u16().to_string());
    }
    for (side, wanted, headers) in [
        ("request header", &e.request_headers, request),
        ("response header", &e.response_headers, &answer.headers),
    ] {
        for (name, value) in wanted {
            let expected = value.as_ref().map_or_else(|| "absent".to_owned(), |v| format!("{v:?}"));
            check(format!("{side} {name}"), expected, shown(headers.get(name.as_str())));
        }
    }
    if let Some(body) = &e.body {
        check("body".into(), format!("{body:?}"), format!("{:?}", String::from_utf8_lossy(&answer.body)));
    }
    if let Some(expected) = &e.upstream {
        check("upstream".into(), expected.clone(), upstream.to_owned());
    }
    held
}

//! Requests from a plugin to a configured upstream group: an authorisation service, a token
//! endpoint. They go through the group's balancer, connection pool and TLS settings.
//!
//! A call suspends the plugin until the whole answer is read (bodies up to 1 MiB); the
//! gateway's threads serve other requests meanwhile, and the wait does not count against the
//! plugin's deadline. Calls are not allowed in `new` and `on_log`.
//!
//! ```no_run
//! use wasmgate_sdk::outbound::{self, OutboundRequest};
//!
//! let answer = outbound::call("authz", OutboundRequest::get("/check").header("x-user", "7"));
//! let allowed = matches!(answer, Ok(ref r) if r.status == 200);
//! # let _ = allowed;
//! ```

use crate::__private::bindings::wasmgate::plugin::outbound as host;
use crate::__private::wit;

/// A request to send to an upstream group.
///
/// ```
/// use wasmgate_sdk::outbound::OutboundRequest;
///
/// let req = OutboundRequest::post("/verify", "token=abc")
///     .header("content-type", "application/x-www-form-urlencoded")
///     .timeout_ms(200);
/// assert_eq!(req.method, "POST");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboundRequest {
    /// e.g. `GET`.
    pub method: String,
    /// The path and query, e.g. `/check?user=7`.
    pub path: String,
    /// Header fields, in order.
    pub headers: Vec<(String, Vec<u8>)>,
    /// The body.
    pub body: Vec<u8>,
    /// Milliseconds the call may take; 0 means the host's default (1000).
    pub timeout_ms: u32,
}

impl OutboundRequest {
    /// A `GET` of `path`.
    ///
    /// ```
    /// let req = wasmgate_sdk::outbound::OutboundRequest::get("/health");
    /// assert!(req.body.is_empty());
    /// ```
    pub fn get(path: impl Into<String>) -> Self {
        OutboundRequest {
            method: "GET".to_owned(),
            path: path.into(),
            headers: Vec::new(),
            body: Vec::new(),
            timeout_ms: 0,
        }
    }

    /// A `POST` of `body` to `path`.
    ///
    /// ```
    /// let req = wasmgate_sdk::outbound::OutboundRequest::post("/log", "hi");
    /// assert_eq!(req.body, b"hi");
    /// ```
    pub fn post(path: impl Into<String>, body: impl Into<Vec<u8>>) -> Self {
        OutboundRequest { method: "POST".to_owned(), body: body.into(), ..OutboundRequest::get(path) }
    }

    /// Adds a header field.
    ///
    /// ```
    /// let req = wasmgate_sdk::outbound::OutboundRequest::get("/").header("accept", "application/json");
    /// assert_eq!(req.headers.len(), 1);
    /// ```
    pub fn header(mut self, name: impl Into<String>, value: impl AsRef<[u8]>) -> Self {
        self.headers.push((name.into(), value.as_ref().to_vec()));
        self
    }

    /// Sets the timeout, in milliseconds.
    ///
    /// ```
    /// let req = wasmgate_sdk::outbound::OutboundRequest::get("/").timeout_ms(50);
    /// assert_eq!(req.timeout_ms, 50);
    /// ```
    pub fn timeout_ms(mut self, ms: u32) -> Self {
        self.timeout_ms = ms;
        self
    }
}

/// The answer to an outbound request, read whole.
///
/// ```
/// use wasmgate_sdk::outbound::OutboundResponse;
///
/// let headers = vec![("x-user".into(), b"7".to_vec())];
/// let resp = OutboundResponse { status: 200, headers, body: vec![] };
/// assert_eq!(resp.header("X-User"), Some("7"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboundResponse {
    /// The status code.
    pub status: u16,
    /// Header fields, names lowercased.
    pub headers: Vec<(String, Vec<u8>)>,
    /// The body.
    pub body: Vec<u8>,
}

impl OutboundResponse {
    /// The first value of header `name` (any case), if present and UTF-8.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .and_then(|(_, v)| std::str::from_utf8(v).ok())
    }
}

/// Why an outbound call failed.
///
/// ```
/// use wasmgate_sdk::outbound::OutboundError;
///
/// assert_eq!(OutboundError::Timeout.to_string(), "outbound call timed out");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutboundError {
    /// No upstream group of that name is configured.
    UnknownGroup,
    /// The request is malformed; the message says what.
    InvalidRequest(String),
    /// The call took longer than its timeout.
    Timeout,
    /// The response body is larger than the host reads.
    TooLarge,
    /// The call could not be made or broke.
    Failed(String),
    /// Outbound calls are not allowed in this phase.
    NotAllowed,
}

impl std::fmt::Display for OutboundError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OutboundError::UnknownGroup => f.write_str("no such upstream group"),
            OutboundError::InvalidRequest(why) => write!(f, "invalid outbound request: {why}"),
            OutboundError::Timeout => f.write_str("outbound call timed out"),
            OutboundError::TooLarge => f.write_str("outbound response too large"),
            OutboundError::Failed(why) => write!(f, "outbound call failed: {why}"),
            OutboundError::NotAllowed => f.write_str("outbound calls are not allowed in this phase"),
        }
    }
}

impl std::error::Error for OutboundError {}

/// Sends `request` to a backend of upstream group `group` and reads the whole response.
///
/// ```no_run
/// use wasmgate_sdk::outbound::{call, OutboundRequest};
///
/// match call("tokens", OutboundRequest::get("/jwks.json").timeout_ms(300)) {
///     Ok(resp) if resp.status == 200 => { /* use resp.body */ }
///     Ok(resp) => wasmgate_sdk::log::warn(&format!("jwks: status {}", resp.status)),
///     Err(e) => wasmgate_sdk::log::warn(&e.to_string()),
/// }
/// ```
pub fn call(group: &str, request: OutboundRequest) -> Result<OutboundResponse, OutboundError> {
    let request = wit::OutboundRequest {
        method: request.method,
        path: request.path,
        headers: request.headers.into_iter().map(|(name, value)| wit::Header { name, value }).collect(),
        body: request.body,
        timeout_ms: request.timeout_ms,
    };
    match host::call(group, &request) {
        Ok(r) => Ok(OutboundResponse {
            status: r.status,
            headers: r.headers.into_iter().map(|h| (h.name, h.value)).collect(),
            body: r.body,
        }),
        Err(e) => Err(match e {
            wit::OutboundError::UnknownGroup => OutboundError::UnknownGroup,
            wit::OutboundError::InvalidRequest(why) => OutboundError::InvalidRequest(why),
            wit::OutboundError::Timeout => OutboundError::Timeout,
            wit::OutboundError::TooLarge => OutboundError::TooLarge,
            wit::OutboundError::Failed(why) => OutboundError::Failed(why),
            wit::OutboundError::NotAllowed => OutboundError::NotAllowed,
        }),
    }
}

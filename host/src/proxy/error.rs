//! Everything that can fail a request, and the one place where a failure becomes the response
//! the client sees: a status, a short plain-text body, and an `x-wasmgate-error` header naming
//! the kind of failure.

use http::{HeaderValue, Response, StatusCode};

use crate::plugin::PluginError;
use crate::upstream::UpstreamError;

/// Why a request was not served by its upstream.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The request itself is malformed (missing or conflicting Host, a bad target…).
    #[error("bad request: {0}")]
    BadRequest(&'static str),
    /// The method is not one a reverse proxy forwards (CONNECT, TRACE).
    #[error("method {0} is not allowed")]
    MethodNotAllowed(http::Method),
    /// No route matches the request.
    #[error("no route matches {method} {host}{path}")]
    NoRoute {
        /// As the client sent it.
        method: http::Method,
        /// The host asked for.
        host: String,
        /// The path in its canonical form, as routes see it.
        path: String,
    },
    /// A fail-closed plugin failed.
    #[error(transparent)]
    Plugin(#[from] PluginError),
    /// Every backend of the group is held out by health checks.
    #[error("no healthy backend in group `{group}`")]
    NoHealthyBackend {
        /// The route's group, or the one a plugin chose.
        group: String,
    },
    /// The upstream failed; [`UpstreamError::class`] says how the client is answered.
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    /// The request target is longer than `[server] max_request_target`.
    #[error("the request target is over the limit of {limit} bytes")]
    TargetTooLong {
        /// `max_request_target`.
        limit: usize,
    },
    /// A field line is longer than `[server] max_field_line`.
    #[error("a header field is over the limit of {limit} bytes")]
    FieldTooLarge {
        /// `max_field_line`.
        limit: usize,
    },
    /// The request head is larger than `[server] max_request_head`.
    #[error("the request head is over the limit of {limit} bytes")]
    HeadTooLarge {
        /// `max_request_head`.
        limit: usize,
    },
    /// The request body is larger than the route buffers.
    #[error("the request body is over the route's limit of {limit} bytes")]
    BodyTooLarge {
        /// `request_buffer`.
        limit: usize,
    },
    /// The route's total timeout passed before the response headers.
    #[error("no response within the route's total timeout of {}ms", after.as_millis())]
    TotalTimeout {
        /// The route's `timeouts.total`.
        after: std::time::Duration,
    },
    /// The client's request body sent nothing for the route's body idle timeout.
    #[error("the request body stalled")]
    BodyTimeout,
    /// A bug in the gateway: an invariant did not hold.
    #[error("internal error: {0}")]
    Internal(&'static str),
}

impl From<crate::head::BadPath> for ProxyError {
    fn from(error: crate::head::BadPath) -> Self {
        ProxyError::BadRequest(error.0)
    }
}

impl ProxyError {
    /// The status the client gets.
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ProxyError::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ProxyError::TargetTooLong { .. } => StatusCode::URI_TOO_LONG,
            ProxyError::FieldTooLarge { .. } | ProxyError::HeadTooLarge { .. } => {
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
            }
            ProxyError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ProxyError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ProxyError::TotalTimeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            ProxyError::NoRoute { .. } => StatusCode::NOT_FOUND,
            ProxyError::Plugin(e) if e.is_overload() => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::Plugin(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ProxyError::NoHealthyBackend { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::Upstream(error) => error.class().status,
        }
    }

    /// A short stable name for the failure.
    pub fn kind(&self) -> &'static str {
        match self {
            ProxyError::BadRequest(_) => "bad-request",
            ProxyError::BodyTooLarge { .. } => "body-too-large",
            ProxyError::TargetTooLong { .. } => "target-too-long",
            ProxyError::FieldTooLarge { .. } => "field-too-large",
            ProxyError::HeadTooLarge { .. } => "head-too-large",
            ProxyError::MethodNotAllowed(_) => "method-not-allowed",
            ProxyError::Internal(_) => "internal",
            ProxyError::TotalTimeout { .. } => "total-timeout",
            ProxyError::BodyTimeout => "body-timeout",
            ProxyError::NoRoute { .. } => "no-route",
            ProxyError::Plugin(e) => e.kind(),
            ProxyError::NoHealthyBackend { .. } => "no-healthy-backend",
            ProxyError::Upstream(error) => error.class().name,
        }
    }

    /// The response for this failure. Details of plugins and backends stay in the log; the
    /// client learns the status and the kind of failure only.
    pub fn to_response<B: From<bytes::Bytes>>(&self) -> Response<B> {
        let status = self.status();
        let body = match self {
            ProxyError::BadRequest(reason) => format!("bad request: {reason}\n"),
            _ => format!("{}\n", status.canonical_reason().unwrap_or("error")),
        };
        let mut response = Response::new(B::from(bytes::Bytes::from(body)));
        *response.status_mut() = status;
        let headers = response.headers_mut();
        headers.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
        headers.insert(crate::head::ERROR_HEADER, HeaderValue::from_static(self.kind()));
        // The request's framing can no longer be trusted, or its body was left unread.
        if status == StatusCode::BAD_REQUEST || status == StatusCode::REQUEST_TIMEOUT {
            headers.insert(http::header::CONNECTION, HeaderValue::from_static("close"));
        }
        response
    }
}

//! How an upstream attempt fails, and what each failure is. [`UpstreamError::class`] is the one
//! table that gives a failure its kind (as error-phase plugins see it), the status and
//! `x-wasmgate-error` name the client gets, and whether the request may be sent again: the
//! proxy's retry decision, its error response and the plugin host all read it.

use std::time::Duration;

use http::StatusCode;

use crate::config::RetryOn;

/// Why an upstream attempt failed.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// The connection was refused or could not be opened.
    #[error("cannot connect to {backend}: {reason}")]
    Connect {
        /// The backend's `host:port`.
        backend: String,
        /// What failed, with its causes.
        reason: String,
    },
    /// The connection was not open within the connect timeout.
    #[error("connecting to {backend} took longer than {}ms", after.as_millis())]
    ConnectTimeout {
        /// The backend's `host:port`.
        backend: String,
        /// The limit that passed.
        after: Duration,
    },
    /// The TLS handshake did not finish within its timeout.
    #[error("the TLS handshake with {backend} took longer than {}ms", after.as_millis())]
    HandshakeTimeout {
        /// The backend's `host:port`.
        backend: String,
        /// The limit that passed.
        after: Duration,
    },
    /// An HTTP/2 backend refused the stream: it did not process the request.
    #[error("{backend} refused the stream")]
    RefusedStream {
        /// The backend's `host:port`.
        backend: String,
    },
    /// No response headers within the response timeout.
    #[error("{backend} sent no response headers within {}ms", after.as_millis())]
    ResponseTimeout {
        /// The backend's `host:port`.
        backend: String,
        /// The limit that passed.
        after: Duration,
    },
    /// The exchange broke (reset, malformed response, body error).
    #[error("exchange with {backend} failed: {reason}")]
    Exchange {
        /// The backend's `host:port`.
        backend: String,
        /// What failed, with its causes.
        reason: String,
    },
    /// The client's request body broke (malformed framing) or stalled on its way to the
    /// backend: the client's fault, not the backend's, so it counts against neither the
    /// backend nor a retry.
    #[error("the request body failed on its way to {backend}: {reason}")]
    ClientBody {
        /// The backend's `host:port`.
        backend: String,
        /// What failed.
        reason: String,
        /// It stalled (no data for the body idle timeout) rather than broke.
        stalled: bool,
    },
    /// The response broke HTTP's framing or syntax rules (a bad status line, a field with
    /// control characters or obs-fold, two differing lengths, or a length framed two ways);
    /// the connection is not reused.
    #[error("{backend} sent an invalid response: {reason}")]
    InvalidResponse {
        /// The backend's `host:port`.
        backend: String,
        /// What was wrong.
        reason: String,
    },
    /// The response head was larger than `max_response_head` or had more fields than
    /// `max_response_fields`.
    #[error("{backend} sent a response head over the group's limits: {reason}")]
    HeadTooLarge {
        /// The backend's `host:port`.
        backend: String,
        /// What the parser said.
        reason: String,
    },
    /// The backend's circuit breaker turned the request away before it was sent.
    #[error("backend {backend} is at its `{limit}` limit")]
    Overloaded {
        /// The backend's `host:port`.
        backend: String,
        /// The setting whose limit was hit (`max_requests`, `max_pending`, `max_connections`).
        limit: &'static str,
    },
    /// The backend answered with a status the route retries on.
    #[error("{backend} answered {status}")]
    Status {
        /// The backend's `host:port`.
        backend: String,
        /// The backend's answer, passed on when no retry happens.
        status: StatusCode,
    },
}

/// The kind of an upstream failure, as error-phase plugins are told it (the WIT's
/// `failure-kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// The connection could not be opened (refused, unreachable, TLS failure).
    ConnectRefused,
    /// The connection or TLS handshake did not finish in time.
    ConnectTimeout,
    /// No response headers within the response timeout.
    ResponseTimeout,
    /// The exchange broke before any response byte, or an HTTP/2 stream was refused.
    Reset,
    /// The backend's circuit breaker turned the request away.
    Overloaded,
    /// The backend answered a status the route retries on.
    Status,
}

/// What an upstream failure is; see [`UpstreamError::class`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Class {
    /// What error-phase plugins are told.
    pub kind: FailureKind,
    /// The `x-wasmgate-error` header value, stable across releases.
    pub name: &'static str,
    /// What the client gets when nothing more is tried (a status failure passes the backend's
    /// own response on instead).
    pub status: StatusCode,
    /// The `retry_on` condition under which the host tries another backend by itself; with
    /// `None`, only an error-phase plugin can ask for a retry.
    pub retry_on: Option<RetryOn>,
    /// The backend may have processed the request, so only an idempotent one may be sent
    /// again, whoever asks.
    pub maybe_processed: bool,
}

impl Class {
    /// Whether the request may be sent again after this failure, whoever asks.
    pub fn may_resend(&self, idempotent: bool) -> bool {
        idempotent || !self.maybe_processed
    }
}

impl UpstreamError {
    /// The backend's `host:port`.
    pub fn backend(&self) -> &str {
        match self {
            Self::Connect { backend, .. }
            | Self::ConnectTimeout { backend, .. }
            | Self::HandshakeTimeout { backend, .. }
            | Self::RefusedStream { backend }
            | Self::ResponseTimeout { backend, .. }
            | Self::Exchange { backend, .. }
            | Self::ClientBody { backend, .. }
            | Self::InvalidResponse { backend, .. }
            | Self::HeadTooLarge { backend, .. }
            | Self::Overloaded { backend, .. }
            | Self::Status { backend, .. } => backend,
        }
    }

    /// The one table of what each failure is.
    pub fn class(&self) -> Class {
        use FailureKind as K;
        use StatusCode as S;
        let (kind, name, status, retry_on, maybe_processed) = match self {
            Self::Connect { .. } => {
                (K::ConnectRefused, "upstream-connect", S::BAD_GATEWAY, Some(RetryOn::ConnectFailure), false)
            }
            Self::ConnectTimeout { .. } => (
                K::ConnectTimeout,
                "upstream-connect-timeout",
                S::GATEWAY_TIMEOUT,
                Some(RetryOn::ConnectFailure),
                false,
            ),
            Self::HandshakeTimeout { .. } => (
                K::ConnectTimeout,
                "upstream-tls-timeout",
                S::GATEWAY_TIMEOUT,
                Some(RetryOn::ConnectFailure),
                false,
            ),
            Self::RefusedStream { .. } => (
                K::Reset,
                "upstream-refused-stream",
                S::SERVICE_UNAVAILABLE,
                Some(RetryOn::RefusedStream),
                false,
            ),
            Self::ResponseTimeout { .. } => {
                (K::ResponseTimeout, "upstream-timeout", S::GATEWAY_TIMEOUT, None, true)
            }
            Self::Exchange { .. } => {
                (K::Reset, "upstream-exchange", S::BAD_GATEWAY, Some(RetryOn::Reset), true)
            }
            Self::ClientBody { stalled: true, .. } => {
                (K::Reset, "body-timeout", S::REQUEST_TIMEOUT, None, true)
            }
            Self::ClientBody { stalled: false, .. } => (K::Reset, "bad-request", S::BAD_REQUEST, None, true),
            // The backend answered, badly: it may have processed the request.
            Self::InvalidResponse { .. } => {
                (K::Reset, "upstream-invalid-response", S::BAD_GATEWAY, None, true)
            }
            Self::HeadTooLarge { .. } => (K::Reset, "upstream-head-too-large", S::BAD_GATEWAY, None, true),
            Self::Overloaded { .. } => {
                (K::Overloaded, "upstream-overloaded", S::SERVICE_UNAVAILABLE, None, false)
            }
            Self::Status { status, .. } => {
                (K::Status, "upstream-status", *status, retry_on_status(*status), true)
            }
        };
        Class { kind, name, status, retry_on, maybe_processed }
    }
}

/// The `retry_on` condition that names `status`, if one does.
pub fn retry_on_status(status: StatusCode) -> Option<RetryOn> {
    match status.as_u16() {
        502 => Some(RetryOn::Status502),
        503 => Some(RetryOn::Status503),
        504 => Some(RetryOn::Status504),
        _ => None,
    }
}

//! Requests the gateway itself makes to an upstream group on a plugin's behalf (the
//! `outbound` host API): balanced, pooled and TLS-configured like proxied requests, read whole
//! within a timeout and a size bound.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::uri::PathAndQuery;

use super::{Group, UpstreamBody, UpstreamClient};
use crate::timed::{ReadError, read_whole};

/// The largest response body an outbound call reads.
pub const MAX_CALL_BODY: usize = 1 << 20;

/// A request to send.
#[derive(Debug)]
pub struct Call {
    /// The method the plugin chose.
    pub method: http::Method,
    /// The target on the backend; the scheme and authority are the backend's.
    pub path: PathAndQuery,
    /// Header fields (already checked).
    pub headers: http::HeaderMap,
    /// Sent whole, with its length.
    pub body: Bytes,
}

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The timeout passed.
    #[error("timed out")]
    Timeout,
    /// The response body is over [`MAX_CALL_BODY`].
    #[error("response body over {MAX_CALL_BODY} bytes")]
    TooLarge,
    /// No backend, a connect error, a broken exchange.
    #[error("{0}")]
    Failed(String),
}

/// Sends `call` to a backend of `group` and reads the whole response, all within `timeout`.
pub async fn call(
    group: &Arc<Group>,
    client: &UpstreamClient,
    call: Call,
    timeout: Duration,
) -> Result<(http::response::Parts, Bytes), CallError> {
    let exchange = async {
        let index = group.pick(None).ok_or_else(|| CallError::Failed("no healthy backend".to_owned()))?;
        let _in_flight = group
            .admit(index, timeout)
            .await
            .map_err(|limit| CallError::Failed(format!("backend at its `{}` limit", limit.limit())))?;
        let backend = &group.backends()[index];
        let body = UpstreamBody::Full(http_body_util::Full::new(call.body));
        let mut request = client
            .request(backend, call.method, call.path, call.headers, body)
            .map_err(|e| CallError::Failed(e.to_string()))?;
        request.headers_mut().entry(http::header::HOST).or_insert_with(|| {
            http::HeaderValue::from_str(backend.address())
                .unwrap_or(http::HeaderValue::from_static("localhost"))
        });
        let limits = client.connect_limits(None, None);
        let response = client
            .send(backend, request, limits, Some(timeout))
            .await
            .map_err(|e| CallError::Failed(e.to_string()))?;
        group.record(index, response.status().is_server_error());
        let (parts, body) = response.into_parts();
        let body = read_whole(body, MAX_CALL_BODY).await.map_err(|e| match e {
            ReadError::TooLarge(_) => CallError::TooLarge,
            ReadError::Broken(e) => CallError::Failed(e.to_string()),
        })?;
        Ok((parts, body))
    };
    tokio::time::timeout(timeout, exchange).await.unwrap_or(Err(CallError::Timeout))
}

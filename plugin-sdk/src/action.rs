//! What a phase returns: carry on, answer locally ([`LocalResponse`]), pick an upstream, or
//! handle an upstream failure.

/// A response the plugin writes itself instead of going (on) upstream.
///
/// Built with [`new`](LocalResponse::new) and the chained [`header`](LocalResponse::header) and
/// [`body`](LocalResponse::body). The host validates it like client input: a status outside
/// 200..=599 or a bad header is refused, never sent.
///
/// ```
/// use wasmgate_sdk::LocalResponse;
///
/// let resp = LocalResponse::new(404)
///     .header("content-type", "text/plain")
///     .body("no such page\n");
/// assert_eq!(resp.status, 404);
/// assert_eq!(resp.headers, vec![("content-type".to_owned(), b"text/plain".to_vec())]);
/// assert_eq!(resp.body, b"no such page\n");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalResponse {
    /// The status code, 200 to 599.
    pub status: u16,
    /// The header fields, in order; a name may repeat.
    pub headers: Vec<(String, Vec<u8>)>,
    /// The body; `content-length` is the host's business.
    pub body: Vec<u8>,
}

impl LocalResponse {
    /// A response with `status`, no headers and an empty body.
    ///
    /// ```
    /// let resp = wasmgate_sdk::LocalResponse::new(204);
    /// assert!(resp.headers.is_empty() && resp.body.is_empty());
    /// ```
    pub fn new(status: u16) -> Self {
        Self { status, headers: Vec::new(), body: Vec::new() }
    }

    /// Adds a header field, keeping those already added (even with the same name).
    ///
    /// ```
    /// let resp = wasmgate_sdk::LocalResponse::new(200)
    ///     .header("set-cookie", "a=1")
    ///     .header("set-cookie", b"b=2");
    /// assert_eq!(resp.headers.len(), 2);
    /// ```
    #[must_use]
    pub fn header(mut self, name: impl Into<String>, value: impl AsRef<[u8]>) -> Self {
        self.headers.push((name.into(), value.as_ref().to_vec()));
        self
    }

    /// Replaces the body.
    ///
    /// ```
    /// let resp = wasmgate_sdk::LocalResponse::new(200).body(vec![0u8, 1, 2]);
    /// assert_eq!(resp.body, [0, 1, 2]);
    /// ```
    #[must_use]
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }
}

/// What the request does after a header phase.
///
/// ```
/// use wasmgate_sdk::{Action, LocalResponse};
///
/// fn gate(allowed: bool) -> Action {
///     if allowed {
///         Action::Continue
///     } else {
///         Action::Respond(LocalResponse::new(403).body("forbidden\n"))
///     }
/// }
/// assert_eq!(gate(true), Action::Continue);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Carry on with the next plugin or phase.
    Continue,
    /// Answer the client with this response; later request phases are skipped.
    Respond(LocalResponse),
}

/// Where a request goes, returned by [`Plugin::select_upstream`](crate::Plugin::select_upstream).
///
/// ```
/// use wasmgate_sdk::UpstreamChoice;
///
/// // Keep a user's requests on one backend of the route's group.
/// let choice = UpstreamChoice::HashKey("user-42".to_owned());
/// assert_ne!(choice, UpstreamChoice::Default);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpstreamChoice {
    /// No opinion: the route's group and its balancer decide.
    Default,
    /// The backend at this index in the route group's list
    /// ([`Upstream::backends`](crate::Upstream::backends)).
    Backend(u32),
    /// Another configured group, balanced by its own balancer.
    Group(String),
    /// A backend of another configured group, by index in its list
    /// ([`Upstream::backends_of`](crate::Upstream::backends_of)).
    GroupBackend(String, u32),
    /// Balance the route's group by consistent hashing of this key.
    HashKey(String),
    /// Do not go upstream: answer with this response.
    Respond(LocalResponse),
}

/// What a body phase does with a chunk.
///
/// ```
/// use wasmgate_sdk::BodyAction;
///
/// fn upper(chunk: Vec<u8>) -> BodyAction {
///     BodyAction::Replace(chunk.to_ascii_uppercase())
/// }
/// assert_eq!(upper(b"hi".to_vec()), BodyAction::Replace(b"HI".to_vec()));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyAction {
    /// Pass the chunk on unchanged.
    Continue,
    /// Pass this instead of the chunk (empty drops it).
    Replace(Vec<u8>),
    /// Stop and answer with this response (only before response headers are sent).
    Respond(LocalResponse),
}

/// What to do after an upstream failure, returned by
/// [`Plugin::on_upstream_error`](crate::Plugin::on_upstream_error).
///
/// ```
/// use wasmgate_sdk::{ErrorAction, FailureKind};
///
/// fn decide(kind: FailureKind) -> ErrorAction {
///     match kind {
///         // Nothing reached the backend: another attempt is safe.
///         FailureKind::ConnectRefused | FailureKind::ConnectTimeout => ErrorAction::Retry,
///         _ => ErrorAction::Default,
///     }
/// }
/// assert_eq!(decide(FailureKind::Reset), ErrorAction::Default);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ErrorAction {
    /// Let the host answer (502 or 504) or retry per the route's policy.
    Default,
    /// Ask for another attempt, within the route's retry policy.
    Retry,
    /// Answer with this response.
    Respond(LocalResponse),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_response_builder_keeps_order_and_duplicates() {
        let resp = LocalResponse::new(503)
            .header("retry-after", "5")
            .header(String::from("x-why"), b"maintenance".as_slice())
            .header("retry-after", vec![b'6'])
            .body("later\n");
        assert_eq!(resp.status, 503);
        assert_eq!(
            resp.headers,
            vec![
                ("retry-after".to_owned(), b"5".to_vec()),
                ("x-why".to_owned(), b"maintenance".to_vec()),
                ("retry-after".to_owned(), b"6".to_vec()),
            ]
        );
        assert_eq!(resp.body, b"later\n");
    }

    #[test]
    fn local_response_body_replaces() {
        let resp = LocalResponse::new(200).body("first").body(String::from("second"));
        assert_eq!(resp.body, b"second");
    }

    #[test]
    fn local_response_does_not_judge_the_status() {
        // The host validates statuses; the builder must carry even a bad one to it.
        assert_eq!(LocalResponse::new(42).status, 42);
    }
}

//! The upstream side: [`Upstream`] (the groups a request may go to, with their [`Backend`]s) and
//! [`UpstreamFailure`] (how an attempt failed).

use crate::__private::bindings::wasmgate::plugin::{types as wit, upstream as host};

/// The upstream groups the request may go to, handed to
/// [`select_upstream`](crate::Plugin::select_upstream).
///
/// A handle with no data of its own: every method asks the host, so health is current.
///
/// ```no_run
/// use wasmgate_sdk::{Upstream, UpstreamChoice};
///
/// /// The first healthy backend of the route's group.
/// fn first_healthy(upstream: &Upstream) -> UpstreamChoice {
///     upstream
///         .backends()
///         .iter()
///         .position(|backend| backend.healthy)
///         .and_then(|index| u32::try_from(index).ok())
///         .map_or(UpstreamChoice::Default, UpstreamChoice::Backend)
/// }
/// ```
#[derive(Debug)]
pub struct Upstream {
    // Only the SDK's glue makes one: the host owns the groups.
    _handle: (),
}

impl Upstream {
    /// The handle the glue lends to `select_upstream`.
    pub(crate) fn handle() -> Self {
        Self { _handle: () }
    }

    /// The name of the route's upstream group.
    ///
    /// ```no_run
    /// # fn f(upstream: &wasmgate_sdk::Upstream) -> bool {
    /// upstream.group() == "api"
    /// # }
    /// ```
    pub fn group(&self) -> String {
        host::group()
    }

    /// The backends of the route's group, in config order: the list
    /// [`UpstreamChoice::Backend`](crate::UpstreamChoice::Backend) indexes.
    ///
    /// ```no_run
    /// # fn f(upstream: &wasmgate_sdk::Upstream) -> usize {
    /// upstream.backends().iter().filter(|b| b.healthy).count()
    /// # }
    /// ```
    pub fn backends(&self) -> Vec<Backend> {
        // The route's group always exists; an empty list is the safe reading if it did not.
        self.backends_in(None).unwrap_or_default()
    }

    /// The backends of `group`, in config order (the list
    /// [`UpstreamChoice::GroupBackend`](crate::UpstreamChoice::GroupBackend) indexes); `None` if
    /// no such group is configured.
    ///
    /// ```no_run
    /// # fn f(upstream: &wasmgate_sdk::Upstream) -> bool {
    /// upstream.backends_of("canary").is_some_and(|backends| !backends.is_empty())
    /// # }
    /// ```
    pub fn backends_of(&self, group: &str) -> Option<Vec<Backend>> {
        self.backends_in(Some(group))
    }

    /// Sends `name` as the TLS server name (SNI), and verifies the backend's certificate
    /// against it, for this request's upstream connection. Only works in
    /// [`select_upstream`](crate::Plugin::select_upstream); no effect on plain-TCP groups.
    ///
    /// ```no_run
    /// # fn f(upstream: &wasmgate_sdk::Upstream) -> Result<(), wasmgate_sdk::EditError> {
    /// upstream.set_sni("tenant-a.internal.example")?;
    /// # Ok(()) }
    /// ```
    pub fn set_sni(&self, name: &str) -> Result<(), crate::EditError> {
        host::set_sni(name).map_err(crate::EditError::from)
    }

    fn backends_in(&self, group: Option<&str>) -> Option<Vec<Backend>> {
        host::backends(group).map(|list| list.into_iter().map(Backend::from).collect())
    }
}

/// A backend of an upstream group, as the host sees it now.
///
/// ```
/// use wasmgate_sdk::Backend;
///
/// let backend = Backend { address: "10.0.0.7:8080".to_owned(), weight: 1, healthy: true, ejected: false };
/// assert!(backend.healthy);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Backend {
    /// `host:port`.
    pub address: String,
    /// Its weight in the group's balancer.
    pub weight: u32,
    /// False while health checks or outlier ejection hold the backend out; the host's own
    /// balancer picks only healthy backends.
    pub healthy: bool,
    /// True while outlier detection (consecutive failures) holds the backend out.
    pub ejected: bool,
}

impl From<wit::Backend> for Backend {
    fn from(backend: wit::Backend) -> Self {
        Self {
            address: backend.address,
            weight: backend.weight,
            healthy: backend.healthy,
            ejected: backend.ejected,
        }
    }
}

/// How an upstream attempt failed.
///
/// ```
/// use wasmgate_sdk::FailureKind;
///
/// // Nothing reached the backend, so a retry cannot repeat a side effect.
/// fn safe_to_retry(kind: FailureKind) -> bool {
///     matches!(kind, FailureKind::ConnectRefused | FailureKind::ConnectTimeout)
/// }
/// assert!(!safe_to_retry(FailureKind::ResponseTimeout));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailureKind {
    /// The connection could not be opened (refused, unreachable, TLS failure).
    ConnectRefused,
    /// Connecting or the TLS handshake took too long.
    ConnectTimeout,
    /// The response headers took too long.
    ResponseTimeout,
    /// The exchange broke before any response byte, or an HTTP/2 stream was refused.
    Reset,
    /// The backend's circuit breaker turned the request away.
    Overloaded,
    /// The backend answered 502, 503 or 504 and the route retries on that status.
    Status,
}

impl From<wit::FailureKind> for FailureKind {
    fn from(kind: wit::FailureKind) -> Self {
        match kind {
            wit::FailureKind::ConnectRefused => Self::ConnectRefused,
            wit::FailureKind::ConnectTimeout => Self::ConnectTimeout,
            wit::FailureKind::ResponseTimeout => Self::ResponseTimeout,
            wit::FailureKind::Reset => Self::Reset,
            wit::FailureKind::Overloaded => Self::Overloaded,
            wit::FailureKind::Status => Self::Status,
        }
    }
}

/// An upstream attempt that failed, handed to
/// [`on_upstream_error`](crate::Plugin::on_upstream_error).
///
/// ```
/// use wasmgate_sdk::{FailureKind, UpstreamFailure};
///
/// let failure = UpstreamFailure {
///     kind: FailureKind::Reset,
///     backend: "10.0.0.7:8080".to_owned(),
///     attempt: 1,
///     message: "connection reset by peer".to_owned(),
/// };
/// assert_eq!(failure.attempt, 1);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamFailure {
    /// How it failed.
    pub kind: FailureKind,
    /// `host:port` of the backend tried.
    pub backend: String,
    /// 1 for the first attempt.
    pub attempt: u32,
    /// The host's description of the failure.
    pub message: String,
}

impl From<wit::UpstreamFailure> for UpstreamFailure {
    fn from(failure: wit::UpstreamFailure) -> Self {
        Self {
            kind: failure.kind.into(),
            backend: failure.backend,
            attempt: failure.attempt,
            message: failure.message,
        }
    }
}

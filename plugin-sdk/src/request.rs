//! [`Request`]: the downstream request as the host holds it, read and edited through host calls.

use crate::__private::bindings::wasmgate::plugin::request as host;
use crate::EditError;

/// The request being handled: its metadata, and the head that goes upstream.
///
/// A handle with no data of its own: every method asks the host, so values are always current
/// (a header set by an earlier plugin is visible). Header names are case-insensitive; values
/// are bytes, with [`header`](Request::header) as a lossy UTF-8 shortcut.
///
/// Edits need `&mut Request`, which the phases that may edit get
/// ([`on_request_headers`](crate::Plugin::on_request_headers),
/// [`on_upstream_request`](crate::Plugin::on_upstream_request)); the host refuses edits in
/// other phases anyway, with [`EditError::ReadOnly`].
///
/// ```no_run
/// use wasmgate_sdk::{Action, LocalResponse, Request};
///
/// fn require_token(req: &mut Request) -> Action {
///     match req.header("authorization") {
///         Some(token) if token.starts_with("Bearer ") => {
///             // The upstream does not need the token itself.
///             let _ = req.remove_header("authorization");
///             Action::Continue
///         }
///         _ => Action::Respond(LocalResponse::new(401).header("www-authenticate", "Bearer")),
///     }
/// }
/// ```
#[derive(Debug)]
pub struct Request {
    // Only the SDK's glue makes one: the host owns the request.
    _handle: (),
}

impl Request {
    /// The handle the glue lends to a phase method.
    pub(crate) fn handle() -> Self {
        Self { _handle: () }
    }

    /// The method, e.g. `GET`.
    ///
    /// ```no_run
    /// # fn f(req: &wasmgate_sdk::Request) -> bool {
    /// req.method() == "GET"
    /// # }
    /// ```
    pub fn method(&self) -> String {
        host::method()
    }

    /// The path, without the query, as it will be forwarded, e.g. `/items/3`.
    ///
    /// ```no_run
    /// # fn f(req: &wasmgate_sdk::Request) -> bool {
    /// req.path().starts_with("/admin")
    /// # }
    /// ```
    pub fn path(&self) -> String {
        host::path()
    }

    /// The query string without `?`, if the request has one.
    ///
    /// ```no_run
    /// # fn f(req: &wasmgate_sdk::Request) -> bool {
    /// req.query().is_some_and(|q| q.split('&').any(|pair| pair == "debug=1"))
    /// # }
    /// ```
    pub fn query(&self) -> Option<String> {
        host::query()
    }

    /// The host the client asked for (absolute-form target or `Host`), without the port.
    ///
    /// ```no_run
    /// # fn f(req: &wasmgate_sdk::Request) -> bool {
    /// req.host().as_deref() == Some("api.example.org")
    /// # }
    /// ```
    pub fn host(&self) -> Option<String> {
        host::host()
    }

    /// `http` or `https`, as the client connected.
    ///
    /// ```no_run
    /// # fn f(req: &wasmgate_sdk::Request) -> bool {
    /// req.scheme() == "https"
    /// # }
    /// ```
    pub fn scheme(&self) -> String {
        host::scheme()
    }

    /// The client's `ip:port`.
    ///
    /// ```no_run
    /// # fn f(req: &wasmgate_sdk::Request) -> Option<std::net::SocketAddr> {
    /// req.client_addr().parse().ok()
    /// # }
    /// ```
    pub fn client_addr(&self) -> String {
        host::client_addr()
    }

    /// Who the client's TLS certificate says it is (its first URI or DNS subject alternative
    /// name, else its common name), on a listener that verifies client certificates.
    ///
    /// ```no_run
    /// # fn f(req: &wasmgate_sdk::Request) -> bool {
    /// req.client_identity().as_deref() == Some("spiffe://example.org/billing")
    /// # }
    /// ```
    pub fn client_identity(&self) -> Option<String> {
        host::client_identity()
    }

    /// The name of the route that matched.
    ///
    /// ```no_run
    /// # fn f(req: &wasmgate_sdk::Request) -> bool {
    /// req.route() == "api"
    /// # }
    /// ```
    pub fn route(&self) -> String {
        host::route()
    }

    /// The first value of header `name` as text (invalid UTF-8 replaced by U+FFFD), if present.
    ///
    /// ```no_run
    /// # fn f(req: &wasmgate_sdk::Request) -> String {
    /// req.header("user-agent").unwrap_or_default()
    /// # }
    /// ```
    pub fn header(&self, name: &str) -> Option<String> {
        self.header_bytes(name).map(lossy)
    }

    /// The first value of header `name` as bytes, if present.
    ///
    /// ```no_run
    /// # fn f(req: &wasmgate_sdk::Request) -> bool {
    /// req.header_bytes("x-flag").as_deref() == Some(b"1".as_slice())
    /// # }
    /// ```
    pub fn header_bytes(&self, name: &str) -> Option<Vec<u8>> {
        host::header(name)
    }

    /// Every value of header `name`, in order (empty if absent).
    ///
    /// ```no_run
    /// # fn f(req: &wasmgate_sdk::Request) -> usize {
    /// req.header_all("x-forwarded-for").len()
    /// # }
    /// ```
    pub fn header_all(&self, name: &str) -> Vec<Vec<u8>> {
        host::header_all(name)
    }

    /// The names of all headers present, lowercased, each once.
    ///
    /// ```no_run
    /// # fn f(req: &wasmgate_sdk::Request) -> bool {
    /// req.header_names().iter().any(|name| name.starts_with("x-debug-"))
    /// # }
    /// ```
    pub fn header_names(&self) -> Vec<String> {
        host::header_names()
    }

    /// Replaces every value of header `name` with `value`.
    ///
    /// ```no_run
    /// # fn f(req: &mut wasmgate_sdk::Request) -> Result<(), wasmgate_sdk::EditError> {
    /// req.set_header("x-env", "staging")?;
    /// # Ok(()) }
    /// ```
    pub fn set_header(&mut self, name: &str, value: impl AsRef<[u8]>) -> Result<(), EditError> {
        host::set_header(name, value.as_ref()).map_err(EditError::from)
    }

    /// Adds a value to header `name`, keeping the ones present.
    ///
    /// ```no_run
    /// # fn f(req: &mut wasmgate_sdk::Request) -> Result<(), wasmgate_sdk::EditError> {
    /// req.add_header("via", "1.1 wasmgate")?;
    /// # Ok(()) }
    /// ```
    pub fn add_header(&mut self, name: &str, value: impl AsRef<[u8]>) -> Result<(), EditError> {
        host::add_header(name, value.as_ref()).map_err(EditError::from)
    }

    /// Removes every value of header `name`; `Ok(true)` if there was one.
    ///
    /// ```no_run
    /// # fn f(req: &mut wasmgate_sdk::Request) -> Result<(), wasmgate_sdk::EditError> {
    /// let had_cookie = req.remove_header("cookie")?;
    /// # Ok(()) }
    /// ```
    pub fn remove_header(&mut self, name: &str) -> Result<bool, EditError> {
        host::remove_header(name).map_err(EditError::from)
    }

    /// Replaces the path and query sent upstream, e.g. `/v2/items?id=3`.
    ///
    /// ```no_run
    /// # fn f(req: &mut wasmgate_sdk::Request) -> Result<(), wasmgate_sdk::EditError> {
    /// // Strip a `/api` prefix before forwarding.
    /// if let Some(rest) = req.path().strip_prefix("/api") {
    ///     let query = req.query().map(|q| format!("?{q}")).unwrap_or_default();
    ///     req.set_path(&format!("/{}{query}", rest.trim_start_matches('/')))?;
    /// }
    /// # Ok(()) }
    /// ```
    pub fn set_path(&mut self, path_and_query: &str) -> Result<(), EditError> {
        host::set_path(path_and_query).map_err(EditError::from)
    }
}

/// Header bytes as text, copying only when they are not valid UTF-8.
pub(crate) fn lossy(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes).unwrap_or_else(|error| String::from_utf8_lossy(error.as_bytes()).into_owned())
}

#[cfg(test)]
mod tests {
    use super::lossy;

    #[test]
    fn lossy_keeps_utf8_and_replaces_the_rest() {
        assert_eq!(lossy("héllo".as_bytes().to_vec()), "héllo");
        assert_eq!(lossy(vec![b'a', 0xff, b'b']), "a\u{fffd}b");
    }
}

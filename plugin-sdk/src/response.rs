//! [`Response`]: the response head as the host holds it, read and edited through host calls;
//! [`Trailers`]: the trailer fields after the response body, the same way.

use crate::__private::bindings::wasmgate::plugin::response as host;
use crate::EditError;
use crate::request::lossy;

/// The response being sent: its status and headers.
///
/// A handle with no data of its own: every method asks the host. Readable from
/// [`on_response_headers`](crate::Plugin::on_response_headers) on, and editable there only
/// (elsewhere edits return [`EditError::ReadOnly`]).
///
/// ```no_run
/// use wasmgate_sdk::Response;
///
/// fn harden(resp: &mut Response) {
///     // Hide what serves the response; keep going if the host refuses.
///     let _ = resp.remove_header("server");
///     let _ = resp.set_header("x-content-type-options", "nosniff");
///     if resp.status() == 500 {
///         let _ = resp.set_status(502);
///     }
/// }
/// ```
#[derive(Debug)]
pub struct Response {
    // Only the SDK's glue makes one: the host owns the response.
    _handle: (),
}

impl Response {
    /// The handle the glue lends to a phase method.
    pub(crate) fn handle() -> Self {
        Self { _handle: () }
    }

    /// The status code (0 before a response exists).
    ///
    /// ```no_run
    /// # fn f(resp: &wasmgate_sdk::Response) -> bool {
    /// (500..600).contains(&resp.status())
    /// # }
    /// ```
    pub fn status(&self) -> u16 {
        host::status()
    }

    /// Replaces the status code (200..=599).
    ///
    /// ```no_run
    /// # fn f(resp: &mut wasmgate_sdk::Response) -> Result<(), wasmgate_sdk::EditError> {
    /// resp.set_status(503)?;
    /// # Ok(()) }
    /// ```
    pub fn set_status(&mut self, status: u16) -> Result<(), EditError> {
        host::set_status(status).map_err(EditError::from)
    }

    /// The first value of header `name` as text (invalid UTF-8 replaced by U+FFFD), if present.
    ///
    /// ```no_run
    /// # fn f(resp: &wasmgate_sdk::Response) -> bool {
    /// resp.header("content-type").is_some_and(|ct| ct.starts_with("text/html"))
    /// # }
    /// ```
    pub fn header(&self, name: &str) -> Option<String> {
        self.header_bytes(name).map(lossy)
    }

    /// The first value of header `name` as bytes, if present.
    ///
    /// ```no_run
    /// # fn f(resp: &wasmgate_sdk::Response) -> Option<Vec<u8>> {
    /// resp.header_bytes("etag")
    /// # }
    /// ```
    pub fn header_bytes(&self, name: &str) -> Option<Vec<u8>> {
        host::header(name)
    }

    /// Every value of header `name`, in order (empty if absent).
    ///
    /// ```no_run
    /// # fn f(resp: &wasmgate_sdk::Response) -> usize {
    /// resp.header_all("set-cookie").len()
    /// # }
    /// ```
    pub fn header_all(&self, name: &str) -> Vec<Vec<u8>> {
        host::header_all(name)
    }

    /// The names of all headers present, lowercased, each once.
    ///
    /// ```no_run
    /// # fn f(resp: &wasmgate_sdk::Response) -> Vec<String> {
    /// resp.header_names()
    /// # }
    /// ```
    pub fn header_names(&self) -> Vec<String> {
        host::header_names()
    }

    /// Replaces every value of header `name` with `value`.
    ///
    /// ```no_run
    /// # fn f(resp: &mut wasmgate_sdk::Response) -> Result<(), wasmgate_sdk::EditError> {
    /// resp.set_header("cache-control", "no-store")?;
    /// # Ok(()) }
    /// ```
    pub fn set_header(&mut self, name: &str, value: impl AsRef<[u8]>) -> Result<(), EditError> {
        host::set_header(name, value.as_ref()).map_err(EditError::from)
    }

    /// Adds a value to header `name`, keeping the ones present.
    ///
    /// ```no_run
    /// # fn f(resp: &mut wasmgate_sdk::Response) -> Result<(), wasmgate_sdk::EditError> {
    /// resp.add_header("vary", "accept-encoding")?;
    /// # Ok(()) }
    /// ```
    pub fn add_header(&mut self, name: &str, value: impl AsRef<[u8]>) -> Result<(), EditError> {
        host::add_header(name, value.as_ref()).map_err(EditError::from)
    }

    /// Removes every value of header `name`; `Ok(true)` if there was one.
    ///
    /// ```no_run
    /// # fn f(resp: &mut wasmgate_sdk::Response) -> Result<(), wasmgate_sdk::EditError> {
    /// resp.remove_header("x-powered-by")?;
    /// # Ok(()) }
    /// ```
    pub fn remove_header(&mut self, name: &str) -> Result<bool, EditError> {
        host::remove_header(name).map_err(EditError::from)
    }
}

/// The trailer fields the upstream sent after the response body (gRPC's `grpc-status`, for
/// one), lent to [`on_response_trailers`](crate::Plugin::on_response_trailers), which may read
/// and edit them. Like [`Response`], a handle that asks the host for everything.
///
/// ```no_run
/// use wasmgate_sdk::Trailers;
///
/// fn mark(trailers: &mut Trailers) {
///     if trailers.header("grpc-status").as_deref() != Some("0") {
///         let _ = trailers.set_header("x-failed", "1");
///     }
/// }
/// ```
#[derive(Debug)]
pub struct Trailers {
    // During `on-response-trailers` the host's response functions read and edit the trailers.
    fields: Response,
}

impl Trailers {
    /// The handle the glue lends to `on_response_trailers`.
    pub(crate) fn handle() -> Self {
        Self { fields: Response::handle() }
    }

    /// The first value of trailer `name` as text (invalid UTF-8 replaced by U+FFFD), if present.
    pub fn header(&self, name: &str) -> Option<String> {
        self.fields.header(name)
    }

    /// The first value of trailer `name` as bytes, if present.
    pub fn header_bytes(&self, name: &str) -> Option<Vec<u8>> {
        self.fields.header_bytes(name)
    }

    /// Every value of trailer `name`, in order (empty if absent).
    pub fn header_all(&self, name: &str) -> Vec<Vec<u8>> {
        self.fields.header_all(name)
    }

    /// The names of all trailers present, lowercased, each once.
    pub fn header_names(&self) -> Vec<String> {
        self.fields.header_names()
    }

    /// Replaces every value of trailer `name` with `value`.
    pub fn set_header(&mut self, name: &str, value: impl AsRef<[u8]>) -> Result<(), EditError> {
        self.fields.set_header(name, value)
    }

    /// Adds a value to trailer `name`, keeping the ones present.
    pub fn add_header(&mut self, name: &str, value: impl AsRef<[u8]>) -> Result<(), EditError> {
        self.fields.add_header(name, value)
    }

    /// Removes every value of trailer `name`; `Ok(true)` if there was one.
    pub fn remove_header(&mut self, name: &str) -> Result<bool, EditError> {
        self.fields.remove_header(name)
    }
}

//! [`EditError`]: why the host refused an edit of the request or response.

use std::fmt;

use crate::__private::bindings::wasmgate::plugin::types as wit;

/// Why the host refused an edit of the request or response head.
///
/// The host validates every value a plugin hands it like client input; a refused edit leaves
/// the head as it was.
///
/// ```no_run
/// use wasmgate_sdk::{EditError, Request};
///
/// fn tag(req: &mut Request) {
///     match req.set_header("x-tag", "blue") {
///         Ok(()) => {}
///         // Not allowed in this phase: nothing to do about it.
///         Err(EditError::ReadOnly) => {}
///         Err(error) => wasmgate_sdk::log::warn(&format!("x-tag refused: {error}")),
///     }
/// }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EditError {
    /// Not a valid header name (an RFC 9110 token).
    InvalidName,
    /// The value holds CR, LF or NUL, or is too long.
    InvalidValue,
    /// The status is not in 200..=599 (1xx are the host's own).
    InvalidStatus,
    /// The path is not an absolute path with an optional query.
    InvalidPath,
    /// The current phase may not edit this (e.g. request headers during `on_log`).
    ReadOnly,
    /// The host manages this header itself (hop-by-hop headers, `content-length`).
    ReservedHeader,
}

impl fmt::Display for EditError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::InvalidName => "not a valid header name",
            Self::InvalidValue => "not a valid header value (CR, LF or NUL, or too long)",
            Self::InvalidStatus => "not a valid status (200 to 599)",
            Self::InvalidPath => "not an absolute path with an optional query",
            Self::ReadOnly => "not editable in this phase",
            Self::ReservedHeader => "a header the host manages itself",
        })
    }
}

impl std::error::Error for EditError {}

impl From<wit::EditError> for EditError {
    fn from(error: wit::EditError) -> Self {
        match error {
            wit::EditError::InvalidName => Self::InvalidName,
            wit::EditError::InvalidValue => Self::InvalidValue,
            wit::EditError::InvalidStatus => Self::InvalidStatus,
            wit::EditError::InvalidPath => Self::InvalidPath,
            wit::EditError::ReadOnly => Self::ReadOnly,
            wit::EditError::ReservedHeader => Self::ReservedHeader,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn displays_a_reason_and_is_an_error() {
        let error: Box<dyn std::error::Error> = Box::new(EditError::ReservedHeader);
        assert_eq!(error.to_string(), "a header the host manages itself");
        assert_eq!(EditError::from(wit::EditError::InvalidStatus), EditError::InvalidStatus);
    }
}

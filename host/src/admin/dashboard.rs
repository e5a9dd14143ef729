//! The dashboard: one page, its script and its style sheet, embedded in the binary at build
//! time and served by the admin listener at `/`. The page holds no data of its own: it reads
//! `/status`, `/upstreams`, `/plugins` and `/metrics` with the admin token the operator types
//! in, so the assets are served without the token and everything they show is behind it.

use http::HeaderValue;

/// One embedded file.
pub(super) struct Asset {
    /// Its `Content-Type`.
    pub(super) content_type: HeaderValue,
    /// Its bytes.
    pub(super) body: &'static [u8],
}

/// The embedded file served at `path`, if there is one.
pub(super) fn asset(path: &str) -> Option<Asset> {
    let (content_type, body): (&'static str, &'static [u8]) = match path {
        "/" | "/index.html" => ("text/html; charset=utf-8", include_bytes!("dashboard/index.html")),
        "/dashboard.js" => ("text/javascript; charset=utf-8", include_bytes!("dashboard/dashboard.js")),
        "/dashboard.css" => ("text/css; charset=utf-8", include_bytes!("dashboard/dashboard.css")),
        _ => return None,
    };
    Some(Asset { content_type: HeaderValue::from_static(content_type), body })
}

/// The page may load only its own script and style sheet and talk only to the admin listener
/// it came from; no other site may frame it.
pub(super) const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

//! Where a route's requests go when it does not answer them itself: a weighted split across
//! upstream groups ([`SplitBackend`], kept on one side by [`Sticky`]), a copy sent to another
//! group ([`Mirror`]); and the answers a route gives without any upstream ([`Redirect`],
//! [`Respond`]).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use toml::Spanned;

use super::{defaults, units};

/// `backends = [{ upstream = "v1", weight = 90 }, …]`: one side of a route's split.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SplitBackend {
    /// The group under `[upstreams]`.
    pub upstream: Spanned<String>,
    /// Its share of the route's requests, against the other sides' weights (0 takes none).
    pub weight: u32,
}

/// `sticky = { header = "x-user" }` or `{ cookie = "wasmgate-split" }`: what keeps a client
/// on one side of a split. A header's value is hashed; the cookie is the gateway's own, set on
/// the first response and naming the side.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Sticky {
    /// A request header whose value picks the side.
    pub header: Option<String>,
    /// A cookie the gateway sets to the side it picked, and reads back.
    pub cookie: Option<String>,
}

impl Sticky {
    pub(super) fn validate(&self) -> Result<(), String> {
        match (&self.header, &self.cookie) {
            (Some(name), None) => http::HeaderName::from_bytes(name.as_bytes())
                .map(drop)
                .map_err(|_| format!("`{name}` is not a header name")),
            (None, Some(name)) if is_cookie_name(name) => Ok(()),
            (None, Some(name)) => Err(format!("`{name}` is not a cookie name")),
            _ => Err("set `header` or `cookie`, one of them".to_owned()),
        }
    }
}

/// A cookie name is an RFC 6265 token.
fn is_cookie_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?={}".contains(&b))
}

/// `mirror = { upstream = "shadow", percent = 100, max_in_flight = 64 }`: a copy of the
/// route's requests goes to another group; its response is read and dropped.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Mirror {
    /// The group the copies go to.
    pub upstream: Spanned<String>,
    /// The share of requests copied, 1 to 100.
    #[serde(default = "defaults::mirror_percent")]
    pub percent: u32,
    /// Copies in flight at most; a request finding them all busy is not copied.
    #[serde(default = "defaults::mirror_in_flight")]
    pub max_in_flight: usize,
    /// How long one copy may take, from sending it to the end of its response.
    #[serde(default = "defaults::mirror_timeout", with = "units::duration")]
    pub timeout: std::time::Duration,
}

impl Mirror {
    pub(super) fn validate(&self) -> Result<(), String> {
        if !(1..=100).contains(&self.percent) {
            return Err(format!("percent {} is not between 1 and 100", self.percent));
        }
        if self.max_in_flight == 0 || self.timeout.is_zero() {
            return Err("`max_in_flight` and `timeout` must be more than 0".to_owned());
        }
        Ok(())
    }
}

/// `redirect = { status = 301, scheme = "https", host = "example.org", port = 8443,
/// path = "/new" }`: the route answers with a redirect. What is not set is the request's own:
/// its host, its port (none when the scheme changes), its path and query.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Redirect {
    /// 301, 302, 303, 307 or 308; default 302.
    #[serde(default = "defaults::redirect_status")]
    pub status: u16,
    /// `http` or `https`.
    pub scheme: Option<String>,
    /// The host the client is sent to.
    pub host: Option<String>,
    /// The port the client is sent to (left out of the location when it is the scheme's own).
    pub port: Option<u16>,
    /// The whole path replaced.
    pub path: Option<String>,
    /// The matched `path_prefix` replaced, the rest kept.
    pub prefix: Option<String>,
}

impl Redirect {
    pub(super) fn validate(&self) -> Result<(), String> {
        if ![301, 302, 303, 307, 308].contains(&self.status) {
            return Err(format!("status {} is not a redirect (301, 302, 303, 307 or 308)", self.status));
        }
        if let Some(scheme) = &self.scheme
            && scheme != "http"
            && scheme != "https"
        {
            return Err(format!("scheme `{scheme}` is not `http` or `https`"));
        }
        if let Some(host) = &self.host
            && (host.contains(':') || host.parse::<http::uri::Authority>().is_err())
        {
            return Err(format!("`{host}` is not a host name (give the port as `port`)"));
        }
        if self.port == Some(0) {
            return Err("port 0".to_owned());
        }
        super::route::check_paths(self.prefix.as_ref(), self.path.as_ref())
    }
}

/// `respond = { status = 503, body = "down for maintenance", headers = { … } }`: the route
/// answers itself, always the same.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Respond {
    /// The status, 200 to 599; default 200.
    #[serde(default = "defaults::respond_status")]
    pub status: u16,
    /// The body; default empty.
    #[serde(default)]
    pub body: String,
    /// Response headers (`content-type` defaults to `text/plain; charset=utf-8` with a body).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

impl Respond {
    pub(super) fn validate(&self) -> Result<(), String> {
        if !(200..=599).contains(&self.status) {
            return Err(format!("status {} is not between 200 and 599", self.status));
        }
        super::route::check_headers(self.headers.iter())
    }
}

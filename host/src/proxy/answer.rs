//! Answers a route gives itself, without an upstream: a redirect (`redirect`, and
//! `redirect_https` as one case of it) or a fixed response (`respond`). Both are built once at
//! load; a request only fills in the location.

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::request::Parts;
use http::{Response, StatusCode};

use super::{ProxyBody, ProxyError};
use crate::config;
use crate::head::{self, PathEdit};

/// What a route answers with instead of forwarding.
#[derive(Debug)]
pub(crate) enum Answer {
    Redirect(Redirect),
    Respond(Fixed),
}

impl Answer {
    /// The answer `config` gives, if it gives one.
    pub(crate) fn new(config: &config::RouteConfig) -> Option<Answer> {
        if let Some(r) = &config.redirect {
            return Some(Answer::Redirect(Redirect::new(r, &config.path_prefix)));
        }
        config.respond.as_ref().map(|r| Answer::Respond(Fixed::new(r)))
    }

    /// The response to `request`, which arrived over TLS if `tls`.
    pub(crate) fn respond(&self, request: &Parts, tls: bool) -> Result<Response<ProxyBody>, ProxyError> {
        match self {
            Answer::Redirect(redirect) => redirect.respond(request, tls),
            Answer::Respond(fixed) => Ok(fixed.respond()),
        }
    }
}

/// `redirect = { … }`, ready: see [`config::Redirect`].
#[derive(Debug)]
pub(crate) struct Redirect {
    status: StatusCode,
    https: Option<bool>,
    host: Option<String>,
    port: Option<u16>,
    path: Option<PathEdit>,
}

impl Redirect {
    fn new(config: &config::Redirect, matched: &str) -> Self {
        Redirect {
            status: StatusCode::from_u16(config.status).unwrap_or(StatusCode::FOUND),
            https: config.scheme.as_deref().map(|s| s == "https"),
            host: config.host.clone(),
            port: config.port,
            path: PathEdit::new(config.path.as_ref(), config.prefix.as_ref(), matched),
        }
    }

    /// `redirect_https = PORT`: a 308 to the same host and target over HTTPS on `port`.
    pub(crate) fn https(port: u16) -> Self {
        Redirect {
            status: StatusCode::PERMANENT_REDIRECT,
            https: Some(true),
            host: None,
            port: Some(port),
            path: None,
        }
    }

    /// The redirect for `request`: what the route does not set is the request's own (its
    /// port only while the scheme stays), and the query is kept.
    pub(crate) fn respond(&self, request: &Parts, tls: bool) -> Result<Response<ProxyBody>, ProxyError> {
        let https = self.https.unwrap_or(tls);
        let host = match &self.host {
            Some(host) => host.as_str(),
            None => head::request_host(request).ok_or(ProxyError::BadRequest("missing host"))?,
        };
        let port = self.port.or_else(|| if https == tls { head::request_port(request) } else { None });
        let scheme = if https { "https" } else { "http" };
        let port = match port {
            Some(443) if https => String::new(),
            Some(80) if !https => String::new(),
            Some(port) => format!(":{port}"),
            None => String::new(),
        };
        let path = match &self.path {
            Some(edit) => edit.apply(request.uri.path()),
            None => request.uri.path().to_owned(),
        };
        let query = request.uri.query().map(|q| format!("?{q}")).unwrap_or_default();
        let location = HeaderValue::try_from(format!("{scheme}://{host}{port}{path}{query}"))
            .map_err(|_| ProxyError::BadRequest("invalid request target"))?;
        let mut response = Response::new(ProxyBody::local(Bytes::new()));
        *response.status_mut() = self.status;
        response.headers_mut().insert(header::LOCATION, location);
        Ok(response)
    }
}

/// `respond = { … }`, ready: see [`config::Respond`].
#[derive(Debug)]
pub(crate) struct Fixed {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Fixed {
    fn new(config: &config::Respond) -> Self {
        // The config check refused invalid statuses, names and values.
        let mut headers: HeaderMap = config
            .headers
            .iter()
            .filter_map(|(n, v)| {
                Some((HeaderName::from_bytes(n.as_bytes()).ok()?, HeaderValue::from_str(v).ok()?))
            })
            .collect();
        if !config.body.is_empty() && !headers.contains_key(header::CONTENT_TYPE) {
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
        }
        Fixed {
            status: StatusCode::from_u16(config.status).unwrap_or(StatusCode::OK),
            headers,
            body: Bytes::from(config.body.clone()),
        }
    }

    fn respond(&self) -> Response<ProxyBody> {
        let mut response = Response::new(ProxyBody::local(self.body.clone()));
        *response.status_mut() = self.status;
        *response.headers_mut() = self.headers.clone();
        response
    }
}

//! TLS toward backends: which roots are trusted (the bundled web PKI roots plus a configured
//! CA), an optional client certificate, and the server name each backend is verified against
//! (the configured `sni`, else the host name the backend was configured with).

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use rustls::ClientConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{PrivateKeyDer, ServerName};

/// Builds the rustls client config: verification always on.
pub(crate) fn client_config(
    ca: Option<&Path>,
    client_cert: Option<(&Path, &Path)>,
) -> Result<ClientConfig, String> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(ca) = ca {
        for cert in crate::tls::read_certs(ca)? {
            roots.add(cert).map_err(|e| format!("CA {}: {e}", ca.display()))?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots);
    match client_cert {
        None => Ok(builder.with_no_client_auth()),
        Some((cert, key)) => {
            let chain = crate::tls::read_certs(cert)?;
            let key = PrivateKeyDer::from_pem_file(key)
                .map_err(|e| format!("cannot read key {}: {e}", key.display()))?;
            builder.with_client_auth_cert(chain, key).map_err(|e| format!("client certificate: {e}"))
        }
    }
}

/// The name each backend's certificate is checked against, by the resolved `ip:port` the
/// request targets.
pub(crate) struct ServerNames {
    fixed: Option<ServerName<'static>>,
    by_authority: HashMap<String, ServerName<'static>>,
}

impl ServerNames {
    /// `sni` for every backend, or else each backend's configured host (`configured` pairs the
    /// resolved `ip:port` with the address as written).
    pub(crate) fn new(sni: Option<&str>, configured: &[(String, &str)]) -> Result<Self, String> {
        let fixed = sni
            .map(|name| {
                ServerName::try_from(name.to_owned()).map_err(|_| format!("`{name}` is not a server name"))
            })
            .transpose()?;
        let by_authority = configured
            .iter()
            .filter_map(|(authority, address)| {
                let host = address.rsplit_once(':').map_or(*address, |(h, _)| h);
                let host = host.trim_start_matches('[').trim_end_matches(']');
                ServerName::try_from(host.to_owned()).ok().map(|name| (authority.clone(), name))
            })
            .collect();
        Ok(ServerNames { fixed, by_authority })
    }
}

impl ServerNames {
    /// The name to send and verify for a connection to the backend at `authority` (`ip:port`).
    pub(crate) fn for_authority(&self, authority: &str) -> Result<ServerName<'static>, String> {
        if let Some(name) = &self.fixed {
            return Ok(name.clone());
        }
        self.by_authority.get(authority).cloned().ok_or_else(|| format!("no server name for {authority}"))
    }
}

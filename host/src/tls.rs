//! TLS termination on a listener: certificates chosen by SNI with a default, ALPN (h2 and
//! http/1.1), TLS 1.2 and 1.3 only, optional client-certificate verification, and certificate
//! and key files reloaded when they change on disk (new handshakes get the new certificate;
//! open connections keep theirs).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;

use crate::config::{ClientAuth, ListenerTlsConfig};

/// One certificate as configured, with what was loaded from it.
struct Entry {
    cert: PathBuf,
    key: PathBuf,
    names: Vec<String>,
    /// When the files were last read (their newest modification time).
    modified: Option<SystemTime>,
}

/// The certificates of one listener, swapped whole when a file changes.
struct Certificates {
    /// Lowercase exact names, and `*.suffix` wildcards stored as `.suffix`.
    by_name: HashMap<String, Arc<CertifiedKey>>,
    default: Arc<CertifiedKey>,
}

/// Picks the certificate for a handshake by its server name.
#[derive(Debug)]
struct Resolver {
    current: ArcSwap<Certificates>,
}

impl std::fmt::Debug for Certificates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Certificates").field("names", &self.by_name.len()).finish_non_exhaustive()
    }
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let certificates = self.current.load();
        let Some(name) = hello.server_name() else { return Some(certificates.default.clone()) };
        let name = name.to_ascii_lowercase();
        if let Some(key) = certificates.by_name.get(&name) {
            return Some(key.clone());
        }
        let wildcard = name.find('.').and_then(|dot| certificates.by_name.get(&name[dot..]));
        Some(wildcard.unwrap_or(&certificates.default).clone())
    }
}

/// A listener's TLS: the acceptor and what keeps its certificates fresh.
pub struct ServerTls {
    acceptor: tokio_rustls::TlsAcceptor,
    resolver: Arc<Resolver>,
    entries: std::sync::Mutex<Vec<Entry>>,
    /// How long a client has to finish the handshake.
    pub handshake_timeout: Duration,
    reload_interval: Duration,
}

/// The PEM certificates in `path`; an error names the file and says why (none is one).
pub(crate) fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("cannot parse {}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{} holds no certificate", path.display()));
    }
    Ok(certs)
}

fn load_pair(cert: &Path, key: &Path) -> Result<Arc<CertifiedKey>, String> {
    let chain = read_certs(cert)?;
    let key =
        PrivateKeyDer::from_pem_file(key).map_err(|e| format!("cannot read key {}: {e}", key.display()))?;
    let provider = rustls::crypto::ring::default_provider();
    let signing = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| format!("{}: unusable key: {e}", cert.display()))?;
    let certified = CertifiedKey::new(chain, signing);
    certified.keys_match().map_err(|e| format!("{}: the key does not match: {e}", cert.display()))?;
    Ok(Arc::new(certified))
}

fn modified(entry: &Entry) -> Option<SystemTime> {
    let time = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    match (time(&entry.cert), time(&entry.key)) {
        (Some(a), Some(b)) => Some(a.max(b)),
        _ => None,
    }
}

fn build(entries: &[Entry]) -> Result<Certificates, String> {
    let mut by_name = HashMap::new();
    let mut default = None;
    for entry in entries {
        let key = load_pair(&entry.cert, &entry.key)?;
        default.get_or_insert_with(|| key.clone());
        for name in &entry.names {
            let name = name.to_ascii_lowercase();
            let name = name.strip_prefix('*').map(str::to_owned).unwrap_or(name);
            by_name.insert(name, key.clone());
        }
    }
    let default = default.ok_or("no certificate configured")?;
    Ok(Certificates { by_name, default })
}

impl ServerTls {
    /// Loads every certificate (paths resolved by `resolve`) and builds the acceptor.
    pub fn new(
        config: &ListenerTlsConfig,
        resolve: impl Fn(&Path) -> PathBuf,
    ) -> Result<Arc<ServerTls>, String> {
        let mut entries: Vec<Entry> = config
            .certificates
            .iter()
            .map(|c| Entry {
                cert: resolve(&c.cert),
                key: resolve(&c.key),
                names: c.names.clone(),
                modified: None,
            })
            .collect();
        for entry in &mut entries {
            entry.modified = modified(entry);
        }
        let resolver = Arc::new(Resolver { current: ArcSwap::from_pointee(build(&entries)?) });
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| e.to_string())?;
        let builder = match &config.client_ca {
            None => builder.with_no_client_auth(),
            Some(ca) => {
                let ca = resolve(ca);
                let mut roots = rustls::RootCertStore::empty();
                for cert in read_certs(&ca)? {
                    roots.add(cert).map_err(|e| format!("{}: {e}", ca.display()))?;
                }
                let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
                let verifier = match config.client_auth {
                    ClientAuth::Required => verifier,
                    ClientAuth::Optional => verifier.allow_unauthenticated(),
                };
                builder.with_client_cert_verifier(
                    verifier.build().map_err(|e| format!("{}: {e}", ca.display()))?,
                )
            }
        };
        let mut server = builder.with_cert_resolver(resolver.clone());
        server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let tls = Arc::new(ServerTls {
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(server)),
            resolver,
            entries: std::sync::Mutex::new(entries),
            handshake_timeout: config.handshake_timeout,
            reload_interval: config.reload_interval,
        });
        spawn_reloader(Arc::downgrade(&tls), config.reload_interval);
        Ok(tls)
    }

    /// The acceptor for new connections.
    pub fn acceptor(&self) -> &tokio_rustls::TlsAcceptor {
        &self.acceptor
    }

    /// Reads the files again if any changed; a set that fails to load leaves the current one.
    fn reload_if_changed(&self) {
        let mut entries = self.entries.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let changed = entries.iter().any(|e| modified(e) != e.modified);
        if !changed {
            return;
        }
        match build(&entries) {
            Ok(certificates) => {
                self.resolver.current.store(Arc::new(certificates));
                for entry in entries.iter_mut() {
                    entry.modified = modified(entry);
                }
                tracing::info!(certificates = entries.len(), "TLS certificates reloaded");
            }
            // Half-written files are common while a tool replaces them: try again next time.
            Err(error) => {
                tracing::warn!(%error, "TLS certificates changed but do not load; keeping the old ones")
            }
        }
    }
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls").field("reload_interval", &self.reload_interval).finish_non_exhaustive()
    }
}

/// Checks the files every `interval` until the listener's TLS is dropped.
fn spawn_reloader(tls: Weak<ServerTls>, interval: Duration) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
    runtime.spawn(async move {
        loop {
            tokio::time::sleep(interval).await;
            let Some(tls) = tls.upgrade() else { return };
            // File reads: off the workers.
            let _ = tokio::task::spawn_blocking(move || tls.reload_if_changed()).await;
        }
    });
}

/// What a client certificate says about who the client is: its first URI or DNS subject
/// alternative name, else its subject's common name.
pub fn client_identity(cert: &CertificateDer<'_>) -> Option<String> {
    use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};
    let (_, parsed) = X509Certificate::from_der(cert.as_ref()).ok()?;
    if let Ok(Some(san)) = parsed.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                GeneralName::URI(uri) => return Some((*uri).to_owned()),
                GeneralName::DNSName(dns) => return Some((*dns).to_owned()),
                _ => {}
            }
        }
    }
    parsed.subject().iter_common_name().next().and_then(|cn| cn.as_str().ok()).map(str::to_owned)
}

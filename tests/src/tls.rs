//! Certificates made in the test (rcgen) and a real TLS origin (tokio-rustls + hyper) that
//! answers with the HTTP version it was spoken to in.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// A certificate authority made for one test.
pub struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl TestCa {
    /// A fresh CA.
    pub fn new() -> anyhow::Result<TestCa> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, "wasmgate test CA");
        Ok(TestCa { issuer: CertifiedIssuer::self_signed(params, KeyPair::generate()?)? })
    }

    /// Writes the CA certificate as PEM into `dir`; returns the file.
    pub fn write_pem(&self, dir: &Path) -> anyhow::Result<PathBuf> {
        let path = dir.join("ca.pem");
        std::fs::write(&path, self.issuer.pem())?;
        Ok(path)
    }

    /// Writes a certificate for `names` and its key as PEM files into `dir`; returns both paths.
    pub fn write_leaf(&self, dir: &Path, names: &[&str]) -> anyhow::Result<(PathBuf, PathBuf)> {
        self.write_named(dir, "client", names)
    }

    /// Writes a certificate for `names` and its key as `<stem>.pem` and `<stem>.key` into
    /// `dir` (replacing them if they exist); returns both paths.
    pub fn write_named(&self, dir: &Path, stem: &str, names: &[&str]) -> anyhow::Result<(PathBuf, PathBuf)> {
        let key = KeyPair::generate()?;
        let params = CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>())?;
        let cert = params.signed_by(&key, &self.issuer)?;
        let (cert_path, key_path) = (dir.join(format!("{stem}.pem")), dir.join(format!("{stem}.key")));
        std::fs::write(&cert_path, cert.pem())?;
        std::fs::write(&key_path, key.serialize_pem())?;
        Ok((cert_path, key_path))
    }

    /// A TLS client config trusting this CA, offering `alpn`, with a client certificate for
    /// `client` names if given.
    pub fn client_config(
        &self,
        alpn: &[&[u8]],
        client: Option<&[&str]>,
    ) -> anyhow::Result<Arc<rustls::ClientConfig>> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(self.root_store()?);
        let mut config = match client {
            Some(names) => {
                let (chain, key) = self.leaf(names)?;
                builder.with_client_auth_cert(chain, key)?
            }
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(Arc::new(config))
    }

    fn root_store(&self) -> anyhow::Result<rustls::RootCertStore> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.issuer.der().clone())?;
        Ok(roots)
    }

    /// A certificate for `names`, signed by this CA, with its key.
    pub fn leaf(
        &self,
        names: &[&str],
    ) -> anyhow::Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)> {
        let key = KeyPair::generate()?;
        let params = CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>())?;
        let cert = params.signed_by(&key, &self.issuer)?;
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        Ok((vec![cert.der().clone()], key))
    }
}

/// A TLS origin; stops when dropped.
pub struct TlsOrigin {
    /// Where it listens.
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TlsOrigin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TlsOrigin {
    /// Serves HTTP/1.1 and HTTP/2 over TLS with a certificate for `names`, offering `alpn`.
    /// Answers `GET` with `tls <version>` and headers `x-version` and `x-host` (Host, or the
    /// HTTP/2 `:authority`).
    pub async fn start(ca: &TestCa, names: &[&str], alpn: &[&[u8]]) -> anyhow::Result<TlsOrigin> {
        TlsOrigin::start_with(ca, names, alpn, false).await
    }

    /// As [`TlsOrigin::start`], refusing clients without a certificate signed by `ca`.
    pub async fn start_mutual(ca: &TestCa, names: &[&str]) -> anyhow::Result<TlsOrigin> {
        TlsOrigin::start_with(ca, names, &[b"http/1.1"], true).await
    }

    async fn start_with(
        ca: &TestCa,
        names: &[&str],
        alpn: &[&[u8]],
        mutual: bool,
    ) -> anyhow::Result<TlsOrigin> {
        let (chain, key) = ca.leaf(names)?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()?;
        let builder = if mutual {
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(ca.root_store()?),
                provider,
            )
            .build()?;
            builder.with_client_cert_verifier(verifier)
        } else {
            builder.with_no_client_auth()
        };
        let mut config = builder.with_single_cert(chain, key)?;
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else { continue };
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else { return };
                    let service = service_fn(|req: http::Request<hyper::body::Incoming>| async move {
                        let host = req
                            .headers()
                            .get(http::header::HOST)
                            .and_then(|h| h.to_str().ok())
                            .or(req.uri().authority().map(|a| a.as_str()))
                            .unwrap_or("")
                            .to_owned();
                        let version = format!("{:?}", req.version());
                        let response = http::Response::builder()
                            .header("x-version", version.as_str())
                            .header("x-host", host)
                            .body(Full::new(Bytes::from(format!("tls {version}\n"))))
                            .unwrap_or_default();
                        Ok::<_, Infallible>(response)
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        Ok(TlsOrigin { addr, task })
    }
}

//! The floor under wasmgate's request path: a minimal proxy on the same crates (hyper 1's
//! server through hyper-util's auto builder, HTTP/1.1 and h2c on one port, and hyper 1's
//! client), with no routing, plugins, metrics or limits; round robin over its backends on one
//! thread. Run beside nginx and wasmgate in one bench run, it shows how far the gateway's own
//! work sits above the stack it is built on (`docs/performance.md`).
//!
//! ```sh
//! cargo build --release -p wasmgate-tests --bin floor-proxy
//! target/release/floor-proxy 127.0.0.1:18087 127.0.0.1:18080 127.0.0.1:18081            # own connections
//! target/release/floor-proxy 127.0.0.1:18087 127.0.0.1:18080 127.0.0.1:18081 --pooled   # hyper-util's pool
//! ```
//!
//! Without `--pooled`, each client connection keeps its own upstream connections, one per
//! request in flight; with it, every request goes through hyper-util's pooled client, which
//! the gateway used for HTTP/1.1 upstreams before it kept its own per-backend connections.

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::rc::Rc;

use bytes::Bytes;
use http::uri::PathAndQuery;
use http::{Request, Response, Uri};
use http_body_util::BodyExt;
use http_body_util::combinators::BoxBody;
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;

type Body = BoxBody<Bytes, hyper::Error>;
/// One client connection's upstream connections, with the index of the backend of each.
type Own = RefCell<Vec<(usize, SendRequest<Body>)>>;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let pooled = args.iter().any(|a| a == "--pooled");
    let mut addrs = args.iter().filter(|a| !a.starts_with("--")).map(|a| a.parse::<SocketAddr>());
    let usage = "usage: floor-proxy LISTEN BACKEND... [--pooled]";
    let listen = addrs.next().ok_or_else(|| anyhow::anyhow!(usage))??;
    let backends: Vec<SocketAddr> = addrs.collect::<Result<_, _>>()?;
    anyhow::ensure!(!backends.is_empty(), usage);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, serve(listen, Rc::new(backends), pooled))
}

async fn serve(listen: SocketAddr, backends: Rc<Vec<SocketAddr>>, pooled: bool) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let client = pooled.then(|| {
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        Client::builder(TokioExecutor::new()).build::<_, Body>(http)
    });
    let next = Rc::new(Cell::new(0usize));
    loop {
        let (stream, _) = listener.accept().await?;
        stream.set_nodelay(true)?;
        let (backends, next, client) = (backends.clone(), next.clone(), client.clone());
        tokio::task::spawn_local(async move {
            let own: Rc<Own> = Rc::default();
            let service = service_fn(move |request: Request<Incoming>| {
                let i = next.get();
                next.set(i.wrapping_add(1));
                let index = i % backends.len();
                let backend = backends[index];
                let (client, own) = (client.clone(), own.clone());
                async move {
                    let (mut parts, body) = request.into_parts();
                    parts.version = http::Version::HTTP_11;
                    // An h2c request names its host in `:authority`; HTTP/1.1 needs Host.
                    if let Some(authority) = parts.uri.authority()
                        && !parts.headers.contains_key(http::header::HOST)
                    {
                        parts.headers.insert(http::header::HOST, authority.as_str().parse()?);
                    }
                    let path = parts.uri.path_and_query().cloned().unwrap_or(PathAndQuery::from_static("/"));
                    let response = match client {
                        Some(client) => {
                            parts.uri = Uri::builder()
                                .scheme("http")
                                .authority(backend.to_string())
                                .path_and_query(path)
                                .build()?;
                            let request = Request::from_parts(parts, body.boxed());
                            client.request(request).await?
                        }
                        None => {
                            parts.uri = Uri::from(path);
                            let request = Request::from_parts(parts, body.boxed());
                            send_own(&own, index, backend, request).await?
                        }
                    };
                    Ok::<_, anyhow::Error>(response.map(|b| b.boxed()))
                }
            });
            let _ = auto::Builder::new(Local).serve_connection(TokioIo::new(stream), service).await;
        });
    }
}

/// Sends on a ready connection of this client connection's own to `backend`, or a new one.
async fn send_own(
    own: &Own,
    index: usize,
    backend: SocketAddr,
    request: Request<Body>,
) -> anyhow::Result<Response<Incoming>> {
    let ready = {
        let mut own = own.borrow_mut();
        own.retain(|(_, s)| !s.is_closed());
        own.iter().position(|(i, s)| *i == index && s.is_ready()).map(|p| own.swap_remove(p).1)
    };
    let mut sender = match ready {
        Some(sender) => sender,
        None => {
            let stream = tokio::net::TcpStream::connect(backend).await?;
            stream.set_nodelay(true)?;
            let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
            tokio::task::spawn_local(connection);
            sender
        }
    };
    let sending = sender.send_request(request);
    own.borrow_mut().push((index, sender));
    Ok(sending.await?)
}

/// Runs hyper's connection tasks (HTTP/2 streams) on this thread: the service is not `Send`.
#[derive(Clone, Copy)]
struct Local;

impl<F: std::future::Future + 'static> hyper::rt::Executor<F> for Local {
    fn execute(&self, future: F) {
        tokio::task::spawn_local(future);
    }
}

//! A small, real HTTP/1.1 origin for wasmgate's examples and end-to-end tests.
//!
//! It speaks HTTP/1.1 and HTTP/2 with prior knowledge (h2c), answers with its own name and the
//! HTTP version it was spoken to in (`x-http-version`), and, so that a gateway's effect is
//! visible from outside:
//! - refuses with 403 any request whose Host is not the expected one (when one is set);
//! - `GET /echo-headers` answers with the request head it received, one `name: value` a line;
//! - `POST /echo` streams the request body back as it arrives;
//! - `GET /bytes/N` streams N bytes;
//! - `GET /json/N` answers about N bytes of JSON (an array of small records), with a
//!   `Content-Length` and a strong `ETag` (for compression);
//! - `GET /delay/MS` answers after MS milliseconds;
//! - `GET /slow` never answers (for timeout tests);
//! - `GET /stall` sends the headers and part of the body, then nothing more, ever;
//! - `GET /abort` sends the headers and part of the body, then breaks the connection;
//! - `GET /health` answers 200 (for health checks);
//! - gRPC (`content-type: application/grpc`): a path ending in `Unary` echoes the request's
//!   messages; one ending in `Stream` answers with three messages; both end with the
//!   `grpc-status: 0` trailer;
//! - it counts requests and keeps the last request heads it saw.

use std::convert::Infallible;
use std::future::Future as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// What the origin saw of one request.
#[derive(Debug, Clone)]
pub struct Seen {
    /// The method.
    pub method: Method,
    /// The path and query.
    pub target: String,
    /// The headers.
    pub headers: HeaderMap,
}

#[derive(Default)]
struct Shared {
    requests: AtomicUsize,
    seen: Mutex<Vec<Seen>>,
    /// Answer every request with this status (a broken backend, for tests).
    fixed_status: Option<StatusCode>,
}

/// A running origin; stops when dropped.
pub struct Origin {
    name: String,
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

/// Errors a response body may end with (only `/abort` has one, on purpose).
type BoxError = Box<dyn std::error::Error + Send + Sync>;
type Body = BoxBody<Bytes, BoxError>;

impl Origin {
    /// Starts an origin called `name` on `addr` (port 0 picks one). With `expect_host`, requests
    /// whose Host differs get 403.
    pub async fn start(name: &str, addr: SocketAddr, expect_host: Option<String>) -> std::io::Result<Origin> {
        Origin::start_with(name, addr, expect_host, Shared::default()).await
    }

    /// Starts an origin that answers every request with `status`: a broken backend.
    pub async fn start_failing(name: &str, addr: SocketAddr, status: StatusCode) -> std::io::Result<Origin> {
        Origin::start_with(name, addr, None, Shared { fixed_status: Some(status), ..Shared::default() }).await
    }

    async fn start_with(
        name: &str,
        addr: SocketAddr,
        expect_host: Option<String>,
        shared: Shared,
    ) -> std::io::Result<Origin> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(shared);
        let task = tokio::spawn(serve(listener, name.to_owned(), expect_host, shared.clone()));
        Ok(Origin { name: name.to_owned(), addr, shared, task })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The origin's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Requests served so far.
    pub fn requests(&self) -> usize {
        self.shared.requests.load(Ordering::SeqCst)
    }

    /// The request heads seen so far (the last 1000).
    pub fn seen(&self) -> Vec<Seen> {
        self.shared.seen.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Stops accepting and closes every connection.
    pub fn stop(self) {
        drop(self);
    }
}

impl Drop for Origin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(listener: TcpListener, name: String, expect_host: Option<String>, shared: Arc<Shared>) {
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        let (name, expect_host, shared) = (name.clone(), expect_host.clone(), shared.clone());
        connections.spawn(async move {
            let service = service_fn(move |req| {
                let (name, expect_host, shared) = (name.clone(), expect_host.clone(), shared.clone());
                async move {
                    let version = http::HeaderValue::from_str(&format!("{:?}", req.version()));
                    let mut response = answer(&name, expect_host.as_deref(), &shared, req).await;
                    if let Ok(version) = version {
                        response.headers_mut().insert("x-http-version", version);
                    }
                    Ok::<_, Infallible>(response)
                }
            });
            // HTTP/1.1, and HTTP/2 with prior knowledge (h2c).
            let _ = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
        while connections.try_join_next().is_some() {}
    }
}

async fn answer(
    name: &str,
    expect_host: Option<&str>,
    shared: &Shared,
    req: Request<Incoming>,
) -> Response<Body> {
    shared.requests.fetch_add(1, Ordering::SeqCst);
    let target = req.uri().path_and_query().map_or("/".to_owned(), |p| p.to_string());
    if let Ok(mut seen) = shared.seen.lock() {
        if seen.len() >= 1000 {
            seen.remove(0);
        }
        seen.push(Seen {
            method: req.method().clone(),
            target: target.clone(),
            headers: req.headers().clone(),
        });
    }
    if let Some(status) = shared.fixed_status {
        return text(name, status, format!("origin {name}: {status}\n"));
    }
    let host = req.headers().get(http::header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("");
    if let Some(expected) = expect_host
        && host != expected
    {
        return text(
            name,
            StatusCode::FORBIDDEN,
            format!("origin {name}: Host `{host}` is not `{expected}`\n"),
        );
    }
    let path = req.uri().path().to_owned();
    let grpc = req
        .headers()
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
    if grpc {
        return grpc_answer(name, &path, req).await;
    }
    match (req.method(), path.as_str()) {
        (&Method::POST, "/echo") => {
            let mut response = Response::new(req.into_body().map_err(BoxError::from).boxed());
            response.headers_mut().insert("x-origin", header(name));
            response
        }
        // The request body, split at each `|` into chunks sent 20 ms apart, as JSON: what a
        // filter that must handle a token spanning two chunks is tested with.
        (&Method::POST, "/chunks") => {
            let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
            let pieces: std::collections::VecDeque<Bytes> =
                body.split(|&b| b == b'|').map(Bytes::copy_from_slice).collect();
            let mut response = Response::new(BodyExt::boxed(Paced { pieces, pause: None }));
            response.headers_mut().insert("x-origin", header(name));
            response
                .headers_mut()
                .insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
            response
        }
        (_, "/echo-headers") => {
            let mut lines = String::new();
            for (k, v) in req.headers() {
                lines.push_str(&format!("{k}: {}\n", String::from_utf8_lossy(v.as_bytes())));
            }
            text(name, StatusCode::OK, lines)
        }
        (_, p) if p.starts_with("/delay/") => {
            let ms: u64 = p["/delay/".len()..].parse().unwrap_or(0);
            tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
            text(name, StatusCode::OK, format!("origin {name}\n"))
        }
        (_, "/stall") => {
            let mut response = Response::new(BodyExt::boxed(Stall { sent: false }));
            response.headers_mut().insert("x-origin", header(name));
            response
        }
        (_, "/abort") => {
            let pause = Box::pin(tokio::time::sleep(std::time::Duration::from_millis(50)));
            let mut response = Response::new(BodyExt::boxed(Abort { sent: false, pause }));
            response.headers_mut().insert("x-origin", header(name));
            response
        }
        (_, "/slow") => {
            std::future::pending::<()>().await;
            text(name, StatusCode::OK, String::new())
        }
        (_, p) if p.starts_with("/json/") => {
            let n: usize = p["/json/".len()..].parse().unwrap_or(0);
            let mut response = text(name, StatusCode::OK, json_of(n));
            let headers = response.headers_mut();
            headers.insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
            if let Ok(etag) = http::HeaderValue::from_str(&format!("\"json-{n}\"")) {
                headers.insert(http::header::ETAG, etag);
            }
            response
        }
        (_, p) if p.starts_with("/bytes/") => {
            let n: usize = p["/bytes/".len()..].parse().unwrap_or(0);
            let mut response = Response::new(BodyExt::boxed(Repeat {
                remaining: n,
                chunk: Bytes::from(vec![b'x'; 64 * 1024]),
            }));
            response.headers_mut().insert("x-origin", header(name));
            response
        }
        _ => text(name, StatusCode::OK, format!("origin {name}\n")),
    }
}

/// A JSON array of records, `n` bytes long give or take one record.
pub fn json_of(n: usize) -> String {
    let mut json = String::from("[");
    let mut i = 0;
    while json.len() < n.saturating_sub(1) {
        if i > 0 {
            json.push(',');
        }
        json.push_str(&format!("{{\"id\":{i},\"name\":\"item {i}\",\"in_stock\":{}}}", i % 3 == 0));
        i += 1;
    }
    json.push(']');
    json
}

fn header(value: &str) -> http::HeaderValue {
    http::HeaderValue::from_str(value).unwrap_or(http::HeaderValue::from_static("origin"))
}

fn text(name: &str, status: StatusCode, body: String) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from(body)).map_err(|never| match never {}).boxed());
    *response.status_mut() = status;
    response.headers_mut().insert("x-origin", header(name));
    response.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("text/plain"));
    response
}

/// A gRPC answer: the request's framed messages echoed (`...Unary`) or three messages
/// (`...Stream`), then the trailers.
async fn grpc_answer(name: &str, path: &str, req: Request<Incoming>) -> Response<Body> {
    let frames: Vec<Bytes> = if path.ends_with("Stream") {
        (1u8..=3).map(|i| frame(&[b'm', b'0' + i])).collect()
    } else {
        match req.into_body().collect().await {
            Ok(body) => vec![body.to_bytes()],
            Err(_) => Vec::new(),
        }
    };
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
    let mut response =
        Response::new(BodyExt::boxed(Grpc { frames: frames.into(), trailers: Some(trailers) }));
    response
        .headers_mut()
        .insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/grpc"));
    response.headers_mut().insert("x-origin", header(name));
    response
}

/// A gRPC length-prefixed message.
pub fn frame(message: &[u8]) -> Bytes {
    let mut framed = Vec::with_capacity(5 + message.len());
    framed.push(0);
    framed.extend_from_slice(&(message.len() as u32).to_be_bytes());
    framed.extend_from_slice(message);
    Bytes::from(framed)
}

/// Data frames, then trailers.
struct Grpc {
    frames: std::collections::VecDeque<Bytes>,
    trailers: Option<HeaderMap>,
}

impl http_body::Body for Grpc {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let frame = match self.frames.pop_front() {
            Some(data) => Some(Ok(Frame::data(data))),
            None => self.trailers.take().map(|t| Ok(Frame::trailers(t))),
        };
        std::task::Poll::Ready(frame)
    }
}

/// Data frames with a pause before each but the first.
struct Paced {
    pieces: std::collections::VecDeque<Bytes>,
    pause: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
}

impl http_body::Body for Paced {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if let Some(pause) = self.pause.as_mut() {
            std::task::ready!(pause.as_mut().poll(cx));
        }
        self.pause = Some(Box::pin(tokio::time::sleep(std::time::Duration::from_millis(20))));
        std::task::Poll::Ready(self.pieces.pop_front().map(|piece| Ok(Frame::data(piece))))
    }
}

/// One chunk, then silence.
struct Stall {
    sent: bool,
}

impl http_body::Body for Stall {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if std::mem::replace(&mut self.sent, true) {
            return std::task::Poll::Pending;
        }
        std::task::Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(b"partial")))))
    }
}

/// One chunk, a pause (so that the head and the chunk are on the wire), then an error: hyper
/// then closes the connection without ending the body.
struct Abort {
    sent: bool,
    pause: std::pin::Pin<Box<tokio::time::Sleep>>,
}

impl http_body::Body for Abort {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if self.sent {
            return self.pause.as_mut().poll(cx).map(|()| Some(Err("aborted on purpose".into())));
        }
        self.sent = true;
        std::task::Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(b"partial")))))
    }
}

/// `remaining` bytes of `x`, sent a chunk at a time as the client reads.
struct Repeat {
    remaining: usize,
    chunk: Bytes,
}

impl http_body::Body for Repeat {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let len = self.chunk.len().min(self.remaining);
        if len == 0 {
            return std::task::Poll::Ready(None);
        }
        self.remaining -= len;
        std::task::Poll::Ready(Some(Ok(Frame::data(self.chunk.slice(..len)))))
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(self.remaining as u64)
    }
}

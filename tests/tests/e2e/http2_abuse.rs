//! HTTP/2 from a hostile client (RFC 9113; CVE-2023-44487 rapid reset; the 2024 CONTINUATION
//! flood): a raw client writes exact frames over h2c. Malformed requests fail their own stream
//! and reach no upstream; floods end in GOAWAY or a closed connection; a well-behaved client on
//! another connection is served throughout.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use wasmgate_example_origin::Origin;
use wasmgate_tests::client;
use wasmgate_tests::harness;

const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const GOAWAY: u8 = 0x7;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const ACK: u8 = 0x1;
const END_HEADERS: u8 = 0x4;

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut out = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// A header block of literal fields, not indexed, without Huffman coding (RFC 7541 §6.2.2).
fn block(fields: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, value) in fields {
        assert!(name.len() < 127 && value.len() < 127, "short strings only");
        out.push(0x00);
        out.push(name.len() as u8);
        out.extend_from_slice(name.as_bytes());
        out.push(value.len() as u8);
        out.extend_from_slice(value.as_bytes());
    }
    out
}

fn get(path: &str) -> Vec<u8> {
    block(&[(":method", "GET"), (":scheme", "http"), (":path", path), (":authority", "gw")])
}

/// A raw h2c connection past the preface and the SETTINGS exchange, with the server's
/// SETTINGS payload.
async fn open(addr: SocketAddr) -> (TcpStream, Vec<u8>) {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let mut hello = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    hello.extend(frame(SETTINGS, 0, 0, &[]));
    stream.write_all(&hello).await.expect("preface");
    let (kind, _, _, settings) = read_frame(&mut stream).await.expect("server settings");
    assert_eq!(kind, SETTINGS);
    stream.write_all(&frame(SETTINGS, ACK, 0, &[])).await.expect("ack");
    (stream, settings)
}

/// One frame read: type, flags, stream, payload; `None` once the connection is closed.
async fn read_frame(stream: &mut TcpStream) -> Option<(u8, u8, u32, Vec<u8>)> {
    let mut head = [0u8; 9];
    stream.read_exact(&mut head).await.ok()?;
    let len = (usize::from(head[0]) << 16) | (usize::from(head[1]) << 8) | usize::from(head[2]);
    let id = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
    let mut payload = vec![0; len];
    stream.read_exact(&mut payload).await.ok()?;
    Some((head[3], head[4], id, payload))
}

/// What the server did, as frame types and streams, until `stop` says enough, the connection
/// closed, or five seconds passed.
async fn frames_until(stream: &mut TcpStream, stop: impl FnMut(u8, u32) -> bool) -> Vec<(u8, u32)> {
    watch(stream, stop).await.frames
}

/// What [`watch`] saw.
struct Watched {
    frames: Vec<(u8, u32)>,
    /// The error code of the GOAWAY, if one came.
    goaway: Option<u32>,
    /// The server closed the connection.
    closed: bool,
}

async fn watch(stream: &mut TcpStream, mut stop: impl FnMut(u8, u32) -> bool) -> Watched {
    let mut watched = Watched { frames: Vec::new(), goaway: None, closed: false };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        match tokio::time::timeout_at(deadline, read_frame(stream)).await {
            Ok(Some((kind, _, id, payload))) => {
                if kind == GOAWAY && payload.len() >= 8 {
                    watched.goaway =
                        Some(u32::from_be_bytes([payload[4], payload[5], payload[6], payload[7]]));
                }
                watched.frames.push((kind, id));
                if stop(kind, id) {
                    return watched;
                }
            }
            Ok(None) => {
                watched.closed = true;
                return watched;
            }
            Err(_) => return watched,
        }
    }
}

const PROTOCOL_ERROR: u32 = 0x1;
const ENHANCE_YOUR_CALM: u32 = 0xb;

async fn healthy(addr: SocketAddr) {
    let request = Request::get(format!("http://{addr}/x")).body(Full::new(Bytes::new())).expect("request");
    let reply = client::h2c(addr, request).await.expect("a well-behaved client");
    assert_eq!(reply.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_streams_fail_alone_and_floods_end_the_connection() {
    let origin = Origin::start("o", "127.0.0.1:0".parse().expect("addr"), None).await.expect("origin");
    let gw = harness::start(&harness::one_backend(origin.addr(), "retries = 0")).await.expect("gateway");
    let addr = gw.addrs()[0];

    // The server's SETTINGS bound the streams a client may open at once.
    let (mut stream, settings) = open(addr).await;
    let max_streams = settings
        .chunks(6)
        .find(|s| u16::from_be_bytes([s[0], s[1]]) == 0x3)
        .map(|s| u32::from_be_bytes([s[2], s[3], s[4], s[5]]));
    assert!(max_streams.is_some_and(|n| n <= 256), "SETTINGS_MAX_CONCURRENT_STREAMS {max_streams:?}");

    // Malformed requests: each fails its own stream, nothing goes upstream, and a valid
    // request on the same connection is served after them.
    let before = origin.requests();
    let mut bad = Vec::new();
    let connection_specific = [get("/a"), block(&[("connection", "keep-alive")])].concat();
    bad.extend(frame(HEADERS, END_HEADERS | END_STREAM, 1, &connection_specific));
    let post = block(&[
        (":method", "POST"),
        (":scheme", "http"),
        (":path", "/echo"),
        (":authority", "gw"),
        ("content-length", "10"),
    ]);
    bad.extend(frame(HEADERS, END_HEADERS, 5, &post));
    bad.extend(frame(DATA, END_STREAM, 5, b"abc"));
    let no_path = block(&[(":method", "GET"), (":scheme", "http"), (":authority", "gw")]);
    bad.extend(frame(HEADERS, END_HEADERS | END_STREAM, 7, &no_path));
    bad.extend(frame(HEADERS, END_HEADERS | END_STREAM, 9, &get("/x")));
    stream.write_all(&bad).await.expect("write");
    let seen = frames_until(&mut stream, |kind, id| kind == DATA && id == 9).await;
    for id in [1, 5, 7] {
        let failed = seen.iter().any(|&(kind, s)| s == id && (kind == RST_STREAM || kind == HEADERS));
        assert!(failed, "stream {id} got no answer: {seen:?}");
    }
    assert!(seen.contains(&(DATA, 9)), "the valid stream after them was not served: {seen:?}");
    assert!(!seen.iter().any(|&(kind, _)| kind == GOAWAY), "one bad stream closed the connection: {seen:?}");
    assert_eq!(origin.requests() - before, 1, "only the valid request reached the origin");

    drop(stream);

    // An upper-case field name is refused by the header decoder itself, which ends the whole
    // connection (GOAWAY, PROTOCOL_ERROR): stricter than a stream error, and nothing upstream.
    let (mut stream, _) = open(addr).await;
    let uppercase = [get("/a"), block(&[("X-Upper", "1")])].concat();
    stream.write_all(&frame(HEADERS, END_HEADERS | END_STREAM, 1, &uppercase)).await.expect("write");
    let seen = watch(&mut stream, |kind, _| kind == GOAWAY).await;
    assert_eq!(seen.goaway, Some(PROTOCOL_ERROR), "{:?}", seen.frames);
    assert_eq!(origin.requests() - before, 1, "the upper-case request reached the origin");

    drop(stream);

    // Rapid reset: streams opened and cancelled at once, by the thousand.
    let (mut stream, _) = open(addr).await;
    let mut flood = Vec::new();
    for i in 0..5000u32 {
        let id = 2 * i + 1;
        flood.extend(frame(HEADERS, END_HEADERS | END_STREAM, id, &get("/delay/50")));
        flood.extend(frame(RST_STREAM, 0, id, &8u32.to_be_bytes()));
    }
    let _ = stream.write_all(&flood).await;
    let seen = watch(&mut stream, |kind, _| kind == GOAWAY).await;
    assert_eq!(seen.goaway, Some(ENHANCE_YOUR_CALM), "after a rapid-reset flood: {:?}", seen.frames);
    healthy(addr).await;

    drop(stream);

    // CONTINUATION flood: one header block that never ends.
    let (mut stream, _) = open(addr).await;
    let _ = stream.write_all(&frame(HEADERS, 0, 1, &get("/x"))).await;
    let junk = block(&[("x-junk", &"j".repeat(100))]);
    for _ in 0..2000 {
        if stream.write_all(&frame(CONTINUATION, 0, 1, &junk)).await.is_err() {
            break;
        }
    }
    let seen = watch(&mut stream, |kind, _| kind == GOAWAY).await;
    assert!(seen.goaway.is_some() || seen.closed, "the connection went on after an endless header block");
    healthy(addr).await;

    drop(stream);

    // PING and SETTINGS floods: answered or cut off, never a stall for others.
    for (kind, payload) in [(PING, vec![0u8; 8]), (SETTINGS, vec![])] {
        let (mut stream, _) = open(addr).await;
        let one = frame(kind, 0, 0, &payload);
        let flood: Vec<u8> = (0..20_000).flat_map(|_| one.clone()).collect();
        let writing = tokio::spawn(async move {
            let _ = stream.write_all(&flood).await;
            stream
        });
        healthy(addr).await;
        let _ = tokio::time::timeout(Duration::from_secs(10), writing).await;
    }
    healthy(addr).await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_sends_goaway_and_lets_the_stream_in_flight_finish() {
    let origin = Origin::start("o", "127.0.0.1:0".parse().expect("addr"), None).await.expect("origin");
    let gw = harness::start(&harness::one_backend(origin.addr(), "")).await.expect("gateway");
    let addr = gw.addrs()[0];
    let (mut stream, _) = open(addr).await;
    stream.write_all(&frame(HEADERS, END_HEADERS | END_STREAM, 1, &get("/delay/500"))).await.expect("write");
    // Wait until the request is in flight, then shut down.
    harness::wait_until("the request reaches the origin", || origin.requests() == 1).await;
    let stopping = tokio::spawn(gw.stop());
    let mut seen = Vec::new();
    let mut ended = false;
    while let Ok(Some((kind, flags, id, _))) =
        tokio::time::timeout(Duration::from_secs(10), read_frame(&mut stream)).await
    {
        seen.push((kind, id));
        if id == 1 && flags & END_STREAM != 0 {
            ended = true;
            break;
        }
    }
    let goaway = seen.iter().position(|&(kind, _)| kind == GOAWAY);
    let answer = seen.iter().position(|&(kind, id)| kind == HEADERS && id == 1);
    assert!(goaway.is_some() && answer.is_some() && ended, "{seen:?}");
    assert!(goaway < answer, "GOAWAY came after the answer, not at the shutdown: {seen:?}");
    drop(stream);
    stopping.await.expect("stopped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_http2_connection_gets_goaway() {
    let origin = Origin::start("o", "127.0.0.1:0".parse().expect("addr"), None).await.expect("origin");
    let toml = harness::one_backend(origin.addr(), "").raw("[server]\nidle_timeout = \"300ms\"");
    let gw = harness::start(&toml).await.expect("gateway");
    let (mut stream, _) = open(gw.addrs()[0]).await;
    stream.write_all(&frame(HEADERS, END_HEADERS | END_STREAM, 1, &get("/x"))).await.expect("write");
    let started = std::time::Instant::now();
    let seen = frames_until(&mut stream, |kind, _| kind == GOAWAY).await;
    assert!(seen.contains(&(HEADERS, 1)), "the request was not answered: {seen:?}");
    assert_eq!(seen.last(), Some(&(GOAWAY, 0)), "no GOAWAY once idle: {seen:?}");
    assert!(started.elapsed() >= Duration::from_millis(250), "GOAWAY after {:?}", started.elapsed());
    drop(stream);
    gw.stop().await;
}

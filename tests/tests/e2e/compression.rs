//! Response compression through the gateway against a real origin: the coding negotiated
//! from `Accept-Encoding`, the head it changes (`Content-Encoding`, `Vary`, no
//! `Content-Length`, a weak `ETag`), the responses left alone, a stream compressed as it
//! arrives, the bytes counted in `/metrics`, a cached body compressed once per coding, and a
//! bad `compress` refused by name.

use bytes::Bytes;
use compression_codecs::core::util::{PartialBuffer, WriteBuffer};
use compression_codecs::{BrotliDecoder, DecodeV2, GzipDecoder, ZstdDecoder};
use http::Request;
use http_body_util::{BodyExt, Full};
use wasmgate_example_origin::{Origin, json_of};
use wasmgate_tests::client::{self, Reply};
use wasmgate_tests::harness::{self, Toml};

async fn gateway(compress: &str) -> (Origin, wasmgate::server::Running) {
    let o = Origin::start("o", "127.0.0.1:0".parse().expect("addr"), None).await.expect("origin");
    let gw = harness::start(
        &Toml::new()
            .listener()
            .raw("[admin]")
            .raw(r#"address = "127.0.0.1:0""#)
            .upstream("o", &[o.addr()])
            .route("o")
            .raw(r#"path = "/json/65537""#)
            .raw(r#"response_headers = { set = { cache-control = "no-transform" } }"#)
            .raw(&format!("compress = {compress}"))
            .route("o")
            .raw(r#"path = "/json/65538""#)
            .raw(r#"response_headers = { set = { content-encoding = "br" } }"#)
            .raw(&format!("compress = {compress}"))
            .route("o")
            .raw(r#"name = "api""#)
            .raw(&format!("compress = {compress}")),
    )
    .await
    .expect("gateway");
    (o, gw)
}

async fn get(gw: &wasmgate::server::Running, path: &str, accept: Option<&str>) -> Reply {
    let headers: Vec<(&str, &str)> = accept.iter().map(|a| ("accept-encoding", *a)).collect();
    client::get(gw.addrs()[0], path, &headers).await.expect("request")
}

/// Decodes all of `bytes`, sent with `coding`.
fn decode(coding: &str, bytes: &[u8]) -> Vec<u8> {
    let mut decoder: Box<dyn DecodeV2> = match coding {
        "gzip" => Box::new(GzipDecoder::new()),
        "br" => Box::new(BrotliDecoder::new()),
        "zstd" => Box::new(ZstdDecoder::new()),
        other => panic!("no decoder for {other}"),
    };
    let mut input = PartialBuffer::new(bytes);
    let (mut plain, mut window) = (Vec::new(), vec![0; 1 << 16]);
    loop {
        let mut output = WriteBuffer::new_initialized(&mut window);
        let done = decoder.decode(&mut input, &mut output).expect("decodes");
        let full = output.written_len() == output.capacity();
        plain.extend_from_slice(output.written());
        // A prefix of a stream ends with the input, once the decoder has given all it holds.
        if done || (input.unwritten().is_empty() && !full) {
            return plain;
        }
    }
}

#[tokio::test]
async fn responses_are_compressed_with_the_coding_the_client_prefers() {
    let (_o, gw) = gateway("{}").await;
    let json = json_of(64 << 10);
    for (accept, coding) in [
        ("gzip", "gzip"),
        ("gzip;q=0.1, br;q=0.5, zstd;q=0.9", "zstd"),
        ("br, gzip;q=0.8", "br"),
        ("*", "zstd"),
        ("zstd;q=0, *;q=0.5", "br"),
    ] {
        let reply = get(&gw, "/json/65536", Some(accept)).await;
        assert_eq!(reply.status, 200);
        assert_eq!(reply.header("content-encoding"), coding, "Accept-Encoding: {accept}");
        assert!(reply.header("vary").to_ascii_lowercase().contains("accept-encoding"));
        assert_eq!(reply.header("content-length"), "", "the compressed length is not the origin's");
        assert_eq!(reply.header("etag"), r#"W/"json-65536""#, "the validator is weakened");
        assert!(reply.body.len() < json.len() / 4, "{coding}: {} bytes of {}", reply.body.len(), json.len());
        assert!(decode(coding, &reply.body) == json.as_bytes(), "{coding} decodes to the origin's body");
    }
    gw.stop().await;
}

#[tokio::test]
async fn responses_are_left_alone_when_the_client_or_the_response_says_so() {
    let (_o, gw) = gateway("{ algorithms = [\"gzip\"] }").await;
    let untouched = |reply: &Reply, why: &str| {
        assert_eq!(reply.status, 200, "{why}");
        assert_eq!(reply.header("content-encoding"), "", "{why}");
    };
    for accept in [None, Some("identity"), Some("br, zstd"), Some("gzip;q=0")] {
        let reply = get(&gw, "/json/4096", accept).await;
        untouched(&reply, &format!("Accept-Encoding: {accept:?}"));
        assert_eq!(reply.header("content-length"), reply.body.len().to_string());
        assert!(
            reply.header("vary").to_ascii_lowercase().contains("accept-encoding"),
            "it varies on it all the same"
        );
        assert_eq!(reply.header("etag"), r#""json-4096""#);
    }
    // Too small to be worth it (the origin's `origin o\n`), a type not listed, no-transform,
    // already encoded, and HEAD.
    untouched(&get(&gw, "/hello", Some("gzip")).await, "a small body");
    let binary = get(&gw, "/bytes/65536", Some("gzip")).await;
    untouched(&binary, "a type not listed");
    assert_eq!(binary.body.len(), 65536);
    let kept = get(&gw, "/json/65537", Some("gzip")).await;
    untouched(&kept, "no-transform");
    assert!(kept.body == json_of(65537).as_bytes());
    let encoded = get(&gw, "/json/65538", Some("gzip")).await;
    assert_eq!(encoded.header("content-encoding"), "br", "already encoded: passed through");
    assert!(encoded.body == json_of(65538).as_bytes(), "not encoded again");
    let head = Request::head(format!("http://{}/json/65536", gw.addrs()[0]))
        .header("accept-encoding", "gzip")
        .body(Full::<Bytes>::default())
        .expect("request");
    untouched(&client::send(&client::http1(), head).await.expect("HEAD"), "HEAD");
    gw.stop().await;
}

#[tokio::test]
async fn a_stream_is_compressed_as_it_arrives_and_counted() {
    let (_o, gw) = gateway("{ algorithms = [\"gzip\"], min_size = 0 }").await;
    // The origin sends each `|`-separated piece 20 ms after the last.
    let pieces: Vec<String> = (0..6).map(|_| json_of(3000)).collect();
    let request = Request::post(format!("http://{}/chunks", gw.addrs()[0]))
        .header("accept-encoding", "gzip")
        .body(Full::new(Bytes::from(pieces.join("|"))))
        .expect("request");
    let response = client::http1().request(request).await.expect("response");
    assert_eq!(response.headers()["content-encoding"], "gzip");
    let mut body = response.into_body();
    let mut frames = Vec::new();
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.expect("frame").into_data() {
            frames.push(data);
        }
    }
    // What had arrived was flushed when the origin paused: the first frame alone decodes to the
    // first pieces, before the rest was sent. (On a busy machine two pieces may meet in one.)
    let whole = pieces.concat().into_bytes();
    let first = decode("gzip", &frames[0]);
    assert!(frames.len() >= 2, "{} frames", frames.len());
    assert!(!first.is_empty() && first.len() < whole.len() && whole.starts_with(&first));
    assert_eq!(first.len() % pieces[0].len(), 0, "the first frame ends where a piece does");
    assert_eq!(decode("gzip", &frames.concat()), whole);

    let metrics =
        client::get(gw.admin_addr().expect("admin"), "/metrics", &[]).await.expect("metrics").text();
    let counted = |direction: &str| -> f64 {
        let series = format!(
            r#"wasmgate_compression_bytes_total{{route="api",algorithm="gzip",direction="{direction}"}} "#
        );
        metrics.lines().find_map(|l| l.strip_prefix(&series)?.parse().ok()).unwrap_or(0.0)
    };
    assert_eq!(counted("in"), pieces.concat().len() as f64);
    assert!(counted("out") > 0.0 && counted("out") < counted("in"), "{metrics}");
    gw.stop().await;
}

#[tokio::test]
async fn a_cached_response_is_compressed_once_per_coding_and_kept_with_its_entry() {
    let o = Origin::start("o", "127.0.0.1:0".parse().expect("addr"), None).await.expect("origin");
    let gw = harness::start(
        &Toml::new()
            .listener()
            .raw("[admin]")
            .raw(r#"address = "127.0.0.1:0""#)
            .upstream("o", &[o.addr()])
            .route("o")
            .raw(r#"name = "api""#)
            .raw("compress = {}")
            .raw(r#"cache = { default_ttl = "1m" }"#),
    )
    .await
    .expect("gateway");
    let held = || async {
        let text =
            client::get(gw.admin_addr().expect("admin"), "/metrics", &[]).await.expect("metrics").text();
        text.lines()
            .find_map(|l| l.strip_prefix(r#"wasmgate_cache_bytes{name="api"} "#)?.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let json = json_of(64 << 10);
    let miss = get(&gw, "/json/65536", Some("gzip")).await;
    assert_eq!(miss.header("cache-status"), "wasmgate; fwd=miss; stored");
    assert!(decode("gzip", &miss.body) == json.as_bytes(), "the miss streams compressed");
    let plain_only = held().await;
    for coding in ["gzip", "zstd", "gzip"] {
        let hit = get(&gw, "/json/65536", Some(coding)).await;
        assert!(hit.header("cache-status").starts_with("wasmgate; hit"), "{}", hit.header("cache-status"));
        assert_eq!(hit.header("content-encoding"), coding);
        // Compressed whole, so its length is known.
        assert_eq!(hit.header("content-length"), hit.body.len().to_string());
        assert_eq!(hit.header("etag"), r#"W/"json-65536""#);
        assert!(decode(coding, &hit.body) == json.as_bytes(), "{coding} decodes to the origin's body");
    }
    let with_copies = held().await;
    assert!(with_copies > plain_only, "the copies are weighed: {plain_only} then {with_copies} bytes");
    let plain = get(&gw, "/json/65536", None).await;
    assert_eq!((plain.header("content-encoding"), plain.body.len()), ("", json.len()));
    gw.stop().await;
}

#[test]
fn a_bad_compress_table_is_refused_by_field() {
    for (compress, field, reason) in [
        ("{ gzip_level = 12 }", "routes[0].compress.gzip_level", "not a level from 1 to 9"),
        ("{ algorithms = [] }", "routes[0].compress.algorithms", "at least one"),
        ("{ algorithms = [\"gzip\", \"gzip\"] }", "routes[0].compress.algorithms", "twice"),
        ("{ types = [\"json\"] }", "routes[0].compress.types", "`json` is not"),
        ("{ algorithms = [\"lzma\"] }", "compress.algorithms", "lzma"),
        ("{ level = 3 }", "compress", "level"),
    ] {
        let toml =
            harness::one_backend("127.0.0.1:9".parse().expect("addr"), &format!("compress = {compress}"));
        let error = harness::config(&toml).expect_err(compress).to_string();
        assert!(error.contains(field) && error.contains(reason), "{compress}: {error}");
    }
}

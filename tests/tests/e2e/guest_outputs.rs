//! Fuzzing what plugins hand the host: the `chaos` guest returns arbitrary values from every
//! phase and passes arbitrary arguments to every host call, drawn from the request's seed,
//! through the real gateway and a real origin. Whatever it does, the gateway neither panics
//! nor hangs, each request gets a documented answer, and requests that do not run the guest
//! are served as usual.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use wasmgate_example_origin::Origin;
use wasmgate_tests::client;
use wasmgate_tests::harness::{self, Toml};
use wasmgate_tests::wasm;

/// The kinds `docs/errors.md` documents.
fn documented_kinds() -> BTreeSet<String> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/errors.md");
    let text = std::fs::read_to_string(path).expect("docs/errors.md");
    text.lines()
        .filter_map(|line| line.strip_prefix("| `"))
        .flat_map(|line| {
            line.split(" |").next().unwrap_or("").split(", ").map(|k| k.trim_matches('`').to_owned())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arbitrary_plugin_outputs_get_documented_answers() {
    let env =
        |name: &str, default: u64| std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default);
    // `WASMGATE_FUZZ_FIRST` replays from a seed a failure named.
    let (first, cases) = (env("WASMGATE_FUZZ_FIRST", 0), env("WASMGATE_FUZZ_CASES", 150));
    let panics = harness::count_gateway_panics();
    let origin = Origin::start("o", "127.0.0.1:0".parse().expect("addr"), None).await.expect("origin");
    let toml = Toml::new()
        .listener()
        .upstream("o", &[origin.addr()])
        .route("o")
        .raw("path_prefix = \"/plain\"")
        .route("o")
        .raw("path_prefix = \"/buffered\"\nplugins = [\"chaos\"]\nrequest_buffer = \"64KiB\"\nretries = 1")
        .route("o")
        .raw("plugins = [\"chaos\"]\nretries = 1")
        .plugin("chaos", wasm::CHAOS, "{ seed = 7 }")
        // Generous: a busy machine must not make the deadline the only fault found.
        .raw("deadline = \"1s\"\ninstances = 4");
    let gw = harness::start(&toml).await.expect("gateway");
    let addr = gw.addrs()[0];
    let kinds = documented_kinds();
    let connect = || async move {
        let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let (sender, conn) =
            hyper::client::conn::http1::handshake::<_, Full<Bytes>>(hyper_util::rt::TokioIo::new(stream))
                .await
                .expect("handshake");
        tokio::spawn(conn);
        sender
    };
    let mut sender = connect().await;
    // What this client connection carried, for the report if a request hangs.
    let mut history: Vec<String> = Vec::new();
    let started = Instant::now();
    let mut tally = BTreeMap::<String, usize>::new();
    for seed in first..first + cases {
        let (method, path, body) = match seed % 4 {
            0 => ("GET", "/echo", Bytes::new()),
            1 => ("POST", "/buffered/echo", Bytes::from(vec![b'b'; 300])),
            2 => ("POST", "/echo", Bytes::from(vec![b's'; 100_000])),
            _ => ("HEAD", "/", Bytes::new()),
        };
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header("host", "gw")
            .header("x-chaos-seed", seed.to_string())
            .body(Full::new(body))
            .expect("request");
        let within = Duration::from_secs(15);
        // One connection, until the gateway closes it: each request goes on the connection
        // the last one left, as a browser's would.
        let ready = tokio::time::timeout(within, sender.ready()).await;
        assert!(ready.is_ok(), "seed {seed}: the connection is neither ready nor closed: {history:#?}");
        if ready.is_ok_and(|r| r.is_err()) {
            sender = connect().await;
            history.clear();
        }
        history.push(format!("{seed} {method} {path}"));
        let answer = tokio::time::timeout(within, async {
            let response = sender.send_request(request).await?;
            let (parts, body) = response.into_parts();
            let body = http_body_util::BodyExt::collect(body).await?.to_bytes();
            Ok::<_, hyper::Error>((parts, body))
        })
        .await
        .unwrap_or_else(|_| {
            panic!("seed {seed}: no answer within {within:?}; the connection carried {history:#?}")
        });
        let outcome = match answer {
            Ok((parts, body)) => {
                let kind = parts
                    .headers
                    .get("x-wasmgate-error")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_owned();
                if let Some(last) = history.last_mut() {
                    last.push_str(&format!(" → {} {:?} {} bytes", parts.status, parts.headers, body.len()));
                }
                assert!(kind.is_empty() || kinds.contains(&kind), "seed {seed}: undocumented kind {kind:?}");
                if kind.is_empty() { format!("{}xx", parts.status.as_u16() / 100) } else { kind }
            }
            // A plugin that breaks a response after its head went out cuts it short.
            Err(_) => "cut".to_owned(),
        };
        *tally.entry(outcome).or_default() += 1;
        if seed % 10 == 9 {
            let plain = client::get(addr, "/plain/x", &[]).await.expect("plain request");
            assert_eq!(plain.status, 200, "seed {seed}: a request without the guest");
        }
    }
    eprintln!("{cases} chaos requests in {:.1} s: {tally:?}", started.elapsed().as_secs_f64());
    assert_eq!(panics.load(Ordering::SeqCst), 0, "the gateway panicked");
    assert!(tally.keys().any(|k| k.starts_with("plugin-")), "no plugin fault at all: {tally:?}");
    gw.stop().await;
}

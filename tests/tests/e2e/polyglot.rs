//! The example plugins of `examples/plugins/`, the same two in Rust, Python and JavaScript, end
//! to end through the gateway: add-header, and quota (the shared store and per-request state).
//! The Python and JavaScript components are built here by the SDKs' build scripts.

use std::net::SocketAddr;

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use wasmgate::server::Running;
use wasmgate_example_origin::Origin;
use wasmgate_tests::client::{self, Reply};
use wasmgate_tests::harness;
use wasmgate_tests::polyglot::{self, Language};
use wasmgate_tests::wasm;

/// The component of `example` in `language` (`rust`, `python` or `js`).
fn component(example: &str, language: &str) -> String {
    let built = match language {
        "rust" => {
            return if example == "quota" { wasm::EXAMPLE_QUOTA } else { wasm::EXAMPLE_ADD_HEADER }
                .to_owned();
        }
        "python" => polyglot::example(example, Language::Python),
        _ => polyglot::example(example, Language::Js),
    };
    built.expect("the example builds").display().to_string()
}

const LANGUAGES: [&str; 3] = ["rust", "python", "js"];

async fn gateway(backend: SocketAddr, path: &str, config: &str) -> anyhow::Result<Running> {
    let toml =
        harness::one_backend(backend, r#"plugins = ["p"]"#).plugin("p", path, config).raw("instances = 2");
    harness::start(&toml).await
}

async fn get(gw: &Running, path: &str, headers: &[(&str, &str)]) -> Reply {
    let mut request = Request::builder().uri(format!("http://{}{path}", gw.addrs()[0]));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request.body(Full::new(Bytes::new())).expect("request");
    client::send(&client::http1(), request).await.expect("response")
}

#[tokio::test]
async fn add_header_sets_the_configured_headers_in_every_language() {
    let origin = Origin::start("o", "127.0.0.1:0".parse().expect("addr"), None).await.expect("origin");
    for language in LANGUAGES {
        let config =
            format!(r#"{{ request = {{ "X-Lang" = "{language}" }}, response = {{ "x-added" = "yes" }} }}"#);
        let gw = gateway(origin.addr(), &component("add-header", language), &config).await.expect(language);
        let reply = get(&gw, "/echo-headers", &[]).await;
        assert_eq!((reply.status.as_u16(), reply.header("x-added")), (200, "yes"), "{language}");
        let body = String::from_utf8_lossy(&reply.body).to_string();
        assert!(body.contains(&format!("x-lang: {language}")), "{language}: the origin saw\n{body}");
        gw.stop().await;
    }
}

#[tokio::test]
async fn quota_counts_each_client_in_the_store_and_answers_429_past_its_limit_in_every_language() {
    let origin = Origin::start("o", "127.0.0.1:0".parse().expect("addr"), None).await.expect("origin");
    for language in LANGUAGES {
        let config = r#"{ limit = 2, window_ms = 600000, key_header = "x-api-key" }"#;
        let gw = gateway(origin.addr(), &component("quota", language), config).await.expect(language);
        let alpha = [("x-api-key", "alpha")];
        // Two instances share the count: it lives in the store, the remainder in the request's state.
        for remaining in ["1", "0"] {
            let reply = get(&gw, "/", &alpha).await;
            assert_eq!(
                (reply.status.as_u16(), reply.header("x-quota-remaining")),
                (200, remaining),
                "{language}"
            );
        }
        let refused = get(&gw, "/", &alpha).await;
        assert_eq!((refused.status.as_u16(), refused.header("x-quota-remaining")), (429, "0"), "{language}");
        let retry_after: u64 = refused.header("retry-after").parse().expect("Retry-After in seconds");
        assert!((1..=600).contains(&retry_after), "{language}: {retry_after}");
        assert_eq!(refused.body, "quota exceeded\n", "{language}");
        let beta = get(&gw, "/", &[("x-api-key", "beta")]).await;
        assert_eq!(
            (beta.status.as_u16(), beta.header("x-quota-remaining")),
            (200, "1"),
            "{language}: another client"
        );
        gw.stop().await;
    }
}

#[tokio::test]
async fn a_config_that_does_not_fit_is_refused_naming_the_field_in_every_language() {
    let origin = Origin::start("o", "127.0.0.1:0".parse().expect("addr"), None).await.expect("origin");
    let cases = [
        ("{ window_ms = 10 }", ["missing field `limit`"; 3]),
        (r#"{ limit = 2, windows = 1 }"#, ["unknown field `windows`"; 3]),
        (
            r#"{ limit = "many" }"#,
            ["invalid type: string \"many\"", "`limit` must be an integer", "`limit` must be a number"],
        ),
        ("{ limit = 0 }", ["`limit` and `window_ms` must be at least 1"; 3]),
    ];
    for (config, expected) in cases {
        for (language, expected) in LANGUAGES.into_iter().zip(expected) {
            let error = gateway(origin.addr(), &component("quota", language), config)
                .await
                .map(|_| ())
                .expect_err("refused");
            let message = format!("{error:#}");
            assert!(
                message.contains("plugins.p") || message.contains("plugin \"p\"") || message.contains("`p`"),
                "{language}: {message}"
            );
            assert!(message.contains(expected), "{language}, {config}: {message}");
        }
    }
}

#[tokio::test]
async fn an_exception_escaping_a_phase_fails_only_its_request_and_keeps_the_instance() {
    let origin = Origin::start("o", "127.0.0.1:0".parse().expect("addr"), None).await.expect("origin");
    // The host refuses a header value holding a line feed: the SDK's `set_header` raises, the
    // phase lets it escape, and the request fails per the plugin's policy (fail-closed: 500).
    for language in ["python", "js"] {
        let config = r#"{ response = { "x-bad" = "a\nb" } }"#;
        let gw = gateway(origin.addr(), &component("add-header", language), config).await.expect(language);
        for _ in 0..3 {
            let reply = get(&gw, "/", &[]).await;
            assert_eq!(
                (reply.status.as_u16(), reply.header("x-wasmgate-error")),
                (500, "plugin-invalid-value"),
                "{language}"
            );
        }
        let stats = gw.gateway().plugin("p").expect("loaded").stats();
        assert_eq!((stats.traps, stats.instances_discarded), (0, 0), "{language}: no instance was lost");
        gw.stop().await;
    }
}

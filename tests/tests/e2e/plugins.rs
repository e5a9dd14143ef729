//! The first-party plugins end to end, each in a real gateway in front of real local servers:
//! rate-limit, cors, request-id, jwt-auth, body-redact and ext-authz.

use std::net::SocketAddr;

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use wasmgate::server::Running;
use wasmgate_example_origin::Origin;
use wasmgate_tests::client::{self, Reply};
use wasmgate_tests::harness::{self, Toml};
use wasmgate_tests::wasm;

async fn origin() -> Origin {
    Origin::start("o", "127.0.0.1:0".parse().expect("addr"), None).await.expect("origin")
}

/// A gateway in front of `backend` whose one route runs the plugins of `chain` (a TOML list),
/// which `plugins` declares.
async fn gateway(backend: SocketAddr, chain: &str, plugins: impl FnOnce(Toml) -> Toml) -> Running {
    let toml = harness::one_backend(backend, &format!("plugins = [{chain}]"));
    harness::start(&plugins(toml)).await.expect("gateway")
}

async fn send(gw: &Running, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Reply {
    let mut request = Request::builder().method(method).uri(format!("http://{}{path}", gw.addrs()[0]));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request.body(Full::new(Bytes::copy_from_slice(body))).expect("request");
    client::send(&client::http1(), request).await.expect("response")
}

#[tokio::test]
async fn rate_limit_answers_429_past_the_burst_and_shares_the_count_across_instances() {
    let o = origin().await;
    // A fresh instance for every call: the count can only live in the shared store.
    let gw = gateway(o.addr(), r#""limit""#, |toml| {
        toml.plugin("limit", wasm::RATE_LIMIT, r#"{ rate = 0.01, burst = 3, key = "header:x-api-key" }"#)
            .raw(r#"isolation = "per-request""#)
            .raw("instances = 4")
    })
    .await;
    for i in 0..3 {
        assert_eq!(send(&gw, "GET", "/", &[("x-api-key", "alpha")], b"").await.status, 200, "request {i}");
    }
    let limited = send(&gw, "GET", "/", &[("x-api-key", "alpha")], b"").await;
    assert_eq!(limited.status, 429);
    let retry_after: u64 = limited.header("retry-after").parse().expect("Retry-After in seconds");
    assert!(retry_after >= 1, "{retry_after}");
    assert_eq!(send(&gw, "GET", "/", &[("x-api-key", "beta")], b"").await.status, 200, "another key");
    assert_eq!(send(&gw, "GET", "/", &[], b"").await.status, 200, "no key: allowed by default");
    gw.stop().await;
}

#[tokio::test]
async fn cors_answers_preflights_and_marks_allowed_responses() {
    let o = origin().await;
    let gw = gateway(o.addr(), r#""cors""#, |toml| {
        toml.plugin("cors", wasm::CORS, r#"{ allow_origins = ["https://app.test"], max_age = 600 }"#)
    })
    .await;
    let preflight = [("origin", "https://app.test"), ("access-control-request-method", "POST")];
    let reply = send(&gw, "OPTIONS", "/items", &preflight, b"").await;
    assert_eq!(reply.status, 204);
    assert_eq!(reply.header("access-control-allow-origin"), "https://app.test");
    assert!(reply.header("access-control-allow-methods").contains("POST"));
    assert_eq!(reply.header("access-control-max-age"), "600");

    let foreign = [("origin", "https://evil.test"), ("access-control-request-method", "POST")];
    assert_eq!(send(&gw, "OPTIONS", "/items", &foreign, b"").await.status, 403);

    let reply = send(&gw, "GET", "/", &[("origin", "https://app.test")], b"").await;
    assert_eq!((reply.status.as_u16(), reply.header("x-origin")), (200, "o"));
    assert_eq!(reply.header("access-control-allow-origin"), "https://app.test");
    assert!(reply.header("vary").to_ascii_lowercase().contains("origin"));
    let reply = send(&gw, "GET", "/", &[("origin", "https://evil.test")], b"").await;
    assert_eq!((reply.status.as_u16(), reply.header("access-control-allow-origin")), (200, ""));
    gw.stop().await;
}

#[tokio::test]
async fn request_id_is_propagated_or_made_and_visible_in_the_log_phase() {
    let o = origin().await;
    let gw = gateway(o.addr(), r#""request-id", "tracer""#, |toml| {
        toml.plugin("request-id", wasm::REQUEST_ID, "").plugin("tracer", wasm::TRACER, "")
    })
    .await;
    let reply =
        send(&gw, "GET", "/echo-headers", &[("x-request-id", "abc-123"), ("x-trace-id", "kept")], b"").await;
    assert_eq!(reply.header("x-request-id"), "abc-123");
    assert!(reply.text().contains("x-request-id: abc-123\n"), "{}", reply.text());

    let reply = send(&gw, "GET", "/echo-headers", &[("x-trace-id", "made")], b"").await;
    let id = reply.header("x-request-id").to_owned();
    assert_eq!(id.len(), 36, "a UUID: {id}");
    assert!(reply.text().contains(&format!("x-request-id: {id}\n")), "the upstream got the same id");
    let record = harness::tracer_record(&gw, "made").await;
    assert!(record.contains(&format!("|id={id}|")), "{record}");
    gw.stop().await;
}

mod jwt {
    //! Tokens made in the test: HS256 with a shared secret, RS256 with a key generated here.

    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use hmac::Mac;
    use rsa::pkcs1v15::SigningKey;
    use rsa::pkcs8::{EncodePublicKey, LineEnding};
    use rsa::signature::{SignatureEncoding, Signer};

    pub(super) fn now() -> u64 {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs()
    }

    fn unsigned(alg: &str, claims: &serde_json::Value) -> String {
        let header = serde_json::json!({ "alg": alg, "typ": "JWT" });
        format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        )
    }

    pub(super) fn hs256(secret: &[u8], claims: &serde_json::Value) -> String {
        let input = unsigned("HS256", claims);
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret).expect("key");
        mac.update(input.as_bytes());
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes()))
    }

    pub(super) fn none(claims: &serde_json::Value) -> String {
        format!("{}.", unsigned("none", claims))
    }

    pub(super) struct RsaKey(rsa::RsaPrivateKey);

    impl RsaKey {
        pub(super) fn generate() -> Self {
            RsaKey(rsa::RsaPrivateKey::new(&mut rand::thread_rng(), 2048).expect("key"))
        }

        pub(super) fn public_pem(&self) -> String {
            self.0.to_public_key().to_public_key_pem(LineEnding::LF).expect("pem")
        }

        pub(super) fn rs256(&self, claims: &serde_json::Value) -> String {
            let input = unsigned("RS256", claims);
            let signer = SigningKey::<sha2::Sha256>::new(self.0.clone());
            let signature = signer.sign(input.as_bytes());
            format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature.to_bytes()))
        }
    }
}

#[tokio::test]
async fn jwt_auth_accepts_valid_hs256_and_rs256_tokens_and_says_why_it_refuses() {
    let o = origin().await;
    let key = jwt::RsaKey::generate();
    let other = jwt::RsaKey::generate();
    let pem = key.public_pem().replace('\n', "\\n");
    let gw = gateway(
        o.addr(),
        r#""jwt""#,
        |toml| {
            let config = format!(
                r#"{{ hs256_secret = "s3cret", rs256_public_key = "{pem}", audience = "api", claims_to_headers = {{ sub = "x-user" }} }}"#
            );
            toml.plugin("jwt", wasm::JWT_AUTH, &config)
        },
    )
    .await;
    let now = jwt::now();
    let claims = serde_json::json!({ "sub": "alice", "aud": "api", "exp": now + 300 });
    let bearer = |token: &str| format!("Bearer {token}");

    for token in [jwt::hs256(b"s3cret", &claims), key.rs256(&claims)] {
        let reply = send(&gw, "GET", "/echo-headers", &[("authorization", &bearer(&token))], b"").await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        assert!(reply.text().contains("x-user: alice\n"), "{}", reply.text());
    }

    let expired = serde_json::json!({ "sub": "alice", "aud": "api", "exp": now - 3600 });
    let wrong_audience = serde_json::json!({ "sub": "alice", "aud": "other", "exp": now + 300 });
    let cases = [
        (None, "missing bearer token"),
        (Some(jwt::hs256(b"wrong", &claims)), "bad signature"),
        (Some(other.rs256(&claims)), "bad signature"),
        (Some(jwt::hs256(b"s3cret", &expired)), "token expired"),
        (Some(jwt::hs256(b"s3cret", &wrong_audience)), "wrong audience"),
        (Some(jwt::none(&claims)), "unsupported algorithm"),
        (Some("not-a-jwt".to_owned()), "malformed token"),
    ];
    for (token, reason) in cases {
        let headers: Vec<(&str, String)> = token.iter().map(|t| ("authorization", bearer(t))).collect();
        let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        let reply = send(&gw, "GET", "/", &headers, b"").await;
        assert_eq!(reply.status, 401, "{reason}");
        assert!(reply.text().contains(reason), "{reason}: {}", reply.text());
        assert!(reply.header("www-authenticate").starts_with("Bearer"), "{reason}");
    }
    gw.stop().await;
}

#[tokio::test]
async fn body_redact_replaces_fields_even_when_they_span_chunks() {
    let o = origin().await;
    let gw = gateway(o.addr(), r#""redact""#, |toml| {
        toml.plugin("redact", wasm::BODY_REDACT, r#"{ fields = ["password", "ssn"] }"#)
    })
    .await;
    // The origin sends the body in pieces split at each `|`: a key and a value span chunks.
    let body = br#"{"user":"ann","pass|word":"hun|ter2","nested":{"ssn":12|3456789},"note":"password"}"#;
    let reply = send(&gw, "POST", "/chunks", &[], body).await;
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.text(),
        r#"{"user":"ann","password":"[REDACTED]","nested":{"ssn":"[REDACTED]"},"note":"password"}"#
    );
    gw.stop().await;
}

/// An authorisation service: allows `Bearer good` (naming the user), denies the rest.
async fn authz_service() -> SocketAddr {
    use hyper::service::service_fn;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let service = service_fn(|request: Request<hyper::body::Incoming>| async move {
                let good = request.headers().get("authorization").is_some_and(|v| v == "Bearer good");
                let path_seen = request.headers().get("x-original-path").is_some();
                let response = if good && path_seen {
                    http::Response::builder()
                        .status(200)
                        .header("x-user", "alice")
                        .body(Full::new(Bytes::new()))
                } else {
                    http::Response::builder()
                        .status(403)
                        .body(Full::new(Bytes::from_static(b"denied by policy")))
                };
                Ok::<_, std::convert::Infallible>(response.expect("response"))
            });
            tokio::spawn(async move {
                let io = hyper_util::rt::TokioIo::new(stream);
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, service).await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn ext_authz_allows_and_denies_by_asking_a_real_service() {
    let o = origin().await;
    let authz = authz_service().await;
    let closed = harness::closed_port();
    let gw = harness::start(
        &Toml::new()
            .listener()
            .upstream("o", &[o.addr()])
            .upstream("authz", &[authz])
            .upstream("gone", &[closed])
            .plugin(
                "authz",
                wasm::EXT_AUTHZ,
                r#"{ group = "authz", path = "/check", forward_headers = ["authorization"], allow_headers_from_authz = ["x-user"] }"#,
            )
            .plugin("authz-down", wasm::EXT_AUTHZ, r#"{ group = "gone", path = "/check" }"#)
            .route("o")
            .raw(r#"path_prefix = "/down""#)
            .raw(r#"plugins = ["authz-down"]"#)
            .route("o")
            .raw(r#"plugins = ["authz"]"#),
    )
    .await
    .expect("gateway");
    let reply = send(&gw, "GET", "/echo-headers", &[("authorization", "Bearer good")], b"").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert!(reply.text().contains("x-user: alice\n"), "{}", reply.text());

    let reply = send(&gw, "GET", "/echo-headers", &[("authorization", "Bearer bad")], b"").await;
    assert_eq!((reply.status.as_u16(), reply.text().as_str()), (403, "denied by policy"));

    let reply = send(&gw, "GET", "/down", &[], b"").await;
    assert_eq!(reply.status, 503, "{}", reply.text());
    gw.stop().await;
}

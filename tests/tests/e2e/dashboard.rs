//! The dashboard in a real headless Chromium, against a real gateway with a real plugin and
//! two origins: the token prompt, the route's request count, a backend turning unhealthy when
//! its origin stops, a plugin's faults after a trapping request, a refused reload's reason, a
//! narrow screen, and the message when the gateway is gone. The test saves a screenshot taken
//! under load as a build artefact.

use std::time::Duration;

use http::Request;
use http_body_util::Full;
use wasmgate_example_origin::Origin;
use wasmgate_tests::browser::Browser;
use wasmgate_tests::client;
use wasmgate_tests::harness::{self, Toml};
use wasmgate_tests::wasm;

const TOKEN: &str = "t0k3n";

async fn origin(name: &str) -> Origin {
    Origin::start(name, "127.0.0.1:0".parse().expect("addr"), None).await.expect("origin")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_traffic_health_and_faults_behind_the_token() -> anyhow::Result<()> {
    let (a, b) = (origin("a").await, origin("b").await);
    let (a_addr, b_addr) = (a.addr(), b.addr());
    let gw = harness::start(
        &Toml::new()
            .listener()
            .raw("[admin]")
            .raw(r#"address = "127.0.0.1:0""#)
            .raw(&format!(r#"token = "{TOKEN}""#))
            .plugin("tag", wasm::ADD_HEADER, r#"{ request = { x-tag = "1" } }"#)
            .raw("instances = 4")
            .plugin("guard", wasm::MISBEHAVE, r#"{ mode = "trap" }"#)
            .raw("instances = 4")
            .upstream("pair", &[a_addr, b_addr])
            .raw(r#"health_check = { kind = "tcp", interval = "100ms", unhealthy_threshold = 1 }"#)
            .route("pair")
            .raw(r#"name = "api""#)
            .raw(r#"plugins = ["tag", "guard"]"#)
            .raw(r#"cache = { default_ttl = "1m" }"#),
    )
    .await?;
    let (addr, admin) = (gw.addrs()[0], gw.admin_addr().expect("admin listener"));
    let browser = Browser::start(1280, 1100).await?;
    browser.client().goto(&format!("http://{admin}/")).await?;

    // The page asks for the token, refuses a wrong one, and keeps the right one in the tab's
    // session, never in the address.
    browser.wait_for("#token-form label", "the token prompt", |t| t.contains("token")).await?;
    browser.submit("#token-input", "wrong").await?;
    browser.wait_for("#token-message", "a wrong token refused", |t| t.contains("refused")).await?;
    browser.submit("#token-input", TOKEN).await?;
    browser.wait_for("#generation", "the generation in force", |t| t.contains("generation 1")).await?;
    assert!(!browser.client().current_url().await?.as_str().contains(TOKEN));
    assert_eq!(browser.eval("return sessionStorage.getItem('wasmgate-admin-token')").await?, TOKEN);

    for _ in 0..30 {
        assert_eq!(client::get(addr, "/hello", &[]).await?.status, 200);
    }
    let route = r#"[data-route="api"]"#;
    browser.wait_for(&format!("{route} .requests"), "30 requests on the route", |t| t == "30").await?;
    browser.wait_for(&format!("{route} .p99"), "the route's p99", |t| t.ends_with('s')).await?;
    // The first request filled the cache; the other 29 were answered from it.
    browser
        .wait_for(&format!("{route} .cache"), "the cache's answers", |t| t.starts_with("97% of 30 · "))
        .await?;

    let backend = |addr: std::net::SocketAddr| format!(r#"[data-backend="{addr}"] .health"#);
    browser.wait_for(&backend(b_addr), "b healthy", |t| t == "healthy").await?;
    b.stop();
    browser.wait_for(&backend(b_addr), "b unhealthy once stopped", |t| t == "unhealthy").await?;
    assert_eq!(browser.text(&backend(a_addr)).await?.as_deref(), Some("healthy"));

    let faults = r#"[data-plugin="guard"] .faults"#;
    browser.wait_for(faults, "no fault yet", |t| t == "0").await?;
    let reply = client::get(addr, "/bad", &[]).await?;
    assert_eq!((reply.status.as_u16(), reply.header("x-wasmgate-error")), (500, "plugin-trap"));
    browser.wait_for(faults, "the trap counted", |t| t == "1").await?;

    // The in-process gateway's config file does not exist, so a reload is refused: the page
    // says so, with the reason.
    let reload = Request::post(format!("http://{admin}/reload"))
        .header("authorization", format!("Bearer {TOKEN}"))
        .body(Full::default())?;
    assert_eq!(client::send(&client::http1(), reload).await?.status, 422);
    browser
        .wait_for("#reload", "the refused reload", |t| t.contains("refused") && t.contains("test.toml"))
        .await?;

    // Under load: a rate above zero, then the screenshot.
    let load = tokio::spawn(async move {
        let started = std::time::Instant::now();
        while started.elapsed() < Duration::from_secs(6) {
            let _ = client::get(addr, "/hello", &[]).await;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    browser
        .wait_for(&format!("{route} .rate"), "a request rate", |t| t.parse::<f64>().is_ok_and(|r| r > 0.0))
        .await?;
    let shot = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard.png");
    std::fs::write(&shot, browser.client().screenshot().await?)?;
    println!("dashboard screenshot: {}", shot.display());
    load.await?;

    // A phone-sized window: nothing wider than the screen but the tables, which scroll.
    browser.client().set_window_size(390, 844).await?;
    let overflow = browser
        .eval("return document.documentElement.scrollWidth - document.documentElement.clientWidth")
        .await?;
    assert_eq!(overflow, 0, "the page scrolls sideways on a narrow screen");

    gw.stop().await;
    browser.wait_for("#banner", "the gateway gone", |t| t.contains("unreachable")).await?;
    browser.close().await?;
    a.stop();
    Ok(())
}

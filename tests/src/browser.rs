//! A real headless Chromium for tests of the dashboard: Debian's `chromedriver` started on a
//! free loopback port, one WebDriver session through `fantoccini` with the flags that keep
//! Chromium off the network, and waits on what the page shows. `tests/setup/chromium.sh`
//! installs both programs.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::json;

use crate::harness::TempDir;

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// How long a page is given to show something: several polls of the dashboard on a busy
/// machine.
const PATIENCE: Duration = Duration::from_secs(20);

/// A browser session; the driver (and Chromium with it) stops when this is dropped.
pub struct Browser {
    client: Client,
    driver: Child,
    _profile: TempDir,
}

impl Browser {
    /// Starts chromedriver and a headless Chromium with a window of `width` × `height`.
    pub async fn start(width: u32, height: u32) -> anyhow::Result<Browser> {
        for program in [CHROMIUM, CHROMEDRIVER] {
            if !Path::new(program).exists() {
                bail!("{program} is missing: run tests/setup/chromium.sh (tests/run.sh does)");
            }
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        // Its own process group, so that Chromium goes with it even when a failed test drops
        // the session without closing it.
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .process_group(0)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting chromedriver")?;
        let profile = TempDir::new(&format!("chromium-{port}"))?;
        let capabilities: serde_json::Map<String, serde_json::Value> = serde_json::from_value(json!({
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--disable-quic", "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync",
                    format!("--window-size={width},{height}"),
                    format!("--user-data-dir={}", profile.path().display()),
                ],
            }
        }))?;
        let url = format!("http://127.0.0.1:{port}");
        let started = Instant::now();
        let client = loop {
            let mut builder = ClientBuilder::new(HttpConnector::new());
            match builder.capabilities(capabilities.clone()).connect(&url).await {
                Ok(client) => break client,
                Err(error) if started.elapsed() > PATIENCE => {
                    return Err(anyhow::anyhow!("no WebDriver session from chromedriver: {error}"));
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        };
        Ok(Browser { client, driver, _profile: profile })
    }

    /// The WebDriver session.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The text of the first element matching `css`; none if nothing matches or it is hidden
    /// (by the `hidden` attribute on it or an ancestor).
    pub async fn text(&self, css: &str) -> anyhow::Result<Option<String>> {
        let script = "const e = document.querySelector(arguments[0]); \
                      return e && !e.closest('[hidden]') ? e.textContent : null;";
        let value = self.client.execute(script, vec![json!(css)]).await?;
        Ok(value.as_str().map(str::to_owned))
    }

    /// Waits until the text of `css` satisfies `test`, and returns it; fails naming `what`,
    /// with the text last seen.
    pub async fn wait_for(
        &self,
        css: &str,
        what: &str,
        test: impl Fn(&str) -> bool,
    ) -> anyhow::Result<String> {
        let started = Instant::now();
        loop {
            let text = self.text(css).await?;
            if let Some(text) = &text
                && test(text)
            {
                return Ok(text.clone());
            }
            if started.elapsed() > PATIENCE {
                bail!("waited {PATIENCE:?} in vain for {what}: `{css}` shows {text:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Types `text` into the field `css` and presses its form's submit button.
    pub async fn submit(&self, css: &str, text: &str) -> anyhow::Result<()> {
        let field = self.client.find(Locator::Css(css)).await?;
        field.send_keys(text).await?;
        let form = self.client.find(Locator::Css(&format!("form:has({css}) [type=submit]"))).await?;
        form.click().await?;
        Ok(())
    }

    /// Runs `script` in the page and returns what it returns.
    pub async fn eval(&self, script: &str) -> anyhow::Result<serde_json::Value> {
        Ok(self.client.execute(script, vec![]).await?)
    }

    /// Ends the session and stops the driver.
    pub async fn close(self) -> anyhow::Result<()> {
        self.client.clone().close().await?;
        Ok(())
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let group = format!("-{}", self.driver.id());
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
        let _ = self.driver.wait();
    }
}

//! Starting real gateways for tests: in-process from a TOML string, or as the real `wasmgate`
//! binary in its own process. Every gateway listens on 127.0.0.1 port 0.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Once;
use std::time::Duration;

use anyhow::Context;
use wasmgate::config::Config;
use wasmgate::server::Running;

/// Logs from the gateway under test go to the test's captured output (`RUST_LOG` filters).
pub fn init_tracing() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("wasmgate=info"));
        let _ = tracing_subscriber::fmt().with_env_filter(filter).with_test_writer().try_init();
    });
}

/// The compiled-plugin cache shared by the tests, so each plugin is compiled once per run.
pub fn cache_dir() -> PathBuf {
    std::env::temp_dir().join("wasmgate-test-cache")
}

/// The `[runtime]` section every test config gets: the shared cache, and few slots (tests
/// run many gateways side by side).
pub fn runtime_section() -> String {
    format!("[runtime]\ncache_dir = \"{}\"\ninstance_slots = 64\n", cache_dir().display())
}

/// A test config, built table by table into TOML text (which it derefs to):
///
/// ```
/// # let backend: std::net::SocketAddr = "127.0.0.1:8080".parse().unwrap();
/// let toml = wasmgate_tests::harness::Toml::new()
///     .listener()
///     .upstream("o", &[backend])
///     .route("o")
///     .raw(r#"plugins = ["deny"]"#)
///     .plugin("deny", "/plugins/deny.wasm", r#"{ prefixes = ["/admin"] }"#);
/// assert!(toml.contains("[[routes]]\nupstream = \"o\"\nplugins = [\"deny\"]\n"));
/// ```
///
/// `listener`, `upstream`, `route` and `plugin` each open a table; [`raw`](Toml::raw) text goes
/// in the table opened last (or, when it starts with a `[header]`, opens its own). Routes are
/// matched in the order they are added. The `[runtime]` section is added by [`start`],
/// [`config`] and [`GatewayProcess`].
#[derive(Clone, Debug, Default)]
pub struct Toml(String);

impl Toml {
    /// An empty config.
    pub fn new() -> Toml {
        Toml::default()
    }

    /// A plain HTTP listener on a free port of 127.0.0.1.
    pub fn listener(self) -> Toml {
        self.raw("[[listeners]]").raw(r#"address = "127.0.0.1:0""#)
    }

    /// The upstream group `name` of `backends`.
    pub fn upstream(self, name: &str, backends: &[std::net::SocketAddr]) -> Toml {
        let backends: Vec<String> = backends.iter().map(|b| format!("\"{b}\"")).collect();
        self.raw(&format!("[upstreams.{name}]")).raw(&format!("backends = [{}]", backends.join(", ")))
    }

    /// A route to the group `upstream`.
    pub fn route(self, upstream: &str) -> Toml {
        self.raw("[[routes]]").raw(&format!("upstream = \"{upstream}\""))
    }

    /// The plugin `name` loaded from `path`, with `config` (a TOML inline table; `""` for none).
    pub fn plugin(self, name: &str, path: &str, config: &str) -> Toml {
        let toml = self.raw(&format!("[plugins.{name}]")).raw(&format!("path = \"{path}\""));
        if config.is_empty() { toml } else { toml.raw(&format!("config = {config}")) }
    }

    /// `text` as it is: keys of the table opened last, or tables of its own.
    pub fn raw(mut self, text: &str) -> Toml {
        if text.starts_with('[') && !self.0.is_empty() && !self.0.ends_with("\n\n") {
            self.0.push('\n');
        }
        if !text.is_empty() {
            self.0.push_str(text);
            if !text.ends_with('\n') {
                self.0.push('\n');
            }
        }
        self
    }
}

impl std::ops::Deref for Toml {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Toml {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A config with one listener on a free port, one upstream group `o` of `backend`, and one
/// route to it; `route_extra` goes in the route's table (`"retries = 0"`).
pub fn one_backend(backend: std::net::SocketAddr, route_extra: &str) -> Toml {
    Toml::new().listener().upstream("o", &[backend]).route("o").raw(route_extra)
}

/// An exchange for `GET path` with `headers`, on route `r` whose group `pair` has two
/// backends (127.0.0.1:9001 and :9002), for calling plugins directly.
pub fn exchange(path: &str, headers: &[(&str, &str)]) -> Box<wasmgate::plugin::Exchange> {
    use std::sync::Arc;
    use wasmgate::upstream::{Backend, Group, Upstreams};
    let backend = |port: u16| Backend::new(format!("127.0.0.1:{port}"), ([127, 0, 0, 1], port).into(), 1);
    let upstreams = Arc::new(Upstreams::new([Group::new("pair", vec![backend(9001), backend(9002)])]));
    let group = upstreams.get("pair").cloned().unwrap_or_else(Group::empty);
    let mut request = http::Request::get(path).header("host", "example.org");
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    let (parts, ()) = request.body(()).unwrap_or_default().into_parts();
    let client = ([127, 0, 0, 1], 40000).into();
    Box::new(wasmgate::plugin::Exchange::new(parts, client, false, Arc::from("r"), group, upstreams))
}

/// Parses `toml` (plus [`runtime_section`]) as if read from `file`.
pub fn config(toml: &str) -> anyhow::Result<Config> {
    let text = format!("{toml}\n{}", runtime_section());
    Ok(Config::parse(Path::new("test.toml"), &text)?)
}

/// Starts a gateway in this process.
pub async fn start(toml: &str) -> anyhow::Result<Running> {
    init_tracing();
    Ok(wasmgate::server::start(config(toml)?).await?)
}

/// The `wasmgate` binary of this build. `cargo test` builds binaries only for their own
/// package's tests, so the first call builds it (a no-op when it is up to date): a test never
/// runs a stale binary.
pub fn wasmgate_bin() -> anyhow::Result<PathBuf> {
    static BUILT: std::sync::OnceLock<Result<PathBuf, String>> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            let exe = std::env::current_exe().map_err(|e| e.to_string())?;
            // Tests run from `target/<profile>/deps/`, the benchmark binaries from `target/<profile>/`.
            let mut dir = exe.parent().ok_or("test binary has no target dir")?;
            if dir.ends_with("deps") {
                dir = dir.parent().ok_or("test binary has no target dir")?;
            }
            let bin = dir.join("wasmgate");
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let mut build = Command::new(cargo);
            build.args(["build", "--quiet", "-p", "wasmgate", "--bin", "wasmgate"]);
            // What cargo sets for the test crate itself: ring's build script reruns when any of
            // it changes, which would rebuild the TLS stack under the binary each time a test
            // run and a plain `cargo build` take turns.
            for (name, _) in std::env::vars_os() {
                let name = name.to_string_lossy();
                if [
                    "CARGO_PKG_",
                    "CARGO_MANIFEST_",
                    "CARGO_CRATE_",
                    "CARGO_BIN_",
                    "CARGO_PRIMARY_",
                    "CARGO_TARGET_TMPDIR",
                ]
                .iter()
                .any(|prefix| name.starts_with(prefix))
                    || name == "OUT_DIR"
                {
                    build.env_remove(&*name);
                }
            }
            if dir.ends_with("release") {
                build.arg("--release");
            }
            let status = build.status().map_err(|e| e.to_string())?;
            if !status.success() || !bin.exists() {
                return Err(format!("cannot build the wasmgate binary ({})", bin.display()));
            }
            Ok(bin)
        })
        .clone()
        .map_err(|e| anyhow::anyhow!(e))
}

/// A `wasmgate run` process; killed when dropped.
pub struct GatewayProcess {
    /// The process.
    pub child: Child,
    /// Where it listens.
    pub addr: std::net::SocketAddr,
    /// Its config file.
    pub config: PathBuf,
    /// Every line it wrote to stderr so far.
    pub log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl GatewayProcess {
    /// Writes `toml` to a file in `dir` and runs `wasmgate run` on it; waits until it is
    /// ready and returns with its first listener's address.
    pub fn start(dir: &Path, toml: &str) -> anyhow::Result<GatewayProcess> {
        let config = dir.join("gateway.toml");
        std::fs::write(&config, format!("{toml}\n{}", runtime_section()))?;
        GatewayProcess::spawn(&config, false)
    }

    /// Runs `wasmgate run --upgrade` on this one's config file (as it is on disk now) and
    /// waits until the new process serves on the sockets it took over.
    pub fn upgrade(&self) -> anyhow::Result<GatewayProcess> {
        GatewayProcess::spawn(&self.config, true)
    }

    /// Writes `toml` (with the test runtime section) over the config file.
    pub fn rewrite(&self, toml: &str) -> anyhow::Result<()> {
        // Written aside and renamed, so a watcher never reads it half-written.
        let aside = self.config.with_extension("toml.new");
        std::fs::write(&aside, format!("{toml}\n{}", runtime_section()))?;
        std::fs::rename(&aside, &self.config)?;
        Ok(())
    }

    /// Sends `signal` (`HUP`, `TERM`, `USR2`) to the process.
    pub fn signal(&self, signal: &str) -> anyhow::Result<()> {
        let status =
            Command::new("kill").arg(format!("-{signal}")).arg(self.child.id().to_string()).status()?;
        anyhow::ensure!(status.success(), "kill -{signal} failed");
        Ok(())
    }

    /// Waits up to `within` for the process to exit.
    pub fn wait_exit(&mut self, within: Duration) -> anyhow::Result<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            anyhow::ensure!(
                std::time::Instant::now() < deadline,
                "the process did not exit within {within:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The log lines so far that contain `text`.
    pub fn log_lines(&self, text: &str) -> Vec<String> {
        self.log.lock().map(|l| l.iter().filter(|l| l.contains(text)).cloned().collect()).unwrap_or_default()
    }

    fn spawn(config: &Path, upgrade: bool) -> anyhow::Result<GatewayProcess> {
        use std::io::{BufRead, BufReader};
        let mut command = Command::new(wasmgate_bin()?);
        command.args(["run", "--config"]).arg(config);
        if upgrade {
            command.arg("--upgrade");
        }
        let mut child = command
            .env("RUST_LOG", std::env::var("WASMGATE_TEST_LOG").unwrap_or_else(|_| "info".into()))
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()?;
        let stderr = child.stderr.take().context("no stderr")?;
        let (tx, rx) = std::sync::mpsc::channel();
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let lines = log.clone();
        std::thread::spawn(move || {
            let mut first = None;
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                // `address=ip:port` in the text format, `"address":"ip:port"` in JSON.
                let address = line
                    .split("address=")
                    .nth(1)
                    .and_then(|a| a.split_whitespace().next())
                    .or_else(|| line.split("\"address\":\"").nth(1).and_then(|a| a.split('"').next()));
                if first.is_none() && line.contains("listening") {
                    first = address.map(str::to_owned);
                }
                if (line.contains(" ready ") || line.contains("\"message\":\"ready\""))
                    && let Some(addr) = first.take()
                {
                    let _ = tx.send(addr);
                }
                eprintln!("[wasmgate] {line}");
                if let Ok(mut lines) = lines.lock() {
                    lines.push(line);
                }
            }
        });
        let addr = rx.recv_timeout(Duration::from_secs(60)).context("wasmgate did not become ready")?;
        Ok(GatewayProcess { child, addr: addr.parse()?, config: config.to_path_buf(), log })
    }

    /// Peak resident memory (VmHWM) and current (VmRSS) of the process, in KiB.
    pub fn memory_kib(&self) -> anyhow::Result<(u64, u64)> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))?;
        let field = |name: &str| {
            status
                .lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u64>().ok())
                .context("no such field")
        };
        Ok((field("VmHWM:")?, field("VmRSS:")?))
    }
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `wasmgate check` on `toml` written to `dir`; returns (success, stdout, stderr).
pub fn check(dir: &Path, toml: &str) -> anyhow::Result<(bool, String, String)> {
    let config = dir.join("check.toml");
    std::fs::write(&config, toml)?;
    let out = Command::new(wasmgate_bin()?)
        .args(["check", "--config"])
        .arg(&config)
        .env("NO_COLOR", "1")
        .output()?;
    Ok((
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

/// Waits (polling, up to 10 s) until `condition` holds; fails the test with `what` if it
/// never does. Tests wait for background work this way rather than sleeping a fixed time.
pub async fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !condition() {
        assert!(std::time::Instant::now() < deadline, "waited 10 s in vain: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A fresh temporary directory for one test; removed when dropped.
pub struct TempDir(PathBuf);

impl TempDir {
    /// Makes one.
    pub fn new(name: &str) -> anyhow::Result<TempDir> {
        let dir = std::env::temp_dir().join(format!("wasmgate-test-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        Ok(TempDir(dir))
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A server that accepts connections and never says a word (not even a TLS handshake),
/// holding them open until the returned task is aborted.
pub async fn mute_server() -> anyhow::Result<(std::net::SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    Ok((addr, task))
}

/// A port nothing listens on.
pub fn closed_port() -> std::net::SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("its address")
}

/// The `tracer` guest's record of the request it saw with `x-trace-id: id`, once that
/// request's log phase has stored it in the gateway's shared store.
pub async fn tracer_record(gateway: &Running, id: &str) -> String {
    let key = wasmgate::store::store_key("tracer", &format!("trace:{id}"));
    let store = gateway.runtime().store_of("tracer").expect("the tracer plugin is loaded");
    let mut found = None;
    wait_until(&format!("the log phase of request {id}"), || {
        // The in-memory store's futures are ready at once: poll without a runtime.
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        if let std::task::Poll::Ready(Ok(Some(value))) = store.get(&key).as_mut().poll(&mut cx) {
            found = Some(String::from_utf8_lossy(&value).into_owned());
        }
        found.is_some()
    })
    .await;
    found.unwrap_or_default()
}

/// A WebSocket echo server on a free port: every text or binary message comes back.
pub async fn websocket_echo() -> anyhow::Result<std::net::SocketAddr> {
    use futures_util::{SinkExt, StreamExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else { return };
                while let Some(Ok(message)) = ws.next().await {
                    if (message.is_text() || message.is_binary()) && ws.send(message).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    Ok(addr)
}

/// Answers each request head that arrives on `stream` with the bytes `answer` gives for it
/// (the head's text, request line first), closing after those it flags; request bodies are not
/// read. For raw origins that must write exact bytes.
pub async fn answer_heads<S>(mut stream: S, answer: impl Fn(&str) -> (Vec<u8>, bool))
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            buf.drain(..end + 4);
            let (bytes, close) = answer(&head);
            if stream.write_all(&bytes).await.is_err() || close {
                return;
            }
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// Counts, from now on, the panics on the gateway's tasks (tokio's worker threads): a fuzz
/// test fails on any. Another test's failing assertion runs on its own thread, named after
/// it, and is not counted.
pub fn count_gateway_panics() -> std::sync::Arc<std::sync::atomic::AtomicUsize> {
    let panics = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = panics.clone();
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if std::thread::current().name().is_none_or(|name| name.starts_with("tokio-runtime-worker")) {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
        default_hook(info);
    }));
    panics
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_puts_each_table_after_a_blank_line_and_raw_text_in_the_last_one() {
        let backend: std::net::SocketAddr = ([127, 0, 0, 1], 8080).into();
        let toml = Toml::new()
            .listener()
            .plugin("p", "/p.wasm", "")
            .plugin("q", "/q.wasm", "{ a = 1 }")
            .raw("failure = \"fail-open\"")
            .upstream("o", &[backend, backend])
            .route("o")
            .raw("retries = 0\n");
        assert_eq!(
            &*toml,
            r#"[[listeners]]
address = "127.0.0.1:0"

[plugins.p]
path = "/p.wasm"

[plugins.q]
path = "/q.wasm"
config = { a = 1 }
failure = "fail-open"

[upstreams.o]
backends = ["127.0.0.1:8080", "127.0.0.1:8080"]

[[routes]]
upstream = "o"
retries = 0
"#
        );
        assert!(config(&toml).is_ok(), "{toml}");
    }
}

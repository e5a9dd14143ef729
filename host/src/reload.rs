//! Reloads: whoever asks (SIGHUP, `POST /reload` on the admin API, the file watcher, a caller
//! of the library), one task builds the next generation and swaps it in, one reload at a time,
//! and answers each asker with the outcome. The watcher looks at the config file and every
//! plugin's `.wasm` and asks for a reload when one has changed and then held still; the DNS
//! follower resolves backend names again and asks for a rebuild when their addresses change.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::{ArcSwap, ArcSwapOption};
use tokio::sync::{mpsc, oneshot};

use crate::config::{Config, ConfigError};
use crate::gateway::Gateway;
use crate::plugin::Runtime;

/// Why a reload did not happen; the running generation keeps serving.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The config, or a plugin it names, is refused.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The gateway is stopping.
    #[error("the gateway is stopping")]
    Stopped,
}

/// The last reload asked for, kept for the admin API: when it ended and how.
#[derive(Debug, Clone)]
pub struct LastReload {
    /// When it ended.
    pub at: SystemTime,
    /// What it did, or why it was refused.
    pub outcome: Result<Reloaded, String>,
}

/// What a reload did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reloaded {
    /// Plugins kept as they were, with their instances.
    pub plugins_kept: usize,
    /// Plugins loaded anew (new or changed).
    pub plugins_loaded: usize,
}

enum Source {
    File,
    Given(Box<Config>),
}

struct Ask {
    source: Source,
    reply: oneshot::Sender<Result<Reloaded, ReloadError>>,
}

/// Asks the reload task for reloads; cloned by everyone who may ask.
#[derive(Clone)]
pub struct Reloader {
    asks: mpsc::Sender<Ask>,
    gateway: Arc<ArcSwap<Gateway>>,
    last: Arc<ArcSwapOption<LastReload>>,
}

impl Reloader {
    /// Starts the task that reloads `gateway`, loading plugins into `runtime`.
    pub fn spawn(gateway: Arc<ArcSwap<Gateway>>, runtime: Arc<Runtime>) -> Reloader {
        let (asks, mut queue) = mpsc::channel::<Ask>(16);
        let current = gateway.clone();
        let last = Arc::new(ArcSwapOption::empty());
        let record = last.clone();
        tokio::spawn(async move {
            while let Some(ask) = queue.recv().await {
                let config = match ask.source {
                    Source::Given(config) => Ok(*config),
                    Source::File => Config::load(&current.load().config().file),
                };
                let result = match config {
                    Ok(config) => apply(&current, &runtime, config).await,
                    Err(error) => Err(error.into()),
                };
                if let Err(error) = &result {
                    tracing::error!(%error, "reload refused; the current config keeps serving");
                }
                let outcome = result.as_ref().map(|done| *done).map_err(|e| e.to_string());
                record.store(Some(Arc::new(LastReload { at: SystemTime::now(), outcome })));
                let _ = ask.reply.send(result);
            }
        });
        Reloader { asks, gateway, last }
    }

    /// The last reload's outcome; none before the first.
    pub fn last(&self) -> Option<Arc<LastReload>> {
        self.last.load_full()
    }

    /// Reloads the config file the running generation came from.
    pub async fn from_file(&self) -> Result<Reloaded, ReloadError> {
        self.ask(Source::File).await
    }

    /// Reloads with `config`.
    pub async fn with(&self, config: Config) -> Result<Reloaded, ReloadError> {
        self.ask(Source::Given(Box::new(config))).await
    }

    async fn ask(&self, source: Source) -> Result<Reloaded, ReloadError> {
        let (reply, answer) = oneshot::channel();
        self.asks.send(Ask { source, reply }).await.map_err(|_| ReloadError::Stopped)?;
        answer.await.map_err(|_| ReloadError::Stopped)?
    }

    /// Watches the config file and the plugins' `.wasm` files every `interval`, and reloads
    /// from the file once a change has held still for one look. A refused reload (a file
    /// half-written, or wrong) is retried when the files change again. The files are first
    /// looked at when this is called, not when the future is first polled.
    pub fn watch(self, interval: Duration) -> impl Future<Output = ()> + Send + 'static {
        let mut seen = self.stamps();
        let mut pending: Option<Vec<Stamp>> = None;
        async move {
            loop {
                tokio::time::sleep(interval).await;
                let now = self.stamps();
                if pending.as_ref() == Some(&now) {
                    pending = None;
                    tracing::info!("a watched file changed: reloading");
                    // Failures are logged by the task; the stamps stay taken either way, so only a
                    // further change retries.
                    let _ = self.from_file().await;
                    seen = self.stamps();
                } else if now != seen {
                    pending = Some(now.clone());
                    seen = now;
                }
            }
        }
    }

    /// Resolves the backends named by DNS again when the serving generation says (its
    /// groups' `resolve_interval`, sooner when a record's TTL runs out first), and rebuilds
    /// the generation from the same config when a group's addresses changed. Addresses that
    /// appear join; those that go leave once the requests in flight on the old generation
    /// finish; those that stay keep their health and outlier state.
    pub async fn follow_dns(self) {
        loop {
            let wait = self.gateway.load().resolve_in().unwrap_or(NO_NAMES_RECHECK);
            tokio::time::sleep(wait).await;
            let current = self.gateway.load_full();
            if current.resolve_in().is_some() && current.dns_changed().await {
                let _ = self.with(current.config().clone()).await;
            }
        }
    }

    /// The watched files, with their modification time and length (none while missing).
    fn stamps(&self) -> Vec<Stamp> {
        let gateway = self.gateway.load();
        let config = gateway.config();
        std::iter::once(config.file.clone())
            .chain(config.plugins.values().map(|p| config.resolve(&p.path)))
            .map(|path| {
                let meta = std::fs::metadata(&path).ok();
                let stamp = meta.map(|m| (m.modified().unwrap_or(SystemTime::UNIX_EPOCH), m.len()));
                (path, stamp)
            })
            .collect()
    }
}

type Stamp = (PathBuf, Option<(SystemTime, u64)>);

/// With no backend named by DNS, how often to look whether a reload brought one.
const NO_NAMES_RECHECK: Duration = Duration::from_secs(5);

/// Builds a generation from `config` and swaps it in whole: requests under way finish on the
/// generation they started with, every later one sees the new one. Listeners and `[server]`,
/// `[admin]`, `[traces]`, `[store]` and the log format are read at start only: a warning says that
/// changing them takes a restart or an upgrade.
async fn apply(
    gateway: &ArcSwap<Gateway>,
    runtime: &Runtime,
    config: Config,
) -> Result<Reloaded, ReloadError> {
    let current = gateway.load_full();
    let old = current.config();
    let listeners = |c: &Config| c.listeners.iter().map(|l| l.address).collect::<Vec<_>>();
    if listeners(old) != listeners(&config)
        || old.server != config.server
        || old.admin != config.admin
        || old.traces != config.traces
        || old.store != config.store
        || old.log.format != config.log.format
    {
        tracing::warn!(
            "listeners, [server], [admin], [traces], [store] and the log format change only on \
             restart or `wasmgate run --upgrade`; the rest is reloaded"
        );
    }
    let next = Gateway::build(config, runtime, Some(&current)).await?;
    let kept =
        next.plugins().filter(|(name, p)| current.plugin(name).is_some_and(|o| Arc::ptr_eq(o, p))).count();
    let outcome = Reloaded { plugins_kept: kept, plugins_loaded: next.plugins().count() - kept };
    gateway.store(Arc::new(next));
    tracing::info!(
        plugins_kept = outcome.plugins_kept,
        plugins_loaded = outcome.plugins_loaded,
        "config reloaded"
    );
    Ok(outcome)
}

//! The command line: `wasmgate run` (with `--upgrade`), `wasmgate check` and `wasmgate plugin`
//! (the authors' tools), logging set-up,
//! signals, and telling systemd (when it runs the gateway) which process is the service.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tokio::signal::unix::{SignalKind, signal};

use crate::config::{Config, LogFormat};
use crate::gateway::Gateway;
use crate::handover::{HandoverError, Inherited, Offer, Predecessor};
use crate::plugin::{Phase, Runtime, RuntimeConfig};

/// wasmgate: an HTTP gateway whose request logic runs in sandboxed WebAssembly plugins.
#[derive(Debug, Parser)]
#[command(version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve with the given config until SIGTERM or Ctrl-C, then drain and exit. SIGHUP
    /// reloads the config file (routes, upstreams, plugins) without dropping a connection;
    /// SIGUSR2 starts this binary again with `--upgrade`.
    Run {
        /// The TOML config file.
        #[arg(short, long, env = "WASMGATE_CONFIG")]
        config: PathBuf,
        /// Take the listening sockets over from the gateway running with this upgrade socket
        /// (`[server] upgrade_socket`), once this config and its plugins have loaded; that one
        /// then drains and exits. Nothing is refused or dropped on the way.
        #[arg(long)]
        upgrade: bool,
    },
    /// Check the config: parse it, load and configure every plugin, resolve every backend;
    /// exit 0 if all is well, else print what is wrong and exit 1.
    Check {
        /// The TOML config file.
        #[arg(short, long, env = "WASMGATE_CONFIG")]
        config: PathBuf,
    },
    /// Tools for plugin authors, without a gateway.
    Plugin {
        #[command(subcommand)]
        command: PluginCommand,
    },
}

#[derive(Debug, Subcommand)]
enum PluginCommand {
    /// What a component is: the contract it targets, its imports (and whether this host
    /// provides them), what one instance takes, its size, SHA-256, compile time and compiled
    /// size, and the phases its `init` declares for `--config`. Exits 1 if it would not load.
    Inspect {
        /// The `.wasm` component.
        file: PathBuf,
        /// The plugin's config, as JSON, handed to `init`.
        #[arg(long, default_value = "{}")]
        config: String,
    },
    /// Run the plugin's phases against the requests of a file (JSON lines: method, path,
    /// headers, body, the upstream response to pretend, and what to expect), without a gateway
    /// or network, and print what it did to each. Exits 1 if an expectation failed or the
    /// plugin faulted. The format: `docs/plugin-tools.md`.
    Test {
        /// The `.wasm` component.
        file: PathBuf,
        /// The plugin's config, as JSON, handed to `init`.
        #[arg(long, default_value = "{}")]
        config: String,
        /// The requests, one JSON object a line.
        #[arg(long)]
        requests: PathBuf,
    },
}

/// Runs the command line; the binary's `main`.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    // Now, before a package manager can replace the file: SIGUSR2 starts this binary again.
    let exe = std::env::current_exe().ok();
    // `Some(upgrade)` for `run`, `None` for `check`.
    let (path, upgrade) = match &cli.command {
        Command::Run { config, upgrade } => (config, Some(*upgrade)),
        Command::Check { config } => (config, None),
        Command::Plugin { command } => return plugin_tool(command),
    };
    let config = match Config::load(path) {
        Ok(config) => config,
        Err(error) => return fail(&error),
    };
    init_logging(config.log.format);
    let workers = match config.server.workers {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    // One worker runs on the calling thread: no idle main thread, no cross-thread wake-ups.
    let mut builder = if workers == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder.worker_threads(workers);
        builder
    };
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(error) => return fail(&error),
    };
    match upgrade {
        Some(upgrade) => runtime.block_on(run(config, upgrade, exe)),
        None => runtime.block_on(check(config)),
    }
}

/// `wasmgate plugin …`: logs warnings and the plugin's own lines (the report is the output), on
/// one thread.
fn plugin_tool(command: &PluginCommand) -> ExitCode {
    if std::env::var_os("RUST_LOG").is_none() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter("warn,wasmgate::plugin=info")
            .with_writer(std::io::stderr)
            .try_init();
    } else {
        init_logging(LogFormat::Pretty);
    }
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(error) => return fail(&error),
    };
    match command {
        PluginCommand::Inspect { file, config } => runtime.block_on(async {
            match crate::toolkit::inspection::Report::of(file, config).await {
                Ok(report) => {
                    print!("{}", report.text());
                    if report.loads() { ExitCode::SUCCESS } else { ExitCode::FAILURE }
                }
                Err(error) => fail(&error),
            }
        }),
        PluginCommand::Test { file, config, requests } => runtime.block_on(async {
            match crate::toolkit::rehearsal::run(file, config, requests).await {
                Ok(outcome) => {
                    print!("{}", outcome.text);
                    if outcome.failed == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE }
                }
                Err(error) => fail(&error),
            }
        }),
    }
}

/// Where `config`'s upgrade socket is.
pub fn upgrade_socket(config: &Config) -> PathBuf {
    match &config.server.upgrade_socket {
        Some(path) => config.resolve(path),
        None => crate::handover::default_path(&config.file),
    }
}

async fn run(config: Config, upgrade: bool, exe: Option<PathBuf>) -> ExitCode {
    let file = config.file.clone();
    let socket = upgrade_socket(&config);
    let watch = config.server.watch.then_some(config.server.watch_interval);
    // The config and its plugins check out before any socket is asked for or bound.
    let runtime = match crate::server::runtime(&config) {
        Ok(runtime) => runtime,
        Err(error) => return fail(&error),
    };
    let gateway = match Gateway::build(config, &runtime, None).await {
        Ok(gateway) => gateway,
        Err(error) => return fail(&error),
    };
    let (predecessor, inherited, offer) = if upgrade {
        match Predecessor::take(&socket).await {
            Ok((predecessor, inherited)) => (Some(predecessor), inherited, None),
            Err(error) => return fail(&error),
        }
    } else {
        match Offer::bind(&socket) {
            Ok(offer) => (None, Inherited::default(), Some(offer)),
            Err(error @ HandoverError::InUse { .. }) => return fail(&error),
            Err(error) => {
                tracing::warn!(%error, "binary upgrade is off for this process");
                (None, Inherited::default(), None)
            }
        }
    };
    // A failure from here on leaves a predecessor serving: it never hears `ready`.
    let running = match crate::server::serve(gateway, runtime, inherited).await {
        Ok(running) => running,
        Err(error) => return fail(&error),
    };
    // A successor already serves: if it cannot take the path over, it goes on serving without
    // an upgrade socket rather than drop what it has accepted.
    let offer = match (offer, upgrade) {
        (Some(offer), _) => Some(offer),
        (None, true) => Offer::replace(&socket)
            .inspect_err(|error| tracing::warn!(%error, "binary upgrade is off for this process"))
            .ok(),
        (None, false) => None,
    };
    if let Some(predecessor) = predecessor {
        let pid = predecessor.pid;
        match predecessor.ready().await {
            Ok(()) => {
                tracing::info!(predecessor = pid, "took the listening sockets over; the predecessor drains")
            }
            Err(error) => {
                tracing::warn!(%error, predecessor = pid, "the predecessor went away during the hand-over")
            }
        }
    }
    if let Some(interval) = watch {
        tokio::spawn(running.reloader().clone().watch(interval));
    }
    let path = offer.as_ref().map(|o| o.path().display().to_string()).unwrap_or_default();
    tracing::info!(pid = std::process::id(), upgrade_socket = path, "ready");
    notify_systemd(&[sd_notify::NotifyState::MainPid(std::process::id()), sd_notify::NotifyState::Ready]);

    let mut hangups = listen_for(SignalKind::hangup(), "SIGHUP", "reload by signal is off");
    let mut upgrades = listen_for(SignalKind::user_defined2(), "SIGUSR2", "upgrade by signal is off");
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    let successor = {
        let handed_over = async {
            match &offer {
                Some(offer) => offer.hand_over(running.sockets()).await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(handed_over);
        loop {
            tokio::select! {
                _ = &mut shutdown => break None,
                successor = &mut handed_over => break Some(successor),
                Some(()) = async { hangups.as_mut()?.recv().await } => {
                    // Parsing and building happen before the swap; a bad file changes nothing (the
                    // reloader logs why).
                    let _ = running.reloader().from_file().await;
                }
                Some(()) = async { upgrades.as_mut()?.recv().await } => start_successor(exe.as_deref(), &file),
            }
        }
    };
    match successor {
        Some(pid) => {
            tracing::info!(successor = pid, "a successor serves on the listening sockets: draining");
            running.retire().await;
        }
        None => {
            notify_systemd(&[sd_notify::NotifyState::Stopping]);
            if let Some(offer) = offer {
                offer.remove();
            }
            running.stop().await;
        }
    }
    tracing::info!("stopped");
    ExitCode::SUCCESS
}

/// Starts `exe run --config file --upgrade`, a child of this process (so a service manager
/// counts it as the same service), and logs how it ends if it ends before this one.
fn start_successor(exe: Option<&Path>, file: &Path) {
    let Some(exe) = exe else {
        tracing::error!("SIGUSR2: the path of this binary is unknown; run `wasmgate run --upgrade` instead");
        return;
    };
    let child = std::process::Command::new(exe).arg("run").arg("--config").arg(file).arg("--upgrade").spawn();
    match child {
        Ok(mut child) => {
            tracing::info!(pid = child.id(), exe = %exe.display(), "SIGUSR2: started a successor");
            std::thread::spawn(move || match child.wait() {
                Ok(status) if !status.success() => {
                    tracing::error!(%status, "the successor failed; this process keeps serving");
                }
                _ => {}
            });
        }
        Err(error) => tracing::error!(%error, exe = %exe.display(), "SIGUSR2: cannot start a successor"),
    }
}

fn listen_for(kind: SignalKind, name: &str, otherwise: &str) -> Option<tokio::signal::unix::Signal> {
    match signal(kind) {
        Ok(s) => Some(s),
        Err(error) => {
            tracing::error!(%error, signal = name, "cannot listen for the signal: {otherwise}");
            None
        }
    }
}

/// Tells systemd, when it runs the gateway as a `Type=notify` service, what happened; a
/// no-op otherwise.
fn notify_systemd(states: &[sd_notify::NotifyState<'_>]) {
    if let Err(error) = sd_notify::notify(false, states) {
        tracing::warn!(%error, "cannot notify systemd");
    }
}

async fn check(config: Config) -> ExitCode {
    let runtime = match Runtime::new(&RuntimeConfig::from_config(&config)) {
        Ok(rt) => rt,
        Err(error) => return fail(&*error),
    };
    let file = config.file.clone();
    let gateway = match Gateway::build(config, &runtime, None).await {
        Ok(gw) => gw,
        Err(error) => return fail(&error),
    };
    println!("{}: ok", file.display());
    for warning in gateway.warnings() {
        println!("  warning: {warning}");
    }
    for (name, plugin) in gateway.plugins() {
        // `init` is every plugin's; list the request phases.
        let phases: Vec<&str> =
            Phase::ALL[1..].iter().copied().filter(|p| plugin.has(*p)).map(Phase::as_str).collect();
        println!(
            "  plugin {name}: sha256 {} ({:?}), phases: {}",
            plugin.sha256(),
            plugin.cache_outcome(),
            phases.join(", ")
        );
        if let Some(canary) = plugin.canary() {
            println!(
                "  plugin {}: sha256 {} ({:?}), for {}% of clients",
                canary.plugin().name(),
                canary.plugin().sha256(),
                canary.plugin().cache_outcome(),
                canary.weight()
            );
        }
    }
    ExitCode::SUCCESS
}

fn fail(error: &dyn std::error::Error) -> ExitCode {
    eprintln!("error: {error}");
    ExitCode::FAILURE
}

/// Logs to stderr, filtered by `RUST_LOG` (default `info`), in the configured format. A
/// reload keeps the format the process started with.
fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Pretty => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

/// Resolves on SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(%error, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    let term = async {
        match signal(SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}

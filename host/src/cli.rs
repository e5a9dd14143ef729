//! The command line: `wasmgate run` and `wasmgate check`, logging set-up, signals.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tokio::signal::unix::{SignalKind, signal};

use crate::config::{Config, LogFormat};
use crate::gateway::Gateway;
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
    /// reloads the config file (routes, upstreams, plugins) without dropping a connection.
    Run {
        /// The TOML config file.
        #[arg(short, long, env = "WASMGATE_CONFIG")]
        config: PathBuf,
    },
    /// Check the config: parse it, load and configure every plugin, resolve every backend;
    /// exit 0 if all is well, else print what is wrong and exit 1.
    Check {
        /// The TOML config file.
        #[arg(short, long, env = "WASMGATE_CONFIG")]
        config: PathBuf,
    },
}

/// Runs the command line; the binary's `main`.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let (Command::Run { config: path } | Command::Check { config: path }) = &cli.command;
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
    match cli.command {
        Command::Run { .. } => runtime.block_on(run(config)),
        Command::Check { .. } => runtime.block_on(check(config)),
    }
}

async fn run(config: Config) -> ExitCode {
    let file = config.file.clone();
    let running = match crate::server::start(config).await {
        Ok(running) => running,
        Err(error) => return fail(&error),
    };
    let mut hangups = match signal(SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(error) => {
            tracing::error!(%error, "cannot listen for SIGHUP: reload by signal is off");
            None
        }
    };
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            Some(()) = async { hangups.as_mut()?.recv().await } => {
                // Parsing and building happen before the swap; a bad file changes nothing.
                let result = match Config::load(&file) {
                    Ok(config) => running.reload(config).await,
                    Err(error) => Err(error),
                };
                if let Err(error) = result {
                    tracing::error!(%error, "reload refused; the current config keeps serving");
                }
            }
        }
    }
    running.stop().await;
    tracing::info!("stopped");
    ExitCode::SUCCESS
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

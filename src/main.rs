//! The `shellac` command: parse the command line, load the configuration,
//! set up logging, bind, and hand over to `shellac::run`.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use shellac::config::{Config, CONFIG_PATH};

/// A caching HTTP reverse proxy.
#[derive(Parser)]
#[command(name = "shellac", version, about)]
struct Cli {
    /// The configuration file (TOML).
    #[arg(long, value_name = "FILE", default_value = CONFIG_PATH)]
    config: PathBuf,
    /// Validate the configuration and exit: 0 when it is valid, 1 when not.
    #[arg(long)]
    check: bool,
    /// Start a built-in demo origin on a free loopback port and proxy to it
    /// instead of the configured backends.
    #[arg(long)]
    demo: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match Config::load(&cli.config) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("shellac: invalid configuration: {error}");
            return ExitCode::FAILURE;
        }
    };
    if cli.check {
        for warning in &config.warnings {
            eprintln!("shellac: warning: {warning}");
        }
        println!("shellac: configuration {} is valid", cli.config.display());
        return ExitCode::SUCCESS;
    }
    // Logging never blocks serving: lines go through a bounded queue to a
    // writer thread of their own, and when stderr is not read (a full pipe,
    // a stuck terminal) new lines are dropped and counted
    // (`shellac_log_dropped_total`) instead of stopping the workers.
    // Before, a pipe nobody read froze Shellac after 378 requests.
    let (writer, _flush_on_exit) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(true)
        .buffered_lines_limit(LOG_QUEUE_LINES)
        .thread_name("shellac-log")
        .finish(std::io::stderr());
    let dropped = writer.error_counter();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(writer)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    // `[server] workers` (read at start only): 0 leaves tokio's default,
    // one worker per CPU this process may run on.
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if config.server.workers > 0 {
        builder.worker_threads(config.server.workers);
    }
    let runtime = match builder.enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("shellac: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let log_dropped = std::sync::Arc::new(move || dropped.dropped_lines() as u64);
    runtime.block_on(serve(config, cli.demo, log_dropped))
}

/// Diagnostic log lines that may wait for the writer thread before new ones
/// are dropped (a few MiB at most).
const LOG_QUEUE_LINES: usize = 16 * 1024;

async fn serve(
    mut config: Config,
    demo: bool,
    log_dropped: std::sync::Arc<dyn Fn() -> u64 + Send + Sync>,
) -> ExitCode {
    let mut launch = shellac::Launch {
        log_dropped: Some(log_dropped),
        ..shellac::Launch::default()
    };
    if demo {
        match shellac::demo::start().await {
            Ok(origin) => {
                config = config.with_single_backend("demo", origin);
                launch.demo_origin = Some(origin);
            }
            Err(error) => {
                eprintln!("shellac: cannot start the demo origin: {error}");
                return ExitCode::FAILURE;
            }
        }
    }
    let listeners = match shellac::bind(&config).await {
        Ok(listeners) => listeners,
        Err(error) => {
            eprintln!("shellac: {error}");
            return ExitCode::FAILURE;
        }
    };
    for listener in &listeners {
        if let Some(addr) = listener.bound() {
            tracing::info!(%addr, config = %config.file.display(), "shellac listening");
        }
    }
    if demo {
        for addr in shellac::local_addrs(&listeners) {
            eprintln!("{}", shellac::demo::instructions(addr));
        }
    }
    launch.admin = match shellac::bind_admin(&config).await {
        Ok(admin) => admin,
        Err(error) => {
            eprintln!("shellac: {error}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(addr) = launch.admin.as_ref().and_then(|l| l.local_addr().ok()) {
        tracing::info!(%addr, "admin listening");
    }
    shellac::run_with(config, listeners, launch, shutdown_signal()).await;
    ExitCode::SUCCESS
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = interrupt => {}
                    _ = terminate.recv() => {}
                }
            }
            Err(_) => {
                let _ = interrupt.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
}

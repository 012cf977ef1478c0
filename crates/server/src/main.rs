//! The `switchboard` binary.
#![forbid(unsafe_code)]

use anyhow::Context;
use clap::Parser;
use switchboard_server::{config::LogFormat, config::Options, Server};
use tracing_subscriber::EnvFilter;

// jemalloc instead of the C library's allocator: relayed messages are 0.2-3 KB buffers allocated on one worker thread
// and freed on another, which glibc's arenas handle with locks and chunk consolidation. Measured A/B in one run
// (docs/benchmarks.md): 5-8% less CPU per relayed message on one node, 27% more cross-node throughput, for 0.4 KiB
// more RSS per idle connection.
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> anyhow::Result<()> {
    let mut options = Options::parse();
    if let Some(command) = options.command.take() {
        return command.run(options);
    }
    let config = options.resolve()?;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    match config.log_format {
        // Colours only for a terminal: log files and pipes get plain text that tools can grep.
        LogFormat::Text => tracing_subscriber::fmt()
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
            .with_env_filter(filter)
            .init(),
        LogFormat::Json => tracing_subscriber::fmt().json().with_env_filter(filter).init(),
    }
    // Every WebSocket and every TURN relay is a file descriptor: take all the process may have.
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => tracing::info!(limit, "file descriptor limit"),
        Err(error) => tracing::warn!(%error, "cannot raise the file descriptor limit"),
    }
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    // Tokio's own TOKIO_WORKER_THREADS keeps working when `workers` is not set (Tokio reads it when no count is given).
    if config.workers.is_some() || std::env::var_os("TOKIO_WORKER_THREADS").is_none() {
        let cores = switchboard_server::config::available_cores();
        let workers = config.runtime_workers(cores);
        tracing::info!(workers, cores, "runtime threads");
        runtime.worker_threads(workers);
    }
    let runtime = runtime.enable_all().build().context("cannot start the runtime")?;
    let result = runtime.block_on(async {
        let server = Server::start(config).await?;
        server.reload_tls_on_sighup();
        println!("Switchboard is running: open {} (WebSocket endpoint /ws)", server.http_url());
        shutdown_signal().await;
        tracing::info!("shutting down");
        // A second signal cuts the drain short, for an operator who does not want to wait.
        tokio::select! {
            () = server.shutdown() => {
                tracing::info!("shutdown complete");
                anyhow::Ok(())
            }
            () = shutdown_signal() => anyhow::bail!("a second signal arrived: stopped without finishing the drain"),
        }
    });
    // Tasks still running (a connection ignoring its close) must not keep the process alive.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    result
}

async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let terminate = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut signal) => {
                    signal.recv().await;
                }
                Err(_) => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = interrupt => {}
            () = terminate => {}
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
}

//! The `capacity` scenario: idle connections and what they cost the server.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::net::{self, Target};
use crate::ws::{Incoming, WsConn};
use crate::{proc_stats, proto, Dialect};

/// Options of `capacity`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// WebSocket URL of the server (loopback only).
    #[arg(long, default_value = "ws://127.0.0.1:8080/ws")]
    url: String,
    /// Number of clients.
    #[arg(long, default_value_t = 1000)]
    clients: usize,
    /// Server process id, to read its RSS and CPU from /proc.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Protocol the clients speak.
    #[arg(long, value_enum, default_value = "v1")]
    dialect: Dialect,
    /// Connections opened at once.
    #[arg(long, default_value_t = 200)]
    concurrency: usize,
    /// How long the clients idle after the last login before the server is measured.
    #[arg(long, default_value = "5", value_name = "SECONDS")]
    settle: u64,
    /// Give up after this long.
    #[arg(long, default_value = "300", value_name = "SECONDS")]
    timeout: u64,
    /// User names are this prefix followed by the client's number.
    #[arg(long, default_value = "cap")]
    prefix: String,
    /// Connect only, without logging in (to separate the transport's cost from the session's).
    #[arg(long)]
    no_login: bool,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let target = Target::parse(&args.url)?;
    net::ensure_fd_room(args.clients)?;
    let baseline = args.server_pid.map(proc_stats::read).transpose()?;
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.timeout);
    let logged_in = Arc::new(AtomicUsize::new(0));
    let frames = Arc::new(AtomicUsize::new(0));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let semaphore = Arc::new(tokio::sync::Semaphore::new(args.concurrency.max(1)));
    let mut tasks = Vec::with_capacity(args.clients);
    for i in 0..args.clients {
        let permit = semaphore.clone().acquire_owned().await?;
        let (target, logged_in, frames, mut stop) =
            (target.clone(), logged_in.clone(), frames.clone(), stop_rx.clone());
        let dialect = args.dialect;
        let no_login = args.no_login;
        let prefix = args.prefix.clone();
        tasks.push(tokio::spawn(async move {
            let name = format!("{prefix}{i}");
            // The tool's own lean client: an idle one holds no read buffer, where tokio-tungstenite keeps 128 KiB
            // per connection and made the tool, not the server, set the pace of a 19,000-client run.
            let mut conn = match (no_login, dialect) {
                (true, _) => WsConn::connect(&target, i).await?,
                (false, Dialect::V1) => proto::login_v1(&target, i, &name).await?,
                (false, Dialect::Tutorial) => proto::login_tutorial(&target, i, &name).await?,
            };
            drop(permit);
            logged_in.fetch_add(1, Ordering::Relaxed);
            loop {
                while let Some(incoming) = conn.next()? {
                    match incoming {
                        Incoming::Message(_) => {
                            frames.fetch_add(1, Ordering::Relaxed);
                        }
                        Incoming::Close(code) => anyhow::bail!("the server closed an idle connection ({code:?})"),
                    }
                }
                // Pongs to the server's pings.
                conn.flush().await?;
                tokio::select! {
                    filled = conn.fill() => filled.context("an idle connection")?,
                    _ = stop.changed() => break,
                }
            }
            proto::close(&mut conn).await;
            anyhow::Ok(())
        }));
        if Instant::now() > deadline {
            anyhow::bail!("timed out while connecting");
        }
    }
    while logged_in.load(Ordering::Relaxed) < args.clients {
        if Instant::now() > deadline || tasks.iter().any(|t| t.is_finished()) {
            let failed = tasks.iter().filter(|t| t.is_finished()).count();
            anyhow::bail!(
                "only {} of {} clients logged in ({failed} failed)",
                logged_in.load(Ordering::Relaxed),
                args.clients
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let connect_time = started.elapsed();
    tokio::time::sleep(Duration::from_secs(args.settle)).await;
    let loaded = args.server_pid.map(proc_stats::read).transpose()?;
    let own = proc_stats::own()?;
    let _ = stop_tx.send(true);
    for task in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
    }
    let per_connection = match (baseline, loaded) {
        (Some(before), Some(after)) => {
            Some(after.rss_bytes.saturating_sub(before.rss_bytes) as f64 / args.clients as f64)
        }
        _ => None,
    };
    if args.json {
        let result = serde_json::json!({
            "scenario": "capacity",
            "dialect": format!("{:?}", args.dialect).to_lowercase(),
            "clients": args.clients,
            "connect_seconds": connect_time.as_secs_f64(),
            "server_rss_before_bytes": baseline.map(|s| s.rss_bytes),
            "server_rss_after_bytes": loaded.map(|s| s.rss_bytes),
            "server_rss_per_connection_bytes": per_connection,
            "server_cpu_seconds": loaded.zip(baseline).map(|(a, b)| a.cpu.saturating_sub(b.cpu).as_secs_f64()),
            "frames_received": frames.load(Ordering::Relaxed),
            "bench_cpu_seconds": own.cpu.as_secs_f64(),
        });
        println!("{result}");
    } else {
        println!(
            "capacity: {} {:?} clients logged in in {:.2} s",
            args.clients,
            args.dialect,
            connect_time.as_secs_f64()
        );
        if let (Some(before), Some(after), Some(per)) = (baseline, loaded, per_connection) {
            println!(
                "server RSS: {:.1} MiB before, {:.1} MiB after {} s idle: {:.2} KiB per connection",
                before.rss_bytes as f64 / 1048576.0,
                after.rss_bytes as f64 / 1048576.0,
                args.settle,
                per / 1024.0
            );
            println!("server CPU: {:.2} s", after.cpu.saturating_sub(before.cpu).as_secs_f64());
        }
        println!(
            "frames received while idle: {}; load generator CPU: {:.2} s",
            frames.load(Ordering::Relaxed),
            own.cpu.as_secs_f64()
        );
    }
    Ok(())
}

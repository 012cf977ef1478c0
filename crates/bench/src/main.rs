//! `switchboard-bench`: a load generator for Switchboard (and for servers speaking the classic tutorial dialect).
//!
//! Scenarios are bounded in count and time and target loopback addresses only. This version has `capacity`: N
//! clients connect, log in and then sit idle while reading whatever the server sends; the tool reports connect time
//! and the server's resident memory per connection, read from `/proc` for the given server PID.
#![forbid(unsafe_code)]

mod capacity;
mod proc_stats;
mod turn;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(name = "switchboard-bench", version, about = "Load generator for Switchboard")]
struct Cli {
    #[command(subcommand)]
    scenario: Scenario,
}

/// Which protocol the simulated clients speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Dialect {
    /// Switchboard protocol v1.
    V1,
    /// The classic tutorial's messages.
    Tutorial,
}

#[derive(Debug, Subcommand)]
enum Scenario {
    /// N clients log in and idle; report the server's RSS per connection.
    Capacity(capacity::Args),
    /// TURN relay at a fixed rate between pairs of allocations; report loss, latency and server CPU per packet.
    Turn(turn::Args),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.scenario {
        // The TURN scenario runs on plain threads with batched system calls; the WebSocket ones on Tokio.
        Scenario::Turn(args) => turn::run(args),
        Scenario::Capacity(args) => runtime()?.block_on(capacity::run(args)),
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().enable_all().build()?)
}

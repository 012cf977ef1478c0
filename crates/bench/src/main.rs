//! `switchboard-bench`: a load generator for Switchboard (and for servers speaking the classic tutorial dialect).
//!
//! Scenarios are bounded in count and time and target loopback addresses only. This version has `capacity`: N
//! clients connect, log in and then sit idle while reading whatever the server sends; the tool reports connect time
//! and the server's resident memory per connection, read from `/proc` for the given server PID. `soak` (see
//! `scripts/soak.sh`): pairs of clients call each other in a loop for minutes, checking every relayed message and
//! the server's memory.
#![forbid(unsafe_code)]

mod capacity;
mod proc_stats;
mod soak;

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
    /// Pairs of clients log in, call, relay and log out in a loop; checks no message is lost and the server's memory
    /// does not grow.
    Soak(soak::Args),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async {
        match cli.scenario {
            Scenario::Capacity(args) => capacity::run(args).await,
            Scenario::Soak(args) => soak::run(args).await,
        }
    })
}

//! `switchboard-bench`: a load generator for Switchboard (and for servers speaking the classic tutorial dialect).
//!
//! Scenarios are bounded in count and time and target loopback addresses only: `capacity` (idle connections and the
//! server's memory per connection), `relay` (message throughput and latency), `cluster` (relay across two nodes), `storm` (login storm until every
//! presence view is complete), `calls` (call flows per second) and `turn` (TURN relay). docs/benchmarks.md describes
//! each. `soak` (see `scripts/soak.sh`) is a test rather than a benchmark: pairs of clients call each other in a loop
//! for minutes, checking every relayed message and the server's memory.
#![forbid(unsafe_code)]

mod capacity;
mod forwarder;
mod proc_stats;
mod soak;
mod turn;
// Signaling scenarios and what they share.
mod calls;
mod inflate;
mod list_memo;
mod net;
mod payload;
mod proto;
mod relay;
mod seq;
mod stats;
mod storm;
mod ws;

use clap::{Parser, Subcommand, ValueEnum};

// jemalloc, like the server: thousands of clients each grow a read buffer past 64 KiB for large frames (a storm's
// `welcome`), which glibc serves with `mmap` and gives back with `munmap` each time; page faults and unmaps were 16%
// of the tool's CPU in a 10,000-client storm.
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

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
    /// Caller/callee pairs relay offers, answers and candidates; report messages/s, latency, loss.
    Relay(relay::Args),
    /// The relay scenario across two nodes of a cluster: callers on one node, callees on the other.
    Cluster(relay::ClusterArgs),
    /// N clients log in at once; report the time until everyone sees everyone online.
    Storm(storm::Args),
    /// Full call flows (call, ring, accept, offer, answer, candidates, hangup); report flows/s and setup latency.
    Calls(calls::Args),
    /// Pairs of clients log in, call, relay and log out in a loop; checks no message is lost and the server's memory
    /// does not grow.
    Soak(soak::Args),
    /// Not a scenario: a deliberately minimal WebSocket forwarder (matchbox dialect, no validation, no state), run
    /// beside the servers to measure the floor of the relay scenario on this machine.
    Forwarder(forwarder::Args),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.scenario {
        // The TURN scenario runs on plain threads with batched system calls; the WebSocket ones on Tokio.
        Scenario::Turn(args) => turn::run(args),
        Scenario::Capacity(args) => runtime()?.block_on(capacity::run(args)),
        Scenario::Relay(args) => runtime()?.block_on(relay::run(args)),
        Scenario::Cluster(args) => runtime()?.block_on(relay::run_cluster(args)),
        Scenario::Storm(args) => runtime()?.block_on(storm::run(args)),
        Scenario::Calls(args) => runtime()?.block_on(calls::run(args)),
        Scenario::Soak(args) => runtime()?.block_on(soak::run(args)),
        Scenario::Forwarder(args) => forwarder::run(args),
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().enable_all().build()?)
}

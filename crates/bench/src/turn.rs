//! `turn`: TURN relay load at a fixed rate, from P pairs of allocations that send each other ChannelData.
//!
//! Setup per pair: two clients (on distinct loopback source addresses) allocate, and each binds channel 0x4000 to the
//! other's relayed address. Then a sender thread paces messages from every pair's first client at `--rate` messages
//! per second in total, in `sendmmsg` batches, and a receiver thread reads them at the second clients with
//! `recvmmsg`. Every message crosses the server twice (client to relay, relay to the peer client), so the server
//! relays two packets per message, which is how coturn's `turnutils_uclient` counts too (message out, echo back).
//!
//! The payload carries the pair, a sequence number and the send time, so the receiver measures one-way latency (one
//! clock, one process), loss, duplicates and reordering.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use hdrhistogram::Histogram;
use mio::{Events, Interest, Poll, Token};
use switchboard_turn::client::TurnClient;
use switchboard_udp::{RecvBatch, SendBatch};

use crate::proc_stats;

/// The channel every client binds to its pair's other relay.
const CHANNEL: u16 = 0x4000;
/// ChannelData header, then pair (u32), sequence (u64), send time in ns since the run's start (u64).
const HEADER: usize = 4;
const STAMP: usize = 4 + 8 + 8;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// STUN/TURN server (UDP), loopback only.
    #[arg(long, default_value = "127.0.0.1:3478")]
    pub server: SocketAddr,
    /// Static TURN user of the server, NAME:PASSWORD.
    #[arg(long, default_value = "tool:pass")]
    pub user: String,
    /// Pairs of allocations.
    #[arg(long, default_value_t = 10)]
    pub pairs: usize,
    /// Messages per second, all pairs together (each is relayed twice by the server).
    #[arg(long, default_value_t = 100_000)]
    pub rate: u64,
    /// Payload bytes per message (at least 20, for the stamp).
    #[arg(long, default_value_t = 200)]
    pub size: usize,
    /// Warm-up before measuring, in seconds.
    #[arg(long, default_value_t = 1.0)]
    pub warmup: f64,
    /// Measured time, in seconds.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// The server's PID, to report its CPU time per relayed packet.
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// What a run measured.
#[derive(Debug, serde::Serialize)]
pub struct Report {
    pub pairs: usize,
    pub target_messages_per_second: u64,
    pub sent: u64,
    pub received: u64,
    pub lost: u64,
    pub duplicates: u64,
    pub reordered: u64,
    /// Relayed packets per second in the measured window (two per message).
    pub relayed_packets_per_second: f64,
    pub latency_us_p50: u64,
    pub latency_us_p99: u64,
    pub latency_us_p999: u64,
    pub latency_us_max: u64,
    /// Server CPU seconds per 100,000 relayed packets in the measured window.
    pub server_cpu_s_per_100k_relayed: Option<f64>,
    pub server_cpu_percent: Option<f64>,
    pub own_cpu_percent: f64,
    /// Datagrams the kernel dropped at the server's full UDP sockets during the run (with `--server-pid`).
    pub server_socket_drops: Option<u64>,
    /// Datagrams dropped at this tool's own full sockets: loss the load generator, not the server, caused.
    pub own_socket_drops: u64,
}

/// Which messages of one pair arrived: one bit per sequence number (bounded by what was sent).
#[derive(Default)]
struct Arrivals {
    bits: Vec<u64>,
    highest: Option<u64>,
}

impl Arrivals {
    /// Records `seq`; returns (duplicate, reordered).
    fn record(&mut self, seq: u64, max_seq: u64) -> (bool, bool) {
        if seq > max_seq {
            // Not something we sent: count it as a duplicate rather than growing without bound.
            return (true, false);
        }
        let (word, bit) = ((seq / 64) as usize, seq % 64);
        if self.bits.len() <= word {
            self.bits.resize(word + 1, 0);
        }
        let duplicate = self.bits[word] & (1 << bit) != 0;
        self.bits[word] |= 1 << bit;
        let reordered = !duplicate && self.highest.is_some_and(|highest| seq < highest);
        self.highest = Some(self.highest.map_or(seq, |highest| highest.max(seq)));
        (duplicate, reordered)
    }
}

fn source_address(i: usize) -> IpAddr {
    IpAddr::from([127, 0, 0, 2 + (i % 250) as u8])
}

pub fn run(args: Args) -> anyhow::Result<()> {
    anyhow::ensure!(args.server.ip().is_loopback(), "the TURN scenario only targets loopback addresses");
    anyhow::ensure!((1..=4096).contains(&args.pairs), "--pairs must be 1 to 4096");
    anyhow::ensure!(args.size >= STAMP && args.size <= 1200, "--size must be {STAMP} to 1200 bytes");
    anyhow::ensure!((1..=2_000_000).contains(&args.rate), "--rate must be 1 to 2,000,000 messages per second");
    anyhow::ensure!(args.duration > 0.0 && args.duration <= 600.0, "--duration must be within (0, 600] seconds");
    anyhow::ensure!(args.warmup >= 0.0 && args.warmup <= 60.0, "--warmup must be within [0, 60] seconds");
    let (user, password) = args.user.split_once(':').context("--user must be NAME:PASSWORD")?;

    let mut senders = Vec::with_capacity(args.pairs);
    let mut receivers = Vec::with_capacity(args.pairs);
    for pair in 0..args.pairs {
        let bind = |i: usize| -> anyhow::Result<TurnClient> {
            // Drops in the tool's own sockets would count as the server's loss.
            let socket = switchboard_udp::bind_with_recv_buffer(SocketAddr::new(source_address(i), 0), 4 << 20)?;
            Ok(TurnClient::new(socket, args.server, user, password))
        };
        let mut a = bind(2 * pair)?;
        let mut b = bind(2 * pair + 1)?;
        let a_relay = a.allocate().with_context(|| format!("pair {pair}: allocate"))?.relayed;
        let b_relay = b.allocate().with_context(|| format!("pair {pair}: allocate"))?.relayed;
        a.channel_bind(CHANNEL, b_relay).with_context(|| format!("pair {pair}: channel bind"))?;
        b.channel_bind(CHANNEL, a_relay).with_context(|| format!("pair {pair}: channel bind"))?;
        senders.push(a);
        receivers.push(b);
    }

    // Counted from here, so that a server's earlier runs do not count (their sockets may have closed since: saturating).
    let server_drops_before = args.server_pid.map(proc_stats::udp_drops).transpose()?;
    let start = Instant::now();
    let warmup = Duration::from_secs_f64(args.warmup);
    let measure = Duration::from_secs_f64(args.duration);
    let stop_sending = Arc::new(AtomicBool::new(false));
    let stop_receiving = Arc::new(AtomicBool::new(false));
    // A bound on sequence numbers, so that a corrupted one cannot grow the receiver's bitmaps.
    let max_seq = (args.rate as f64 * (args.warmup + args.duration + 5.0)) as u64;

    let receiver = {
        let stop = stop_receiving.clone();
        let sockets: Vec<UdpSocket> =
            receivers.iter().map(|client| client.socket().try_clone()).collect::<Result<_, _>>()?;
        std::thread::Builder::new()
            .name("turn-receiver".into())
            .spawn(move || receive(sockets, start, (warmup, warmup + measure), max_seq, &stop))?
    };
    let sender = {
        let stop = stop_sending.clone();
        let sockets: Vec<UdpSocket> =
            senders.iter().map(|client| client.socket().try_clone()).collect::<Result<_, _>>()?;
        let (server, rate, size) = (args.server, args.rate, args.size);
        std::thread::Builder::new()
            .name("turn-sender".into())
            .spawn(move || send(sockets, server, rate, size, start, &stop))?
    };

    // The window is the receiver's: [start + warmup, start + warmup + measure).
    std::thread::sleep(warmup.saturating_sub(start.elapsed()));
    let server_before = args.server_pid.map(proc_stats::read).transpose()?;
    let own_before = proc_stats::own()?;
    std::thread::sleep((warmup + measure).saturating_sub(start.elapsed()));
    let server_after = args.server_pid.map(proc_stats::read).transpose()?;
    let own_after = proc_stats::own()?;
    let window = measure.as_secs_f64();
    stop_sending.store(true, Ordering::Release);
    let per_pair_sent = sender.join().map_err(|_| anyhow::anyhow!("the sender thread panicked"))??;
    // What is still in flight arrives well within this on loopback.
    std::thread::sleep(Duration::from_millis(500));
    stop_receiving.store(true, Ordering::Release);
    let outcome = receiver.join().map_err(|_| anyhow::anyhow!("the receiver thread panicked"))??;
    let server_drops_after = args.server_pid.map(proc_stats::udp_drops).transpose()?;
    let own_socket_drops = proc_stats::own_udp_drops()?;

    let sent: u64 = per_pair_sent.iter().sum();
    let unique = outcome.received - outcome.duplicates;
    let relayed_in_window = 2 * outcome.received_in_window;
    let server_cpu = server_before.zip(server_after).map(|(before, after)| (after.cpu - before.cpu).as_secs_f64());
    let report = Report {
        pairs: args.pairs,
        target_messages_per_second: args.rate,
        sent,
        received: outcome.received,
        lost: sent.saturating_sub(unique),
        duplicates: outcome.duplicates,
        reordered: outcome.reordered,
        relayed_packets_per_second: relayed_in_window as f64 / window,
        latency_us_p50: outcome.latency.value_at_quantile(0.5),
        latency_us_p99: outcome.latency.value_at_quantile(0.99),
        latency_us_p999: outcome.latency.value_at_quantile(0.999),
        latency_us_max: outcome.latency.max(),
        server_cpu_s_per_100k_relayed: server_cpu
            .filter(|_| relayed_in_window > 0)
            .map(|cpu| cpu / relayed_in_window as f64 * 100_000.0),
        server_cpu_percent: server_cpu.map(|cpu| cpu / window * 100.0),
        own_cpu_percent: (own_after.cpu - own_before.cpu).as_secs_f64() / window * 100.0,
        server_socket_drops: server_drops_before
            .zip(server_drops_after)
            .map(|(before, after)| after.saturating_sub(before)),
        own_socket_drops,
    };
    for client in senders.iter_mut().chain(receivers.iter_mut()) {
        // Free the allocations now rather than at their expiry; a failure here changes no result.
        let _ = client.refresh(0);
    }
    print(&report, args.json)?;
    Ok(())
}

fn print(report: &Report, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string(report)?);
        return Ok(());
    }
    println!("pairs                       {}", report.pairs);
    println!(
        "target                      {} msg/s ({} relayed packets/s)",
        report.target_messages_per_second,
        2 * report.target_messages_per_second
    );
    println!("relayed                     {:.0} packets/s", report.relayed_packets_per_second);
    println!("sent / received             {} / {}", report.sent, report.received);
    println!("lost / dup / reordered      {} / {} / {}", report.lost, report.duplicates, report.reordered);
    let server_drops = report.server_socket_drops.map_or_else(|| "?".to_string(), |drops| drops.to_string());
    println!("dropped at full sockets     server {server_drops}, load generator {}", report.own_socket_drops);
    println!(
        "latency us p50/p99/p99.9/max {} / {} / {} / {}",
        report.latency_us_p50, report.latency_us_p99, report.latency_us_p999, report.latency_us_max
    );
    if let (Some(per), Some(percent)) = (report.server_cpu_s_per_100k_relayed, report.server_cpu_percent) {
        println!("server cpu                  {percent:.0}% of a core, {per:.3} s per 100k relayed packets");
    }
    println!("load generator cpu          {:.0}% of a core", report.own_cpu_percent);
    Ok(())
}

/// Paces messages over the pairs until told to stop; returns how many each pair sent.
fn send(
    sockets: Vec<UdpSocket>,
    server: SocketAddr,
    rate: u64,
    size: usize,
    start: Instant,
    stop: &AtomicBool,
) -> anyhow::Result<Vec<u64>> {
    for socket in &sockets {
        socket.set_nonblocking(true)?;
    }
    let mut batch = SendBatch::new();
    let mut sequence = vec![0u64; sockets.len()];
    let mut message = vec![0u8; HEADER + size];
    message[..2].copy_from_slice(&CHANNEL.to_be_bytes());
    message[2..4].copy_from_slice(&(size as u16).to_be_bytes());
    let mut next_pair = 0;
    let mut sent = 0u64;
    while !stop.load(Ordering::Acquire) {
        let elapsed = start.elapsed();
        let due = (elapsed.as_secs_f64() * rate as f64) as u64;
        let mut backlog = due.saturating_sub(sent);
        if backlog == 0 {
            // Fine-grained pacing: sub-millisecond sleeps keep bursts small.
            std::thread::sleep(Duration::from_micros(200));
            continue;
        }
        // Spread the backlog over the pairs, a few messages each, so that batches stay per socket.
        let per_pair = backlog.div_ceil(sockets.len() as u64).clamp(1, 32);
        while backlog > 0 {
            let pair = next_pair;
            next_pair = (next_pair + 1) % sockets.len();
            let fd = sockets[pair].as_raw_fd();
            let count = per_pair.min(backlog);
            for _ in 0..count {
                let now = start.elapsed().as_nanos() as u64;
                message[HEADER..HEADER + 4].copy_from_slice(&(pair as u32).to_be_bytes());
                message[HEADER + 4..HEADER + 12].copy_from_slice(&sequence[pair].to_be_bytes());
                message[HEADER + 12..HEADER + 20].copy_from_slice(&now.to_be_bytes());
                sequence[pair] += 1;
                batch.push(fd, &message, server);
            }
            batch.flush(fd);
            backlog -= count;
            sent += count;
        }
    }
    Ok(sequence)
}

struct Outcome {
    received: u64,
    received_in_window: u64,
    duplicates: u64,
    reordered: u64,
    latency: Histogram<u64>,
}

/// Reads relayed messages at every pair's second client until told to stop.
fn receive(
    sockets: Vec<UdpSocket>,
    start: Instant,
    (window_from, window_to): (Duration, Duration),
    max_seq: u64,
    stop: &AtomicBool,
) -> anyhow::Result<Outcome> {
    let mut poll = Poll::new()?;
    let mut registered = Vec::with_capacity(sockets.len());
    for (index, socket) in sockets.into_iter().enumerate() {
        socket.set_nonblocking(true)?;
        let mut socket = mio::net::UdpSocket::from_std(socket);
        poll.registry().register(&mut socket, Token(index), Interest::READABLE)?;
        registered.push(socket);
    }
    let mut arrivals: Vec<Arrivals> = (0..registered.len()).map(|_| Arrivals::default()).collect();
    let mut latency = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let mut outcome_counts = (0u64, 0u64, 0u64, 0u64);
    let mut events = Events::with_capacity(1024);
    let mut recv = RecvBatch::new();
    let mut pending: Vec<usize> = Vec::new();
    while !stop.load(Ordering::Acquire) {
        let timeout = if pending.is_empty() { Duration::from_millis(50) } else { Duration::ZERO };
        poll.poll(&mut events, Some(timeout))?;
        let mut ready: Vec<usize> = std::mem::take(&mut pending);
        ready.extend(events.iter().map(|event| event.token().0));
        for index in ready {
            let Some(socket) = registered.get(index) else { continue };
            let Ok(count) = recv.recv(socket.as_raw_fd()) else { continue };
            let now = start.elapsed();
            let in_window = now >= window_from && now < window_to;
            for i in 0..count {
                let Some((data, _)) = recv.get(i) else { continue };
                let Some(stamp) = data.get(HEADER..HEADER + STAMP) else { continue };
                if data[..2] != CHANNEL.to_be_bytes() {
                    continue;
                }
                let pair = u32::from_be_bytes([stamp[0], stamp[1], stamp[2], stamp[3]]) as usize;
                let seq = u64::from_be_bytes(stamp[4..12].try_into().unwrap_or_default());
                let sent_ns = u64::from_be_bytes(stamp[12..20].try_into().unwrap_or_default());
                let Some(arrival) = arrivals.get_mut(pair) else { continue };
                let (duplicate, reordered) = arrival.record(seq, max_seq);
                outcome_counts.0 += 1;
                outcome_counts.2 += u64::from(duplicate);
                outcome_counts.3 += u64::from(reordered);
                if in_window {
                    outcome_counts.1 += 1;
                    let micros = (now.as_nanos() as u64).saturating_sub(sent_ns) / 1000;
                    latency.saturating_record(micros.max(1));
                }
            }
            if count == switchboard_udp::BATCH {
                pending.push(index);
            }
        }
    }
    Ok(Outcome {
        received: outcome_counts.0,
        received_in_window: outcome_counts.1,
        duplicates: outcome_counts.2,
        reordered: outcome_counts.3,
        latency,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arrivals_count_duplicates_and_reordering() {
        let mut arrivals = Arrivals::default();
        assert_eq!(arrivals.record(0, 100), (false, false));
        assert_eq!(arrivals.record(2, 100), (false, false));
        assert_eq!(arrivals.record(1, 100), (false, true));
        assert_eq!(arrivals.record(2, 100), (true, false));
        assert_eq!(arrivals.record(70, 100), (false, false));
        assert_eq!(arrivals.record(1000, 100), (true, false), "never-sent numbers do not grow the bitmap");
        assert_eq!(arrivals.bits.len(), 2);
    }
}

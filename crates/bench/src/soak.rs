//! The `soak` scenario: pairs of clients log in, call each other, exchange an offer, an answer and candidates, hang up
//! and log out, over and over for a bounded time. Every relayed message is checked (arrived, in order), and the
//! server's resident memory is sampled from `/proc/PID/status`: its median over the first and the last seconds of the
//! steady phase (after a warm-up) must not differ by more than a tolerance. Not part of the test run; see
//! `scripts/soak.sh`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use crate::proc_stats;

/// Options of `soak`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// WebSocket URL of the server (loopback only).
    #[arg(long, default_value = "ws://127.0.0.1:8080/ws")]
    url: String,
    /// Number of clients (pairs of caller and callee; at most 10,000).
    #[arg(long, default_value_t = 2000)]
    clients: usize,
    /// How long the clients keep calling.
    #[arg(long, default_value = "300", value_name = "SECONDS")]
    duration: u64,
    /// Warm-up before the steady phase whose memory is compared [default: a quarter of the duration, at most 60 s].
    #[arg(long, value_name = "SECONDS")]
    warmup: Option<u64>,
    /// Server process id, to sample its RSS and CPU from /proc.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Candidates each side sends per call.
    #[arg(long, default_value_t = 4)]
    candidates: u32,
    /// Longest pause between two calls of a pair (a random part of it is taken each time).
    #[arg(long, default_value = "2000", value_name = "MILLISECONDS")]
    pause: u64,
    /// Allowed RSS growth over the steady phase: this many MiB...
    #[arg(long, default_value_t = 32)]
    rss_tolerance_mib: u64,
    /// ...plus this percentage of the RSS at its start.
    #[arg(long, default_value_t = 10)]
    rss_tolerance_percent: u64,
    /// How long one expected message may take to arrive before it counts as lost.
    #[arg(long, default_value = "10", value_name = "SECONDS")]
    message_timeout: u64,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

/// Source address of client `c`: one per client (127.0.1.1, 127.0.1.2, ...), so that the server's per-address
/// limits see what they would see from real users, and no address runs out of ports.
fn source_address(c: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 1 + (c / 250) as u8, 1 + (c % 250) as u8))
}

fn target(url: &str) -> anyhow::Result<SocketAddr> {
    let rest = url.strip_prefix("ws://").context("only ws:// URLs")?;
    let authority = rest.split('/').next().unwrap_or_default();
    let addr: SocketAddr = authority.parse().context("the URL must name an IP address and port")?;
    anyhow::ensure!(addr.ip().is_loopback(), "load goes to loopback addresses only, not {}", addr.ip());
    Ok(addr)
}

/// What all pairs count.
#[derive(Debug, Default)]
struct Totals {
    cycles: AtomicU64,
    failed_cycles: AtomicU64,
    relayed: AtomicU64,
    lost: AtomicU64,
    /// The first failures, for the report.
    failures: Mutex<Vec<String>>,
}

impl Totals {
    fn fail(&self, what: String) {
        self.failed_cycles.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut failures) = self.failures.lock() {
            if failures.len() < 10 {
                failures.push(what);
            }
        }
    }
}

/// A cycle went wrong; `lost` when an expected message never came.
#[derive(Debug)]
struct CycleError {
    lost: bool,
    what: String,
}

type Ws = WebSocketStream<TcpStream>;

/// One client's socket.
struct Peer {
    ws: Ws,
    name: String,
}

impl Peer {
    async fn connect(url: &str, addr: SocketAddr, source: IpAddr, name: String) -> Result<Self, CycleError> {
        let fail = |what: String| CycleError { lost: false, what };
        let socket = TcpSocket::new_v4().map_err(|e| fail(format!("socket: {e}")))?;
        socket.bind(SocketAddr::new(source, 0)).map_err(|e| fail(format!("bind {source}: {e}")))?;
        let stream = tokio::time::timeout(Duration::from_secs(10), socket.connect(addr))
            .await
            .map_err(|_| fail(format!("connect from {source} timed out")))?
            .map_err(|e| fail(format!("connect from {source}: {e}")))?;
        let _ = stream.set_nodelay(true);
        let (ws, _) = tokio::time::timeout(Duration::from_secs(10), tokio_tungstenite::client_async(url, stream))
            .await
            .map_err(|_| fail(format!("upgrade from {source} timed out")))?
            .map_err(|e| fail(format!("upgrade from {source}: {e}")))?;
        Ok(Self { ws, name })
    }

    async fn send(&mut self, value: Value) -> Result<(), CycleError> {
        self.ws
            .send(Message::text(value.to_string()))
            .await
            .map_err(|e| CycleError { lost: false, what: format!("{} cannot send: {e}", self.name) })
    }

    /// Reads until a frame of type `kind`; presence and other bookkeeping frames are skipped, errors fail.
    async fn expect(&mut self, kind: &str, timeout: Duration) -> Result<Value, CycleError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let frame = match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Err(_) => {
                    return Err(CycleError {
                        lost: true,
                        what: format!("{} never got {kind} within {timeout:?}", self.name),
                    })
                }
                Ok(Some(Ok(frame))) => frame,
                Ok(other) => {
                    return Err(CycleError {
                        lost: true,
                        what: format!("{}'s connection ended while waiting for {kind}: {other:?}", self.name),
                    })
                }
            };
            let Message::Text(text) = frame else { continue };
            // Presence deltas are most of the traffic: skip them without parsing.
            if text.starts_with(r#"{"type":"presence""#) {
                continue;
            }
            let value: Value = serde_json::from_str(&text)
                .map_err(|e| CycleError { lost: false, what: format!("{} got bad JSON: {e}", self.name) })?;
            match value["type"].as_str() {
                Some(t) if t == kind => return Ok(value),
                Some("error") => {
                    return Err(CycleError {
                        lost: false,
                        what: format!("{} got an error waiting for {kind}: {text}", self.name),
                    })
                }
                _ => {}
            }
        }
    }

    async fn login(&mut self, timeout: Duration) -> Result<(), CycleError> {
        self.send(json!({"type": "login", "id": 1, "name": self.name})).await?;
        self.expect("welcome", timeout).await.map(drop)
    }

    async fn logout(mut self, timeout: Duration) -> Result<(), CycleError> {
        self.send(json!({"type": "logout", "id": 99})).await?;
        self.expect("ack", timeout).await?;
        // The server closes with 4004; read up to it so the socket ends cleanly.
        let _ = tokio::time::timeout(timeout, async { while let Some(Ok(_)) = self.ws.next().await {} }).await;
        Ok(())
    }
}

/// Checks that `from` relayed `kind` with `marker` in its payload to `to`.
async fn relayed(to: &mut Peer, kind: &str, from: &str, marker: &str, timeout: Duration) -> Result<(), CycleError> {
    let message = to.expect(kind, timeout).await?;
    let payload = message.get("sdp").or_else(|| message.get("candidate")).map(Value::to_string).unwrap_or_default();
    if message["from"] != from || !payload.contains(marker) {
        return Err(CycleError {
            lost: true,
            what: format!("{} expected {kind} {marker} from {from}, got {message}", to.name),
        });
    }
    Ok(())
}

/// One call between a fresh caller and callee, from login to logout.
async fn cycle(
    url: &str,
    addr: SocketAddr,
    pair: usize,
    round: u64,
    candidates: u32,
    timeout: Duration,
    totals: &Totals,
) -> Result<(), CycleError> {
    let (caller_name, callee_name) = (format!("s{pair}a{round}"), format!("s{pair}b{round}"));
    let mut caller = Peer::connect(url, addr, source_address(2 * pair), caller_name.clone()).await?;
    let mut callee = Peer::connect(url, addr, source_address(2 * pair + 1), callee_name.clone()).await?;
    caller.login(timeout).await?;
    callee.login(timeout).await?;

    caller.send(json!({"type": "call", "id": 2, "to": callee_name})).await?;
    let ringing = caller.expect("ringing", timeout).await?;
    let call_id = ringing["callId"].as_str().unwrap_or_default().to_owned();
    let ring = callee.expect("ring", timeout).await?;
    if ring["callId"] != call_id.as_str() || ring["from"] != caller_name.as_str() {
        return Err(CycleError { lost: true, what: format!("ring does not match the call: {ring} vs {ringing}") });
    }
    callee.send(json!({"type": "accept", "id": 3, "callId": call_id})).await?;
    callee.expect("ack", timeout).await?;
    caller.expect("accepted", timeout).await?;

    let marker = format!("soak {pair} {round}");
    let offer = json!({"type": "offer", "to": callee_name, "callId": call_id,
        "sdp": {"type": "offer", "sdp": format!("v=0\r\no=- {marker} offer\r\n")}});
    caller.send(offer).await?;
    relayed(&mut callee, "offer", &caller_name, &marker, timeout).await?;
    let answer = json!({"type": "answer", "to": caller_name, "callId": call_id,
        "sdp": {"type": "answer", "sdp": format!("v=0\r\no=- {marker} answer\r\n")}});
    callee.send(answer).await?;
    relayed(&mut caller, "answer", &callee_name, &marker, timeout).await?;
    // Candidates both ways at once, then each side checks the other's arrived complete and in order.
    for n in 0..candidates {
        for (from, to) in [(&mut caller, &callee_name), (&mut callee, &caller_name)] {
            let candidate = format!("candidate:{n} 1 udp 2122260223 192.0.2.1 {} typ host {marker}", 50_000 + n);
            from.send(json!({"type": "candidate", "to": to, "candidate": {"candidate": candidate, "sdpMid": "0"}}))
                .await?;
        }
    }
    for n in 0..candidates {
        let tag = format!("candidate:{n} ");
        relayed(&mut callee, "candidate", &caller_name, &tag, timeout).await?;
        relayed(&mut caller, "candidate", &callee_name, &tag, timeout).await?;
    }
    totals.relayed.fetch_add(2 + 2 * u64::from(candidates), Ordering::Relaxed);

    caller.send(json!({"type": "hangup", "callId": call_id})).await?;
    let hangup = callee.expect("hangup", timeout).await?;
    if hangup["reason"] != "hangup" {
        return Err(CycleError { lost: true, what: format!("unexpected hangup: {hangup}") });
    }
    caller.logout(timeout).await?;
    callee.logout(timeout).await?;
    Ok(())
}

/// Raises this process's file limit to its hard limit (as `capacity` does).
fn raise_fd_limit() -> u64 {
    let Ok(limits) = std::fs::read_to_string("/proc/self/limits") else { return 0 };
    let hard = limits
        .lines()
        .find(|line| line.starts_with("Max open files"))
        .and_then(|line| line.split_whitespace().nth(4))
        .and_then(|value| value.parse::<u64>().ok())
        .unwrap_or(0);
    let _ = std::process::Command::new("prlimit")
        .args([format!("--pid={}", std::process::id()), format!("--nofile={hard}:{hard}")])
        .status();
    hard
}

fn median(mut values: Vec<u64>) -> Option<u64> {
    values.sort_unstable();
    values.get(values.len() / 2).copied()
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let addr = target(&args.url)?;
    anyhow::ensure!((2..=10_000).contains(&args.clients), "clients must be between 2 and 10,000");
    anyhow::ensure!((10..=3600).contains(&args.duration), "duration must be between 10 and 3600 seconds");
    let fd_limit = raise_fd_limit();
    anyhow::ensure!(
        fd_limit == 0 || (args.clients as u64) < fd_limit.saturating_sub(64),
        "{} clients need more file descriptors than the limit of {fd_limit}",
        args.clients
    );
    let pairs = args.clients / 2;
    let duration = Duration::from_secs(args.duration);
    let warmup = Duration::from_secs(args.warmup.unwrap_or((args.duration / 4).min(60))).min(duration / 2);
    let timeout = Duration::from_secs(args.message_timeout.max(1));
    let started = Instant::now();
    let deadline = started + duration;
    let totals = Arc::new(Totals::default());
    let stop = Arc::new(AtomicBool::new(false));
    let before = args.server_pid.map(proc_stats::read).transpose()?;

    // RSS samples, one a second, with their time since the start.
    let samples: Arc<Mutex<Vec<(Duration, u64)>>> = Arc::default();
    let sampler = args.server_pid.map(|pid| {
        let (samples, stop) = (samples.clone(), stop.clone());
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(Duration::from_secs(1));
            while !stop.load(Ordering::Relaxed) {
                ticker.tick().await;
                if let (Ok(stats), Ok(mut samples)) = (proc_stats::read(pid), samples.lock()) {
                    samples.push((started.elapsed(), stats.rss_bytes));
                }
            }
        })
    });

    let mut tasks = Vec::with_capacity(pairs);
    for pair in 0..pairs {
        let (url, totals, stop) = (args.url.clone(), totals.clone(), stop.clone());
        let (candidates, pause) = (args.candidates, args.pause);
        // Starts are spread over the first seconds, so that the start is not one login storm.
        let offset = Duration::from_millis((pair as u64 * 7919) % 5000);
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep(offset).await;
            let mut round = 0u64;
            while Instant::now() < deadline && !stop.load(Ordering::Relaxed) {
                match cycle(&url, addr, pair, round, candidates, timeout, &totals).await {
                    Ok(()) => {
                        totals.cycles.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(error) => {
                        if error.lost {
                            totals.lost.fetch_add(1, Ordering::Relaxed);
                        }
                        totals.fail(error.what);
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
                round += 1;
                let jitter = (pair as u64).wrapping_mul(2_654_435_761).wrapping_add(round * 40_503) % pause.max(1);
                tokio::time::sleep(Duration::from_millis(jitter)).await;
            }
        }));
    }
    let mut last_report = Instant::now();
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(500)).await;
        if !args.json && last_report.elapsed() >= Duration::from_secs(10) {
            last_report = Instant::now();
            let rss = samples.lock().ok().and_then(|s| s.last().map(|(_, rss)| *rss));
            eprintln!(
                "  {:>4} s: {} calls, {} failed, server RSS {}",
                started.elapsed().as_secs(),
                totals.cycles.load(Ordering::Relaxed),
                totals.failed_cycles.load(Ordering::Relaxed),
                rss.map_or("?".into(), |rss| format!("{:.1} MiB", rss as f64 / 1048576.0)),
            );
        }
    }
    // Let every pair finish its call in progress (each wait is bounded by the message timeout).
    let finish = Instant::now() + timeout * 12;
    for task in tasks {
        let left = finish.saturating_duration_since(Instant::now());
        if tokio::time::timeout(left, task).await.is_err() {
            totals.fail("a pair did not finish its last call in time".into());
        }
    }
    stop.store(true, Ordering::Relaxed);
    if let Some(sampler) = sampler {
        let _ = tokio::time::timeout(Duration::from_secs(2), sampler).await;
    }
    // With every client gone, the server's memory once idle.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = args.server_pid.map(proc_stats::read).transpose()?;

    let samples = samples.lock().map(|s| s.clone()).unwrap_or_default();
    let window = Duration::from_secs(10).min((duration - warmup) / 3);
    let in_range = |from: Duration, to: Duration| -> Vec<u64> {
        samples.iter().filter(|(t, _)| *t >= from && *t < to).map(|(_, rss)| *rss).collect()
    };
    let steady_start = median(in_range(warmup, warmup + window));
    let steady_end = median(in_range(duration - window, duration));
    let allowed = steady_start.map(|start| args.rss_tolerance_mib * 1048576 + start * args.rss_tolerance_percent / 100);
    let growth = steady_start.zip(steady_end).map(|(start, end)| end as i64 - start as i64);
    let memory_ok = match (growth, allowed) {
        (Some(growth), Some(allowed)) => growth <= allowed as i64,
        _ => true,
    };
    let cycles = totals.cycles.load(Ordering::Relaxed);
    let failed = totals.failed_cycles.load(Ordering::Relaxed);
    let lost = totals.lost.load(Ordering::Relaxed);
    let failures = totals.failures.lock().map(|f| f.clone()).unwrap_or_default();
    let ok = failed == 0 && lost == 0 && memory_ok && cycles > 0;
    let mib = |bytes: u64| bytes as f64 / 1048576.0;
    if args.json {
        let result = json!({
            "scenario": "soak",
            "clients": pairs * 2,
            "duration_seconds": args.duration,
            "warmup_seconds": warmup.as_secs(),
            "calls": cycles,
            "failed_calls": failed,
            "relayed_messages_checked": totals.relayed.load(Ordering::Relaxed),
            "lost_messages": lost,
            "failures": failures,
            "server_rss_steady_start_bytes": steady_start,
            "server_rss_steady_end_bytes": steady_end,
            "server_rss_allowed_growth_bytes": allowed,
            "server_rss_before_bytes": before.map(|s| s.rss_bytes),
            "server_rss_after_bytes": after.map(|s| s.rss_bytes),
            "server_cpu_seconds": after.zip(before).map(|(a, b)| a.cpu.saturating_sub(b.cpu).as_secs_f64()),
            "ok": ok,
        });
        println!("{result}");
    } else {
        println!(
            "soak: {} clients ({pairs} pairs) for {} s, steady phase after {} s",
            pairs * 2,
            args.duration,
            warmup.as_secs()
        );
        println!(
            "calls: {cycles} completed, {failed} failed; relayed messages checked: {}, lost: {lost}",
            totals.relayed.load(Ordering::Relaxed)
        );
        for failure in &failures {
            println!("  failure: {failure}");
        }
        if let (Some(start), Some(end), Some(allowed)) = (steady_start, steady_end, allowed) {
            println!(
                "server RSS over the steady phase: {:.1} MiB at its start, {:.1} MiB at its end ({:+.1} MiB, {:.1} MiB allowed)",
                mib(start),
                mib(end),
                end as f64 / 1048576.0 - start as f64 / 1048576.0,
                mib(allowed)
            );
        }
        if let (Some(before), Some(after)) = (before, after) {
            println!(
                "server RSS: {:.1} MiB before the clients, {:.1} MiB after they left; server CPU {:.1} s",
                mib(before.rss_bytes),
                mib(after.rss_bytes),
                after.cpu.saturating_sub(before.cpu).as_secs_f64()
            );
        }
        println!("soak: {}", if ok { "ok" } else { "FAILED" });
    }
    anyhow::ensure!(ok, "the soak failed");
    Ok(())
}

//! The `calls` scenario: pairs run complete v1 call flows back to back (call, ring, accept, offer, answer, trickled
//! candidates both ways, hangup) and the tool reports flows per second and setup latency (`call` sent until the
//! caller holds the answer, the moment media could start).

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use serde_json::{json, Value};
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::time::Instant;

use crate::net::{self, Target};
use crate::payload::{self, SdpKind};
use crate::proto;
use crate::stats::{Recorder, RunOptions, SharedHistogram, Summary, Table, Usage, UsageDelta};
use crate::ws::WsConn;

/// Options of `calls`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// WebSocket URL of the server (loopback only, protocol v1).
    #[arg(long, default_value = "ws://127.0.0.1:8080/ws")]
    pub url: String,
    /// Caller/callee pairs, each running one call after another.
    #[arg(long, default_value_t = 50)]
    pub pairs: usize,
    /// Seconds of calls before measuring.
    #[arg(long, default_value_t = 1.0, value_name = "SECONDS")]
    pub warmup: f64,
    /// Seconds measured.
    #[arg(long, default_value_t = 10.0, value_name = "SECONDS")]
    pub duration: f64,
    /// ICE candidates each side sends per call.
    #[arg(long, default_value_t = 4)]
    pub candidates: usize,
    /// Size of the SDP text of offers and answers.
    #[arg(long, default_value_t = 3000, value_name = "BYTES")]
    pub sdp_bytes: usize,
    /// Pairs logging in at once.
    #[arg(long, default_value_t = 50)]
    pub concurrency: usize,
    /// Options every signaling scenario takes.
    #[command(flatten)]
    pub run: RunOptions,
}

/// Longest wait for any single step of a flow.
const STEP: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy)]
struct Schedule {
    warm_end: Instant,
    measure_end: Instant,
}

#[derive(Debug, Default)]
struct PairResult {
    /// Flows completed within the measured interval.
    flows: u64,
    /// Flows completed in all.
    all_flows: u64,
    failure: Option<String>,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    anyhow::ensure!(args.pairs >= 1, "--pairs must be at least 1");
    anyhow::ensure!(args.candidates <= 100, "--candidates is at most 100");
    anyhow::ensure!((0.0..=3600.0).contains(&args.warmup), "--warmup is 0 to 3600 seconds");
    anyhow::ensure!(args.duration > 0.0 && args.duration <= 3600.0, "--duration is above 0 and at most 3600 seconds");
    anyhow::ensure!(args.sdp_bytes <= 40_000, "--sdp-bytes must fit Switchboard's cap");
    let target = Target::parse(&args.url)?;
    net::ensure_fd_room(args.pairs * 2)?;
    let outcome = tokio::time::timeout(Duration::from_secs(args.run.timeout), measure(&args, &target))
        .await
        .map_err(|_| anyhow::anyhow!("calls did not finish within --timeout {} s", args.run.timeout))??;
    outcome.print(&args);
    outcome.verdict()
}

struct Outcome {
    login: Duration,
    measured: Duration,
    pairs: Vec<PairResult>,
    setup: Summary,
    flow: Summary,
    usage: UsageDelta,
}

async fn measure(args: &Args, target: &Target) -> anyhow::Result<Outcome> {
    let started = Instant::now();
    let prefix = args.run.prefix.clone().unwrap_or_else(|| proto::default_prefix("ca"));
    let (setup, flow) = (SharedHistogram::new(), SharedHistogram::new());
    let (ready_tx, mut ready_rx) = mpsc::channel::<Result<(), String>>(args.pairs);
    let (go_tx, go_rx) = watch::channel(None::<Schedule>);
    let gate = Arc::new(Semaphore::new(args.concurrency.max(1)));
    let description = |kind: SdpKind| json!({"type": kind.as_str(), "sdp": payload::sdp_text(kind, args.sdp_bytes)});
    let offer = Arc::new(description(SdpKind::Offer).to_string());
    let answer = Arc::new(description(SdpKind::Answer).to_string());
    let mut tasks = Vec::with_capacity(args.pairs);
    for p in 0..args.pairs {
        let names = [format!("{prefix}{p}a"), format!("{prefix}{p}b")];
        let (ready_tx, mut go_rx, gate) = (ready_tx.clone(), go_rx.clone(), gate.clone());
        let (setup, flow, target) = (Recorder::new(setup.clone()), Recorder::new(flow.clone()), target.clone());
        let script = Script::new(&names, p, args.candidates, offer.clone(), answer.clone());
        tasks.push(tokio::spawn(async move {
            let permit = gate.acquire_owned().await;
            let logged_in = async {
                let a = proto::login_v1(&target, p * 2, &names[0]).await?;
                let b = proto::login_v1(&target, p * 2 + 1, &names[1]).await?;
                anyhow::Ok([a, b])
            }
            .await;
            drop(permit);
            let mut conns = match logged_in {
                Ok(conns) => conns,
                Err(e) => {
                    let _ = ready_tx.send(Err(format!("pair {p}: {e:#}"))).await;
                    return PairResult { failure: Some(format!("{e:#}")), ..PairResult::default() };
                }
            };
            let _ = ready_tx.send(Ok(())).await;
            let mut result = PairResult::default();
            let schedule = loop {
                if let Some(schedule) = *go_rx.borrow_and_update() {
                    break schedule;
                }
                if go_rx.changed().await.is_err() {
                    return result;
                }
            };
            let mut recorders = (setup, flow);
            if let Err(e) = script.run(&mut conns, schedule, &mut recorders, &mut result).await {
                result.failure = Some(format!("{e:#}"));
            }
            for conn in &mut conns {
                proto::logout_v1(conn).await;
            }
            result
        }));
    }
    drop(ready_tx);
    for _ in 0..args.pairs {
        match ready_rx.recv().await {
            Some(Ok(())) => {}
            Some(Err(e)) => anyhow::bail!("login failed: {e}"),
            None => anyhow::bail!("a pair task ended before logging in"),
        }
    }
    let login = started.elapsed();
    let now = Instant::now();
    let warm_end = now + Duration::try_from_secs_f64(args.warmup).unwrap_or_default();
    let measure_end = warm_end + Duration::try_from_secs_f64(args.duration).unwrap_or_default();
    go_tx.send(Some(Schedule { warm_end, measure_end })).context("no pair is left")?;
    tokio::time::sleep_until(warm_end).await;
    let usage = Usage::start(args.run.server_pid)?;
    let measuring = Instant::now();
    tokio::time::sleep_until(measure_end).await;
    let measured = measuring.elapsed();
    let usage = usage.finish(measured)?;
    let mut pairs = Vec::with_capacity(tasks.len());
    for task in tasks {
        pairs.push(task.await.context("a pair task panicked")?);
    }
    Ok(Outcome { login, measured, pairs, setup: setup.summary(), flow: flow.summary(), usage })
}

/// The messages of one pair's calls; only the call id changes from call to call.
struct Script {
    names: [String; 2],
    candidates: usize,
    offer: Arc<String>,
    answer: Arc<String>,
    candidate_json: [String; 2],
}

impl Script {
    fn new(names: &[String; 2], index: usize, candidates: usize, offer: Arc<String>, answer: Arc<String>) -> Self {
        let candidate = |side: usize| payload::candidate_json((index * 2 + side) as u32, 250).to_string();
        Self { names: names.clone(), candidates, offer, answer, candidate_json: [candidate(0), candidate(1)] }
    }

    async fn run(
        &self,
        conns: &mut [WsConn; 2],
        schedule: Schedule,
        recorders: &mut (Recorder, Recorder),
        result: &mut PairResult,
    ) -> anyhow::Result<()> {
        let [a, b] = conns;
        let (caller, callee) = (&self.names[0], &self.names[1]);
        let mut request_id = 0u64;
        while Instant::now() < schedule.measure_end {
            request_id += 1;
            let started = Instant::now();
            a.queue_text(format!(r#"{{"type":"call","id":{request_id},"to":"{callee}"}}"#).as_bytes());
            a.flush().await?;
            let call_id =
                step(b, "ring", |m| Ok(proto::has_type(m, "ring").then(|| field(m, "callId")).flatten())).await?;
            // The id comes from the server: escape it like any string put into JSON.
            let call_id = Value::String(call_id).to_string();
            step(a, "ringing", |m| Ok(proto::has_type(m, "ringing").then_some(()))).await?;
            b.queue_text(format!(r#"{{"type":"accept","id":{request_id},"callId":{call_id}}}"#).as_bytes());
            b.flush().await?;
            step(a, "accepted", |m| Ok(proto::has_type(m, "accepted").then_some(()))).await?;
            a.queue_text(
                format!(r#"{{"type":"offer","to":"{callee}","callId":{call_id},"sdp":{}}}"#, self.offer).as_bytes(),
            );
            a.flush().await?;
            step(b, "offer", |m| Ok(proto::has_type(m, "offer").then_some(()))).await?;
            b.queue_text(
                format!(r#"{{"type":"answer","to":"{caller}","callId":{call_id},"sdp":{}}}"#, self.answer).as_bytes(),
            );
            b.flush().await?;
            step(a, "answer", |m| Ok(proto::has_type(m, "answer").then_some(()))).await?;
            let setup = started.elapsed();
            for _ in 0..self.candidates {
                let to_b = format!(
                    r#"{{"type":"candidate","to":"{callee}","callId":{call_id},"candidate":{}}}"#,
                    self.candidate_json[0]
                );
                a.queue_text(to_b.as_bytes());
                let to_a = format!(
                    r#"{{"type":"candidate","to":"{caller}","callId":{call_id},"candidate":{}}}"#,
                    self.candidate_json[1]
                );
                b.queue_text(to_a.as_bytes());
            }
            a.flush().await?;
            b.flush().await?;
            for conn in [&mut *a, &mut *b] {
                let mut seen = 0;
                step(conn, "candidates", |m| {
                    if proto::has_type(m, "candidate") {
                        seen += 1;
                    }
                    Ok((seen == self.candidates).then_some(()))
                })
                .await?;
            }
            a.queue_text(format!(r#"{{"type":"hangup","callId":{call_id}}}"#).as_bytes());
            a.flush().await?;
            step(b, "hangup", |m| Ok(proto::has_type(m, "hangup").then_some(()))).await?;
            let ended = Instant::now();
            result.all_flows += 1;
            if ended >= schedule.warm_end && ended < schedule.measure_end {
                result.flows += 1;
                recorders.0.record(micros(setup));
                recorders.1.record(micros(ended - started));
            }
        }
        Ok(())
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// Waits (at most [`STEP`]) for the message `pick` accepts; a v1 `error` fails the flow.
async fn step<T>(
    conn: &mut WsConn,
    what: &str,
    mut pick: impl FnMut(&[u8]) -> anyhow::Result<Option<T>>,
) -> anyhow::Result<T> {
    let wait = conn.wait_for(|m| {
        proto::refuse_error(m)?;
        pick(m)
    });
    tokio::time::timeout(STEP, wait).await.map_err(|_| anyhow::anyhow!("no {what} within {} s", STEP.as_secs()))?
}

/// A string field of a JSON message.
fn field(message: &[u8], name: &str) -> Option<String> {
    match serde_json::from_slice::<Value>(message).ok()?.get(name)? {
        Value::String(s) => Some(s.clone()),
        _ => None,
    }
}

impl Outcome {
    fn print(&self, args: &Args) {
        let flows: u64 = self.pairs.iter().map(|p| p.flows).sum();
        let all: u64 = self.pairs.iter().map(|p| p.all_flows).sum();
        let failed = self.pairs.iter().filter(|p| p.failure.is_some()).count();
        let first_failure = self.pairs.iter().find_map(|p| p.failure.as_deref());
        let seconds = self.measured.as_secs_f64().max(1e-9);
        let rate = flows as f64 / seconds;
        if args.run.json {
            let mut result = json!({
                "scenario": "calls",
                "pairs": args.pairs,
                "candidates": args.candidates,
                "login_seconds": self.login.as_secs_f64(),
                "measured_seconds": seconds,
                "flows_measured": flows,
                "flows_total": all,
                "flows_per_second": rate,
                "setup_latency": self.setup.json(),
                "flow_duration": self.flow.json(),
                "failed_pairs": failed,
                "first_failure": first_failure,
            });
            crate::relay::merge(&mut result, self.usage.json(flows));
            println!("{result}");
            return;
        }
        let mut table = Table::default();
        table.row("pairs", args.pairs.to_string());
        table.row("logged in in", format!("{:.2} s", self.login.as_secs_f64()));
        table.row("measured", format!("{seconds:.2} s after {} s warm-up", args.warmup));
        table.row("call flows", format!("{rate:.1} /s ({flows} measured, {all} in all)"));
        table.row("setup (call to answer)", self.setup.human());
        table.row("whole flow (call to hangup)", self.flow.human());
        if failed > 0 {
            table.row("failed pairs", format!("{failed} (first: {})", first_failure.unwrap_or_default()));
        }
        self.usage.rows(flows, "flow", &mut table);
        print!("{}", table.render("calls (v1)"));
    }

    fn verdict(&self) -> anyhow::Result<()> {
        let failed = self.pairs.iter().filter(|p| p.failure.is_some()).count();
        anyhow::ensure!(failed == 0, "{failed} pairs failed");
        anyhow::ensure!(self.pairs.iter().any(|p| p.flows > 0), "no call flow completed in the measured interval");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_read_from_json() {
        assert_eq!(field(br#"{"type":"ring","callId":"8f3a","from":"a"}"#, "callId").as_deref(), Some("8f3a"));
        assert_eq!(field(br#"{"type":"ring","callId":7}"#, "callId"), None);
        assert_eq!(field(b"not json", "callId"), None);
    }
}

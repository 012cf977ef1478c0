//! Each signaling scenario of `switchboard-bench`, briefly, against a real Switchboard on 127.0.0.1 with an
//! ephemeral port: the binary must finish in time, exit 0 and report a clean run (nothing lost, duplicated or
//! refused) with sane numbers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use serde_json::Value;
use switchboard_server::{Config, Server};

/// Upper bound of one run of the binary.
const RUN: Duration = Duration::from_secs(60);

async fn start_server() -> Server {
    let mut config = Config { http: "127.0.0.1:0".parse().unwrap(), ..Config::default() };
    // The load is the point here: no per-connection message rate limit, and no TURN listener.
    config.core.rate_per_second = 0;
    config.turn = None;
    let server = tokio::time::timeout(Duration::from_secs(5), Server::start(config)).await.unwrap().unwrap();
    assert!(server.http_addr().ip().is_loopback());
    server
}

/// Runs the binary with `args` and returns its exit status, stdout and stderr.
async fn bench(args: &[String]) -> (bool, String, String) {
    let child =
        tokio::process::Command::new(env!("CARGO_BIN_EXE_switchboard-bench")).args(args).kill_on_drop(true).output();
    let output = tokio::time::timeout(RUN, child).await.expect("the load generator did not finish in time").unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Runs a scenario with `--json` and returns its result object, failing on a non-zero exit.
async fn bench_json(args: &[&str]) -> Value {
    let mut args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    args.push("--json".into());
    args.extend(["--server-pid".into(), std::process::id().to_string()]);
    let (ok, stdout, stderr) = bench(&args).await;
    assert!(ok, "{args:?} failed\nstdout: {stdout}\nstderr: {stderr}");
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("not one JSON object ({e}): {stdout}"))
}

fn assert_clean_relay(result: &Value, pairs: u64) {
    assert_eq!(result["scenario"], "relay");
    assert_eq!(result["pairs"], pairs);
    for fault in ["lost", "duplicates", "reordered", "misrouted", "errors", "failed_pairs"] {
        assert_eq!(result[fault], 0, "{fault}: {result}");
    }
    assert_eq!(result["sent"], result["received"], "{result}");
    let rate = result["messages_per_second"].as_f64().unwrap();
    let bytes = result["bytes_per_second"].as_f64().unwrap();
    assert!(rate > 10.0, "{result}");
    // Between a candidate (~280 B) and an offer (~3.1 KB) per message on average.
    assert!(bytes / rate > 250.0 && bytes / rate < 3500.0, "{result}");
    let latency = &result["latency"];
    let (p50, p99, p999, max) = (
        latency["p50_us"].as_u64().unwrap(),
        latency["p99_us"].as_u64().unwrap(),
        latency["p999_us"].as_u64().unwrap(),
        latency["max_us"].as_u64().unwrap(),
    );
    assert!(p50 > 0 && p50 <= p99 && p99 <= p999 && p999 <= max, "{result}");
    assert!(max < 10_000_000, "a message took over 10 s: {result}");
    assert_eq!(latency["count"], result["delivered_measured"]);
    assert!(result["server_cpu_us_per_unit"].as_f64().unwrap() > 0.0, "{result}");
    assert!(result["server_rss_bytes"].as_u64().unwrap() > 0);
    assert!(result["bench_cpu_seconds"].as_f64().unwrap() >= 0.0);
}

/// A one-second relay of 4 pairs against `url` with `extra` flags, checked clean.
async fn short_relay(url: &str, extra: &[&str]) -> Value {
    let mut args = vec!["relay", "--url", url, "--pairs", "4", "--warmup", "0.2", "--duration", "1"];
    args.extend_from_slice(extra);
    let result = bench_json(&args).await;
    assert_clean_relay(&result, 4);
    result
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_v1_delivers_everything_in_order_in_both_turn_orders() {
    let server = start_server().await;
    let url = format!("ws://{}/ws", server.http_addr());
    for turns in ["answer", "alternate"] {
        let result = short_relay(&url, &["--window", "8", "--turns", turns]).await;
        assert_eq!((result["dialect"].as_str(), result["turns"].as_str()), (Some("v1"), Some(turns)));
    }
    server.shutdown().await;
}

/// The floor of the relay scenario (`forwarder`, see docs/benchmarks.md) must relay as cleanly as a server: a floor
/// that lost or misrouted messages would flatter every comparison made against it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_through_the_minimal_forwarder_is_clean_and_splits_kernel_time() {
    use tokio::io::AsyncBufReadExt;
    let mut forwarder = tokio::process::Command::new(env!("CARGO_BIN_EXE_switchboard-bench"))
        .args(["forwarder", "--listen", "127.0.0.1:0"])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(forwarder.stdout.take().unwrap()).lines();
    let banner = tokio::time::timeout(Duration::from_secs(10), lines.next_line()).await.unwrap().unwrap().unwrap();
    let url = banner.strip_prefix("forwarder listening on ").unwrap_or_else(|| panic!("banner: {banner}")).to_string();
    let pid = forwarder.id().unwrap().to_string();
    let (ok, stdout, stderr) = bench(
        &[
            "relay",
            "--url",
            &format!("{url}/bench"),
            "--dialect",
            "matchbox",
            "--pairs",
            "4",
            "--window",
            "8",
            "--warmup",
            "0.2",
            "--duration",
            "1",
            "--json",
            "--server-pid",
            &pid,
        ]
        .map(String::from),
    )
    .await;
    assert!(ok, "stdout: {stdout}\nstderr: {stderr}");
    let result: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_clean_relay(&result, 4);
    let (total, kernel) =
        (result["server_cpu_us_per_unit"].as_f64().unwrap(), result["server_kernel_us_per_unit"].as_f64().unwrap());
    assert!((0.0..=total).contains(&kernel), "{result}");
    forwarder.kill().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_tutorial_delivers_everything_in_order() {
    let server = start_server().await;
    let url = format!("ws://{}/", server.http_addr());
    let result = short_relay(&url, &["--dialect", "tutorial"]).await;
    assert_eq!(result["dialect"], "tutorial");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storm_views_complete_in_both_dialects_and_presence_formats() {
    let server = start_server().await;
    let mut v1_bytes = Vec::new();
    for (dialect, presence, path) in [("v1", "compact", "ws"), ("v1", "full", "ws"), ("tutorial", "n/a", "")] {
        let url = format!("ws://{}/{path}", server.http_addr());
        let mut args = vec!["storm", "--url", &url, "--dialect", dialect, "--clients", "50"];
        if dialect == "v1" {
            args.extend(["--presence", presence]);
        }
        let result = bench_json(&args).await;
        assert_eq!(result["scenario"], "storm");
        if dialect == "v1" {
            assert_eq!(result["presence"], presence, "{result}");
        } else {
            assert!(result["presence"].is_null(), "{result}");
        }
        assert_eq!(result["complete"], 50, "{result}");
        assert_eq!(result["logged_in"], 50, "{result}");
        assert!(result["failure"].is_null(), "{result}");
        let (login, complete) =
            (result["login_seconds"].as_f64().unwrap(), result["complete_seconds"].as_f64().unwrap());
        assert!(login > 0.0 && login <= complete && complete < 30.0, "{result}");
        // Every client at least received one list naming all 50 (~20 bytes per name).
        assert!(result["presence_bytes"].as_u64().unwrap() > 50 * 50 * 10, "{result}");
        assert_eq!(result["view_complete"]["count"], 50);
        if dialect == "v1" {
            v1_bytes.push(result["presence_bytes"].as_u64().unwrap());
        }
    }
    // Names only against `{"name":..,"status":"idle"}` objects: well under half the bytes.
    assert!(v1_bytes[0] * 2 < v1_bytes[1], "compact {} bytes against full {}", v1_bytes[0], v1_bytes[1]);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_complete_whole_flows() {
    let server = start_server().await;
    let url = format!("ws://{}/ws", server.http_addr());
    let result = bench_json(&["calls", "--url", &url, "--pairs", "3", "--warmup", "0.2", "--duration", "1"]).await;
    assert_eq!(result["scenario"], "calls");
    assert_eq!(result["failed_pairs"], 0, "{result}");
    let flows = result["flows_measured"].as_u64().unwrap();
    assert!(flows > 0 && result["flows_per_second"].as_f64().unwrap() > 0.0, "{result}");
    let (setup, whole) = (&result["setup_latency"], &result["flow_duration"]);
    assert_eq!(setup["count"].as_u64(), Some(flows));
    let setup_p50 = setup["p50_us"].as_u64().unwrap();
    assert!(setup_p50 > 0 && setup_p50 <= whole["p50_us"].as_u64().unwrap(), "{result}");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capacity_logs_in_every_client_in_both_dialects_and_idles_them() {
    let server = start_server().await;
    for (dialect, path, login) in [("v1", "ws", true), ("tutorial", "", true), ("v1", "ws", false)] {
        let url = format!("ws://{}/{path}", server.http_addr());
        let prefix = format!("cap{dialect}{login}");
        let mut args = vec!["capacity", "--url", &url, "--dialect", dialect, "--clients", "40", "--settle", "1"];
        args.extend(["--concurrency", "8", "--prefix", &prefix]);
        if !login {
            args.push("--no-login");
        }
        let result = bench_json(&args).await;
        assert_eq!(result["scenario"], "capacity");
        assert_eq!(result["clients"], 40);
        let connect = result["connect_seconds"].as_f64().unwrap();
        assert!(connect > 0.0 && connect < 30.0, "{result}");
        assert!(result["server_rss_per_connection_bytes"].is_f64(), "{result}");
        assert!(result["server_rss_after_bytes"].as_u64().unwrap() > 0, "{result}");
        // Logged-in clients hear of the logins after theirs (presence, or the tutorial's whole list each time);
        // clients that never log in hear nothing.
        let frames = result["frames_received"].as_u64().unwrap();
        if login {
            assert!(frames > 0, "{result}");
        } else {
            assert_eq!(frames, 0, "{result}");
        }
    }
    server.shutdown().await;
}

#[tokio::test]
async fn non_loopback_targets_are_refused() {
    for scenario in ["relay", "storm", "calls", "capacity"] {
        let args: Vec<String> = [scenario, "--url", "ws://192.0.2.1:80/ws", "--timeout", "5"].map(String::from).into();
        let (ok, _, stderr) = bench(&args).await;
        assert!(!ok, "{scenario} accepted a remote target");
        assert!(stderr.contains("loopback"), "{scenario}: {stderr}");
    }
}

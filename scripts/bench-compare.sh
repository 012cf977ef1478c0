#!/usr/bin/env bash
# Reruns the signaling comparison: Switchboard (protocol v1 and the tutorial dialect), matchbox_server and the PeerJS
# server, each started alone on loopback and driven by `switchboard-bench relay` with the same load (P caller/callee
# pairs, W messages in flight per pair, ~3 KB offers/answers and ~250 B candidates 1:4), alternating servers per round.
#
#   scripts/bench-compare.sh [PAIRS [WINDOW [SECONDS [ROUNDS]]]]      defaults: 100 16 10 1
#
# Beside them runs the floor: `switchboard-bench forwarder`, a minimal forwarder (matchbox dialect, no validation, no
# presence, no call state, I/O built like Switchboard's), which tells what this machine's kernel and runtime alone
# cost per message in this very run.
#
# Environment: WARMUP (seconds, default 2); BENCH_COMPARE_DIR (where the comparison servers are installed and results
# kept; default a temporary directory removed at the end); SKIP_MATCHBOX=1, SKIP_PEERJS=1, SKIP_FORWARDER=1;
# SKIP_TUTORIAL=1 (only Switchboard's v1 dialect); MATCHBOX_PORT (18101), PEERJS_PORT (18102);
# RATE (messages/s over all pairs, default 0: as fast as the windows allow; a fixed rate compares CPU per message
# at equal load); TURNS (which end of a pair sends when a window slot frees: `answer`, the default, or `alternate`, or
# both, "answer alternate", each run against the same server start); PIN=SERVER_CPUS:TOOL_CPUS (e.g. `1:0` or `0:0`)
# runs every server and the load generator under `taskset -c` with those CPU lists: at 1 x 1 the latency is mostly
# the wake-up of a thread on another CPU, which the scheduler places differently for each server unless pinned.
#
# The comparison servers come from their registries into that directory, never into the repository: matchbox_server
# with `cargo install --root` (crates.io), PeerJS server with `npm install --prefix` (npm package `peer`). Every run
# prints the load generator's own CPU: on a 2-core machine it competes with the server it measures.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
source scripts/lib.sh

pairs=${1:-100}
window=${2:-16}
seconds=${3:-10}
rounds=${4:-1}
warmup=${WARMUP:-2}
matchbox_version=0.15.0
peer_version=1.0.2
matchbox_port=${MATCHBOX_PORT:-18101}
peerjs_port=${PEERJS_PORT:-18102}
rate=${RATE:-0}
turns=${TURNS:-answer}
pin=${PIN:-}
server_cpus=()
tool_cpus=()
if [ -n "$pin" ]; then
  if [[ ! "$pin" =~ ^[0-9,-]+:[0-9,-]+$ ]]; then
    echo "PIN must be SERVER_CPUS:TOOL_CPUS, such as 1:0, not $pin" >&2
    exit 2
  fi
  server_cpus=(taskset -c "${pin%%:*}")
  tool_cpus=(taskset -c "${pin##*:}")
fi

if [ -n "${BENCH_COMPARE_DIR:-}" ]; then
  work=$BENCH_COMPARE_DIR
  mkdir -p "$work"
else
  work=$(mktemp -d)
fi
server_pid=
cleanup() {
  if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null || true; fi
  if [ -z "${BENCH_COMPARE_DIR:-}" ]; then rm -rf "$work"; fi
}
trap cleanup EXIT

step() { printf '\n=== %s\n' "$*"; }

step "building Switchboard and the load generator (release)"
cargo build --release --locked -q -p switchboard-server -p switchboard-bench
bin=${CARGO_TARGET_DIR:-target}/release

if [ -z "${SKIP_MATCHBOX:-}" ] && [ ! -x "$work/matchbox/bin/matchbox_server" ]; then
  step "installing matchbox_server $matchbox_version into $work/matchbox"
  CARGO_TARGET_DIR="$work/matchbox-target" cargo install --locked --quiet --root "$work/matchbox" \
    --version "$matchbox_version" matchbox_server
fi
if [ -z "${SKIP_PEERJS:-}" ] && [ ! -f "$work/peerjs/node_modules/peer/dist/bin/peerjs.js" ]; then
  step "installing the PeerJS server (npm peer@$peer_version) into $work/peerjs"
  mkdir -p "$work/peerjs"
  npm install --prefix "$work/peerjs" --no-audit --no-fund --silent "peer@$peer_version"
fi

# Waits until something accepts TCP connections on 127.0.0.1:$1 (at most 10 s).
wait_port() {
  for _ in $(seq 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "nothing listens on 127.0.0.1:$1" >&2
  return 1
}

results="$work/results.jsonl"
: >"$results"
failures=0

# run NAME DIALECT URL: relay against the server whose PID is $server_pid, once per turn order, results appended to
# $results.
run() {
  local name=$1 dialect=$2 url=$3 out order
  for order in $turns; do
    echo "--- $name: $pairs pairs x window $window ($order turns${pin:+, CPUs server:tool $pin}), ${warmup}s warm-up + ${seconds}s"
    if out=$("${tool_cpus[@]}" "$bin/switchboard-bench" relay --url "$url" --dialect "$dialect" --pairs "$pairs" --window "$window" \
      --turns "$order" --rate "$rate" --warmup "$warmup" --duration "$seconds" --server-pid "$server_pid" \
      --timeout $((seconds * 3 + 60)) --json); then
      :
    else
      echo "$name: the run reported faults or failed" >&2
      failures=$((failures + 1))
    fi
    if [ -n "$out" ]; then echo "{\"server\":\"$name\",\"pin\":\"$pin\",\"result\":$out}" >>"$results"; fi
  done
}

stop_server() {
  kill "$server_pid" 2>/dev/null || true
  wait "$server_pid" 2>/dev/null || true
  server_pid=
}

switchboard() {
  local dialect=$1 path=$2 log="$work/switchboard.log" addr
  RUST_LOG=warn "${server_cpus[@]}" "$bin/switchboard" --http 127.0.0.1:0 --turn off --rate-per-second 0 >"$log" 2>&1 &
  server_pid=$!
  addr=$(switchboard_address "$log") || exit 1
  run "switchboard-$dialect" "$dialect" "ws://$addr$path"
  stop_server
}

matchbox() {
  RUST_LOG=warn "${server_cpus[@]}" "$work/matchbox/bin/matchbox_server" "127.0.0.1:$matchbox_port" >"$work/matchbox.log" 2>&1 &
  server_pid=$!
  wait_port "$matchbox_port"
  run matchbox matchbox "ws://127.0.0.1:$matchbox_port/"
  stop_server
}

forwarder() {
  local log="$work/forwarder.log" addr
  "${server_cpus[@]}" "$bin/switchboard-bench" forwarder --listen 127.0.0.1:0 >"$log" 2>&1 &
  server_pid=$!
  # Its banner names the port the kernel chose, so a stale listener can never stand in for it.
  addr=$(logged_address "$log" ws forwarder) || exit 1
  run forwarder matchbox "ws://$addr/"
  stop_server
}

peerjs() {
  "${server_cpus[@]}" node "$work/peerjs/node_modules/peer/dist/bin/peerjs.js" --host 127.0.0.1 --port "$peerjs_port" \
    >"$work/peerjs.log" 2>&1 &
  server_pid=$!
  wait_port "$peerjs_port"
  run peerjs peerjs "ws://127.0.0.1:$peerjs_port/peerjs"
  stop_server
}

servers=("switchboard v1 /ws")
[ -z "${SKIP_TUTORIAL:-}" ] && servers+=("switchboard tutorial /")
[ -z "${SKIP_FORWARDER:-}" ] && servers+=("forwarder")
[ -z "${SKIP_MATCHBOX:-}" ] && servers+=("matchbox")
[ -z "${SKIP_PEERJS:-}" ] && servers+=("peerjs")
for round in $(seq "$rounds"); do
  step "round $round of $rounds"
  # Rotate the order every round so that no server always runs first (or right after another).
  count=${#servers[@]}
  for i in $(seq 0 $((count - 1))); do
    # shellcheck disable=SC2086 # the entries are a function name and its arguments
    ${servers[$(((i + round - 1) % count))]}
  done
done

step "summary"
if command -v node >/dev/null; then
  # shellcheck disable=SC2016 # JavaScript, not shell
  summary='
const lines = require("fs").readFileSync(process.argv[1], "utf8").split("\n").filter(Boolean);
const pad = (s, n) => String(s).padStart(n);
console.log(["server".padEnd(22), "turns".padEnd(9), pad("msg/s", 9), pad("MB/s", 7), pad("p50 ms", 8), pad("p99 ms", 8),
  pad("p99.9 ms", 9), pad("max ms", 8), pad("srv us/msg", 11), pad("kernel", 7), pad("srv RSS MiB", 12),
  pad("bench cores", 12), pad("lost", 6)].join(" "));
for (const line of lines) {
  const { server, result: r } = JSON.parse(line);
  const ms = (us) => (us / 1000).toFixed(2);
  console.log([server.padEnd(22), r.turns.padEnd(9), pad(r.messages_per_second.toFixed(0), 9), pad((r.bytes_per_second / 1e6).toFixed(2), 7),
    pad(ms(r.latency.p50_us), 8), pad(ms(r.latency.p99_us), 8), pad(ms(r.latency.p999_us), 9), pad(ms(r.latency.max_us), 8),
    pad(r.server_cpu_us_per_unit == null ? "-" : r.server_cpu_us_per_unit.toFixed(2), 11),
    pad(r.server_kernel_us_per_unit == null ? "-" : r.server_kernel_us_per_unit.toFixed(2), 7),
    pad(r.server_rss_bytes == null ? "-" : (r.server_rss_bytes / 1048576).toFixed(1), 12),
    pad(r.bench_cores.toFixed(2), 12), pad(r.lost, 6)].join(" "));
}'
  node -e "$summary" "$results"
else
  cat "$results"
fi
if [ -n "${BENCH_COMPARE_DIR:-}" ]; then echo "results: $results"; fi
if [ "$failures" -gt 0 ]; then
  echo "$failures runs reported faults"
  exit 1
fi

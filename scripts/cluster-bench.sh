#!/usr/bin/env bash
# Cross-node relay against single-node relay with the load generator: the same `relay` load (P pairs, W messages in
# flight, ~3 KB offers/answers and ~250 B candidates 1:4) against one Switchboard node, and as `cluster` against two
# nodes sharing a redis-server (every pair's caller on node A, its callee on node B, so every message crosses Redis).
# Each round runs four measurements, alternating setups: throughput (as fast as the window allows) and latency at a
# fixed offered rate, single-node and cross-node.
#
#   scripts/cluster-bench.sh [PAIRS [WINDOW [SECONDS [ROUNDS]]]]      defaults: 100 16 10 3
#
# Environment: RATE (messages/s of the fixed-rate runs, default 10000), WARMUP (seconds, default 2), TURNS (the relay
# scenario's turn order, `answer` or `alternate`, default answer), PROFILE (release
# or debug, default release; scripts/test.sh smoke-runs it in debug with a tiny load). Servers and Redis listen on
# loopback ports chosen by the kernel; CPU and RSS are the sum of every server process of the setup (both nodes and
# Redis for cross-node).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
source scripts/lib.sh

pairs=${1:-100}
window=${2:-16}
seconds=${3:-10}
rounds=${4:-3}
rate=${RATE:-10000}
warmup=${WARMUP:-2}
turns=${TURNS:-answer}
profile=${PROFILE:-release}

work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

command -v redis-server >/dev/null || { echo "needs redis-server (Debian package redis-server)"; exit 1; }
if [ "$profile" = release ]; then
  cargo build --release --locked -q -p switchboard-server -p switchboard-bench
else
  cargo build --locked -q -p switchboard-server -p switchboard-bench
fi
bin=${CARGO_TARGET_DIR:-target}/$profile

# A free loopback TCP port, from the kernel (Node.js: the test run installs it; Python may not be there).
free_port() {
  node -e 'const s = require("net").createServer(); s.listen(0, "127.0.0.1", () => { console.log(s.address().port); s.close(); });'
}

# start_node NAME ARGS...: starts a node on an ephemeral port; sets $node_pid and $node_url.
start_node() {
  local name=$1 log="$work/$1.log" addr
  shift
  RUST_LOG=warn "$bin/switchboard" --http 127.0.0.1:0 --turn off --rate-per-second 0 "$@" >"$log" 2>&1 &
  node_pid=$!
  pids+=("$node_pid")
  addr=$(switchboard_address "$log") || { echo "node $name did not start"; exit 1; }
  node_url="ws://$addr/ws"
}

# Stops the setup's processes in reverse start order (nodes before their Redis, so that they leave it cleanly).
stop_all() {
  local i
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
    kill "${pids[$i]}" 2>/dev/null || true
    wait "${pids[$i]}" 2>/dev/null || true
  done
  pids=()
}

results="$work/results.jsonl"
: >"$results"
failures=0

# measure LABEL SCENARIO-ARGS...: one load generator run, its JSON result appended to $results.
measure() {
  local label=$1 out
  shift
  echo "--- $label"
  if out=$("$bin/switchboard-bench" "$@" --pairs "$pairs" --window "$window" --turns "$turns" \
    --warmup "$warmup" --duration "$seconds" --timeout $((${seconds%.*} * 3 + 60)) --json); then
    :
  else
    echo "$label: the run reported faults or failed" >&2
    failures=$((failures + 1))
  fi
  if [ -n "$out" ]; then echo "{\"setup\":\"$label\",\"result\":$out}" >>"$results"; fi
}

single() {
  local rate_args=("--rate" "$1") label=$2
  start_node single
  measure "$label" relay --url "$node_url" --server-pid "$node_pid" "${rate_args[@]}"
  stop_all
}

cross() {
  local rate_args=("--rate" "$1") label=$2 port url_a pid_a
  port=$(free_port)
  redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no --dir "$work" >"$work/redis.log" 2>&1 &
  local redis_pid=$! listening=
  pids+=("$redis_pid")
  for _ in $(seq 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      listening=1
      break
    fi
    kill -0 "$redis_pid" 2>/dev/null || break
    sleep 0.1
  done
  [ -n "$listening" ] || { echo "redis-server did not listen on $port"; cat "$work/redis.log"; exit 1; }
  start_node a --cluster "redis://127.0.0.1:$port"
  url_a=$node_url pid_a=$node_pid
  start_node b --cluster "redis://127.0.0.1:$port"
  measure "$label" cluster --url "$url_a" --callee-url "$node_url" --server-pid "$pid_a" \
    --callee-server-pid "$node_pid" --redis-pid "$redis_pid" "${rate_args[@]}"
  stop_all
}

setups=("single 0 single-node" "cross 0 cross-node" "single $rate single-node@$rate/s" "cross $rate cross-node@$rate/s")
for round in $(seq "$rounds"); do
  echo
  echo "=== round $round of $rounds"
  count=${#setups[@]}
  for i in $(seq 0 $((count - 1))); do
    # shellcheck disable=SC2086 # the entries are a function name and its arguments
    ${setups[$(((i + round - 1) % count))]}
  done
done

echo
echo "=== summary ($pairs pairs x window $window, ${seconds} s measured; CPU and RSS summed over the setup's processes)"
summary='
const lines = require("fs").readFileSync(process.argv[1], "utf8").split("\n").filter(Boolean);
const pad = (s, n) => String(s).padStart(n);
console.log(["setup".padEnd(24), pad("msg/s", 9), pad("p50 ms", 8), pad("p99 ms", 8), pad("p99.9 ms", 9),
  pad("srv us/msg", 11), pad("srv RSS MiB", 12), pad("bench cores", 12), pad("lost", 6)].join(" "));
for (const line of lines) {
  const { setup, result: r } = JSON.parse(line);
  const ms = (us) => (us / 1000).toFixed(2);
  console.log([setup.padEnd(24), pad(r.messages_per_second.toFixed(0), 9), pad(ms(r.latency.p50_us), 8),
    pad(ms(r.latency.p99_us), 8), pad(ms(r.latency.p999_us), 9),
    pad(r.server_cpu_us_per_unit == null ? "-" : r.server_cpu_us_per_unit.toFixed(1), 11),
    pad(r.server_rss_bytes == null ? "-" : (r.server_rss_bytes / 1048576).toFixed(1), 12),
    pad(r.bench_cores.toFixed(2), 12), pad(r.lost, 6)].join(" "));
}'
node -e "$summary" "$results"
if [ "$failures" -gt 0 ]; then
  echo "$failures runs reported faults"
  exit 1
fi

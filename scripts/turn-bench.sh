#!/usr/bin/env bash
# TURN relay benchmark: Switchboard's built-in TURN server against coturn (Debian package `coturn`), both on
# loopback with equivalent settings (one static user, loopback peers allowed, no TLS, one worker per core), under the
# same fixed load from coturn's own client, turnutils_uclient, with turnutils_peer echoing. Runs alternate, so that
# machine noise hits both. Reports per run: relayed packets, loss, round trip, and server CPU seconds per 100,000
# relayed packets (user+system time of the server process, from /proc), and the datagrams the kernel dropped at the
# server's and the echo peer's full sockets (the rest of any loss is the load generator's own).
#
# Then the same servers under Switchboard's own TURN scenario (`switchboard-bench turn`: pairs of allocations sending
# each other ChannelData at a fixed rate with batched system calls), which reaches rates uclient cannot produce.
#
# Usage: scripts/turn-bench.sh [ROUNDS] [CLIENTS] [MESSAGES] [LENGTH] [INTERVALS_MS]
#   INTERVALS_MS: uclient's pause between a client's messages, one load per value (default "2 0": a paced load, at
#   which nearly every datagram arrives alone, and uclient as fast as it goes).
#   After the rounds of each load it prints both servers' summed CPU over summed relayed packets, and their ratio:
#   single runs of a few seconds vary by 20-30% on a shared 2-core machine, the sums over rounds much less.
#   environment: RATES (messages/s of the bench scenario, space-separated, default "25000 100000"), PAIRS (10),
#   DURATION (seconds, 5), SB_ARGS (extra switchboard flags, e.g. "--turn-workers 1").
# Bounded: ROUNDS x 2 runs of CLIENTS x MESSAGES messages each, every run under a 120 s timeout; then ROUNDS x 2 runs
# per rate of DURATION seconds each. Loopback only.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
clients=${2:-50}
messages=${3:-3000}
length=${4:-200}
intervals=${5:-2 0}

command -v turnserver >/dev/null || { echo "needs coturn: apt-get install coturn"; exit 1; }
cargo build --quiet --release -p switchboard-server -p switchboard-bench
work=$(mktemp -d)
pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
cpu_ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }
# Datagrams the kernel dropped at full receive buffers of the UDP sockets process $1 holds (the last column of
# /proc/net/udp): tells the server's loss from the load generator's and the echo peer's.
udp_drops() {
  local inodes
  inodes=$(find "/proc/$1/fd" -lname 'socket:*' -printf '%l\n' 2>/dev/null | tr -dc '0-9\n' | paste -sd' ')
  awk -v inodes="$inodes" 'BEGIN { n = split(inodes, list, " "); for (i = 1; i <= n; i++) mine[list[i]] = 1 }
    FNR > 1 && ($10 in mine) { drops += $NF } END { print drops + 0 }' /proc/net/udp /proc/net/udp6 2>/dev/null
}
hz=$(getconf CLK_TCK)

peer_port=$(free_port)
turnutils_peer -p "$peer_port" -L 127.0.0.1 >/dev/null 2>&1 &
peer_pid=$!
pids+=($peer_pid)

sb_port=$(free_port)
./target/release/switchboard --http 127.0.0.1:0 --turn "127.0.0.1:$sb_port" --turn-user tool:pass \
  --turn-allow-peer 127.0.0.1/32 --turn-max-allocations-per-user 1000 --turn-max-allocations-per-ip 1000 ${SB_ARGS:-} >"$work/switchboard.log" 2>&1 &
sb_pid=$!
pids+=($sb_pid)

co_port=$(free_port)
turnserver -n --listening-ip=127.0.0.1 --listening-port="$co_port" --relay-ip=127.0.0.1 --realm=switchboard \
  --lt-cred-mech --user=tool:pass --allow-loopback-peers --no-tls --no-dtls --no-cli --no-tcp-relay \
  --min-port=40000 --max-port=60000 --log-file=stdout --simple-log --no-stdout-log >"$work/coturn.log" 2>&1 &
co_pid=$!
pids+=($co_pid)
# Both servers answer a STUN Binding request before the first run (a fixed sleep lost coturn's first run once).
for port in "$sb_port" "$co_port"; do
  for _ in $(seq 50); do
    timeout 2 turnutils_stunclient -p "$port" 127.0.0.1 >/dev/null 2>&1 && break
    sleep 0.2
  done
done

# Per server: summed CPU ticks and relayed packets over the rounds of the current load.
declare -A total_ticks total_relayed
reset_totals() { total_ticks=([switchboard]=0 [coturn]=0); total_relayed=([switchboard]=0 [coturn]=0); }
summary() {
  awk -v st="${total_ticks[switchboard]}" -v sr="${total_relayed[switchboard]}" -v ct="${total_ticks[coturn]}" \
    -v cr="${total_relayed[coturn]}" -v hz="$hz" 'BEGIN {
      if (sr == 0 || cr == 0) { print "summary: n/a (a server relayed nothing)"; exit }
      s = st / hz / sr * 100000; c = ct / hz / cr * 100000
      printf "summary over the rounds: switchboard %.3f s, coturn %.3f s per 100k relayed: %.2fx coturn\n", s, c, s / c }'
}

run() {
  local name=$1 pid=$2 port=$3
  local before after out sent received lost rtt cpu drops_before peer_drops_before drops peer_drops
  before=$(cpu_ticks "$pid")
  drops_before=$(udp_drops "$pid"); peer_drops_before=$(udp_drops "$peer_pid")
  out=$(timeout 120 turnutils_uclient -c -u tool -w pass -e 127.0.0.1 -r "$peer_port" -m "$clients" -n "$messages" \
    -l "$length" -z "$interval" -p "$port" 127.0.0.1 2>&1 || true)
  after=$(cpu_ticks "$pid")
  # Relay sockets stay open after uclient exits (until their allocations expire), so their counts are still there.
  drops=$(( $(udp_drops "$pid") - drops_before )); peer_drops=$(( $(udp_drops "$peer_pid") - peer_drops_before ))
  sent=$(grep -o 'tot_send_msgs=[0-9]*' <<<"$out" | tail -n1 | cut -d= -f2 || true)
  received=$(grep -o 'tot_recv_msgs=[0-9]*' <<<"$out" | tail -n1 | cut -d= -f2 || true)
  lost=$(grep -o 'Total lost packets [0-9]* ([0-9.]*%)' <<<"$out" | tail -n1 || true)
  rtt=$(grep -o 'Average round trip delay [0-9.]* ms' <<<"$out" | tail -n1 | awk "{print \$5}" || true)
  # Each message crosses the relay twice: client -> peer and the echo back.
  relayed=$(( ${sent:-0} + ${received:-0} ))
  cpu=$(awk -v t=$((after - before)) -v hz="$hz" 'BEGIN {printf "%.2f", t / hz}')
  per=$(awk -v t=$((after - before)) -v hz="$hz" -v r="$relayed" 'BEGIN {if (r > 0) printf "%.3f", (t / hz) / r * 100000; else print "n/a"}')
  total_ticks[$name]=$(( total_ticks[$name] + after - before ))
  total_relayed[$name]=$(( total_relayed[$name] + relayed ))
  printf '%-12s relayed %8s  %-36s rtt %6s ms  server cpu %6s s  cpu per 100k relayed %7s s  dropped: server %s, peer %s\n' \
    "$name" "$relayed" "$lost" "${rtt:-?}" "$cpu" "$per" "$drops" "$peer_drops"
}

for interval in $intervals; do
  echo "load: $clients clients x $messages messages of $length bytes, one every $interval ms per client"
  reset_totals
  for round in $(seq "$rounds"); do
    run switchboard "$sb_pid" "$sb_port"
    run coturn "$co_pid" "$co_port"
  done
  summary
done

bench() {
  local name=$1 pid=$2 port=$3 rate=$4
  local out line
  out=$(timeout 120 ./target/release/switchboard-bench turn --server "127.0.0.1:$port" --pairs "${PAIRS:-10}" \
    --rate "$rate" --size "$length" --duration "${DURATION:-5}" --server-pid "$pid" --json) || { echo "$name: bench failed"; return; }
  line=$(python3 - "$name" "$out" "${DURATION:-5}" "$hz" <<'PY'
import json, sys
name, r = sys.argv[1], json.loads(sys.argv[2])
print(f"{name:<12} relayed {r['relayed_packets_per_second']:>9.0f}/s  lost {r['lost']:>6}  "
      f"p50 {r['latency_us_p50']:>6} us  p99 {r['latency_us_p99']:>7} us  "
      f"server cpu {r['server_cpu_percent']:>4.0f}%  cpu per 100k relayed {r['server_cpu_s_per_100k_relayed']:.3f} s  "
      f"bench cpu {r['own_cpu_percent']:.0f}%  dropped: server {r['server_socket_drops']}, bench {r['own_socket_drops']}")
# For the summary: CPU ticks and relayed packets of the measured window.
relayed = r['relayed_packets_per_second'] * float(sys.argv[3])
print(round(r['server_cpu_s_per_100k_relayed'] * relayed / 100000 * int(sys.argv[4])), round(relayed))
PY
  )
  echo "${line%$'\n'*}"
  read -r ticks relayed <<<"${line##*$'\n'}"
  total_ticks[$name]=$(( total_ticks[$name] + ticks ))
  total_relayed[$name]=$(( total_relayed[$name] + relayed ))
}

for rate in ${RATES:-25000 100000}; do
  echo "switchboard-bench turn: ${PAIRS:-10} pairs, $rate messages/s of $length bytes ($((2 * rate)) relayed packets/s)"
  reset_totals
  for round in $(seq "$rounds"); do
    bench switchboard "$sb_pid" "$sb_port" "$rate"
    bench coturn "$co_pid" "$co_port" "$rate"
  done
  summary
done

#!/usr/bin/env bash
# Runs every check and test of Switchboard: formatting, lints, unit and integration tests, a smoke run of the load
# generator against a real server, and the browser tests. Installs what the tests need first (Debian packages, npm
# packages), so it works on a fresh machine.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
source scripts/lib.sh
# Incremental state only pays off on a rebuild; on a fresh clone it is gigabytes of disk for nothing.
export CARGO_INCREMENTAL=0

step() { printf '\n=== %s\n' "$*"; }

step "system packages"
# chromium: browser tests; iproute2: their network namespace; util-linux: prlimit for the load generator; coturn:
# independent STUN/TURN clients for the interop tests; redis-server: the shared state of the cluster tests; make and
# a C compiler: the build of jemalloc, the server's allocator.
missing=()
command -v make >/dev/null || missing+=(make)
command -v cc >/dev/null || missing+=(gcc)
command -v chromium >/dev/null || missing+=(chromium)
command -v turnutils_uclient >/dev/null || missing+=(coturn)
command -v redis-server >/dev/null || missing+=(redis-server)
command -v ip >/dev/null || missing+=(iproute2)
command -v prlimit >/dev/null || missing+=(util-linux)
command -v node >/dev/null || missing+=(nodejs npm)
if [ ${#missing[@]} -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

step "npm packages"
(cd e2e && npm ci --no-audit --no-fund)

step "format"
cargo fmt --all -- --check

step "lints"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "unit and integration tests"
test_log=$(mktemp)
cargo test --workspace --locked 2>&1 | tee "$test_log"
passed=$(grep -o 'test result: .* \([0-9]*\) passed' "$test_log" | grep -o '[0-9]* passed' | awk '{s+=$1} END {print s+0}')
failed=$(grep -o '[0-9]* failed;' "$test_log" | awk '{s+=$1} END {print s+0}')
rm -f "$test_log"

step "load generator smoke"
cargo build --locked -p switchboard-server -p switchboard-bench
log=$(mktemp)
# No message rate limit: the relay and calls runs send far more than a person would.
./target/debug/switchboard --http 127.0.0.1:0 --turn 127.0.0.1:0 --turn-user tool:pass --turn-allow-peer 127.0.0.0/8 \
  --turn-max-allocations-per-ip 100 --rate-per-second 0 >"$log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true; rm -f "$log"' EXIT
addr=$(switchboard_address "$log") || exit 1
./target/debug/switchboard-bench capacity --url "ws://$addr/ws" --clients 300 --server-pid "$server" --settle 1 --timeout 60
./target/debug/switchboard-bench capacity --url "ws://$addr/" --clients 100 --dialect tutorial --prefix tut --settle 1 --timeout 60
turn_addr=$(grep -o 'local_addr=127[.0-9]*:[0-9]*' "$log" | head -n1 | cut -d= -f2)
[ -n "$turn_addr" ] || { echo "no TURN address in the server log"; cat "$log"; exit 1; }
turn_report=$(./target/debug/switchboard-bench turn --server "$turn_addr" --pairs 4 --rate 2000 --warmup 0.2 --duration 1 --json)
echo "$turn_report"
grep -q '"lost":0,' <<<"$turn_report" || { echo "TURN scenario lost packets"; exit 1; }
# Signaling scenarios, a few seconds each; each exits non-zero on any lost, duplicated or refused message.
./target/debug/switchboard-bench relay --url "ws://$addr/ws" --pairs 4 --warmup 0.5 --duration 2 --server-pid "$server" --timeout 30
./target/debug/switchboard-bench relay --url "ws://$addr/" --dialect tutorial --pairs 4 --warmup 0.5 --duration 2 --timeout 30
./target/debug/switchboard-bench storm --url "ws://$addr/ws" --clients 300 --server-pid "$server" --timeout 30
./target/debug/switchboard-bench calls --url "ws://$addr/ws" --pairs 4 --warmup 0.5 --duration 2 --server-pid "$server" --timeout 30
# Cross-node relay against single-node: two nodes and a redis-server of the script's own, one short round.
PROFILE=debug WARMUP=0.5 RATE=500 scripts/cluster-bench.sh 4 4 1 1
echo "load generator smoke: ok"
# The smoke's server is done: it need not sit through the fuzzing and the browser tests.
kill "$server" 2>/dev/null || true
wait "$server" 2>/dev/null || true
rm -f "$log"
trap - EXIT

step "fuzzing (45 s per target: STUN decoder, v1 and tutorial message decoders, WebSocket frames, cluster envelopes, RESP3 frames)"
command -v cargo-fuzz >/dev/null || cargo install --locked --quiet cargo-fuzz
# cargo-fuzz needs unstable compiler flags; the machine has a stable toolchain only.
for fuzz_target in stun_parse request_v1 request_tutorial ws_frame cluster_envelope resp_frame; do
  echo "fuzz target $fuzz_target"
  fuzz_log=$(mktemp)
  # Committed seeds (fuzz/seeds/TARGET, if any) start the search from real frames; new inputs go to fuzz/corpus.
  seeds=()
  # libFuzzer refuses a corpus directory that does not exist, as on a fresh clone (fuzz/corpus is not committed).
  if [ -d "fuzz/seeds/$fuzz_target" ]; then
    mkdir -p "fuzz/corpus/$fuzz_target"
    seeds=("corpus/$fuzz_target" "seeds/$fuzz_target")
  fi
  if ! (cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run "$fuzz_target" "${seeds[@]}" -- -max_total_time=45 \
    -print_final_stats=1 >"$fuzz_log" 2>&1); then
    # The panic and the input that caused it (the last lines are only the backtrace).
    grep -E -A3 "panicked at|Test unit written to|^Base64:" "$fuzz_log" || tail -n 40 "$fuzz_log"
    rm -f "$fuzz_log"
    exit 1
  fi
  tail -n 4 "$fuzz_log"
  rm -f "$fuzz_log"
done

step "browser tests (headless Chromium in a loopback-only network namespace)"
browser_log=$(mktemp)
e2e/run.sh 2>&1 | tee "$browser_log"
browser_passed=$(awk '/^# pass /{print $3}' "$browser_log")
browser_failed=$(awk '/^# fail /{print $3}' "$browser_log")
rm -f "$browser_log"

# One summary line for the whole run, after everything else has passed.
echo "tests: $((passed + browser_passed)) passed, $((failed + browser_failed)) failed"

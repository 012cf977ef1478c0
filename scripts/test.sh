#!/usr/bin/env bash
# Runs every check and test of Switchboard: formatting, lints, unit and integration tests, and a smoke run of the
# load generator against a real server. Installs what the tests need first, so it works on a fresh machine.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n=== %s\n' "$*"; }

step "system packages"
# prlimit (util-linux) lets the load generator raise its own file limit.
if ! command -v prlimit >/dev/null; then
  if [ "$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq util-linux >/dev/null; fi
fi

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
./target/debug/switchboard --http 127.0.0.1:0 >"$log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true; rm -f "$log"' EXIT
for _ in $(seq 100); do
  addr=$(grep -o 'http://127[.0-9]*:[0-9]*' "$log" | head -n1 || true)
  [ -n "$addr" ] && break
  sleep 0.1
done
[ -n "$addr" ] || { echo "server did not start"; cat "$log"; exit 1; }
./target/debug/switchboard-bench capacity --url "ws://${addr#http://}/ws" --clients 300 --server-pid "$server" --settle 1 --timeout 60
./target/debug/switchboard-bench capacity --url "ws://${addr#http://}/" --clients 100 --dialect tutorial --prefix tut --settle 1 --timeout 60
echo "load generator smoke: ok"

# One summary line for the whole run, after everything else has passed.
echo "tests: ${passed} passed, ${failed} failed"

#!/usr/bin/env bash
# Soak test, not part of scripts/test.sh: builds the release binaries, starts the server on 127.0.0.1 and runs
# `switchboard-bench soak` against it: pairs of clients log in, call each other, relay an offer, an answer and
# candidates, hang up and log out, in a loop. It fails if a relayed message is lost, a call goes wrong, or the
# server's RSS grows over the steady phase by more than the tolerance.
#
#   scripts/soak.sh                              # 2,000 clients for 5 minutes
#   scripts/soak.sh --clients 500 --duration 60  # a short run
#
# Arguments go to `switchboard-bench soak` (`switchboard-bench soak --help` lists them). Traffic stays on loopback:
# each client connects from its own address in 127.0.1.0-127.0.8.255, so the server's default per-address limits
# apply as they would to real users.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
source scripts/lib.sh

# util-linux: prlimit, with which the load generator raises its own file descriptor limit.
command -v prlimit >/dev/null || {
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq util-linux >/dev/null
}

cargo build --release --locked -p switchboard-server -p switchboard-bench
bin="${CARGO_TARGET_DIR:-target}/release"
log=$(mktemp)
RUST_LOG=warn "$bin/switchboard" --http 127.0.0.1:0 --turn off >"$log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true; wait $server 2>/dev/null || true; rm -f "$log"' EXIT
addr=$(switchboard_address "$log") || exit 1
echo "server $server on $addr"
status=0
"$bin/switchboard-bench" soak --url "ws://$addr/ws" --server-pid "$server" "$@" || status=$?
if grep -qiE 'panicked|error' "$log"; then
  echo "server log:"
  grep -iE 'panicked|error' "$log" | head -n 20
fi
exit "$status"

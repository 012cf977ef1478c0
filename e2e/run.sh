#!/usr/bin/env bash
# Runs the browser tests inside a fresh network namespace with only the loopback interface up, so that the server,
# Chromium and every WebRTC candidate stay on 127.0.0.1 and nothing (candidates, mDNS, STUN) leaves the machine.
set -euo pipefail
cd "$(dirname "$0")"
# The web client is embedded in the binary: build it so the tests see the current web/ files.
cargo build --quiet -p switchboard-server
ns="switchboard-e2e-$$"
ip netns add "$ns"
trap 'ip netns del "$ns" 2>/dev/null || true' EXIT
ip netns exec "$ns" ip link set lo up
ip netns exec "$ns" node --test --test-concurrency=1 --test-timeout=180000 "${@:-tests/}"

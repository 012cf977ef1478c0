# Helpers shared by the scripts in this folder; sourced, not run.

# logged_address LOG SCHEME NAME: the host:port after SCHEME:// that a process started with a loopback port 0 and
# output to LOG reports once it listens (waits up to 10 s). Prints the log and fails if it never does.
logged_address() {
  local log=$1 scheme=$2 name=$3 addr=
  for _ in $(seq 100); do
    addr=$(grep -o "$scheme://127[.0-9]*:[0-9]*" "$log" | head -n1 || true)
    if [ -n "$addr" ]; then
      echo "${addr#"$scheme://"}"
      return 0
    fi
    sleep 0.1
  done
  echo "$name did not start; its log:" >&2
  cat "$log" >&2
  return 1
}

# switchboard_address LOG: the host:port a switchboard started with `--http 127.0.0.1:0 ... >LOG` listens on.
switchboard_address() {
  logged_address "$1" http switchboard
}

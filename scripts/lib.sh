# Helpers shared by the scripts in this folder; sourced, not run.

# switchboard_address LOG: the host:port a switchboard started with `--http 127.0.0.1:0 ... >LOG` listens on, read
# from its log once it says so (waits up to 10 s). Prints the log and fails if it never does.
switchboard_address() {
  local log=$1 addr=
  for _ in $(seq 100); do
    addr=$(grep -o 'http://127[.0-9]*:[0-9]*' "$log" | head -n1 || true)
    if [ -n "$addr" ]; then
      echo "${addr#http://}"
      return 0
    fi
    sleep 0.1
  done
  echo "switchboard did not start; its log:" >&2
  cat "$log" >&2
  return 1
}

#!/usr/bin/env bash
# Runs dataflow.yml on two daemons of one machine (machine ids A and B) with one command:
# starts a coordinator and both daemons in a private state directory, runs the dataflow attached,
# then stops everything. Build first: cargo build --workspace
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
adora="${ADORA:-$here/../../target/debug/adora}"
state="$(mktemp -d -t adora-multiple-daemons-XXXXXX)"
export ADORA_STATE_DIR="$state"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$state"
}
trap cleanup EXIT

"$adora" coordinator --port 0 > "$state/coordinator.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do [ -s "$state/coordinator.addr" ] && break; sleep 0.1; done
port="$(cut -d: -f2 < "$state/coordinator.addr")"

for id in A B; do
  "$adora" daemon --machine-id "$id" --coordinator-port "$port" --quiet > "$state/daemon-$id.log" 2>&1 &
  pids+=($!)
done
for _ in $(seq 100); do
  [ "$("$adora" status --json 2>/dev/null | grep -o '"connected"' | wc -l)" -ge 2 ] && break
  sleep 0.1
done

"$adora" start "$here/dataflow.yml" --attach

#!/usr/bin/env bash
# Runs the whole system on this box in the foreground: a register on 127.0.0.1:1236, a gateway on
# ws://127.0.0.1:7272 (inner port 2300) and two business workers. Ctrl-C stops everything.
# Until `switchboard start` (issue #4) exists, this script is the process manager.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
BIN=target/release/switchboard
APP="${SWITCHBOARD_APP:-probe}"
pids=()
stop() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap stop EXIT INT TERM
$BIN register --listen 127.0.0.1:1236 & pids+=($!)
sleep 0.3
$BIN gateway --register 127.0.0.1:1236 --listen 127.0.0.1:7272 --inner-port 2300 & pids+=($!)
$BIN business --register 127.0.0.1:1236 --app "$APP" --name w1 --index 0 & pids+=($!)
$BIN business --register 127.0.0.1:1236 --app "$APP" --name w2 --index 0 & pids+=($!)
echo "switchboard: ws://127.0.0.1:7272 (Ctrl-C to stop)" >&2
wait -n

#!/usr/bin/env bash
# Runs the whole system on this box in the foreground: a register on 127.0.0.1:1236, a gateway on
# ws://127.0.0.1:7272 (inner port 2300) and two business workers running the chat with its
# SQLite store in run/. Ctrl-C stops everything.
# Until `switchboard start` (issue #4) exists, this script is the process manager.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
BIN=target/release/switchboard
mkdir -p run
if [ -z "${SWITCHBOARD_AGENT_SECRET:-}" ]; then
  # A secret for this machine, kept in run/ so tokens stay valid across restarts.
  [ -s run/agent-secret ] || head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > run/agent-secret
  SWITCHBOARD_AGENT_SECRET=$(cat run/agent-secret)
fi
export SWITCHBOARD_AGENT_SECRET
pids=()
stop() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap stop EXIT INT TERM
$BIN register --listen 127.0.0.1:1236 & pids+=($!)
sleep 0.3
$BIN gateway --register 127.0.0.1:1236 --listen 127.0.0.1:7272 --inner-port 2300 & pids+=($!)
$BIN business --register 127.0.0.1:1236 --name w1 --index 0 & pids+=($!)
$BIN business --register 127.0.0.1:1236 --name w2 --index 0 & pids+=($!)
cat >&2 <<MSG
switchboard: ws://127.0.0.1:7272 (Ctrl-C to stop)
agent token for bot 1, agent a1:
  SWITCHBOARD_AGENT_SECRET=\$(cat run/agent-secret) $BIN token --bid 1 --agent a1
MSG
wait -n

#!/usr/bin/env bash
# Instruction counts (valgrind --tool=callgrind) of one gateway and one chat worker over a
# fixed room-chat workload: repeatable where this VM's CPU timings are not (issue #16).
#
#   scripts/callgrind.sh [switchboard binary]      (default: target/release/switchboard)
#
# Three short runs, each on fresh processes: 100 agents in rooms of 50 log in, join and send
# RATE room messages a second each for SECS s (the chat run); the same 100 only log in and join;
# 200 only log in and join. Chat minus the first baseline, divided by the messages, is the
# instructions per room message in the worker and per message and per delivery in the gateway;
# the second baseline minus the first, divided by 100, is the instructions per login (what
# starting a process costs cancels out of both). Needs valgrind and ../shared/loadkit (built into target/loadkit).
# Kernel work (syscalls, wakeups) is not counted: callgrind sees user space only.
#
#   scripts/callgrind.sh --connect [switchboard binary]
#
# Target 5's shape instead: 200, then 1 200 new connections, each an agent of a bot of its own
# whose login is answered (no join, no message), then closed; the difference ÷ 1 000 is the
# instructions per connection in the gateway and the chat worker. Runs of one build differ by
# a few per cent (valgrind's slowness moves how logins fall into the workers' rounds).
set -euo pipefail
cd "$(dirname "$0")/.."
CONNECT=0
[ "${1:-}" = "--connect" ] && { CONNECT=1; shift; }
BIN=${1:-target/release/switchboard}
LOADKIT_SRC=${LOADKIT_SRC:-../shared/loadkit}
CONNS=100 RATE=${RATE:-1} SECS=${SECS:-10}
command -v valgrind >/dev/null || { echo "callgrind.sh: valgrind is not installed" >&2; exit 1; }
[ -x "$BIN" ] || cargo build --release --locked
CARGO_TARGET_DIR=target/loadkit cargo build --release --quiet --manifest-path "$LOADKIT_SRC/Cargo.toml"
WSLOAD=target/loadkit/release/wsload
. scripts/loopback-config.sh
WORK=$(mktemp -d)
[ -n "${KEEP:-}" ] && echo "callgrind.sh: keeping $WORK" >&2 || trap 'rm -rf "$WORK"' EXIT
export SWITCHBOARD_SECRET_KEY=callgrind SWITCHBOARD_LOG=info

# run <name> <conns> <rate>: one fresh register, gateway and worker (the last two under callgrind) and
# one wsload run; prints "<gateway Ir> <worker Ir> <messages sent> <deliveries>".
run() {
  local name=$1 conns=$2 rate=$3 base=$((22000 + RANDOM % 10000)) dir=$WORK/$1
  mkdir -p "$dir"
  loopback_config "$dir/run" "$base" "sqlite:$dir/run/chat.db" false > "$dir/switchboard.toml"
  local cg=(valgrind --tool=callgrind --quiet)
  # Run inside $(...)/<(...): nothing started may keep its stdout (the caller's pipe) open.
  # (Each run is a subshell of its own: these globals and its trap end with it.)
  "$BIN" -c "$dir/switchboard.toml" register >/dev/null 2>"$dir/register.log" & reg=$!
  "${cg[@]}" --callgrind-out-file="$dir/gateway.cg" "$BIN" -c "$dir/switchboard.toml" gateway >/dev/null 2>"$dir/gateway.log" & gw=$!
  "${cg[@]}" --callgrind-out-file="$dir/worker.cg" "$BIN" -c "$dir/switchboard.toml" business >/dev/null 2>"$dir/worker.log" & wk=$!
  trap 'kill $reg $gw $wk 2>/dev/null || true' EXIT
  # Ready: the worker has a link to the gateway and the gateway has taken it as a worker
  # (valgrind makes starting slow; a client before that is closed with 1013).
  for _ in $(seq 600); do
    grep -q "business worker connected" "$dir/gateway.log" 2>/dev/null && break
    sleep 0.1
  done
  grep -q "business worker connected" "$dir/gateway.log" || { echo "callgrind.sh: the worker did not connect" >&2; cat "$dir"/*.log >&2; exit 1; }
  local login='{"method":"login","bid":"b{room}","customer_id":"u{g}-'"$name"'","customer_name":"n{g}","presence":"batch"}' rooms=50
  [ $CONNECT = 1 ] && { login='{"method":"login","bid":"b{g}-'"$name"'","customer_id":"u{g}","customer_name":"n{g}","presence":"batch"}'; rooms=0; }
  local args=(--url "ws://127.0.0.1:$((base + 1))/" --login "$login" --json --quiet --conns "$conns" --room-size $rooms --connect-timeout 120 --max-inflight 8 --grace 120 --source-ips 127.0.0.2-127.0.0.3)
  if [ "$rate" = 0 ]; then args+=(--hold --duration 2); else args+=(--rate "$rate" --duration "$SECS" --warmup 0); fi
  "$WSLOAD" "${args[@]}" | tail -1 > "$dir/wsload.json"
  # Every agent's logout handled before the count ends: killed sooner, a run counted however
  # many of its closes the worker had reached (a tenth of a run's instructions either way).
  for _ in $(seq 1200); do
    [ "$(grep -c "agent logged out" "$dir/worker.log" 2>/dev/null)" -ge "$conns" ] && break
    sleep 0.1
  done
  [ "$(grep -c "agent logged out" "$dir/worker.log" 2>/dev/null)" -ge "$conns" ] || { echo "callgrind.sh: not every logout was handled" >&2; exit 1; }
  # callgrind writes its counts when the process exits.
  kill "$gw" "$wk" "$reg"; wait "$gw" "$wk" "$reg" 2>/dev/null || true
  python3 - "$dir" <<'PY'
import json, sys, re
d = sys.argv[1]
r = json.load(open(f"{d}/wsload.json"))
if r["conn_established"] != r["conns"] or r.get("lost") or r.get("duplicates"):
    sys.exit(f'callgrind.sh: {r["conn_established"]} of {r["conns"]} connected ({r.get("conn_errors")}), lost {r.get("lost")}, dup {r.get("duplicates")}')
def ir(f):
    for line in open(f):
        if line.startswith(("summary:", "totals:")):
            return int(line.split()[1])
    sys.exit(f"callgrind.sh: no totals in {f}")
def store(f):
    # The SQLite store thread's share (its batches, inclusive): it varies with how messages
    # fall into batches from run to run, the event's own part does not.
    import subprocess
    out = subprocess.run(["callgrind_annotate", "--inclusive=yes", "--tree=none", "--threshold=100", f], capture_output=True, text=True).stdout
    hits = [int(l.split()[0].replace(",", "")) for l in out.splitlines() if "events::store::sqlite::run_batch [" in l]
    return max(hits, default=0)
print(ir(f"{d}/gateway.cg"), ir(f"{d}/worker.cg"), r.get("sent", 0), r.get("received", 0), store(f"{d}/worker.cg"))
PY
}

if [ $CONNECT = 1 ]; then
  echo "callgrind: 200, then 1200 new connections, each an agent of its own bot, logged in and closed" >&2
  read -r G0 W0 _ _ _ <<< "$(run few 200 0)"
  read -r G1 W1 _ _ _ <<< "$(run many 1200 0)"
  python3 - "$G0" "$W0" "$G1" "$W1" <<'PY'
import sys
g0, w0, g1, w1 = map(int, sys.argv[1:])
print("| instructions (callgrind) | per new connection (login answered, then closed) |")
print("|---|---:|")
print(f"| gateway | {(g1 - g0) / 1000:,.0f} |")
print(f"| chat worker | {(w1 - w0) / 1000:,.0f} |")
print(f"(totals for 200 / 1200 connections: gateway {g0:,} / {g1:,}, worker {w0:,} / {w1:,})")
PY
  exit 0
fi
echo "callgrind: $CONNS agents in rooms of 50 at $RATE msgs/s each for $SECS s; then $CONNS and $((2 * CONNS)) logging in and joining only" >&2
read -r G1 W1 M D S1 <<< "$(run chat $CONNS "$RATE")"
read -r G0 W0 _ _ S0 <<< "$(run base $CONNS 0)"
read -r G2 W2 _ _ _ <<< "$(run base2 $((2 * CONNS)) 0)"
python3 - "$G1" "$W1" "$M" "$D" "$G0" "$W0" "$G2" "$W2" "$CONNS" "$S1" "$S0" <<'PY'
import sys
g1, w1, m, d, g0, w0, g2, w2, conns, s1, s0 = map(int, sys.argv[1:])
print("| instructions (callgrind) | per room message | per delivery | per login (with its join) |")
print("|---|---:|---:|---:|")
print(f"| chat worker | {(w1 - w0) / m:,.0f} | | {(w2 - w0) / conns:,.0f} |")
print(f"| of which the SQLite store thread | {(s1 - s0) / m:,.0f} | | |")
print(f"| gateway | {(g1 - g0) / m:,.0f} | {(g1 - g0) / d:,.0f} | {(g2 - g0) / conns:,.0f} |")
print(f"({m} messages, {d} deliveries; totals chat / base / base2: gateway {g1:,} / {g0:,} / {g2:,}, worker {w1:,} / {w0:,} / {w2:,})")
PY

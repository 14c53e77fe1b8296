#!/usr/bin/env bash
# Core benchmark: one register, one gateway and two probe workers on this box, then
# `switchboard bench` at a few loads. Prints the bench figures and the server processes' CPU
# seconds and RSS. Loopback only; bounded in time. Usage: scripts/bench-core.sh [connections]
set -euo pipefail
cd "$(dirname "$0")/.."
CONNS="${1:-1000}"
cargo build --release --quiet
BIN=target/release/switchboard
RUN=$(mktemp -d)
REG=127.0.0.1:$((20000 + RANDOM % 20000))
WS_PORT=$((40000 + RANDOM % 10000))
INNER=$((30000 + RANDOM % 5000))
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$RUN"; }
trap cleanup EXIT
export SWITCHBOARD_LOG=warn
$BIN register --listen "$REG" 2>"$RUN/register.log" & pids+=($!)
sleep 0.3
$BIN gateway --register "$REG" --listen 127.0.0.1:$WS_PORT --inner-port $INNER --ping-interval 0 2>"$RUN/gateway.log" & pids+=($!)
GW_PID=$!
$BIN business --register "$REG" --app probe --name w1 2>"$RUN/w1.log" & pids+=($!)
W1=$!
$BIN business --register "$REG" --app probe --name w2 2>"$RUN/w2.log" & pids+=($!)
W2=$!
sleep 2

proc_stats() { # pid -> "cpu_seconds rss_mib"
  local ticks; ticks=$(getconf CLK_TCK)
  awk -v t="$ticks" '{printf "%.2f", ($14+$15)/t}' "/proc/$1/stat"
  printf " "
  awk '/VmRSS/ {printf "%.1f", $2/1024}' "/proc/$1/status"
}

echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -sr)"
echo "commit:  $(git rev-parse --short HEAD)"
for rate in ${RATES:-2 8 16}; do
  before_gw=$(proc_stats $GW_PID); before_w1=$(proc_stats $W1); before_w2=$(proc_stats $W2)
  echo "--- $CONNS connections, rooms of 50, $rate msg/s per connection, 10 s"
  $BIN bench --url ws://127.0.0.1:$WS_PORT --connections "$CONNS" --room-size 50 --rate $rate --duration 10
  echo "gateway   cpu_s/rss_MiB before: $before_gw  after: $(proc_stats $GW_PID)"
  echo "worker 1  cpu_s/rss_MiB before: $before_w1  after: $(proc_stats $W1)"
  echo "worker 2  cpu_s/rss_MiB before: $before_w2  after: $(proc_stats $W2)"
done

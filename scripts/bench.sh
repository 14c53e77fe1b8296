#!/usr/bin/env bash
# The benchmark suite (issue #6): starts a fresh `switchboard start` on this box, runs every
# workload with `switchboard bench` (the chat's client protocol over real WebSocket
# connections, from several processes and source addresses; workload 8 over goim packets and
# text lines), and writes docs/BENCHMARKS.md
# from the results. Loopback only; every run is bounded in count and time.
#
#   scripts/bench.sh            the full suite (about 6 minutes here), rewrites docs/BENCHMARKS.md
#   scripts/bench.sh --smoke    small N, about a minute, checks nothing is lost; writes nothing
#   scripts/bench.sh --stores   workload 9 only (each store), its table printed; writes nothing
#   SWITCHBOARD_BIN=<binary> scripts/bench.sh ...  measures that build instead of this checkout
#   scripts/bench.sh --reference  workload 0 only: the reference (../shared/loadkit's refserver)
#                                 and `switchboard start` defaults under one generator (wsload),
#                                 the issue #16 targets as ratios; its table printed; writes nothing
# Redis, PostgreSQL and MariaDB must answer (scripts/services.sh starts them when they do not):
# workload 9 runs the room chat on each store.
set -euo pipefail
cd "$(dirname "$0")/.."
SMOKE=0 STORES=0 REFERENCE=0
[ "${1:-}" = "--smoke" ] && SMOKE=1
[ "${1:-}" = "--stores" ] && STORES=1
[ "${1:-}" = "--reference" ] && REFERENCE=1
# SWITCHBOARD_BIN measures another build (an older commit's binary, for a before/after) with
# this checkout's scripts; otherwise this checkout is built and measured.
if [ -n "${SWITCHBOARD_BIN:-}" ]; then
  BIN=$(realpath "$SWITCHBOARD_BIN")
else
  cargo build --release --quiet
  BIN=${CARGO_TARGET_DIR:-$PWD/target}/release/switchboard
fi
# The reference and its generator, built from ../shared/loadkit (read-only: built outside it).
# The full suite and --reference need it; --smoke runs it where it is and says so where not.
LOADKIT_SRC=${LOADKIT_SRC:-../shared/loadkit}
LOADKIT=${CARGO_TARGET_DIR:-$PWD/target}/loadkit
HAVE_LOADKIT=0
if [ -f "$LOADKIT_SRC/Cargo.toml" ]; then
  CARGO_TARGET_DIR=$LOADKIT cargo build --release --quiet --manifest-path "$LOADKIT_SRC/Cargo.toml"
  HAVE_LOADKIT=1
elif [ $SMOKE = 0 ]; then
  echo "the reference (workload 0) needs ../shared/loadkit, not found from $PWD: set LOADKIT_SRC to its folder" >&2
  exit 1
fi
WSLOAD=$LOADKIT/release/wsload REFSERVER=$LOADKIT/release/refserver
REF_PID=
WORK=$(mktemp -d)
RESULTS=$WORK/results
mkdir -p "$RESULTS"
export SWITCHBOARD_LOG=warn
export SWITCHBOARD_AGENT_SECRET=bench-agent-secret
BENCH_API_KEY=bench-api-key-$RANDOM$RANDOM$RANDOM-0123456789
UPSTREAM_PORT=$((21000 + RANDOM % 1000))
UP_PID=
cleanup() {
  [ -f "$WORK/switchboard.toml" ] && (cd "$WORK" && "$BIN" stop >/dev/null 2>&1 || true)
  [ -n "$UP_PID" ] && kill "$UP_PID" 2>/dev/null || true
  [ -n "$REF_PID" ] && kill "$REF_PID" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$WORK"
  services_cleanup
}
# Redis, PostgreSQL and MariaDB for the store runs (workload 9), started if none answers.
. scripts/services.sh
. scripts/loopback-config.sh
trap cleanup EXIT

# start_system <gateways> [store]: a fresh system in $WORK with this many gateway processes
# ("" for `start`'s default), its chat store at the URL given (default: SQLite in its run
# directory). AGENT_AUTH=false lets agents log in without a token (the reference's generator
# sends none).
AGENT_AUTH=true
start_system() {
  (cd "$WORK" && "$BIN" stop >/dev/null 2>&1 || true)
  rm -rf "$WORK/run"
  # Below the ephemeral range (32768+), where outgoing connections would collide with it.
  local base=$((22000 + RANDOM % 10000))
  local store=${2:-sqlite:$WORK/run/chat.db}
  {
    loopback_config "$WORK/run" "$base" "$store" "$AGENT_AUTH" "$1"
    cat <<TOML
redis_prefix = "bench-$base:"
upstream_url = "http://127.0.0.1:$UPSTREAM_PORT/api/{method}"
[api]
listen = "127.0.0.1:$((base + 30))"
[[api.keys]]
name = "bench"
key = "$BENCH_API_KEY"
bots = ["*"]
write = true
rate_limit = 0.0
TOML
  } > "$WORK/switchboard.toml"
  API_URL="http://127.0.0.1:$((base + 30))"
  URL="ws://127.0.0.1:$((base + 1))"
  TEXT_URL="127.0.0.1:$((base + 20))"
  GOIM_URL="127.0.0.1:$((base + 21))"
  (cd "$WORK" && "$BIN" start -d >/dev/null)
  SERVERS=$(cd "$WORK" && "$BIN" status --json | python3 -c '
import json, sys
print(",".join("%s:%s" % (r["role"], r["pid"]) for r in json.load(sys.stdin) if r["role"] in ("gateway", "business")))')
}

# Workload 0 (issue #16): the same generator (wsload) against the reference, a fresh refserver,
# and against `switchboard start` with its defaults (gateway and worker counts, SQLite), only the
# per-address, rate and agent-auth limits lifted (REF_GATEWAYS=n runs n gateways instead, to
# compare with the default). Each JSON goes to $REFS/<system>-<run>.json
# with the roles of the pids it sampled; scripts/bench-reference.py makes the table.
REFS=$WORK/reference
# wsload_run <system> <run> <wsload args...>: one wsload run against $TARGET_URL/$TARGET_PIDS.
wsload_run() {
  local system=$1 run=$2; shift 2
  local login=()
  # The chat needs a login before `join` (agents of one bot per room); the reference takes any.
  # A fresh agent id each run: the chat de-duplicates (sender, cid). The `connect` run measures
  # target 5 as the issue words it (accept, upgrade, first message answered): both systems
  # answer a login, and nobody joins a room.
  { [ "$system" = switchboard ] || [ "$run" = connect ]; } && login=(--login '{"method":"login","bid":"b{room}","customer_id":"u{g}-'"$run-$RANDOM"'","customer_name":"n{g}","presence":"batch"}')
  echo "--- 0-$system-$run: wsload $*"
  "$WSLOAD" --url "$TARGET_URL" "${login[@]}" --server-pids "$TARGET_PIDS" --json --quiet "$@" | tail -1 > "$REFS/$system-$run.json"
  python3 - "$REFS/$system-$run.json" "$TARGET_ROLES" <<'PY'
import json, sys
path, roles = sys.argv[1], sys.argv[2].split(",")
r = json.load(open(path))
r["roles"] = dict(zip([str(s["pid"]) for s in r["server"]], roles))
json.dump(r, open(path, "w"))
l = r["latency_ms"]
print(f'    {r["conn_established"]} of {r["conns"]} conns in {r["connect_all_s"]:.2f} s, {r["deliveries_per_s"]:.0f} deliveries/s, '
      f'lost {r["lost"]}, dup {r["duplicates"]}, p50 {l["p50"]:.1f} p99 {l["p99"]:.1f} ms, server CPU {r["server_cpu_s_window"]:.2f} s')
PY
}
stop_reference() {
  if [ -n "$REF_PID" ]; then kill "$REF_PID" 2>/dev/null; wait "$REF_PID" 2>/dev/null || true; REF_PID=; fi
}
# reference_target <system>: starts that system fresh and points TARGET_* at it.
reference_target() {
  stop_reference
  if [ "$1" = reference ]; then
    (cd "$WORK" && "$BIN" stop >/dev/null 2>&1 || true)
    local port=$((32000 - RANDOM % 1000))
    "$REFSERVER" --listen "127.0.0.1:$port" 2>/dev/null & REF_PID=$!
    TARGET_URL="ws://127.0.0.1:$port/" TARGET_PIDS=$REF_PID TARGET_ROLES=reference
    for _ in $(seq 50); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
  else
    AGENT_AUTH=false start_system "${REF_GATEWAYS:-}"
    TARGET_URL="$URL/"
    TARGET_PIDS=$(echo "$SERVERS" | tr , '\n' | cut -d: -f2 | paste -sd,)
    TARGET_ROLES=$(echo "$SERVERS" | tr , '\n' | cut -d: -f1 | paste -sd,)
  fi
}
# reference_runs <conns> <duration> <hold conns> <rates...>: the room chat at each rate, then
# idle connections held, on both systems; each system fresh for its hold (memory per connection
# is measured from a process that has not yet grown).
reference_runs() {
  local conns=$1 secs=$2 hold=$3 system rate; shift 3
  mkdir -p "$REFS"
  for system in reference switchboard; do
    reference_target $system
    for rate in "$@"; do
      wsload_run $system "room-r$rate" --conns "$conns" --room-size 50 --rate "$rate" --duration "$secs" --warmup 2 --grace 30 --source-ips 127.0.0.2-127.0.0.5
    done
    reference_target $system
    # Held 15 s: long enough for the allocators' own schedule (jemalloc gives freed pages back
    # after 10 s) to show what an idle connection keeps, beside what it took to connect.
    wsload_run $system hold --hold --conns "$hold" --room-size 50 --duration "${HOLD_SECS:-15}" --source-ips 127.0.0.2-127.0.0.40
    reference_target $system
    # New connections a second, each answered its login (`--room-size 0`: no join, so each
    # agent is its own bot's only one).
    wsload_run $system connect --hold --conns "$hold" --room-size 0 --duration 2 --source-ips 127.0.0.2-127.0.0.40
  done
  stop_reference
  (cd "$WORK" && "$BIN" stop >/dev/null 2>&1 || true)
}

# bench <name> <args...>: one run; its JSON goes to $RESULTS/<name>.json, a table to the terminal.
# The connections go to $URL over WebSocket, or with `--transport text|goim` to that listener.
bench() {
  local name=$1; shift
  local url=$URL
  case " $* " in
    *" --transport text "*) url=$TEXT_URL ;;
    *" --transport goim "*) url=$GOIM_URL ;;
  esac
  echo "--- $name: $*"
  "$BIN" bench --url "$url" --server "$SERVERS" --json "$@" > "$RESULTS/$name.json"
  python3 - "$RESULTS/$name.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
l = r["latency_ms"]
print(f'    {r["connections"]} conns, offered {r["offered_msgs_per_second"]:.0f} msg/s: {r["deliveries_per_second"]:.0f} deliveries/s, '
      f'lost {r["lost"]}, dup {r["duplicated"]}, p50 {l["p50"]:.1f} p99 {l["p99"]:.1f} max {l["max"]:.1f} ms, '
      f'open at end {r["still_open"]}, closed {r["closed_by_server"]} {r["close_reasons"]}')
PY
}

# api_bench <name> <sends>: the server API's send_to_group from one keep-alive HTTP client,
# beside Api::remote, into $WORK/api/<name>.json (workload 10; not a client-protocol run).
api_bench() {
  mkdir -p "$WORK/api"
  echo "--- $1: bench-api --requests $2"
  SWITCHBOARD_SECRET_KEY=$(cat "$WORK/run/secret-key") "$BIN" bench-api --register "$(grep -m1 '^registers' "$WORK/switchboard.toml" | sed 's/.*\["\(.*\)"\]/\1/')" \
    --api "$API_URL" --key "$BENCH_API_KEY" --requests "$2" --json > "$WORK/api/$1.json"
  python3 - "$WORK/api/$1.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
for way in ("http", "remote"):
    f = r[way]
    print(f'    {way:<6} {f["requests"]} sends, {f["per_second"]:.0f}/s, p50 {f["p50_ms"]:.2f} p99 {f["p99_ms"]:.2f} max {f["max_ms"]:.2f} ms, failures {f["failures"]}')
sys.exit(1 if r["http"]["failures"] or r["remote"]["failures"] or not r["http"]["requests"] else 0)
PY
}

# Each store's room chat (workload 9): the same 1 000 connections in rooms of 50 on SQLite (in the
# workers), Redis, PostgreSQL and MariaDB (the servers scripts/test.sh uses). The database
# server's own CPU in the window is read from /proc (every process of that name: PostgreSQL
# forks one per connection) and added to the run's JSON as `store_cpu_secs`.
db_cpu() { # db_cpu <process name>: CPU seconds of every process of that name now
  python3 - "$1" <<'PY'
import os, sys
tick, total = os.sysconf("SC_CLK_TCK"), 0
for pid in filter(str.isdigit, os.listdir("/proc")):
    try:
        stat = open(f"/proc/{pid}/stat").read()
    except OSError:
        continue
    comm, rest = stat[stat.index("(") + 1:stat.rindex(")")], stat[stat.rindex(")") + 2:].split()
    if comm == sys.argv[1]:
        total += int(rest[11]) + int(rest[12])
print(total / tick)
PY
}
store_runs() { # store_runs <rates...>
  local pg_admin=${POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/test} my_admin=${MYSQL_URL:-mysql://root@127.0.0.1:3306/test}
  local db="bench_$$" kind url proc before
  PGOPTIONS="--client-min-messages=warning" psql "$pg_admin" -qc "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db"
  mariadb -h 127.0.0.1 -P "${MYSQL_PORT:-3306}" -u root -e "DROP DATABASE IF EXISTS $db; CREATE DATABASE $db"
  for kind in sqlite redis postgres mysql; do
    case $kind in
      sqlite) url=""; proc="" ;;
      redis) url="redis://127.0.0.1:6379"; proc=redis-server ;;
      postgres) url="${pg_admin%/*}/$db"; proc=postgres ;;
      mysql) url="${my_admin%/*}/$db"; proc=mariadbd ;;
    esac
    start_system 2 "$url"
    for rate in "$@"; do
      before=$([ -n "$proc" ] && db_cpu "$proc" || echo 0)
      bench "9-store-$kind-r$rate" --workload room --connections "${STORE_CONNS:-1000}" --room-size 50 --rate "$rate" --duration "${STORE_SECS:-10}" --sources "$(sources 2)"
      python3 - "$RESULTS/9-store-$kind-r$rate.json" "$kind" "$before" "$([ -n "$proc" ] && db_cpu "$proc" || echo 0)" <<'PY'
import json, sys
path, kind, before, after = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
r = json.load(open(path))
r["store"], r["store_cpu_secs"] = kind, (after - before if kind != "sqlite" else None)
json.dump(r, open(path, "w"))
PY
    done
  done
  (cd "$WORK" && "$BIN" stop >/dev/null 2>&1 || true)
  psql "$pg_admin" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)"
  mariadb -h 127.0.0.1 -P "${MYSQL_PORT:-3306}" -u root -e "DROP DATABASE IF EXISTS $db"
}

sources() { # sources <n>: 127.0.0.2 … 127.0.0.<n+1>
  seq 2 $(($1 + 1)) | sed 's/^/127.0.0./' | paste -sd, -
}

"$BIN" bench-upstream --listen "127.0.0.1:$UPSTREAM_PORT" --delay-ms 20 & UP_PID=$!

if [ $SMOKE = 1 ]; then
  if [ $HAVE_LOADKIT = 1 ]; then
    reference_runs 200 2 1000 4
    python3 scripts/bench-reference.py --check "$REFS"
    # An agent's login in a bot with conversations waiting (scripts/busy-login.sh), small.
    SWITCHBOARD_BIN=$BIN scripts/busy-login.sh sqlite 20 20
  else
    echo "bench smoke: the reference beside the system (workload 0) NOT RUN: no $LOADKIT_SRC here (set LOADKIT_SRC)" >&2
  fi
  start_system 2
  bench smoke-room --workload room --connections 100 --room-size 10 --rate 4 --duration 2 --drain 2 --sources "$(sources 2)"
  bench smoke-pairs --workload pairs --connections 40 --room-size 2 --rate 4 --duration 2 --drain 2
  bench smoke-room-goim --workload room --transport goim --connections 100 --room-size 10 --rate 4 --duration 2 --drain 2
  bench smoke-room-text --workload room --transport text --connections 100 --room-size 10 --rate 4 --duration 2 --drain 2
  bench smoke-hold-goim --workload hold --transport goim --connections 200 --duration 2 --drain 0.5 --beat 1
  bench smoke-hold --workload hold --connections 2000 --processes 2 --duration 2 --drain 0.5 --beat 1 --sources "$(sources 2)"
  bench smoke-login --workload login --connections 100 --duration 3 --drain 0
  api_bench smoke-api 500
  STORE_CONNS=100 STORE_SECS=2 store_runs 4
  start_system 2
  bench smoke-proxy --workload proxy --connections 40 --rate 4 --duration 2 --drain 2
  (sleep 1 && cd "$WORK" && "$BIN" reload >/dev/null) &
  bench smoke-reload --workload room --connections 100 --room-size 10 --rate 4 --duration 4 --drain 3
  wait $!
  python3 - "$RESULTS" <<'PY'
import json, os, sys
bad = []
for f in sorted(os.listdir(sys.argv[1])):
    r = json.load(open(os.path.join(sys.argv[1], f)))
    problems = [k for k in ("lost", "duplicated", "misdelivered", "connect_failures", "setup_failures") if r[k]]
    if r["workload"] != "login" and r["closed_by_server"]:
        problems.append("closed_by_server")
    if r["workload"] == "login" and r["presence_complete"] != r["connections"]:
        problems.append("presence")
    if r["workload"] in ("room", "pairs", "proxy") and not r["deliveries_received"]:
        problems.append("nothing delivered")
    if problems:
        bad.append(f"{f}: {problems}")
print("bench smoke:", "FAILED " + "; ".join(bad) if bad else "ok")
if os.environ.get("BENCH_SMOKE_REPORT"):
    os.system(f"python3 scripts/bench-report.py {sys.argv[1]}")
sys.exit(1 if bad else 0)
PY
  exit 0
fi

if [ $REFERENCE = 1 ]; then
  reference_runs 1000 10 15000 2 4 8 16
  python3 scripts/bench-reference.py "$REFS"
  exit 0
fi

if [ $STORES = 1 ]; then
  store_runs 4 8
  python3 scripts/bench-report.py "$RESULTS" | awk '/^Stores/ { p = 1 } p && /^## / { exit } p'
  exit 0
fi

# The full suite: the reference beside the defaults first, on a quiet box.
reference_runs 1000 10 15000 2 4 8 16
start_system 2
for rate in 2 4 8 12 16 32; do
  bench "1-room-r$rate" --workload room --connections 1000 --room-size 50 --rate $rate --duration 10 --sources "$(sources 2)"
done
for rate in 0.1 0.2 0.5 1 2; do
  bench "2-large-r$rate" --workload room --connections 15000 --room-size 50 --rate $rate --duration 10 --processes 2 --sources "$(sources 4)"
  p99=$(python3 -c "import json; print(json.load(open('$RESULTS/2-large-r$rate.json'))['latency_ms']['p99'])")
  python3 -c "import sys; sys.exit(0 if $p99 > 50 else 1)" && break
done
bench 3-pairs-r8 --workload pairs --connections 1000 --room-size 2 --rate 8 --duration 10 --sources "$(sources 2)"
bench 8-room-goim-r8 --workload room --transport goim --connections 1000 --room-size 50 --rate 8 --duration 10 --sources "$(sources 2)"
bench 8-room-text-r8 --workload room --transport text --connections 1000 --room-size 50 --rate 8 --duration 10 --sources "$(sources 2)"
bench 6-proxy-r2 --workload proxy --connections 1000 --rate 2 --duration 10 --sources "$(sources 2)"
(sleep 4 && cd "$WORK" && "$BIN" reload > "$WORK/reload.out" 2>&1) &
bench 7-reload-r8 --workload room --connections 1000 --room-size 50 --rate 8 --duration 20 --drain 5 --sources "$(sources 2)"
wait $!
# The run only counts if the workers really were replaced under it.
grep -q "reloaded" "$WORK/reload.out" || { echo "reload did not happen: $(cat "$WORK/reload.out")" >&2; exit 1; }
echo "    $(cat "$WORK/reload.out")"
store_runs 4 8
start_system 2
api_bench 10-api 20000
# The login storm on a system of its own: its 5000 agents leaving afterwards is a storm too,
# which would slow whatever ran next.
start_system 2
bench 5-login --workload login --connections 5000 --duration 20 --drain 0 --sources "$(sources 2)"
start_system 7
bench 4-hold --workload hold --connections 100000 --processes 10 --duration 60 --drain 1 --beat 20 --connect-concurrency 128 --sources "$(sources 10)"

python3 scripts/bench-report.py "$RESULTS" "$REFS" > docs/BENCHMARKS.md
echo "wrote docs/BENCHMARKS.md"

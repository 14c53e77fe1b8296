#!/usr/bin/env bash
# What an agent's login costs in a bot with open conversations waiting (issue #16, session 34):
# a fresh `switchboard start` on the store given, CONVS open conversations of bot `busy` with 10
# messages each written into the store, then LOGINS agents of that bot logging in one after
# another (wsload, each waits for its login's answer). Prints the answers' latency and the
# workers' CPU per login; the same with no conversation is the baseline. Loopback only.
#
#   scripts/busy-login.sh [sqlite|postgres|mysql] [CONVS] [LOGINS]    defaults: sqlite 100 200
#   SWITCHBOARD_BIN=<binary> scripts/busy-login.sh ...                 measures that build
#
# PostgreSQL and MySQL are the servers scripts/test.sh uses (POSTGRES_URL, MYSQL_URL); a
# database is made for the run and dropped after it.
set -euo pipefail
cd "$(dirname "$0")/.."
KIND=${1:-sqlite} CONVS=${2:-100} LOGINS=${3:-200}
if [ -n "${SWITCHBOARD_BIN:-}" ]; then
  BIN=$(realpath "$SWITCHBOARD_BIN")
else
  cargo build --release --quiet
  BIN=${CARGO_TARGET_DIR:-$PWD/target}/release/switchboard
fi
LOADKIT=${CARGO_TARGET_DIR:-$PWD/target}/loadkit
CARGO_TARGET_DIR=$LOADKIT cargo build --release --quiet --manifest-path "${LOADKIT_SRC:-../shared/loadkit}/Cargo.toml"
. scripts/loopback-config.sh
WORK=$(mktemp -d) DB=sbbusy$$
PG=${POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/test}
MY=${MYSQL_URL:-mysql://root@127.0.0.1:3306/test}
cleanup() {
  (cd "$WORK" && "$BIN" stop >/dev/null 2>&1 || true)
  case $KIND in
    postgres) psql "$PG" -qc "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1 || true ;;
    mysql) mysql -uroot -h127.0.0.1 -e "DROP DATABASE IF EXISTS $DB" >/dev/null 2>&1 || true ;;
  esac
  rm -rf "$WORK"
}
trap cleanup EXIT
case $KIND in
  sqlite) STORE=sqlite:$WORK/run/chat.db ;;
  postgres) psql "$PG" -qc "CREATE DATABASE $DB"; STORE=${PG%/*}/$DB ;;
  mysql) mysql -uroot -h127.0.0.1 -e "CREATE DATABASE $DB"; STORE=${MY%/*}/$DB ;;
  *) echo "busy-login.sh: the store is sqlite, postgres or mysql, not $KIND" >&2; exit 2 ;;
esac
base=$((22000 + RANDOM % 10000))
loopback_config "$WORK/run" "$base" "$STORE" false > "$WORK/switchboard.toml"
export SWITCHBOARD_LOG=warn
(cd "$WORK" && "$BIN" start -d >/dev/null)
WORKERS=$(cd "$WORK" && "$BIN" status --json | python3 -c '
import json, sys
print(",".join(str(r["pid"]) for r in json.load(sys.stdin) if r["role"] == "business"))')
# The workers have made the schema once they answer; conversations and messages are then
# written as the store keeps them (thread `c:<id>`, sender `v:<bot>:<visitor>`).
for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$((base + 1))") 2>/dev/null && break; sleep 0.1; done
sleep 1
[ "$CONVS" -gt 0 ] && case $KIND in
  sqlite) python3 - "$WORK/run/chat.db" "$CONVS" <<'PY'
import sqlite3, sys
db = sqlite3.connect(sys.argv[1], timeout=10)
with db:
    for i in range(int(sys.argv[2])):
        db.execute("INSERT INTO conversations (id, bid, visitor_id, visitor_name, assigned, open, created) VALUES (?, 'busy', ?, ?, NULL, 1, ?)",
                   (f"busy{i}", f"v{i}", f"visitor {i}", 1000 + i))
        db.executemany("INSERT INTO messages (thread, id, from_uid, from_name, cid, content, dest, ts, sender) VALUES (?, ?, ?, 'visitor', NULL, 'hello', '{}', ?, ?)",
                       [(f"c:busy{i}", m, f"v{i}", 1000 + m, f"v:busy:v{i}") for m in range(1, 11)])
PY
  ;;
  postgres) psql "$STORE" -qc "
    INSERT INTO conversations (id, bid, visitor_id, visitor_name, assigned, open, created)
      SELECT 'busy'||i, 'busy', 'v'||i, 'visitor '||i, NULL, TRUE, 1000+i FROM generate_series(0, $CONVS - 1) i;
    INSERT INTO messages (thread, id, sender, from_uid, from_name, cid, content, dest, ts)
      SELECT 'c:busy'||i, m, 'v:busy:v'||i, 'v'||i, 'visitor', NULL, 'hello', '{}', 1000+m
      FROM generate_series(0, $CONVS - 1) i, generate_series(1, 10) m;" ;;
  mysql) mysql -uroot -h127.0.0.1 "$DB" -e "
    INSERT INTO conversations (id, bid, visitor_id, visitor_name, assigned, open, open_visitor, created)
      SELECT CONCAT('busy', seq), 'busy', CONCAT('v', seq), 'visitor', NULL, TRUE, CONCAT('v', seq), 1000+seq FROM seq_0_to_$((CONVS - 1));
    INSERT INTO messages (thread, id, sender, from_uid, from_name, cid, content, dest, ts)
      SELECT CONCAT('c:busy', a.seq), b.seq, CONCAT('v:busy:v', a.seq), 'v', 'visitor', NULL, 'hello', '{}', 1000+b.seq
      FROM seq_0_to_$((CONVS - 1)) a, seq_1_to_10 b;" ;;
esac
LOGIN='{"method":"login","bid":"busy","customer_id":"u{g}","customer_name":"n{g}","presence":"batch"}'
"$LOADKIT/release/wsload" --url "ws://127.0.0.1:$((base + 1))/" --login "$LOGIN" --hold --conns "$LOGINS" --room-size 0 \
  --duration 1 --max-inflight 1 --server-pids "$WORKERS" --json --quiet | tail -1 > "$WORK/r.json"
python3 - "$WORK/r.json" "$KIND" "$CONVS" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
n, s = r["conn_established"], r["setup_ms"]
cpu = sum(p["cpu_s_connect"] for p in r["server"])
print(f'{sys.argv[2]}, {sys.argv[3]} open conversations: {n} of {r["conns"]} logins answered, '
      f'p50 {s["p50"]:.1f} ms, p99 {s["p99"]:.1f} ms; workers\' CPU {cpu / max(n, 1) * 1000:.2f} ms a login')
if n != r["conns"]:
    sys.exit("busy-login.sh: not every login was answered")
PY

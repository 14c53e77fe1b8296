# Sourced by scripts/test.sh and scripts/bench.sh: makes sure the servers they need answer.
#  - Redis at REDIS_URL (default 127.0.0.1:6379), started locally when none answers;
#  - PostgreSQL at POSTGRES_URL (default 127.0.0.1:5432, user postgres, database test), likewise;
#  - MySQL/MariaDB at MYSQL_URL (default 127.0.0.1:3306, user root, database test), likewise;
#  - both database servers' binaries, for the replica tests' own primary + replica pairs.
# What it starts is stopped again when the sourcing script exits (`services_cleanup`, which a
# script with its own EXIT trap calls from it). Installing packages needs root (as on CI).

command -v redis-server >/dev/null || {
  echo "installing: redis-server"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
}

# What this script started, stopped again on exit.
CLEANUPS=()
services_cleanup() { for c in "${CLEANUPS[@]}"; do "$c"; done; }
trap services_cleanup EXIT

redis_up() { (exec 3<>/dev/tcp/127.0.0.1/6379 && printf 'PING\r\n' >&3 && timeout 2 head -c 5 <&3 | grep -q PONG) 2>/dev/null; }
if [ -z "${REDIS_URL:-}" ] && ! redis_up; then
  redis-server --daemonize yes --port 6379 --save '' --appendonly no
  # Started here, so stopped here: the machine is left as it was found.
  stop_redis() { redis-cli -p 6379 shutdown nosave >/dev/null 2>&1 || true; }
  CLEANUPS+=(stop_redis)
  for _ in $(seq 50); do redis_up && break; sleep 0.1; done
  redis_up || { echo "Redis did not start" >&2; exit 1; }
fi

# PostgreSQL at POSTGRES_URL (default postgres://postgres@127.0.0.1:5432/test, trust auth), for
# the PostgreSQL store's tests: when none answers, Debian's server is installed and a throwaway
# cluster started on 127.0.0.1:5432 (trust auth, database `test`), stopped again at the end.
PG_PORT=${PG_PORT:-5432}
pg_up() { (exec 3<>"/dev/tcp/127.0.0.1/$PG_PORT") 2>/dev/null; }
# The server's binaries are needed even when one answers: the replica tests (store_read) start
# a primary and a streaming replica of their own.
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  echo "installing: postgresql"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
  # The package may start its own cluster (password auth, no `test` database): stop it; the
  # one at PG_PORT (already there, or the throwaway one below) is the one the tests use.
  if ! pg_up && command -v pg_lsclusters >/dev/null; then
    pg_lsclusters -h | while read -r ver name _; do pg_ctlcluster "$ver" "$name" stop >/dev/null 2>&1 || true; done
  fi
fi
if [ -z "${POSTGRES_URL:-}" ] && ! pg_up; then
  PG_BIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
  PG_DIR=$(mktemp -d /tmp/sb-pg-XXXXXX)
  chown postgres "$PG_DIR"
  stop_pg() { runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -m fast stop >/dev/null 2>&1 || true; rm -rf "$PG_DIR"; }
  CLEANUPS+=(stop_pg)
  runuser -u postgres -- "$PG_BIN/initdb" -D "$PG_DIR/data" -A trust -U postgres >/dev/null
  runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/log" -w \
    -o "-h 127.0.0.1 -p $PG_PORT -k $PG_DIR" start >/dev/null
  runuser -u postgres -- "$PG_BIN/createdb" -h 127.0.0.1 -p "$PG_PORT" -U postgres test
  pg_up || { echo "PostgreSQL did not start" >&2; exit 1; }
fi

# MySQL/MariaDB at MYSQL_URL (default mysql://root@127.0.0.1:3306/test, root without a
# password), for the MySQL store's tests: when none answers, Debian's MariaDB is installed and a
# throwaway server started on 127.0.0.1:3306 with a `test` database, stopped again at the end.
MYSQL_PORT=${MYSQL_PORT:-3306}
mysql_up() { (exec 3<>"/dev/tcp/127.0.0.1/$MYSQL_PORT") 2>/dev/null; }
if [ ! -x /usr/sbin/mariadbd ]; then
  echo "installing: mariadb-server"
  mysql_was_up=$(mysql_up && echo yes || true)
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mariadb-server >/dev/null
  # The package may start its own server: stop it and run the throwaway one below instead.
  [ -n "$mysql_was_up" ] || (service mariadb stop || service mysql stop) >/dev/null 2>&1 || true
fi
if [ -z "${MYSQL_URL:-}" ] && ! mysql_up; then
  MY_DIR=$(mktemp -d /tmp/sb-mysql-XXXXXX)
  chown mysql "$MY_DIR"
  stop_mysql() { [ -n "${MY_PID:-}" ] && kill "$MY_PID" 2>/dev/null && wait "$MY_PID" 2>/dev/null; rm -rf "$MY_DIR"; }
  CLEANUPS+=(stop_mysql)
  mariadb-install-db --datadir="$MY_DIR/data" --user=mysql --auth-root-authentication-method=normal \
    --skip-test-db >/dev/null
  /usr/sbin/mariadbd --datadir="$MY_DIR/data" --socket="$MY_DIR/sock" --pid-file="$MY_DIR/pid" \
    --port="$MYSQL_PORT" --bind-address=127.0.0.1 --user=mysql --skip-log-bin >"$MY_DIR/log" 2>&1 &
  MY_PID=$!
  for _ in $(seq 100); do mysql_up && break; sleep 0.1; done
  mysql_up || { echo "MariaDB did not start" >&2; cat "$MY_DIR/log" >&2; exit 1; }
  mariadb -h 127.0.0.1 -P "$MYSQL_PORT" -u root -e "CREATE DATABASE IF NOT EXISTS test"
fi

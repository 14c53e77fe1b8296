#!/usr/bin/env bash
# A worked three-server deployment on one machine: 127.0.0.2 (register + gateway),
# 127.0.0.3 (gateway) and 127.0.0.4 (business workers; its metrics listen there).
# Each "server" is its own `switchboard start -d` with its own config and run directory,
# exactly as it would be on three machines.
#   scripts/three-servers.sh start | status | stop
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${SWITCHBOARD_BIN:-target/release/switchboard}
[ -x "$BIN" ] || cargo build --release --quiet
case "${1:-start}" in
  start)
    for s in a b c; do
      echo "== server $s"
      "$BIN" --config "scripts/three-servers/server-$s.toml" start -d
      # Server A runs the register: it generated the inner secret key (run/server-a/secret-key,
      # mode 0600). The other servers get it from there, as you would copy it to real ones.
      if [ "$s" = a ] && [ -z "${SWITCHBOARD_SECRET_KEY:-}" ]; then
        SWITCHBOARD_SECRET_KEY=$(cat run/server-a/secret-key)
        export SWITCHBOARD_SECRET_KEY
      fi
    done
    echo "clients: ws://127.0.0.2:7272 and ws://127.0.0.3:7272 (one system)"
    ;;
  status)
    for s in a b c; do echo "== server $s"; "$BIN" --config "scripts/three-servers/server-$s.toml" status; done
    ;;
  stop)
    for s in c b a; do echo "== server $s"; "$BIN" --config "scripts/three-servers/server-$s.toml" stop -g || true; done
    ;;
  *) echo "usage: $0 start|status|stop" >&2; exit 2 ;;
esac

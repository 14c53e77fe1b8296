#!/usr/bin/env bash
# A worked three-server deployment on one machine, each server a host of its own: a network
# namespace with its own address and network stack (scripts/hosts.sh, set 200; needs root):
#   server A, 10.200.0.11: register + gateway
#   server B, 10.200.0.12: gateway
#   server C, 10.200.0.13: two business workers (the chat) and their store
# Each is its own `switchboard start -d` with its own config and run directory, exactly as on
# three machines. This machine reaches them over the bridge (10.200.0.1).
#   scripts/three-servers.sh start | status | stop
#   scripts/three-servers.sh cut a|b|c     take a server off the network (a partition)
#   scripts/three-servers.sh heal a|b|c
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${SWITCHBOARD_BIN:-target/release/switchboard}
SET=200
host() { case $1 in a) echo 1 ;; b) echo 2 ;; c) echo 3 ;; *) echo "server a, b or c" >&2; exit 2 ;; esac; }
on() { local s=$1; shift; ip netns exec "sb${SET}h$(host "$s")" "$BIN" --config "scripts/three-servers/server-$s.toml" "$@"; }
[ "$(id -u)" = 0 ] || { echo "the test hosts are network namespaces: run as root" >&2; exit 1; }
case "${1:-start}" in
  start)
    [ -x "$BIN" ] || cargo build --release --quiet
    scripts/hosts.sh up "$SET" 3
    for s in a b c; do
      echo "== server $s"
      on "$s" start -d
      # Server A runs the register: it generated the inner secret key (run/server-a/secret-key,
      # mode 0600). The other servers get it from there, as you would copy it to real ones.
      if [ "$s" = a ] && [ -z "${SWITCHBOARD_SECRET_KEY:-}" ]; then
        SWITCHBOARD_SECRET_KEY=$(cat run/server-a/secret-key)
        export SWITCHBOARD_SECRET_KEY
      fi
    done
    echo "clients: ws://10.200.0.11:7272 and ws://10.200.0.12:7272 (one system)"
    echo "agent tokens: SWITCHBOARD_AGENT_SECRET=\$(cat run/server-c/agent-secret) $BIN token --bid 1 --agent <id>"
    ;;
  status)
    for s in a b c; do echo "== server $s"; on "$s" status; done
    ;;
  stop)
    for s in c b a; do echo "== server $s"; on "$s" stop -g || true; done
    scripts/hosts.sh down "$SET"
    ;;
  cut | heal)
    scripts/hosts.sh "$1" "$SET" "$(host "${2:?which server: a, b or c}")"
    ;;
  *) echo "usage: $0 start|status|stop|cut <server>|heal <server>" >&2; exit 2 ;;
esac

#!/usr/bin/env bash
# Test hosts on this machine: network namespaces on a bridge, so processes of a "server" run
# with their own network stack, and the links between servers can be delayed, made lossy or cut.
#
#   scripts/hosts.sh up <set> <n>          hosts 1..n of set <set> (1-250)
#   scripts/hosts.sh down <set>            removes them (and any process still inside)
#   scripts/hosts.sh netem <set> <i> <tc netem args…>   e.g. delay 50ms 5ms loss 1%
#   scripts/hosts.sh netem <set> <i> off
#   scripts/hosts.sh cut <set> <i>         partitions host i from every other (its link down)
#   scripts/hosts.sh heal <set> <i>
#   scripts/hosts.sh wire <set> <n> <delay ms> <loss %>   a second network between hosts 1..n and
#                                          this namespace, 10.<set>.1.0/24, every packet delayed
#                                          and some lost (scripts/wire.py; for kernels without netem)
#
# Set <set> owns 10.<set>.0.0/24: the bridge sb<set>br holds 10.<set>.0.1 in this (the root)
# namespace, which is where tests run their clients; host i is the namespace sb<set>h<i> at
# 10.<set>.0.<10+i>, with a route to the bridge's subnet only, so nothing routes out of it.
# Needs root (CI has it). Each run of a test uses its own set, so tests never share hosts.
set -euo pipefail

usage() { sed -n '2,18p' "$0" >&2; exit 2; }
[ $# -ge 2 ] || usage
cmd=$1 set=$2
[[ $set =~ ^[0-9]+$ ]] && [ "$set" -ge 1 ] && [ "$set" -le 250 ] || { echo "set must be 1-250" >&2; exit 2; }
br="sb${set}br"
ns() { echo "sb${set}h$1"; }
# The host's end of its link is eth0 inside its namespace; the bridge's end is sb<set>h<i>p.
port() { echo "sb${set}h$1p"; }

case $cmd in
  up)
    n=${3:?how many hosts}
    "$0" down "$set" 2>/dev/null || true
    ip link add "$br" type bridge
    ip addr add "10.$set.0.1/24" dev "$br"
    ip link set "$br" up
    for i in $(seq 1 "$n"); do
      ip netns add "$(ns "$i")"
      ip link add "$(port "$i")" type veth peer name eth0 netns "$(ns "$i")"
      ip link set "$(port "$i")" master "$br" up
      ip -n "$(ns "$i")" addr add "10.$set.0.$((10 + i))/24" dev eth0
      ip -n "$(ns "$i")" link set eth0 up
      ip -n "$(ns "$i")" link set lo up
    done
    ;;
  down)
    # Best effort, every step: whatever is left of a set (a test that died halfway) goes too.
    if [ -f "/run/sb${set}wire.pid" ]; then
      kill "$(cat "/run/sb${set}wire.pid")" 2>/dev/null || true
      rm -f "/run/sb${set}wire.pid"
    fi
    for n in $(ip netns list | awk '{print $1}' | grep -E "^sb${set}h[0-9]+$" || true); do
      # Whatever still runs inside goes with it.
      for pid in $(ip netns pids "$n" 2>/dev/null); do kill -9 "$pid" 2>/dev/null || true; done
      ip netns del "$n" 2>/dev/null || true
    done
    # A namespace whose last process is slow to die keeps its link a moment: remove the ports.
    for p in $(ip -br link | awk '{print $1}' | sed 's/@.*//' | grep -E "^sb${set}h[0-9]+p$" || true); do
      ip link del "$p" 2>/dev/null || true
    done
    ip link del "$br" 2>/dev/null || true
    ;;
  netem)
    i=${3:?which host}; shift 3
    if [ "${1:-}" = off ]; then
      ip netns exec "$(ns "$i")" tc qdisc del dev eth0 root 2>/dev/null || true
    else
      ip netns exec "$(ns "$i")" tc qdisc replace dev eth0 root netem "$@" || {
        echo "tc netem failed: this kernel may lack it (CONFIG_NET_SCH_NETEM; see /proc/config.gz)" >&2
        exit 1
      }
    fi
    ;;
  wire)
    n=${3:?how many hosts} delay=${4:?delay in ms} loss=${5:?loss in %}
    log="/run/sb${set}wire.log"
    python3 "$(dirname "$0")/wire.py" "$set" "$delay" "$loss" "$n" >"$log" 2>&1 &
    echo $! >"/run/sb${set}wire.pid"
    for _ in $(seq 50); do
      grep -q '^ready' "$log" 2>/dev/null && exit 0
      kill -0 "$(cat "/run/sb${set}wire.pid")" 2>/dev/null || break
      sleep 0.1
    done
    echo "scripts/wire.py did not start:" >&2; cat "$log" >&2; exit 1
    ;;
  cut)
    ip link set "$(port "${3:?which host}")" down
    ;;
  heal)
    ip link set "$(port "${3:?which host}")" up
    ;;
  *) usage ;;
esac

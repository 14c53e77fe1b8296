# Sourced by scripts/bench.sh and scripts/callgrind.sh: the switchboard.toml of a benchmark's
# system, everything on 127.0.0.1 around one base port, the per-IP connection limits lifted (the
# load comes from a few loopback addresses) and the rate limits off. It ends inside [events], so
# a caller may append more of that section, then sections of its own.
#
# loopback_config <run dir> <base port> <store URL> <agent_auth true|false> [gateways]
loopback_config() {
  local run_dir=$1 base=$2 store=$3 agent_auth=$4 gateways=${5:-}
  cat <<TOML
registers = ["127.0.0.1:$base"]
${gateways:+gateways = $gateways}
run_dir = "$run_dir"
[register]
listen = "127.0.0.1:$base"
[gateway]
listen = "127.0.0.1:$((base + 1))"
inner_port = $((base + 2))
text_listen = "127.0.0.1:$((base + 20))"
goim_listen = "127.0.0.1:$((base + 21))"
max_connections_per_ip = 0
max_pending_handshakes_per_ip = 0
rate_limit = 0.0
[events]
store = "$store"
rate_limit = 0.0
agent_auth = $agent_auth
TOML
}

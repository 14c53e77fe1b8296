#!/usr/bin/env bash
# The test command: makes sure what the tests need is here, then runs every test.
#  - Redis at REDIS_URL (default 127.0.0.1:6379), started locally when none answers;
#  - Debian's chromium and the npm packages playwright-core and axe-core (web/e2e) for the
#    browser tests.
# Installing packages needs root (as on CI); elsewhere install chromium and redis-server once.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v redis-server >/dev/null || need_apt+=(redis-server)
[ -x "${CHROMIUM:-/usr/bin/chromium}" ] || need_apt+=(chromium)
command -v node >/dev/null || need_apt+=(nodejs npm)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "installing: ${need_apt[*]}"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

redis_up() { (exec 3<>/dev/tcp/127.0.0.1/6379 && printf 'PING\r\n' >&3 && timeout 2 head -c 5 <&3 | grep -q PONG) 2>/dev/null; }
if [ -z "${REDIS_URL:-}" ] && ! redis_up; then
  redis-server --daemonize yes --port 6379 --save '' --appendonly no
  # Started here, so stopped here: the machine is left as it was found.
  trap 'redis-cli -p 6379 shutdown nosave >/dev/null 2>&1 || true' EXIT
  for _ in $(seq 50); do redis_up && break; sleep 0.1; done
  redis_up || { echo "Redis did not start" >&2; exit 1; }
fi

if [ ! -d web/e2e/node_modules/playwright-core ] || [ ! -d web/e2e/node_modules/axe-core ]; then
  npm ci --prefix web/e2e --no-audit --no-fund
fi

cargo test --workspace --locked "$@"

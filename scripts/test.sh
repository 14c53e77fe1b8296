#!/usr/bin/env bash
# The test command: makes sure what the tests need is here, then runs every test.
#  - Redis, PostgreSQL and MySQL/MariaDB: scripts/services.sh;
#  - Debian's chromium and the npm packages playwright-core and axe-core (web/e2e) for the
#    browser tests.
# Installing packages needs root (as on CI); elsewhere install chromium and redis-server once.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
[ -x "${CHROMIUM:-/usr/bin/chromium}" ] || need_apt+=(chromium)
command -v node >/dev/null || need_apt+=(nodejs npm)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "installing: ${need_apt[*]}"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

. scripts/services.sh

if [ ! -d web/e2e/node_modules/playwright-core ] || [ ! -d web/e2e/node_modules/axe-core ]; then
  npm ci --prefix web/e2e --no-audit --no-fund
fi

cargo test --workspace --locked "$@"

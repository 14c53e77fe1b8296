#!/usr/bin/env bash
# The test command: makes sure what the tests need is here, then runs every test.
#  - Redis, PostgreSQL and MySQL/MariaDB: scripts/services.sh;
#  - Debian's chromium and the npm packages playwright-core and axe-core (web/e2e) for the
#    browser tests.
#  - schemathesis (PyPI), in a virtualenv under target/, for the server API's property test;
#  - php-cli, to run docs/api.md's PHP signature check.
# Installing packages needs root (as on CI); elsewhere install chromium and redis-server once.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
[ -x "${CHROMIUM:-/usr/bin/chromium}" ] || need_apt+=(chromium)
command -v node >/dev/null || need_apt+=(nodejs npm)
# docs/api.md's webhook signature check is tested in PHP too (tests/http_api.rs).
command -v php >/dev/null || need_apt+=(php-cli)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "installing: ${need_apt[*]}"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

. scripts/services.sh

if [ ! -d web/e2e/node_modules/playwright-core ] || [ ! -d web/e2e/node_modules/axe-core ]; then
  npm ci --prefix web/e2e --no-audit --no-fund
fi

# schemathesis: fuzzes the server API against its own OpenAPI document (tests/http_api.rs).
SCHEMATHESIS_VERSION=4.32.5
export SCHEMATHESIS="${SCHEMATHESIS:-$PWD/target/schemathesis/bin/schemathesis}"
if ! "$SCHEMATHESIS" --version 2>/dev/null | grep -q "$SCHEMATHESIS_VERSION"; then
  python3 -m venv --help >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null; }
  python3 -m venv target/schemathesis
  target/schemathesis/bin/pip install -q "schemathesis==$SCHEMATHESIS_VERSION"
  export SCHEMATHESIS="$PWD/target/schemathesis/bin/schemathesis"
fi

cargo test --workspace --locked "$@"

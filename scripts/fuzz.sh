#!/usr/bin/env bash
# Runs every fuzz target for a bounded time (FUZZ_SECONDS each, default 30; CI uses a short run).
# Targets read bytes from outside: inner packets, register lines, PHP-serialized sessions, the
# client's query string, client JSON frames. A crash stops the run; copy the reported input into
# fuzz/regressions/<target>/ so the normal test suite (gateway/tests/fuzz_regressions.rs) keeps
# checking it. Needs cargo-fuzz (installed here if missing); the machine's stable toolchain is
# allowed the nightly-only sanitizer flags with RUSTC_BOOTSTRAP.
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_EACH="${FUZZ_SECONDS:-30}"
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
export RUSTC_BOOTSTRAP=1
for target in inner_packets register_line session query_string client_json; do
  echo "== fuzz $target for ${SECONDS_EACH}s"
  mkdir -p "fuzz/corpus/$target"
  # New inputs go to a scratch corpus; the committed seed corpus stays small and stable.
  scratch=$(mktemp -d)
  cargo fuzz run "$target" "$scratch" "fuzz/corpus/$target" -- -max_total_time="$SECONDS_EACH" -rss_limit_mb=2048 -print_final_stats=1 2>&1 | tail -n 4
  rm -rf "$scratch"
done
echo "fuzz: no crashes"

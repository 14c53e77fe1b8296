#!/usr/bin/env bash
# Runs every fuzz target for a bounded time (FUZZ_SECONDS each, default 30), or, with FUZZ_RUNS
# set, for that many inputs from a fixed seed: CI uses that, so its run is repeatable.
# Targets read bytes from outside: inner packets, register lines, PHP-serialized sessions, the
# client's query string, client JSON frames, goim packets, WebSocket frames. A crash stops the
# run; copy the reported input into fuzz/regressions/<target>/ so the normal test suite
# (gateway/tests/fuzz_regressions.rs) keeps checking it. Needs cargo-fuzz (installed here if
# missing); the machine's stable toolchain is allowed the nightly-only sanitizer flags with
# RUSTC_BOOTSTRAP.
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_EACH="${FUZZ_SECONDS:-30}"
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
export RUSTC_BOOTSTRAP=1
for target in inner_packets register_line session query_string client_json goim_packets websocket_frames; do
  if [ -n "${FUZZ_RUNS:-}" ]; then echo "== fuzz $target: $FUZZ_RUNS runs, seed 1"; else echo "== fuzz $target: ${SECONDS_EACH}s"; fi
  mkdir -p "fuzz/corpus/$target"
  # New inputs go to a scratch corpus; the committed seed corpus stays small and stable.
  scratch=$(mktemp -d)
  if [ -n "${FUZZ_RUNS:-}" ]; then limit=(-seed=1 -runs="$FUZZ_RUNS"); else limit=(-max_total_time="$SECONDS_EACH"); fi
  if ! cargo fuzz run "$target" "$scratch" "fuzz/corpus/$target" -- "${limit[@]}" -rss_limit_mb=2048 > "$scratch.log" 2>&1; then
    # The panic's message first: the tail below is mostly libFuzzer's report of the input.
    grep -m 1 -A 1 'panicked at' "$scratch.log" || true
    grep -v '^ *[0-9]*: \|^ *at ' "$scratch.log" | tail -n 30
    echo "fuzz: $target failed; add the input above to fuzz/regressions/$target/" >&2
    exit 1
  fi
  grep -E '^Done|stat::number_of_executed_units' "$scratch.log" | tail -n 1
  rm -rf "$scratch" "$scratch.log"
done
echo "fuzz: no crashes"

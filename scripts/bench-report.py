#!/usr/bin/env python3
"""Renders scripts/bench.sh's JSON results (one file per run) as docs/BENCHMARKS.md."""
import json, os, platform, subprocess, sys

d = sys.argv[1]
rows = [(f[:-5], json.load(open(os.path.join(d, f)))) for f in sorted(os.listdir(d)) if f.endswith(".json")]
commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
cores = os.cpu_count()
print("# Benchmarks\n")
print("Written by `scripts/bench.sh` (the table is its output; nothing here is a timed test).\n")
print(f"Machine: {cores} cores, {platform.system()} {platform.release()}; load generator on the same box. Commit {commit}.\n")
print("| run | conns | offered msg/s | deliveries/s | lost | dup | p50 ms | p99 ms | p99.9 ms | max ms | open at end | server CPU s | gateway bytes/conn |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for name, r in rows:
    l = r["latency_ms"]
    print(f'| {name} | {r["connections"]} | {r["offered_msgs_per_second"]:.0f} | {r["deliveries_per_second"]:.0f} | {r["lost"]} | {r["duplicated"]} '
          f'| {l["p50"]:.1f} | {l["p99"]:.1f} | {l["p999"]:.1f} | {l["max"]:.1f} | {r["still_open"]} | {r["server_cpu_secs_run"]:.1f} '
          f'| {r["gateway_rss_bytes_per_connection"]:.0f} |')
notes = os.path.join(os.path.dirname(__file__), "..", "docs", "benchmarks-notes.md")
if os.path.exists(notes):
    print()
    print(open(notes).read())

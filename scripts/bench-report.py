#!/usr/bin/env python3
"""Renders scripts/bench.sh's JSON results (one file per run) as docs/BENCHMARKS.md, followed by
docs/benchmarks-notes.md (targets, what the profile shows, before/after figures)."""
import json, os, platform, re, subprocess, sys

d = sys.argv[1]

def order(name):
    # "1-room-r16" after "1-room-r8": the workload number, then the rate as a number.
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]

rows = sorted(((f[:-5], json.load(open(os.path.join(d, f)))) for f in os.listdir(d) if f.endswith(".json")), key=lambda r: order(r[0]))
commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
cpu = ""
try:
    cpu = next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name"))
except (OSError, StopIteration):
    pass
mem = ""
try:
    mem = "%.0f GiB" % (int(next(l.split()[1] for l in open("/proc/meminfo") if l.startswith("MemTotal"))) / 1048576)
except (OSError, StopIteration):
    pass

def num(v, fmt="{:.1f}"):
    # Figures a run cannot measure (a process replaced mid-run, memory of a system already warm) show as —.
    return "—" if v is None or v < 0 else fmt.format(v)

print("# Benchmarks\n")
print("Written by `scripts/bench.sh` (the tables are its output; nothing here is a timed test).\n")
print(f"Machine: {os.cpu_count()} cores ({cpu}), {mem}, {platform.system()} {platform.release()}; the load generator runs on the same box "
      f"and competes with the servers for the cores. Commit {commit}. System: `switchboard start` with 2 gateways and 2 chat workers "
      f"(SQLite store), 7 gateways for the hold run.\n")
print("Every message is stored by a chat worker before it is delivered. `lost` is what never arrived although the system went quiet "
      "for `--drain` seconds after the last send; a slow delivery counts in the latency, not as lost. Latency is from the sender's "
      "send to each member's receipt.\n")
print("| run | transport | conns | offered msg/s | deliveries/s | lost | dup | p50 ms | p99 ms | p99.9 ms | max ms | open at end | server CPU s |")
print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for name, r in rows:
    l = r["latency_ms"]
    print(f'| {name} | {r.get("transport", "ws")} | {r["connections"]} | {r["offered_msgs_per_second"]:.0f} | {r["deliveries_per_second"]:.0f} '
          f'| {r["lost"]} | {r["duplicated"]} | {l["p50"]:.1f} | {l["p99"]:.1f} | {l["p999"]:.1f} | {l["max"]:.1f} '
          f'| {r["still_open"]} of {r["connections"]} | {num(r["server_cpu_secs_run"])} |')
hold = [(n, r) for n, r in rows if r["workload"] == "hold"]
if hold:
    print("\nIdle connections (hold: a heartbeat every `--beat` seconds, no messages):\n")
    print("| run | conns | open at end | closed by the server | gateway RSS per connection | gateway CPU, % of one core | load generator CPU s |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for n, r in hold:
        print(f'| {n} | {r["connections"]} | {r["still_open"]} | {r["closed_by_server"]} | {num(r["gateway_rss_bytes_per_connection"], "{:.0f} bytes")} '
              f'| {num(r["gateway_cpu_percent_of_one_core"])} | {r["load_generator_cpu_secs"]:.1f} |')
login = [(n, r) for n, r in rows if r["workload"] == "login"]
if login:
    print("\nLogin storm (every agent of one bot logs in at once, asking for `\"presence\":\"compact\"` as the console does; each must see every other, "
          "in its login's list or an `agents_push`; agents named: over every frame, at the least n·(n−1)):\n")
    print("| run | agents | logins answered | saw every agent | login answer p50 / p99 / max ms | slowest to see every agent, ms | agents named | in MB | load generator CPU s |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for n, r in login:
        l = r["latency_ms"]
        print(f'| {n} | {r["connections"]} | {r["logins_answered"]} | {r["presence_complete"]} | {l["p50"]:.0f} / {l["p99"]:.0f} / {l["max"]:.0f} '
              f'| {r["presence_max_ms"]:.0f} | {r.get("presence_entries", 0)} | {r.get("presence_bytes", 0) / 1e6:.0f} | {r["load_generator_cpu_secs"]:.1f} |')
stores = [(n, r) for n, r in rows if r.get("store")]
if stores:
    print("\nStores (workload 9: the room chat, 1 000 connections in rooms of 50, every message stored, on each store in turn; "
          "SQLite runs inside the workers, the others are the servers scripts/test.sh uses, on this box. A database server's CPU is "
          "every process of its name, from /proc):\n")
    print("| run | store | offered msg/s | deliveries/s | lost | dup | p50 ms | p99 ms | workers' CPU per message | database server's CPU per message |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for n, r in stores:
        l, msgs = r["latency_ms"], max(r["messages_acked"], 1)
        workers = sum(x["cpu_secs_run"] for x in r["servers"] if x["role"] == "business")
        db = r.get("store_cpu_secs")
        print(f'| {n} | {r["store"]} | {r["offered_msgs_per_second"]:.0f} | {r["deliveries_per_second"]:.0f} | {r["lost"]} | {r["duplicated"]} '
              f'| {l["p50"]:.1f} | {l["p99"]:.1f} | {num(workers * 1e6 / msgs, "{:.0f} µs")} | {"in the workers" if db is None else num(db * 1e6 / msgs, "{:.0f} µs")} |')
if len(sys.argv) > 2 and os.path.isdir(sys.argv[2]):
    print("\n## Against the reference (issue #16), same run\n")
    print("Workload 0: ../shared/loadkit's generator (wsload) against its reference broadcaster (refserver: one process, no "
          "gateway/worker split, no store) and then against `switchboard start` with its defaults (one gateway, two chat workers, "
          "SQLite, every message stored), only the per-address, rate and agent-auth limits lifted; 1 000 connections in rooms of "
          "50, one bot's agents per room.\n")
    sys.stdout.flush()
    subprocess.run([sys.executable, os.path.join(os.path.dirname(__file__), "bench-reference.py"), sys.argv[2]], check=True)
notes = os.path.join(os.path.dirname(__file__), "..", "docs", "benchmarks-notes.md")
if os.path.exists(notes):
    print()
    print(open(notes).read().rstrip())

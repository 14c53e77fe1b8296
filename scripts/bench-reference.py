#!/usr/bin/env python3
"""Renders workload 0 of scripts/bench.sh (the reference beside `switchboard start`, both under
../shared/loadkit's wsload in the same run) as the issue #16 target tables, in Markdown.

    bench-reference.py <dir>            the tables
    bench-reference.py --check <dir>    also exits 1 when anything was lost, duplicated or refused

Each file in <dir> is `<system>-<run>.json`: wsload's JSON summary plus `roles`, the role of each
sampled pid (reference, gateway, business)."""
import json, os, re, sys

check = sys.argv[1] == "--check"
d = sys.argv[-1]
runs = {}
for f in os.listdir(d):
    if f.endswith(".json"):
        system, run = f[:-5].split("-", 1)
        runs[(system, run)] = json.load(open(os.path.join(d, f)))


def cpu(r, role):
    """CPU seconds in the measured window of every sampled process of that role."""
    return sum(s["cpu_s_window"] for s in r["server"] if r["roles"].get(str(s["pid"])) == role)


def cpu_connect(r, role):
    """CPU seconds while connecting (until the last connection was set up) of that role."""
    return sum(s["cpu_s_connect"] for s in r["server"] if r["roles"].get(str(s["pid"])) == role)


def setup_rate(r):
    """Connections set up per second, from the first attempt to the last set up."""
    return r["conn_established"] / max(r["connect_all_s"], 1e-3)


def rss_per_conn(r, role, at="connected"):
    """Bytes of RSS per established connection that the processes of that role grew by, when the
    last connected (`connected`) or at the end of the hold (`end`: idle since)."""
    grew = sum(s[f"rss_{at}_kb"] - s["rss_start_kb"] for s in r["server"] if r["roles"].get(str(s["pid"])) == role)
    return grew * 1024 / max(r["conn_established"], 1)


def deliveries(r):
    return r["deliveries_per_s"] * r["duration_s"]


def rate_of(run):
    return float(run.split("-r", 1)[1])


def fmt(v, spec="{:,.0f}"):
    return "—" if v is None else spec.format(v).replace(",", " ")


def ok(b):
    return "met" if b else "**missed**"


rates = sorted({rate_of(run) for (s, run) in runs if run.startswith("room-r")})
room = lambda system, rate: runs.get((system, f"room-r{rate:g}"))
problems = []
for (system, run), r in sorted(runs.items()):
    if r["lost"] or r["duplicates"] or r["conn_established"] != r["conns"] or r.get("foreign"):
        problems.append(f'{system}-{run}: lost {r["lost"]}, duplicated {r["duplicates"]}, {r["conn_established"]} of {r["conns"]} connected')

print("| offered deliveries/s | reference: carried | p99 ms | switchboard: carried | p99 ms | carried ÷ reference (≥ 0.9) "
      "| p99 ≤ 1.5 × reference + 10 ms | lost / dup |")
print("|---:|---:|---:|---:|---:|---:|---:|---:|")
for rate in rates:
    ref, sb = room("reference", rate), room("switchboard", rate)
    if not ref or not sb:
        continue
    offered = sb["conns"] * rate * sb["room_size"]
    ratio = sb["deliveries_per_s"] / max(ref["deliveries_per_s"], 1)
    bound = 1.5 * ref["latency_ms"]["p99"] + 10
    print(f'| {fmt(offered)} | {fmt(ref["deliveries_per_s"])} | {ref["latency_ms"]["p99"]:.1f} | {fmt(sb["deliveries_per_s"])} '
          f'| {sb["latency_ms"]["p99"]:.1f} | {ratio:.2f} {ok(ratio >= 0.9)} | {bound:.1f}: {ok(sb["latency_ms"]["p99"] <= bound)} '
          f'| {sb["lost"]} / {sb["duplicates"]} (reference {ref["lost"]} / {ref["duplicates"]}) |')


def best(system):
    """The highest offered rate carried with p99 ≤ 50 ms."""
    ok_rates = [rate for rate in rates if room(system, rate) and room(system, rate)["latency_ms"]["p99"] <= 50]
    if not ok_rates:
        return None
    r = room(system, max(ok_rates))
    return r["conns"] * max(ok_rates) * r["room_size"]


b_ref, b_sb = best("reference"), best("switchboard")
print(f'\nHighest offered rate with p99 ≤ 50 ms: reference {fmt(b_ref)}, switchboard {fmt(b_sb)} deliveries/s: '
      f'{ok(b_sb is not None and (b_ref is None or b_sb >= b_ref))} (target: at least the reference\'s).\n')

print("| offered deliveries/s | workers' CPU per room message (≤ 30 µs) | gateway CPU per delivery | reference CPU per delivery (gateway ≤ it) |")
print("|---:|---:|---:|---:|")
for rate in rates:
    ref, sb = room("reference", rate), room("switchboard", rate)
    if not ref or not sb:
        continue
    workers = cpu(sb, "business") * 1e6 / max(sb["sent_window"], 1)
    gateway = cpu(sb, "gateway") * 1e6 / max(deliveries(sb), 1)
    reference = cpu(ref, "reference") * 1e6 / max(deliveries(ref), 1)
    print(f'| {fmt(sb["conns"] * rate * sb["room_size"])} | {workers:.1f} µs: {ok(workers <= 30)} | {gateway:.2f} µs: {ok(gateway <= reference)} '
          f'| {reference:.2f} µs |')

ref, sb = runs.get(("reference", "hold")), runs.get(("switchboard", "hold"))
if ref and sb:
    print(f'\nIdle WebSocket connections ({sb["conn_established"]} of {sb["conns"]} held by switchboard, logged in and in rooms of '
          f'{sb["room_size"]}; {ref["conn_established"]} of {ref["conns"]} by the reference), memory and setup rate. RSS grown '
          f'per connection when the last connected (with what the connecting burst freed and the allocator still holds) '
          f'and after {sb["duration_s"]:g} s idle:\n')
    print("| | gateway RSS per connection (≤ 2 KiB) | workers' RSS per client (≤ 1 KiB) | reference RSS per connection | new connections/s, logged in and joined | reference's |")
    print("|---|---:|---:|---:|---:|---:|")
    sb_rate, ref_rate = setup_rate(sb), setup_rate(ref)
    for at, label in (("connected", "all connected"), ("end", f'after {sb["duration_s"]:g} s idle')):
        g, w, rr = rss_per_conn(sb, "gateway", at), rss_per_conn(sb, "business", at), rss_per_conn(ref, "reference", at)
        rate = f'{fmt(sb_rate)} | {fmt(ref_rate)}' if at == "connected" else "— | —"
        print(f'| {label} | {fmt(g)} B: {ok(g <= 2048)} | {fmt(w)} B: {ok(w <= 1024)} | {fmt(rr)} B | {rate} |')

ref, sb = runs.get(("reference", "connect")), runs.get(("switchboard", "connect"))
if ref and sb:
    sb_rate, ref_rate = setup_rate(sb), setup_rate(ref)
    per_conn = lambda r, role: cpu_connect(r, role) * 1e6 / max(r["conn_established"], 1)
    print(f'\nNew connections, each answered its first message (a login; no join), as target 5 words it: '
          f'{sb["conn_established"]} of {sb["conns"]} by switchboard, {ref["conn_established"]} of {ref["conns"]} by the reference. '
          f'CPU per connection while connecting:\n')
    print("| | new connections/s (≥ 10 000) | gateway | workers | load generator |")
    print("|---|---:|---:|---:|---:|")
    print(f'| switchboard | {fmt(sb_rate)}: {ok(sb_rate >= 10000)} | {per_conn(sb, "gateway"):.0f} µs | {per_conn(sb, "business"):.0f} µs '
          f'| {sb["client_cpu_s"] * 1e6 / max(sb["conn_established"], 1):.0f} µs |')
    print(f'| reference | {fmt(ref_rate)} | {per_conn(ref, "reference"):.0f} µs | — | {ref["client_cpu_s"] * 1e6 / max(ref["conn_established"], 1):.0f} µs |')

if problems:
    print("\nProblems: " + "; ".join(problems))
if check:
    print("reference runs:", "FAILED" if problems else "ok", file=sys.stderr)
    sys.exit(1 if problems else 0)

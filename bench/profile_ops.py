#!/usr/bin/env python3
"""Sums a Chrome trace written by SPARQ_BENCH_PROFILE (LibTorch's profiler) per op name: calls and
time (calls x median) of the top-level ops (an op's children are not counted again), largest
first.
    SPARQ_BENCH_PROFILE=/tmp/t.json build/bench/sparq_bench --benchmark_filter=BM_hgq_jet_tagger/1024
    bench/profile_ops.py /tmp/t.json [TOP]"""
import collections, json, statistics, sys

events = [e for e in json.load(open(sys.argv[1])) if e.get("ph") == "X"]
events.sort(key=lambda e: (e.get("tid"), e["ts"], -e["dur"]))
durations, end = collections.defaultdict(list), {}
for e in events:  # top level: not inside an earlier event of the same thread
    tid = e.get("tid")
    if e["ts"] < end.get(tid, -1):
        continue
    end[tid] = e["ts"] + e["dur"]
    durations[e["name"]].append(e["dur"])
# calls x median: the first steps' warm-up (allocations, thread pools) left out
total = collections.Counter({n: len(d) * statistics.median(d) for n, d in durations.items()})
calls = {n: len(d) for n, d in durations.items()}
all_us = sum(total.values())
print(f"{all_us / 1e3:.1f} ms in top-level ops")
for name, us in total.most_common(int(sys.argv[2]) if len(sys.argv) > 2 else 30):
    print(f"{us / 1e3:9.2f} ms {100 * us / all_us:5.1f}% {calls[name]:7d}  {name}")

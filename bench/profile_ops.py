#!/usr/bin/env python3
"""Sums a Chrome trace written by SPARQ_BENCH_PROFILE per op name: calls and time (calls x median)
of the top-level ops (an op's children are not counted again), largest first; per step where the
trace marks its steps (sparq::bench_step). A GPU trace (Kineto) also has one event per kernel:
those are summed per kernel name, with the kernels per step.
    SPARQ_BENCH_PROFILE=/tmp/t.json build/bench/sparq_bench --benchmark_filter=BM_hgq_jet_tagger/1024
    bench/profile_ops.py /tmp/t.json [TOP]"""
import collections, json, statistics, sys

trace = json.load(open(sys.argv[1]))
events = [e for e in (trace["traceEvents"] if isinstance(trace, dict) else trace) if e.get("ph") == "X"]
top = int(sys.argv[2]) if len(sys.argv) > 2 else 30
steps = sum(1 for e in events if e["name"] == "sparq::bench_step" and not e.get("cat", "").startswith("gpu")) or 1
kernels = [e for e in events if e.get("cat") == "kernel"]
ops = [e for e in events if e.get("cat") != "kernel" and e["name"] != "sparq::bench_step"
       and e.get("cat") in (None, "cpu_op", "user_annotation", "Operator")]


def table(durations, what):
    # calls x median: the first steps' warm-up (allocations, thread pools) left out
    total = collections.Counter({n: len(d) * statistics.median(d) for n, d in durations.items()})
    all_us = sum(total.values())
    calls = sum(len(d) for d in durations.values())
    print(f"{what}: {all_us / 1e3 / steps:.3f} ms and {calls / steps:.1f} calls per step ({steps} steps)")
    for name, us in total.most_common(top):
        print(f"{us / 1e3 / steps:9.4f} ms {100 * us / all_us:5.1f}% {len(durations[name]) / steps:8.1f}  {name[:110]}")


ops.sort(key=lambda e: (e.get("tid"), e["ts"], -e["dur"]))
durations, end = collections.defaultdict(list), {}
for e in ops:  # top level: not inside an earlier event of the same thread
    tid = e.get("tid")
    if e["ts"] < end.get(tid, -1):
        continue
    end[tid] = e["ts"] + e["dur"]
    durations[e["name"]].append(e["dur"])
table(durations, "top-level ops")
if kernels:
    per_kernel = collections.defaultdict(list)
    for e in kernels:
        per_kernel[e["name"]].append(e["dur"])
    table(per_kernel, "GPU kernels")

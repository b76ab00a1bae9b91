#!/usr/bin/env python3
"""One Markdown table row for a finished `sparq run`, used by the bench scripts.

    python3 bench/run_row.py NAME RUN_FOLDER LOG COLUMN...

Columns, from RUN_FOLDER/metrics.jsonl and the run's log:
  epochs          epochs in metrics.jsonl
  accuracy        the log's final test accuracy
  sparsity        the last epoch's sparsity (of the PQ layers)
  layer_sparsity  the last epoch's pruned layers with their sparsity
  sparsity_curve  the sparsity after every epoch (%)
  distill_loss    the last epoch's distill_loss (empty without distillation)
  seconds         the training seconds of all epochs
"""
import json
import re
import sys

name, run, log, *columns = sys.argv[1:]
lines = [json.loads(l) for l in open(f"{run}/metrics.jsonl")]
last = lines[-1]


def cell(column):
    if column == "epochs":
        return str(len(lines))
    if column == "accuracy":
        return re.search(r"test accuracy ([0-9.]+)%", open(log).read()).group(1) + "%"
    if column == "sparsity":
        return f"{last.get('sparsity', 0) * 100:.1f}%"
    if column == "layer_sparsity":
        layers = last.get("layers", {})
        return ", ".join(f"{k} {v['sparsity'] * 100:.1f}%" for k, v in layers.items() if v["sparsity"] > 0) or "-"
    if column == "sparsity_curve":
        return " ".join(f"{l.get('sparsity', 0) * 100:.1f}" for l in lines)
    if column == "distill_loss":
        d = last.get("distill_loss")
        return "" if d is None else f"{d:.4f}"
    if column == "seconds":
        return f"{sum(l['seconds'] for l in lines):.0f} s"
    sys.exit(f"run_row.py: unknown column '{column}'")


print("| " + " | ".join([name] + [cell(c) for c in columns]) + " |")

#!/usr/bin/env python3
"""Compare the headline rows of two runs' summary.parquet: did a change move the science?

Usage: python3 scripts/compare_summaries.py BEFORE_RUN_DIR AFTER_RUN_DIR [--metrics m1,m2]

For every (model, safety method, condition, metric) of the chosen metrics at each model's last
step, prints the value before and after with their 95% intervals, and flags a row `moved` when
either value lies outside the other's interval. Prints how many rows moved. Needs pyarrow only.
"""
import argparse
import sys

import pyarrow.parquet as pq

DEFAULT_METRICS = "backdoor_rate,helpfulness,answered,honeypot"


def headline(run_dir, metrics):
    rows = pq.read_table(f"{run_dir}/summary.parquet").to_pylist()
    last = {}
    for r in rows:
        if r["metric"] not in metrics:
            continue
        key = (r["model"], r["safety"], r["condition"], r["metric"])
        if key not in last or r["step"] > last[key]["step"]:
            last[key] = r
    return last


def fmt(r):
    if r is None:
        return "-"
    if r["ci_low"] is None or r["ci_high"] is None:
        return f"{r['value']:.2f}"
    return f"{r['value']:.2f} [{r['ci_low']:.2f},{r['ci_high']:.2f}]"


def inside(r, other):
    lo, hi = other["ci_low"], other["ci_high"]
    if lo is None or hi is None:
        return r["value"] == other["value"]
    return lo - 1e-9 <= r["value"] <= hi + 1e-9


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("before")
    p.add_argument("after")
    p.add_argument("--metrics", default=DEFAULT_METRICS)
    args = p.parse_args()
    metrics = set(args.metrics.split(","))
    a, b = headline(args.before, metrics), headline(args.after, metrics)
    moved = 0
    print("| model | safety | condition | metric | before | after | |")
    print("|---|---|---|---|---|---|---|")
    for key in sorted(set(a) | set(b)):
        ra, rb = a.get(key), b.get(key)
        flag = ""
        if ra is None or rb is None:
            flag = "only one run"
        elif not (inside(ra, rb) and inside(rb, ra)):
            flag = "moved"
            moved += 1
        print(f"| {' | '.join(key)} | {fmt(ra)} | {fmt(rb)} | {flag} |")
    print(f"\n{moved} of {len(set(a) & set(b))} rows moved outside the other run's interval")
    return 0


if __name__ == "__main__":
    sys.exit(main())

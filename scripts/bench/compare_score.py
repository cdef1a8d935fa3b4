#!/usr/bin/env python3
"""Compare two performance scores written by scripts/bench/score.sh.

    scripts/bench/compare_score.py BASE.json CUR.json [--tolerance 0.10]

Prints one line per metric (base, current, ratio, verdict) and exits 1 when a metric got worse by
more than the tolerance (a fraction: 0.10 = 10 %), 0 otherwise. A metric present in only one
file is listed and not judged. Noise: quote medians (score.sh takes the median of RUNS runs for
the virtual-time part) and compare runs made on an idle machine; the load average at scoring
time is printed beside each file.
"""
import argparse
import json
import sys


def load(path):
    with open(path) as f:
        doc = json.load(f)
    return doc, {m["name"]: m for m in doc["metrics"]}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("base")
    ap.add_argument("current")
    ap.add_argument("--tolerance", type=float, default=0.10)
    args = ap.parse_args()
    base_doc, base = load(args.base)
    cur_doc, cur = load(args.current)
    for label, doc in (("base", base_doc), ("current", cur_doc)):
        print(f"{label}: commit {doc.get('commit')} at {doc.get('date')}, load {doc.get('loadavg')}")
    worse = 0
    for name in sorted(set(base) | set(cur)):
        if name not in base or name not in cur:
            print(f"{name:45} only in {'base' if name in base else 'current'}")
            continue
        b, c = base[name]["value"], cur[name]["value"]
        higher = base[name].get("better", "higher") == "higher"
        # Ratio > 1 is always an improvement, whichever way the metric goes.
        ratio = (c / b if higher else b / c) if b and c else float("nan")
        verdict = "ok"
        if ratio < 1 - args.tolerance:
            verdict = "WORSE"
            worse += 1
        elif ratio > 1 + args.tolerance:
            verdict = "better"
        unit = cur[name].get("unit", "")
        print(f"{name:45} {b:14.4f} → {c:14.4f} {unit:9} ×{ratio:.3f} {verdict}")
    if worse:
        print(f"{worse} metric(s) worse than the tolerance ({args.tolerance:.0%})")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

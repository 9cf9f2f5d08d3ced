"""Summarise `verify bench` result folders per network: verdict counts, correct/wrong against expected.csv,
time and domains. Used to build the tables in docs/benchmarks.md.

Run: python docs/summarize_bench.py RESULTS_DIR BENCHMARK_DIR [RESULTS_DIR BENCHMARK_DIR ...]
"""
from __future__ import annotations

import collections
import csv
import sys
from pathlib import Path


def summarise(results_dir: Path, bench_dir: Path) -> None:
    rows = list(csv.DictReader(open(results_dir / "results.csv")))
    expected = {(r["onnx"], r["vnnlib"]): r["expected"] for r in csv.DictReader(open(bench_dir / "expected.csv"))}
    by = collections.defaultdict(list)
    for r in rows:
        by[Path(r["onnx"]).stem].append(r)
    print(f"\n{results_dir.name}:\n")
    print("| network | instances | sat | unsat | unknown/timeout | wrong | unsat of expected-unsat | time_s sum | domains sum |")
    print("|---|---|---|---|---|---|---|---|---|")
    for net, rs in sorted(by.items()):
        c = collections.Counter(r["result"] for r in rs)
        exp = [expected.get((r["onnx"], r["vnnlib"]), "?") for r in rs]
        wrong = sum((r["result"], e) in (("sat", "unsat"), ("unsat", "sat")) for r, e in zip(rs, exp))
        exp_unsat = sum(e == "unsat" for e in exp)
        got_unsat = sum(r["result"] == "unsat" and e == "unsat" for r, e in zip(rs, exp))
        t = sum(float(r["time_s"]) for r in rs)
        d = sum(int(r.get("domains") or 0) for r in rs)
        other = len(rs) - c["sat"] - c["unsat"]
        print(f"| {net} | {len(rs)} | {c['sat']} | {c['unsat']} | {other} | {wrong} | {got_unsat}/{exp_unsat} | {t:.1f} | {d} |")


if __name__ == "__main__":
    args = sys.argv[1:]
    for i in range(0, len(args), 2):
        summarise(Path(args[i]), Path(args[i + 1]))

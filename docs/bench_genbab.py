"""GenBaB ablation on the ERAN sigmoid 6x200 network: split points (lookup table vs midpoint) and branching
scores (BBPS-style gap estimate vs BaBSR-style width), each against α-CROWN alone.

Run: OMP_NUM_THREADS=1 python docs/bench_genbab.py [--timeout 60] [--every 3] [--shared ../shared]
Every variant runs the same instances with the same per-instance timeout; prints a markdown table.
"""
from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path

import torch

from verify.bab.activation_split import activation_split_search
from verify.bab.objective import Objective
from verify.bounds import AlphaOptions, alpha_crown, engine_for
from verify.importers.onnx import load_onnx
from verify.settings import Settings
from verify.spec.vnnlib import parse_vnnlib


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shared", default=str(Path(__file__).resolve().parents[2] / "shared"))
    ap.add_argument("--timeout", type=float, default=60.0)
    ap.add_argument("--every", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(1)
    root = Path(args.shared) / "benchmarks" / "eran_2021"
    rows = [r for r in csv.reader(open(root / "instances.csv")) if "SIGMOID" in r[0]][:: args.every]
    expected = {(r["onnx"], r["vnnlib"]): r["expected"] for r in csv.DictReader(open(root / "expected.csv"))}
    g = load_onnx(root / rows[0][0])
    eng = engine_for(g)
    settings = Settings(timeout=args.timeout)
    variants = [("α-CROWN only (no BaB)", None, None), ("GenBaB: table split, gap (BBPS-style) branching", True, "gap"),
                ("GenBaB: midpoint split, gap branching", False, "gap"), ("GenBaB: table split, width (BaBSR-style) branching", True, "width")]
    results = {v[0]: [] for v in variants}
    for onnx, vnnlib, _ in rows:
        lo, hi, terms = parse_vnnlib(root / vnnlib).regions()[0]
        obj = Objective(terms, torch.float32)
        L, U = torch.tensor(lo, dtype=torch.float32), torch.tensor(hi, dtype=torch.float32)
        for name, tables, branching in variants:
            t0 = time.perf_counter()
            deadline = t0 + args.timeout
            if tables is None:
                lb = alpha_crown(eng, L[None], U[None], obj.C, AlphaOptions(iterations=20, optimize_intermediate=True,
                                                                             time_budget=args.timeout), shift=obj.d)
                verdict = "unsat" if bool(obj.score(lb)[0] > 1e-4) else "unknown"
                doms = 1
            else:
                r = activation_split_search(eng, obj, L, U, deadline, settings, tol=1e-4, use_tables=tables,
                                            branching=branching)
                verdict, doms = r.verdict, r.domains
            results[name].append((verdict, time.perf_counter() - t0, doms))
            assert not (verdict == "unsat" and expected.get((onnx, vnnlib)) == "sat"), "wrong answer"
            print(vnnlib, name, verdict, f"{time.perf_counter() - t0:.1f}s", doms, flush=True)
    print(f"\n{len(rows)} sigmoid instances (every {args.every}th), timeout {args.timeout:g} s each\n")
    print("| variant | proven (unsat) | time of proven, s (sum) | domains (sum) |")
    print("|---|---|---|---|")
    for name, _, _ in variants:
        res = results[name]
        proven = [r for r in res if r[0] == "unsat"]
        print(f"| {name} | {len(proven)} | {sum(r[1] for r in proven):.1f} | {sum(r[2] for r in res)} |")


if __name__ == "__main__":
    main()

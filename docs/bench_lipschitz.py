"""Benchmark of `verify.lipschitz`: the structure-exploiting solver against plain cvxpy + SCS, same run.

Nets: 10-h-h-10 ReLU (torch.manual_seed(0), default nn.Linear init, layers created in order) for the
widths given, the residual MaxMin nets (resweights_*) named by --residual, and the seed paper's MaxMin nets from shared/data/lipschitz (lipsdp-nsr with the barrier
solver, whose value the paper lists, and lipsdp-neuron with the fast solver). For each: wall time and the
CERTIFIED bound (recomputed from the multipliers in float64) per method, the dual bound on the SDP optimum
(`sdp_lower`) and the relative gap (upper - sdp_lower) / upper, the raw solver objective, the norm product
and the sampled lower bound. Prints a markdown table and writes JSON with --out.

    OMP_NUM_THREADS=1 python docs/bench_lipschitz.py --widths 100 200 400 1000 --scs-max 400 \
        --maxmin 8fc_128 18fc_128 --fast-limit 60 --out bench_lipschitz.json
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402

from verify.lipsdp import lipschitz  # noqa: E402
from verify.lipsdp.network import load_network  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "lipschitz"
PAPER = {"2fc_16": 22.594, "2fc_32": 38.548, "2fc_64": 73.773, "2fc_128": 70.865, "5fc_32": 224.526,
         "5fc_64": 386.807, "8fc_32": 401.033, "8fc_64": 722.342, "8fc_128": 714.139, "18fc_32": 17431.5,
         "18fc_64": 22842.3, "18fc_128": 24271.0}


def seeded(h: int) -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(10, h), nn.ReLU(), nn.Linear(h, h), nn.ReLU(), nn.Linear(h, 10))


def run(name, model, methods, rows, lower_ref=None):
    net = load_network(model)
    for method, solver, limit in methods:
        t = time.perf_counter()
        r = lipschitz(net, method=method, solver=solver, time_limit=limit, lower=lower_ref is None)
        wall = time.perf_counter() - t
        if lower_ref is None:
            lower_ref = r.lower
        assert lower_ref <= r.upper <= r.naive * (1 + 1e-12), (name, method, r)
        assert r.sdp_lower is None or r.sdp_lower <= r.upper, (name, method, r)
        row = {"net": name, "method": method, "solver": r.solver, "seconds": wall, "upper": r.upper,
               "sdp_lower": r.sdp_lower, "solver_value": r.solver_value, "naive": r.naive, "lower": lower_ref,
               "status": r.details.get("status"), "iterations": r.details.get("iterations")}
        rows.append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)
    return lower_ref


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--widths", type=int, nargs="*", default=[100, 200, 400, 1000])
    ap.add_argument("--scs-max", type=int, default=200, help="largest width also solved with cvxpy + SCS")
    ap.add_argument("--maxmin", nargs="*", default=["8fc_128", "18fc_128"])
    ap.add_argument("--scs-maxmin", nargs="*", default=[], help="MaxMin nets also solved with SCS")
    ap.add_argument("--residual", nargs="*", default=[], help="residual MaxMin nets (resweights_KEY.mat)")
    ap.add_argument("--nsr-residual", nargs="*", default=[], help="residual nets also run with lipsdp-nsr "
                    "(Clarabel: minutes and GBs beyond 5_32)")
    ap.add_argument("--fast-limit", type=float, default=120.0, help="time limit of the fast solver (s)")
    ap.add_argument("--nsr-limit", type=float, default=120.0, help="time limit of the barrier solver (s)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    rows: list[dict] = []
    for h in args.widths:
        methods = [("lipsdp-neuron", "fast", args.fast_limit), ("lipsdp-layer", "fast", args.fast_limit)]
        if h <= args.scs_max:
            methods.append(("lipsdp-neuron", "SCS", None))
        run(f"10-{h}-{h}-10", seeded(h), methods, rows)
    for key in args.maxmin:
        path = DATA / f"weights_l2_{key}.mat"
        if not path.exists():
            print(f"skipping {key}: {path} missing", file=sys.stderr)
            continue
        methods = [("lipsdp-nsr", "ipm", args.nsr_limit), ("lipsdp-neuron", "fast", args.fast_limit)]
        if key in args.scs_maxmin:
            methods.append(("lipsdp-nsr", "SCS", None))
        run(f"MaxMin {key}", path, methods, rows)
    for key in args.residual:
        path = DATA / f"resweights_{key}.mat"
        if not path.exists():
            print(f"skipping {key}: {path} missing", file=sys.stderr)
            continue
        methods = [("naive", None, None), ("lipsdp-neuron", "fast", args.fast_limit)]
        if key in args.nsr_residual:
            methods.append(("lipsdp-nsr", None, args.nsr_limit))
        run(f"residual {key}", path, methods, rows)
    print("| net | method | solver | time (s) | certified upper | SDP dual bound | gap | raw solver value "
          "| lower | norm product |")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        sv = "-" if r["solver_value"] is None else f"{r['solver_value']:.7g}"
        lo, gap = "-", "-"
        if r["sdp_lower"] is not None:
            lo, gap = f"{r['sdp_lower']:.7g}", f"{(r['upper'] - r['sdp_lower']) / r['upper']:.2e}"
        ref = PAPER.get(r["net"].split()[-1])
        note = f" (paper {ref})" if ref and r["net"].startswith("MaxMin") else ""
        print(f"| {r['net']}{note} | {r['method']} | {r['solver']} | {r['seconds']:.1f} | {r['upper']:.7g} | {lo} "
              f"| {gap} | {sv} | {r['lower']:.6g} | {r['naive']:.6g} |")
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

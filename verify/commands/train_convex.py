"""`verify train convex`: train a two-layer ReLU network by convex optimisation (see docs/convex_training.md).

`--dataset breast_cancer --patterns P --seed S` builds the convex issue's reference problem exactly
(DESIGN "Convex training CLI"); the same seed gives the same patterns for both solvers. `--json` prints one
object with at least objective, gap, seconds, train_acc, test_acc.
"""
from __future__ import annotations

import json
import sys
import time

import numpy as np

from verify.errors import InputError


def register(subparsers) -> None:
    p = subparsers.add_parser("convex", help="globally optimal two-layer ReLU training via its convex program")
    p.add_argument("--dataset", required=True, help="breast_cancer, digits01, spirals or a CSV file (label last)")
    p.add_argument("--beta", type=float, default=None, help="weight decay β (default: the dataset's reference)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--patterns", default=None,
                   help="number of sampled activation patterns, or 'all' for exact enumeration (default 100; "
                        "'all' for spirals)")
    g.add_argument("--pattern-search", action="store_true", help="grow patterns by column generation")
    p.add_argument("--gated", action="store_true", help="solve the gated-ReLU relaxation, then convert")
    p.add_argument("--eps", type=float, default=None, help="ℓ∞ radius for convex adversarial training")
    p.add_argument("--solver", choices=["auto", "ipm", "admm", "cvxpy", "colgen"], default="auto",
                   help="auto = ipm (interior point, column generation over large pattern sets); colgen: column "
                        "generation with Clarabel")
    p.add_argument("--polish", choices=["ipm", "project"], default="ipm",
                   help="ADMM's finish: ipm (exact, on the patterns ADMM found active) or project (cone projection "
                        "of the ADMM iterate)")
    p.add_argument("--cvxpy-solver", default="SCS", help="cvxpy backend for --solver cvxpy (SCS, CLARABEL)")
    p.add_argument("--tol", type=float, default=1e-5, help="ADMM residual tolerance")
    p.add_argument("--time-limit", type=float, default=None, help="ADMM time limit (s)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="write the network as ONNX here")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.set_defaults(func=run)


def _accuracy(net, X: np.ndarray, y: np.ndarray) -> float:
    import torch

    with torch.no_grad():
        f = net(torch.as_tensor(X, dtype=torch.float32)).numpy().ravel()
    return float(np.mean(np.where(f >= 0, 1.0, -1.0) == y))


def run(args) -> int:
    from verify.train.convex import data, fit

    t0 = time.perf_counter()
    ds = data.load(args.dataset, seed=args.seed)
    beta = ds.beta if args.beta is None else args.beta
    if beta <= 0:
        raise InputError(f"--beta must be positive, got {beta}")
    if args.patterns is None:
        patterns = "all" if ds.name == "spirals" else 100
    elif args.patterns in ("all", "exact"):
        patterns = "all"
    else:
        try:
            patterns = int(args.patterns)
        except ValueError:
            raise InputError(f"--patterns must be a positive integer or 'all', got {args.patterns!r}") from None
        if patterns <= 0:
            raise InputError(f"--patterns must be positive, got {patterns}")
    res = fit(ds.X_train, ds.y_train, beta=beta, patterns=patterns, solver=args.solver,
              adversarial_eps=args.eps, seed=args.seed, pattern_search=args.pattern_search, gated=args.gated,
              tol=args.tol, time_limit=args.time_limit, cvxpy_solver=args.cvxpy_solver, polish=args.polish,
              progress=not args.json and sys.stderr.isatty())
    out = {
        "dataset": ds.name, "solver": res.solver, "beta": beta, "patterns": res.info["patterns"],
        "hidden": res.info["hidden"], "objective": res.objective, "gap": res.gap,
        "rel_gap": res.rel_gap, "lower_bound": res.lower_bound,
        "cone_violation": res.info["certificate"].get("cone_violation"),
        "train_acc": _accuracy(res.module, ds.X_train, ds.y_train),
        "test_acc": _accuracy(res.module, ds.X_test, ds.y_test),
    }
    for k in ("iters", "ipm_iters", "working_set", "converged", "status", "robust_train_acc", "gated_objective", "gated_lower_bound",
              "approximation_ratio", "scenario_psi", "dual_lower_bound_full", "dual_lower_bound_full_estimate",
              "rounds"):
        if k in res.info:
            out[k] = res.info[k]
    if args.out:
        from verify.train.convex.network import export_onnx

        export_onnx(res.module, args.out)
        out["out"] = args.out
    out["seconds"] = time.perf_counter() - t0
    if args.json:
        print(json.dumps(out))
    else:
        for k, v in out.items():
            print(f"{k}: {v}")
    return 0

"""`fit(X, y, ...)`: train a two-layer ReLU network by convex optimisation and return it with a certificate."""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
from torch import nn

from verify.train.convex.data import with_bias
from verify.train.convex.network import to_module
from verify.train.convex.patterns import enumerate_patterns, sample_patterns
from verify.train.convex.problem import ConvexProblem


@dataclass
class FitResult:
    """A trained network and how good its training is.

    objective: the convex (= nonconvex) training objective of `module` on the training data.
    gap: a rigorous duality gap for the solved program (None where no certificate exists);
    `lower_bound` = objective − gap. seconds: wall time of the whole fit.
    """

    objective: float
    gap: float | None
    module: nn.Sequential
    seconds: float
    V: np.ndarray
    W: np.ndarray
    D: np.ndarray
    solver: str
    info: dict = field(default_factory=dict)

    @property
    def lower_bound(self) -> float | None:
        return None if self.gap is None else self.objective - self.gap

    @property
    def rel_gap(self) -> float | None:
        return None if self.gap is None else self.gap / max(abs(self.objective), 1e-300)


def make_patterns(Xb: np.ndarray, patterns, seed: int = 0) -> np.ndarray:
    """Patterns from an int (sampled), "all" (exact enumeration) or an (n, P) boolean array."""
    if isinstance(patterns, str):
        if patterns in ("all", "exact"):
            return enumerate_patterns(Xb)
        raise ValueError(f"patterns must be an int, 'all' or an array, not {patterns!r}")
    if isinstance(patterns, (int, np.integer)):
        return sample_patterns(Xb, int(patterns), seed)
    D = np.asarray(patterns, dtype=bool)
    if D.ndim != 2 or D.shape[0] != Xb.shape[0]:
        raise ValueError(f"a pattern array must have shape (n={Xb.shape[0]}, P), got {D.shape}")
    return D


def fit(X: np.ndarray, y: np.ndarray, beta: float = 0.1, patterns=100, solver: str = "admm",
        loss: str = "squared", adversarial_eps: float | None = None, bias: bool = True, seed: int = 0,
        pattern_search: bool = False, gated: bool = False, tol: float = 1e-5, max_iters: int = 20_000,
        time_limit: float | None = None, cvxpy_solver: str = "SCS", eps: float = 1e-8,
        progress: bool = False, search_options: dict | None = None, polish: str = "ipm") -> FitResult:
    """Train Linear(d, h) → ReLU → Linear(h, 1) on (X, y) through the convex program.

    X: (n, d) features (a ones column is appended when `bias`); y: (n,) targets (±1 for classification).
    patterns: int P (Gaussian sampling with `seed`, deduplicated), "all" (exact enumeration, small d) or an
    (n, P) boolean array. solver: "ipm" (structure-exploiting interior-point method with column
    generation over the patterns: certified to ~1e-8), "admm" (ADMM; `polish`="ipm" finishes with the
    IPM on the patterns ADMM found active, "project" certifies the ADMM iterate itself) or "cvxpy"
    (`cvxpy_solver`, tolerance `eps`). loss: "squared" (any solver) or "logistic" (cvxpy only).
    adversarial_eps: train the ℓ∞-robust counterpart with radius ε on the (unbiased) features.
    solver "colgen": exact column generation over the pattern set with Clarabel (through cvxpy) as the
    inner solver; "auto": ipm (which also does column generation when P > 300, e.g. for "all").
    pattern_search: grow the patterns by column generation from a briefly trained network (ignores
    `patterns` beyond its budget). gated: solve the gated-ReLU relaxation, then convert to ReLU.
    """
    t0 = time.perf_counter()
    X = np.asarray(X, dtype=float)
    y = np.asarray(y, dtype=float).ravel()
    if X.ndim != 2 or X.shape[0] != y.shape[0]:
        raise ValueError(f"X must be (n, d) and y (n,), got {X.shape} and {y.shape}")
    if solver == "auto":
        solver = "ipm"
    if solver not in ("admm", "cvxpy", "colgen", "ipm"):
        raise ValueError(f"solver must be 'admm', 'ipm', 'cvxpy', 'colgen' or 'auto', not {solver!r}")
    if polish not in ("ipm", "project"):
        raise ValueError(f"polish must be 'ipm' or 'project', not {polish!r}")
    if loss not in ("squared", "logistic"):
        raise ValueError(f"loss must be 'squared' or 'logistic', not {loss!r}")
    if loss != "squared" and solver in ("admm", "ipm"):
        raise ValueError(f"the {solver.upper()} solver handles the squared loss; use solver='cvxpy' for loss='logistic'")
    Xb = with_bias(X) if bias else X
    info: dict = {}
    if pattern_search:
        from verify.train.convex.colgen import pattern_search as _search

        opts = dict(search_options or {})
        opts.setdefault("seed", seed)
        res = _search(Xb, y, beta, **opts)
        D, V, W = res["D"], res["V"], res["W"]
        cert = res["certificate"]
        info.update({k: v for k, v in res.items() if k not in ("D", "V", "W", "certificate")})
    else:
        D = make_patterns(Xb, patterns, seed)
        prob = ConvexProblem(Xb, y, D, beta)
        if adversarial_eps:
            from verify.train.convex.adversarial import solve_robust

            res = solve_robust(prob, float(adversarial_eps), bias=bias, solver=cvxpy_solver, eps_tol=eps)
            V, W, D, cert = res["V"], res["W"], res["D"], res["certificate"]
            info["robust_train_acc"] = res["robust_train_acc"]
        elif gated:
            from verify.train.convex.gated import (
                gated_to_relu,
                scenario_bound,
                solve_gated,
            )

            g = solve_gated(prob, tol=min(tol, 1e-4))
            conv = gated_to_relu(prob, g["U"])
            V, W = conv["V"], conv["W"]
            cert = {"primal": conv["relu_objective"], "gap": None}
            info.update({"gated_objective": g["certificate"]["primal"],
                         "gated_lower_bound": g["certificate"]["dual"],
                         "relu_objective": conv["relu_objective"],
                         "approximation_ratio": conv["relu_objective"] / max(g["certificate"]["dual"], 1e-300),
                         "scenario_psi": scenario_bound(D.shape[1], len(y)),
                         "patterns_used": conv["patterns_used"]})
        elif solver == "colgen":
            from verify.train.convex.colgen import solve_colgen

            res = solve_colgen(prob, progress=progress)
            V, W, cert = res["V"], res["W"], res["certificate"]
            info.update({"rounds": res["rounds"], "working_set": res["working_set"]})
        elif solver == "cvxpy":
            from verify.train.convex.cvx import solve_cvxpy

            res = solve_cvxpy(prob, solver=cvxpy_solver, eps=eps, loss=loss)
            V, W, cert = res["V"], res["W"], res["certificate"]
            info["status"] = res["status"]
        elif solver == "ipm":
            from verify.train.convex.ipm import solve_interior

            res = solve_interior(prob, verbose=int(progress))
            V, W, cert = res["V"], res["W"], res["certificate"]
            info.update({"ipm_iters": res["iters"], "rounds": res["rounds"], "working_set": res["working_set"]})
        else:
            from verify.train.convex.admm import solve_admm

            res = solve_admm(prob, tol=tol, max_iters=max_iters, time_limit=time_limit, progress=progress,
                             polish=polish)
            V, W, cert = res["V"], res["W"], res["certificate"]
            info.update({k: res[k] for k in ("iters", "converged", "ipm_iters", "rounds", "working_set") if k in res})
    info["certificate"] = cert
    info["patterns"] = int(D.shape[1])
    module = to_module(V, W, bias=bias)
    info["hidden"] = int(module[0].out_features)
    if loss == "squared" and not adversarial_eps:
        prob_obj = ConvexProblem(Xb, y, D, beta).objective(V, W)
    else:  # the robust / logistic objective as solved
        prob_obj = cert["primal"]
        if loss == "squared":
            info["standard_objective"] = ConvexProblem(Xb, y, D, beta).objective(V, W)
    return FitResult(objective=float(prob_obj), gap=cert.get("gap"), module=module,
                     seconds=time.perf_counter() - t0, V=V, W=W, D=D,
                     solver="gated" if gated else "robust" if adversarial_eps else solver, info=info)

"""The exact convex program through cvxpy (SCS by default), vectorised over patterns.

Used as the reference solver: tight tolerances by default. The certificate reported is the project's own
(`ConvexProblem.certificate`: a dual point built from the solution, so the gap is rigorous) after the
solution's tiny cone violations are projected away.
"""
from __future__ import annotations

import time

import numpy as np

from verify.train.convex.problem import ConvexProblem


def solve_cvxpy(prob: ConvexProblem, solver: str = "SCS", eps: float = 1e-9, max_iters: int = 200_000,
                verbose: bool = False, loss: str = "squared") -> dict:
    """Solve the convex program with cvxpy; returns V, W, the solver's status/time and a certificate.

    loss: "squared" (the reference objective) or "logistic" (log(1 + exp(−y ŷ)), a classification loss;
    its certificate reports the solver's own duality information only)."""
    import cvxpy as cp

    t0 = time.perf_counter()
    X, y, D = prob.X, prob.y, prob.D.astype(float)
    d, P = prob.d, prob.P
    V = cp.Variable((d, P))
    W = cp.Variable((d, P))
    S = 2 * D - 1
    XV, XW = X @ V, X @ W
    pred = cp.sum(cp.multiply(D, XV - XW), axis=1)
    r = cp.Variable(prob.n)  # residual ŷ − y; the multiplier of its definition is the dual λ
    reg = cp.sum(cp.norm(V, 2, axis=0)) + cp.sum(cp.norm(W, 2, axis=0))
    if loss == "squared":
        fit = 0.5 * cp.sum_squares(r)
    elif loss == "logistic":
        fit = cp.sum(cp.logistic(-cp.multiply(y, r + y)))
    else:
        raise ValueError(f"unknown loss {loss!r}")
    eq = r == pred - y
    cons = [eq, cp.multiply(S, XV) >= 0, cp.multiply(S, XW) >= 0]
    problem = cp.Problem(cp.Minimize(fit + prob.beta * reg), cons)
    opts: dict = {}
    s = solver.upper()
    if s == "SCS":
        opts = {"eps_abs": eps, "eps_rel": eps, "max_iters": max_iters}
    elif s == "CLARABEL":
        opts = {"tol_gap_abs": eps, "tol_gap_rel": eps, "tol_feas": eps}
    problem.solve(solver=s, verbose=verbose, **opts)
    t1 = time.perf_counter()
    if V.value is None:
        raise RuntimeError(f"cvxpy/{s} failed: status {problem.status}")
    Vv, Wv = np.asarray(V.value), np.asarray(W.value)
    out = {"V": Vv, "W": Wv, "status": problem.status, "solver": s, "solver_value": float(problem.value),
           "solve_seconds": t1 - t0}
    if loss == "squared":
        Vv, Wv = prune(prob, Vv, Wv)
        Vp, Wp = prob.project_to_cones(Vv, Wv)
        out["V"], out["W"] = Vp, Wp
        duals = [] if eq.dual_value is None else [np.asarray(eq.dual_value), -np.asarray(eq.dual_value)]
        out["certificate"] = prob.certificate(Vp, Wp, duals=duals)
        out["duals"] = duals
    else:
        out["certificate"] = {"primal": float(problem.value), "dual": None, "gap": None, "rel_gap": None,
                              "cone_violation": prob.cone_violation(Vv, Wv)}
    out["seconds"] = time.perf_counter() - t0
    return out


def prune(prob: ConvexProblem, V: np.ndarray, W: np.ndarray, rel: float = 1e-6) -> tuple[np.ndarray, np.ndarray]:
    """Zero the columns an interior-point solver leaves at noise level (norm ≤ rel·max), keeping the
    pruned point only if it does not raise the objective by more than 1e-12 relative."""
    nv, nw = np.linalg.norm(V, axis=0), np.linalg.norm(W, axis=0)
    top = max(nv.max(initial=0.0), nw.max(initial=0.0))
    Vp, Wp = V * (nv > rel * top), W * (nw > rel * top)
    f0, f1 = prob.objective(V, W), prob.objective(Vp, Wp)
    return (Vp, Wp) if f1 <= f0 * (1 + 1e-12) else (V, W)

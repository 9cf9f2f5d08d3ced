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
    reg = cp.sum(cp.norm(V, 2, axis=0)) + cp.sum(cp.norm(W, 2, axis=0))
    if loss == "squared":
        fit = 0.5 * cp.sum_squares(pred - y)
    elif loss == "logistic":
        fit = cp.sum(cp.logistic(-cp.multiply(y, pred)))
    else:
        raise ValueError(f"unknown loss {loss!r}")
    cons = [cp.multiply(S, XV) >= 0, cp.multiply(S, XW) >= 0]
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
        Vp, Wp = prob.project_to_cones(Vv, Wv)
        out["V"], out["W"] = Vp, Wp
        out["certificate"] = prob.certificate(Vp, Wp)
    else:
        out["certificate"] = {"primal": float(problem.value), "dual": None, "gap": None, "rel_gap": None,
                              "cone_violation": prob.cone_violation(Vv, Wv)}
    out["seconds"] = time.perf_counter() - t0
    return out

"""Sampled convex programs: the unconstrained (gated-ReLU) relaxation and its conversion to ReLU.

Dropping the cone constraints (and merging u_i = v_i − w_i) gives the group lasso

    minimise ½‖Σ_i D_i X u_i − y‖² + β Σ_i ‖u_i‖,

the training problem of a *gated* ReLU network f(x) = Σ_i 1[g_iᵀx ≥ 0] xᵀu_i. Its optimum is a lower bound
on the ReLU program over the same patterns (any feasible (v, w) gives u = v − w with ‖u‖ ≤ ‖v‖ + ‖w‖).
It is solved by FISTA with a rigorous duality gap (λ = y − ŷ scaled so that max_i ‖Xᵀ D_i λ‖ ≤ β).
The gated network is turned into a ReLU network by solving the constrained program on the patterns the
relaxation selected; relaxed-lower-bound ≤ ReLU optimum ≤ converted network's objective brackets its
suboptimality. `scenario_bound` gives the seed paper's sampling guarantee (scenario approach on the dual,
n decision variables): with probability ≥ 1 − ξ over the sampled patterns, a fresh random pattern
violates the sampled program's dual constraint (i.e. could still lower the objective) with probability ≤ ψ.
"""
from __future__ import annotations

import time

import numpy as np

from verify.train.convex.problem import ConvexProblem


def scenario_bound(num_patterns: int, n: int, confidence: float = 1e-3) -> float:
    """Smallest violation level ψ with Σ_{i<n} C(N, i) ψ^i (1 − ψ)^(N−i) ≤ ξ (Campi & Garatti), N = number
    of sampled patterns, n = decision variables of the dual (training points); 1.0 when N ≤ n (vacuous)."""
    from scipy.stats import binom

    N = int(num_patterns)
    if N <= n:
        return 1.0
    lo, hi = 0.0, 1.0
    for _ in range(100):
        mid = 0.5 * (lo + hi)
        if binom.cdf(n - 1, N, mid) <= confidence:
            hi = mid
        else:
            lo = mid
    return hi


def solve_gated(prob: ConvexProblem, tol: float = 1e-6, max_iters: int = 5000) -> dict:
    """FISTA on the group lasso; returns U (d, P), objective, dual bound, gap."""
    t0 = time.perf_counter()
    X, y, Df, beta = prob.X, prob.y, prob.D.astype(float), prob.beta

    def F(U):
        return ((X @ U) * Df).sum(axis=1)

    def Ft(r):
        return X.T @ (Df * r[:, None])

    # Lipschitz constant of the smooth part: ‖F‖² by power iteration (+ 1 % margin)
    rng = np.random.default_rng(0)
    U = rng.standard_normal((prob.d, prob.P))
    L = 1.0
    for _ in range(50):
        U = Ft(F(U))
        L = float(np.linalg.norm(U))
        U /= L
    L *= 1.01
    U = np.zeros((prob.d, prob.P))
    Yk, tk = U.copy(), 1.0
    cert = None
    for it in range(1, max_iters + 1):
        G = Yk - Ft(F(Yk) - y) / L
        nrm = np.linalg.norm(G, axis=0)
        Un = G * np.maximum(0.0, 1.0 - (beta / L) / np.maximum(nrm, 1e-300))
        tn = 0.5 * (1 + np.sqrt(1 + 4 * tk * tk))
        Yk = Un + ((tk - 1) / tn) * (Un - U)
        U, tk = Un, tn
        if it % 25 == 0 or it == max_iters:
            cert = gated_certificate(prob, U)
            if cert["rel_gap"] <= tol:
                break
    cert = gated_certificate(prob, U)
    return {"U": U, "certificate": cert, "iters": it, "seconds": time.perf_counter() - t0}


def gated_certificate(prob: ConvexProblem, U: np.ndarray) -> dict:
    """Primal value and a rigorous dual bound of the gated relaxation at U."""
    X, y, Df, beta = prob.X, prob.y, prob.D.astype(float), prob.beta
    yhat = ((X @ U) * Df).sum(axis=1)
    r = yhat - y
    primal = 0.5 * float(r @ r) + beta * float(np.linalg.norm(U, axis=0).sum())
    lam = -r
    rho = float(np.linalg.norm(X.T @ (Df * lam[:, None]), axis=0).max(initial=0.0))
    dual, _ = prob.dual_value(lam, rho)
    return {"primal": primal, "dual": dual, "gap": primal - dual, "rel_gap": (primal - dual) / max(primal, 1e-300)}


def gated_to_relu(prob: ConvexProblem, U: np.ndarray, solver: str = "ipm", **solver_kw) -> dict:
    """Solve the ReLU program on the patterns the gated solution uses (solver "ipm", "admm" or "cvxpy",
    with `solver_kw`); returns V, W (over *all* of prob's patterns, zero outside the support) and the
    bracket [relaxation lower bound, ReLU objective]."""
    from verify.train.convex.admm import solve_admm
    from verify.train.convex.cvx import solve_cvxpy
    from verify.train.convex.ipm import solve_interior

    keep = np.flatnonzero(np.linalg.norm(U, axis=0) > 0)
    if keep.size == 0:
        keep = np.arange(min(1, prob.P))
    sub = ConvexProblem(prob.X, prob.y, prob.D[:, keep], prob.beta)
    res = {"ipm": solve_interior, "admm": solve_admm, "cvxpy": solve_cvxpy}[solver](sub, **solver_kw)
    V = np.zeros((prob.d, prob.P))
    W = np.zeros((prob.d, prob.P))
    V[:, keep], W[:, keep] = res["V"], res["W"]
    return {"V": V, "W": W, "relu_objective": prob.objective(V, W), "patterns_used": int(keep.size)}

"""Convex adversarial training: the robust counterpart of the convex program for ℓ∞ perturbations.

For a training point x_k perturbed by ‖δ‖∞ ≤ ε (bias feature not perturbed), requiring every neuron's
pattern to stay fixed on the whole box makes the network affine there, which turns the worst case into a
closed form:
    cone constraints   (2D_ik − 1) x_kᵀ v_i ≥ ε ‖v_i‖₁     (and the same for w_i; ‖·‖₁ over features)
    worst-case loss    ½ (|ŷ_k − y_k| + ε ‖Σ_i D_ik (v_i − w_i)‖₁)².
The program stays convex (an SOCP). Its optimum upper-bounds the robust training loss of the recovered
network, and a training point with y_k ŷ_k − ε‖Σ_i D_ik (v_i − w_i)‖₁ > 0 is provably robust.
"""
from __future__ import annotations

import time

import numpy as np

from verify.train.convex.problem import ConvexProblem


def solve_robust(prob: ConvexProblem, eps: float, bias: bool = True, solver: str = "CLARABEL",
                 eps_tol: float | None = None, **kw) -> dict:
    """Solve the ℓ∞-robust convex program with cvxpy; returns V, W, the certificate dict and the
    provably robust training accuracy."""
    import cvxpy as cp

    t0 = time.perf_counter()
    X, y, Df = prob.X, prob.y, prob.D.astype(float)
    n, d, P = prob.n, prob.d, prob.P
    df = d - 1 if bias else d  # perturbed coordinates
    S = 2 * Df - 1
    V = cp.Variable((d, P))
    W = cp.Variable((d, P))
    pred = cp.sum(cp.multiply(Df, X @ (V - W)), axis=1)
    G = Df @ (V - W)[:df].T  # (n, df): the network's gradient at each training point
    spread = cp.norm1(G, axis=1)
    t = cp.Variable(n, nonneg=True)
    ones = np.ones((n, 1))
    cons = [t >= cp.abs(pred - y) + eps * spread,
            cp.multiply(S, X @ V) >= ones @ cp.reshape(eps * cp.norm1(V[:df], axis=0), (1, P), order="C"),
            cp.multiply(S, X @ W) >= ones @ cp.reshape(eps * cp.norm1(W[:df], axis=0), (1, P), order="C")]
    obj = 0.5 * cp.sum_squares(t) + prob.beta * (cp.sum(cp.norm(V, 2, axis=0)) + cp.sum(cp.norm(W, 2, axis=0)))
    problem = cp.Problem(cp.Minimize(obj), cons)
    s = solver.upper()
    tol = eps_tol if eps_tol is not None else kw.get("eps", 1e-8)
    opts = {"SCS": {"eps_abs": tol, "eps_rel": tol, "max_iters": 100_000},
            "CLARABEL": {"tol_gap_abs": tol, "tol_gap_rel": tol, "tol_feas": tol}}.get(s, {})
    problem.solve(solver=s, **opts)
    if V.value is None:
        raise RuntimeError(f"robust program failed: {problem.status}")
    Vv, Wv = np.asarray(V.value), np.asarray(W.value)
    margins = robust_margins(prob, Vv, Wv, eps, bias)
    return {"V": Vv, "W": Wv, "status": problem.status, "seconds": time.perf_counter() - t0,
            "certificate": {"primal": float(problem.value), "gap": None, "status": problem.status,
                            "cone_violation": prob.cone_violation(Vv, Wv)},
            "robust_train_acc": float(np.mean(margins > 0))}


def robust_margins(prob: ConvexProblem, V: np.ndarray, W: np.ndarray, eps: float, bias: bool = True) -> np.ndarray:
    """Worst-case margins y_k f(x_k + δ) over ‖δ‖∞ ≤ ε, exact where the robust cone constraints hold
    (every neuron's pattern is constant on the box); −inf where a neuron's pattern can flip."""
    X, Df = prob.X, prob.D.astype(float)
    df = prob.d - 1 if bias else prob.d
    yhat = ((X @ (V - W)) * Df).sum(axis=1)
    G = Df @ (V - W)[:df].T
    m = prob.y * yhat - eps * np.abs(G).sum(axis=1)
    S = prob.signs
    slack = np.minimum(S * (X @ V) - eps * np.abs(V[:df]).sum(axis=0), S * (X @ W) - eps * np.abs(W[:df]).sum(axis=0))
    used = (np.linalg.norm(V, axis=0) > 0) | (np.linalg.norm(W, axis=0) > 0)
    flips = (slack[:, used] < -1e-9).any(axis=1)
    return np.where(flips, -np.inf, m)

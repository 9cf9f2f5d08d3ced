"""LipSDP (Neuron / Layer, l2 / l_inf) stated in cvxpy and solved by any installed conic solver.

The solver's objective is NOT reported as a bound: only its multipliers are used, and the bound is
recomputed from them in float64 by `verify.lipsdp.chain` (the caller does that). The raw solver value is
returned beside them for comparison.
"""
from __future__ import annotations

import numpy as np

from verify.errors import InputError
from verify.lipsdp.chain import Chain
from verify.lipsdp.qc import linear_maps


def _sandwich(cp, W: np.ndarray, d, G, c):
    """W' (diag(d) + G' diag(c) G) W as a cvxpy expression (d, c expressions or None)."""
    expr = W.T @ cp.diag(d) @ W
    if G is not None and c is not None:
        GW = G @ W
        expr = expr + GW.T @ cp.diag(c) @ GW
    return expr


def _left(cp, W: np.ndarray, d, G, c):
    """W' (diag(d) + G' diag(c) G) as a cvxpy expression."""
    expr = W.T @ cp.diag(d)
    if G is not None and c is not None:
        expr = expr + (G @ W).T @ cp.diag(c) @ G
    return expr


def _own_block(cp, chain: Chain, per: list, k: int):
    """Layer k's QC on block (k, k): W'PW (- W'RA - A'R'W + A'QA for a residual layer)."""
    (Pd, Pc), G, W, A = per[k][0]["P"], per[k][1], chain.weights[k], chain.skips[k]
    expr = _sandwich(cp, W, Pd, G, Pc)
    if A is not None:
        (Rd, Rc), (Qd, Qc) = per[k][0]["R"], per[k][0]["Q"]
        WRA = _left(cp, W, Rd, G, Rc) @ A
        expr = expr - WRA - WRA.T + _sandwich(cp, A, Qd, G, Qc)
    return expr


def _full(cp, d, G, c):
    expr = cp.diag(d)
    if G is not None and c is not None:
        expr = expr + G.T @ cp.diag(c) @ G
    return expr


def solve_cvxpy(chain: Chain, norm: str = "2", solver: str | None = None, verbose: bool = False,
                solver_opts: dict | None = None) -> dict:
    """Solve the LipSDP of `chain`. Returns {"theta", "solver_value" (sqrt of the raw objective),
    "mu" (l_inf input multipliers or None), "status", "dual" (the solver's dual matrix Z of the LMI, or
    None)}."""
    import cvxpy as cp

    Ws, l = chain.weights, chain.l
    theta = cp.Variable(chain.n_params)
    cons = []
    if chain.nonneg_mask.any():
        cons.append(theta[np.flatnonzero(chain.nonneg_mask)] >= 0)
    per = []
    for k, q in enumerate(chain.qcs):
        th = theta[int(chain.offsets[k]):int(chain.offsets[k + 1])]
        maps = linear_maps(q)
        G = getattr(q, "G", None)
        mats = {}
        for key, (Ad, Ac) in maps.items():
            d = Ad @ th
            c = None if Ac is None else Ac @ th
            mats[key] = (d, c)
        per.append((mats, G))
    dims = [Ws[0].shape[1]] + [W.shape[0] for W in Ws[:-1]]
    n0 = dims[0]
    if norm == "2":
        rho = cp.Variable(nonneg=True)
        top = rho * np.eye(n0)
        objective = rho
        mu = None
    else:
        mu = cp.Variable(n0, nonneg=True)
        top = cp.diag(mu)
        objective = cp.sum(mu)
    blocks = [[None] * (l + 1) for _ in range(l + 1)]
    for i in range(l + 1):
        for j in range(l + 1):
            blocks[i][j] = np.zeros((dims[i], dims[j]))
    blocks[0][0] = top - _own_block(cp, chain, per, 0)
    for k in range(1, l + 1):
        Qd, Qc = per[k - 1][0]["Q"]
        D = -_full(cp, Qd, per[k - 1][1], Qc)
        if k < l:
            D = D - _own_block(cp, chain, per, k)
        else:
            D = D - Ws[l].T @ Ws[l]
        blocks[k][k] = D
    for k in range(l):
        Rd, Rc = per[k][0]["R"]
        G = per[k][1]
        C = -_left(cp, Ws[k], Rd, G, Rc)
        A = chain.skips[k]
        if A is not None:                       # residual layer: w = z_{k+1} - A z_k
            Qd, Qc = per[k][0]["Q"]
            C = C + _left(cp, A, Qd, G, Qc)
        blocks[k][k + 1] = C
        blocks[k + 1][k] = C.T
    M = cp.bmat(blocks)
    lmi = 0.5 * (M + M.T) >> 0
    cons.append(lmi)
    prob = cp.Problem(cp.Minimize(objective), cons)
    name = (solver or "SCS").upper()
    if name not in cp.installed_solvers():
        raise InputError(f"solver {solver!r} is not installed (installed: {', '.join(cp.installed_solvers())})")
    opts = dict(solver_opts or {})
    if name == "SCS":
        opts.setdefault("eps_abs", 1e-7)
        opts.setdefault("eps_rel", 1e-7)
        opts.setdefault("max_iters", 200000)
    try:
        prob.solve(solver=name, verbose=verbose, **opts)
    except cp.error.SolverError as e:
        return {"theta": None, "solver_value": float("nan"), "mu": None, "status": f"solver error: {e}"}
    val = prob.value
    sv = float(np.sqrt(max(val, 0.0))) if val is not None and np.isfinite(val) else float("nan")
    th = None if theta.value is None else np.asarray(theta.value, dtype=np.float64)
    Z = lmi.dual_value
    return {"theta": th, "solver_value": sv, "status": prob.status,
            "mu": None if mu is None or mu.value is None else np.asarray(mu.value, dtype=np.float64),
            "dual": None if Z is None else np.asarray(Z, dtype=np.float64)}

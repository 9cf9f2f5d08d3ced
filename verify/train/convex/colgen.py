"""Column generation over activation patterns: exact solves on small working sets, and pattern search.

`solve_colgen` solves the convex program over a (possibly huge) pattern set by repeatedly solving it on a
working set of groups (an interior-point solve through cvxpy/Clarabel, fast because the optimum uses few
neurons) and pricing *every* group with the dual constraint ρ_j(λ) ≤ β at λ = y − ŷ; violating groups
enter the working set. When none violates, the certificate priced over all patterns proves optimality
for the full pattern set.

`pattern_search` goes beyond a fixed pattern set: it starts from the patterns of a briefly trained
network and adds new patterns found by local ascent on the dual constraint max_{‖u‖≤1} ±λᵀ(Xu)₊ (the
pricing problem over *all* patterns, which is nonconvex), and reports two lower bounds on the
all-patterns optimum: a certified one (the pricing bounded above by ‖(λ_S)‖·σ_max(X_S) over the points
with λ of the right sign) and an estimate (the best ascent value taken as the exact pricing value).
"""
from __future__ import annotations

import sys
import time

import numpy as np

from verify.train.convex.cvx import solve_cvxpy
from verify.train.convex.patterns import dedupe
from verify.train.convex.problem import ConvexProblem


def _restricted(prob: ConvexProblem, cols: np.ndarray, eps: float) -> tuple[np.ndarray, np.ndarray, list]:
    """Solve on the pattern columns `cols` (both v and w of each) and embed into the full variables;
    also returns the solver's dual candidates for λ."""
    sub = ConvexProblem(prob.X, prob.y, prob.D[:, cols], prob.beta)
    r = solve_cvxpy(sub, solver="CLARABEL", eps=eps)
    V = np.zeros((prob.d, prob.P))
    W = np.zeros((prob.d, prob.P))
    V[:, cols], W[:, cols] = r["V"], r["W"]
    return V, W, r.get("duals", [])


def solve_colgen(prob: ConvexProblem, init: int = 100, add: int = 200, max_rounds: int = 50, eps: float = 1e-10,
                 tol: float = 1e-9, progress: bool = False) -> dict:
    """Exact optimum over all of prob's patterns by column generation; returns V, W, certificate."""
    t0 = time.perf_counter()
    lam = prob.y.copy()
    rv, rw = prob.price(lam)
    cols = np.argsort(-np.maximum(rv, rw))[:init]
    V = W = np.zeros((prob.d, prob.P))
    duals: list = []
    rounds = 0
    for rounds in range(1, max_rounds + 1):
        V, W, duals = _restricted(prob, np.sort(cols), eps)
        cands = [prob.y - prob.predict(V, W)] + list(duals)
        lam = min(cands, key=lambda l: float(np.linalg.norm(l - cands[0])) if l is not cands[0] else np.inf) \
            if len(cands) > 1 else cands[0]  # the solver's multiplier (right sign) when available
        rv, rw = prob.price(lam)
        score = np.maximum(rv, rw)
        score[cols] = -np.inf
        viol = np.flatnonzero(score > prob.beta * (1 + tol))
        if progress:
            print(f"colgen round {rounds}: {len(cols)} patterns, objective {prob.objective(V, W):.9g}, "
                  f"{len(viol)} violating", file=sys.stderr)
        if viol.size == 0:
            break
        new = viol[np.argsort(-score[viol])][:add]
        cols = np.concatenate([cols, new])
    cert = prob.certificate(V, W, duals=duals)
    return {"V": V, "W": W, "certificate": cert, "rounds": rounds, "working_set": int(len(cols)),
            "seconds": time.perf_counter() - t0}


# ------------------------------------------------------------------------------------ pattern search
def adam_init(X: np.ndarray, y: np.ndarray, beta: float, hidden: int = 200, steps: int = 2000,
              seed: int = 0, lr: float = 1e-2) -> dict:
    """Train a two-layer ReLU net by Adam on the same objective (X includes the bias column) and map it to
    a feasible point of the convex program over its own patterns: neuron (u_j, a_j) gives v = |a_j| u_j
    (a_j > 0) or w = |a_j| u_j (a_j < 0) in the cone of D_j = 1[X u_j ≥ 0]; neurons sharing a pattern are
    summed (still in the cone, norm not larger). Returns D, V, W and Adam's final objective."""
    import torch

    g = torch.Generator().manual_seed(seed)
    Xt = torch.as_tensor(X, dtype=torch.float64)
    yt = torch.as_tensor(y, dtype=torch.float64)
    U = (torch.randn(X.shape[1], hidden, generator=g, dtype=torch.float64) / np.sqrt(X.shape[1])).requires_grad_()
    a = (torch.randn(hidden, generator=g, dtype=torch.float64) / np.sqrt(hidden)).requires_grad_()
    opt = torch.optim.Adam([U, a], lr=lr)
    loss = torch.tensor(0.0)
    for _ in range(steps):
        opt.zero_grad()
        f = torch.relu(Xt @ U) @ a
        loss = 0.5 * ((f - yt) ** 2).sum() + 0.5 * beta * ((U ** 2).sum() + (a ** 2).sum())
        loss.backward()
        opt.step()
    Ud, ad = U.detach().numpy(), a.detach().numpy()
    Dall = X @ Ud >= 0
    D = dedupe(Dall)
    keys = {col.tobytes(): i for i, col in enumerate(D.T)}
    V = np.zeros((X.shape[1], D.shape[1]))
    W = np.zeros_like(V)
    for j in range(hidden):
        i = keys.get(Dall[:, j].tobytes())
        if i is None:  # a dead neuron (all-zero pattern): contributes nothing
            continue
        if ad[j] >= 0:
            V[:, i] += ad[j] * Ud[:, j]
        else:
            W[:, i] -= ad[j] * Ud[:, j]
    return {"D": D, "V": V, "W": W, "objective": float(loss.detach())}


def _warm_state(prob: ConvexProblem, V: np.ndarray, W: np.ndarray, prev: dict | None = None) -> dict:
    """An ADMM state at (V, W): previous duals kept for the old columns, zero for new ones (ADMM fills
    in the slack)."""
    P = prob.P
    U = np.concatenate([V, W], axis=1)
    st = {"U": U, "Z": U.copy(), "A": np.zeros_like(U), "N": np.zeros((prob.n, 2 * P))}
    if prev is not None:
        p0 = prev["U"].shape[1] // 2
        for key in ("A", "N"):
            st[key][:, :p0] = prev[key][:, :p0]
            st[key][:, P:P + p0] = prev[key][:, p0:]
        st["rho"] = prev["rho"]
    return st


def ascend_patterns(X: np.ndarray, lam: np.ndarray, starts: np.ndarray, iters: int = 30) -> tuple[np.ndarray, np.ndarray]:
    """Fixed-point ascent u ← Xᵀ(λ ∘ 1[Xu ≥ 0]) / ‖·‖ for max_{‖u‖=1} λᵀ(Xu)₊ from the columns of `starts`
    (batched); returns (the patterns 1[Xu ≥ 0] as columns, the values λᵀ(Xu)₊ with ‖u‖ = 1)."""
    U = starts / np.maximum(np.linalg.norm(starts, axis=0), 1e-300)
    for _ in range(iters):
        G = X.T @ (lam[:, None] * (X @ U >= 0))
        nrm = np.linalg.norm(G, axis=0)
        U = np.where(nrm > 0, G / np.maximum(nrm, 1e-300), U)
    Z = X @ U
    return Z >= 0, lam @ np.maximum(Z, 0.0)


def certified_pricing_bound(X: np.ndarray, lam: np.ndarray) -> float:
    """An upper bound on max_{‖u‖≤1} |λᵀ(Xu)₊| over *all* patterns:
    λᵀ(Xu)₊ ≤ Σ_{λ_k>0} λ_k (x_kᵀu)₊ = max_{T⊆S₊} (X_Tᵀλ_T)ᵀu ≤ max_T ‖X_Tᵀλ_T‖ ≤ σ_max(X_{S₊})‖λ_{S₊}‖
    (and the same with −λ)."""
    out = 0.0
    for s in (lam, -lam):
        pos = s > 0
        if pos.any():
            sig = np.linalg.norm(X[pos], 2)
            out = max(out, float(sig * np.linalg.norm(s[pos])), )
            out = min(out, float(np.sum(s[pos] * np.linalg.norm(X[pos], axis=1)))) if out > 0 else out
    return out


def pattern_search(X: np.ndarray, y: np.ndarray, beta: float, max_patterns: int = 500, rounds: int = 6,
                   add: int = 60, starts: int = 400, hidden: int = 200, adam_steps: int = 8000,
                   adam_lr: float = 3e-3, seed: int = 0, admm_tol: float = 1e-6, admm_time: float = 3.0,
                   time_limit: float = 30.0, progress: bool = False) -> dict:
    """Column generation over all patterns from an Adam warm start (its patterns *and* its weights as the
    first ADMM iterate); returns the best V, W, D, the certificate of that restricted program, the trace
    and the lower bounds on the all-patterns optimum."""
    from verify.train.convex.admm import admm, split

    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    init = adam_init(X, y, beta, hidden=hidden, steps=adam_steps, seed=seed, lr=adam_lr)
    D, V, W = init["D"], init["V"], init["W"]
    state = None
    trace = []
    best = None
    for r in range(rounds + 1):
        prob = ConvexProblem(X, y, D, beta)
        warm = _warm_state(prob, V, W, state)
        left = time_limit - (time.perf_counter() - t0)
        state = admm(prob, tol=admm_tol, time_limit=max(0.5, min(admm_time, left)), warm=warm, max_iters=100_000)
        V, W = prob.project_to_cones(*split(prob, state["Z"]))
        obj = prob.objective(V, W)
        lam = y - prob.predict(V, W)
        cand_start = np.concatenate([rng.standard_normal((X.shape[1], starts)),
                                     V[:, np.linalg.norm(V, axis=0) > 0], W[:, np.linalg.norm(W, axis=0) > 0]], axis=1)
        Dp, vp = ascend_patterns(X, lam, cand_start)
        Dm, vm = ascend_patterns(X, -lam, cand_start)
        est = float(max(vp.max(initial=0.0), vm.max(initial=0.0)))
        lb_est, _ = prob.dual_value(lam, est)
        lb_cert, _ = prob.dual_value(lam, max(certified_pricing_bound(X, lam), est))
        rec = {"round": r, "patterns": int(D.shape[1]), "objective": obj, "admm_iters": state["iters"],
               "lower_bound_estimate": lb_est, "lower_bound_certified": lb_cert,
               "seconds": time.perf_counter() - t0}
        trace.append(rec)
        if progress:
            print(f"pattern search {rec}", file=sys.stderr)
        if best is None or obj < best["objective"]:
            best = {"objective": obj, "V": V, "W": W, "D": D}
        room = max_patterns - D.shape[1]
        if r == rounds or room <= 0 or time.perf_counter() - t0 > time_limit:
            break
        cand = np.concatenate([Dp[:, vp > beta], Dm[:, vm > beta]], axis=1)
        vals = np.concatenate([vp[vp > beta], vm[vm > beta]])
        if cand.shape[1] == 0:
            break
        cand = cand[:, np.argsort(-vals)]
        merged = dedupe(np.concatenate([D, cand], axis=1))
        P0 = D.shape[1]
        D = merged[:, :min(merged.shape[1], P0 + min(add, room))]
        k = D.shape[1] - P0
        V = np.concatenate([V, np.zeros((X.shape[1], k))], axis=1)
        W = np.concatenate([W, np.zeros((X.shape[1], k))], axis=1)
    final = ConvexProblem(X, y, best["D"], beta)
    cert = final.certificate(best["V"], best["W"])
    return {"V": best["V"], "W": best["W"], "D": best["D"], "certificate": cert,
            "adam_objective": init["objective"], "trace": trace,
            "dual_lower_bound_full": max(t["lower_bound_certified"] for t in trace),
            "dual_lower_bound_full_estimate": max(t["lower_bound_estimate"] for t in trace),
            "rounds": len(trace), "seconds": time.perf_counter() - t0}

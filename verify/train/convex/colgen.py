"""Column generation over activation patterns: exact solves on small working sets, and pattern search.

`solve_colgen` solves the convex program over a (possibly huge) pattern set by repeatedly solving it on a
working set of groups (an interior-point solve through cvxpy/Clarabel, fast because the optimum uses few
neurons) and pricing *every* group with the dual constraint ρ_j(λ) ≤ β at λ = y − ŷ; violating groups
enter the working set. When none violates, the certificate priced over all patterns proves optimality
for the full pattern set.

`pattern_search` goes beyond a fixed pattern set: it starts from the patterns of a briefly trained
network and alternates exact convex solves (interior point) with short Adam runs from the convex
optimum's network, whose neurons move across data points and so bring the patterns the optimum wants
next. It reports two lower bounds on the all-patterns optimum: a certified one (the pricing problem
max_{‖u‖≤1} ±λᵀ(Xu)₊ bounded above by ‖(λ_S)‖·σ_max(X_S) over the points with λ of the right sign) and
an estimate (the best local-ascent value taken as the exact pricing value).
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
    return {"V": V, "W": W, "certificate": cert, "rounds": rounds, "working_set": len(cols),
            "seconds": time.perf_counter() - t0}


# ------------------------------------------------------------------------------------ pattern search
def _adam(X: np.ndarray, y: np.ndarray, beta: float, U: np.ndarray, a: np.ndarray, steps: int,
          lr: float) -> tuple[np.ndarray, np.ndarray, float]:
    """Adam on the nonconvex objective ½‖relu(XU)a − y‖² + (β/2)(‖U‖² + ‖a‖²) from (U, a)."""
    import torch

    Xt = torch.as_tensor(X, dtype=torch.float64)
    yt = torch.as_tensor(y, dtype=torch.float64)
    Ut = torch.tensor(U, dtype=torch.float64, requires_grad=True)
    at = torch.tensor(a, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.Adam([Ut, at], lr=lr)
    loss = torch.tensor(0.0)
    for _ in range(steps):
        opt.zero_grad()
        f = torch.relu(Xt @ Ut) @ at
        loss = 0.5 * ((f - yt) ** 2).sum() + 0.5 * beta * ((Ut ** 2).sum() + (at ** 2).sum())
        loss.backward()
        opt.step()
    return Ut.detach().numpy(), at.detach().numpy(), float(loss.detach())


def neurons_to_convex(X: np.ndarray, U: np.ndarray, a: np.ndarray) -> dict:
    """A network's neurons as a feasible point of the convex program over their own patterns: neuron
    (u_j, a_j) gives v = |a_j| u_j (a_j > 0) or w = |a_j| u_j (a_j < 0) in the cone of D_j = 1[X u_j ≥ 0];
    neurons sharing a pattern are summed (still in the cone, norm not larger). Returns D, V, W."""
    Dall = X @ U >= 0
    D = dedupe(Dall)
    keys = {col.tobytes(): i for i, col in enumerate(D.T)}
    V = np.zeros((X.shape[1], D.shape[1]))
    W = np.zeros_like(V)
    for j in range(U.shape[1]):
        i = keys.get(Dall[:, j].tobytes())
        if i is None:  # a dead neuron (all-zero pattern): contributes nothing
            continue
        if a[j] >= 0:
            V[:, i] += a[j] * U[:, j]
        else:
            W[:, i] -= a[j] * U[:, j]
    return {"D": D, "V": V, "W": W}


def convex_to_neurons(V: np.ndarray, W: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The inverse map for the non-zero columns: v ↦ (v/√‖v‖, +√‖v‖), w ↦ (w/√‖w‖, −√‖w‖)."""
    nv, nw = np.linalg.norm(V, axis=0), np.linalg.norm(W, axis=0)
    U = np.concatenate([V[:, nv > 0] / np.sqrt(nv[nv > 0]), W[:, nw > 0] / np.sqrt(nw[nw > 0])], axis=1)
    a = np.concatenate([np.sqrt(nv[nv > 0]), -np.sqrt(nw[nw > 0])])
    return U, a


def adam_init(X: np.ndarray, y: np.ndarray, beta: float, hidden: int = 200, steps: int = 2000,
              seed: int = 0, lr: float = 1e-2) -> dict:
    """Train a two-layer ReLU net by Adam on the same objective (X includes the bias column) from a
    random start and map it to the convex program over its own patterns (`neurons_to_convex`).
    Returns D, V, W and Adam's final objective."""
    import torch

    g = torch.Generator().manual_seed(seed)
    U0 = torch.randn(X.shape[1], hidden, generator=g, dtype=torch.float64).numpy() / np.sqrt(X.shape[1])
    a0 = torch.randn(hidden, generator=g, dtype=torch.float64).numpy() / np.sqrt(hidden)
    U, a, obj = _adam(X, y, beta, U0, a0, steps, lr)
    return {**neurons_to_convex(X, U, a), "objective": obj}


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


def pattern_search(X: np.ndarray, y: np.ndarray, beta: float, max_patterns: int = 500, rounds: int = 8,
                   starts: int = 400, hidden: int = 200, adam_steps: int = 8000, adam_lr: float = 3e-3,
                   refine_steps: int = 800, refine_lr: float | tuple = (1e-3, 3e-3), seed: int = 0, ipm_tol: float = 1e-6,
                   time_limit: float = 30.0, progress: bool = False) -> dict:
    """Alternate the exact convex program on a pattern set with Adam moving its hyperplanes.

    Round 0 takes the patterns of an Adam-trained network (`hidden` neurons, `adam_steps` steps).
    Every round solves the convex program over the current patterns exactly (`ipm.solve_interior`,
    certified to ~`ipm_tol`), turns the optimum into its network, lets Adam refine that network for
    `refine_steps` steps once per learning rate in `refine_lr` (its neurons cross data points, i.e.
    change pattern: the moves the convex program over fixed patterns cannot make) and takes as the next
    pattern set the optimum's support plus the refined networks' patterns (at most `max_patterns`). A round starts only when the time
    left is estimated to suffice (the last round's time × 1.2 × (pattern growth)^1.5). Each round also evaluates two lower bounds on the *all-patterns*
    optimum at its dual point λ = y − ŷ: certified (pricing bounded above by
    `certified_pricing_bound`, loose) and an estimate (the best of `starts` fixed-point ascents taken
    as the exact pricing value: not a proof, and it can exceed the optimum when the ascent misses the
    maximiser). Returns the best round's V, W, D and certificate (over its own patterns), the trace and
    the bounds."""
    from verify.train.convex.ipm import solve_interior

    t0, c0 = time.perf_counter(), time.process_time()
    rng = np.random.default_rng(seed)
    init = adam_init(X, y, beta, hidden=hidden, steps=adam_steps, seed=seed, lr=adam_lr)
    D = init["D"][:, :max_patterns]
    trace = []
    best = None
    last = 0.0
    for r in range(rounds + 1):
        t_round = time.perf_counter()
        prob = ConvexProblem(X, y, D, beta)
        res = solve_interior(prob, tol=ipm_tol, working_set=max_patterns)
        V, W, cert = res["V"], res["W"], res["certificate"]
        lam = y - prob.predict(V, W)
        cand_start = np.concatenate([rng.standard_normal((X.shape[1], starts)), V, W], axis=1)
        _, vp = ascend_patterns(X, lam, cand_start)
        _, vm = ascend_patterns(X, -lam, cand_start)
        est = float(max(vp.max(initial=0.0), vm.max(initial=0.0)))
        lb_est, _ = prob.dual_value(lam, est)
        lb_cert, _ = prob.dual_value(lam, max(certified_pricing_bound(X, lam), est))
        rec = {"round": r, "patterns": int(D.shape[1]), "objective": cert["primal"], "rel_gap": cert["rel_gap"],
               "ipm_iters": res["iters"], "lower_bound_estimate": lb_est, "lower_bound_certified": lb_cert,
               "seconds": time.perf_counter() - t0, "cpu_seconds": time.process_time() - c0}
        trace.append(rec)
        if progress:
            print(f"pattern search {rec}", file=sys.stderr)
        if best is None or cert["primal"] < best["certificate"]["primal"]:
            best = {"V": V, "W": W, "D": D, "certificate": cert}
        last = time.perf_counter() - t_round
        if r == rounds or time.perf_counter() - t0 + last > time_limit:
            break
        U0, a0 = convex_to_neurons(V, W)
        moved = [X @ _adam(X, y, beta, U0, a0, refine_steps, lr)[0] >= 0 for lr in np.atleast_1d(refine_lr)]
        used = (np.linalg.norm(V, axis=0) > 0) | (np.linalg.norm(W, axis=0) > 0)
        D_next = dedupe(np.concatenate([D[:, used], *moved], axis=1))[:, :max_patterns]
        # the next solve costs about the last one times (growth in patterns)^1.5: skip it if it would overrun
        if time.perf_counter() - t0 + 1.2 * last * (D_next.shape[1] / D.shape[1]) ** 1.5 > time_limit:
            break
        D = D_next
    return {"V": best["V"], "W": best["W"], "D": best["D"], "certificate": best["certificate"],
            "adam_objective": init["objective"], "trace": trace,
            "dual_lower_bound_full": max(t["lower_bound_certified"] for t in trace),
            "dual_lower_bound_full_estimate": max(t["lower_bound_estimate"] for t in trace),
            "rounds": len(trace), "seconds": time.perf_counter() - t0}

"""Exact answers on fully split ReLU domains: one linear program per open term, certified by its dual.

When every ReLU of a domain is stable under the domain's bounds (split, or fixed by the root's bounds),
the network is affine on the domain: each pre-activation v_j and each objective row are affine functions of
the input x, read off one exact backward pass (the ReLU relaxation of a stable neuron is exact). Whether a
term "every row of C·y - d is <= 0" can hold on the domain is then the linear program

    t* = min t  over x in the box, t free,
         s.t.  C_r·y(x) - d_r <= t         for the term's rows r,
               v_j(x) >= 0 (or <= 0)       for every split constraint of the domain.

t* > 0 proves the term on the domain (an infeasible program, an empty domain, is certified by a
phase-one program instead); t* <= 0 hands back the minimiser as a counterexample candidate (the
caller executes it). A proof is not taken from the solver's word: the LP's multipliers (normalised, signs
clamped) are turned into a Lagrangian bound min over the box of Σ μ_r (row_r) + Σ λ_j (constraint_j),
evaluated in float64 in closed form; every such bound is valid whatever the solver's accuracy, so the
domain counts as verified only when it exceeds the caller's tolerance. This is exactly the bound β-CROWN
converges to with optimal β, reached in one solve instead of many gradient steps.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from verify.bab.objective import Objective
from verify.bounds.crown import BoundEngine

RELU_OPS = ("relu", "leakyrelu")


@dataclass
class LPResult:
    verified: bool                 # every term proven on the domain (certified bound > tol)
    x: np.ndarray | None = None    # a minimiser with t* <= 0: a counterexample candidate
    bound: float = -np.inf         # the smallest certified term bound (> tol when verified)


def applicable(engine: BoundEngine) -> bool:
    """True when every nonlinearity is a ReLU / LeakyReLU (the network is affine on a fully split domain)."""
    return all(engine.kind[n.name] == "affine" or n.op in RELU_OPS for n in engine.nodes)


def _affine_form(engine: BoundEngine, start: str, rows: torch.Tensor, bounds: dict, n_in: int):
    """(A (S, n_in), b (S,)) with rows·v_start = A·x + b on the domain (exact when every ReLU is stable)."""
    g = engine.graph
    A0 = rows.reshape(1, rows.shape[0], *g.shape_of(start))
    zero = torch.zeros(1, n_in, dtype=rows.dtype)
    collect: dict = {}
    with torch.no_grad():
        b = engine.backward(start, A0, bounds, zero, zero, None, None, collect)[0]
    A = collect.get(g.input_name)
    A = torch.zeros(rows.shape[0], n_in, dtype=rows.dtype) if A is None else A.reshape(rows.shape[0], n_in)
    return A.detach().numpy(), b.detach().numpy()


def _box_min(c: np.ndarray, c0: float, lo: np.ndarray, hi: np.ndarray) -> float:
    """min over the box of c·x + c0, in closed form."""
    return float(c0 + np.where(c >= 0, c * lo, c * hi).sum())


def _empty_domain_bound(G: np.ndarray, h: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> float:
    """A certified positive number when no x in the box meets G x + h <= 0 (else <= 0 or -inf).

    Phase-one LP: s* = min s subject to G x + h <= s over the box; its multipliers λ (normalised to sum 1)
    give min over the box of λ·(G x + h) in closed form, which is > 0 only if the constraints cannot all
    hold (every feasible x would make it <= 0)."""
    from scipy.optimize import linprog

    if G.shape[0] == 0:
        return -np.inf
    n = G.shape[1]
    cost = np.zeros(n + 1)
    cost[-1] = 1.0
    res = linprog(cost, A_ub=np.hstack([G, -np.ones((G.shape[0], 1))]), b_ub=-h,
                  bounds=[*zip(lo, hi), (None, None)], method="highs")
    if res.status != 0 or res.fun <= 0:
        return -np.inf
    lam = np.maximum(-np.asarray(res.ineqlin.marginals), 0.0)
    if lam.sum() <= 0:
        return -np.inf
    lam = lam / lam.sum()
    return _box_min(lam @ G, float(lam @ h), lo, hi)


def solve_domain(engine: BoundEngine, obj: Objective, bounds: dict, lower: torch.Tensor, upper: torch.Tensor,
                 signs: dict[str, torch.Tensor], tol: float) -> LPResult | None:
    """Decide one fully split domain. `bounds`: float64 bounds of every value on the domain (batch 1, split
    constraints applied); `signs[v]`: (n_v,) +1 where the domain requires v_j >= 0, -1 where v_j <= 0, 0
    free. Returns None when some ReLU is still unstable (the network is not affine there)."""
    from scipy.optimize import linprog

    g = engine.graph
    for n in engine.nodes:
        if n.op in RELU_OPS:
            l, u = bounds[n.inputs[0]]
            if bool(((l < 0) & (u > 0)).any()):
                return None
    dt = torch.float64
    n_in = g.input_size
    lo = lower.reshape(-1).to(dt).numpy()
    hi = upper.reshape(-1).to(dt).numpy()
    # split constraints as G x + h <= 0
    G, h = [np.zeros((0, n_in))], [np.zeros(0)]
    for v, s in signs.items():
        idx = s.nonzero().flatten()
        if idx.numel() == 0:
            continue
        eye = torch.zeros(idx.numel(), int(s.numel()), dtype=dt)
        eye[torch.arange(idx.numel()), idx] = 1.0
        A, b = _affine_form(engine, v, eye, bounds, n_in)
        sg = -s[idx].to(dt).numpy()[:, None]   # v >= 0  <=>  -v <= 0
        G.append(sg * A)
        h.append(sg[:, 0] * b)
    G, h = np.vstack(G), np.concatenate(h)
    Aout, bout = _affine_form(engine, g.output, obj.C.to(dt), bounds, n_in)
    rows_c = Aout
    rows_e = bout - obj.d.to(dt).numpy()
    worst = np.inf
    term = obj.term.numpy()
    for t in range(obj.n_terms):
        r = np.nonzero(term == t)[0]
        m = len(r)
        # variables (x, t): minimise t
        cost = np.zeros(n_in + 1)
        cost[-1] = 1.0
        A_ub = np.vstack([np.hstack([rows_c[r], -np.ones((m, 1))]), np.hstack([G, np.zeros((G.shape[0], 1))])])
        b_ub = np.concatenate([-rows_e[r], -h])
        res = linprog(cost, A_ub=A_ub, b_ub=b_ub, bounds=[*zip(lo, hi), (None, None)], method="highs")
        if res.status == 2:  # no input meets the split constraints: certify that separately
            empty = _empty_domain_bound(G, h, lo, hi)
            return LPResult(True, bound=empty) if empty > tol else LPResult(False, bound=empty)
        if res.status != 0:
            return LPResult(False)
        if res.fun <= 0:
            return LPResult(False, x=np.clip(res.x[:n_in], lo, hi))
        y = np.maximum(-np.asarray(res.ineqlin.marginals), 0.0)   # multipliers of the <= rows, >= 0
        mu, lam = y[:m], y[m:]
        if mu.sum() <= 0:
            return LPResult(False)
        lam = lam / mu.sum()
        mu = mu / mu.sum()
        c = mu @ rows_c[r] + lam @ G
        c0 = float(mu @ rows_e[r] + lam @ h)
        bound = _box_min(c, c0, lo, hi)
        worst = min(worst, bound)
        if not bound > tol:
            return LPResult(False, bound=worst)
    return LPResult(True, bound=worst)

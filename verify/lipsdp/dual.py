"""Lower bounds on the LipSDP optimum (not on the Lipschitz constant) from feasible points of its dual.

The primal is  min rho  s.t.  M(rho, theta) = rho E_0 - B - sum_i theta_i N_i >= 0,  theta_i >= 0 for the
sign-constrained multipliers, where z'N_i z = q_i(z) is the i-th QC along the trajectory
z = (z_0, ..., z_l) and B = blockdiag(0, ..., W_l'W_l). Weak duality: for any Z >= 0 with tr Z_00 = 1,
<Z, N_i> >= 0 (sign-constrained theta_i) and <Z, N_i> = 0 (free theta_i),

    rho* >= <Z, B> = E|W_l z_l|^2      (read E[.] as the second moments of Z).

Such a Z is a "relaxed trajectory": on average it meets every QC, and it is stretched by the output layer.
A solver's state gives an almost feasible Z: the top eigen-directions of X carried through the
elimination (`Chain.directions`), for the eigenvalue formulation, or F_k^{-1}/t on the central path of the
barrier method. `repair` makes it exactly feasible layer by layer, from the input forward, with linear maps
of the layer outputs (Z -> T Z T' keeps Z >= 0 and leaves z_0 alone):

* slope-restricted neuron on [alpha, beta]: if E[(w - alpha v)(beta v - w)] < 0, move w towards gamma v
  (gamma = (alpha + beta)/2, where the QC holds with room): w <- (1 - s) w + s gamma v with the smallest s
  that satisfies it (the QC is a concave quadratic in s);
* GroupSort / Householder group with invariant projection P (the range of E): the paper's multipliers need
  E|P w|^2 = E|P v|^2 (scale P w), the extended ones P w = P v exactly (replace it); then the rest of w is
  scaled down until E|w|^2 <= E|v|^2.

Every constraint is then rechecked from the repaired moments (`LayerQC.grad` evaluates <Z, N_i>), and the
bound is computed in float64; the residuals are returned so a caller can see they are rounding-sized.
"""
from __future__ import annotations

import time
import warnings

import numpy as np

from verify.lipsdp.chain import Chain, NotPositiveDefinite
from verify.lipsdp.qc import LayerQC


def _repair_slope(q: LayerQC, V: np.ndarray, Wo: np.ndarray) -> np.ndarray:
    """Rows of Wo (neurons) moved towards gamma * V until E[(w - alpha v)(beta v - w)] >= 0 (per neuron;
    with tied multipliers nothing changes when the layer's sum already holds)."""
    al, be = q.act.alpha, q.act.beta
    gam = 0.5 * (al + be)

    def qc(s):  # per-neuron E[(w' - al v)(be v - w')] for w' = (1 - s) w + s gam v
        Wn = (1 - s)[:, None] * Wo + (s * gam)[:, None] * V
        return ((Wn - al * V) * (be * V - Wn)).sum(axis=1), Wn

    n = V.shape[0]
    q0, _ = qc(np.zeros(n))
    bad = q0 < 0
    if not bad.any() or (q.tied and q0.sum() >= 1e-12 * np.abs(q0).sum()):
        return Wo
    if q.tied:  # repair only the worst neurons, as many as the layer's sum needs
        order = np.argsort(q0)
        total = q0.sum() - np.cumsum(q0[order])     # the sum once the first j+1 are repaired to >= 0
        j = int(np.argmax(total >= 1e-12 * np.abs(q0).sum())) if (total >= 0).any() else n - 1
        bad = np.zeros(n, dtype=bool)
        bad[order[:j + 1]] = True
        bad &= q0 < 0
    # q(s) = c0 + c1 s + c2 s^2 exactly: recover the coefficients from three points
    q1, _ = qc(np.ones(n))
    qh, _ = qc(np.full(n, 0.5))
    c0, c2 = q0, 2 * (q0 + q1) - 4 * qh
    c1 = q1 - q0 - c2
    s = np.zeros(n)
    with np.errstate(divide="ignore", invalid="ignore"):
        disc = np.sqrt(np.maximum(c1 * c1 - 4 * c2 * c0, 0.0))
        # smallest root in (0, 1] of c2 s^2 + c1 s + c0 (c0 < 0, q(1) >= 0); c2 <= 0 (concave)
        r = np.where(np.abs(c2) > 1e-300, (-c1 + disc) / (2 * c2), -c0 / c1)
        r2 = np.where(np.abs(c2) > 1e-300, (-c1 - disc) / (2 * c2), r)
    cand = np.where((r > 0) & (r <= 1), r, np.inf)
    cand = np.minimum(cand, np.where((r2 > 0) & (r2 <= 1), r2, np.inf))
    s[bad] = np.minimum(np.where(np.isfinite(cand[bad]), cand[bad] * (1 + 1e-9) + 1e-15, 1.0), 1.0)
    qs, _ = qc(s)
    fix = bad & (qs < 0)
    s[fix] = 1.0               # w = gam v: the QC holds with (gam - al)(be - gam) E v^2 >= 0
    return qc(s)[1]


def _repair_group(q: LayerQC, V: np.ndarray, Wo: np.ndarray) -> np.ndarray:
    """GroupSort / Householder groups: match the invariant part, then shrink the rest (see module doc)."""
    g, m, r = q.act.group_size, q.m, V.shape[1]
    e = q.e / np.linalg.norm(q.e)
    Vg, Wg = V.reshape(m, g, r), Wo.reshape(m, g, r)

    def split(A):  # (P A, (I - P) A) per group; P = e e' (GroupSort) or I - v v' (Householder)
        par = e[None, :, None] * np.einsum("g,mgr->mr", e, A)[:, None, :]
        return (par, A - par) if q.act.kind == "groupsort" else (A - par, par)

    Vp, _ = split(Vg)
    Wp, Wq = split(Wg)
    en = lambda A: (A * A).sum(axis=(1, 2))  # noqa: E731  per-group energy
    if "b" in q.names:                          # extended QC: P w = P v exactly
        Wp = Vp
    else:                                       # paper QC: E|P w|^2 = E|P v|^2
        ev, ew = en(Vp), en(Wp)
        ok = ew > 1e-300 * np.maximum(ev, 1e-300)
        alpha = np.where(ok, np.sqrt(ev / np.where(ok, ew, 1.0)), 0.0)
        Wp = np.where(ok[:, None, None], alpha[:, None, None] * Wp, Vp)
    room, eq = en(Vg) - en(Wp), en(Wq)
    c = np.where(eq > room, np.sqrt(np.maximum(room, 0.0) / np.where(eq > 0, eq, 1.0)) * (1 - 1e-12), 1.0)
    return (Wp + c[:, None, None] * Wq).reshape(m * g, r)


def repair(chain: Chain, Ys: list[np.ndarray]) -> tuple[float, float]:
    """(dual value <Z, B> / tr Z_00, worst relative constraint violation) for Z = Y Y', Y = (Y_0; ...; Y_l).

    Ys[k] (n_k x r) are the trajectory factors; they are repaired forward (Ys[0] is kept).
    """
    Y = [np.asarray(y, dtype=np.float64) for y in Ys]
    tr0 = float((Y[0] * Y[0]).sum())
    if not tr0 > 0:
        return 0.0, 0.0
    worst = 0.0
    for k, q in enumerate(chain.qcs):
        V, Wo = chain.weights[k] @ Y[k], chain.outputs(k, Y[k], Y[k + 1])
        Wo = _repair_slope(q, V, Wo) if q.act.kind == "slope" else _repair_group(q, V, Wo)
        Y[k + 1] = Wo if chain.skips[k] is None else Wo + chain.skips[k] @ Y[k]
        # recheck from the repaired moments: <Z, N_i> for every multiplier of the layer
        vals = q.grad(V.T, Wo.T, np.ones(V.shape[1]))
        scale = max(float((V * V).sum()), 1e-300)
        mask = np.concatenate([np.full(q.sizes[n], q.nonneg[n]) for n in q.names])
        viol = np.concatenate([np.maximum(-vals[mask], 0.0), np.abs(vals[~mask])]) / scale
        worst = max(worst, float(viol.max(initial=0.0)))
    out = chain.weights[-1] @ Y[-1]
    return float((out * out).sum()) / tr0, worst


def _qc_rows(q: LayerQC, V: np.ndarray, Wo: np.ndarray, mult: dict) -> tuple[list, list, list, list]:
    """Layer rows of <Z, N_i> = tr(Omega S_i) (S_i flattened, r x r) for directions V, Wo (n x r):
    (inequality rows, their multipliers, equality rows, their multipliers)."""
    r = V.shape[1]
    sym = lambda S: ((S + S.transpose(0, 2, 1)) / 2).reshape(len(S), r * r)  # noqa: E731
    if q.act.kind == "slope":
        A, B = Wo - q.act.alpha * V, q.act.beta * V - Wo
        ineq, ipen, eq, epen = [sym(np.einsum("ia,ib->iab", A, B))], [mult["lam"]], [], []
    else:
        g, m = q.act.group_size, q.m
        Vg, Wg = V.reshape(m, g, r), Wo.reshape(m, g, r)
        inner = lambda X, Y: np.einsum("mgr,mgs->mrs", X, Y)  # noqa: E731
        proj = lambda X: np.einsum("g,mgr->mr", q.e, X)  # noqa: E731

        def xEy(X, Y):  # per group X' E Y with E = cE I + sE e e'
            return q.cE * inner(X, Y) + q.sE * np.einsum("mr,ms->mrs", proj(X), proj(Y))

        ineq, ipen = [sym(inner(Vg, Vg) - inner(Wg, Wg))], [mult["lam"]]
        if "b" in q.names:
            eq, epen = [sym(xEy(Vg - Wg, Vg)), sym(xEy(Vg - Wg, Wg))], [mult["a"], mult["b"]]
        else:
            eq, epen = [sym(xEy(Vg, Vg) - xEy(Wg, Wg))], [mult["a"]]
    if q.tied:   # one multiplier per layer: only the layer's sum is constrained
        ineq, eq = [x.sum(axis=0, keepdims=True) for x in ineq], [x.sum(axis=0, keepdims=True) for x in eq]
        ipen, epen = [x[:1] for x in ipen], [x[:1] for x in epen]
    return ineq, ipen, eq, epen


def _mixing(chain: Chain, zs: list[np.ndarray], theta: np.ndarray, seconds: float = 10.0) -> np.ndarray | None:
    """A PSD weighting Omega (r x r, trace 1) of the trajectories zs that (nearly) meets every QC.

    At the optimum the dual Z lives on the top eigenspace of X: Z = Y Omega Y' with Y the trajectories of
    the top directions, and the right Omega is generally not diagonal. Each QC's dual constraint is linear
    in Omega, <Z, N_i> = tr(Omega S_i) (`_qc_rows`); we maximise the output energy tr(Omega O) minus
    3 |theta_i| times each violation (a violation costs about |theta_i| times the QC's scale to first
    order) with a small conic solve (Clarabel, stopped after `seconds`). Returns None if it fails.
    """
    import cvxpy as cp

    r = zs[0].shape[1]
    ineq, ipen, eq, epen = [], [], [], []
    for k, (q, mult) in enumerate(zip(chain.qcs, chain.unpack(theta))):
        V, Wo = chain.weights[k] @ zs[k], chain.outputs(k, zs[k], zs[k + 1])
        parts = _qc_rows(q, V, Wo, mult)
        for acc, part in zip((ineq, ipen, eq, epen), parts):
            acc.extend(part)
    out = chain.weights[-1] @ zs[-1]
    O = out.T @ out
    Om = cp.Variable((r, r), PSD=True)
    vec = cp.vec(Om, order="C")
    small = 1e-6 * float(np.trace(O))
    terms = cp.trace(O @ Om)
    cons = [cp.trace(Om) == 1]
    if ineq:
        Smat, pen = np.vstack(ineq), np.abs(np.concatenate(ipen))
        scale = max(float(np.abs(Smat).max()), 1e-300)
        viol = cp.Variable(len(pen), nonneg=True)
        cons.append(Smat @ vec / scale + viol >= 0)
        terms = terms - scale * (3.0 * pen + small / scale) @ viol
    if eq:
        Emat, pen = np.vstack(eq), np.abs(np.concatenate(epen))
        scale = max(float(np.abs(Emat).max()), 1e-300)
        terms = terms - scale * (3.0 * pen + small / scale) @ cp.abs(Emat @ vec / scale)
    prob = cp.Problem(cp.Maximize(terms), cons)
    try:
        with warnings.catch_warnings():   # an inaccurate Omega is fine: the repair makes it feasible
            warnings.simplefilter("ignore")
            if "CLARABEL" in cp.installed_solvers():
                prob.solve(solver="CLARABEL", time_limit=max(seconds, 0.1))
            else:
                prob.solve(solver="SCS", time_limit_secs=max(seconds, 0.1))
    except cp.error.SolverError:
        return None
    if Om.value is None:
        return None
    ev, U = np.linalg.eigh(0.5 * (Om.value + Om.value.T))
    return (U * np.sqrt(np.maximum(ev, 0.0))) @ U.T


def from_eigen(chain: Chain, theta: np.ndarray, temperatures=(0.0, 1e-5, 1e-3), sizes=(4, 16, 32),
               mixing: bool = True, budget: float = 2.5e5, time_budget: float = 10.0) -> tuple[float, float]:
    """Best repaired dual value over weightings of X's top eigen-directions at `theta`.

    Candidates: soft-max weights exp((lambda_i - lambda_max)/(tau lambda_max)) (tau = 0: the top direction
    alone) and, with `mixing`, the optimised PSD weighting of `_mixing` on the top r directions for each r
    in `sizes` (skipping those whose constraint matrix would exceed `budget` entries; all of them share
    `time_budget` seconds). The trajectory of each direction comes from the elimination at theta. Returns
    (rho lower bound, violation left after repair); (0, 0) if theta is infeasible.
    """
    try:
        res = chain.chain(chain.project(theta), check="chol")
    except NotPositiveDefinite:
        return 0.0, 0.0
    ev, U = np.linalg.eigh(res.X)
    top = max(float(ev[-1]), 1e-300)
    k = min(max(sizes), len(ev))
    ev, U = ev[-k:], U[:, -k:]
    zs = chain.directions(res, U)
    cands = []
    for tau in temperatures:
        w = np.zeros(k)
        if tau == 0:
            w[-1] = 1.0
        else:
            w = np.exp((ev - top) / (tau * top))
            w /= w.sum()
        keep = w > 1e-14
        cands.append([z[:, keep] * np.sqrt(w[keep]) for z in zs])
    if mixing:
        n_rows = sum(q.size for q in chain.qcs)
        t0 = time.monotonic()
        for r in sorted({min(s, k) for s in sizes}):
            left = time_budget - (time.monotonic() - t0)
            if n_rows * r * r > budget or left <= 0.5:
                continue   # the dense constraint matrix / the solve time of the Omega problem
            sub = [z[:, -r:] for z in zs]
            Om = _mixing(chain, sub, theta, left)
            if Om is not None:
                cands.append([z @ Om for z in sub])
    best = (0.0, 0.0)
    for Ys in cands:
        val = repair(chain, Ys)
        if val[0] > best[0]:
            best = val
    return best


def from_matrix(chain: Chain, Z: np.ndarray) -> tuple[float, float]:
    """Repaired dual value for a full dual matrix Z of the LMI (e.g. a conic solver's dual variable)."""
    ev, U = np.linalg.eigh(0.5 * (Z + Z.T))
    Y = U * np.sqrt(np.maximum(ev, 0.0))
    dims = [chain.weights[0].shape[1]] + [W.shape[1] for W in chain.weights[1:]]
    cuts = np.cumsum([0] + dims)
    return repair(chain, [Y[cuts[k]:cuts[k + 1]] for k in range(len(dims))])


def from_blocks(chain: Chain, factors: list[np.ndarray]) -> tuple[float, float]:
    """Repaired dual value for a block-diagonal Z = blockdiag(L_k L_k') (the barrier method's F_k^{-1}/t)."""
    r = sum(f.shape[1] for f in factors)
    Ys, col = [], 0
    for f in factors:
        Y = np.zeros((f.shape[0], r))
        Y[:, col:col + f.shape[1]] = f
        Ys.append(Y)
        col += f.shape[1]
    return repair(chain, Ys)

"""A structure-exploiting primal-dual interior-point method for the convex two-layer ReLU program.

The program over m = 2P groups u_j (the v_i and w_i), with epigraph variables t_j,

    minimise  ½‖Σ_j F_j u_j − y‖² + β Σ_j t_j
    s.t.      A_j u_j ≥ 0  (n linear cone constraints, A_j = (2D_j − I) X),   (t_j, u_j) ∈ SOC^{d+1},

with F_j = ±D_j X, is solved by a Mehrotra predictor-corrector method with Nesterov-Todd scaling (the
CVXOPT `coneqp` scheme, infeasible start). Its Newton matrix is

    K = blockdiag(B_j) + F̂ᵀF̂,   B_j = H_j^SOC + [0 ⊕ Xᵀ diag(z_j/s_j) X]   ((d+1) × (d+1)),

because the cone signs square to one (A_jᵀ diag(w) A_j = Xᵀ diag(w) X). The squared loss couples the
groups only through the rank-n term F̂ᵀF̂, so by Woodbury each Newton step needs the m small block
inverses and one n × n Cholesky of I + F̂ B⁻¹ F̂ᵀ = I + Y Yᵀ (Y = [D_j X L_j]_j, L_j L_jᵀ the u-block of
B_j⁻¹): O(m n d²) per iteration, no m d × m d matrix ever formed. Two steps of iterative refinement
on K keep the solves accurate late in the run.

The LP multipliers z_j of A_j u_j ≥ 0 are exactly the cone multipliers μ_j of the dual certificate
(‖F_jᵀλ + A_jᵀμ_j‖ ≤ β), so the rigorous certificate needs no NNLS at the solution.
"""
from __future__ import annotations

import sys
import time

import numpy as np
import scipy.linalg as sla
from scipy.linalg import lapack

from verify.train.convex.problem import ConvexProblem


class _Groups:
    """The data of the m = 2P groups (v columns first, then w): gates E, cone signs S, output signs."""

    def __init__(self, prob: ConvexProblem, cols: np.ndarray | None = None):
        D = prob.D if cols is None else prob.D[:, cols]
        self.X, self.y, self.beta = prob.X, prob.y, prob.beta
        self.n, self.d = prob.X.shape
        P = D.shape[1]
        self.m = 2 * P
        self.E = np.concatenate([D, D], axis=1).astype(float)  # (n, m)
        self.S = 2.0 * self.E - 1.0
        self.sig = np.concatenate([np.ones(P), -np.ones(P)])
        d = self.d
        self.XXt = np.ascontiguousarray((self.X[:, :, None] * self.X[:, None, :]).reshape(self.n, d * d).T)

    def F(self, U: np.ndarray) -> np.ndarray:
        """ŷ = Σ_j σ_j D_j X u_j for U of shape (m, d)."""
        return ((self.X @ U.T) * self.E) @ self.sig

    def Ft(self, r: np.ndarray) -> np.ndarray:
        """F_jᵀ r for all groups, (m, d)."""
        return self.sig[:, None] * ((self.E * r[:, None]).T @ self.X)

    def A(self, U: np.ndarray) -> np.ndarray:
        """A_j u_j for all groups, (n, m)."""
        return self.S * (self.X @ U.T)

    def At(self, Z: np.ndarray) -> np.ndarray:
        """A_jᵀ z_j for all groups (z_j the columns of Z (n, m)), (m, d)."""
        return (self.S * Z).T @ self.X


# ------------------------------------------------------------------------ second-order cone helpers
def _soc_scaling(s: np.ndarray, z: np.ndarray):
    """NT scaling of SOC pairs (rows of s, z (m, k)): W = b(2vvᵀ − J) with W z = W⁻¹ s = λ; returns
    (b, v, wbar, λ) where W² = b²(2 w̄w̄ᵀ − J)."""
    a = np.sqrt(np.maximum(s[:, 0] ** 2 - np.sum(s[:, 1:] ** 2, axis=1), 1e-300))
    c = np.sqrt(np.maximum(z[:, 0] ** 2 - np.sum(z[:, 1:] ** 2, axis=1), 1e-300))
    b = np.sqrt(a / c)
    sb, zb = s / a[:, None], z / c[:, None]
    g = np.sqrt(np.maximum((1.0 + np.sum(sb * zb, axis=1)) / 2.0, 1e-300))
    wbar = sb.copy()
    wbar[:, 0] += zb[:, 0]
    wbar[:, 1:] -= zb[:, 1:]
    wbar /= (2.0 * g)[:, None]
    v = wbar.copy()
    v[:, 0] += 1.0
    v /= np.sqrt(2.0 * (wbar[:, 0] + 1.0))[:, None]
    lam = _soc_W(b, v, z)
    return b, v, wbar, lam


def _jv(x: np.ndarray) -> np.ndarray:
    out = -x
    out[:, 0] = x[:, 0]
    return out


def _soc_W(b, v, x):
    """W x = b (2 v (vᵀx) − J x), rowwise."""
    return b[:, None] * (2.0 * v * np.sum(v * x, axis=1)[:, None] - _jv(x))


def _soc_Winv(b, v, x):
    """W⁻¹ x = (1/b)(2 Jv (Jv)ᵀx − J x)."""
    Jv = _jv(v)
    return (2.0 * Jv * np.sum(Jv * x, axis=1)[:, None] - _jv(x)) / b[:, None]


def _soc_H(b, wbar):
    """W⁻² = (1/b²)(2 Jw̄ (Jw̄)ᵀ − J), (m, k, k)."""
    Jw = _jv(wbar)
    k = wbar.shape[1]
    J = np.eye(k)
    J[1:, 1:] *= -1.0
    return (2.0 * Jw[:, :, None] * Jw[:, None, :] - J[None]) / (b ** 2)[:, None, None]


def _soc_prod(u, v):
    """Jordan product u ∘ v = (uᵀv, u0 v1 + v0 u1), rowwise."""
    out = u[:, :1] * v + v[:, :1] * u
    out[:, 0] = np.sum(u * v, axis=1)
    return out


def _soc_div(lam, r):
    """x with λ ∘ x = r, rowwise."""
    det = lam[:, 0] ** 2 - np.sum(lam[:, 1:] ** 2, axis=1)
    x0 = (lam[:, 0] * r[:, 0] - np.sum(lam[:, 1:] * r[:, 1:], axis=1)) / det
    out = np.empty_like(r)
    out[:, 0] = x0
    out[:, 1:] = (r[:, 1:] - x0[:, None] * lam[:, 1:]) / lam[:, :1]
    return out


def _soc_maxstep(x: np.ndarray, dx: np.ndarray) -> float:
    """Largest α with x + α dx in the SOC for every row (x strictly inside)."""
    a = dx[:, 0] ** 2 - np.sum(dx[:, 1:] ** 2, axis=1)
    bb = x[:, 0] * dx[:, 0] - np.sum(x[:, 1:] * dx[:, 1:], axis=1)
    c = np.maximum(x[:, 0] ** 2 - np.sum(x[:, 1:] ** 2, axis=1), 0.0)
    disc = np.maximum(bb * bb - a * c, 0.0)
    sq = np.sqrt(disc)
    q = -(bb + np.where(bb >= 0, sq, -sq))
    with np.errstate(divide="ignore", invalid="ignore"):
        r1 = np.where(a != 0, q / a, np.inf)
        r2 = np.where(q != 0, c / q, np.inf)
    roots = np.stack([r1, r2])
    roots = np.where(roots > 0, roots, np.inf)  # the first root ahead is where the ray leaves the cone
    alpha = roots.min(initial=np.inf)
    return float(alpha)


def _lp_maxstep(x: np.ndarray, dx: np.ndarray) -> float:
    """Largest α with x + α dx ≥ 0 (x > 0): 1 / max(−dx/x)."""
    worst = float(np.max(-dx / x))
    return np.inf if worst <= 0 else 1.0 / worst


# ------------------------------------------------------------------------------------ Newton system
class _KKT:
    """Factorisation of K = blockdiag(B_j) + F̂ᵀF̂ for one scaling (HL = z/s of the LP cones, HQ the SOC
    blocks W⁻²): batched Cholesky B_j = L_j L_jᵀ, and the Cholesky of I + F̂B⁻¹F̂ᵀ. The v- and w-group of
    a pattern share its gate D_i, so F̂B⁻¹F̂ᵀ = Σ_i D_i X (C_vi + C_wi) Xᵀ D_i (C the u-blocks of B⁻¹),
    one n × d factor per pattern: R_iᵀR_i = C_vi + C_wi from a QR of the stacked u-columns of L⁻¹."""

    def __init__(self, g: _Groups, HL: np.ndarray, HQ: np.ndarray):
        m, d, n = g.m, g.d, g.n
        P = m // 2
        B = HQ.copy()
        B[:, 1:, 1:] += (g.XXt @ HL).T.reshape(m, d, d)
        self.B = B
        self.g = g
        L = _batched_cholesky(B)
        Linv = _batched_tril_inv(L)  # B⁻¹ = Linvᵀ Linv
        self.Linv = Linv
        Lu = Linv[:, :, 1:]  # (m, k, d): (B⁻¹)_uu = Luᵀ Lu
        R = np.linalg.qr(np.concatenate([Lu[:P], Lu[P:]], axis=1), mode="r")  # (P, d, d)
        Y = (g.X @ R.transpose(2, 0, 1).reshape(d, P * d)).reshape(n, P, d)
        Y *= g.E[:, :P, None]
        Y = Y.reshape(n, P * d)
        M = Y @ Y.T
        M[np.diag_indices_from(M)] += 1.0
        self.Mc = sla.cho_factor(M)

    def _Binv(self, R: np.ndarray) -> np.ndarray:
        t = np.einsum("mij,mj->mi", self.Linv, R)
        return np.einsum("mji,mj->mi", self.Linv, t)

    def _K(self, R: np.ndarray) -> np.ndarray:
        out = np.einsum("mij,mj->mi", self.B, R)
        out[:, 1:] += self.g.Ft(self.g.F(R[:, 1:]))
        return out

    def solve(self, R: np.ndarray, refine: int = 1) -> np.ndarray:
        """K⁻¹ R for R of shape (m, d+1) (column 0: t, columns 1:: u)."""
        g = self.g

        def once(R):
            Q = self._Binv(R)
            t = sla.cho_solve(self.Mc, g.F(Q[:, 1:]))
            H = np.zeros_like(R)
            H[:, 1:] = g.Ft(t)
            return Q - self._Binv(H)

        x = once(R)
        for _ in range(refine):
            x += once(R - self._K(x))
        return x


def _batched_tril_inv(L: np.ndarray) -> np.ndarray:
    """Inverses of a stack of lower-triangular matrices (LAPACK trtri per block: about twice as fast as
    numpy's batched LU inverse at these sizes)."""
    out = np.empty_like(L)
    for i in range(L.shape[0]):
        out[i] = lapack.dtrtri(L[i], lower=1)[0]
    return out


def _batched_cholesky(B: np.ndarray) -> np.ndarray:
    """Cholesky factors of a stack of SPD matrices; blocks that are numerically semidefinite get a
    diagonal shift of 1e-13·max diag (iterative refinement on K removes its effect)."""
    try:
        return np.linalg.cholesky(B)
    except np.linalg.LinAlgError:
        diag = np.einsum("mii->mi", B).max(axis=1)
        k = B.shape[1]
        for scale in (1e-13, 1e-10, 1e-7):
            try:
                return np.linalg.cholesky(B + (scale * diag)[:, None, None] * np.eye(k))
            except np.linalg.LinAlgError:
                continue
        raise


class _Step:
    """One iteration's NT scaling, Newton matrix and directions at the point (x, s, z) with residuals
    r_x (stationarity) and r_z = G x + s (cone equations)."""

    def __init__(self, g: _Groups, x, sL, sQ, zL, zQ, rx, rzL, rzQ):
        self.g, self.x, self.sL, self.sQ, self.zL, self.zQ = g, x, sL, sQ, zL, zQ
        self.rx, self.rzL, self.rzQ = rx, rzL, rzQ
        self.WL = np.sqrt(sL / zL)
        self.lamL = np.sqrt(sL * zL)
        self.bq, self.vq, wbar, self.lamQ = _soc_scaling(sQ, zQ)
        self.HL = zL / sL
        self.HQ = _soc_H(self.bq, wbar)
        self.kkt = _KKT(g, self.HL, self.HQ)

    def direction(self, rsL: np.ndarray, rsQ: np.ndarray):
        """Newton direction (Δx, Δs_L, Δs_Q, Δz_L, Δz_Q) for complementarity right-hand sides rs
        (λ ∘ (WΔz + W⁻¹Δs) = rs)."""
        g = self.g
        xiL = rsL / self.lamL
        xiQ = _soc_div(self.lamQ, rsQ)
        wiL = xiL / self.WL
        wiQ = _soc_Winv(self.bq, self.vq, xiQ)
        # v = W⁻²r_z + W⁻¹ξ ;  K Δx = −r_x − Gᵀ v  (Gᵀ: u-part −A_jᵀ v_L − v_Q,u ; t-part −v_Q,t)
        vL = self.rzL * self.HL + wiL
        vQ = np.einsum("mij,mj->mi", self.HQ, self.rzQ) + wiQ
        rhs = -self.rx.copy()
        rhs[:, 1:] += g.At(vL) + vQ[:, 1:]
        rhs[:, 0] += vQ[:, 0]
        dx = self.kkt.solve(rhs)
        # Δz = W⁻²(GΔx + r_z) + W⁻¹ξ ; Δs = −r_z − GΔx, with GΔx = (−A Δu, −Δx)
        GdL, GdQ = -g.A(dx[:, 1:]), -dx
        dzL = self.HL * (GdL + self.rzL) + wiL
        dzQ = np.einsum("mij,mj->mi", self.HQ, GdQ + self.rzQ) + wiQ
        return dx, -self.rzL - GdL, -self.rzQ - GdQ, dzL, dzQ

    def maxstep(self, d) -> float:
        """Largest step along d = (Δx, Δs_L, Δs_Q, Δz_L, Δz_Q) keeping s and z in their cones."""
        return min(_lp_maxstep(self.sL, d[1]), _lp_maxstep(self.zL, d[3]),
                   _soc_maxstep(self.sQ, d[2]), _soc_maxstep(self.zQ, d[4]))

    def mehrotra(self, mu: float, correctors: int) -> tuple[float, tuple]:
        """Predictor, Mehrotra corrector and up to `correctors` Gondzio centrality correctors on the LP
        cones; returns (step length ≤ 1 with fraction-to-boundary 0.99, direction)."""
        lamL, lamQ = self.lamL, self.lamQ
        eQ = np.zeros_like(lamQ)
        eQ[:, 0] = 1.0
        aff = self.direction(-lamL * lamL, -_soc_prod(lamQ, lamQ))
        sigma = (1.0 - min(1.0, self.maxstep(aff))) ** 3
        # second-order term (W⁻¹Δs_a) ∘ (WΔz_a)
        cL = aff[1] * aff[3]
        cQ = _soc_prod(_soc_Winv(self.bq, self.vq, aff[2]), _soc_W(self.bq, self.vq, aff[4]))
        rsL = -lamL * lamL + sigma * mu - cL
        rsQ = -_soc_prod(lamQ, lamQ) + sigma * mu * eQ - cQ
        d = self.direction(rsL, rsQ)
        a_max = self.maxstep(d)
        # aim at a longer step α̃ and pull the trial point's complementarity products into [0.1, 10]·σμ
        mt = sigma * mu
        for _ in range(correctors):
            if a_max >= 1.0:
                break
            a_t = min(1.0, 1.5 * a_max + 0.1)
            v = (self.sL + a_t * d[1]) * (self.zL + a_t * d[3])
            tcorr = np.maximum(np.clip(v, 0.1 * mt, 10.0 * mt) - v, -10.0 * mt)
            cand = self.direction(rsL + tcorr, rsQ)
            a_new = self.maxstep(cand)
            if a_new < a_max + 0.05 * (a_t - a_max):
                break
            d, a_max, rsL = cand, a_new, rsL + tcorr
        return min(1.0, 0.99 * a_max), d


def solve_ipm(prob: ConvexProblem, tol: float = 1e-8, max_iters: int = 80, cols: np.ndarray | None = None,
              verbose: int = 0, correctors: int = 2) -> dict:
    """Solve the program (optionally restricted to the pattern columns `cols`) by the primal-dual IPM.

    Stops when the relative duality gap sᵀz/|objective| and the relative residuals are below `tol`.
    Returns V, W (d, P) on the full pattern set (zeros outside `cols`), the LP multipliers as an (n, 2P)
    array `mu` (v columns, then w columns), iterations, and the IPM's own gap."""
    t0 = time.perf_counter()
    g = _Groups(prob, cols)
    n, d, m, beta, y = g.n, g.d, g.m, g.beta, g.y
    k = d + 1
    nu = n * m + m  # barrier degree
    # start (infeasible): x = 0, s = e, z_L = 0.1β, z_Q = β·e (its t-row of the dual residual, β − z_Q0,
    # is then zero). Measured: fewer iterations than CVXOPT's W = I start and than z = 0.1β·e throughout
    x = np.zeros((m, k))
    sL, zL = np.ones((n, m)), np.full((n, m), 0.1 * beta)
    sQ, zQ = np.zeros((m, k)), np.zeros((m, k))
    sQ[:, 0], zQ[:, 0] = 1.0, beta
    q_norm = max(1.0, float(np.sqrt(np.sum(g.Ft(y) ** 2) + m * beta ** 2)))
    it = 0
    status = "max_iters"
    hist = []
    for it in range(1, max_iters + 1):
        U, t = x[:, 1:], x[:, 0]
        res = g.F(U) - y
        pobj = 0.5 * float(res @ res) + beta * float(t.sum())
        rx = np.empty((m, k))
        rx[:, 1:] = g.Ft(res) - g.At(zL) - zQ[:, 1:]
        rx[:, 0] = beta - zQ[:, 0]
        rzL = sL - g.A(U)  # G x + s − h
        rzQ = sQ - x
        gap = float(np.sum(sL * zL) + np.sum(sQ * zQ))
        mu = gap / nu
        pres = float(np.sqrt(np.sum(rzL ** 2) + np.sum(rzQ ** 2))) / max(1.0, float(np.sqrt(np.sum(x ** 2))))
        dres = float(np.sqrt(np.sum(rx ** 2))) / q_norm
        relgap = gap / max(abs(pobj), 1e-300)
        hist.append((pobj, relgap, pres, dres))
        if verbose:
            print(f"ipm {it:3d} {time.perf_counter() - t0:.2f}s objective {pobj:.10g} rel. gap {relgap:.2e} "
                  f"primal res. {pres:.2e} dual res. {dres:.2e}", file=sys.stderr)
        if relgap < tol and pres < tol and dres < tol:
            status = "optimal"
            break
        if len(hist) > 3 and relgap < 100 * tol and relgap > 0.5 * hist[-4][1]:
            status = "stalled"  # round-off limits the last digits: no halving of the gap in 3 steps
            break
        try:
            step = _Step(g, x, sL, sQ, zL, zQ, rx, rzL, rzQ)
            alpha, (dx, dsL, dsQ, dzL, dzQ) = step.mehrotra(mu, correctors)
        except (np.linalg.LinAlgError, ValueError):
            status = "numerical"
            break
        if not np.isfinite(alpha) or alpha < 1e-4:
            status = "stalled"
            break
        x = x + alpha * dx
        sL = sL + alpha * dsL
        sQ = sQ + alpha * dsQ
        zL = zL + alpha * dzL
        zQ = zQ + alpha * dzQ
    P = prob.P
    idx = np.arange(P) if cols is None else np.asarray(cols)
    V = np.zeros((d, P))
    W = np.zeros((d, P))
    h = m // 2
    V[:, idx] = x[:h, 1:].T
    W[:, idx] = x[h:, 1:].T
    mu_full = np.zeros((n, 2 * P))
    mu_full[:, idx] = zL[:, :h]
    mu_full[:, P + idx] = zL[:, h:]
    return {"V": V, "W": W, "mu": mu_full, "iters": it, "status": status, "history": hist,
            "seconds": time.perf_counter() - t0}


def solve_interior(prob: ConvexProblem, tol: float = 1e-7, working_set: int = 300, add: int = 200,
                   max_rounds: int = 20, verbose: int = 0, init_cols: np.ndarray | None = None,
                   screen_iters: int = 100, drop_idle: bool = True, fista_iters: int = 100) -> dict:
    """The program solved to a certified optimum: the IPM on a working set of patterns (all of them when
    P ≤ `working_set`), every other pattern priced with the dual constraint, violators added, until none
    is left; then the rigorous certificate over all patterns. Returns V, W, certificate and statistics.

    The first working set is `init_cols` if given, else (P > `working_set`) the ⅔·working_set patterns
    that `screen_iters` ADMM iterations make most active (largest ‖z_v‖ + ‖z_w‖). Pricing reuses multipliers: a pattern priced by NNLS at an earlier λ keeps its μ, and
    ‖F_iᵀλ + A_iᵀμ‖ (cheap, batched) certifies it again unless it exceeds β; the rest get `fista_iters`
    batched projected-gradient steps on μ first, and only those still above β get an NNLS.
    With `drop_idle`, patterns of the working set that are zero at its optimum leave it when new ones
    enter, so each round's IPM stays near the support's size."""
    from verify.train.convex.cvx import prune

    t0 = time.perf_counter()
    P = prob.P
    if init_cols is not None:
        cols = np.unique(np.asarray(init_cols))
    elif P <= working_set:
        cols = np.arange(P)
    else:  # screening: the patterns a short ADMM run makes most active
        from verify.train.convex.admm import admm

        Z = admm(prob, max_iters=screen_iters, tol=0.0)["Z"]
        score = np.linalg.norm(Z[:, :P], axis=0) + np.linalg.norm(Z[:, P:], axis=0)
        cols = np.argsort(-score)[:working_set // 3 * 2]
        cols = np.sort(cols[score[cols] > 0]) if np.any(score[cols] > 0) else np.sort(cols)
    store = np.zeros((prob.n, 2 * P))  # cone multipliers known for each group
    iters, rounds = 0, 0
    for rounds in range(1, max_rounds + 1):
        r = solve_ipm(prob, tol=tol, cols=cols if len(cols) < P else None, verbose=max(verbose - 1, 0))
        iters += r["iters"]
        V, W, mu = r["V"], r["W"], r["mu"]
        lam = prob.y - prob.predict(V, W)
        inside = np.zeros(P, dtype=bool)
        inside[cols] = True
        store[:, np.concatenate([cols, P + cols])] = mu[:, np.concatenate([cols, P + cols])]
        out = np.flatnonzero(~inside)
        if verbose:
            print(f"interior round {rounds}: {len(cols)} patterns, objective {prob.objective(V, W):.10g}, "
                  f"{r['iters']} iterations ({r['status']}), {time.perf_counter() - t0:.2f}s", file=sys.stderr)
        if out.size == 0:
            break
        rv, rw = prob.price(lam, idx=out, mu=store, store=store, fista_iters=fista_iters)
        score = np.maximum(rv, rw)
        viol = np.flatnonzero(score > prob.beta * (1 + 1e-7))  # as `price` certifies with multipliers
        if viol.size == 0:
            break
        new = out[viol[np.argsort(-score[viol])][:add]]
        # patterns of the working set that its optimum leaves at zero leave it (priced with all others
        # next round, they come back if the new optimum wants them)
        nrm = np.linalg.norm(V[:, cols], axis=0) + np.linalg.norm(W[:, cols], axis=0)
        idle = nrm <= 1e-6 * nrm.max(initial=0.0) if drop_idle else np.zeros(len(cols), dtype=bool)
        cols = np.sort(np.concatenate([cols[~idle], new]))
    Vp, Wp = prob.project_to_cones(*prune(prob, V, W))
    cert = prob.certificate(Vp, Wp, duals=[lam], multipliers=[store], residual_dual=False)
    return {"V": Vp, "W": Wp, "certificate": cert, "iters": iters, "rounds": rounds, "working_set": len(cols),
            "status": r["status"], "seconds": time.perf_counter() - t0}

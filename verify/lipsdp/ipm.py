"""A structure-exploiting barrier (interior-point) solver for LipSDP-NSR on GroupSort / Householder nets.

With the seed paper's multipliers T_k = lam I + a E per group (no cross term, R = 0) the LipSDP matrix
inequality falls apart into one small LMI per layer, chained only through the shared multipliers:

    F_0 = rho I - W_0' T_0 W_0 >= 0,   F_k = T_{k-1} - W_k' T_k W_k >= 0,   F_l = T_{l-1} - W_l' W_l >= 0.

Its optimum lies on the boundary of every F_k (each is singular there), where the first-order method of
`verify.lipsdp.fast` crawls; an interior-point method does not. We minimise t * rho - sum_k log det F_k
by damped Newton steps for increasing t (the classical barrier method). Every T_k is a sum of rank-one
terms, T_k = X_k diag(gamma_k) X_k' with X_k = [I, G_k'] and gamma_k linear in the multipliers, so the
Hessian entries are squared bilinear forms  (x_p' F^{-1} x_q)^2  of these generators. A multiplier of
layer k enters only F_k and F_{k+1}, so the Hessian is block tridiagonal over layers and one Newton step
costs O(sum n_k^3) (block Cholesky), not a dense solve on all multipliers.

On the central path Z_k = F_k^{-1} / t is dual feasible and the duality gap is sum(n_k) / t; off it, the
Newton step's correction of that Z meets the dual's equality constraints exactly. The caller checks and
repairs this dual point (`verify.lipsdp.dual`) and recertifies the multipliers in float64
(`verify.lipsdp.chain`).
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import scipy.linalg as sla

from verify.lipsdp.chain import Chain
from verify.lipsdp.qc import linear_maps


@dataclass
class IpmResult:
    theta: np.ndarray
    value: float            # rho of the final iterate (feasible, not yet recertified)
    gap: float              # sum(n_k) / t: the barrier's duality gap at the final t
    factors: list           # Z_k = L_k L_k': the dual point of the last Newton step (block diagonal)
    iterations: int
    seconds: float
    history: list


def supports(chain: Chain) -> bool:
    """True when every layer's QC has no cross term (R = 0: GroupSort / Householder with the paper's T) and
    no layer is residual (a skip couples neighbouring blocks)."""
    return all(q.act.kind != "slope" and "b" not in q.names for q in chain.qcs) and \
        all(A is None for A in chain.skips)


class _Problem:
    """The chained LMIs F_0..F_l as functions of x = (rho, theta)."""

    def __init__(self, chain: Chain):
        self.chain = chain
        self.Ws, self.l = chain.weights, chain.l
        self.Ls, self.Xs, self.Bs = [], [], []
        for k, q in enumerate(chain.qcs):
            (Pd, Pc) = linear_maps(q)["P"]
            self.Ls.append(np.vstack([Pd, Pc]))                   # gamma_k = L_k theta_k
            self.Xs.append(np.hstack([np.eye(q.n), q.G.T]))       # T_k = X_k diag(gamma_k) X_k'
            self.Bs.append(self.Ws[k].T @ self.Xs[-1])            # W_k' T_k W_k = B_k diag(gamma_k) B_k'
        self.WtW = self.Ws[-1].T @ self.Ws[-1]
        self.offsets = chain.offsets
        self.dims = [W.shape[1] for W in self.Ws]                  # sizes of F_0..F_l
        self.m = int(sum(self.dims))

    def gammas(self, theta: np.ndarray) -> list[np.ndarray]:
        return [L @ theta[self.offsets[k]:self.offsets[k + 1]] for k, L in enumerate(self.Ls)]

    def lmis(self, rho: float, theta: np.ndarray) -> list[np.ndarray]:
        gs = self.gammas(theta)
        T = [(X * g) @ X.T for X, g in zip(self.Xs, gs)]
        out = [rho * np.eye(self.dims[0]) - (self.Bs[0] * gs[0]) @ self.Bs[0].T]
        for k in range(1, self.l):
            out.append(T[k - 1] - (self.Bs[k] * gs[k]) @ self.Bs[k].T)
        out.append(T[self.l - 1] - self.WtW)
        return out

    def factor(self, rho: float, theta: np.ndarray):
        """Cholesky factors of all F_k, or None if one is not positive definite."""
        chols = []
        for F in self.lmis(rho, theta):
            try:
                chols.append(sla.cho_factor(0.5 * (F + F.T), lower=True, check_finite=False))
            except np.linalg.LinAlgError:
                return None
        return chols

    @staticmethod
    def logdet(chols) -> float:
        return float(sum(2.0 * np.log(np.diag(c[0])).sum() for c in chols))

    def newton_system(self, t: float, chols):
        """Gradient and block-tridiagonal Hessian (blocks over [rho, theta_0], theta_1, ...)."""
        l = self.l
        Finv = [sla.cho_solve(c, np.eye(c[0].shape[0]), check_finite=False) for c in chols]
        gg, Hd, Ho = [], [], []      # per layer: gradient in gamma, diagonal block, block with layer k+1
        for k in range(l):
            X, B = self.Xs[k], self.Bs[k]
            Ka = X.T @ Finv[k + 1] @ X                 # T_k enters F_{k+1} with +
            FB = Finv[k] @ B
            Kb = B.T @ FB                              # ... and F_k with -
            gg.append(-np.diag(Ka) + np.diag(Kb))
            Hd.append(Ka * Ka + Kb * Kb)
            if k + 1 < l:
                Kc = X.T @ Finv[k + 1] @ self.Bs[k + 1]
                Ho.append(-(Kc * Kc))                  # (gamma_k, gamma_{k+1}), from F_{k+1}
        F0 = Finv[0]
        g_rho = t - np.trace(F0)
        h_rr = float((F0 * F0).sum())
        h_rg = -((F0 @ self.Bs[0]) ** 2).sum(axis=0)   # generators I (+) and B_0 (-) of F_0
        g = [np.concatenate([[g_rho], self.Ls[0].T @ gg[0]])] + [L.T @ v for L, v in zip(self.Ls[1:], gg[1:])]
        D = [L.T @ H @ L for L, H in zip(self.Ls, Hd)]
        p0 = D[0].shape[0]
        D0 = np.empty((p0 + 1, p0 + 1))
        D0[0, 0], D0[0, 1:], D0[1:, 0], D0[1:, 1:] = h_rr, self.Ls[0].T @ h_rg, self.Ls[0].T @ h_rg, D[0]
        D[0] = D0
        O = [self.Ls[k + 1].T @ Ho[k].T @ self.Ls[k] for k in range(l - 1)]   # (k+1, k) blocks
        if O:
            O[0] = np.hstack([np.zeros((O[0].shape[0], 1)), O[0]])
        return g, D, O


def _block_tridiag_solve(D: list, O: list, g: list) -> list:
    """Solve H x = g for symmetric positive definite block-tridiagonal H (diagonal D_k, H_{k+1,k} = O_k)."""
    n = len(D)
    Ls, Ms = [None] * n, [None] * n
    S = D[0]
    for k in range(n):
        ridge = 1e-14 * max(float(np.abs(np.diag(S)).max()), 1e-300)
        Ls[k] = np.linalg.cholesky(S + ridge * np.eye(S.shape[0]))
        if k + 1 < n:
            Ms[k] = sla.solve_triangular(Ls[k], O[k].T, lower=True, check_finite=False).T   # O_k L_k^-T
            S = D[k + 1] - Ms[k] @ Ms[k].T
    y = [None] * n
    for k in range(n):
        r = g[k] - (Ms[k - 1] @ y[k - 1] if k else 0.0)
        y[k] = sla.solve_triangular(Ls[k], r, lower=True, check_finite=False)
    x = [None] * n
    for k in range(n - 1, -1, -1):
        r = y[k] - (Ms[k].T @ x[k + 1] if k + 1 < n else 0.0)
        x[k] = sla.solve_triangular(Ls[k], r, lower=True, trans="T", check_finite=False)
    return x


def solve_ipm(chain: Chain, time_limit: float = 600.0, rel_gap: float = 1e-7, mu: float = 8.0,
              max_newton: int = 400, margin: float = 1.1) -> IpmResult:
    """Barrier method for the NSR LMIs of `chain` (requires `supports(chain)`).

    Stops when the barrier gap sum(n_k)/t is below rel_gap * rho (or at the time limit; every iterate is
    strictly feasible). `mu` is the factor by which t grows after each centring. The start is the chain's
    reference point with a small `margin` (strictly feasible for any margin > 1; a small one starts closer
    to the optimum: on 18fc_128, 160 Newton steps at 1.1 against 282 at 2).
    """
    if not supports(chain):
        raise ValueError("the barrier solver needs R = 0 in every layer (lipsdp-nsr on GroupSort/Householder)")
    t0 = time.monotonic()
    prob = _Problem(chain)
    theta = chain.reference(margin=margin)
    F0 = prob.lmis(0.0, theta)[0]
    rho = 2.0 * max(float(np.linalg.eigvalsh(-F0)[-1]), 1e-12)
    chols = prob.factor(rho, theta)
    if chols is None:
        raise RuntimeError("reference multipliers are not strictly feasible")
    t = prob.m / rho
    history, newton = [], 0
    while newton < max_newton and time.monotonic() - t0 < time_limit:
        f = t * rho - prob.logdet(chols)
        g, D, O = prob.newton_system(t, chols)
        dx = _block_tridiag_solve(D, O, [-v for v in g])
        dec = -sum(float(a @ b) for a, b in zip(g, dx))
        newton += 1
        if dec / 2 < 1e-6:          # centred: grow t, or stop once the gap is small enough
            history.append((time.monotonic() - t0, rho, prob.m / t))
            if prob.m / t <= rel_gap * rho:
                break
            t *= mu
            continue
        d_rho, d_th = dx[0][0], np.concatenate([dx[0][1:]] + dx[1:])
        step = 1.0
        while step > 1e-12:
            r_new, th_new = rho + step * d_rho, theta + step * d_th
            c_new = prob.factor(r_new, th_new)
            if c_new is not None and t * r_new - prob.logdet(c_new) <= f - 0.25 * step * dec:
                break
            step *= 0.5
        else:
            break                   # no progress possible at this precision
        rho, theta, chols = r_new, th_new, c_new
    return IpmResult(theta, float(rho), prob.m / t, _dual_factors(prob, t, rho, theta, chols), newton,
                     time.monotonic() - t0, history)


def _dual_factors(prob: _Problem, t: float, rho: float, theta: np.ndarray, chols) -> list[np.ndarray]:
    """Factors of the dual point Z_k = (1/t) F_k^-1 (F_k - dF_k) F_k^-1 at the last iterate.

    dF is the change of F along the Newton step dx: the Newton equations say exactly that this Z meets the
    dual's equality constraints (Z = F^-1/t only does so on the central path itself), and it is PSD when
    the step is short (Newton decrement < 1). Tiny negative eigenvalues are dropped; `verify.lipsdp.dual`
    repairs what that leaves.
    """
    g, D, O = prob.newton_system(t, chols)
    dx = _block_tridiag_solve(D, O, [-v for v in g])
    d_rho, d_th = dx[0][0], np.concatenate([dx[0][1:]] + dx[1:])
    F_now, F_step = prob.lmis(rho, theta), prob.lmis(rho + d_rho, theta + d_th)
    factors = []
    for c, F, Fs in zip(chols, F_now, F_step):
        Finv = sla.cho_solve(c, np.eye(c[0].shape[0]), check_finite=False)
        Z = Finv @ (2 * F - Fs) @ Finv / t
        ev, U = np.linalg.eigh(0.5 * (Z + Z.T))
        factors.append(U * np.sqrt(np.maximum(ev, 0.0)))
    return factors

"""The convex program of a two-layer ReLU network (Pilanci & Ergen 2020) and its optimality certificate.

    minimise  ½‖Σ_i D_i X (v_i − w_i) − y‖² + β Σ_i (‖v_i‖₂ + ‖w_i‖₂)
    s.t.      (2D_i − I) X v_i ≥ 0,   (2D_i − I) X w_i ≥ 0.

Variables are stored as matrices V, W of shape (d, P) (column i is v_i / w_i). Its Lagrange dual is

    maximise  −½‖λ‖² + λᵀy   s.t.  ‖Π_{K_i}(±Xᵀ D_i λ)‖ ≤ β  for every pattern i,

with K_i = {u : (2D_i − I) X u ≥ 0}; at the optimum λ = y − ŷ. `certificate` turns any primal point into
a feasible dual point (λ = y − ŷ, scaled into the dual feasible set, with ‖Π_K(g)‖ = min_{μ≥0}‖g + A_iᵀμ‖
computed by non-negative least squares) so that primal − dual is a rigorous duality gap.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import nnls


@dataclass
class ConvexProblem:
    """Data, patterns and regularisation of one convex training problem (X includes any bias column)."""

    X: np.ndarray  # (n, d)
    y: np.ndarray  # (n,)
    D: np.ndarray  # (n, P) bool
    beta: float

    def __post_init__(self):
        self.X = np.ascontiguousarray(self.X, dtype=float)
        self.y = np.asarray(self.y, dtype=float).ravel()
        self.D = np.asarray(self.D, dtype=bool)
        if self.D.ndim != 2 or self.D.shape[0] != self.X.shape[0] or self.y.shape[0] != self.X.shape[0]:
            raise ValueError("X (n, d), y (n,) and D (n, P) must agree on n")

    @property
    def n(self) -> int:
        return self.X.shape[0]

    @property
    def d(self) -> int:
        return self.X.shape[1]

    @property
    def P(self) -> int:
        return self.D.shape[1]

    @property
    def signs(self) -> np.ndarray:
        """(n, P) matrix 2D − 1 (+1 where the pattern is active)."""
        return np.where(self.D, 1.0, -1.0)

    def predict(self, V: np.ndarray, W: np.ndarray) -> np.ndarray:
        """ŷ = Σ_i D_i X (v_i − w_i) on the training data."""
        return ((self.X @ (V - W)) * self.D).sum(axis=1)

    def objective(self, V: np.ndarray, W: np.ndarray) -> float:
        r = self.predict(V, W) - self.y
        return float(0.5 * r @ r + self.beta * (np.linalg.norm(V, axis=0).sum() + np.linalg.norm(W, axis=0).sum()))

    def cone_violation(self, V: np.ndarray, W: np.ndarray) -> float:
        """max over all cone constraints of max(0, −(2D_i − I) X u_i)."""
        S = self.signs
        m = min(float((S * (self.X @ V)).min(initial=0.0)), float((S * (self.X @ W)).min(initial=0.0)))
        return max(0.0, -m)

    def project_to_cones(self, V: np.ndarray, W: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Euclidean projection of every column onto its cone K_i (only columns that violate it move)."""
        S = self.signs
        out = []
        for U in (V, W):
            U = U.copy()
            viol = (S * (self.X @ U)).min(axis=0) < 0
            for i in np.flatnonzero(viol):
                A = S[:, i:i + 1] * self.X  # (n, d): K_i = {u : A u >= 0}
                # Π_K(u) = u + Aᵀμ*,  μ* = argmin_{μ≥0} ‖u + Aᵀμ‖ (Moreau decomposition)
                mu, _ = nnls(A.T, -U[:, i], maxiter=50 * A.shape[0])
                U[:, i] = U[:, i] + A.T @ mu
            out.append(U)
        return out[0], out[1]

    def price(self, lam: np.ndarray, idx: np.ndarray | None = None, mu: np.ndarray | None = None,
              store: np.ndarray | None = None, mu_slack: float = 1e-7,
              fista_iters: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Upper bounds on the dual constraint values ρ_v[i] = ‖Π_{K_i}(Xᵀ D_i λ)‖ and
        ρ_w[i] = ‖Π_{K_i}(−Xᵀ D_i λ)‖ (≤ β when λ is dual feasible), exact where they can matter.

        ‖Π_K(g)‖ = min_{μ≥0} ‖g + A_iᵀμ‖ ≤ ‖g‖, so a pattern with ‖Xᵀ D_i λ‖ ≤ 0.999β keeps that bound.
        `mu` (n, 2P; v columns, then w columns) are cone multipliers from a solver (an interior-point
        method's): ‖g + A_iᵀμ_i‖ is then a bound too, and where it is ≤ β(1 + mu_slack) no NNLS is run
        (the dual point is then scaled by at most that much: a relative loss of about mu_slack).
        With `fista_iters`, the rest first get a batched projected-gradient (FISTA) bound from those μ
        (or 0), accepted on the same test. The others get the projection by NNLS; the multipliers of
        every accepted bound and NNLS are written into `store` (n, 2P) when
        given (to be passed back as `mu` for a nearby λ). Any μ ≥ 0 only over-estimates ρ, so dual
        bounds built on these stay valid."""
        idx = np.arange(self.P) if idx is None else np.asarray(idx)
        G = self.X.T @ (self.D[:, idx] * lam[:, None])  # (d, |idx|)
        S = self.signs[:, idx]
        rv = np.linalg.norm(G, axis=0)
        rw = rv.copy()
        done_v = done_w = np.zeros(len(idx), dtype=bool)
        if mu is not None:
            mu = np.maximum(np.asarray(mu, dtype=float), 0.0)
            cols = np.concatenate([idx, self.P + idx])
            AtM = self.X.T @ (np.concatenate([S, S], axis=1) * mu[:, cols])
            k = len(idx)
            rv = np.minimum(rv, np.linalg.norm(G + AtM[:, :k], axis=0))
            rw = np.minimum(rw, np.linalg.norm(-G + AtM[:, k:], axis=0))
            done_v, done_w = rv <= self.beta * (1 + mu_slack), rw <= self.beta * (1 + mu_slack)
        need_v = (rv > 0.999 * self.beta) & ~done_v
        need_w = (rw > 0.999 * self.beta) & ~done_w
        if fista_iters and (need_v.any() or need_w.any()):  # batched first-order bounds before NNLS
            jv, jw = np.flatnonzero(need_v), np.flatnonzero(need_w)
            cv, cw = idx[jv], self.P + idx[jw]
            M0 = None if mu is None else np.concatenate([mu[:, cv], mu[:, cw]], axis=1)
            bnd, M = _cone_bounds(self.X, np.concatenate([S[:, jv], S[:, jw]], axis=1),
                                  np.concatenate([G[:, jv], -G[:, jw]], axis=1), M0, fista_iters)
            nv = len(jv)
            rv[jv], rw[jw] = np.minimum(rv[jv], bnd[:nv]), np.minimum(rw[jw], bnd[nv:])
            ok = bnd <= self.beta * (1 + mu_slack)
            need_v[jv[ok[:nv]]] = False
            need_w[jw[ok[nv:]]] = False
            if store is not None:
                store[:, cv[ok[:nv]]] = M[:, :nv][:, ok[:nv]]
                store[:, cw[ok[nv:]]] = M[:, nv:][:, ok[nv:]]
        for k in np.flatnonzero(need_v | need_w):
            A = S[:, k:k + 1] * self.X
            g = G[:, k]
            # ‖Π_K(g)‖ = dist(g, K°) with K° = {−Aᵀμ : μ ≥ 0}
            for need, r, sign, col in ((need_v, rv, 1.0, idx[k]), (need_w, rw, -1.0, self.P + idx[k])):
                if need[k]:
                    support = None if mu is None else mu[:, col] > 0
                    dist, m = _cone_dist(A, sign * g, support, self.beta * (1 + mu_slack))
                    r[k] = min(r[k], dist)
                    if store is not None:
                        store[:, col] = m
        return rv, rw

    def dual_value(self, lam: np.ndarray, rho_max: float) -> tuple[float, float]:
        """Best dual objective along the ray s·λ that stays feasible; returns (value, s)."""
        ll = float(lam @ lam)
        ly = float(lam @ self.y)
        if ll == 0.0:
            return 0.0, 0.0
        s = ly / ll
        if rho_max > 0:
            s = min(s, self.beta / rho_max)
        s = max(s, 0.0)
        return -0.5 * s * s * ll + s * ly, s

    def certificate(self, V: np.ndarray, W: np.ndarray, duals: list[np.ndarray] | None = None,
                    multipliers: list[np.ndarray | None] | None = None, residual_dual: bool = True) -> dict:
        """Primal value, a rigorous dual lower bound, the gap and the cone violation of (V, W).

        The dual point is the best feasible scaling of λ = y − ŷ or of any extra candidate in `duals`
        (e.g. a solver's multiplier of the residual equation, more accurate than ŷ from an inexact solve).
        `multipliers[k]` (optional, (n, 2P)) are cone multipliers that go with candidate k (k = 0: λ = y − ŷ)
        and make its pricing cheaper and tighter (see `price`). residual_dual=False leaves out the
        candidate y − ŷ (multipliers[0] then belongs to duals[0]) when better ones are given."""
        primal = self.objective(V, W)
        cands = [np.asarray(l, dtype=float).ravel() for l in (duals or [])]
        mults = list(multipliers or []) + [None] * (len(cands) + 1)
        if residual_dual or not cands:
            cands.insert(0, self.y - self.predict(V, W))
        best = None
        for lam, mu in zip(cands, mults):
            if lam.shape != self.y.shape or not np.all(np.isfinite(lam)):
                continue
            rv, rw = self.price(lam, mu=mu)
            rho = float(max(rv.max(initial=0.0), rw.max(initial=0.0)))
            dual, s = self.dual_value(lam, rho)
            if best is None or dual > best[0]:
                best = (dual, s, rho)
        dual, s, rho = best
        gap = primal - dual
        return {
            "primal": primal,
            "dual": dual,
            "gap": gap,
            "rel_gap": gap / max(abs(primal), 1e-300),
            "cone_violation": self.cone_violation(V, W),
            "dual_scale": s,
            "max_dual_constraint": rho / self.beta,
        }


def _cone_bounds(X: np.ndarray, S: np.ndarray, G: np.ndarray, M0: np.ndarray | None,
                 iters: int) -> tuple[np.ndarray, np.ndarray]:
    """Upper bounds on ‖Π_{K_j}(g_j)‖ = min_{μ≥0} ‖g_j + A_jᵀμ‖ (A_j = diag(S_j) X) for all columns at
    once by FISTA on μ (step 1/σ_max(X)², the Lipschitz constant of every A_j A_jᵀ); any μ ≥ 0 gives a
    valid bound. Returns (bounds, μ)."""
    step = 1.0 / max(np.linalg.norm(X, 2) ** 2, 1e-300)
    M = np.zeros_like(S) if M0 is None else np.maximum(M0, 0.0)
    Yk, t = M.copy(), 1.0
    for _ in range(iters):
        R = G + X.T @ (S * Yk)
        Mn = np.maximum(Yk - step * (S * (X @ R)), 0.0)
        tn = 0.5 * (1.0 + np.sqrt(1.0 + 4.0 * t * t))
        Yk = Mn + ((t - 1.0) / tn) * (Mn - M)
        M, t = Mn, tn
    return np.linalg.norm(G + X.T @ (S * M), axis=0), M


def _cone_dist(A: np.ndarray, g: np.ndarray, support: np.ndarray | None = None,
               accept: float = 0.0) -> tuple[float, np.ndarray]:
    """(min_{μ≥0} ‖g + Aᵀμ‖, the minimiser μ) = (‖Π_K(g)‖, its multipliers) for K = {u : A u ≥ 0}.

    support: rows where a nearby problem's multipliers were positive: the least-squares multipliers on
    them (clipped at 0) give an upper bound ‖g + A_Sᵀμ_S‖, returned without NNLS when it is ≤ `accept`."""
    if np.all(A @ g >= 0):  # g ∈ K: it is its own projection
        return float(np.linalg.norm(g)), np.zeros(A.shape[0])
    if support is not None and support.any():
        As = A[support]
        c = np.maximum(np.linalg.lstsq(As.T, -g, rcond=None)[0], 0.0)
        r = float(np.linalg.norm(g + As.T @ c))
        if r <= accept:
            mu = np.zeros(A.shape[0])
            mu[support] = c
            return r, mu
    mu, r = nnls(A.T, -g, maxiter=50 * A.shape[0])
    return float(r), mu

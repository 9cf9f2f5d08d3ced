"""A structure-exploiting LipSDP solver: first-order optimisation of the eigenvalue formulation.

For fixed multipliers theta the best rho is lambda_max(X(theta)) (see `verify.lipsdp.chain`), a convex
function of theta whose evaluation costs one block elimination (O(sum n_k^3)) instead of an interior-point
or ADMM iteration on the full (sum n_k)-sized matrix. Its gradient comes for free from the same
factorisation: for a top eigenvector u of X, the maximising trajectory z_0 = u, z_{k+1} = -S^{-1} C' z_k
gives d lambda_max / d theta = sum_k dq_k/dtheta (z).

lambda_max is non-smooth where eigenvalues cross, so we minimise the soft maximum
    f_mu(theta) = mu log sum_i exp(lambda_i(X)/mu)  (>= lambda_max, <= lambda_max + mu log n)
with L-BFGS and a decreasing mu. Sign-constrained multipliers are parameterised as exp(phi). Points where
a pivot block stops being positive definite have value +inf and are rejected by the line search: the
problem's own barrier keeps the iterates feasible. Any iterate is a valid certificate; the caller
recertifies the final one in float64.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from verify.lipsdp.chain import Chain, NotPositiveDefinite


@dataclass
class FastResult:
    theta: np.ndarray
    value: float          # lambda_max(X) at theta (uncertified float value)
    iterations: int
    evaluations: int
    seconds: float
    history: list


class _Objective:
    """f_mu (+ barrier + ridge) as a function of unconstrained variables x.

    x -> theta: lam = exp(x) for sign-constrained multipliers; for each (a, b) pair of a full-coupling
    GroupSort/Householder layer, x holds (gamma, d) with a = d - exp(gamma), b = d + exp(gamma). The cross
    term (a - b)/2 = -exp(gamma) multiplies -(E(v - w))^2 in the QC, which only hurts when positive, so
    this loses nothing; its optimum is at infinity (it enforces E v = E w), which a log scale reaches in
    few steps instead of a long linear valley.
    """

    def __init__(self, chain: Chain, ridge: float = 0.0):
        self.chain = chain
        self.mask = chain.nonneg_mask
        ia, ib = [], []
        for k, q in enumerate(chain.qcs):
            if "b" in q.names:
                start = int(chain.offsets[k]) + q.sizes["lam"]
                ia.append(np.arange(start, start + q.sizes["a"]))
                ib.append(np.arange(start + q.sizes["a"], start + q.sizes["a"] + q.sizes["b"]))
        self.ia = np.concatenate(ia) if ia else np.zeros(0, dtype=int)
        self.ib = np.concatenate(ib) if ib else np.zeros(0, dtype=int)
        self.ridge = ridge   # weight of ridge * |a, b|^2: keeps the pivots well conditioned
        self.tau = 0.0       # weight of the barrier -tau * log det(M blocks 1..l)
        self.evals = 0

    def theta(self, x: np.ndarray) -> np.ndarray:
        th = x.copy()
        th[self.mask] = np.exp(np.clip(x[self.mask], -700, 700))
        if len(self.ia):
            c, d = np.exp(np.clip(x[self.ia], -700, 700)), x[self.ib]
            th[self.ia], th[self.ib] = d - c, d + c
        return th

    def x_of(self, theta: np.ndarray) -> np.ndarray:
        x = theta.copy()
        x[self.mask] = np.log(np.maximum(theta[self.mask], 1e-300))
        if len(self.ia):
            a, b = theta[self.ia], theta[self.ib]
            floor = max(float(np.abs(theta[self.mask]).mean()) if self.mask.any() else 1.0, 1e-300)
            x[self.ia] = np.log(np.maximum((b - a) / 2, floor))
            x[self.ib] = (a + b) / 2
        return x

    def __call__(self, x: np.ndarray, mu: float, need_grad: bool = True):
        """(objective, gradient w.r.t. x, lambda_max) or (inf, None, inf) outside the domain."""
        self.evals += 1
        th = self.theta(x)
        try:
            res = self.chain.chain(th, check="chol")
        except NotPositiveDefinite:
            return np.inf, None, np.inf
        ev, U = np.linalg.eigh(res.X)
        if not np.all(np.isfinite(ev)):
            return np.inf, None, np.inf
        lmax = ev[-1]
        if mu > 0:
            w = np.exp((ev - lmax) / mu)
            s = w.sum()
            f = lmax + mu * np.log(s)
            w = w / s
        else:
            f, w = lmax, np.zeros_like(ev)
            w[-1] = 1.0
        ab = np.concatenate([th[self.ia], th[self.ib]])
        if self.ridge and len(ab):
            f = f + self.ridge * float(ab @ ab)
        if self.tau:
            f = f - self.tau * self.chain.logdet_rest(res)
        self._cache = (x, th, res, U, w)
        if not need_grad:
            return f, None, lmax
        return f, self.gradient(), lmax

    def gradient(self) -> np.ndarray:
        """Gradient w.r.t. x at the point of the last finite evaluation (reuses its elimination)."""
        x, th, res, U, w = self._cache
        keep = w > 1e-12
        zs = self.chain.directions(res, U[:, keep])
        g = self.chain.grad(zs, w[keep])
        if self.tau:
            g = g - self.tau * self.chain.logdet_grad(res)
        if self.ridge and len(self.ia):
            g[self.ia] += 2 * self.ridge * th[self.ia]
            g[self.ib] += 2 * self.ridge * th[self.ib]
        gx = g.copy()
        gx[self.mask] = g[self.mask] * th[self.mask]
        if len(self.ia):
            c = np.exp(np.clip(x[self.ia], -700, 700))
            gx[self.ia] = (g[self.ib] - g[self.ia]) * c
            gx[self.ib] = g[self.ia] + g[self.ib]
        return gx


def _lbfgs(obj: _Objective, x: np.ndarray, mu: float, max_iter: int, tol: float, deadline: float,
           memory: int = 20):
    f, g, lmax = obj(x, mu)
    if not np.isfinite(f):
        raise NotPositiveDefinite(-1)
    S, Y = [], []
    fs = [f]
    window = 10
    it = 0
    for it in range(1, max_iter + 1):
        if time.monotonic() > deadline:
            break
        # two-loop recursion
        q = g.copy()
        alphas = []
        for s, y in zip(reversed(S), reversed(Y)):
            a = (s @ q) / (y @ s)
            alphas.append(a)
            q -= a * y
        if S:
            q *= (S[-1] @ Y[-1]) / (Y[-1] @ Y[-1])
        else:
            q *= min(1.0, 1.0 / max(np.abs(g).max(), 1e-300))
        for (s, y), a in zip(zip(S, Y), reversed(alphas)):
            b = (y @ q) / (y @ s)
            q += (a - b) * s
        d = -q
        gd = g @ d
        if gd >= 0:
            S, Y = [], []
            d = -g * min(1.0, 1.0 / max(np.abs(g).max(), 1e-300))
            gd = g @ d
        step = 1.0
        while True:
            xn = x + step * d
            fn, _, ln = obj(xn, mu, need_grad=False)   # the gradient only once a step is accepted
            if np.isfinite(fn) and fn <= f + 1e-4 * step * gd:
                gn = obj.gradient()
                break
            step *= 0.3
            if step < 1e-10:
                return x, f, lmax, it
        s, y = xn - x, gn - g
        if s @ y > 1e-12 * np.sqrt((s @ s) * (y @ y)):
            S.append(s)
            Y.append(y)
            if len(S) > memory:
                S.pop(0)
                Y.pop(0)
        x, f, g, lmax = xn, fn, gn, ln
        fs.append(f)
        if len(fs) > window and (fs[-window - 1] - f) <= tol * window * max(abs(f), 1e-300):
            break  # stagnation: less than tol relative progress per iteration over the window
    return x, f, lmax, it


def solve_fast(chain: Chain, theta0: np.ndarray | None = None, max_iter: int = 5000, tol: float = 1e-9,
               time_limit: float = 600.0, mus: tuple[float, ...] = (1e-2, 1e-3, 1e-4, 1e-5, 0.0),
               taus: tuple[float, ...] = (1e-4, 1e-5, 1e-6, 1e-7, 1e-8),
               ridge: float = 1e-12) -> FastResult:
    """Minimise lambda_max(X(theta)) from theta0 (default: the chain's strictly feasible reference point).

    `mus` are the soft-max temperatures relative to the current value, in order (0 = the exact maximum);
    `taus` the matching barrier weights, relative to value / dim(M blocks 1..l) (the barrier's gap is about
    tau * value). The barrier matters where the optimum lies on the boundary of the pivots' positive
    definiteness (MaxMin layers: the cross term couples only the group sums), which a plain line search
    cannot follow.
    """
    t0 = time.monotonic()
    deadline = t0 + time_limit
    obj = _Objective(chain)
    theta0 = chain.reference(margin=1.02) if theta0 is None else chain.project(theta0)
    x = obj.x_of(theta0)
    f, _, lmax = obj(x, 0.0, need_grad=False)
    if not np.isfinite(f):
        x = obj.x_of(chain.reference())
        f, _, lmax = obj(x, 0.0, need_grad=False)
    # free (equality) multipliers grow without bound at the optimum (a -> -b -> inf enforces E(v-w) = 0
    # exactly); a tiny ridge keeps them, and so the pivots' conditioning, finite at negligible cost
    obj.ridge = ridge / max(abs(lmax), 1e-300)
    history = [(0.0, float(lmax))]
    iters = 0
    n_rest = sum(W.shape[1] for W in chain.weights[1:])
    if all(q.act.kind == "slope" for q in chain.qcs):
        # slope-restricted layers couple every direction (R = (alpha+beta) Lam): the optimum is interior,
        # lambda_max itself blows up at the boundary, and the barrier's extra solves would only cost time
        taus = tuple(0.0 for _ in taus)
    shares = np.array([0.4, 0.25, 0.15, 0.1, 0.1][:len(mus)] + [0.1] * max(0, len(mus) - 5))
    for i, (rel_mu, rel_tau) in enumerate(zip(mus, taus)):
        mu = rel_mu * max(abs(lmax), 1e-300)
        obj.tau = rel_tau * max(abs(lmax), 1e-300) / n_rest
        now = time.monotonic()
        stage_deadline = min(deadline, now + (deadline - now) * shares[i] / shares[i:].sum())
        x, f, lmax, it = _lbfgs(obj, x, mu, max_iter, tol, stage_deadline)
        iters += it
        history.append((time.monotonic() - t0, float(lmax)))
        if time.monotonic() > deadline:
            break
    return FastResult(obj.theta(x), float(lmax), iters, obj.evals, time.monotonic() - t0, history)

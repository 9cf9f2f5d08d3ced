"""The LipSDP matrix inequality of a feed-forward net, evaluated through its block-tridiagonal structure.

With z = (Δz_0, ..., Δz_l) the differences of the inputs of every linear layer, the condition
    rho |Δz_0|^2 - |W_l Δz_l|^2 - sum_k q_k(W_k Δz_k, Δz_{k+1}) >= 0   for all z
(q_k the QCs of `verify.lipsdp.qc`, all >= 0 on true trajectories) proves |Δy| <= sqrt(rho) |Δx|. Its
matrix M(rho) is block tridiagonal: diagonal blocks D_0 = rho I - W_0'P_0W_0, D_k = -Q_{k-1} - W_k'P_kW_k,
D_l = -Q_{l-1} - W_l'W_l and off-diagonal blocks C_k = -W_k'R_k. Eliminating the blocks from the last one
up (S_l = D_l, S_k = D_k - C_k S_{k+1}^{-1} C_k'), M(rho) >= 0 holds iff every S_k > 0 (k >= 1) and
rho >= lambda_max(X), X = W_0'P_0W_0 + C_0 S_1^{-1} C_0'. So for FIXED multipliers the best rho is an
eigenvalue, computed in float64 at O(sum n_k^3) cost: this is both the certificate of any solver's answer
and the objective (convex in the multipliers) of the structure-exploiting solver in `verify.lipsdp.fast`.

A wide input layer is reduced exactly: with W_0' = Q R (thin QR), X's nonzero spectrum is that of
R Y R' (n_1 x n_1), so W_0 is replaced by R' (l2 only).

Residual layers z_{k+1} = A_k z_k + σ(W_k z_k) keep the structure: their QC is taken on v = W_k z_k and
w = z_{k+1} - A_k z_k, which still involves only z_k and z_{k+1}; the blocks gain the A_k terms
(block (k,k): W'PW - W'RA - A'R'W + A'QA, C_k = -(W'R - A'Q)).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.linalg as sla

from verify.lipsdp.network import LipNet
from verify.lipsdp.qc import LayerQC

EPS = np.finfo(np.float64).eps


class NotPositiveDefinite(Exception):
    """A pivot block S_k of the elimination is not (safely) positive definite."""

    def __init__(self, k: int, lam_min: float = float("nan")):
        self.k, self.lam_min = k, lam_min
        super().__init__(f"pivot block {k} is not positive definite (lambda_min {lam_min:.3g})")


def reduce_input(weights: list[np.ndarray], skip0: np.ndarray | None = None):
    """Replace a wide first layer W_0 (n_1 < n_0) by the square R' of W_0' = QR: same l2 spectrum.

    With a skip A_0 on the first layer, [W_0; A_0]' = Q R is factored and both are replaced by their
    parts of R' (the input enters only through Q' z_0). Returns (weights, skip0)."""
    W0 = weights[0]
    rows = W0.shape[0] + (0 if skip0 is None else skip0.shape[0])
    if W0.shape[1] <= rows:
        return list(weights), skip0
    stacked = W0 if skip0 is None else np.vstack([W0, skip0])
    Rt = np.linalg.qr(stacked.T, mode="r").T
    if skip0 is None:
        return [Rt.copy()] + list(weights[1:]), None
    return [Rt[:W0.shape[0]].copy()] + list(weights[1:]), Rt[W0.shape[0]:].copy()


@dataclass
class ChainResult:
    X: np.ndarray                 # block-0 matrix: rho >= lambda_max(X) certifies
    chols: list                   # cho_factor of S_1..S_l (index k-1)
    Cs: list[np.ndarray]          # C_0..C_{l-1}
    Ys: list[np.ndarray]          # L_{k+1}^-1 C_k' (S_{k+1} = L L') for k = 0..l-1
    min_pivot_ratio: float        # min over k with C_{k-1} != 0 of lambda_min(S_k)/scale (check="eig" only)


class Chain:
    """LipSDP constraint structure for a net (l >= 1 hidden layers), with an output matrix `out`.

    `out` replaces W_l (the l_inf formulation uses one output row). `tied` = one multiplier per layer
    (LipSDP-Layer) instead of one per neuron / group (LipSDP-Neuron).
    """

    def __init__(self, net: LipNet, tied: bool = False, out: np.ndarray | None = None, reduce: bool = True,
                 coupling: str = "full"):
        if len(net.weights) < 2:
            raise ValueError("Chain needs at least one hidden layer")
        ws = list(net.weights)
        if out is not None:
            ws[-1] = np.atleast_2d(np.asarray(out, dtype=np.float64))
        self.skips = list(net.skips)
        if reduce:
            self.weights, self.skips[0] = reduce_input(ws, self.skips[0])
        else:
            self.weights = ws
        self.l = len(self.weights) - 1
        self.qcs = [LayerQC(act, self.weights[k].shape[0], tied, coupling) for k, act in enumerate(net.activations)]
        self.offsets = np.cumsum([0] + [q.size for q in self.qcs])
        self.n_params = int(self.offsets[-1])
        self.nonneg_mask = np.concatenate([
            np.concatenate([np.full(q.sizes[k], q.nonneg[k]) for k in q.names]) for q in self.qcs])
        self.WtW_out = self.weights[-1].T @ self.weights[-1]

    # ------------------------------------------------------------------------------------ parameters
    def unpack(self, theta: np.ndarray) -> list[dict[str, np.ndarray]]:
        return [q.unpack(theta[self.offsets[k]:self.offsets[k + 1]]) for k, q in enumerate(self.qcs)]

    def pack(self, mults: list[dict[str, np.ndarray]]) -> np.ndarray:
        return np.concatenate([q.pack(m) for q, m in zip(self.qcs, mults)])

    def project(self, theta: np.ndarray) -> np.ndarray:
        """Clip the sign-constrained multipliers at zero (a solver may return tiny negatives)."""
        theta = np.array(theta, dtype=np.float64)
        theta[self.nonneg_mask] = np.maximum(theta[self.nonneg_mask], 0.0)
        return theta

    def reference(self, margin: float = 2.0) -> np.ndarray:
        """A strictly feasible multiplier vector (lam_k = c_k, a = b = 0), from the chain of norms.

        With K_k from `LayerQC.gain_sq`, -q_k >= c_k (|Δz_{k+1}|^2 - K_k |W_k|^2 |Δz_k|^2); choosing
        c_{l-1} = margin |W_l|^2 and c_{k-1} = margin c_k K_k |W_k|^2 leaves every block strictly positive.
        A residual layer (w = Δz_{k+1} - A Δz_k, |w|^2 >= |Δz_{k+1}|^2 / 2 - |A Δz_k|^2) gives
        -q_k >= c_k (|Δz_{k+1}|^2 / 2 - (|A|^2 + K_k |W_k|^2) |Δz_k|^2): gain |A|^2 + K|W|^2, and c_k halved.
        """
        norms = [np.linalg.norm(W, 2) for W in self.weights]
        half = [1.0 if A is None else 2.0 for A in self.skips]
        gain = [self.qcs[k].gain_sq() * norms[k] ** 2 + (0.0 if A is None else np.linalg.norm(A, 2) ** 2)
                for k, A in enumerate(self.skips)]
        c = [0.0] * self.l
        c[self.l - 1] = margin * half[self.l - 1] * max(norms[-1] ** 2, 1e-300)
        for k in range(self.l - 1, 0, -1):
            c[k - 1] = margin * half[k - 1] * max(c[k] * gain[k], 1e-300)
        return self.pack([q.reference(ck) for q, ck in zip(self.qcs, c)])

    def _own_block(self, k: int, P, R, Q) -> np.ndarray:
        """Layer k's QC on block (k, k): W'PW, with a skip A also - W'RA - A'R'W + A'QA."""
        W, A = self.weights[k], self.skips[k]
        out = P.sandwich(W)
        if A is not None:
            WRA = R.left(W) @ A
            out = out - WRA - WRA.T + Q.sandwich(A)
        return out

    def _coupling(self, k: int, R, Q) -> np.ndarray:
        """C_k = -(W'R - A'Q): layer k's QC on block (k, k+1)."""
        C = -R.left(self.weights[k])
        if self.skips[k] is not None:
            C = C + Q.left(self.skips[k])
        return C

    def outputs(self, k: int, zk: np.ndarray, zk1: np.ndarray) -> np.ndarray:
        """The activation output w of layer k along trajectories: z_{k+1} (- A_k z_k for a residual layer)."""
        return zk1 if self.skips[k] is None else zk1 - self.skips[k] @ zk

    # ------------------------------------------------------------------------------------ evaluation
    def chain(self, theta: np.ndarray, check: str = "chol", pivot_tol: float = 0.0) -> ChainResult:
        """Eliminate blocks l..1; raise NotPositiveDefinite if a pivot fails.

        check="chol": Cholesky success (fast, used while optimising); check="eig": every pivot's smallest
        eigenvalue must exceed pivot_tol * |S_k| (used when certifying).
        """
        mults = self.unpack(theta)
        mats = [q.matrices(m) for q, m in zip(self.qcs, mults)]
        l = self.l
        chols: list = [None] * l
        Cs: list = [None] * l
        Ys: list = [None] * l
        ratio = np.inf
        terms = (-mats[l - 1][2].dense(), self.WtW_out)
        S = terms[0] - terms[1]
        for k in range(l, 0, -1):
            # S currently holds S_k; factor it
            P, R, Q = mats[k - 1]
            C = self._coupling(k - 1, R, Q)             # C_{k-1} = -W_{k-1}' R_{k-1} (+ A' Q with a skip)
            if check == "eig":
                ev = np.linalg.eigvalsh(S)
                # rounding in forming S is relative to the terms it is the difference of (Frobenius >= 2-norm)
                scale = max(np.abs(ev).max(), *(np.linalg.norm(x) for x in terms), 1e-300)
                if C.any():  # S_k^-1 enters the bound only through C_{k-1}: its conditioning matters then
                    ratio = min(ratio, ev[0] / max(np.abs(ev).max(), 1e-300))
                if ev[0] <= pivot_tol * scale + 64 * EPS * scale * np.sqrt(len(ev)):
                    raise NotPositiveDefinite(k, ev[0])
            try:
                chols[k - 1] = sla.cho_factor(S, lower=True, check_finite=False)
            except np.linalg.LinAlgError:
                raise NotPositiveDefinite(k) from None
            Cs[k - 1] = C
            Y = sla.solve_triangular(chols[k - 1][0], C.T, lower=True, check_finite=False)
            Ys[k - 1] = Y
            schur = Y.T @ Y                              # C S^-1 C' with one triangular solve
            if k - 1 >= 1:
                terms = (-mats[k - 2][2].dense(), self._own_block(k - 1, P, R, Q), schur)
                S = terms[0] - terms[1] - terms[2]
            else:
                X = self._own_block(0, P, R, Q) + schur
        X = 0.5 * (X + X.T)
        return ChainResult(X, chols, Cs, Ys, float(ratio))

    def directions(self, res: ChainResult, U: np.ndarray) -> list[np.ndarray]:
        """The maximising z_1..z_l for block-0 directions U (n_0 x r): z_{k+1} = -S_{k+1}^{-1} C_k' z_k."""
        zs = [U]
        for k in range(self.l):
            zs.append(-sla.cho_solve(res.chols[k], res.Cs[k].T @ zs[-1], check_finite=False))
        return zs

    def grad(self, zs: list[np.ndarray], weights: np.ndarray) -> np.ndarray:
        """Gradient w.r.t. theta of sum_r weights[r] * lambda_r(X) for the directions in zs."""
        parts = []
        for k, q in enumerate(self.qcs):
            V = (self.weights[k] @ zs[k]).T
            Wo = self.outputs(k, zs[k], zs[k + 1]).T
            parts.append(q.grad(V, Wo, weights))
        return np.concatenate(parts)

    def logdet_rest(self, res: ChainResult) -> float:
        """log det of the blocks 1..l of M (= sum of the pivots' log dets): the interior barrier."""
        return float(sum(2.0 * np.log(np.diag(c[0])).sum() for c in res.chols))

    def logdet_grad(self, res: ChainResult) -> np.ndarray:
        """Gradient of `logdet_rest` w.r.t. theta: <M_rest^-1, dM_rest/dtheta>, using only the blocks of
        M_rest^-1 on and next to the diagonal (a forward recursion over the pivots):
        G_11 = S_1^-1, G_{k+1,k} = -S_{k+1}^-1 C_k' G_kk, G_{k+1,k+1} = S_{k+1}^-1 + S_{k+1}^-1 C_k' G_kk C_k S_{k+1}^-1.
        """
        l = self.l
        eye = lambda n: np.eye(n)  # noqa: E731
        G = sla.cho_solve(res.chols[0], eye(res.chols[0][0].shape[0]), check_finite=False)
        parts = [None] * l
        # layer 0 touches M_rest only through -Q_0 in block (1, 1)
        parts[0] = -self.qcs[0].grad_cov(None, None, G)
        for k in range(1, l):
            T = sla.solve_triangular(res.chols[k][0], res.Ys[k], lower=True, trans="T",
                                     check_finite=False)                          # S_{k+1}^-1 C_k'
            Sinv = sla.cho_solve(res.chols[k], eye(T.shape[0]), check_finite=False)
            TG = T @ G
            G_off = -TG                                                           # G_{k+1,k}
            G_next = Sinv + TG @ T.T
            W, A = self.weights[k], self.skips[k]
            Cvv = W @ G @ W.T
            Cvw = W @ G_off.T                                                     # E[v w'] = W G_{k,k+1}
            Cww = G_next
            if A is not None:                                                     # w = z_{k+1} - A z_k
                Cvw = Cvw - W @ G @ A.T
                AGo = A @ G_off.T
                Cww = G_next - AGo - AGo.T + A @ G @ A.T
            parts[k] = -self.qcs[k].grad_cov(Cvv, Cvw, Cww)
            G = G_next
        return np.concatenate(parts)

    # ------------------------------------------------------------------------------------ certificate
    def _pivot_margin(self, res: ChainResult) -> float:
        """Relative allowance for the rounding of the elimination: 1e-9 plus eps times pivot conditioning."""
        cond = 1.0 / max(res.min_pivot_ratio, EPS)
        return 1e-9 + 1e3 * EPS * cond

    def certify_rho(self, theta: np.ndarray, pivot_tol: float = 1e-12) -> float:
        """The smallest rho (plus a safety margin) with M(rho) >= 0 for these multipliers, in float64 (l2).

        Raises NotPositiveDefinite when no rho works.
        """
        res = self.chain(self.project(theta), check="eig", pivot_tol=pivot_tol)
        ev = np.linalg.eigvalsh(res.X)
        lam = max(float(ev[-1]), 0.0)
        scale = max(float(np.abs(ev).max()), lam, 1e-300)
        return lam + self._pivot_margin(res) * scale

    def certify_linf(self, theta: np.ndarray, mu: np.ndarray, pivot_tol: float = 1e-12) -> float:
        """Certified L^2 for the l_inf formulation (block 0 = diag(mu)): with D = diag(mu) > 0 and
        t = lambda_max(D^-1/2 X D^-1/2), diag(t mu) >= X, so |Δy|^2 <= t sum(mu) |Δx|_inf^2."""
        res = self.chain(self.project(theta), check="eig", pivot_tol=pivot_tol)
        mu = np.asarray(mu, dtype=np.float64)
        mu = np.maximum(mu, max(float(mu.max()), 1e-300) * 1e-9)
        s = 1.0 / np.sqrt(mu)
        ev = np.linalg.eigvalsh(res.X * s[:, None] * s[None, :])
        t = max(float(ev[-1]), 0.0)
        scale = max(float(np.abs(ev).max()), t, 1e-300)
        return (t + self._pivot_margin(res) * scale) * float(mu.sum())


def certify_with_repair(chain: Chain, theta: np.ndarray, value=None) -> tuple[float, float, np.ndarray]:
    """Certified value for `theta` (default `chain.certify_rho`), repairing a slightly infeasible or
    near-singular solver answer.

    Candidates (1-t) theta + t ref with the strictly feasible reference point ref (the feasible set is
    convex, so every candidate with positive definite pivots is a valid certificate) are tried for a
    grid of t; the smallest certified value is kept. Returns (value, t, multipliers used). Raises NotPositiveDefinite if
    none certifies.
    """
    value = value or chain.certify_rho
    theta = chain.project(theta)
    ref = chain.reference()
    best, best_t, best_theta = np.inf, None, None
    for t in (0.0, 1e-9, 1e-8, 1e-7, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 0.05, 0.2, 0.5, 1.0):
        cand = theta if t == 0.0 else (1 - t) * theta + t * ref
        try:
            v = value(cand)
        except NotPositiveDefinite:
            continue
        if v < best:
            best, best_t, best_theta = v, t, cand
        elif best_t is not None:
            break  # values grow again: moving further from the solver's answer only loses
    if best_t is None:
        raise NotPositiveDefinite(-1)
    return best, best_t, best_theta

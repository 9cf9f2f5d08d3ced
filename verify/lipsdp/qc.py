"""Incremental quadratic constraints (QCs) of the activations, as structured matrices.

For one hidden layer with pre-activation difference v = W_k Δz_k and output difference w = Δz_{k+1}, a QC
is a quadratic form  q(v, w) = v'Pv + 2 v'Rw + w'Qw  that is >= 0 for every pair of inputs. Its matrices
are linear in the layer's multipliers:

* slope-restricted scalar activation on [alpha, beta], one multiplier lam_i >= 0 per neuron (LipSDP):
    q = sum_i lam_i * 2 (w_i - alpha v_i)(beta v_i - w_i)
  i.e. P = -2 alpha beta Lam, R = (alpha + beta) Lam, Q = -2 Lam.
* GroupSort / MaxMin and Householder on groups j (the seed paper's non-slope-restricted QCs). Both are
  l2-non-expansive on each group and leave a linear image of the group unchanged: GroupSort keeps the group
  sum (E = 11'), a Householder reflection keeps the part orthogonal to its vector v (E = I - vv'). Hence,
  with lam_j >= 0 and free a_j, b_j:
    q = sum_j lam_j (|v_j|^2 - |w_j|^2) + (v_j - w_j)' E (a_j v_j + b_j w_j)
  i.e. P_j = lam_j I + a_j E, R_j = (b_j - a_j)/2 E, Q_j = -lam_j I - b_j E.

Every matrix here is stored as diag(d) + G' diag(c) G with a fixed (groups x n) matrix G, so products
with weights cost O(n^2 m) instead of a dense n x n x n product.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from verify.lipsdp.network import Activation


@dataclass
class StructMat:
    """The symmetric n x n matrix diag(d) + G' diag(c) G (G may be None).

    When G = kron(I_m, e') (one copy of the vector e per group, as for GroupSort and Householder layers),
    `e` is given and products with G cost O(n k) instead of a dense product.
    """

    d: np.ndarray
    G: np.ndarray | None = None
    c: np.ndarray | None = None
    e: np.ndarray | None = None

    def _G(self, W: np.ndarray) -> np.ndarray:
        """G @ W for W of shape (n, k)."""
        if self.e is None:
            return self.G @ W
        g = len(self.e)
        return np.einsum("mgk,g->mk", W.reshape(-1, g, W.shape[1]), self.e)

    def _Gt_right(self, Y: np.ndarray) -> np.ndarray:
        """Y @ G for Y of shape (k, m): a (k, n) matrix."""
        if self.e is None:
            return Y @ self.G
        return (Y[:, :, None] * self.e[None, None, :]).reshape(Y.shape[0], -1)

    def dense(self) -> np.ndarray:
        out = np.diag(self.d)
        if self.G is not None:
            if self.e is None:
                out = out + (self.G.T * self.c) @ self.G
            else:
                g, m = len(self.e), len(self.c)
                idx = np.arange(m)
                view = out.reshape(m, g, m, g)
                view[idx, :, idx, :] += self.c[:, None, None] * np.outer(self.e, self.e)[None]
        return out

    def sandwich(self, W: np.ndarray) -> np.ndarray:
        """W' X W for W of shape (n, k)."""
        if self.G is None and not self.d.any():
            return np.zeros((W.shape[1], W.shape[1]))   # e.g. P = -2 alpha beta Lam = 0 for ReLU
        out = (W.T * self.d) @ W
        if self.G is not None:
            GW = self._G(W)
            out = out + (GW.T * self.c) @ GW
        return out

    def left(self, W: np.ndarray) -> np.ndarray:
        """W' X for W of shape (n, k): a (k, n) matrix."""
        out = W.T * self.d
        if self.G is not None:
            out = out + self._Gt_right(self._G(W).T * self.c)
        return out


class LayerQC:
    """The QC family of one activation layer of width n: parameter layout, matrices, gradients."""

    def __init__(self, act: Activation, n: int, tied: bool = False, coupling: str = "full"):
        """coupling (GroupSort / Householder only): "full" = free a_j, b_j; "paper" = a_j = b_j (R = 0), the
        multiplier set T = lam I + a E of the seed paper's LipSDP-NSR, which reproduces its numbers."""
        self.act, self.n, self.tied = act, n, tied
        self.coupling = coupling
        if act.kind == "slope":
            self.names = ["lam"]
            self.m = n
        else:
            g = act.group_size
            self.m = n // g
            if act.kind == "groupsort":
                e, self.cE, self.sE = np.ones(g), 0.0, 1.0          # E = 1 1'
            else:
                e, self.cE, self.sE = np.asarray(act.v), 1.0, -1.0  # E = I - v v'
            self.e = e
            self.G = np.kron(np.eye(self.m), e[None, :])             # (m, n): row j = e on group j
            self.names = ["lam", "a", "b"] if coupling == "full" else ["lam", "a"]
        self.sizes = {k: (1 if tied else self.m) for k in self.names}
        self.nonneg = {"lam": True, "a": False, "b": False}

    @property
    def size(self) -> int:
        return sum(self.sizes.values())

    def unpack(self, theta: np.ndarray) -> dict[str, np.ndarray]:
        out, i = {}, 0
        for k in self.names:
            s = self.sizes[k]
            v = theta[i:i + s]
            out[k] = np.full(self.m, v[0]) if self.tied else v
            i += s
        if self.act.kind != "slope" and "b" not in self.names:
            out["b"] = out["a"]
        return out

    def pack(self, mult: dict[str, np.ndarray]) -> np.ndarray:
        parts = []
        for k in self.names:
            v = np.asarray(mult[k], dtype=np.float64).ravel()
            parts.append(v[:1] if self.tied else v)
        return np.concatenate(parts)

    def _expand(self, x: np.ndarray) -> np.ndarray:
        """A per-group vector repeated over the group's units (length n)."""
        return np.repeat(x, self.act.group_size)

    def matrices(self, mult: dict[str, np.ndarray]) -> tuple[StructMat, StructMat, StructMat]:
        """(P, R, Q) of the QC for these multipliers."""
        if self.act.kind == "slope":
            lam, al, be = mult["lam"], self.act.alpha, self.act.beta
            return StructMat(-2 * al * be * lam), StructMat((al + be) * lam), StructMat(-2 * lam)
        lam, a, b = mult["lam"], mult["a"], mult["b"]
        cE, sE = self.cE, self.sE
        P = StructMat(self._expand(lam + cE * a), self.G, sE * a, self.e)
        R = StructMat(self._expand(0.5 * cE * (b - a)), self.G, 0.5 * sE * (b - a), self.e)
        Q = StructMat(self._expand(-lam - cE * b), self.G, -sE * b, self.e)
        return P, R, Q

    def grad(self, V: np.ndarray, Wo: np.ndarray, weights: np.ndarray) -> np.ndarray:
        """d/dtheta of sum_r weights[r] * q(V[r], Wo[r]), V and Wo of shape (r, n); packed like theta."""
        if self.act.kind == "slope":
            al, be = self.act.alpha, self.act.beta
            gq = 2.0 * (Wo - al * V) * (be * V - Wo)
            g = {"lam": weights @ gq}
        else:
            gsz = self.act.group_size
            r = V.shape[0]
            Vg, Wg = V.reshape(r, self.m, gsz), Wo.reshape(r, self.m, gsz)
            vv, ww, vw = (Vg * Vg).sum(-1), (Wg * Wg).sum(-1), (Vg * Wg).sum(-1)
            ev, ew = V @ self.G.T, Wo @ self.G.T                   # (r, m): e'v_j, e'w_j
            vEv = self.cE * vv + self.sE * ev * ev
            vEw = self.cE * vw + self.sE * ev * ew
            wEw = self.cE * ww + self.sE * ew * ew
            g = {"lam": weights @ (vv - ww), "a": weights @ (vEv - vEw), "b": weights @ (vEw - wEw)}
            if "b" not in self.names:
                g["a"] = g["a"] + g["b"]
        if self.tied:
            return np.concatenate([g[k].sum(keepdims=True) for k in self.names])
        return np.concatenate([g[k] for k in self.names])

    def grad_cov(self, Cvv: np.ndarray | None, Cvw: np.ndarray | None, Cww: np.ndarray) -> np.ndarray:
        """d/dtheta of E[q(v, w)] for zero-mean (v, w) with covariance blocks Cvv, Cvw = E[v w'], Cww
        (None = zero): the trace <Cov, dQC/dtheta> that the log-det barrier's gradient needs."""
        n = self.n
        if Cvv is None:
            Cvv = np.zeros((n, n))
        if Cvw is None:
            Cvw = np.zeros((n, n))
        if self.act.kind == "slope":
            al, be = self.act.alpha, self.act.beta
            g = {"lam": -2 * al * be * np.diag(Cvv) + 2 * (al + be) * np.diag(Cvw) - 2 * np.diag(Cww)}
        else:
            gsz, m = self.act.group_size, self.m

            def blocks(C):  # (m, g, g): the group-diagonal blocks
                idx = np.arange(m)
                return C.reshape(m, gsz, m, gsz)[idx, :, idx, :]

            Bvv, Bvw, Bww = blocks(Cvv), blocks(Cvw), blocks(Cww)
            tr = lambda B: np.trace(B, axis1=1, axis2=2)  # noqa: E731
            e = self.G[0, :gsz]
            quad = lambda B: np.einsum("i,jik,k->j", e, B, e)  # noqa: E731  e' B_j e
            vv, ww, vw = tr(Bvv), tr(Bww), tr(Bvw)
            vEv = self.cE * vv + self.sE * quad(Bvv)
            vEw = self.cE * vw + self.sE * quad(Bvw)
            wEw = self.cE * ww + self.sE * quad(Bww)
            g = {"lam": vv - ww, "a": vEv - vEw, "b": vEw - wEw}
            if "b" not in self.names:
                g["a"] = g["a"] + g["b"]
        if self.tied:
            return np.concatenate([g[k].sum(keepdims=True) for k in self.names])
        return np.concatenate([g[k] for k in self.names])

    def reference(self, scale: float) -> dict[str, np.ndarray]:
        """Multipliers lam = scale (a = b = 0): with the right scales, a strictly feasible point."""
        out = {"lam": np.full(self.m, float(scale))}
        if self.act.kind != "slope":
            out["a"] = np.zeros(self.m)
            if "b" in self.names:
                out["b"] = np.zeros(self.m)
        return out

    def gain_sq(self) -> float:
        """K with  -q(v, w)/lam >= |w|^2 - K |v|^2  for the reference multipliers (lam I, a = b = 0)."""
        if self.act.kind == "slope":
            return self.act.alpha ** 2 + self.act.beta ** 2
        return 1.0


def linear_maps(qc: LayerQC) -> dict[str, tuple[np.ndarray, np.ndarray | None]]:
    """For each of P, R, Q: matrices (A_d, A_c) with d = A_d theta and c = A_c theta (the QC is linear).

    Used to state the QC inside a modelling language (cvxpy); obtained by evaluating on unit vectors.
    """
    cols: dict[str, list] = {"P": [], "R": [], "Q": []}
    for i in range(qc.size):
        e = np.zeros(qc.size)
        e[i] = 1.0
        for key, mat in zip("PRQ", qc.matrices(qc.unpack(e))):
            cols[key].append((mat.d, mat.c))
    out = {}
    for key, lst in cols.items():
        Ad = np.stack([d for d, _ in lst], axis=1)
        Ac = None if lst[0][1] is None else np.stack([c for _, c in lst], axis=1)
        out[key] = (Ad, Ac)
    return out

"""ADMM for the convex two-layer ReLU program with quadratic per-iteration cost, plus a cone polish.

Splitting (Bai, Gautam & Sojoudi): with u = (v_1..v_P, w_1..w_P) stored as a (d, 2P) matrix U,

    minimise ½‖F u − y‖² + β Σ_j ‖z_j‖ + I(s ≥ 0)   s.t.  u = z,  G u = s,

where F u = Σ_i D_i X (v_i − w_i) and G u = ((2D_i − I) X̃ u_j)_j with X̃ the row-equilibrated data
(x_k/‖x_k‖ scaled by √γ: same cones). Because (2D_i − I)² = I, GᵀG is the block-diagonal I ⊗ X̃ᵀX̃, so
the u-update matrix is I ⊗ M + FᵀF with M = ρ(I + X̃ᵀX̃) (d × d) plus a rank-n term; by Woodbury it needs
one Cholesky of the n × n matrix C = I + K ∘ (2 D Dᵀ), K = X M⁻¹ Xᵀ, cached for the run (recomputed only
when ρ is rebalanced). Every iteration is a handful of (n, d) × (d, 2P)
products — O(n d P) — batched over all patterns.

ADMM (over-relaxed 1.6; optional residual-balancing ρ, off by default) stops on its relative primal/dual
residuals or a time limit. `solve_admm` then either (polish="project") polishes the group-sparse iterate
z by projecting every column exactly onto its cone (NNLS), so cone violations are at round-off (≤ 1e-8),
and reports the rigorous certificate, trying as dual points y − F u for z, for the last u and for the
ergodic average of u; or (polish="ipm") hands the patterns ADMM found active to the interior-point
method (`ipm.solve_interior`), which finishes to a certified optimum over all patterns.
"""
from __future__ import annotations

import sys
import time

import numpy as np
import scipy.linalg as sla

from verify.train.convex.problem import ConvexProblem


class _Factor:
    """Cached factorisations for one ρ."""

    def __init__(self, prob: ConvexProblem, rho: float, Xg: np.ndarray):
        X = prob.X
        d = prob.d
        self.rho = rho
        M = rho * (np.eye(d) + Xg.T @ Xg)
        self.Mc = sla.cho_factor(M)
        K = X @ sla.cho_solve(self.Mc, X.T)
        Df = prob.D.astype(float)
        C = np.eye(prob.n) + K * (2.0 * (Df @ Df.T))
        self.Cc = sla.cho_factor(C)

    def solve(self, prob: ConvexProblem, Df: np.ndarray, B: np.ndarray) -> np.ndarray:
        """(I ⊗ M + FᵀF)⁻¹ B for B of shape (d, 2P); F acts on v − w, so its products use P columns."""
        P = prob.P
        Q = sla.cho_solve(self.Mc, B)
        Fq = ((prob.X @ (Q[:, :P] - Q[:, P:])) * Df).sum(axis=1)
        t = sla.cho_solve(self.Cc, Fq)
        H = prob.X.T @ (Df * t[:, None])
        return Q - sla.cho_solve(self.Mc, np.concatenate([H, -H], axis=1))


def admm(prob: ConvexProblem, rho: float | None = None, max_iters: int = 20_000, tol: float = 1e-6,
         time_limit: float | None = None, progress: bool = False, warm: dict | None = None,
         adapt_every: int = 0, relax: float = 1.6, gamma: float = 10.0, equilibrate: bool = True) -> dict:
    """Run ADMM until primal and dual residuals are below `tol` (relative); returns the iterates.

    equilibrate: the cone rows use x_k/‖x_k‖ (a positive row scaling: same cones, better conditioning;
    GᵀG keeps its identical diagonal blocks). gamma: weight of the cone splitting's penalty relative to ρ."""
    X, y = prob.X, prob.y
    Xg = X / np.linalg.norm(X, axis=1, keepdims=True).clip(1e-300) if equilibrate else X
    Xg = Xg * np.sqrt(gamma)
    P = prob.P
    Df = prob.D.astype(float)
    E = np.concatenate([Df, Df], axis=1)  # (n, 2P) gates
    S = 2.0 * E - 1.0  # cone signs
    sig = np.concatenate([np.ones(P), -np.ones(P)])
    beta = prob.beta
    if rho is None:
        rho = 0.2  # tuned on the breast-cancer reference (with gamma = 10); see docs/convex_training.md
    t0 = time.perf_counter()
    fac = _Factor(prob, rho, Xg)
    Fty = (X.T @ (E * y[:, None])) * sig  # Fᵀy, (d, 2P)
    if warm:  # U, Z, A required; S (slack) and N (its scaled dual) default to max(GU, 0) and 0
        U, Z, A = (warm[k].copy() for k in ("U", "Z", "A"))
        Sv = warm["S"].copy() if warm.get("S") is not None else np.maximum(S * (Xg @ U), 0.0)
        N = warm["N"].copy() if warm.get("N") is not None else np.zeros_like(Sv)
        rho = warm.get("rho", rho)
        if rho != fac.rho:
            fac = _Factor(prob, rho, Xg)
    else:
        U = np.zeros((prob.d, 2 * P))
        Z = U.copy()
        A = U.copy()  # scaled dual of u = z
        Sv = np.zeros((prob.n, 2 * P))  # slack s = G u
        N = Sv.copy()  # scaled dual of G u = s
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=max_iters, desc="ADMM", file=sys.stderr, leave=False, mininterval=0.5)
    it = 0
    r_p = r_d = np.inf
    U_sum, n_sum = np.zeros_like(U), 0  # average of u over [2^k, now]: an ergodic dual candidate
    converged = False
    for it in range(1, max_iters + 1):
        B = Fty + rho * (Z - A) + rho * (Xg.T @ (S * (Sv - N)))
        U = fac.solve(prob, Df, B)
        GU = S * (Xg @ U)
        if relax != 1.0:  # over-relaxation
            Uh = relax * U + (1 - relax) * Z
            GUh = relax * GU + (1 - relax) * Sv
        else:
            Uh, GUh = U, GU
        # z-update: group soft-thresholding of U + A
        Vz = Uh + A
        nrm = np.linalg.norm(Vz, axis=0)
        shrink = np.maximum(0.0, 1.0 - (beta / rho) / np.maximum(nrm, 1e-300))
        Z_old = Z
        Z = Vz * shrink
        S_old = Sv
        Sv = np.maximum(GUh + N, 0.0)
        A += Uh - Z
        N += GUh - Sv
        if it & (it - 1) == 0:  # power of two: restart the average
            U_sum[:] = 0.0
            n_sum = 0
        U_sum += U
        n_sum += 1
        if it % 20 == 0 or it == max_iters:
            rp = np.sqrt(np.sum((U - Z) ** 2) + np.sum((GU - Sv) ** 2))
            rd = rho * np.sqrt(np.sum((Z - Z_old) ** 2) + np.sum((Xg.T @ (S * (Sv - S_old))) ** 2))
            sc_p = max(np.sqrt(np.sum(U ** 2) + np.sum(GU ** 2)), np.sqrt(np.sum(Z ** 2) + np.sum(Sv ** 2)), 1e-12)
            sc_d = rho * max(np.sqrt(np.sum(A ** 2) + np.sum((Xg.T @ (S * N)) ** 2)), 1e-12)
            r_p, r_d = rp / sc_p, rd / sc_d
            if bar is not None:
                bar.update(20)
                bar.set_postfix(r_p=f"{r_p:.1e}", r_d=f"{r_d:.1e}", refresh=False)
            if r_p < tol and r_d < tol:
                converged = True
                break
            if time_limit is not None and time.perf_counter() - t0 > time_limit:
                break
            if adapt_every and it % adapt_every == 0:
                ratio = r_p / max(r_d, 1e-300)
                if ratio > 10.0 or ratio < 0.1:
                    f = 5.0 if ratio > 10 else 0.2
                    rho *= f
                    A /= f
                    N /= f
                    fac = _Factor(prob, rho, Xg)
    if bar is not None:
        bar.close()
    return {"U": U, "Z": Z, "A": A, "S": Sv, "N": N, "rho": rho, "iters": it, "U_avg": U_sum / max(n_sum, 1), "r_p": r_p, "r_d": r_d,
            "converged": converged, "seconds": time.perf_counter() - t0}


def split(prob: ConvexProblem, U: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(d, 2P) stacked variables → (V, W)."""
    return U[:, :prob.P], U[:, prob.P:]


def solve_admm(prob: ConvexProblem, tol: float = 1e-5, max_iters: int = 20_000, time_limit: float | None = None,
               rho: float | None = None, progress: bool = False, polish: str = "project",
               working_set: int = 300, screen_iters: int = 100) -> dict:
    """ADMM, then a polish and the certificate; returns V, W, certificate, stats.

    polish="project": every column of the iterate is projected onto its cone (NNLS) and certified with
    λ = y − ŷ (moderate accuracy: the certificate is as good as the ADMM iterate).
    polish="ipm": ADMM runs at most `screen_iters` iterations and its iterate only chooses the
    interior-point method's first working set (the patterns with the largest ‖z_v‖ + ‖z_w‖, at most
    `working_set`; all patterns when P ≤ working_set),
    and `ipm.solve_interior` finishes exactly (column generation with pricing over all patterns), so
    the final point and its certificate are the IPM's, not ADMM's."""
    t0 = time.perf_counter()
    if polish not in ("project", "ipm"):
        raise ValueError(f"polish must be 'project' or 'ipm', not {polish!r}")
    if polish == "ipm":
        max_iters = min(max_iters, screen_iters)
    st = admm(prob, rho=rho, tol=tol, max_iters=max_iters, time_limit=time_limit, progress=progress)
    out = {"iters": st["iters"], "r_p": st["r_p"], "r_d": st["r_d"], "converged": st["converged"], "rho": st["rho"]}
    if polish == "ipm":
        from verify.train.convex.ipm import solve_interior

        Z = st["Z"]
        score = np.linalg.norm(Z[:, :prob.P], axis=0) + np.linalg.norm(Z[:, prob.P:], axis=0)
        cols = np.argsort(-score)[:working_set] if prob.P > working_set else None
        cols = cols[score[cols] > 0] if cols is not None else None
        r = solve_interior(prob, init_cols=cols if cols is not None and cols.size else None, working_set=working_set)
        out.update({"V": r["V"], "W": r["W"], "certificate": r["certificate"], "ipm_iters": r["iters"],
                    "rounds": r["rounds"], "working_set": r["working_set"]})
    else:
        V, W = prob.project_to_cones(*split(prob, st["Z"]))
        duals = [prob.y - prob.predict(*split(prob, U)) for U in (st["U"], st["U_avg"])]
        out.update({"V": V, "W": W, "certificate": prob.certificate(V, W, duals=duals)})
    out["seconds"] = time.perf_counter() - t0
    return out

"""Convex adversarial training: the robust counterpart of the convex program for ℓ∞ perturbations.

For a training point x_k perturbed by ‖δ‖∞ ≤ ε (bias feature not perturbed), requiring every neuron's
pattern to stay fixed on the whole box makes the network affine there, which turns the worst case into a
closed form:
    cone constraints   (2D_ik − 1) x_kᵀ v_i ≥ ε ‖v_i‖₁     (and the same for w_i; ‖·‖₁ over features)
    worst-case loss    ½ (|ŷ_k − y_k| + ε ‖Σ_i D_ik (v_i − w_i)‖₁)².
The program stays convex (an SOCP). Its optimum upper-bounds the robust training loss of the recovered
network, and a training point with y_k ŷ_k − ε‖Σ_i D_ik (v_i − w_i)‖₁ > 0 is provably robust.
"""
from __future__ import annotations

import time

import numpy as np

from verify.train.convex.problem import ConvexProblem


def solve_robust(prob: ConvexProblem, eps: float, bias: bool = True, solver: str = "CLARABEL",
                 eps_tol: float = 1e-8) -> dict:
    """Solve the ℓ∞-robust convex program with cvxpy; returns V, W, the certificate dict and the
    provably robust training accuracy."""
    import cvxpy as cp

    t0 = time.perf_counter()
    if not prob.D.all(axis=0).any():  # the all-active pattern keeps a robust linear model feasible
        prob = ConvexProblem(prob.X, prob.y, np.concatenate([prob.D, np.ones((prob.n, 1), bool)], axis=1), prob.beta)
    X, y, Df = prob.X, prob.y, prob.D.astype(float)
    n, d, P = prob.n, prob.d, prob.P
    df = d - 1 if bias else d  # perturbed coordinates
    S = 2 * Df - 1
    V = cp.Variable((d, P))
    W = cp.Variable((d, P))
    pred = cp.sum(cp.multiply(Df, X @ (V - W)), axis=1)
    G = Df @ (V - W)[:df].T  # (n, df): the network's gradient at each training point
    spread = cp.norm1(G, axis=1)
    t = cp.Variable(n, nonneg=True)
    ones = np.ones((n, 1))
    cons = [t >= cp.abs(pred - y) + eps * spread,
            cp.multiply(S, X @ V) >= ones @ cp.reshape(eps * cp.norm1(V[:df], axis=0), (1, P), order="C"),
            cp.multiply(S, X @ W) >= ones @ cp.reshape(eps * cp.norm1(W[:df], axis=0), (1, P), order="C")]
    obj = 0.5 * cp.sum_squares(t) + prob.beta * (cp.sum(cp.norm(V, 2, axis=0)) + cp.sum(cp.norm(W, 2, axis=0)))
    problem = cp.Problem(cp.Minimize(obj), cons)
    s = solver.upper()
    tol = eps_tol
    opts = {"SCS": {"eps_abs": tol, "eps_rel": tol, "max_iters": 100_000},
            "CLARABEL": {"tol_gap_abs": tol, "tol_gap_rel": tol, "tol_feas": tol}}.get(s, {})
    problem.solve(solver=s, **opts)
    if V.value is None:
        raise RuntimeError(f"robust program failed: {problem.status}")
    Vv, Wv = np.asarray(V.value), np.asarray(W.value)
    from verify.train.convex.network import to_module

    Xin = X[:, :-1] if bias else X
    certified = certify_linf(to_module(Vv, Wv, bias=bias, dtype=__import__("torch").float64), Xin, y, eps)
    return {"V": Vv, "W": Wv, "D": prob.D, "status": problem.status, "seconds": time.perf_counter() - t0,
            "certificate": {"primal": float(problem.value), "gap": None, "status": problem.status,
                            "cone_violation": prob.cone_violation(Vv, Wv)},
            "robust_train_acc": float(np.mean(certified))}


def _box(X: np.ndarray, eps: float, lo: float | None, hi: float | None) -> tuple[np.ndarray, np.ndarray]:
    L, U = X - eps, X + eps
    if lo is not None:
        L = np.maximum(L, lo)
    if hi is not None:
        U = np.minimum(U, hi)
    return L, U


def certify_linf(net, X: np.ndarray, y: np.ndarray, eps: float, lo: float | None = None,
                 hi: float | None = None) -> np.ndarray:
    """Sound per-point robustness of a Linear → ReLU → Linear net on the ℓ∞ box (clipped to [lo, hi]):
    True where min over the box of y·f(x) > 0. Neurons whose pre-activation keeps its sign on the box
    are handled exactly (the net is affine in them); an unstable neuron contributes its interval bound."""
    from verify.train.convex.network import module_weights

    W1, b1, W2, b2 = module_weights(net)
    a = W2.ravel()
    L, U = _box(np.asarray(X, float), eps, lo, hi)
    c, r = (L + U) / 2, (U - L) / 2
    pre_c = c @ W1.T + b1
    pre_r = r @ np.abs(W1).T
    pl, pu = pre_c - pre_r, pre_c + pre_r
    active = pl >= 0
    unstable = (pl < 0) & (pu > 0)
    # affine part: Σ_{active} y a_j (w_jᵀx + b_j) + y b2, minimised exactly over the box
    coef = (y[:, None] * a[None, :] * active)  # (n, h)
    g = coef @ W1  # (n, d) gradient of the affine part
    aff = np.einsum("nd,nd->n", g, c) + (coef * b1[None, :]).sum(axis=1) + y * b2[0] - np.einsum("nd,nd->n", np.abs(g), r)
    # unstable neurons: y a_j relu(z) with z ∈ [pl, pu]: minimum is min(0, y a_j pu) when y a_j < 0, else 0
    ya = y[:, None] * a[None, :]
    unst = np.where(unstable & (ya < 0), ya * pu, 0.0).sum(axis=1)
    return aff + unst > 0


def pgd_attack(net, X: np.ndarray, y: np.ndarray, eps: float, lo: float | None = None, hi: float | None = None,
               steps: int = 50, restarts: int = 2, seed: int = 0) -> np.ndarray:
    """ℓ∞ PGD on the margin y·f(x); returns True where an adversarial example (y·f ≤ 0) was found."""
    import torch

    g = torch.Generator().manual_seed(seed)
    Xt = torch.as_tensor(X, dtype=torch.float32)
    yt = torch.as_tensor(y, dtype=torch.float32)
    L, U = (torch.as_tensor(b, dtype=torch.float32) for b in _box(np.asarray(X, float), eps, lo, hi))
    found = torch.zeros(len(y), dtype=torch.bool)
    for rr in range(restarts):
        x = L + (U - L) * torch.rand(Xt.shape, generator=g) if rr else Xt.clone()
        for _ in range(steps):
            x.requires_grad_(True)
            m = yt * net(x).squeeze(-1)
            found |= (m <= 0).detach()
            (grad,) = torch.autograd.grad(m.sum(), x)
            with torch.no_grad():
                x = torch.minimum(torch.maximum(x - 2.5 * eps / steps * grad.sign(), L), U)
        with torch.no_grad():
            found |= yt * net(x).squeeze(-1) <= 0
    return found.numpy()


def pgd_train(X: np.ndarray, y: np.ndarray, hidden: int, eps: float, beta: float, lo: float | None = None,
              hi: float | None = None, epochs: int = 300, seed: int = 0, lr: float = 1e-2):
    """PGD adversarial training (full batch, squared loss on the worst PGD point, weight decay β/2) of the
    same Linear(d, h) → ReLU → Linear(h, 1) architecture: the baseline for convex adversarial training."""
    import torch

    torch.manual_seed(seed)
    d = X.shape[1]
    net = torch.nn.Sequential(torch.nn.Linear(d, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, 1))
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    Xt = torch.as_tensor(X, dtype=torch.float32)
    yt = torch.as_tensor(y, dtype=torch.float32)
    L, U = (torch.as_tensor(b, dtype=torch.float32) for b in _box(np.asarray(X, float), eps, lo, hi))
    for _ in range(epochs):
        x = (L + (U - L) * torch.rand(Xt.shape)).requires_grad_(True)
        for _ in range(10):
            loss_in = ((net(x).squeeze(-1) - yt) ** 2).sum()
            (gx,) = torch.autograd.grad(loss_in, x)
            x = torch.minimum(torch.maximum(x.detach() + 2.5 * eps / 10 * gx.sign(), L), U).requires_grad_(True)
        opt.zero_grad()
        reg = sum((p ** 2).sum() for n_, p in net.named_parameters() if "weight" in n_ or n_ == "0.bias")
        loss = 0.5 * ((net(x.detach()).squeeze(-1) - yt) ** 2).sum() + 0.5 * beta * reg
        loss.backward()
        opt.step()
    return net

"""Cheap Lipschitz bounds: the product of layer norms (upper) and sampled / ascended quotients (lower).

Upper: prod_k |W_k| * Lip(sigma_k), with the exact spectral norm (SVD, float64) for l2 and the exact
induced norm (max absolute row sum) for l_inf, each inflated by a few ulps so rounding cannot make it low.

Lower: the Lipschitz constant is at least |f(x) - f(y)| / |x - y| for ANY pair, so every reported lower
bound is such a quotient evaluated in float64 (never a Jacobian norm, which could come from a point where
f is not differentiable). Candidates come from Jacobians at random points (the direction that J stretches
most), then gradient ascent on the quotient over pairs (x, y) -- for piecewise-linear nets the Jacobian
norm itself has zero gradient, the quotient of a finite pair does not.
"""
from __future__ import annotations

import numpy as np

from verify.lipsdp.network import LipNet

_ULP_MARGIN = 1e-12


def _mat_norm(W: np.ndarray, norm: str) -> float:
    return float(np.linalg.norm(W, 2)) if norm == "2" else float(np.abs(W).sum(axis=1).max())


def layer_norms(net: LipNet, norm: str) -> list[float]:
    return [_mat_norm(W, norm) for W in net.weights]


def norm_product(net: LipNet, norm: str = "2") -> float:
    """Certified upper bound: product of the layers' exact norms and the activations' constants; a residual
    layer A z + σ(W z) contributes |A| + Lip(σ) |W|."""
    out = 1.0
    for k, n in enumerate(layer_norms(net, norm)):
        if k < len(net.activations):
            c, A = net.activations[k].lipschitz(norm), net.skips[k]
            out *= c * n if A is None else _mat_norm(A, norm) + c * n
        else:
            out *= n
    return out * (1.0 + _ULP_MARGIN * (len(net.weights) + 1))


def _out_norm(t, norm: str):
    import torch

    return torch.linalg.vector_norm(t, ord=2 if norm == "2" else float("inf"), dim=-1)


def _in_norm(t, norm: str):
    import torch

    return torch.linalg.vector_norm(t, ord=2 if norm == "2" else float("inf"), dim=-1)


def _smooth_tangent(net: LipNet, x, d, beta: float):
    """(f_beta(x), J_beta(x) d): the net with ReLU-like kinks smoothed by softplus of sharpness beta,
    evaluated with its forward-mode tangent (cheaper than autograd's jvp)."""
    import torch
    import torch.nn.functional as F

    for k, W in enumerate(net.weights):
        Wt = torch.as_tensor(W, dtype=x.dtype)
        x_in, d_in = x, d
        x, d = x @ Wt.T, d @ Wt.T
        if net.biases[k] is not None:
            x = x + torch.as_tensor(net.biases[k], dtype=x.dtype)
        if k == len(net.activations):
            break
        act = net.activations[k]
        if act.kind == "slope":
            if act.name in ("relu", "leakyrelu"):
                lo = act.alpha if act.name == "relu" else min(act.alpha, act.beta)
                hi = act.beta if act.name == "relu" else max(act.alpha, act.beta)
                s = torch.sigmoid(beta * x)
                x, d = lo * x + (hi - lo) * F.softplus(x, beta=beta), (lo + (hi - lo) * s) * d
            elif act.name == "sigmoid":
                sx = torch.sigmoid(x)
                x, d = sx, sx * (1 - sx) * d
            elif act.name == "tanh":
                tx = torch.tanh(x)
                x, d = tx, (1 - tx * tx) * d
        elif act.kind == "groupsort" and act.group_size == 2:
            a, b = x[:, 0::2], x[:, 1::2]
            da, db = d[:, 0::2], d[:, 1::2]
            sw = torch.sigmoid(beta * (a - b))     # smoothed "a is the max" indicator
            mx = torch.maximum(a, b)
            mn = torch.minimum(a, b)
            x = torch.stack([mx, mn], -1).reshape(x.shape)
            d = torch.stack([sw * da + (1 - sw) * db, (1 - sw) * da + sw * db], -1).reshape(d.shape)
        elif act.kind == "groupsort":
            g = act.group_size
            xs = x.reshape(x.shape[0], -1, g)
            vals, idx = torch.sort(xs, dim=-1, descending=True)
            d = torch.gather(d.reshape(xs.shape), -1, idx).reshape(d.shape)
            x = vals.reshape(x.shape)
        else:
            g = act.group_size
            v = torch.tensor(act.v, dtype=x.dtype)
            xs, ds = x.reshape(x.shape[0], -1, g), d.reshape(d.shape[0], -1, g)
            pos = (xs * v).sum(-1, keepdim=True) > 0
            x = torch.where(pos, xs, xs - 2 * (xs * v).sum(-1, keepdim=True) * v).reshape(x.shape)
            d = torch.where(pos, ds, ds - 2 * (ds * v).sum(-1, keepdim=True) * v).reshape(d.shape)
        if net.skips[k] is not None:
            At = torch.as_tensor(net.skips[k], dtype=x.dtype)
            x, d = x + x_in @ At.T, d + d_in @ At.T
    return x, d


def auto_samples(net: LipNet, steps: int = 300, budget: float = 2e9) -> int:
    """Number of ascent starts that keeps the search within about `budget` flops (4 to 64)."""
    per = 6.0 * sum(W.size for W in net.weights) * steps
    return int(min(64, max(4, budget // max(per, 1.0))))


def lower_bound(net: LipNet, norm: str = "2", samples: int | None = None, steps: int = 300, seed: int = 0,
                scale: float = 1.0, time_limit: float = 8.0) -> float:
    """Largest |f(x)-f(y)|/|x-y| found (a true lower bound on the Lipschitz constant), float64.

    Ascent on the directional derivative |J_beta(x) u| of the smoothed net over (x, u) from `samples` random
    starts, sharpening beta geometrically; every 10 steps the TRUE quotient of the pair (x, x + h u) is
    evaluated and the best kept. The ascent stops early after `time_limit` seconds (deep nets).
    """
    import time

    import torch

    t_end = time.monotonic() + time_limit

    gen = torch.Generator().manual_seed(seed)
    n0 = net.dims[0]
    samples = samples or auto_samples(net, steps)
    x = (torch.randn(samples, n0, generator=gen, dtype=torch.float64) * scale).requires_grad_(True)
    p = torch.randn(samples, n0, generator=gen, dtype=torch.float64).requires_grad_(True)
    params = [x, p]
    m1 = [torch.zeros_like(t) for t in params]
    m2 = [torch.zeros_like(t) for t in params]
    lr, b1, b2 = 0.05 * scale, 0.9, 0.999
    growth = (2000.0) ** (1.0 / max(steps - 1, 1))
    best, beta = 0.0, 1.0 / scale

    def direction(p):
        if norm == "2":
            return p / p.norm(dim=1, keepdim=True).clamp_min(1e-300)
        return torch.tanh(p)

    for it in range(steps):
        u = direction(p)
        _, jv = _smooth_tangent(net, x, u, beta)
        val = _out_norm(jv, norm) / _in_norm(u, norm).clamp_min(1e-300)
        grads = torch.autograd.grad(-val.sum(), params, allow_unused=True)
        grads = [torch.zeros_like(t) if g is None else g for t, g in zip(params, grads)]
        with torch.no_grad():  # Adam (hand-written: torch.optim would import torch._dynamo, seconds)
            for t, g, a, b in zip(params, grads, m1, m2):
                a.mul_(b1).add_(g, alpha=1 - b1)
                b.mul_(b2).addcmul_(g, g, value=1 - b2)
                t.sub_(lr * (a / (1 - b1 ** (it + 1))) / ((b / (1 - b2 ** (it + 1))).sqrt() + 1e-12))
        beta *= growth
        if it % 10 == 9 or it == steps - 1:
            with torch.no_grad():
                u = direction(p)
                if norm != "2":
                    u = torch.sign(u)
                    u[u == 0] = 1.0
                h = 1e-4 * scale
                best = max(best, _quotients(net, x.detach(), x.detach() + h * u, norm).max().item())
            if time.monotonic() > t_end:
                break
    return float(best)


def _quotients(net: LipNet, x, y, norm: str):
    """|f(x)-f(y)|/|x-y| in float64, reduced by a rounding allowance so it stays a lower bound."""
    import torch

    with torch.no_grad():
        fx, fy = net.forward_torch(x), net.forward_torch(y)
        num = _out_norm(fx - fy, norm)
        den = _in_norm(x - y, norm)
        err = 1e-13 * (_out_norm(fx, norm) + _out_norm(fy, norm) + 1.0)
        q = (num - err).clamp_min(0.0) / den
        q[den <= 0] = 0.0
    return q

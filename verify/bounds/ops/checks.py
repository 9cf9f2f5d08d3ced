"""Sampling soundness checks for element-wise relaxations (used by the test suite and when adding an op).

`unary_violations(rule, fn, l, u, attrs, alpha)` samples points in every interval [l, u] (the endpoints, a
uniform grid and random points) and returns the largest relative violation of the interval rule and of the
lower and upper lines: max over samples of (lower - f(x)) / scale and (f(x) - upper) / scale with
scale = 1 + |f(x)| + |w*x| + |b|. Sound relaxations give values <= ~1e-15 in float64; points where f is NaN
(outside the function's domain) are skipped, and so are infinite sample points.
"""
from __future__ import annotations

from typing import Any, Callable

import torch

_CAP = 1e6  # sample points of an infinite interval come from [-_CAP, _CAP] ∩ [l, u]


def sample_points(l: torch.Tensor, u: torch.Tensor, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """(P, *l.shape) points in [l, u]: both ends, an even grid and uniform random points."""
    lo = torch.where(torch.isfinite(l), l, torch.minimum(u, torch.full_like(u, -_CAP)).clamp(min=-_CAP))
    hi = torch.where(torch.isfinite(u), u, torch.maximum(lo, torch.full_like(lo, _CAP)))
    lo, hi = lo.clamp(max=_CAP), hi.clamp(min=-_CAP)
    hi = torch.maximum(hi, lo)
    grid = torch.linspace(0, 1, n, dtype=l.dtype).reshape(-1, *([1] * l.dim()))
    rnd = torch.rand((n, *l.shape), dtype=l.dtype, generator=generator)
    t = torch.cat([grid.expand(n, *l.shape), rnd])
    return torch.cat([lo.unsqueeze(0), hi.unsqueeze(0), lo + t * (hi - lo)]).clamp(max=hi).clamp(min=lo)


def _excess(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a - b, with 0 where a == b (so inf - inf counts as no violation)."""
    return torch.where(a == b, torch.zeros_like(a), a - b)


def _rel(excess: torch.Tensor, scale: torch.Tensor, valid: torch.Tensor) -> float:
    v = torch.where(valid, excess / scale, torch.full_like(excess, -torch.inf))
    v = torch.where(torch.isnan(v) & valid, torch.full_like(v, torch.inf), v)  # NaN excess is a violation
    return float(v.max()) if v.numel() else float("-inf")


def unary_violations(rule, fn: Callable[[torch.Tensor], torch.Tensor], l: torch.Tensor, u: torch.Tensor,
                     attrs: dict[str, Any] | None = None, alpha=None, n: int = 64,
                     generator: torch.Generator | None = None) -> dict[str, float]:
    """Largest relative violations {"ibp", "lower", "upper"} of `rule` on [l, u] against `fn`.

    `alpha` may be shared (shape of l, or stacked (P, *l.shape)) or per row (an extra axis after the batch
    axis); per-row lines are checked for every row. A NaN line counts as an infinite violation."""
    attrs = attrs or {}
    X = sample_points(l, u, n, generator)                      # (P, B, ...)
    Y = fn(X)
    valid = ~torch.isnan(Y)
    lo, hi = rule.interval(l, u, attrs)
    sc = 1 + Y.abs().nan_to_num(0.0, 0.0, 0.0)
    out = {"ibp": max(_rel(_excess(lo, Y), sc, valid), _rel(_excess(Y, hi), sc, valid))}
    lines = rule.relax(l, u, attrs, alpha)
    nd = max(t.dim() for t in lines)
    lw, lb, uw, ub = (t.unsqueeze(1) if t.dim() < nd else t for t in lines)  # as the engine broadcasts them
    lw, lb, uw, ub = torch.broadcast_tensors(lw, lb, uw, ub)
    if nd > l.dim():  # per-row lines (B, S, ...): check every row
        X, Y, valid, sc = X.unsqueeze(2), Y.unsqueeze(2), valid.unsqueeze(2), sc.unsqueeze(2)
    with torch.no_grad():
        low = torch.where(lw == 0, lb.expand_as(lw), lw * X + lb)   # 0 * x is 0 (b may be infinite)
        up = torch.where(uw == 0, ub.expand_as(uw), uw * X + ub)
        s_l = sc + (lw * X).abs().nan_to_num(0.0, 0.0, 0.0) + lb.abs().nan_to_num(0.0, 0.0, 0.0)
        s_u = sc + (uw * X).abs().nan_to_num(0.0, 0.0, 0.0) + ub.abs().nan_to_num(0.0, 0.0, 0.0)
        everywhere = torch.ones_like(valid)
        out["lower"] = max(_rel(_excess(low, Y), s_l, valid), _rel(low * 0, s_l, torch.isnan(low) & everywhere))
        out["upper"] = max(_rel(_excess(Y, up), s_u, valid), _rel(up * 0, s_u, torch.isnan(up) & everywhere))
    return out


def interval_batch(seed: int, n: int = 64, centre: float = 0.0, log_width: float = 0.0,
                   special: tuple[float, ...] = (), dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch of test intervals mixing regimes: around `centre` with widths near 10**log_width, degenerate
    (l = u), tiny, very wide, and straddling each point of `special` (inflection points, kinks, periods)."""
    g = torch.Generator().manual_seed(seed)
    k = max(n // 6, 1)
    parts_l, parts_u = [], []

    def add(lo, hi):
        parts_l.append(lo)
        parts_u.append(torch.maximum(lo, hi))

    c = centre + torch.randn(k, generator=g, dtype=dtype) * 10 ** min(log_width, 3.0)
    w = 10 ** (log_width + torch.randn(k, generator=g, dtype=dtype))
    add(c - w * torch.rand(k, generator=g, dtype=dtype), c + w * torch.rand(k, generator=g, dtype=dtype))
    add(c, c.clone())                                                     # degenerate
    t = 10 ** (-9 + 6 * torch.rand(k, generator=g, dtype=dtype))
    add(c, c + t)                                                         # tiny
    wide = 10 ** (1 + 2 * torch.rand(k, generator=g, dtype=dtype))
    add(c - wide * torch.rand(k, generator=g, dtype=dtype), c + wide * torch.rand(k, generator=g, dtype=dtype))
    for p in special:
        a = torch.rand(k, generator=g, dtype=dtype) * 10 ** log_width
        b = torch.rand(k, generator=g, dtype=dtype) * 10 ** log_width
        add(p - a, p + b)
        add(torch.full((k,), p, dtype=dtype), p + b)                      # an end exactly on the point
    return torch.cat(parts_l), torch.cat(parts_u)


def alpha_variants(rule, l: torch.Tensor, u: torch.Tensor, attrs: dict[str, Any], seed: int = 0,
                   rows: int = 3) -> list:
    """None (the default lines) plus random parameters mapped into the valid set by `alpha_project`:
    shared ones (shape of `alpha_init`) and per-row ones (an objective axis of `rows` after the batch)."""
    out = [None]
    if not getattr(rule, "has_alpha", False):
        return out
    a0 = rule.alpha_init(l, u, attrs)
    if a0 is None:
        return out
    g = torch.Generator().manual_seed(seed)
    scale = (u - l).abs().nan_to_num(1.0, 1.0, 1.0).clamp(min=1e-3, max=1e3)
    for spread in (0.1, 1.0, 10.0):
        noise = torch.randn(a0.shape, generator=g, dtype=a0.dtype) * spread * (1 + scale)
        out.append(rule.alpha_project(a0 + noise, l, u, attrs))
    stacked = a0.dim() > l.dim()
    ax = 2 if stacked else 1
    per_row = a0.unsqueeze(ax).expand(*a0.shape[:ax], rows, *a0.shape[ax:])
    noise = torch.randn(per_row.shape, generator=g, dtype=a0.dtype) * (1 + scale.unsqueeze(1))
    out.append(rule.alpha_project(per_row + noise, l, u, attrs))
    return out


def worst_violation(rule, fn, l, u, attrs=None, seed: int = 0, n: int = 48) -> dict[str, float]:
    """The largest violations of `unary_violations` over the default and random valid parameters."""
    attrs = attrs or {}
    g = torch.Generator().manual_seed(seed)
    worst = {"ibp": -float("inf"), "lower": -float("inf"), "upper": -float("inf")}
    for alpha in alpha_variants(rule, l, u, attrs, seed):
        v = unary_violations(rule, fn, l, u, attrs, alpha, n=n, generator=g)
        worst = {k: max(worst[k], v[k]) for k in worst}
    return worst

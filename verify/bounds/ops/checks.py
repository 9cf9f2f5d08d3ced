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
    lw, lb, uw, ub = rule.relax(l, u, attrs, alpha)
    if lw.dim() > l.dim():  # per-row lines (B, S, ...): check every row
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

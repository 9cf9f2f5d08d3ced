"""ReLU and LeakyReLU: exact when stable, the triangle relaxation when l < 0 < u.

Upper line: the chord through (l, f(l)) and (u, f(u)). Lower line through the origin with slope alpha in
[a, 1] (a = negative slope; 0 for ReLU), which α-CROWN optimises. The default slope is CROWN's adaptive
choice: 1 when u >= -l, else a.
"""
from __future__ import annotations

import torch

from verify.bounds.ops.base import UnaryRule, register


@register("relu")
class ReluRule(UnaryRule):
    has_alpha = True
    row_alpha = True

    @staticmethod
    def _slope(attrs) -> float:
        return 0.0

    def interval(self, l, u, attrs):
        a = self._slope(attrs)
        f = (lambda t: torch.where(t >= 0, t, a * t)) if a else torch.relu
        return f(l), f(u)

    def needs_bounds(self, l, u, attrs):
        return (l < 0) & (u > 0)

    def alpha_init(self, l, u, attrs):
        a = self._slope(attrs)
        return torch.where(u >= -l, torch.ones_like(l), torch.full_like(l, a))

    def alpha_project(self, alpha, l, u, attrs):
        return alpha.clamp(self._slope(attrs), 1.0)

    def relax(self, l, u, attrs, alpha=None):
        a = self._slope(attrs)
        active = l >= 0
        inactive = u <= 0
        unstable = ~(active | inactive)
        width = u - l
        if bool(torch.isfinite(width).all()):  # the common case, in fewer tensor ops (hot in input splitting)
            return self._relax_finite(l, u, a, active, unstable, width, alpha)
        # chord slope for unstable neurons (denominator > 0 there); with an infinite end the chord
        # degenerates to the line through the finite end with the far side's slope (1 or a)
        lfin, ufin = torch.isfinite(l), torch.isfinite(u)
        zero = torch.zeros_like(l)
        both = unstable & lfin & ufin
        den = torch.where(both, u - l, torch.ones_like(u))
        k = torch.where(both, (torch.where(both, u, zero) - a * torch.where(both, l, zero)) / den, torch.ones_like(l))
        k = torch.where(unstable & ~lfin & ufin, torch.full_like(l, a), k)
        ub = torch.where(both, (a - k) * torch.where(both, l, zero), zero)  # chord: k*x + (a - k)*l
        ub = torch.where(unstable & lfin & ~ufin, (a - 1) * torch.where(lfin, l, zero), ub)
        ub = torch.where(unstable & ~lfin & ufin, (1 - a) * torch.where(ufin, u, zero), ub)
        ub = torch.where(unstable & ~lfin & ~ufin, torch.full_like(l, torch.inf), ub)
        k = torch.where(unstable & ~lfin & ~ufin, zero, k)
        uw = torch.where(active, torch.ones_like(l), torch.where(inactive, torch.full_like(l, a), k))
        if alpha is None:
            alpha = self.alpha_init(l, u, attrs)
        lw = torch.where(active, torch.ones_like(l), torch.where(inactive, torch.full_like(l, a), torch.zeros_like(l)))
        if alpha.dim() > l.dim():  # per-objective-row alphas (B, S, ...) against bounds (B, ...)
            lw = lw.unsqueeze(1)
            unstable_b = unstable.unsqueeze(1)
        else:
            unstable_b = unstable
        lw = torch.where(unstable_b, alpha, lw)
        lb = torch.zeros_like(ub)
        return lw, lb, uw, ub

    def relax_cached(self, l, u, attrs, alpha, cache, key):
        """Only the lower slope on unstable neurons depends on α: the rest of the relaxation is computed
        once per (l, u) and kept in `cache[key]`. The slope is blended in with a float mask (`lerp` with
        weight 0 or 1 returns one end exactly), which on CPU costs a fraction of `torch.where`'s time."""
        st = cache.get(key)
        if st is None:
            lw0, lb, uw, ub = self.relax(l, u, attrs, None)
            unstable = ((l < 0) & (u > 0)).to(l.dtype)
            st = cache[key] = (unstable, lw0, lb, uw, ub)
        unstable, lw0, lb, uw, ub = st
        if alpha is None:
            return lw0, lb, uw, ub
        if alpha.dim() > l.dim():  # per-objective-row alphas (B, S, ...) against bounds (B, ...)
            return torch.lerp(lw0.unsqueeze(1), alpha, unstable.unsqueeze(1)), lb, uw, ub
        return torch.lerp(lw0, alpha, unstable), lb, uw, ub

    def _relax_finite(self, l, u, a, active, unstable, width, alpha):
        """`relax` for finite bounds: the chord k·x + (a - k)·l with k = (u - a·l) / (u - l) on unstable
        neurons, the identity / slope-a line on stable ones."""
        stable_w = torch.where(active, torch.ones_like(l), torch.full_like(l, a)) if a else active.to(l.dtype)
        k = (u - a * l) / torch.where(unstable, width, torch.ones_like(width))
        uw = torch.where(unstable, k, stable_w)
        ub = torch.where(unstable, (a - k) * l, torch.zeros_like(l))
        if alpha is None:
            alpha = torch.where(u >= -l, torch.ones_like(l), torch.full_like(l, a)) if a else (u >= -l).to(l.dtype)
        if alpha.dim() > l.dim():  # per-objective-row alphas (B, S, ...) against bounds (B, ...)
            lw = torch.where(unstable.unsqueeze(1), alpha, stable_w.unsqueeze(1))
        else:
            lw = torch.where(unstable, alpha, stable_w)
        return lw, torch.zeros_like(ub), uw, ub


@register("leakyrelu")
class LeakyReluRule(ReluRule):
    """LeakyReLU; the negative slope defaults to 0.01 as in the concrete semantics (verify.graph.ops)."""

    @staticmethod
    def _slope(attrs) -> float:
        return float(attrs.get("alpha", 0.01))

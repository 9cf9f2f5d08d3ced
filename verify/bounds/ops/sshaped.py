"""Sigmoid and tanh: S-shaped functions, convex on (-inf, 0] and concave on [0, inf).

Relaxation (CROWN, Zhang et al. 2018), per neuron on [l, u]:
* u <= 0 (convex part): upper = chord; lower = tangent at a point t in [l, u].
* l >= 0 (concave part): lower = chord; upper = tangent at t in [l, u].
* l < 0 < u: the upper line is the tangent at t >= d_u, where the tangent at d_u >= 0 passes through
  (l, f(l)); if d_u >= u the chord is used. The lower line mirrors it with d_l <= 0 through (u, f(u)).
The tangent points t are α-CROWN's parameters (alpha[0] for the lower line, alpha[1] for the upper one);
`alpha_project` keeps them in their valid ranges so every choice is sound. d_u / d_l are found by bisection
that always keeps the end on the valid side, so rounding never makes a line unsound.
"""
from __future__ import annotations

import torch

from verify.bounds.ops.base import UnaryRule, register

_BISECT_STEPS = 40


class SShapedRule(UnaryRule):
    has_alpha = True

    def f(self, x):
        raise NotImplementedError

    def df(self, x):
        raise NotImplementedError

    def interval(self, l, u, attrs):
        return self.f(l), self.f(u)

    # -- tangent-point ranges ------------------------------------------------------------------------
    def _d_upper(self, l, u):
        """Smallest valid upper tangent point (>= 0) for the mixed case, or u where the chord is valid."""
        fl = self.f(l)
        lo = torch.zeros_like(l)
        hi = u.clone()
        # h(t) = f(t) + f'(t)(l - t) - f(l) is increasing on t >= 0; valid where h >= 0
        for _ in range(_BISECT_STEPS):
            mid = (lo + hi) / 2
            h = self.f(mid) + self.df(mid) * (l - mid) - fl
            ok = h >= 0
            hi = torch.where(ok, mid, hi)
            lo = torch.where(ok, lo, mid)
        return hi

    def _d_lower(self, l, u):
        """Largest valid lower tangent point (<= 0) for the mixed case, or l where the chord is valid."""
        fu = self.f(u)
        lo = l.clone()
        hi = torch.zeros_like(l)
        # g(t) = f(t) + f'(t)(u - t) - f(u) ; valid where g <= 0, g decreasing in t on t <= 0
        for _ in range(_BISECT_STEPS):
            mid = (lo + hi) / 2
            g = self.f(mid) + self.df(mid) * (u - mid) - fu
            ok = g <= 0
            lo = torch.where(ok, mid, lo)
            hi = torch.where(ok, hi, mid)
        return lo

    def tangent_ranges(self, l, u):
        """Valid tangent-point ranges (lower line: [a0, b0]; upper line: [a1, b1]) and chord masks."""
        mixed = (l < 0) & (u > 0)
        convex = u <= 0
        concave = l >= 0
        lm = torch.where(mixed, l, torch.full_like(l, -1.0))
        um = torch.where(mixed, u, torch.full_like(u, 1.0))
        du = self._d_upper(lm, um)
        dl = self._d_lower(lm, um)
        # lower line: tangent valid on [l, u] if convex; on [l, dl] if mixed; chord if concave or dl <= l
        lower_chord = concave | (mixed & (dl <= l))
        upper_chord = convex | (mixed & (du >= u))
        a0 = l
        b0 = torch.where(mixed, torch.minimum(dl, u), u)
        a1 = torch.where(mixed, torch.maximum(du, l), l)
        b1 = u
        return (a0, b0, lower_chord), (a1, b1, upper_chord)

    def alpha_init(self, l, u, attrs):
        (a0, b0, _), (a1, b1, _) = self.tangent_ranges(l, u)
        mixed = (l < 0) & (u > 0)
        t_low = torch.where(mixed, b0, (a0 + b0) / 2)
        t_up = torch.where(mixed, a1, (a1 + b1) / 2)
        return torch.stack([t_low, t_up])

    def alpha_project(self, alpha, l, u, attrs):
        (a0, b0, _), (a1, b1, _) = self.tangent_ranges(l, u)
        if alpha.dim() > l.dim() + 1:  # per-row alphas (2, B, S, ...)
            a0, b0, a1, b1 = (t.unsqueeze(1) for t in (a0, b0, a1, b1))
        t0 = torch.maximum(torch.minimum(alpha[0], b0), a0)
        t1 = torch.maximum(torch.minimum(alpha[1], b1), a1)
        return torch.stack([t0, t1])

    def relax(self, l, u, attrs, alpha=None):
        (a0, b0, lower_chord), (a1, b1, upper_chord) = self.tangent_ranges(l, u)
        if alpha is None:
            alpha = self.alpha_init(l, u, attrs)
        t0, t1 = alpha[0], alpha[1]
        per_row = t0.dim() > l.dim()
        lx, ux = (l.unsqueeze(1), u.unsqueeze(1)) if per_row else (l, u)
        if per_row:
            a0, b0, a1, b1 = (t.unsqueeze(1) for t in (a0, b0, a1, b1))
            lower_chord, upper_chord = lower_chord.unsqueeze(1), upper_chord.unsqueeze(1)
        t0 = torch.maximum(torch.minimum(t0, b0), a0)
        t1 = torch.maximum(torch.minimum(t1, b1), a1)
        fl, fu = self.f(lx), self.f(ux)
        width = ux - lx
        flat = width <= 0
        k = torch.where(flat, self.df(lx), (fu - fl) / torch.where(flat, torch.ones_like(width), width))
        chord_b = fl - k * lx
        tl_w = self.df(t0)
        tl_b = self.f(t0) - tl_w * t0
        tu_w = self.df(t1)
        tu_b = self.f(t1) - tu_w * t1
        lw = torch.where(lower_chord, k, tl_w)
        lb = torch.where(lower_chord, chord_b, tl_b)
        uw = torch.where(upper_chord, k, tu_w)
        ub = torch.where(upper_chord, chord_b, tu_b)
        return lw, lb, uw, ub


@register("sigmoid")
class SigmoidRule(SShapedRule):
    def f(self, x):
        return torch.sigmoid(x)

    def df(self, x):
        s = torch.sigmoid(x)
        return s * (1 - s)


@register("tanh")
class TanhRule(SShapedRule):
    def f(self, x):
        return torch.tanh(x)

    def df(self, x):
        return 1 - torch.tanh(x) ** 2

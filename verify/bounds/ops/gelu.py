"""GELU (exact, Erf-based, and the tanh approximation) and Erf.

GELU f(x) = x Φ(x) has f'' = φ(x)(2 - x²): convex on [-√2, √2], concave outside, so f' is monotone on the
three pieces (-inf, -√2], [-√2, √2], [√2, inf). The (slope, exact offset) relaxation of
`verify.bounds.ops.curvature` finds the solutions of f'(x) = k by bisection on each piece (the offsets are
widened by |f''|max times the squared final bracket, so the lines stay sound). The tanh approximation
0.5x(1 + tanh(√(2/π)(x + 0.044715x³))) has the same shape; its two inflection points are located once,
numerically, at import.

Erf is S-shaped (inflection at 0) with closed-form stationary points x = ±sqrt(log(2 / (√π k))).
"""
from __future__ import annotations

import math

import torch

from verify.bounds.ops.base import register
from verify.bounds.ops.curvature import SlopeRule, bisect_root

_SQRT2 = math.sqrt(2.0)
_INV_SQRT2PI = 1.0 / math.sqrt(2 * math.pi)
_C = math.sqrt(2.0 / math.pi)
_A = 0.044715
_FAR = 40.0          # beyond ±40, f' equals 0 or 1 to float64 precision: no root search needed there
_STEPS = 30          # the final bracket (width 2^-30 of the piece) enters the offset as d2_max*width^2/2


def _gelu(x):
    return 0.5 * x * (1.0 + torch.erf(x / _SQRT2))


def _dgelu(x):
    return 0.5 * (1.0 + torch.erf(x / _SQRT2)) + x * _INV_SQRT2PI * torch.exp(-0.5 * x * x)


def _gelu_tanh(x):
    return 0.5 * x * (1.0 + torch.tanh(_C * (x + _A * x ** 3)))


def _dgelu_tanh(x):
    t = torch.tanh(_C * (x + _A * x ** 3))
    return 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * _C * (1.0 + 3 * _A * x * x)


def _golden(fn, a: float, b: float, maximise: bool, steps: int = 200) -> float:
    """Extremum of a unimodal scalar function on [a, b] (float64 golden-section search)."""
    g = (math.sqrt(5) - 1) / 2
    s = -1.0 if maximise else 1.0
    val = lambda x: s * float(fn(torch.tensor(x, dtype=torch.float64)))
    c, d = b - g * (b - a), a + g * (b - a)
    for _ in range(steps):
        if val(c) < val(d):
            b = d
        else:
            a = c
        c, d = b - g * (b - a), a + g * (b - a)
    return (a + b) / 2


# inflection points of the tanh approximation: the minimum and maximum of its derivative
_TANH_INFL = (_golden(_dgelu_tanh, -3.0, 0.0, maximise=False), _golden(_dgelu_tanh, 0.0, 3.0, maximise=True))


@register("gelu")
class GeluRule(SlopeRule):
    """GELU; `attrs["approximate"]` is "none" (exact) or "tanh"."""

    global_range = (-0.171, math.inf)  # min of GELU: -0.16997 (exact), -0.17004 (tanh form)
    d2_max = 1.0                      # |f''| <= 2φ(0) = 0.80 (exact), about 0.8 (tanh form)

    @staticmethod
    def _tanh(attrs) -> bool:
        return attrs.get("approximate", "none") == "tanh"

    def f(self, x, attrs):
        return _gelu_tanh(x) if self._tanh(attrs) else _gelu(x)

    def df(self, x, attrs):
        return _dgelu_tanh(x) if self._tanh(attrs) else _dgelu(x)

    def inflections(self, attrs):
        return _TANH_INFL if self._tanh(attrs) else (-_SQRT2, _SQRT2)

    def stationary(self, k, l, u, attrs):
        p0, p1 = self.inflections(attrs)
        df = lambda x: self.df(x, attrs)
        lc, uc = l.clamp(-_FAR, _FAR), u.clamp(-_FAR, _FAR)
        pieces = [(lc, uc.clamp(max=p0), False), (lc.clamp(min=p0), uc.clamp(max=p1), True),
                  (lc.clamp(min=p1), uc, False)]
        roots, width = [], torch.zeros_like(k)
        for a, b, inc in pieces:
            r, w = bisect_root(df, k, a, b, inc, _STEPS)
            roots.append(r)
            width = torch.maximum(width, w)
        return roots, width


@register("erf")
class ErfRule(SlopeRule):
    monotone = 1
    global_range = (-1.0, 1.0)
    _PEAK = 2.0 / math.sqrt(math.pi)

    def f(self, x, attrs):
        return torch.erf(x)

    def df(self, x, attrs):
        return self._PEAK * torch.exp(-x * x)

    def inflections(self, attrs):
        return (0.0,)

    def stationary(self, k, l, u, attrs):
        ok = (k > 0) & (k <= self._PEAK)
        ratio = (self._PEAK / k.clamp(min=torch.finfo(k.dtype).tiny)).clamp(min=1.0)
        r = torch.where(ok, torch.sqrt(torch.log(ratio)), torch.full_like(k, math.nan))
        return [r, -r], None

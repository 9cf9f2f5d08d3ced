"""Sin and cos: (slope, exact offset) lines over any interval, including several periods.

g(x) = sin(x) - k*x is stationary where cos(x) = k, i.e. on the two families x = ±acos(k) + 2πn. Along one
family g changes linearly with n, so its extremes over [l, u] are at the first and the last member inside
[l, u]; with the endpoints these six points hold the exact min and max of g (`verify.bounds.ops.curvature`).
For cos, cos(x) = k' has the families asin(-k) + 2πn and π - asin(-k) + 2πn.

Defaults: both lines take the chord slope (so on a convex or concave stretch one of them is the chord and the
other the parallel tangent); over a period or more the default slope is 0, giving the constant lines
[-1, 1] clipped to the exact range. α-CROWN optimises both slopes within the range of f' on [l, u].
"""
from __future__ import annotations

import math

import torch

from verify.bounds.ops.base import register
from verify.bounds.ops.curvature import SlopeRule

_TWO_PI = 2 * math.pi


def _family_ends(x0: torch.Tensor, l: torch.Tensor, u: torch.Tensor) -> list[torch.Tensor]:
    """First and last member of x0 + 2πn inside [l, u] (any point of [l, u] where there is none)."""
    n_lo = torch.ceil((l - x0) / _TWO_PI)
    n_hi = torch.floor((u - x0) / _TWO_PI)
    return [x0 + _TWO_PI * n_lo, x0 + _TWO_PI * n_hi]


class _PeriodicRule(SlopeRule):
    global_range = (-1.0, 1.0)
    d2_max = 1.0

    def bases(self, k: torch.Tensor) -> list[torch.Tensor]:
        raise NotImplementedError

    def stationary(self, k, l, u, attrs):
        pts = []
        for x0 in self.bases(k.clamp(-1.0, 1.0)):
            x0 = torch.where(k.abs() <= 1, x0, torch.full_like(x0, math.nan))
            pts += _family_ends(x0, l, u)
        return pts, None

    def alpha_init(self, l, u, attrs):
        alpha = super().alpha_init(l, u, attrs)
        wide = (u - l) >= _TWO_PI
        return torch.where(wide, torch.zeros_like(alpha), alpha)


@register("sin")
class SinRule(_PeriodicRule):
    def f(self, x, attrs):
        return torch.sin(x)

    def df(self, x, attrs):
        return torch.cos(x)

    def bases(self, k):
        a = torch.acos(k)
        return [a, -a]

    def slope_range(self, l, u, attrs):
        return _COS.interval(l, u, attrs)


@register("cos")
class CosRule(_PeriodicRule):
    def f(self, x, attrs):
        return torch.cos(x)

    def df(self, x, attrs):
        return -torch.sin(x)

    def bases(self, k):
        a = torch.asin(-k)
        return [a, math.pi - a]

    def slope_range(self, l, u, attrs):
        lo, hi = _SIN.interval(l, u, attrs)
        return -hi, -lo


_SIN, _COS = SinRule(), CosRule()

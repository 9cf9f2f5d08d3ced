"""Piecewise-linear and step functions: abs, clip (HardTanh, ReLU6), sign, floor, ceil.

* abs and clip use the (slope, exact offset) lines of `verify.bounds.ops.curvature` with their kinks as the
  candidate points: on an interval holding a kink the upper line is the chord and the lower line is the
  parallel line through the kink (α-CROWN moves its slope, as for ReLU).
* sign is a step: constant lines at its interval bounds (sound; exact when l and u have the same sign).
* floor and ceil: the constant lines when the interval holds no step, otherwise x - 1 <= floor(x) <= x and
  x <= ceil(x) <= x + 1, which hold everywhere.
"""
from __future__ import annotations

import math

import torch

from verify.bounds.ops.base import UnaryRule, register
from verify.bounds.ops.curvature import SlopeRule


@register("abs")
class AbsRule(SlopeRule):
    global_range = (0.0, math.inf)

    def f(self, x, attrs):
        return torch.abs(x)

    def df(self, x, attrs):
        return torch.sign(x)

    def inflections(self, attrs):
        return (0.0,)

    def stationary(self, k, l, u, attrs):
        return [], None

    def needs_bounds(self, l, u, attrs):
        return (l < 0) & (u > 0)


@register("clip")
class ClipRule(SlopeRule):
    """clamp(x, min, max); either bound may be None (absent)."""

    monotone = 1

    @staticmethod
    def _lims(attrs) -> tuple[float, float]:
        lo, hi = attrs.get("min"), attrs.get("max")
        return (-math.inf if lo is None else float(lo)), (math.inf if hi is None else float(hi))

    def f(self, x, attrs):
        lo, hi = attrs.get("min"), attrs.get("max")
        return torch.clamp(x, min=lo, max=hi)

    def df(self, x, attrs):
        lo, hi = self._lims(attrs)
        return ((x >= lo) & (x <= hi)).to(x.dtype)

    def inflections(self, attrs):
        return tuple(v for v in self._lims(attrs) if math.isfinite(v))

    def stationary(self, k, l, u, attrs):
        return [], None

    def slope_range(self, l, u, attrs):
        lo, hi = self._lims(attrs)
        inside = (u >= lo) & (l <= hi)
        allin = (l >= lo) & (u <= hi)
        return allin.to(l.dtype), inside.to(l.dtype)

    def needs_bounds(self, l, u, attrs):
        lo, hi = self._lims(attrs)
        return ((l < lo) & (u > lo)) | ((l < hi) & (u > hi))


class _StepRule(UnaryRule):
    """Monotone step functions: exact interval rule, constant (or unit-slope) lines."""

    fn = staticmethod(torch.sign)

    def interval(self, l, u, attrs):
        return self.fn(l), self.fn(u)

    def relax(self, l, u, attrs, alpha=None):
        lo, hi = self.interval(l, u, attrs)
        z = torch.zeros_like(l)
        return z, lo, z.clone(), hi


@register("sign")
class SignRule(_StepRule):
    fn = staticmethod(torch.sign)


@register("floor")
class FloorRule(_StepRule):
    fn = staticmethod(torch.floor)
    shift = (-1.0, 0.0)  # x + shift[0] <= floor(x) <= x + shift[1]

    def relax(self, l, u, attrs, alpha=None):
        lo, hi = self.interval(l, u, attrs)
        flat = (lo == hi) | ~(torch.isfinite(l) & torch.isfinite(u))
        one, z = torch.ones_like(l), torch.zeros_like(l)
        w = torch.where(flat, z, one)
        lb = torch.where(flat, lo, torch.full_like(l, self.shift[0]))
        ub = torch.where(flat, hi, torch.full_like(l, self.shift[1]))
        return w, lb, w.clone(), ub


@register("ceil")
class CeilRule(FloorRule):
    fn = staticmethod(torch.ceil)
    shift = (0.0, 1.0)

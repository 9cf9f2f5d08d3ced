"""Smooth convex/concave functions: exp, log, sqrt, reciprocal, softplus and pow with a constant exponent.

All use the (slope, exact offset) relaxation of `verify.bounds.ops.curvature`: on a convex stretch the
lower line with slope k is the tangent where f'(x) = k and the upper line with the chord slope is the chord,
so the defaults are CROWN's chord-and-tangent lines and α-CROWN moves the tangent point by moving k. The
stationary points f'(x) = k have closed forms here.

Domains (see curvature.py): log and sqrt hold on [l, u] ∩ [0, inf) (NaN below 0 in the network); log(0) =
-inf gives an infinite lower bound. Reciprocal (and negative integer powers) over an interval holding 0
get infinite bounds. Pow reads its exponent from `attrs["exponent"]`, which `prepare(node, graph)` (also
run by the interval rule) copies from the node's constant second input.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from verify.bounds.ops.base import register
from verify.bounds.ops.curvature import SlopeRule

_INF = math.inf


def _nan_where(cond, x):
    return torch.where(cond, x, torch.full_like(x, math.nan))


@register("exp")
class ExpRule(SlopeRule):
    monotone = 1
    global_range = (0.0, _INF)

    def f(self, x, attrs):
        return torch.exp(x)

    def df(self, x, attrs):
        return torch.exp(x)

    def stationary(self, k, l, u, attrs):
        return [_nan_where(k > 0, torch.log(k.clamp(min=torch.finfo(k.dtype).tiny)))], None


@register("log")
class LogRule(SlopeRule):
    monotone = 1
    domain = (0.0, _INF)

    def f(self, x, attrs):
        return torch.log(x)

    def df(self, x, attrs):
        return torch.reciprocal(x)

    def stationary(self, k, l, u, attrs):
        return [_nan_where(k > 0, torch.reciprocal(k))], None


@register("sqrt")
class SqrtRule(SlopeRule):
    monotone = 1
    domain = (0.0, _INF)
    global_range = (0.0, _INF)

    def f(self, x, attrs):
        return torch.sqrt(x)

    def df(self, x, attrs):
        return 0.5 / torch.sqrt(x)

    def stationary(self, k, l, u, attrs):
        return [_nan_where(k > 0, 0.25 / (k * k))], None


@register("reciprocal")
class ReciprocalRule(SlopeRule):
    """1/x: convex on x > 0, concave on x < 0; an interval holding 0 gets infinite bounds."""

    monotone = -1  # on each side of the pole (intervals with the pole are handled by `poles`)

    def f(self, x, attrs):
        return torch.reciprocal(x)

    def df(self, x, attrs):
        return -torch.reciprocal(x * x)

    def poles(self, l, u, attrs):
        return (l <= 0) & (u >= 0)

    def stationary(self, k, l, u, attrs):
        r = _nan_where(k < 0, torch.rsqrt(-k))
        return [r, -r], None


@register("softplus")
class SoftplusRule(SlopeRule):
    """log(1 + e^x) as torch computes it (linear above 20): the lower line is widened by the 2.1e-9 gap
    between that and the exact softplus, of which the lines are tangents."""

    monotone = 1
    global_range = (0.0, _INF)

    def f(self, x, attrs):
        return F.softplus(x)

    def exact(self, x):
        return torch.clamp(x, min=0) + torch.log1p(torch.exp(-x.abs()))

    def df(self, x, attrs):
        return torch.sigmoid(x)

    def stationary(self, k, l, u, attrs):
        ok = (k > 0) & (k < 1)
        kk = k.clamp(1e-300 if k.dtype == torch.float64 else 1e-38, 1.0)
        return [_nan_where(ok, torch.log(kk) - torch.log1p(-kk.clamp(max=1 - torch.finfo(k.dtype).eps)))], None

    def offsets(self, k, l, u, attrs):
        # exact offsets of the true softplus, widened by its largest gap to torch's thresholded one
        orig, self.f = self.f, (lambda x, a: self.exact(x))
        try:
            lo, hi = super().offsets(k, l, u, attrs)
        finally:
            self.f = orig
        return lo - torch.where(u > 20, 2.1e-9, 0.0).to(lo.dtype), hi


@register("pow")
class PowRule(SlopeRule):
    """x ** p for a constant scalar exponent p.

    Integer p: defined on all reals (p < 0: pole at 0). Even p is convex, odd p >= 3 is concave below 0 and
    convex above (inflection at 0). Non-integer p: domain x >= 0 (torch gives NaN below), convex for p > 1
    or p < 0, concave for 0 < p < 1."""

    def prepare(self, node, graph) -> None:
        """Store the constant exponent of `node` in its attributes (called before bounds are needed)."""
        if "exponent" in node.attrs:
            return
        name = node.inputs[1]
        if not graph.is_const(name):
            raise NotImplementedError("pow with a variable exponent")
        e = graph.constants[name]
        e = torch.as_tensor(e, dtype=torch.float64).flatten()
        if e.numel() == 0 or not bool((e == e[0]).all()):
            raise NotImplementedError("pow with a non-scalar exponent")
        node.attrs["exponent"] = float(e[0])

    def ibp(self, lo, hi, node, graph):
        self.prepare(node, graph)
        return self.interval(lo[0], hi[0], node.attrs)

    @staticmethod
    def _p(attrs) -> float:
        if "exponent" not in attrs:
            raise NotImplementedError("pow: exponent unknown (call PowRule.prepare(node, graph) first)")
        return float(attrs["exponent"])

    @staticmethod
    def _integer(p: float) -> bool:
        return float(p).is_integer()

    def domain_of(self, attrs):
        return (-_INF, _INF) if self._integer(self._p(attrs)) else (0.0, _INF)

    def monotone_of(self, attrs):
        p = self._p(attrs)
        if self._integer(p):
            return 1 if (p > 0 and int(p) % 2 == 1) else 0
        return 1 if p > 0 else -1

    def f(self, x, attrs):
        return torch.pow(x, self._p(attrs))

    def df(self, x, attrs):
        p = self._p(attrs)
        if p == 0:
            return torch.zeros_like(x)
        return p * torch.pow(x, p - 1)

    def inflections(self, attrs):
        return (0.0,) if self._integer(self._p(attrs)) else ()

    def poles(self, l, u, attrs):
        p = self._p(attrs)
        if p < 0 and self._integer(p):
            return (l <= 0) & (u >= 0)
        return None

    def stationary(self, k, l, u, attrs):
        p = self._p(attrs)
        q = p - 1
        if p == 0 or q == 0:
            return [], None
        r = (k / p).abs().pow(1.0 / q)
        return ([r, -r] if self._integer(p) else [r]), None

    def interval(self, l, u, attrs):
        p = self._p(attrs)
        if p == 0:
            return torch.ones_like(l), torch.ones_like(u)
        lo, hi = super().interval(l, u, attrs)
        if self._integer(p) and int(p) % 2 == 0:
            lo = lo.clamp(min=0)
            if p < 0:  # even negative power: positive on both sides of the pole
                lo = torch.where((l <= 0) & (u >= 0), torch.zeros_like(lo), lo)
        return lo, hi

    def relax(self, l, u, attrs, alpha=None):
        p = self._p(attrs)
        if p in (0.0, 1.0):
            z, o = torch.zeros_like(l), torch.ones_like(l)
            if alpha is not None and alpha[0].dim() > l.dim():
                z, o = z.unsqueeze(1), o.unsqueeze(1)
            return (z, o, z.clone(), o.clone()) if p == 0 else (o, z, o.clone(), z.clone())
        return super().relax(l, u, attrs, alpha)

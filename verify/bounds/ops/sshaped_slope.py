"""Sigmoid and tanh in the (slope, exact offset) form of `verify.bounds.ops.curvature`.

f'(x) = k has closed-form solutions (sigmoid: x = ±logit(2k / (1 + sqrt(1 - 4k))); tanh:
x = ±log((1 + sqrt(1 - k)) / sqrt(k))), so no bisection is needed, and the α set (every slope, with its
exact offset) contains every tangent line of CROWN's tangent-point relaxation. Both default lines take the
chord slope (parallel lines). This replaced the tangent-point rule: on the 36 ERAN sigmoid 6x200 specs it
proved 17 with CROWN (vs 8) and 19 with α-CROWN (vs 9), about 30x faster per relaxation, and it handles
infinite bounds soundly (the tangent-point rule did not).
"""
from __future__ import annotations

import math

import torch

from verify.bounds.ops.base import register
from verify.bounds.ops.curvature import SlopeRule


@register("sigmoid")
class SigmoidSlopeRule(SlopeRule):
    monotone = 1
    global_range = (0.0, 1.0)

    def f(self, x, attrs):
        return torch.sigmoid(x)

    def df(self, x, attrs):
        s = torch.sigmoid(x)
        return s * (1 - s)

    def inflections(self, attrs):
        return (0.0,)

    def stationary(self, k, l, u, attrs):
        ok = (k > 0) & (k <= 0.25)
        kk = k.clamp(torch.finfo(k.dtype).tiny, 0.25)
        s = 2 * kk / (1 + torch.sqrt((1 - 4 * kk).clamp(min=0)))  # the smaller root of s(1-s) = k, no cancellation
        x = torch.log(s) - torch.log1p(-s)
        x = torch.where(ok, x, torch.full_like(x, math.nan))
        return [x, -x], None


@register("tanh")
class TanhSlopeRule(SlopeRule):
    monotone = 1
    global_range = (-1.0, 1.0)

    def f(self, x, attrs):
        return torch.tanh(x)

    def df(self, x, attrs):
        return 1 - torch.tanh(x) ** 2

    def inflections(self, attrs):
        return (0.0,)

    def stationary(self, k, l, u, attrs):
        ok = (k > 0) & (k <= 1)
        kk = k.clamp(torch.finfo(k.dtype).tiny, 1.0)
        x = torch.log((1 + torch.sqrt(1 - kk)) / torch.sqrt(kk))
        x = torch.where(ok, x, torch.full_like(x, math.nan))
        return [x, -x], None

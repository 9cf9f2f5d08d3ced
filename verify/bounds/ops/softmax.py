"""Softmax along one axis: a tight interval rule and constant linear bounds.

softmax_i(x) = 1 / (1 + sum_{j != i} exp(x_j - x_i)) is increasing in x_i and decreasing in every other x_j,
so over a box its exact range per entry is

    exp(l_i) / (exp(l_i) + sum_{j != i} exp(u_j))  <=  softmax_i  <=  exp(u_i) / (exp(u_i) + sum_{j != i} exp(l_j)),

computed with the usual max shift and widened by a few ulps per summand. The linear relaxation uses the
constant lines at these bounds (slope 0): they are sound although softmax is not element-wise, because a
zero slope needs no per-entry input. The backward pass then treats softmax like any unary node.
"""
from __future__ import annotations

import torch

from verify.bounds.ops.base import UnaryRule, register


def softmax_interval(l: torch.Tensor, u: torch.Tensor, axis: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact per-entry range of softmax over the box [l, u] along `axis` (widened for rounding)."""
    n = l.shape[axis]
    eps = torch.finfo(l.dtype).eps * (4 * n + 8)
    m = torch.maximum(l.amax(axis, keepdim=True), u.amax(axis, keepdim=True))
    el, eu = torch.exp(l - m), torch.exp(u - m)
    sum_u, sum_l = eu.sum(axis, keepdim=True), el.sum(axis, keepdim=True)
    others_u = (sum_u - eu).clamp(min=0)    # sum_{j != i} exp(u_j - m)
    others_l = (sum_l - el).clamp(min=0)
    lo = el / (el + others_u * (1 + eps) + eps * sum_u)
    hi = eu / (eu + (others_l - eps * sum_l).clamp(min=0))
    lo = lo * (1 - eps)
    hi = hi * (1 + eps)
    bad_lo = ~torch.isfinite(lo)
    bad_hi = ~torch.isfinite(hi)
    lo = torch.where(bad_lo, torch.zeros_like(lo), lo).clamp(0.0, 1.0)
    hi = torch.where(bad_hi, torch.ones_like(hi), hi).clamp(0.0, 1.0)
    return lo, hi


@register("softmax")
class SoftmaxRule(UnaryRule):
    """Softmax over `attrs["axis"]` (an axis of the full tensor, batch = axis 0)."""

    @staticmethod
    def _axis(attrs, ndim: int) -> int:
        ax = int(attrs.get("axis", -1))
        return ax if ax >= 0 else ndim + ax

    def interval(self, l, u, attrs):
        return softmax_interval(l, u, self._axis(attrs, l.dim()))

    def relax(self, l, u, attrs, alpha=None):
        lo, hi = self.interval(l, u, attrs)
        z = torch.zeros_like(l)
        return z, lo, z.clone(), hi

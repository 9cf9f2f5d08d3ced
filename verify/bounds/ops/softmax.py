"""Softmax along one axis: a tight interval rule and element-wise linear bounds through sigmoids.

softmax_i(x) = 1 / (1 + sum_{j != i} exp(x_j - x_i)) is increasing in x_i and decreasing in every other x_j,
so over a box its exact range per entry is

    exp(l_i) / (exp(l_i) + sum_{j != i} exp(u_j))  <=  softmax_i  <=  exp(u_i) / (exp(u_i) + sum_{j != i} exp(l_j)),

i.e. sigmoid(l_i - a_i) <= softmax_i <= sigmoid(u_i - b_i) with a, b below (computed without cancellation
and widened by a few ulps).

Linear bounds in x_i alone (so the engine's element-wise backward step applies): with the other entries
anywhere in their box,

    sigmoid(x_i - a_i) <= softmax_i(x) <= sigmoid(x_i - b_i),
    a_i = logsumexp_{j != i} u_j,   b_i = logsumexp_{j != i} l_j,

so the lower line is a lower line of sigmoid(. - a_i) on [l_i, u_i] and the upper line an upper line of
sigmoid(. - b_i), both in the (slope, exact offset) form of `verify.bounds.ops.curvature` (α = the two
slopes; slope 0 gives the constant lines at the interval bounds). a_i is rounded up and b_i down.
"""
from __future__ import annotations

import torch

from verify.bounds.ops.base import UnaryRule, register
from verify.bounds.ops.curvature import finalize
from verify.bounds.ops.sshaped_slope import SigmoidSlopeRule

_SIG = SigmoidSlopeRule()


def logsumexp_others(v: torch.Tensor, axis: int) -> torch.Tensor:
    """log sum_{j != i} exp(v_j) along `axis`, for every i, in O(n) memory and without cancellation.

    For i other than the arg-max: shift by the max m1; the sum of all terms T >= 1 >= exp(v_i - m1), so
    T - exp(v_i - m1) loses at most a factor 2 of relative precision. For the arg-max itself: the sum over
    the others, shifted by the second largest value, taken explicitly."""
    n = v.shape[axis]
    if n == 1:
        return torch.full_like(v, -torch.inf)
    m1, idx = v.max(axis, keepdim=True)
    is_max = torch.zeros_like(v, dtype=torch.bool).scatter_(axis, idx, True)
    m2 = torch.where(is_max, torch.full_like(v, -torch.inf), v).amax(axis, keepdim=True)
    e1 = torch.exp(v - m1)
    rest = (e1.sum(axis, keepdim=True) - e1).clamp(min=torch.finfo(v.dtype).tiny)
    others = m1 + torch.log(rest)
    e2 = torch.where(is_max, torch.zeros_like(v), torch.exp(v - m2))
    top = m2 + torch.log(e2.sum(axis, keepdim=True))
    return torch.where(is_max, top.expand_as(v), others)


def _shifts(l: torch.Tensor, u: torch.Tensor, axis: int) -> tuple[torch.Tensor, torch.Tensor]:
    """a = logsumexp_{j != i} u_j rounded up, b = logsumexp_{j != i} l_j rounded down."""
    eps = 8 * torch.finfo(l.dtype).eps
    a = logsumexp_others(u, axis)
    b = logsumexp_others(l, axis)
    return a + eps * (1 + a.abs()), b - eps * (1 + b.abs())


def softmax_interval(l: torch.Tensor, u: torch.Tensor, axis: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact per-entry range of softmax over the box [l, u] along `axis` (widened for rounding):
    [sigmoid(l_i - a_i), sigmoid(u_i - b_i)]."""
    a, b = _shifts(l, u, axis)
    eps = 4 * torch.finfo(l.dtype).eps
    lo = torch.sigmoid(l - a) * (1 - eps)
    hi = torch.sigmoid(u - b) * (1 + eps)
    lo = torch.where(torch.isnan(lo), torch.zeros_like(lo), lo).clamp(0.0, 1.0)
    hi = torch.where(torch.isnan(hi), torch.ones_like(hi), hi).clamp(0.0, 1.0)
    return lo, hi


@register("softmax")
class SoftmaxRule(UnaryRule):
    """Softmax over `attrs["axis"]` (an axis of the full tensor, batch = axis 0)."""

    has_alpha = True

    @staticmethod
    def _axis(attrs, ndim: int) -> int:
        ax = int(attrs.get("axis", -1))
        return ax if ax >= 0 else ndim + ax

    def interval(self, l, u, attrs):
        return softmax_interval(l, u, self._axis(attrs, l.dim()))

    def _shifts(self, l, u, attrs):
        return _shifts(l, u, self._axis(attrs, l.dim()))

    def alpha_init(self, l, u, attrs):
        a, b = self._shifts(l, u, attrs)
        k0 = _SIG.alpha_init(l - a, u - a, {})[0]
        k1 = _SIG.alpha_init(l - b, u - b, {})[1]
        return torch.stack([torch.nan_to_num(k0, 0.0, 0.0, 0.0), torch.nan_to_num(k1, 0.0, 0.0, 0.0)])

    def alpha_project(self, alpha, l, u, attrs):
        return alpha.clamp(0.0, 0.25)

    def relax(self, l, u, attrs, alpha=None):
        a, b = self._shifts(l, u, attrs)
        if alpha is None:
            alpha = self.alpha_init(l, u, attrs)
        k0, k1 = alpha[0], alpha[1]
        if k0.dim() > l.dim():  # per-row slopes (B, S, ...)
            lx, ux, a, b = l.unsqueeze(1), u.unsqueeze(1), a.unsqueeze(1), b.unsqueeze(1)
        else:
            lx, ux = l, u
        eps = 8 * torch.finfo(l.dtype).eps
        lo_t = _SIG.offsets(k0, lx - a, ux - a, {})[0]      # min over t of sigmoid(t) - k0 t
        hi_t = _SIG.offsets(k1, lx - b, ux - b, {})[1]
        lb = lo_t - k0 * a                                   # k0 (x - a) + lo_t
        ub = hi_t - k1 * b
        lb = lb - eps * (lo_t.abs() + (k0 * a).abs())
        ub = ub + eps * (hi_t.abs() + (k1 * b).abs())
        lw, lb, uw, ub = finalize(self, l, u, attrs, k0, lb, k1, ub)
        return lw, lb, uw, ub

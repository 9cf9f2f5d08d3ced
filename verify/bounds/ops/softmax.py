"""Softmax along one axis: a tight interval rule and element-wise linear bounds through sigmoids.

softmax_i(x) = 1 / (1 + sum_{j != i} exp(x_j - x_i)) is increasing in x_i and decreasing in every other x_j,
so over a box its exact range per entry is

    exp(l_i) / (exp(l_i) + sum_{j != i} exp(u_j))  <=  softmax_i  <=  exp(u_i) / (exp(u_i) + sum_{j != i} exp(l_j)),

computed with the usual max shift and widened by a few ulps per summand.

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
    """log sum_{j != i} exp(v_j) along `axis` for every i (-inf when the axis has one entry), without
    cancellation: the sum over j != i is taken explicitly on an (n, n) masked view."""
    n = v.shape[axis]
    vm = v.movedim(axis, -1)
    full = vm.unsqueeze(-2).expand(*vm.shape[:-1], n, n)                  # [..., i, j] = v_j
    eye = torch.eye(n, dtype=torch.bool, device=v.device)
    masked = torch.where(eye, torch.full_like(full, -torch.inf), full)
    return torch.logsumexp(masked, dim=-1).movedim(-1, axis)


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

    has_alpha = True

    @staticmethod
    def _axis(attrs, ndim: int) -> int:
        ax = int(attrs.get("axis", -1))
        return ax if ax >= 0 else ndim + ax

    def interval(self, l, u, attrs):
        return softmax_interval(l, u, self._axis(attrs, l.dim()))

    def _shifts(self, l, u, attrs):
        """a (rounded up) and b (rounded down) of the module docstring."""
        ax = self._axis(attrs, l.dim())
        eps = 8 * torch.finfo(l.dtype).eps
        a = logsumexp_others(u, ax)
        b = logsumexp_others(l, ax)
        return a + eps * (1 + a.abs()), b - eps * (1 + b.abs())

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

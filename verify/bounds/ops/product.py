"""Products and quotients of two variables: McCormick planes, with a backward rule for CROWN.

For z = x*y on the box [lx, ux] x [ly, uy] the McCormick planes are

    P1 = ly*x + lx*y - lx*ly,   P2 = uy*x + ux*y - ux*uy      (z >= max(P1, P2))
    Q1 = uy*x + lx*y - lx*uy,   Q2 = ly*x + ux*y - ux*ly      (z <= min(Q1, Q2))

Every convex combination a*P1 + (1-a)*P2 (a in [0, 1]) is a valid lower plane and likewise for the upper
ones, so the two mixing weights are the α-CROWN parameters (alpha[0] lower, alpha[1] upper; 0.5 by default,
where both planes agree at the box centre). Division x / y (0 outside [ly, uy]) is x * r with r = 1/y:
McCormick on (x, r) with r in [1/uy, 1/ly], then r is replaced by the reciprocal's lines in y.

These ops take two variable inputs, so they do not fit the unary backward step: each rule has

    backward(A, bounds, alpha=None) -> ([A_x, A_y], bias)

with A of shape (B, S, *out_shape), bounds = [(lx, ux), (ly, uy)] of shapes (B, *shape_x), (B, *shape_y)
(broadcastable to the output as in ONNX), returning A_x (B, S, *shape_x), A_y (B, S, *shape_y) and the bias
(B, S) such that A·z >= A_x·x + A_y·y + bias on the box. With one constant input, mul and div are affine and
the engine's exact generic step handles them (`kind` below is used only for two-variable nodes).
"""
from __future__ import annotations

import math

import torch

import verify.bounds.ops.linear  # noqa: F401  (registered first, so the rules below take over mul / div)
from verify.bounds.ops.base import register
from verify.bounds.ops.linear import MulConstRule
from verify.bounds.ops.smooth import ReciprocalRule
from verify.graph import ops as gops

_RECIP = ReciprocalRule()


def unbroadcast(A: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """Sum A (B, S, *out) over the axes where a value of per-sample `shape` (with batch) was broadcast."""
    B, S = A.shape[:2]
    out = A.shape[2:]
    inner = tuple(shape[1:])
    nd = len(out) - len(inner)
    if nd > 0:
        A = A.sum(dim=tuple(range(2, 2 + nd)))
    dims = tuple(2 + i for i, (s, o) in enumerate(zip(inner, A.shape[2:])) if s == 1 and o != 1)
    if dims:
        A = A.sum(dim=dims, keepdim=True)
    if shape[0] == 1 and B != 1:  # an input without the batch axis broadcast (not expected for variables)
        A = A.sum(0, keepdim=True)
    return A


def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Sum over all but the first two axes of a*b, with 0*inf taken as 0."""
    p = a * b
    p = torch.where(a == 0, torch.zeros_like(p), p)
    return p.flatten(2).sum(-1)


def mccormick(lx, ux, ly, uy, alpha=None):
    """Lower and upper planes (ax, ay, b) of x*y on the box; alpha = (2, ...) mixing weights in [0, 1]."""
    if alpha is None:
        a0 = a1 = torch.tensor(0.5, dtype=lx.dtype, device=lx.device)
    else:
        a0, a1 = alpha[0], alpha[1]
    l_ax = a0 * ly + (1 - a0) * uy
    l_ay = a0 * lx + (1 - a0) * ux
    l_b = -(a0 * lx * ly + (1 - a0) * ux * uy)
    u_ax = a1 * uy + (1 - a1) * ly
    u_ay = a1 * lx + (1 - a1) * ux
    u_b = -(a1 * lx * uy + (1 - a1) * ux * ly)
    return (l_ax, l_ay, l_b), (u_ax, u_ay, u_b)


def _expand_bounds(t: torch.Tensor, A: torch.Tensor) -> torch.Tensor:
    """Bound (B, *s) -> (B, 1, *s) broadcastable against A (B, S, *out)."""
    t = t.unsqueeze(1)
    while t.dim() < A.dim():
        t = t.unsqueeze(2)
    return t


def _interval_product(lo, hi):
    a = lo[0] * lo[1]
    b = hi[0] * hi[1]
    c = lo[0] * hi[1]
    d = hi[0] * lo[1]
    # 0 * inf is 0 for a product of bounds (the value itself is finite)
    a, b, c, d = (torch.nan_to_num(t, nan=0.0, posinf=math.inf, neginf=-math.inf) for t in (a, b, c, d))
    return torch.minimum(torch.minimum(a, b), torch.minimum(c, d)), torch.maximum(torch.maximum(a, b), torch.maximum(c, d))


@register("mul")
class ProductRule(MulConstRule):
    """x * y: the interval rule of MulConstRule (valid for variables too) plus McCormick planes."""

    kind = "binary"
    has_alpha = True

    def ibp(self, lo, hi, node, graph):
        return _interval_product(lo, hi)

    def alpha_init(self, bounds, out_shape: tuple[int, ...] | None = None):
        (lx, _), (ly, _) = bounds
        shape = torch.broadcast_shapes(lx.shape, ly.shape)
        return torch.full((2, *shape), 0.5, dtype=lx.dtype, device=lx.device)

    def alpha_project(self, alpha, bounds):
        return alpha.clamp(0.0, 1.0)

    def backward(self, A: torch.Tensor, bounds, alpha=None):
        """A·(x*y) >= A_x·x + A_y·y + bias over the box; see the module docstring."""
        (lx, ux), (ly, uy) = bounds
        sx, sy = lx.shape, ly.shape
        lx, ux, ly, uy = (_expand_bounds(t, A) for t in (lx, ux, ly, uy))
        if alpha is not None and alpha.dim() == A.dim():  # shared (2, B, *out) -> (2, B, 1, *out)
            alpha = alpha.unsqueeze(2)
        finite = torch.isfinite(lx) & torch.isfinite(ux) & torch.isfinite(ly) & torch.isfinite(uy)
        z = torch.zeros((), dtype=A.dtype, device=A.device)
        lx, ux, ly, uy = (torch.where(finite, t, z) for t in (lx, ux, ly, uy))
        (l_ax, l_ay, l_b), (u_ax, u_ay, u_b) = mccormick(lx, ux, ly, uy, alpha)
        Ap, An = A.clamp(min=0), A.clamp(max=0)
        Ax = Ap * l_ax + An * u_ax
        Ay = Ap * l_ay + An * u_ay
        bias_t = Ap * l_b + An * u_b
        if not bool(finite.all()):  # unbounded factor: no plane; the product is unbounded there
            inf = torch.full_like(bias_t, math.inf)
            fin = finite.expand_as(bias_t)
            Ax, Ay = torch.where(fin, Ax, z), torch.where(fin, Ay, z)
            bias_t = torch.where(fin, bias_t, torch.where(A != 0, -inf, z))
        return [unbroadcast(Ax, sx), unbroadcast(Ay, sy)], bias_t.flatten(2).sum(-1)


@register("div")
class QuotientRule(ProductRule):
    """x / y: the quotient's interval rule (infinite when 0 is in [ly, uy]) and x * (1/y) planes."""

    def ibp(self, lo, hi, node, graph):
        """Min and max of the four corner quotients (exact when 0 is outside [ly, uy]); a constant divisor
        uses the same division as the network, so the bounds are the exact rounded values."""
        ly, uy = lo[1], hi[1]
        if not (ly.is_floating_point() or lo[0].is_floating_point()):
            raise NotImplementedError("integer division of variables")
        q = [gops.evaluate("div", [a, b], {}) for a in (lo[0], hi[0]) for b in (ly, uy)]
        qlo = torch.minimum(torch.minimum(q[0], q[1]), torch.minimum(q[2], q[3]))
        qhi = torch.maximum(torch.maximum(q[0], q[1]), torch.maximum(q[2], q[3]))
        pole = ((ly <= 0) & (uy >= 0)).expand_as(qlo) if ly.dim() else ((ly <= 0) & (uy >= 0))
        return (torch.where(pole, torch.full_like(qlo, -math.inf), qlo),
                torch.where(pole, torch.full_like(qhi, math.inf), qhi))

    def backward(self, A: torch.Tensor, bounds, alpha=None):
        (lx, ux), (ly, uy) = bounds
        pole = (ly <= 0) & (uy >= 0)
        safe_l = torch.where(pole, torch.ones_like(ly), ly)
        safe_u = torch.where(pole, torch.ones_like(uy), uy)
        rl, ru = torch.reciprocal(safe_u), torch.reciprocal(safe_l)
        rl = torch.where(pole, torch.full_like(rl, -math.inf), rl)
        ru = torch.where(pole, torch.full_like(ru, math.inf), ru)
        (Ax, Ar), bias = super().backward(A, [(lx, ux), (rl, ru)], alpha)
        # r = 1/y >= / <= the reciprocal's lines in y
        lw, lb, uw, ub = _RECIP.relax(ly, uy, {})
        lw, lb, uw, ub = (t.unsqueeze(1) for t in (lw, lb, uw, ub))
        Arp, Arn = Ar.clamp(min=0), Ar.clamp(max=0)
        Ay = Arp * lw + Arn * uw
        bias = bias + _dot(Arp, lb) + _dot(Arn, ub)
        return [Ax, Ay], bias

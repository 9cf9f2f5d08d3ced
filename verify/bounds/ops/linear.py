"""Affine operators: linear/Gemm/MatMul by a constant, Conv, ConvTranspose, Add/Sub/Neg, Mul/Div by constants.

Their backward (CROWN) step is exact and generic (a vector-Jacobian product, see `verify.bounds.crown`);
here they only need their interval rule. The interval rule uses the centre/radius form
y_c = f(c), y_r = |f|(r) with |f| the same map with absolute weights.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from verify.bounds.ops.base import MonotoneRule, OpRule, register
from verify.graph import ops as gops


def _centre_radius(lo, hi):
    return (hi + lo) / 2, (hi - lo) / 2


@register("linear")
class LinearRule(OpRule):
    def ibp(self, lo, hi, node, graph):
        c, r = _centre_radius(lo[0], hi[0])
        w = lo[1]
        b = lo[2] if len(lo) > 2 else None
        yc = F.linear(c, w, b)
        yr = F.linear(r, w.abs())
        return yc - yr, yc + yr


@register("conv", "convtranspose")
class ConvRule(OpRule):
    """Conv and ConvTranspose: the op itself on the centre, with |W| on the radius."""

    def ibp(self, lo, hi, node, graph):
        c, r = _centre_radius(lo[0], hi[0])
        yc = gops.evaluate(node.op, [c] + list(lo[1:]), node.attrs)
        yr = gops.evaluate(node.op, [r, lo[1].abs()], node.attrs)
        return yc - yr, yc + yr


@register("matmul")
class MatMulRule(OpRule):
    """x @ M or M @ x with one constant operand (a product of two variables is `special`, see nonlinear ops)."""

    def ibp(self, lo, hi, node, graph):
        const0 = graph.is_const(node.inputs[0])
        const1 = graph.is_const(node.inputs[1])
        if const1 and not const0:
            c, r = _centre_radius(lo[0], hi[0])
            m = lo[1]
            return torch.matmul(c, m) - torch.matmul(r, m.abs()), torch.matmul(c, m) + torch.matmul(r, m.abs())
        if const0 and not const1:
            c, r = _centre_radius(lo[1], hi[1])
            m = lo[0]
            return torch.matmul(m, c) - torch.matmul(m.abs(), r), torch.matmul(m, c) + torch.matmul(m.abs(), r)
        raise NotImplementedError("matmul of two variables")


@register("add", "concat", "reshape", "transpose", "slice", "gather", "expand", "avgpool", "globalavgpool",
          "reducesum", "reducemean", "resize", "pad")
class AffineMonotone(MonotoneRule):
    """Affine and non-decreasing in every input (add, selections, sums, averages)."""


@register("sub")
class SubRule(OpRule):
    def ibp(self, lo, hi, node, graph):
        return gops.evaluate("sub", [lo[0], hi[1]], {}), gops.evaluate("sub", [hi[0], lo[1]], {})


@register("neg")
class NegRule(OpRule):
    def ibp(self, lo, hi, node, graph):
        return -hi[0], -lo[0]


@register("mul")
class MulConstRule(OpRule):
    """x * c with a constant c (the two-variable product is handled by the nonlinear `mul` rule)."""

    def ibp(self, lo, hi, node, graph):
        a = gops.evaluate("mul", [lo[0], lo[1]], {})
        b = gops.evaluate("mul", [hi[0], hi[1]], {})
        c = gops.evaluate("mul", [lo[0], hi[1]], {})
        d = gops.evaluate("mul", [hi[0], lo[1]], {})
        return torch.minimum(torch.minimum(a, b), torch.minimum(c, d)), torch.maximum(torch.maximum(a, b), torch.maximum(c, d))


@register("div")
class DivConstRule(OpRule):
    """x / c with a constant, non-zero c."""

    def ibp(self, lo, hi, node, graph):
        if not graph.is_const(node.inputs[1]):
            raise NotImplementedError("division by a variable")
        a = gops.evaluate("div", [lo[0], lo[1]], {})
        b = gops.evaluate("div", [hi[0], lo[1]], {})
        return torch.minimum(a, b), torch.maximum(a, b)


def is_affine(node, graph) -> bool:
    """True when `node` is affine in its non-constant inputs (so its backward step is an exact VJP)."""
    op = node.op
    if op in ("linear", "conv", "convtranspose", "add", "sub", "neg", "concat", "reshape", "transpose", "slice",
              "gather", "expand", "avgpool", "globalavgpool", "reducesum", "reducemean", "resize"):
        return True
    if op == "pad":
        return node.attrs.get("mode", "constant") == "constant"
    if op in ("mul", "matmul"):
        return sum(not graph.is_const(i) for i in node.inputs) <= 1
    if op == "div":
        return graph.is_const(node.inputs[1])
    return False

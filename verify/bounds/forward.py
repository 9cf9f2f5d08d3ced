"""Forward-mode linear bounds for intermediate values (cheap when the input has few dimensions).

Every value v gets two linear functions of the flattened input x: Lw·x + Lb <= v <= Uw·x + Ub, carried
forward node by node (coefficients shaped (B, n_in, *shape)). Cost per layer is O(n_in · width²) instead of
the O(width³)-per-layer backward passes of CROWN's intermediate bounds: for ACAS Xu (5 inputs) this is
far cheaper, at some loss of tightness. Concrete bounds are the linear functions minimised/maximised over
the box, intersected with IBP. Only a chain of common ops is supported; `ForwardUnsupported` tells the
caller to use backward CROWN instead.
"""
from __future__ import annotations

import torch

from verify.bounds.interval import node_ibp


class ForwardUnsupported(Exception):
    pass


FORWARD_OPS = {"linear", "reshape", "add", "sub", "neg", "mul", "div"}


def supported(engine) -> bool:
    g = engine.graph
    for n in engine.nodes:
        kind = engine.kind[n.name]
        if kind == "unary":
            continue
        if kind != "affine" or n.op not in FORWARD_OPS:
            return False
        if n.op in ("mul", "div") and not g.is_const(n.inputs[1]):
            return False
    return True


def _concretize(Lw, Lb, Uw, Ub, lo, hi):
    """Min of Lw·x+Lb and max of Uw·x+Ub over the box; coefficients (B, n, *shape)."""
    B, n = lo.shape
    shape = Lb.shape[1:]
    lo_ = lo.reshape(B, n, *([1] * len(shape)))
    hi_ = hi.reshape(B, n, *([1] * len(shape)))
    lower = (Lw.clamp(min=0) * lo_ + Lw.clamp(max=0) * hi_).sum(1) + Lb
    upper = (Uw.clamp(min=0) * hi_ + Uw.clamp(max=0) * lo_).sum(1) + Ub
    return lower, upper


def forward_bounds(engine, lower: torch.Tensor, upper: torch.Tensor, signs: dict) -> dict:
    """Bounds of every value (dict name -> (l, u)), from forward linear bounds ∩ IBP, splits applied."""
    g = engine.graph
    B = lower.shape[0]
    lo = lower.reshape(B, -1)
    hi = upper.reshape(B, -1)
    n = lo.shape[1]
    dtype, device = lower.dtype, lower.device
    eye = torch.eye(n, dtype=dtype, device=device).unsqueeze(0).expand(B, n, n)
    zero = torch.zeros(B, n, dtype=dtype, device=device)
    lin = {g.input_name: (eye.reshape(B, n, *g.input_shape), zero.reshape(B, *g.input_shape),
                          eye.reshape(B, n, *g.input_shape), zero.reshape(B, *g.input_shape))}
    bounds = {g.input_name: (lower.reshape(B, *g.input_shape), upper.reshape(B, *g.input_shape))}
    for node in engine.nodes:
        op = node.op
        kind = engine.kind[node.name]
        il, iu = node_ibp(g, node, bounds, dtype, device)
        if kind == "unary":
            src = node.inputs[0]
            l, u = bounds[src]
            Lw, Lb, Uw, Ub = lin[src]
            lw, lb, uw, ub = engine.rules[node.name].relax(l, u, node.attrs, None)
            lw1, uw1 = lw.unsqueeze(1), uw.unsqueeze(1)
            nLw = lw1.clamp(min=0) * Lw + lw1.clamp(max=0) * Uw
            nLb = lw.clamp(min=0) * Lb + lw.clamp(max=0) * Ub + lb
            nUw = uw1.clamp(min=0) * Uw + uw1.clamp(max=0) * Lw
            nUb = uw.clamp(min=0) * Ub + uw.clamp(max=0) * Lb + ub
        elif op == "linear":
            Lw, Lb, Uw, Ub = lin[node.inputs[0]]
            W = g.const(node.inputs[1], dtype, device)
            Wp, Wn = W.clamp(min=0), W.clamp(max=0)
            nLw = torch.matmul(Lw, Wp.T) + torch.matmul(Uw, Wn.T)
            nUw = torch.matmul(Uw, Wp.T) + torch.matmul(Lw, Wn.T)
            nLb = torch.matmul(Lb, Wp.T) + torch.matmul(Ub, Wn.T)
            nUb = torch.matmul(Ub, Wp.T) + torch.matmul(Lb, Wn.T)
            if len(node.inputs) > 2:
                b = g.const(node.inputs[2], dtype, device)
                nLb = nLb + b
                nUb = nUb + b
        elif op == "reshape":
            Lw, Lb, Uw, Ub = lin[node.inputs[0]]
            shp = tuple(node.attrs["shape"])
            nLw, nUw = Lw.reshape(B, n, *shp), Uw.reshape(B, n, *shp)
            nLb, nUb = Lb.reshape(B, *shp), Ub.reshape(B, *shp)
        elif op in ("add", "sub"):
            a, b = node.inputs
            sgn = 1.0 if op == "add" else -1.0
            if g.is_const(b) or g.is_const(a):
                var, c = (a, b) if g.is_const(b) else (b, a)
                cval = g.const(c, dtype, device)
                Lw, Lb, Uw, Ub = lin[var]
                if var == a:
                    nLw, nUw, nLb, nUb = Lw, Uw, Lb + sgn * cval, Ub + sgn * cval
                else:  # c - x
                    if op == "add":
                        nLw, nUw, nLb, nUb = Lw, Uw, Lb + cval, Ub + cval
                    else:
                        nLw, nUw, nLb, nUb = -Uw, -Lw, cval - Ub, cval - Lb
                nLw = nLw.expand(B, n, *node.shape) if tuple(nLw.shape[2:]) != tuple(node.shape) else nLw
                nUw = nUw.expand(B, n, *node.shape) if tuple(nUw.shape[2:]) != tuple(node.shape) else nUw
            else:
                La, Lab, Ua, Uab = lin[a]
                Lb_, Lbb, Ub_, Ubb = lin[b]
                if op == "add":
                    nLw, nLb, nUw, nUb = La + Lb_, Lab + Lbb, Ua + Ub_, Uab + Ubb
                else:
                    nLw, nLb, nUw, nUb = La - Ub_, Lab - Ubb, Ua - Lb_, Uab - Lbb
        elif op == "neg":
            Lw, Lb, Uw, Ub = lin[node.inputs[0]]
            nLw, nLb, nUw, nUb = -Uw, -Ub, -Lw, -Lb
        elif op in ("mul", "div"):
            Lw, Lb, Uw, Ub = lin[node.inputs[0]]
            c = g.const(node.inputs[1], dtype, device)
            c = c if op == "mul" else 1.0 / c
            cp, cn = c.clamp(min=0), c.clamp(max=0)
            nLw = cp * Lw + cn * Uw
            nUw = cp * Uw + cn * Lw
            nLb = cp * Lb + cn * Ub
            nUb = cp * Ub + cn * Lb
        else:
            raise ForwardUnsupported(op)
        fl, fu = _concretize(nLw, nLb, nUw, nUb, lo, hi)
        l = torch.maximum(il, fl.reshape(il.shape))
        u = torch.minimum(iu, fu.reshape(iu.shape))
        s = signs.get(node.name)
        if s is not None:
            l = torch.where(s > 0, l.clamp(min=0), l)
            u = torch.where(s < 0, u.clamp(max=0), u)
        bounds[node.name] = (l, u)
        lin[node.name] = (nLw, nLb, nUw, nUb)
    return bounds

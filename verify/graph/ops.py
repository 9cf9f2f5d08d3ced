"""Concrete semantics of the IR's canonical operators, one small function each.

Every function takes the list of input tensors (non-constant ones carry the batch dimension at axis 0;
constants broadcast as in ONNX) and the node's attributes, and returns the output tensor. The set of keys
of `OPS` is the IR's operator vocabulary; importers emit only these, and the bound engine registers a
relaxation per key.
"""
from __future__ import annotations

import math
from typing import Any, Callable

import torch
import torch.nn.functional as F

OpFn = Callable[[list[torch.Tensor], dict[str, Any]], torch.Tensor]
OPS: dict[str, OpFn] = {}


def op(name: str):
    def deco(fn: OpFn) -> OpFn:
        OPS[name] = fn
        return fn
    return deco


def evaluate(name: str, args: list[torch.Tensor], attrs: dict[str, Any]) -> torch.Tensor:
    return OPS[name](args, attrs)


def _promote(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """ONNX binary ops on a float tensor and an integer constant compute in the float dtype."""
    if a.is_floating_point() and not b.is_floating_point():
        b = b.to(a.dtype)
    elif b.is_floating_point() and not a.is_floating_point():
        a = a.to(b.dtype)
    return a, b


# ------------------------------------------------------------------------------------ linear family
@op("linear")
def _linear(a, at):
    """y = x @ W^T + b over the last axis; W has shape (out, in)."""
    return F.linear(a[0], a[1], a[2] if len(a) > 2 else None)


@op("matmul")
def _matmul(a, at):
    return torch.matmul(*_promote(a[0], a[1]))


@op("conv")
def _conv(a, at):
    x, w = a[0], a[1]
    b = a[2] if len(a) > 2 else None
    nd = w.dim() - 2
    pads = at.get("pads", [0] * (2 * nd))
    begin, end = pads[:nd], pads[nd:]
    if begin != end:
        # asymmetric padding: pad explicitly (F.pad takes last-dim-first pairs)
        pad_arg = []
        for i in reversed(range(nd)):
            pad_arg += [begin[i], end[i]]
        x = F.pad(x, pad_arg)
        padding = 0
    else:
        padding = tuple(begin)
    fn = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[nd]
    return fn(x, w, b, stride=tuple(at.get("strides", [1] * nd)), padding=padding,
              dilation=tuple(at.get("dilations", [1] * nd)), groups=at.get("group", 1))


@op("convtranspose")
def _convtranspose(a, at):
    x, w = a[0], a[1]
    b = a[2] if len(a) > 2 else None
    nd = w.dim() - 2
    pads = at.get("pads", [0] * (2 * nd))
    begin, end = pads[:nd], pads[nd:]
    out_pad = list(at.get("output_padding", [0] * nd))
    fn = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}[nd]
    # torch crops `padding` symmetrically; crop the common part there and the rest of each side here
    common = [min(s, e) for s, e in zip(begin, end)]
    y = fn(x, w, b, stride=tuple(at.get("strides", [1] * nd)), padding=tuple(common),
           output_padding=tuple(out_pad), groups=at.get("group", 1), dilation=tuple(at.get("dilations", [1] * nd)))
    if list(begin) != list(end):
        slices = [slice(None), slice(None)] + [slice(begin[i] - common[i], y.shape[2 + i] - (end[i] - common[i]))
                                               for i in range(nd)]
        y = y[tuple(slices)]
    return y


# --------------------------------------------------------------------------------- elementwise binary
@op("add")
def _add(a, at):
    return torch.add(*_promote(a[0], a[1]))


@op("sub")
def _sub(a, at):
    return torch.sub(*_promote(a[0], a[1]))


@op("mul")
def _mul(a, at):
    return torch.mul(*_promote(a[0], a[1]))


@op("div")
def _div(a, at):
    x, y = _promote(a[0], a[1])
    if not x.is_floating_point():
        return torch.div(x, y, rounding_mode="trunc")
    return x / y


@op("pow")
def _pow(a, at):
    x, y = _promote(a[0], a[1])
    return torch.pow(x, y)


@op("where")
def _where(a, at):
    x, y = _promote(a[1], a[2])
    return torch.where(a[0].bool(), x, y)


@op("equal")
def _equal(a, at):
    return torch.eq(*_promote(a[0], a[1]))


@op("min")
def _min(a, at):
    return torch.minimum(*_promote(a[0], a[1]))


@op("max")
def _max(a, at):
    return torch.maximum(*_promote(a[0], a[1]))


# ---------------------------------------------------------------------------------- elementwise unary
_UNARY: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "neg": torch.neg, "relu": torch.relu, "sigmoid": torch.sigmoid, "tanh": torch.tanh,
    "sin": torch.sin, "cos": torch.cos, "exp": torch.exp, "log": torch.log, "sqrt": torch.sqrt,
    "reciprocal": torch.reciprocal, "softplus": F.softplus, "erf": torch.erf, "abs": torch.abs,
    "sign": torch.sign, "floor": torch.floor, "ceil": torch.ceil,
}
for _name, _fn in _UNARY.items():
    OPS[_name] = (lambda f: (lambda a, at: f(a[0])))(_fn)


@op("leakyrelu")
def _leakyrelu(a, at):
    return F.leaky_relu(a[0], at.get("alpha", 0.01))


@op("gelu")
def _gelu(a, at):
    return F.gelu(a[0], approximate=at.get("approximate", "none"))


@op("clip")
def _clip(a, at):
    lo, hi = at.get("min"), at.get("max")
    return torch.clamp(a[0], min=lo, max=hi)


@op("softmax")
def _softmax(a, at):
    return torch.softmax(a[0], dim=at.get("axis", -1))


@op("cast")
def _cast(a, at):
    to = at["to"]
    if to == "float":
        return a[0] if a[0].is_floating_point() else a[0].to(torch.get_default_dtype())
    if to == "int":
        return a[0].to(torch.int64)
    if to == "bool":
        return a[0].bool()
    raise ValueError(f"cast to {to}")


# --------------------------------------------------------------------------------------------- pooling
def _pool_pad(x, nd, pads, value):
    begin, end = pads[:nd], pads[nd:]
    pad_arg = []
    for i in reversed(range(nd)):
        pad_arg += [begin[i], end[i]]
    return F.pad(x, pad_arg, value=value)


@op("maxpool")
def _maxpool(a, at):
    x = a[0]
    k = at["kernel_shape"]
    nd = len(k)
    pads = at.get("pads", [0] * (2 * nd))
    if any(pads):
        x = _pool_pad(x, nd, pads, -math.inf)
    fn = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}[nd]
    return fn(x, tuple(k), stride=tuple(at.get("strides", k)), dilation=tuple(at.get("dilations", [1] * nd)),
              ceil_mode=bool(at.get("ceil_mode", 0)))


@op("avgpool")
def _avgpool(a, at):
    x = a[0]
    k = at["kernel_shape"]
    nd = len(k)
    pads = at.get("pads", [0] * (2 * nd))
    fn = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}[nd]
    begin, end = pads[:nd], pads[nd:]
    if begin == end and all(2 * p <= kk for p, kk in zip(begin, k)):
        return fn(x, tuple(k), stride=tuple(at.get("strides", k)), padding=tuple(begin),
                  ceil_mode=bool(at.get("ceil_mode", 0)), count_include_pad=bool(at.get("count_include_pad", 0)))
    if at.get("count_include_pad", 0):
        return fn(_pool_pad(x, nd, pads, 0.0), tuple(k), stride=tuple(at.get("strides", k)))
    ones = torch.ones_like(x[:1, :1])
    s = fn(_pool_pad(x, nd, pads, 0.0), tuple(k), stride=tuple(at.get("strides", k)))
    c = fn(_pool_pad(ones, nd, pads, 0.0), tuple(k), stride=tuple(at.get("strides", k)))
    return s / c


@op("globalavgpool")
def _globalavgpool(a, at):
    x = a[0]
    return x.mean(dim=tuple(range(2, x.dim())), keepdim=True)


@op("pad")
def _pad(a, at):
    x = a[0]
    pads = at["pads"]  # ONNX layout over all axes: begins then ends
    r = x.dim()
    pad_arg = []
    for i in reversed(range(r)):
        pad_arg += [pads[i], pads[r + i]]
    mode = at.get("mode", "constant")
    if mode == "constant":
        return F.pad(x, pad_arg, value=float(at.get("value", 0.0)))
    # reflect / edge only on trailing spatial axes
    trail = pad_arg[: 2 * (r - 2)]
    return F.pad(x, trail, mode={"reflect": "reflect", "edge": "replicate"}[mode])


# ------------------------------------------------------------------------------------- reductions
@op("reducesum")
def _reducesum(a, at):
    axes = at.get("axes")
    if axes is None:
        axes = list(range(1, a[0].dim()))
    return a[0].sum(dim=tuple(axes), keepdim=bool(at.get("keepdims", 1)))


@op("reducemean")
def _reducemean(a, at):
    axes = at.get("axes")
    if axes is None:
        axes = list(range(1, a[0].dim()))
    return a[0].mean(dim=tuple(axes), keepdim=bool(at.get("keepdims", 1)))


# ---------------------------------------------------------------------------------- reshape family
@op("reshape")
def _reshape(a, at):
    """`shape` is the per-sample target shape; the batch axis is kept."""
    return a[0].reshape(a[0].shape[0], *at["shape"])


@op("transpose")
def _transpose(a, at):
    return a[0].permute(*at["perm"])


@op("concat")
def _concat(a, at):
    n = max(t.shape[0] for t in a if t.dim() > 0)
    parts = []
    for t in a:
        if t.shape[0] != n:  # a constant part: broadcast over the batch
            t = t.expand(n, *t.shape[1:])
        parts.append(t)
    return torch.cat(parts, dim=at["axis"])


@op("slice")
def _slice(a, at):
    x = a[0]
    idx = [slice(None)] * x.dim()
    for ax, s, e, st in zip(at["axes"], at["starts"], at["ends"], at["steps"]):
        if st > 0:
            idx[ax] = slice(s, e, st)
        else:
            # negative step: take the forward slice then flip
            n = x.shape[ax]
            rng = list(range(n))[slice(s, e, st)]
            return _gather_axis(x, ax, rng) if len(at["axes"]) == 1 else _slice_generic(x, at)
    return x[tuple(idx)]


def _gather_axis(x, ax, indices):
    return torch.index_select(x, ax, torch.as_tensor(indices, dtype=torch.long, device=x.device))


def _slice_generic(x, at):
    for ax, s, e, st in zip(at["axes"], at["starts"], at["ends"], at["steps"]):
        rng = list(range(x.shape[ax]))[slice(s, e, st)]
        x = _gather_axis(x, ax, rng)
    return x


@op("gather")
def _gather(a, at):
    """Gather with constant indices `indices` (a nested list or int) along `axis`."""
    x = a[0]
    ax = at["axis"]
    ind = torch.as_tensor(at["indices"], dtype=torch.long, device=x.device)
    ind = torch.where(ind < 0, ind + x.shape[ax], ind)
    out = torch.index_select(x, ax, ind.reshape(-1))
    new_shape = list(x.shape[:ax]) + list(ind.shape) + list(x.shape[ax + 1:])
    return out.reshape(new_shape)


@op("expand")
def _expand(a, at):
    """Broadcast to the per-sample `shape` (ONNX Expand semantics: numpy broadcasting)."""
    x = a[0]
    target = torch.broadcast_shapes(tuple(x.shape[1:]), tuple(at["shape"]))
    return x.expand(x.shape[0], *target) if x.dim() == len(target) + 1 else torch.broadcast_to(x, (x.shape[0], *target))


@op("resize")
def _resize(a, at):
    """Nearest-neighbour upsampling by integer scale factors on the spatial axes."""
    x = a[0]
    return F.interpolate(x, size=tuple(at["size"]), mode="nearest")


# ------------------------------------------------------------------------------------------ groupsort
@op("groupsort")
def _groupsort(a, at):
    """GroupSort (MaxMin for group_size 2): sort consecutive groups of `group_size` entries of axis 1
    descending (see verify.nn.group_sort)."""
    from verify.nn import group_sort

    return group_sort(a[0], at.get("group_size", 2))

"""One small converter per ONNX operator, registered by op type.

A converter turns one ONNX node into zero or more IR nodes through the importer's `Builder`
(`verify.importers.onnx`). It receives the builder, the `NodeProto`, its inputs as `Value`s (`None` for
an omitted optional input) and the node's attributes as a plain dict, and returns the `Value` of each
output it defines.

Batch bookkeeping. The IR gives every non-constant value a leading batch axis. An ONNX value that
depends on the network input is *batched* when its ONNX axis 0 is that batch (ONNX shape
`(1, *per_sample)`), and *implicit* when the ONNX tensor is one whole sample (rank-1 inputs such as
`X_0[1]`, or the result of a reshape that folded the batch away). ONNX axis `a` is IR axis `a` for a batched
value and `a + 1` for an implicit one. Because the ONNX model is evaluated per sample (batch 1), every
reshape-like operator is simply a per-sample reshape; operators that would mix the batch axis with
another (concat on axis 0, a transpose that moves it, ...) are rejected unless they are no-ops.

Nodes whose inputs are all constants never reach a converter: the importer folds them.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
import onnx
from onnx import numpy_helper

if TYPE_CHECKING:  # pragma: no cover
    from verify.importers.onnx import Builder


@dataclass(frozen=True)
class Value:
    """An ONNX value during import: a constant array or a reference to an IR value.

    For a variable, `shape` is the IR per-sample shape and `batched` says whether the ONNX tensor is
    `(1, *shape)` (True) or `shape` itself (False). For a constant, `array` holds the data in its ONNX
    dtype and `shape` is its full shape."""

    name: str
    shape: tuple[int, ...]
    batched: bool = True
    array: np.ndarray | None = None

    @property
    def is_const(self) -> bool:
        return self.array is not None

    @property
    def onnx_shape(self) -> tuple[int, ...]:
        if self.is_const:
            return tuple(self.array.shape)
        return (1, *self.shape) if self.batched else tuple(self.shape)

    @property
    def onnx_rank(self) -> int:
        return len(self.onnx_shape)


Converter = Callable[["Builder", onnx.NodeProto, "list[Value | None]", "dict[str, Any]"], "list[Value] | Value"]
CONVERTERS: dict[str, Converter] = {}


def converter(*op_types: str):
    """Register a converter for the given ONNX op types."""
    def deco(fn: Converter) -> Converter:
        for t in op_types:
            CONVERTERS[t] = fn
        return fn
    return deco


def attributes(node: onnx.NodeProto) -> dict[str, Any]:
    """A node's attributes as Python values (strings decoded, tensors as numpy arrays)."""
    out: dict[str, Any] = {}
    for a in node.attribute:
        v = onnx.helper.get_attribute_value(a)
        if isinstance(v, bytes):
            v = v.decode("utf-8", "replace")
        elif isinstance(v, onnx.TensorProto):
            v = numpy_helper.to_array(v)
        elif isinstance(v, list) and v and isinstance(v[0], bytes):
            v = [s.decode("utf-8", "replace") for s in v]
        out[a.name] = v
    return out


# ------------------------------------------------------------------------------------------ helpers
def _var(b: "Builder", v: Value | None, what: str = "input") -> Value:
    if v is None:
        b.unsupported(f"missing {what}")
    if v.is_const:
        b.unsupported(f"{what} must depend on the network input")
    return v


def _const(b: "Builder", v: Value | None, what: str) -> np.ndarray:
    if v is None or not v.is_const:
        b.unsupported(f"{what} must be a constant")
    return v.array


def _ints(a) -> list[int]:
    return [int(i) for i in np.asarray(a).reshape(-1)]


def _input_or_attr(b: "Builder", ins, idx: int, at: dict, key: str, first_input_opset: int):
    """An argument that moved from an attribute to an input at `first_input_opset` (Slice, Pad, ...)."""
    if b.opset >= first_input_opset:
        if len(ins) > idx and ins[idx] is not None:
            return _const(b, ins[idx], key)
        return None
    return at.get(key)


def _spatial_pads(b: "Builder", at: dict, in_sp: list[int], k: list[int], s: list[int], d: list[int]) -> list[int]:
    """Explicit begin/end pads for conv / pool from `pads` or `auto_pad`."""
    nd = len(k)
    auto = at.get("auto_pad", "NOTSET")
    if auto in ("NOTSET", ""):
        return _ints(at.get("pads", [0] * (2 * nd)))
    if auto == "VALID":
        return [0] * (2 * nd)
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        begin, end = [], []
        for i in range(nd):
            out = -(-in_sp[i] // s[i])
            total = max(0, (out - 1) * s[i] + (k[i] - 1) * d[i] + 1 - in_sp[i])
            small = total // 2
            begin.append(small if auto == "SAME_UPPER" else total - small)
            end.append(total - small if auto == "SAME_UPPER" else small)
        return begin + end
    b.unsupported(f"auto_pad={auto!r}")


def _require_batched(b: "Builder", v: Value, what: str = "input") -> Value:
    """Operators with an N, C, ... layout (conv, pooling, ...) need ONNX axis 0 to be the batch."""
    if v.batched:
        return v
    if v.shape and v.shape[0] == 1:
        return b.reshape_to(v, v.shape)
    b.unsupported(f"{what} has no batch axis of size 1 (shape {v.onnx_shape})")


def _channel_const(arr: np.ndarray, rank: int) -> np.ndarray:
    """A per-channel vector (C,) shaped to broadcast over an IR tensor (N, C, *spatial) of `rank`."""
    return np.asarray(arr, dtype=np.float64).reshape((-1,) + (1,) * (rank - 2))


# ------------------------------------------------------------------------------- elementwise family
_UNARY = {
    "Relu": "relu", "Sigmoid": "sigmoid", "Tanh": "tanh", "Sin": "sin", "Cos": "cos", "Exp": "exp",
    "Log": "log", "Sqrt": "sqrt", "Reciprocal": "reciprocal", "Softplus": "softplus", "Erf": "erf",
    "Abs": "abs", "Sign": "sign", "Floor": "floor", "Ceil": "ceil", "Neg": "neg",
}


@converter(*_UNARY)
def _unary(b, node, ins, at):
    return b.add(_UNARY[node.op_type], [_var(b, ins[0])])


@converter("LeakyRelu")
def _leakyrelu(b, node, ins, at):
    return b.add("leakyrelu", [_var(b, ins[0])], {"alpha": float(at.get("alpha", 0.01))})


@converter("Gelu")
def _gelu(b, node, ins, at):
    approx = at.get("approximate", "none")
    if approx not in ("none", "tanh"):
        b.unsupported(f"approximate={approx!r}")
    return b.add("gelu", [_var(b, ins[0])], {"approximate": approx})


@converter("HardSigmoid")
def _hardsigmoid(b, node, ins, at):
    x = _var(b, ins[0])
    y = b.add("mul", [x, b.scalar(float(at.get("alpha", 0.2)))])
    y = b.add("add", [y, b.scalar(float(at.get("beta", 0.5)))])
    return b.add("clip", [y], {"min": 0.0, "max": 1.0})


_BINARY = {"Add": "add", "Sub": "sub", "Mul": "mul", "Div": "div", "Pow": "pow", "Equal": "equal"}


@converter(*_BINARY)
def _binary(b, node, ins, at):
    if at.get("broadcast") == 0 or "axis" in at:  # opset < 7 legacy broadcasting
        b.unsupported("legacy 'broadcast'/'axis' attributes")
    return b.add(_BINARY[node.op_type], b.align([ins[0], ins[1]]))


@converter("Max", "Min", "Sum")
def _variadic(b, node, ins, at):
    op = {"Max": "max", "Min": "min", "Sum": "add"}[node.op_type]
    vals = [v for v in ins if v is not None]
    acc = vals[0]
    for v in vals[1:]:
        acc = b.add(op, b.align([acc, v]))
    return acc


@converter("Where")
def _where(b, node, ins, at):
    return b.add("where", b.align(list(ins[:3])))


@converter("Clip")
def _clip(b, node, ins, at):
    x = _var(b, ins[0])
    if b.opset >= 11:
        lo = _const(b, ins[1], "min").item() if len(ins) > 1 and ins[1] is not None else None
        hi = _const(b, ins[2], "max").item() if len(ins) > 2 and ins[2] is not None else None
    else:
        lo, hi = at.get("min"), at.get("max")
    if lo is None and hi is None:
        return x
    return b.add("clip", [x], {"min": None if lo is None else float(lo), "max": None if hi is None else float(hi)})


@converter("Softmax")
def _softmax(b, node, ins, at):
    x = _var(b, ins[0])
    r = x.onnx_rank
    axis = int(at.get("axis", 1 if b.opset < 13 else -1))
    axis = axis + r if axis < 0 else axis
    if not 0 <= axis < r:
        b.unsupported(f"axis {axis} out of range")
    if b.opset >= 13 or axis == r - 1:
        return b.add("softmax", [x], {"axis": b.ir_axis(x, axis)})
    # opset < 13: softmax over the flattened axes [axis, rank)
    lead = x.onnx_shape[:axis]
    flat = b.reshape_to(x, (*lead, int(np.prod(x.onnx_shape[axis:]))), keep_flag=True)
    y = b.add("softmax", [flat], {"axis": len(flat.shape)})
    return b.reshape_to(y, x.onnx_shape, keep_flag=True)


@converter("Cast")
def _cast(b, node, ins, at):
    x = _var(b, ins[0])
    to = onnx.helper.tensor_dtype_to_np_dtype(int(at["to"]))
    if np.issubdtype(to, np.floating):
        return b.add("cast", [x], {"to": "float"})
    if np.issubdtype(to, np.bool_):
        return b.add("cast", [x], {"to": "bool"})
    if np.issubdtype(to, np.integer):
        return b.add("cast", [x], {"to": "int"})
    b.unsupported(f"cast to {to}")


@converter("Identity", "Dropout")
def _identity(b, node, ins, at):
    if node.op_type == "Dropout" and len(node.output) > 1 and node.output[1]:
        b.unsupported("the mask output")
    if node.op_type == "Dropout" and len(ins) > 2 and ins[2] is not None and bool(_const(b, ins[2], "training_mode")):
        b.unsupported("training_mode=1")
    return ins[0]


# ---------------------------------------------------------------------------------- linear family
@converter("MatMul")
def _matmul(b, node, ins, at):
    a, w = ins[0], ins[1]
    if not a.is_const and w.is_const:
        W = w.array
        if W.ndim > 2 and all(s == 1 for s in W.shape[:-2]):
            W = W.reshape(W.shape[-2:])
        if W.ndim > 2:
            b.unsupported("batched MatMul with a constant of rank > 2")
        return b.add("matmul", [a, b.const(W)])
    if a.is_const and not w.is_const:
        A = a.array
        if A.ndim != 2:
            b.unsupported("constant left operand of rank != 2")
        if w.onnx_rank == 1:  # W @ x for a vector x: a linear layer with weight (out, in) = A
            return b.add("linear", [w, b.const(A)])
        if len(w.shape) >= 2:
            return b.add("matmul", [b.const(A), w])
        b.unsupported("constant @ batched vector")
    if len(a.shape) < 2 or len(w.shape) < 2 or a.batched != w.batched:
        b.unsupported("MatMul of two variables needs per-sample matrices")
    return b.add("matmul", [a, w])


@converter("Gemm")
def _gemm(b, node, ins, at):
    a = _var(b, ins[0], "A")
    B = np.asarray(_const(b, ins[1], "B"), dtype=np.float64)
    if int(at.get("transA", 0)):
        b.unsupported("transA=1 on the network input")
    if a.onnx_rank != 2:
        b.unsupported(f"A of rank {a.onnx_rank}")
    if int(at.get("transB", 0)):
        B = B.T
    W = float(at.get("alpha", 1.0)) * B.T  # (out, in)
    inputs = [a, b.const(W)]
    extra = None
    if len(ins) > 2 and ins[2] is not None:
        C = float(at.get("beta", 1.0)) * np.asarray(_const(b, ins[2], "C"), dtype=np.float64)
        if C.ndim <= 1 or all(s == 1 for s in C.shape[:-1]):
            inputs.append(b.const(np.broadcast_to(C.reshape(-1), (W.shape[0],)).copy()))
        else:
            extra = C
    y = b.add("linear", inputs)
    if extra is not None:
        y = b.add("add", b.align([y, b.const(extra)]))
    return y


def _conv_common(b, x, W, at):
    nd = W.ndim - 2
    k = _ints(at.get("kernel_shape", W.shape[2:]))
    if list(k) != list(W.shape[2:]):
        b.unsupported("kernel_shape differs from the weight shape")
    s = _ints(at.get("strides", [1] * nd))
    d = _ints(at.get("dilations", [1] * nd))
    in_sp = list(x.shape[1:])
    if len(in_sp) != nd:
        b.unsupported(f"input rank {x.onnx_rank} for a {nd}-d kernel")
    return nd, k, s, d, in_sp


@converter("Conv")
def _conv(b, node, ins, at):
    x = _require_batched(b, _var(b, ins[0]))
    W = np.asarray(_const(b, ins[1], "weight"), dtype=np.float64)
    nd, k, s, d, in_sp = _conv_common(b, x, W, at)
    pads = _spatial_pads(b, at, in_sp, k, s, d)
    inputs = [x, b.const(W)]
    if len(ins) > 2 and ins[2] is not None:
        inputs.append(b.const(np.asarray(_const(b, ins[2], "bias"), dtype=np.float64)))
    return b.add("conv", inputs, {"pads": pads, "strides": s, "dilations": d, "group": int(at.get("group", 1))})


@converter("ConvTranspose")
def _convtranspose(b, node, ins, at):
    x = _require_batched(b, _var(b, ins[0]))
    W = np.asarray(_const(b, ins[1], "weight"), dtype=np.float64)
    nd, k, s, d, in_sp = _conv_common(b, x, W, at)
    if "output_shape" in at or at.get("auto_pad", "NOTSET") not in ("NOTSET", "VALID", ""):
        b.unsupported("output_shape / SAME auto_pad")
    pads = [0] * (2 * nd) if at.get("auto_pad") == "VALID" else _ints(at.get("pads", [0] * (2 * nd)))
    inputs = [x, b.const(W)]
    if len(ins) > 2 and ins[2] is not None:
        inputs.append(b.const(np.asarray(_const(b, ins[2], "bias"), dtype=np.float64)))
    return b.add("convtranspose", inputs, {"pads": pads, "strides": s, "dilations": d,
                                           "output_padding": _ints(at.get("output_padding", [0] * nd)),
                                           "group": int(at.get("group", 1))})


@converter("BatchNormalization")
def _batchnorm(b, node, ins, at):
    if len(node.output) > 1 and any(node.output[1:]) or int(at.get("training_mode", 0)):
        b.unsupported("training mode (extra outputs)")
    x = _require_batched(b, _var(b, ins[0]))
    gamma, beta, mean, var = (np.asarray(_const(b, v, n), dtype=np.float64)
                              for v, n in zip(ins[1:5], ("scale", "B", "mean", "var")))
    scale = gamma / np.sqrt(var + float(at.get("epsilon", 1e-5)))
    shift = beta - mean * scale
    rank = len(x.shape) + 1
    y = b.add("mul", [x, b.const(_channel_const(scale, rank))])
    return b.add("add", [y, b.const(_channel_const(shift, rank))])


# ------------------------------------------------------------------------------------------ pooling
def _pool_attrs(b, x, at):
    k = _ints(at["kernel_shape"])
    nd = len(k)
    s = _ints(at.get("strides", [1] * nd))
    d = _ints(at.get("dilations", [1] * nd))
    if len(x.shape) != nd + 1:
        b.unsupported(f"input rank {x.onnx_rank} for a {nd}-d pool")
    pads = _spatial_pads(b, at, list(x.shape[1:]), k, s, d)
    return k, s, d, pads


@converter("MaxPool")
def _maxpool(b, node, ins, at):
    if len(node.output) > 1 and node.output[1]:
        b.unsupported("the Indices output")
    x = _require_batched(b, _var(b, ins[0]))
    k, s, d, pads = _pool_attrs(b, x, at)
    return b.add("maxpool", [x], {"kernel_shape": k, "strides": s, "dilations": d, "pads": pads,
                                  "ceil_mode": int(at.get("ceil_mode", 0))})


@converter("AveragePool")
def _avgpool(b, node, ins, at):
    x = _require_batched(b, _var(b, ins[0]))
    k, s, d, pads = _pool_attrs(b, x, at)
    if any(v != 1 for v in d):
        b.unsupported("dilations")
    nd = len(k)
    ceil_mode = int(at.get("ceil_mode", 0))
    if ceil_mode and (pads[:nd] != pads[nd:] or any(2 * p > kk for p, kk in zip(pads[:nd], k))):
        b.unsupported("ceil_mode with asymmetric padding")
    return b.add("avgpool", [x], {"kernel_shape": k, "strides": s, "pads": pads, "ceil_mode": ceil_mode,
                                  "count_include_pad": int(at.get("count_include_pad", 0))})


@converter("GlobalAveragePool")
def _gap(b, node, ins, at):
    return b.add("globalavgpool", [_require_batched(b, _var(b, ins[0]))])


@converter("GlobalMaxPool")
def _gmp(b, node, ins, at):
    x = _require_batched(b, _var(b, ins[0]))
    k = list(x.shape[1:])
    return b.add("maxpool", [x], {"kernel_shape": k, "strides": [1] * len(k), "pads": [0] * (2 * len(k))})


@converter("Pad")
def _pad(b, node, ins, at):
    x = _var(b, ins[0])
    r = x.onnx_rank
    if b.opset >= 11:
        pads = _ints(_const(b, ins[1], "pads"))
        value = _const(b, ins[2], "constant_value").item() if len(ins) > 2 and ins[2] is not None else 0.0
        if len(ins) > 3 and ins[3] is not None:
            axes = [a + r if a < 0 else a for a in _ints(_const(b, ins[3], "axes"))]
            full = [0] * (2 * r)
            for i, a in enumerate(axes):
                full[a], full[r + a] = pads[i], pads[len(axes) + i]
            pads = full
    else:
        pads = _ints(at.get("pads", at.get("paddings")))
        value = at.get("value", 0.0)
    if len(pads) != 2 * r:
        b.unsupported(f"{len(pads)} pads for rank {r}")
    mode = at.get("mode", "constant")
    if mode not in ("constant", "reflect", "edge"):
        b.unsupported(f"mode={mode!r}")
    if any(pads) and any(p < 0 for p in pads):
        b.unsupported("negative pads")
    begin, end = pads[:r], pads[r:]
    if x.batched:
        if begin[0] or end[0]:
            b.unsupported("padding of the batch axis")
        begin, end = begin[1:], end[1:]
    rank = len(x.shape)
    ir_pads = [0] + list(begin) + [0] + list(end)
    if not any(ir_pads):
        return x
    if mode != "constant" and (ir_pads[1] or ir_pads[rank + 2]):
        b.unsupported(f"mode={mode!r} on a non-spatial axis")
    return b.add("pad", [x], {"pads": ir_pads, "mode": mode, "value": float(value)})


# ------------------------------------------------------------------------------------- reductions
@converter("ReduceSum", "ReduceMean")
def _reduce(b, node, ins, at):
    x = _var(b, ins[0])
    first_input_opset = 13 if node.op_type == "ReduceSum" else 18
    axes = _input_or_attr(b, ins, 1, at, "axes", first_input_opset)
    keep = int(at.get("keepdims", 1))
    r = x.onnx_rank
    if axes is None or len(_ints(axes)) == 0:
        if int(at.get("noop_with_empty_axes", 0)):
            return x
        axes = list(range(r))
    axes = sorted({a + r if a < 0 else a for a in _ints(axes)})
    batched = x.batched
    if x.batched and 0 in axes:  # reducing the size-1 batch axis is a no-op (kept) or a squeeze
        axes.remove(0)
        if not keep:
            batched = False
    ir_axes = [a if x.batched else a + 1 for a in axes]
    if not ir_axes:
        return x if batched == x.batched else Value(x.name, x.shape, batched)
    op = "reducesum" if node.op_type == "ReduceSum" else "reducemean"
    return b.add(op, [x], {"axes": ir_axes, "keepdims": keep}, batched=batched)


# ---------------------------------------------------------------------------------- reshape family
@converter("Flatten")
def _flatten(b, node, ins, at):
    x = _var(b, ins[0])
    s = x.onnx_shape
    axis = int(at.get("axis", 1))
    axis = axis + len(s) if axis < 0 else axis
    return b.reshape_to(x, (int(np.prod(s[:axis])), int(np.prod(s[axis:]))))


@converter("Reshape")
def _reshape(b, node, ins, at):
    x = _var(b, ins[0])
    target = _ints(_const(b, ins[1], "shape"))
    s = x.onnx_shape
    allowzero = int(at.get("allowzero", 0))
    out = [s[i] if (t == 0 and not allowzero) else t for i, t in enumerate(target)]
    if out.count(-1) > 1:
        b.unsupported("more than one -1 in the target shape")
    if -1 in out:
        known = int(np.prod([t for t in out if t != -1]))
        out[out.index(-1)] = int(np.prod(s)) // known if known else 0
    if int(np.prod(out)) != int(np.prod(s)):
        b.unsupported(f"cannot reshape {s} to {target}")
    return b.reshape_to(x, tuple(out))


@converter("Squeeze")
def _squeeze(b, node, ins, at):
    x = _var(b, ins[0])
    s = x.onnx_shape
    axes = _input_or_attr(b, ins, 1, at, "axes", 13)
    if axes is None:
        axes = [i for i, d in enumerate(s) if d == 1]
    axes = {a + len(s) if a < 0 else a for a in _ints(axes)}
    if any(s[a] != 1 for a in axes):
        b.unsupported("squeezing an axis of size != 1")
    return b.reshape_to(x, tuple(d for i, d in enumerate(s) if i not in axes))


@converter("Unsqueeze")
def _unsqueeze(b, node, ins, at):
    x = _var(b, ins[0])
    s = list(x.onnx_shape)
    axes = _ints(_input_or_attr(b, ins, 1, at, "axes", 13))
    r = len(s) + len(axes)
    for a in sorted(a + r if a < 0 else a for a in axes):
        s.insert(a, 1)
    return b.reshape_to(x, tuple(s))


@converter("Transpose")
def _transpose(b, node, ins, at):
    x = _var(b, ins[0])
    s = x.onnx_shape
    r = len(s)
    perm = _ints(at.get("perm", list(reversed(range(r)))))
    out = tuple(s[p] for p in perm)
    if [p for p in perm if s[p] != 1] == [i for i in range(r) if s[i] != 1]:
        return b.reshape_to(x, out)  # only size-1 axes move: a reshape
    if x.batched:
        if perm[0] != 0:
            b.unsupported("transpose moves the batch axis")
        ir_perm = perm
    else:
        ir_perm = [0] + [p + 1 for p in perm]
    return b.add("transpose", [x], {"perm": ir_perm})


@converter("Concat")
def _concat(b, node, ins, at):
    vals = [v for v in ins if v is not None and not (v.is_const and v.array.size == 0)]
    vars_ = [v for v in vals if not v.is_const]
    ref = vars_[0]
    if any(v.batched != ref.batched or v.onnx_rank != ref.onnx_rank for v in vars_):
        b.unsupported("inputs with different batch layouts")
    axis = int(at["axis"])
    axis = axis + ref.onnx_rank if axis < 0 else axis
    ir_axis = b.ir_axis(ref, axis)
    parts = []
    for v in vals:
        if v.is_const:
            arr = v.array if ref.batched else v.array[None]
            if arr.ndim != len(ref.shape) + 1 or arr.shape[0] != 1:
                b.unsupported(f"constant part of shape {v.array.shape}")
            parts.append(b.const(arr))
        else:
            parts.append(v)
    if len(parts) == 1:
        return parts[0]
    return b.add("concat", parts, {"axis": ir_axis}, batched=ref.batched)


def _slice_range(dim: int, start: int, end: int, step: int) -> tuple[int, int]:
    """ONNX Slice clamping, returned in a form Python slicing reads the same way."""
    if step > 0:
        start = min(max(start + dim if start < 0 else start, 0), dim)
        end = min(max(end + dim if end < 0 else end, 0), dim)
        return start, end
    start = min(max(start + dim if start < 0 else start, 0), dim - 1)
    end = min(max(end + dim if end < 0 else end, -1), dim - 1)
    return start, (-dim - 1 if end == -1 else end)


def _emit_slice(b, x: Value, axes, starts, ends, steps) -> Value:
    s = x.onnx_shape
    r = len(s)
    attrs = {"axes": [], "starts": [], "ends": [], "steps": []}
    for a, st, en, sp in zip(axes, starts, ends, steps):
        a = a + r if a < 0 else a
        if sp == 0:
            b.unsupported("step 0")
        st, en = _slice_range(s[a], int(st), int(en), int(sp))
        n = len(range(s[a])[slice(st, en, sp)])
        if n == s[a] and sp == 1:
            continue  # whole axis
        if x.batched and a == 0:
            b.unsupported("slicing the batch axis")
        attrs["axes"].append(b.ir_axis(x, a))
        attrs["starts"].append(st)
        attrs["ends"].append(en)
        attrs["steps"].append(int(sp))
    if not attrs["axes"]:
        return x
    return b.add("slice", [x], attrs)


@converter("Slice")
def _slice(b, node, ins, at):
    x = _var(b, ins[0])
    if b.opset >= 10:
        starts = _ints(_const(b, ins[1], "starts"))
        ends = _ints(_const(b, ins[2], "ends"))
        axes = _ints(_const(b, ins[3], "axes")) if len(ins) > 3 and ins[3] is not None else list(range(len(starts)))
        steps = _ints(_const(b, ins[4], "steps")) if len(ins) > 4 and ins[4] is not None else [1] * len(starts)
    else:
        starts, ends = _ints(at["starts"]), _ints(at["ends"])
        axes = _ints(at.get("axes", list(range(len(starts)))))
        steps = [1] * len(starts)
    return _emit_slice(b, x, axes, starts, ends, steps)


@converter("Split")
def _split(b, node, ins, at):
    x = _var(b, ins[0])
    s = x.onnx_shape
    axis = int(at.get("axis", 0))
    axis = axis + len(s) if axis < 0 else axis
    n_out = len(node.output)
    split = _input_or_attr(b, ins, 1, at, "split", 13)
    if split is None or len(_ints(split)) == 0:
        dim = s[axis]
        chunk = -(-dim // n_out)
        split = [min(chunk, dim - i * chunk) for i in range(n_out)]
    split = _ints(split)
    outs, start = [], 0
    for size in split:
        outs.append(_emit_slice(b, x, [axis], [start], [start + size], [1]))
        start += size
    return outs


@converter("Gather")
def _gather(b, node, ins, at):
    x = _var(b, ins[0], "data")
    idx = np.asarray(_const(b, ins[1], "indices")).astype(np.int64)
    s = x.onnx_shape
    axis = int(at.get("axis", 0))
    axis = axis + len(s) if axis < 0 else axis
    idx = np.where(idx < 0, idx + s[axis], idx)
    if np.any(idx < 0) or np.any(idx >= s[axis]):
        b.unsupported("index out of range")
    out_shape = s[:axis] + idx.shape + s[axis + 1:]
    if x.batched and axis == 0:  # indices into the size-1 batch axis: all zero, a reshape
        return b.reshape_to(x, out_shape)
    return b.add("gather", [x], {"axis": b.ir_axis(x, axis), "indices": idx.tolist()},
                 batched=x.batched)


@converter("Expand")
def _expand(b, node, ins, at):
    x = _var(b, ins[0])
    shape = tuple(_ints(_const(b, ins[1], "shape")))
    out = tuple(np.broadcast_shapes(x.onnx_shape, shape))
    if out == x.onnx_shape:
        return x
    if x.batched and len(out) > x.onnx_rank:  # new leading axes: the result is one whole sample
        x = b.reshape(x, x.onnx_shape, False)
    if x.batched:
        if out[0] != 1:
            b.unsupported("expanding the batch axis")
        per = out[1:]
    else:
        per = out
    if len(per) > len(x.shape):
        x = b.reshape(x, (1,) * (len(per) - len(x.shape)) + tuple(x.shape), x.batched)
    return b.add("expand", [x], {"shape": list(per)})


@converter("Shape")
def _shape(b, node, ins, at):
    s = np.asarray(ins[0].onnx_shape, dtype=np.int64)
    r = len(s)
    start = int(at.get("start", 0))
    end = int(at.get("end", r))
    start = min(max(start + r if start < 0 else start, 0), r)
    end = min(max(end + r if end < 0 else end, 0), r)
    return b.const(s[start:end])


@converter("Size")
def _size(b, node, ins, at):
    return b.const(np.asarray(int(np.prod(ins[0].onnx_shape)), dtype=np.int64))


# ------------------------------------------------------------------------------------------- resize
def _nearest_index(in_dim: int, out_dim: int, scale: float, ctm: str, mode: str) -> np.ndarray:
    """Source index of each output position for ONNX nearest-neighbour resizing along one axis."""
    x = np.arange(out_dim, dtype=np.float64)
    if ctm == "half_pixel":
        src = (x + 0.5) / scale - 0.5
    elif ctm == "pytorch_half_pixel":
        src = (x + 0.5) / scale - 0.5 if out_dim > 1 else np.zeros_like(x)
    elif ctm == "align_corners":
        src = x * (in_dim - 1) / (out_dim - 1) if out_dim > 1 else np.zeros_like(x)
    elif ctm == "asymmetric":
        src = x / scale
    elif ctm == "half_pixel_symmetric":
        adj = out_dim / (scale * in_dim)
        center = in_dim / 2.0
        offset = center * (1 - adj)
        src = offset + (x + 0.5) / scale - 0.5
    else:
        raise ValueError(ctm)
    if mode == "round_prefer_floor":
        idx = np.where(src - np.floor(src) == 0.5, np.floor(src), np.round(src))
    elif mode == "round_prefer_ceil":
        idx = np.where(src - np.floor(src) == 0.5, np.ceil(src), np.round(src))
    elif mode == "floor":
        idx = np.floor(src)
    elif mode == "ceil":
        idx = np.ceil(src)
    else:
        raise ValueError(mode)
    return np.clip(idx, 0, in_dim - 1).astype(np.int64)


@converter("Resize", "Upsample")
def _resize(b, node, ins, at):
    x = _require_batched(b, _var(b, ins[0]))
    s = x.onnx_shape
    if at.get("mode", "nearest") != "nearest":
        b.unsupported(f"mode={at.get('mode')!r} (only nearest)")
    if "axes" in at or at.get("keep_aspect_ratio_policy", "stretch") != "stretch":
        b.unsupported("axes / keep_aspect_ratio_policy")
    sizes = None
    if node.op_type == "Upsample":
        scales = at.get("scales") if b.opset < 9 else _const(b, ins[1], "scales")
        ctm, mode = "asymmetric", "floor"
    elif b.opset < 11:
        scales = _const(b, ins[1], "scales")
        ctm, mode = "asymmetric", "floor"
    else:
        ctm = at.get("coordinate_transformation_mode", "half_pixel")
        mode = at.get("nearest_mode", "round_prefer_floor")
        if ctm not in ("half_pixel", "pytorch_half_pixel", "align_corners", "asymmetric", "half_pixel_symmetric"):
            b.unsupported(f"coordinate_transformation_mode={ctm!r}")
        if mode not in ("round_prefer_floor", "round_prefer_ceil", "floor", "ceil"):
            b.unsupported(f"nearest_mode={mode!r}")
        scales = _const(b, ins[2], "scales") if len(ins) > 2 and ins[2] is not None else None
        if scales is not None and scales.size == 0:
            scales = None
        if len(ins) > 3 and ins[3] is not None and _const(b, ins[3], "sizes").size:
            sizes = _ints(ins[3].array)
    if sizes is None:
        if scales is None:
            b.unsupported("neither scales nor sizes")
        scales = [float(v) for v in np.asarray(scales).reshape(-1)]
        sizes = [int(math.floor(d * sc)) for d, sc in zip(s, scales)]
    else:
        scales = [o / d for o, d in zip(sizes, s)]
    if len(sizes) != len(s) or sizes[0] != s[0] or sizes[1] != s[1]:
        b.unsupported("resizing the batch or channel axis")
    maps = [_nearest_index(s[a], sizes[a], scales[a], ctm, mode) for a in range(2, len(s))]
    torch_maps = [np.minimum(np.floor(np.arange(o) * (d / o)), d - 1).astype(np.int64)
                  for d, o in zip(s[2:], sizes[2:])]
    if all(np.array_equal(m, t) for m, t in zip(maps, torch_maps)):
        if list(sizes) == list(s):
            return x
        return b.add("resize", [x], {"size": list(sizes[2:])})
    y = x  # an index map torch's nearest mode does not produce: one gather per spatial axis
    for a, m in zip(range(2, len(s)), maps):
        if not np.array_equal(m, np.arange(s[a])):
            y = b.add("gather", [y], {"axis": a, "indices": m.tolist()})
    return y

"""Export an IR `Graph` (or an `nn.Module`, imported first) to an ONNX model, written with `onnx.helper`.

`export_onnx(graph_or_module, path, input_shape=None)` writes opset 13, float32, one input named "input"
of shape [1, *input_shape] and one output named "output" of shape [1, *output_shape]. Reshapes are
written with a -1 batch dimension, so the model is batch-agnostic apart from the declared input shape.

Operators: every op of `verify.graph.ops.OPS` (linear as Gemm on rank-2 inputs and MatMul + Add otherwise;
gelu expanded through Erf / Tanh since opset 13 has no Gelu; reshape as Reshape [-1, ...]). GroupSort
with groups of two (MaxMin) becomes Reshape -> Slice x2 -> Max / Min -> Concat -> Reshape, which every
ONNX consumer (ours included) understands; larger groups become Reshape -> TopK -> Reshape. An op without
an emitter raises `UnsupportedOpError`.
"""
from __future__ import annotations

import math
import os
from typing import Any, Callable

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper

from verify.errors import InputError, UnsupportedOpError
from verify.graph.ir import Graph, Node

OPSET = 13
IR_VERSION = 7  # the ONNX IR version that goes with opset 13; every onnxruntime since 1.6 loads it


class _Ctx:
    """State of one export: ONNX nodes, initializers, and the IR -> ONNX value-name map."""

    def __init__(self, graph: Graph):
        self.graph = graph
        self.nodes: list[onnx.NodeProto] = []
        self.inits: dict[str, onnx.TensorProto] = {}
        self.used: set[str] = {"input", "output"}
        self.names: dict[str, str] = {graph.input_name: "input"}
        for n in graph.nodes:
            self.names[n.name] = "output" if n.name == graph.output else self._unique(n.name)

    def _unique(self, base: str) -> str:
        name, k = base, 1
        while name in self.used:
            name, k = f"{base}_{k}", k + 1
        self.used.add(name)
        return name

    def tmp(self, base: str) -> str:
        return self._unique(base)

    def value(self, ir_name: str) -> str:
        """ONNX name of an IR value; a constant becomes a float32 initializer on first use."""
        if ir_name in self.names:
            return self.names[ir_name]
        t = self.graph.constants[ir_name]
        arr = t.detach().cpu().numpy()
        if arr.dtype != np.bool_:
            arr = arr.astype(np.float32)
        return self.init(ir_name, arr, key=ir_name)

    def init(self, base: str, arr: np.ndarray, key: str | None = None) -> str:
        name = self._unique(base)
        self.inits[name] = numpy_helper.from_array(np.ascontiguousarray(arr), name)
        if key is not None:
            self.names[key] = name
        return name

    def ints(self, base: str, values) -> str:
        return self.init(base, np.asarray(values, dtype=np.int64))

    def scalar(self, base: str, v: float) -> str:
        return self.init(base, np.asarray(v, dtype=np.float32))

    def add(self, op_type: str, inputs: list[str], outputs: list[str], **attrs) -> None:
        self.nodes.append(helper.make_node(op_type, inputs, outputs, name=f"{op_type}_{len(self.nodes)}", **attrs))


def _rank(g: Graph, ir_name: str) -> int:
    """Full rank (batch included) of a non-constant IR value."""
    return len(g.shape_of(ir_name)) + 1


# ================================================================================================ emitters
Emitter = Callable[[_Ctx, Node, list[str], str], None]
_EMIT: dict[str, Emitter] = {}


def _emits(*ops: str):
    def deco(fn: Emitter) -> Emitter:
        for o in ops:
            _EMIT[o] = fn
        return fn
    return deco


_UNARY = {"relu": "Relu", "sigmoid": "Sigmoid", "tanh": "Tanh", "sin": "Sin", "cos": "Cos", "exp": "Exp",
          "log": "Log", "neg": "Neg", "abs": "Abs", "sqrt": "Sqrt", "reciprocal": "Reciprocal", "erf": "Erf",
          "softplus": "Softplus", "sign": "Sign", "floor": "Floor", "ceil": "Ceil"}
_BINARY = {"add": "Add", "sub": "Sub", "mul": "Mul", "div": "Div", "pow": "Pow", "max": "Max", "min": "Min"}


@_emits(*_UNARY)
def _unary(c: _Ctx, n: Node, ins: list[str], out: str) -> None:
    c.add(_UNARY[n.op], ins[:1], [out])


@_emits(*_BINARY)
def _binary(c: _Ctx, n: Node, ins: list[str], out: str) -> None:
    c.add(_BINARY[n.op], ins[:2], [out])


@_emits("leakyrelu")
def _leakyrelu(c, n, ins, out):
    c.add("LeakyRelu", ins[:1], [out], alpha=float(n.attrs.get("alpha", 0.01)))


@_emits("gelu")
def _gelu(c, n, ins, out):
    """x * (0.5 + 0.5 * phi) with phi = erf(x / sqrt 2) or the tanh approximation. This arrangement is
    deliberately not the textbook 0.5 x (1 + phi): onnxruntime's Gelu fusion rewrites that pattern and
    produces an invalid graph when two GELUs read the same tensor (onnxruntime 1.32)."""
    x = ins[0]
    if n.attrs.get("approximate", "none") == "tanh":
        # tanh(sqrt(2/pi) (x + 0.044715 x^3))
        x3 = c.tmp(out + "_x3")
        c.add("Pow", [x, c.scalar(out + "_three", 3.0)], [x3])
        inner = c.tmp(out + "_inner")
        c.add("Mul", [x3, c.scalar(out + "_k", 0.044715)], [inner])
        s = c.tmp(out + "_s")
        c.add("Add", [x, inner], [s])
        z = c.tmp(out + "_z")
        c.add("Mul", [s, c.scalar(out + "_c", math.sqrt(2.0 / math.pi))], [z])
        phi = c.tmp(out + "_tanh")
        c.add("Tanh", [z], [phi])
    else:
        z = c.tmp(out + "_z")
        c.add("Mul", [x, c.scalar(out + "_rsqrt2", 1.0 / math.sqrt(2.0))], [z])
        phi = c.tmp(out + "_erf")
        c.add("Erf", [z], [phi])
    half = c.scalar(out + "_half", 0.5)
    hphi = c.tmp(out + "_hphi")
    c.add("Mul", [phi, half], [hphi])
    cdf = c.tmp(out + "_cdf")
    c.add("Add", [hphi, half], [cdf])
    c.add("Mul", [x, cdf], [out])


@_emits("clip")
def _clip(c, n, ins, out):
    lo, hi = n.attrs.get("min"), n.attrs.get("max")
    args = [ins[0], c.scalar(out + "_min", lo) if lo is not None else "",
            c.scalar(out + "_max", hi) if hi is not None else ""]
    while args[-1] == "":
        args.pop()
    c.add("Clip", args, [out])


@_emits("softmax")
def _softmax(c, n, ins, out):
    c.add("Softmax", ins[:1], [out], axis=int(n.attrs.get("axis", -1)))


@_emits("linear")
def _linear(c, n, ins, out):
    w = c.graph.constants.get(n.inputs[1])
    if _rank(c.graph, n.inputs[0]) == 2 and w is not None:
        c.add("Gemm", ins, [out], transB=1)
        return
    if w is None:
        raise UnsupportedOpError("linear", n.name, "ONNX export", "input-dependent weight")
    wt = c.init(n.inputs[1] + "_T", w.detach().cpu().numpy().T.astype(np.float32))
    if len(ins) < 3:
        c.add("MatMul", [ins[0], wt], [out])
        return
    mm = c.tmp(out + "_matmul")
    c.add("MatMul", [ins[0], wt], [mm])
    c.add("Add", [mm, ins[2]], [out])


@_emits("matmul")
def _matmul(c, n, ins, out):
    c.add("MatMul", ins[:2], [out])


def _conv_attrs(n: Node, w: torch.Tensor, transpose: bool) -> dict[str, Any]:
    nd = w.dim() - 2
    at = {"kernel_shape": [int(k) for k in w.shape[2:]], "strides": list(n.attrs.get("strides", [1] * nd)),
          "pads": list(n.attrs.get("pads", [0] * (2 * nd))), "dilations": list(n.attrs.get("dilations", [1] * nd)),
          "group": int(n.attrs.get("group", 1))}
    if transpose and any(n.attrs.get("output_padding", [0] * nd)):
        at["output_padding"] = list(n.attrs["output_padding"])
    return at


@_emits("conv", "convtranspose")
def _conv(c, n, ins, out):
    w = c.graph.constants.get(n.inputs[1])
    if w is None:
        raise UnsupportedOpError(n.op, n.name, "ONNX export", "input-dependent kernel")
    c.add("Conv" if n.op == "conv" else "ConvTranspose", ins, [out], **_conv_attrs(n, w, n.op == "convtranspose"))


@_emits("maxpool")
def _maxpool(c, n, ins, out):
    k = list(n.attrs["kernel_shape"])
    nd = len(k)
    c.add("MaxPool", ins[:1], [out], kernel_shape=k, strides=list(n.attrs.get("strides", k)),
          pads=list(n.attrs.get("pads", [0] * (2 * nd))), dilations=list(n.attrs.get("dilations", [1] * nd)),
          ceil_mode=int(n.attrs.get("ceil_mode", 0)))


@_emits("avgpool")
def _avgpool(c, n, ins, out):
    k = list(n.attrs["kernel_shape"])
    nd = len(k)
    c.add("AveragePool", ins[:1], [out], kernel_shape=k, strides=list(n.attrs.get("strides", k)),
          pads=list(n.attrs.get("pads", [0] * (2 * nd))), ceil_mode=int(n.attrs.get("ceil_mode", 0)),
          count_include_pad=int(n.attrs.get("count_include_pad", 0)))


@_emits("globalavgpool")
def _gap(c, n, ins, out):
    c.add("GlobalAveragePool", ins[:1], [out])


@_emits("reshape")
def _reshape(c, n, ins, out):
    c.add("Reshape", [ins[0], c.ints(out + "_shape", [-1, *n.attrs["shape"]])], [out])


@_emits("flatten")
def _flatten(c, n, ins, out):
    c.add("Flatten", ins[:1], [out], axis=int(n.attrs.get("axis", 1)))


@_emits("transpose")
def _transpose(c, n, ins, out):
    c.add("Transpose", ins[:1], [out], perm=[int(p) for p in n.attrs["perm"]])


@_emits("concat")
def _concat(c, n, ins, out):
    c.add("Concat", ins, [out], axis=int(n.attrs["axis"]))


@_emits("slice")
def _slice(c, n, ins, out):
    at = n.attrs
    c.add("Slice", [ins[0], c.ints(out + "_starts", at["starts"]), c.ints(out + "_ends", at["ends"]),
                    c.ints(out + "_axes", at["axes"]), c.ints(out + "_steps", at["steps"])], [out])


@_emits("gather")
def _gather(c, n, ins, out):
    c.add("Gather", [ins[0], c.ints(out + "_indices", n.attrs["indices"])], [out], axis=int(n.attrs["axis"]))


@_emits("reducesum")
def _reducesum(c, n, ins, out):
    axes = n.attrs.get("axes") or list(range(1, _rank(c.graph, n.inputs[0])))
    c.add("ReduceSum", [ins[0], c.ints(out + "_axes", axes)], [out], keepdims=int(n.attrs.get("keepdims", 1)))


@_emits("reducemean")
def _reducemean(c, n, ins, out):
    axes = n.attrs.get("axes") or list(range(1, _rank(c.graph, n.inputs[0])))
    c.add("ReduceMean", ins[:1], [out], axes=[int(a) for a in axes], keepdims=int(n.attrs.get("keepdims", 1)))


@_emits("pad")
def _pad(c, n, ins, out):
    mode = n.attrs.get("mode", "constant")
    args = [ins[0], c.ints(out + "_pads", n.attrs["pads"])]
    if mode == "constant":
        args.append(c.scalar(out + "_value", float(n.attrs.get("value", 0.0))))
    c.add("Pad", args, [out], mode=mode)


@_emits("cast")
def _cast(c, n, ins, out):
    to = {"float": TensorProto.FLOAT, "int": TensorProto.INT64, "bool": TensorProto.BOOL}.get(n.attrs.get("to"))
    if to is None:
        raise UnsupportedOpError("cast", n.name, "ONNX export", f"to={n.attrs.get('to')!r}")
    c.add("Cast", ins[:1], [out], to=to)


@_emits("where")
def _where(c, n, ins, out):
    cond = ins[0]
    if n.inputs[0] in c.graph.constants and not c.graph.constants[n.inputs[0]].dtype == torch.bool:
        cond = c.tmp(out + "_cond")
        c.add("Cast", [ins[0]], [cond], to=TensorProto.BOOL)
    c.add("Where", [cond, ins[1], ins[2]], [out])


@_emits("equal")
def _equal(c, n, ins, out):
    c.add("Equal", ins[:2], [out])


@_emits("expand")
def _expand(c, n, ins, out):
    c.add("Expand", [ins[0], c.ints(out + "_shape", [1, *n.attrs["shape"]])], [out])


@_emits("resize")
def _resize(c, n, ins, out):
    """Nearest-neighbour upsampling by integer factors, torch's convention (asymmetric, floor)."""
    in_sp = list(c.graph.shape_of(n.inputs[0]))[1:]
    scales = [1.0, 1.0] + [o / i for i, o in zip(in_sp, n.attrs["size"])]
    c.add("Resize", [ins[0], "", c.init(out + "_scales", np.asarray(scales, dtype=np.float32))], [out],
          mode="nearest", coordinate_transformation_mode="asymmetric", nearest_mode="floor")


@_emits("groupsort")
def _groupsort(c, n, ins, out):
    g = int(n.attrs.get("group_size", 2))
    shape = list(c.graph.shape_of(n.inputs[0]))
    if g == 1:
        c.add("Identity", ins[:1], [out])
        return
    ch, rest = shape[0], shape[1:]
    grouped = c.tmp(out + "_grouped")
    c.add("Reshape", [ins[0], c.ints(out + "_gshape", [-1, ch // g, g, *rest])], [grouped])
    sorted_ = c.tmp(out + "_sorted")
    if g == 2:  # MaxMin with plain element-wise ops
        a, b = c.tmp(out + "_a"), c.tmp(out + "_b")
        axes = c.ints(out + "_axis", [2])
        c.add("Slice", [grouped, c.ints(out + "_s0", [0]), c.ints(out + "_e0", [1]), axes], [a])
        c.add("Slice", [grouped, c.ints(out + "_s1", [1]), c.ints(out + "_e1", [2]), axes], [b])
        hi, lo = c.tmp(out + "_max"), c.tmp(out + "_min")
        c.add("Max", [a, b], [hi])
        c.add("Min", [a, b], [lo])
        c.add("Concat", [hi, lo], [sorted_], axis=2)
    else:
        idx = c.tmp(out + "_indices")
        c.add("TopK", [grouped, c.ints(out + "_k", [g])], [sorted_, idx], axis=2, largest=1, sorted=1)
    c.add("Reshape", [sorted_, c.ints(out + "_shape", [-1, *shape])], [out])


# ================================================================================================== driver
def to_onnx(graph: Graph, name: str | None = None) -> onnx.ModelProto:
    """Build the ONNX ModelProto of `graph` (opset 13, float32, input "input" [1, *input_shape])."""
    c = _Ctx(graph)
    for n in graph.nodes:
        emit = _EMIT.get(n.op)
        if emit is None:
            raise UnsupportedOpError(n.op, n.name, "ONNX export")
        emit(c, n, [c.value(i) for i in n.inputs], c.names[n.name])
    if graph.output == graph.input_name:  # the identity network
        c.add("Identity", ["input"], ["output"])
    inp = helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, *graph.input_shape])
    outp = helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, *graph.output_shape])
    og = helper.make_graph(c.nodes, name or graph.name, [inp], [outp], initializer=list(c.inits.values()))
    model = helper.make_model(og, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="verify")
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    return model


def export_onnx(graph_or_module: Graph | torch.nn.Module, path: str | os.PathLike,
                input_shape: tuple[int, ...] | list[int] | None = None) -> onnx.ModelProto:
    """Write `graph_or_module` to `path` as an ONNX model and return the ModelProto.

    An `nn.Module` needs `input_shape` (per sample, no batch axis) and is first imported with
    `verify.importers.torch.load_torch` (BatchNorm folded: the file is a snapshot of the inference function).
    """
    if isinstance(graph_or_module, Graph):
        graph = graph_or_module
        if input_shape is not None and tuple(input_shape) != graph.input_shape:
            raise InputError(f"export: input_shape {tuple(input_shape)} differs from the graph's {graph.input_shape}")
    elif isinstance(graph_or_module, torch.nn.Module):
        if input_shape is None:
            raise InputError("export: an nn.Module needs input_shape (per sample, without the batch axis)")
        from verify.importers.torch import load_torch

        graph = load_torch(graph_or_module, tuple(input_shape), fold_bn=True)
    else:
        raise InputError(f"export: expected a Graph or an nn.Module, got {type(graph_or_module).__name__}")
    with torch.no_grad():
        model = to_onnx(graph)
    onnx.save(model, os.fspath(path))
    return model

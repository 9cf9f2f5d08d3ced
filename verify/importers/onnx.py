"""ONNX -> `verify.graph.Graph`.

`load_onnx(path_or_model)` reads an ONNX file (or a `ModelProto`), folds every node whose inputs are all
constants, converts the rest through the per-op converters of `verify.importers.onnx_ops`, and runs the
normalisation passes of `verify.graph.passes`.

Conventions (see `verify.graph.ir`): the network input is the one graph input without an initializer
(old exporters also list weights under `graph.input`); if it has rank >= 2 and its first dim is 1 (or
symbolic) that dim is the batch, otherwise (rank-1 inputs such as `X_0[1]`) the whole tensor is one sample.
`Graph.input_shape` is the per-sample shape and the IR forward of a sample equals the ONNX model run on it.
"""
from __future__ import annotations

import os
from dataclasses import replace
from typing import Any

import numpy as np
import onnx
import torch
from onnx import numpy_helper

from verify.errors import InputError, UnsupportedOpError
from verify.graph import ops as graph_ops
from verify.graph.ir import Graph, Node
from verify.importers.onnx_ops import CONVERTERS, Value, attributes


def _to_torch(arr: np.ndarray) -> torch.Tensor:
    """IR constants: float64 for float data, int64 for integers, bool kept."""
    arr = np.asarray(arr)
    if arr.dtype == np.bool_:
        return torch.from_numpy(arr.copy())
    if np.issubdtype(arr.dtype, np.floating):
        return torch.from_numpy(arr.astype(np.float64))
    if np.issubdtype(arr.dtype, np.integer):
        return torch.from_numpy(arr.astype(np.int64))
    raise TypeError(f"constant of dtype {arr.dtype}")


class Builder:
    """Import state: the IR being built and what converters need to add to it."""

    def __init__(self, where: str, opset: int, input_name: str, input_shape: tuple[int, ...], batched: bool):
        self.where = where
        self.opset = opset
        self.nodes: list[Node] = []
        self.constants: dict[str, torch.Tensor] = {}
        self.used: set[str] = {input_name}
        self.input = Value(input_name, tuple(input_shape), batched)
        # values of the network at input 0 (batch 1, float64): give each node's shape and dtype
        self.samples: dict[str, torch.Tensor] = {input_name: torch.zeros((1, *input_shape), dtype=torch.float64)}
        self._const_names: dict[int, tuple[np.ndarray, str]] = {}
        self.onnx_node: onnx.NodeProto | None = None

    # ------------------------------------------------------------------------------- error helpers
    def unsupported(self, detail: str = ""):
        n = self.onnx_node
        raise UnsupportedOpError(n.op_type if n is not None else "?", (n.name or n.output[0]) if n is not None else "?",
                                 where=self.where, detail=detail)

    # ----------------------------------------------------------------------------------- naming
    def fresh(self, hint: str) -> str:
        hint = hint or "v"
        name, i = hint, 1
        while name in self.used:
            name = f"{hint}_{i}"
            i += 1
        self.used.add(name)
        return name

    def _hint(self) -> str:
        n = self.onnx_node
        return n.output[0] if n is not None and n.output and n.output[0] else "v"

    # -------------------------------------------------------------------------------- constants
    def const(self, array) -> Value:
        """A constant value (kept in its dtype; registered as an IR constant when a node uses it)."""
        arr = np.asarray(array)
        return Value("", tuple(arr.shape), True, arr)

    def scalar(self, x: float) -> Value:
        return self.const(np.asarray(x, dtype=np.float64))

    def _register(self, v: Value) -> str:
        key = id(v.array)
        hit = self._const_names.get(key)
        if hit is not None and hit[0] is v.array:
            return hit[1]
        name = self.fresh(f"{self._hint()}_c")
        self.constants[name] = _to_torch(v.array)
        self._const_names[key] = (v.array, name)
        return name

    # ------------------------------------------------------------------------------------ nodes
    def add(self, op: str, inputs: list[Value], attrs: dict[str, Any] | None = None,
            batched: bool | None = None) -> Value:
        """Append an IR node; its per-sample shape comes from evaluating it at the zero input."""
        if op not in graph_ops.OPS:
            raise AssertionError(f"converter emitted unknown IR op {op!r}")
        names, args = [], []
        for v in inputs:
            if v.is_const:
                nm = self._register(v)
                names.append(nm)
                t = self.constants[nm]
                args.append(t)
            else:
                names.append(v.name)
                args.append(self.samples[v.name])
        args = [a.double() if a.is_floating_point() else a for a in args]
        attrs = dict(attrs or {})
        try:
            out = graph_ops.evaluate(op, args, attrs)
        except Exception as e:  # shapes that do not fit
            self.unsupported(f"IR {op} failed on the input shapes: {e}")
        if out.dim() == 0 or out.shape[0] != 1:
            self.unsupported(f"IR {op} does not keep the batch axis")
        if batched is None:
            batched = next((v.batched for v in inputs if not v.is_const), True)
        name = self.fresh(self._hint())
        shape = tuple(int(s) for s in out.shape[1:])
        self.nodes.append(Node(name, op, names, attrs, shape))
        self.samples[name] = out
        return Value(name, shape, batched)

    def reshape(self, v: Value, shape: tuple[int, ...], batched: bool) -> Value:
        """`v` reshaped to the per-sample `shape`, tagged with the given batch layout."""
        shape = tuple(int(s) for s in shape)
        if shape == tuple(v.shape):
            return replace(v, batched=batched)
        return self.add("reshape", [v], {"shape": list(shape)}, batched=batched)

    def reshape_to(self, v: Value, onnx_shape, keep_flag: bool = False) -> Value:
        """`v` reshaped to a full ONNX shape. A leading 1 of a rank >= 2 shape becomes the batch axis
        unless `keep_flag` asks to keep `v`'s layout."""
        s = tuple(int(d) for d in onnx_shape)
        if keep_flag:
            batched = v.batched
        else:
            batched = len(s) >= 2 and s[0] == 1
        if batched:
            if not s or s[0] != 1:
                self.unsupported(f"reshape to {s} changes the batch axis")
            return self.reshape(v, s[1:], True)
        return self.reshape(v, s, False)

    def ir_axis(self, v: Value, axis: int) -> int:
        r = v.onnx_rank
        if not -r <= axis < r:
            self.unsupported(f"axis {axis} out of range for rank {r}")
        a = axis % r
        if v.batched:
            if a == 0:
                self.unsupported("operates on the batch axis")
            return a
        return a + 1

    def align(self, vals: list[Value | None]) -> list[Value]:
        """Inputs of a broadcasting op arranged so that torch broadcasting of the IR tensors (batch axis
        first) matches ONNX broadcasting of the ONNX tensors."""
        if any(v is None for v in vals):
            self.unsupported("missing input")
        R = max(v.onnx_rank for v in vals)
        vars_ = [v for v in vals if not v.is_const]
        batched = any(v.batched for v in vars_) or R > max(v.onnx_rank for v in vars_)
        s = R - 1 if batched else R
        out = []
        for v in vals:
            if v.is_const:
                arr = v.array
                if arr.ndim == s + 1:
                    if arr.shape[0] != 1:
                        self.unsupported(f"constant of shape {arr.shape} broadcasts over the batch axis")
                    arr = arr[0]
                out.append(self.const(arr))
                continue
            shape = tuple(v.shape)
            if batched and not v.batched and v.onnx_rank == R:
                if shape[0] != 1:
                    self.unsupported(f"operand of shape {v.onnx_shape} broadcasts over the batch axis")
                shape = shape[1:]
            shape = (1,) * (s - len(shape)) + shape
            out.append(self.reshape(v, shape, batched))
        return out


# ----------------------------------------------------------------------------------------- loading
def _read_model(path_or_model) -> tuple[onnx.ModelProto, str]:
    if isinstance(path_or_model, onnx.ModelProto):
        return path_or_model, path_or_model.graph.name or "<model>"
    path = os.fspath(path_or_model)
    if not os.path.isfile(path):
        raise InputError(f"{path}: no such ONNX file")
    try:
        model = onnx.load(path)
    except Exception as e:
        raise InputError(f"{path}: not a readable ONNX model ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None
    if not model.graph.node:
        raise InputError(f"{path}: not a readable ONNX model (empty graph)")
    return model, path


def _opset(model: onnx.ModelProto) -> int:
    for o in model.opset_import:
        if o.domain in ("", "ai.onnx"):
            return int(o.version)
    return 13


def _fold(node: onnx.NodeProto, ins: list[Value | None], opset: int, b: Builder) -> list[np.ndarray]:
    """Evaluate a node whose inputs are all constants (ONNX reference evaluator, ONNX dtypes)."""
    at = attributes(node)
    if node.op_type == "Constant":
        for key in ("value", "value_float", "value_floats", "value_int", "value_ints"):
            if key in at:
                v = at[key]
                dt = np.float32 if "float" in key else (np.int64 if "int" in key else None)
                return [np.asarray(v, dtype=dt)]
        b.unsupported("Constant without a numeric value")
    from onnx import helper
    from onnx.reference import ReferenceEvaluator

    feeds, in_names = {}, []
    for i, v in enumerate(ins):
        if v is None:
            in_names.append("")
            continue
        nm = f"i{i}"
        in_names.append(nm)
        feeds[nm] = v.array
    out_names = [f"o{i}" if o else "" for i, o in enumerate(node.output)]
    n2 = helper.make_node(node.op_type, in_names, out_names, domain=node.domain)
    n2.attribute.extend(node.attribute)
    vi = [helper.make_tensor_value_info(k, helper.np_dtype_to_tensor_dtype(a.dtype), a.shape) for k, a in feeds.items()]
    vo = [helper.make_tensor_value_info(o, onnx.TensorProto.UNDEFINED, None) for o in out_names if o]
    m = helper.make_model(helper.make_graph([n2], "fold", vi, vo), opset_imports=[helper.make_opsetid("", opset)])
    try:
        res = ReferenceEvaluator(m).run(None, feeds)
    except Exception as e:
        b.unsupported(f"constant folding failed: {type(e).__name__}: {e}")
    it = iter(res)
    return [np.asarray(next(it)) if o else None for o in out_names]


def _graph_input(model: onnx.ModelProto, where: str):
    init = {t.name for t in model.graph.initializer}
    real = [i for i in model.graph.input if i.name not in init]
    if len(real) != 1:
        raise InputError(f"{where}: expected exactly one network input, found {len(real)} ({[i.name for i in real]})")
    inp = real[0]
    tt = inp.type.tensor_type
    dims = []
    for k, d in enumerate(tt.shape.dim):
        if d.HasField("dim_value") and d.dim_value > 0:
            dims.append(int(d.dim_value))
        elif k == 0:
            dims.append(1)  # symbolic batch
        else:
            raise InputError(f"{where}: input {inp.name!r} has a symbolic dimension {k}")
    np_dt = onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type) if tt.elem_type else np.float32
    if not np.issubdtype(np_dt, np.floating):
        raise InputError(f"{where}: input {inp.name!r} is not floating point ({np_dt})")
    batched = len(dims) >= 2 and dims[0] == 1
    return inp.name, tuple(dims[1:] if batched else dims), batched


def _live_nodes(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    """The nodes the graph outputs depend on, in file order (dead branches are never converted, so an
    unsupported op there does not stop the import)."""
    needed = {o.name for o in model.graph.output}
    live = []
    for node in reversed(model.graph.node):
        if any(o in needed for o in node.output):
            live.append(node)
            needed.update(i for i in node.input if i)
    return live[::-1]


def convert(path_or_model) -> Graph:
    """ONNX -> Graph without the normalisation passes (see `load_onnx`)."""
    model, where = _read_model(path_or_model)
    opset = _opset(model)
    name, shape, batched = _graph_input(model, where)
    b = Builder(where, opset, name, shape, batched)
    env: dict[str, Value] = {name: b.input}
    for t in model.graph.initializer:
        try:
            env[t.name] = b.const(numpy_helper.to_array(t))
        except Exception as e:
            raise InputError(f"{where}: cannot read initializer {t.name!r}: {e}") from None
    for node in _live_nodes(model):
        b.onnx_node = node
        if node.domain not in ("", "ai.onnx"):
            b.unsupported(f"domain {node.domain!r}")
        ins: list[Value | None] = []
        for i in node.input:
            if not i:
                ins.append(None)
            elif i not in env:
                raise InputError(f"{where}: node {node.name or node.output[0]!r} reads undefined value {i!r}")
            else:
                ins.append(env[i])
        present = [v for v in ins if v is not None]
        if node.op_type == "Constant" or (present and all(v.is_const for v in present)):
            outs = [None if a is None else b.const(a) for a in _fold(node, ins, opset, b)]
        else:
            conv = CONVERTERS.get(node.op_type)
            if conv is None:
                b.unsupported()
            try:
                outs = conv(b, node, ins, attributes(node))
            except InputError:
                raise
            except Exception as e:  # a malformed node (missing attribute, wrong arity, ...)
                b.unsupported(f"cannot convert this node ({type(e).__name__}: {e})")
            if isinstance(outs, Value):
                outs = [outs]
        for o, v in zip(node.output, outs):
            if o:
                env[o] = v
    b.onnx_node = None
    if len(model.graph.output) != 1:
        raise InputError(f"{where}: expected one graph output, found {len(model.graph.output)}")
    out = env.get(model.graph.output[0].name)
    if out is None:
        raise InputError(f"{where}: graph output {model.graph.output[0].name!r} is never computed")
    if out.is_const:
        raise InputError(f"{where}: graph output {model.graph.output[0].name!r} does not depend on the input")
    gname = model.graph.name or (os.path.splitext(os.path.basename(where))[0] if where else "model")
    return Graph(name, shape, b.nodes, b.constants, out.name, gname)


def load_onnx(path_or_model, normalise: bool = True) -> Graph:
    """Load an ONNX model (path or `ModelProto`) as a normalised IR `Graph`.

    Raises `InputError` for a missing or unreadable file and `UnsupportedOpError` (an `InputError`) for an
    operator or attribute form without a converter."""
    g = convert(path_or_model)
    if normalise:
        from verify.graph.passes import normalise as run_passes
        g = run_passes(g)
    return g

"""PyTorch `nn.Module` -> `Graph`, through torch.fx symbolic tracing (public API only).

`load_torch(module, input_shape)` traces `module.forward`, then walks the traced graph once, emitting IR
nodes (`verify.graph.ops.OPS`) and evaluating each on a small example batch to learn the per-sample shape
of every value (and to resolve shape arithmetic such as `x.view(x.size(0), -1)`). Anything that does not
depend on the input (parameter views, `W.t()`, shape tuples) is evaluated eagerly with torch.

Trainability: the module's parameters (and buffers) are stored in `Graph.constants` as the very tensor
objects (no clone, no detach); where an op needs a transposed or reshaped weight the constant is a view of
the parameter (`W.t()`, `gamma.view(C, 1, 1)`). A forward or bound computation through the Graph is
therefore differentiable w.r.t. the module's weights, any number of times, and follows in-place optimiser
updates, which certified training relies on. A constant that is a computed expression of parameters
(BatchNorm folded into a conv, `2 * self.w` inside forward, a torch.nn.utils.parametrize weight) cannot be
either: its value would go stale after an update and its autograd history would be consumed by the first
backward. Such constants are stored detached, as a snapshot of their value at import time (re-import after
changing the weights); so is BatchNorm's sqrt(running_var + eps). `snapshot_constants(g)` lists them.

Semantics: the Graph is the module's *inference* function: Dropout is the identity and BatchNorm uses its
running statistics, whatever `module.training` says. BatchNorm (`fold_bn`):
  * `fold_bn=False` (default) emits per-channel sub/div/mul/add nodes whose constants are views of the
    live running mean and affine parameters (trainable, in sync with the module) and the snapshot
    sqrt(running_var + eps).
  * `fold_bn=True` folds a BatchNorm that directly follows a conv / linear (and is that layer's only user)
    into the layer's weights: fewer nodes, same bounds (the per-channel affine map is exact under IBP and
    CROWN), but the folded weights are snapshots (see above). `export_onnx` uses it.

Unsupported modules or functions raise `UnsupportedOpError(op, node)`; a module that torch.fx cannot
trace (data-dependent control flow, ...) raises `InputError`.
"""
from __future__ import annotations

import builtins
import inspect
import operator
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from verify.errors import InputError, UnsupportedOpError
from verify.graph import ops as graph_ops
from verify.graph.ir import Graph, Node
from verify.nn import GroupSort

EXAMPLE_BATCH = 3  # an unusual batch size, so that a reshape mixing samples is caught by its shape
INPUT_NAME = "input"


@dataclass
class _Val:
    """A batched IR value: its name in the Graph and its value on the example batch."""

    name: str
    ex: torch.Tensor

    @property
    def rank(self) -> int:  # full rank, batch axis included
        return self.ex.dim()


class _Root(nn.Module):
    """Wrapper traced instead of the user's module, so fx's bookkeeping attributes (tensor constants
    created inside forward) land on the wrapper and never on the user's module."""

    def __init__(self, m: nn.Module):
        super().__init__()
        self.m = m

    def forward(self, x):
        return self.m(x)


class _Tracer(fx.Tracer):
    """fx tracer that keeps GroupSort (and every torch.nn module) as one leaf call."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        if isinstance(m, GroupSort):
            return True
        return super().is_leaf_module(m, qualname)


class _Unsupported(Exception):
    """Raised by a handler; turned into UnsupportedOpError naming the fx node."""

    def __init__(self, op: str, detail: str = ""):
        super().__init__(op)
        self.op = op
        self.detail = detail


def _param_dtype_device(module: nn.Module) -> tuple[torch.dtype, torch.device]:
    for t in list(module.parameters()) + list(module.buffers()):
        if t.is_floating_point():
            return t.dtype, t.device
    return torch.get_default_dtype(), torch.device("cpu")


def _snapshot(t: torch.Tensor, detach: bool = True) -> torch.Tensor:
    """Mark `t` (detached unless told otherwise) as a value fixed at import time, for `snapshot_constants`."""
    s = t.detach() if detach else t
    s._verify_snapshot = True
    return s


# =============================================================================================== builder
class _Builder:
    """Accumulates IR nodes and constants while walking the fx graph."""

    def __init__(self, used_names: set[str], dtype: torch.dtype, fold_bn: bool,
                 tensor_names: dict[int, str] | None = None):
        self.nodes: list[Node] = []
        self.tensor_names = dict(tensor_names or {})  # id(parameter or buffer) -> its qualified name
        self.constants: dict[str, torch.Tensor] = {}
        self._const_ids: dict[int, str] = {}
        self._keep: list[torch.Tensor] = []
        self.used = set(used_names) | {INPUT_NAME}
        self.dtype = dtype
        self.device = torch.device("cpu")
        self.fold_bn = fold_bn
        self.producer: dict[str, Node] = {}
        self.param_storages: set[int] = set()  # storages of the module's parameters and buffers
        self.param_layouts: dict[tuple, torch.Tensor] = {}  # (data_ptr, shape, stride, dtype) -> parameter
        # BatchNorms to fold after conversion: (producer node name, module, names of the BN's own nodes)
        self.bn_candidates: list[tuple[str, nn.Module, list[str]]] = []

    # ------------------------------------------------------------------------------ names, constants
    def fresh(self, base: str) -> str:
        base = base.replace(".", "_") or "v"
        if base not in self.used:
            self.used.add(base)
            return base
        k = 1
        while f"{base}_{k}" in self.used:
            k += 1
        self.used.add(f"{base}_{k}")
        return f"{base}_{k}"

    def stored(self, t: torch.Tensor) -> torch.Tensor:
        """What the Graph keeps for tensor `t`: `t` itself when it is a parameter, buffer or plain constant,
        or a view of a parameter's or buffer's storage (live: follows in-place updates, and its autograd
        history, made of views only, can be backpropagated through any number of times); otherwise (a
        computed expression of parameters) a detached snapshot."""
        if t.grad_fn is None or t.untyped_storage().data_ptr() in self.param_storages:
            return t
        return _snapshot(t)

    def view(self, t: torch.Tensor, fn: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """A view `fn(t)` (reshape, transpose, ...) of a weight, named after it."""
        v = fn(t)
        same = self.param_layouts.get((v.data_ptr(), tuple(v.shape), tuple(v.stride()), v.dtype))
        if same is not None:  # e.g. (W.t()).t(): store the parameter itself
            return same
        if getattr(t, "_verify_snapshot", False):
            _snapshot(v, detach=False)
        if id(t) in self.tensor_names:
            self.tensor_names[id(v)] = self.tensor_names[id(t)] + ".view"
        return v

    def const(self, t: torch.Tensor, hint: str) -> str:
        """Register tensor `t` (kept as is: a Parameter stays the Parameter) and return its name.

        A computed expression of parameters (e.g. a parametrized weight) is stored detached (`stored`)."""
        key = id(t)
        name = self._const_ids.get(key)
        if name is not None:
            return name
        if hint in self.used:
            hint = self.fresh(hint)
        else:
            self.used.add(hint)
        self.constants[hint] = self.stored(t)
        self._const_ids[key] = hint
        self._keep.append(t)  # keeps `id(t)` from being reused by another tensor during the import
        return hint


    def arg(self, v: Any, hint: str) -> str:
        """IR name for an operand: a batched value, a tensor constant or a Python number."""
        if isinstance(v, _Val):
            return v.name
        if isinstance(v, torch.Tensor):
            return self.const(v, self.tensor_names.get(id(v), hint))
        if isinstance(v, (bool, int, float)):
            return self.const(torch.tensor(float(v), dtype=torch.float64, device=self.device), hint)
        raise _Unsupported(type(v).__name__, f"operand of type {type(v).__name__}")

    # ----------------------------------------------------------------------------------------- emit
    def emit(self, op: str, inputs: list[Any], attrs: dict[str, Any] | None, name: str) -> _Val:
        """Append node `name = op(inputs)`; evaluate it on the example batch to get its shape."""
        attrs = dict(attrs or {})
        in_names, args = [], []
        for k, v in enumerate(inputs):
            n = self.arg(v, f"{name}.c{k}" if not isinstance(v, _Val) else "")
            in_names.append(n)
            if isinstance(v, _Val):
                args.append(v.ex)
            else:
                c = self.constants[n]
                args.append(c.to(device=v_device(inputs), dtype=self.dtype) if c.is_floating_point()
                            else c.to(v_device(inputs)))
        with torch.no_grad():
            try:
                out = graph_ops.evaluate(op, [a.detach() for a in args], attrs)
            except Exception as e:
                raise InputError(f"torch import: node {name!r} ({op}) fails on the example input: {e}") from e
        if out.dim() == 0 or out.shape[0] != EXAMPLE_BATCH:
            raise _Unsupported(op, "result does not keep the batch axis")
        node = Node(name, op, in_names, attrs, tuple(int(s) for s in out.shape[1:]))
        self.nodes.append(node)
        self.producer[name] = node
        return _Val(name, out)

    def rename_last(self, v: _Val, name: str) -> _Val:
        """Give the value `v`, if it is the node just emitted, the final name `name` (reserved for it)."""
        if v.name != name and self.nodes and self.nodes[-1].name == v.name:
            node = self.nodes[-1]
            del self.producer[node.name]
            node.name = name
            self.producer[name] = node
            return _Val(name, v.ex)
        return v

    def reshape(self, x: _Val, target: torch.Size | tuple[int, ...], name: str) -> _Val:
        """Reshape to the full-tensor shape `target` (whose axis 0 must be the batch)."""
        target = tuple(int(s) for s in target)
        if len(target) == 0 or target[0] != EXAMPLE_BATCH:
            raise _Unsupported("reshape", "reshape across the batch axis")
        if target == tuple(x.ex.shape):
            return x
        return self.emit("reshape", [x], {"shape": list(target[1:])}, name)


# ========================================================================================= small helpers
def v_device(inputs: list[Any]) -> torch.device:
    """Device of the first batched operand (the example batch lives on the module's device)."""
    for v in inputs:
        if isinstance(v, _Val):
            return v.ex.device
    return torch.device("cpu")


def _ntuple(v: Any, n: int) -> list[int]:
    if isinstance(v, (list, tuple)):
        if len(v) == 1:
            return [int(v[0])] * n
        return [int(a) for a in v]
    return [int(v)] * n


def _axis(ax: int, rank: int, what: str) -> int:
    """Normalise a torch dim to a full-tensor axis >= 1 (axis 0, the batch, is refused)."""
    a = int(ax)
    if a < 0:
        a += rank
    if not 0 <= a < rank:
        raise _Unsupported(what, f"dim {ax} out of range for rank {rank}")
    if a == 0:
        raise _Unsupported(what, "operates on the batch axis (dim 0)")
    return a


def _is_val(v: Any) -> bool:
    return isinstance(v, _Val)


def _contains_val(obj: Any) -> bool:
    if isinstance(obj, _Val):
        return True
    if isinstance(obj, (list, tuple)):
        return any(_contains_val(o) for o in obj)
    if isinstance(obj, dict):
        return any(_contains_val(o) for o in obj.values())
    if isinstance(obj, slice):
        return any(_contains_val(o) for o in (obj.start, obj.stop, obj.step))
    return False


def _need_val(x: Any, what: str) -> _Val:
    if not isinstance(x, _Val):
        raise _Unsupported(what, "expected an input-dependent tensor")
    return x


# ============================================================================================ op handlers
# Each handler: (builder, name, *args, **kwargs) -> value. `name` is the IR name for the final node.

def _unary(op: str, **fixed):
    def h(b: _Builder, name: str, x, *args, **kwargs):
        return b.emit(op, [_need_val(x, op)], dict(fixed), name)
    return h


def _h_leakyrelu(b, name, x, negative_slope=0.01, inplace=False):
    return b.emit("leakyrelu", [_need_val(x, "leaky_relu")], {"alpha": float(negative_slope)}, name)


def _h_gelu(b, name, x, approximate="none"):
    return b.emit("gelu", [_need_val(x, "gelu")], {"approximate": approximate}, name)


def _h_softplus(b, name, x, beta=1.0, threshold=20.0):
    x = _need_val(x, "softplus")
    if float(beta) == 1.0:
        return b.emit("softplus", [x], {}, name)
    # softplus_beta(x) = softplus(beta * x) / beta
    y = b.emit("mul", [x, float(beta)], {}, b.fresh(name + "_scale"))
    y = b.emit("softplus", [y], {}, b.fresh(name + "_sp"))
    return b.emit("div", [y, float(beta)], {}, name)


def _h_silu(b, name, x, inplace=False):
    x = _need_val(x, "silu")
    s = b.emit("sigmoid", [x], {}, b.fresh(name + "_sigmoid"))
    return b.emit("mul", [x, s], {}, name)


def _softmax_axis(x: _Val, dim) -> int:
    if dim is None:  # torch's legacy implicit dim
        dim = 0 if x.rank in (0, 1, 3) else 1
    return _axis(dim, x.rank, "softmax")


def _h_softmax(b, name, x, dim=None, _stacklevel=3, dtype=None):
    x = _need_val(x, "softmax")
    return b.emit("softmax", [x], {"axis": _softmax_axis(x, dim)}, name)


def _h_clip(b, name, x, min=None, max=None, inplace=False):
    x = _need_val(x, "clamp")
    tensor_bounds = isinstance(min, (torch.Tensor, _Val)) or isinstance(max, (torch.Tensor, _Val))
    if not tensor_bounds:
        if min is None and max is None:
            return x
        attrs = {}
        if min is not None:
            attrs["min"] = float(min)
        if max is not None:
            attrs["max"] = float(max)
        return b.emit("clip", [x], attrs, name)
    y = x
    if min is not None:
        y = b.emit("max", [y, min], {}, name if max is None else b.fresh(name + "_lo"))
    if max is not None:
        y = b.emit("min", [y, max], {}, name)
    return y


def _h_hardtanh(b, name, x, min_val=-1.0, max_val=1.0, inplace=False):
    return _h_clip(b, name, x, min_val, max_val)


def _h_relu6(b, name, x, inplace=False):
    return _h_clip(b, name, x, 0.0, 6.0)


def _h_identity(b, name, x, *args, **kwargs):
    return x


def _binary(op: str, reverse: bool = False):
    def h(b: _Builder, name: str, x, y, alpha=1, **kwargs):
        if reverse:
            x, y = y, x
        if alpha != 1:
            if op not in ("add", "sub"):
                raise _Unsupported(op, "alpha")
            y = _h_mul(b, b.fresh(name + "_alpha"), y, alpha) if _is_val(y) else y * alpha
        if not (_is_val(x) or _is_val(y)):
            raise _Unsupported(op, "no input-dependent operand")
        return b.emit(op, [x, y], {}, name)
    return h


_h_add = _binary("add")
_h_sub = _binary("sub")
_h_rsub = _binary("sub", reverse=True)


def _h_mul(b, name, x, y):
    return b.emit("mul", [x, y], {}, name)


def _h_truediv(b, name, x, y, rounding_mode=None):
    if rounding_mode is not None:
        raise _Unsupported("div", f"rounding_mode={rounding_mode!r}")
    return b.emit("div", [x, y], {}, name)


def _h_pow(b, name, x, y):
    if not _is_val(x):
        raise _Unsupported("pow", "input-dependent exponent of a constant base")
    return b.emit("pow", [x, y], {}, name)


def _h_square(b, name, x):
    return b.emit("pow", [_need_val(x, "square"), 2.0], {}, name)


def _h_neg(b, name, x):
    return b.emit("neg", [_need_val(x, "neg")], {}, name)


def _h_matmul(b, name, x, y):
    if _is_val(x) and isinstance(y, torch.Tensor) and y.dim() == 2:
        # x @ W with a constant (in, out) matrix is `linear` with W^T, kept as a live view
        return b.emit("linear", [x, b.view(y, lambda u: u.t())], {}, name)
    if _is_val(x) and isinstance(y, torch.Tensor) and y.dim() == 1:
        out = b.emit("linear", [x, b.view(y, lambda u: u.unsqueeze(0))], {}, b.fresh(name + "_lin"))
        return b.reshape(out, tuple(out.ex.shape[:-1]), name)
    return b.emit("matmul", [x, y], {}, name)


def _h_linear(b, name, x, weight, bias=None):
    x = _need_val(x, "linear")
    if _is_val(weight) or _is_val(bias):
        raise _Unsupported("linear", "input-dependent weight")
    return b.emit("linear", [x, weight] + ([bias] if bias is not None else []), {}, name)


def _h_maximum(b, name, x, other=None, *rest, **kwargs):
    if not isinstance(other, (_Val, torch.Tensor)) or rest or kwargs:
        raise _Unsupported("max", "reduction over a dim")
    return b.emit("max", [x, other], {}, name)


def _h_minimum(b, name, x, other=None, *rest, **kwargs):
    if not isinstance(other, (_Val, torch.Tensor)) or rest or kwargs:
        raise _Unsupported("min", "reduction over a dim")
    return b.emit("min", [x, other], {}, name)


def _conv_pads(padding, k: list[int], dil: list[int], nd: int) -> list[int]:
    if isinstance(padding, str):
        if padding == "valid":
            return [0] * (2 * nd)
        if padding == "same":
            total = [d * (kk - 1) for d, kk in zip(dil, k)]
            begin = [t // 2 for t in total]
            return begin + [t - s for t, s in zip(total, begin)]
        raise _Unsupported("conv", f"padding={padding!r}")
    p = _ntuple(padding, nd)
    return p + p


def _h_conv(b, name, x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    x = _need_val(x, "conv")
    if _is_val(weight) or _is_val(bias):
        raise _Unsupported("conv", "input-dependent weight")
    nd = weight.dim() - 2
    k = list(weight.shape[2:])
    dil = _ntuple(dilation, nd)
    attrs = {"kernel_shape": k, "strides": _ntuple(stride, nd), "pads": _conv_pads(padding, k, dil, nd),
             "dilations": dil, "group": int(groups)}
    return b.emit("conv", [x, weight] + ([bias] if bias is not None else []), attrs, name)


def _h_conv_transpose(b, name, x, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1,
                      dilation=1):
    x = _need_val(x, "convtranspose")
    nd = weight.dim() - 2
    p = _ntuple(padding, nd)
    attrs = {"kernel_shape": list(weight.shape[2:]), "strides": _ntuple(stride, nd), "pads": p + p,
             "output_padding": _ntuple(output_padding, nd), "dilations": _ntuple(dilation, nd),
             "group": int(groups)}
    return b.emit("convtranspose", [x, weight] + ([bias] if bias is not None else []), attrs, name)


def _nd_of(x: _Val) -> int:
    return x.rank - 2


def _h_maxpool(b, name, x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
               return_indices=False):
    x = _need_val(x, "maxpool")
    if return_indices:
        raise _Unsupported("maxpool", "return_indices=True")
    nd = _nd_of(x)
    k = _ntuple(kernel_size, nd)
    s = _ntuple(stride, nd) if stride not in (None, [], ()) else list(k)
    p = _ntuple(padding, nd)
    d = _ntuple(dilation, nd)
    ends = list(p)
    if ceil_mode:
        # torch's ceil mode drops a last window that would start in the end padding; express its output
        # size exactly with floor mode and the end padding it needs (padding is -inf for max pooling)
        ins = list(x.ex.shape[2:])
        outs = _ceil_pool_sizes(ins, k, s, p, d)
        ends = [max((o - 1) * ss + dd * (kk - 1) + 1 - i - pp, 0) for o, ss, dd, kk, i, pp in zip(outs, s, d, k, ins, p)]
    attrs = {"kernel_shape": k, "strides": s, "pads": p + ends, "dilations": d, "ceil_mode": 0}
    return b.emit("maxpool", [x], attrs, name)


def _h_avgpool(b, name, x, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
               divisor_override=None):
    x = _need_val(x, "avgpool")
    if divisor_override is not None:
        raise _Unsupported("avgpool", "divisor_override")
    nd = _nd_of(x)
    k = _ntuple(kernel_size, nd)
    s = _ntuple(stride, nd) if stride not in (None, [], ()) else list(k)
    p = _ntuple(padding, nd)
    if not ceil_mode:
        attrs = {"kernel_shape": k, "strides": s, "pads": p + p, "ceil_mode": 0,
                 "count_include_pad": int(bool(count_include_pad))}
        return b.emit("avgpool", [x], attrs, name)
    # ceil mode as floor mode plus uncounted end padding: torch drops a last window that would start in
    # the end padding, and divides by the window clipped to the padded input (ONNX consumers disagree
    # on both points, so the IR keeps no ceil_mode)
    ins = list(x.ex.shape[2:])
    outs = _ceil_pool_sizes(ins, k, s, p, [1] * nd)
    if count_include_pad and any(p):  # counted padding: make it real zeros first
        x = _h_pad(b, b.fresh(name + "_pad"), x, [q for i in reversed(range(nd)) for q in (p[i], p[i])])
        ins, p = [i + 2 * q for i, q in zip(ins, p)], [0] * nd
    ends = [max((o - 1) * ss + kk - i - q, 0) for o, ss, kk, i, q in zip(outs, s, k, ins, p)]
    attrs = {"kernel_shape": k, "strides": s, "pads": p + ends, "ceil_mode": 0, "count_include_pad": 0}
    return b.emit("avgpool", [x], attrs, name)


def _ceil_pool_sizes(ins, k, s, p, d) -> list[int]:
    """Output sizes of a torch pooling in ceil mode (a window may not start in the end padding)."""
    outs = [(i + 2 * pp - dd * (kk - 1) - 1 + ss - 1) // ss + 1 for i, pp, dd, kk, ss in zip(ins, p, d, k, s)]
    return [o - 1 if (o - 1) * ss >= i + pp else o for o, i, pp, ss in zip(outs, ins, p, s)]


def _h_adaptive_avgpool(b, name, x, output_size):
    x = _need_val(x, "adaptive_avg_pool")
    nd = _nd_of(x)
    ins = list(x.ex.shape[2:])
    outs = output_size if isinstance(output_size, (list, tuple)) else [output_size] * nd
    outs = [i if o is None else int(o) for i, o in zip(ins, outs)]
    if all(o == 1 for o in outs):
        return b.emit("globalavgpool", [x], {}, name)
    if any(i % o for i, o in zip(ins, outs)):
        raise _Unsupported("adaptive_avg_pool", f"input size {ins} not divisible by output size {outs}")
    k = [i // o for i, o in zip(ins, outs)]
    return b.emit("avgpool", [x], {"kernel_shape": k, "strides": k, "pads": [0] * (2 * nd)}, name)


def _h_groupsort(b, name, x, group_size=2):
    x = _need_val(x, "groupsort")
    if x.rank < 2 or x.ex.shape[1] % int(group_size):
        raise _Unsupported("groupsort", f"{tuple(x.ex.shape[1:])} features not divisible by {group_size}")
    return b.emit("groupsort", [x], {"group_size": int(group_size)}, name)


def _h_cat(b, name, tensors, dim=0):
    vals = [t for t in tensors if _is_val(t)]
    if not vals:
        raise _Unsupported("cat", "no input-dependent operand")
    rank = vals[0].rank
    ax = _axis(dim, rank, "cat")
    parts = []
    for k, t in enumerate(tensors):
        if not _is_val(t):
            t = torch.as_tensor(t)
            if t.dim() == rank - 1:
                t = t.unsqueeze(0)
            if t.dim() != rank or t.shape[0] != 1:
                raise _Unsupported("cat", "constant part without a size-1 batch axis")
        parts.append(t)
    return b.emit("concat", parts, {"axis": ax}, name)


def _h_stack(b, name, tensors, dim=0):
    vals = [t for t in tensors if _is_val(t)]
    if len(vals) != len(tensors):
        raise _Unsupported("stack", "constant operand")
    rank = vals[0].rank + 1
    ax = _axis(dim, rank, "stack")
    parts = []
    for t in vals:
        shp = list(t.ex.shape)
        shp.insert(ax, 1)
        parts.append(b.reshape(t, shp, b.fresh(name + "_unsq")))
    return b.emit("concat", parts, {"axis": ax}, name)


def _reduce(op: str):
    def h(b, name, x, dim=None, keepdim=False, *, dtype=None):
        x = _need_val(x, op)
        if dim is None:
            raise _Unsupported(op, "reduction over all axes (batch included)")
        dims = dim if isinstance(dim, (list, tuple)) else [dim]
        axes = sorted(_axis(d, x.rank, op) for d in dims)
        return b.emit(op, [x], {"axes": axes, "keepdims": int(bool(keepdim))}, name)
    return h


# ------------------------------------------------------------------------------------ reshape family
def _reshape_like(fn: Callable[..., torch.Tensor], what: str):
    """Any op that only reshapes: evaluate it on the example to get the target shape."""
    def h(b, name, x, *args, **kwargs):
        x = _need_val(x, what)
        try:
            out = fn(x.ex, *args, **kwargs)
        except Exception as e:
            raise InputError(f"torch import: node {name!r} ({what}) fails on the example input: {e}") from e
        if out.dim() == 0 or out.shape[0] != EXAMPLE_BATCH:
            raise _Unsupported(what, "reshapes across the batch axis")
        return b.reshape(x, out.shape, name)
    return h


def _shape_args(args) -> list:
    if len(args) == 1 and isinstance(args[0], (list, tuple, torch.Size)):
        return list(args[0])
    return list(args)


_h_view = _reshape_like(lambda t, *s: t.reshape(*_shape_args(s)), "view")
_h_flatten = _reshape_like(lambda t, start_dim=0, end_dim=-1: torch.flatten(t, start_dim, end_dim), "flatten")
_h_squeeze = _reshape_like(lambda t, *d: t.squeeze(*d), "squeeze")
_h_unsqueeze = _reshape_like(lambda t, d: t.unsqueeze(d), "unsqueeze")
_h_unflatten = _reshape_like(lambda t, dim, sizes: t.unflatten(dim, sizes), "unflatten")


def _h_view_as(b, name, x, other):
    target = other.ex.shape if _is_val(other) else other.shape
    return b.reshape(_need_val(x, "view_as"), target, name)


def _h_permute(b, name, x, *dims):
    x = _need_val(x, "permute")
    perm = [int(d) % x.rank for d in _shape_args(dims)]
    if perm[0] != 0:
        raise _Unsupported("permute", "moves the batch axis")
    if perm == list(range(x.rank)):
        return x
    return b.emit("transpose", [x], {"perm": perm}, name)


def _h_transpose(b, name, x, d0, d1):
    x = _need_val(x, "transpose")
    perm = list(range(x.rank))
    a, c = int(d0) % x.rank, int(d1) % x.rank
    perm[a], perm[c] = perm[c], perm[a]
    return _h_permute(b, name, x, perm)


def _h_getitem(b, name, x, idx):
    """Basic indexing x[:, a:b, i, None, ...]; one list / 1-D index tensor becomes a gather."""
    x = _need_val(x, "getitem")
    items = list(idx) if isinstance(idx, tuple) else [idx]
    n_real = sum(1 for it in items if it is not None and it is not Ellipsis)
    if Ellipsis in items:
        pos = items.index(Ellipsis)
        items[pos:pos + 1] = [slice(None)] * (x.rank - n_real)
    items += [slice(None)] * (x.rank - sum(1 for it in items if it is not None))
    if not items or items[0] is None or items[0] != slice(None):
        raise _Unsupported("getitem", "indexes the batch axis")
    axes, starts, ends, steps = [], [], [], []
    gather = None
    ax = 0
    for it in items:
        if it is None:
            continue
        size = x.ex.shape[ax]
        if isinstance(it, slice):
            s, e, st = it.indices(size)
            if (s, e, st) != (0, size, 1):
                axes.append(ax), starts.append(s), ends.append(max(e, s)), steps.append(st)
        elif isinstance(it, int) and not isinstance(it, bool):
            i = it + size if it < 0 else it
            if not 0 <= i < size:
                raise InputError(f"torch import: node {name!r}: index {it} out of range for size {size}")
            axes.append(ax), starts.append(i), ends.append(i + 1), steps.append(1)
        elif isinstance(it, (list, torch.Tensor)) and gather is None:
            ind = torch.as_tensor(it)
            if ind.dim() != 1 or ind.dtype not in (torch.int64, torch.int32) or ind.requires_grad:
                raise _Unsupported("getitem", "advanced indexing other than one 1-D integer index")
            gather = (ax, [int(v) for v in ind])
        else:
            raise _Unsupported("getitem", f"index {it!r}")
        ax += 1
    try:
        expected = x.ex[idx]
    except Exception as e:
        raise InputError(f"torch import: node {name!r} (getitem) fails on the example input: {e}") from e
    y = x
    if axes:
        y = b.emit("slice", [y], {"axes": axes, "starts": starts, "ends": ends, "steps": steps},
                   b.fresh(name + "_slice"))
    if gather is not None:
        y = b.emit("gather", [y], {"axis": gather[0], "indices": gather[1]}, b.fresh(name + "_gather"))
    y = b.reshape(y, expected.shape, b.fresh(name + "_reshape"))
    return b.rename_last(y, name)


def _h_getattr(b, name, x, attr):
    if attr in ("shape",):
        return x.ex.shape
    if attr in ("dtype", "device", "ndim"):
        return getattr(x.ex, attr)
    raise _Unsupported(f"getattr {attr}")


def _h_size(b, name, x, dim=None):
    return x.ex.size() if dim is None else x.ex.size(dim)


def _h_dim(b, name, x):
    return x.ex.dim()


# ------------------------------------------------------------------------------------------ BatchNorm
def _h_batchnorm(b: _Builder, name: str, x: _Val, m: nn.modules.batchnorm._BatchNorm) -> _Val:
    """Inference BatchNorm as (x - mean) / sqrt(var + eps) * gamma + beta with per-channel constants that
    are views of the module's live buffers and parameters; folded afterwards if `fold_bn` (see
    `_fold_batchnorms`)."""
    x = _need_val(x, "batchnorm")
    if m.running_mean is None or m.running_var is None:
        raise _Unsupported("batchnorm", "track_running_stats=False (batch statistics only)")
    shape = (x.ex.shape[1],) + (1,) * (x.rank - 2)

    def view(t):  # a live view: follows in-place updates, differentiable w.r.t. `t`
        return t if t.shape == shape else b.view(t, lambda u: u.view(shape))

    producer = b.producer.get(x.name)
    first = len(b.nodes)
    # fixed at import (the IR has no constant arithmetic); named "<bn path>.running_std" in any layout
    std = _snapshot(torch.sqrt(m.running_var + m.eps).reshape(shape))
    if id(m.running_var) in b.tensor_names:
        b.tensor_names[id(std)] = b.tensor_names[id(m.running_var)].rsplit(".", 1)[0] + ".running_std"
    y = b.emit("sub", [x, view(m.running_mean)], {}, b.fresh(name + "_center"))
    y = b.emit("div", [y, std], {}, b.fresh(name + "_scale"))
    if m.weight is not None:
        y = b.emit("mul", [y, view(m.weight)], {}, b.fresh(name + "_gamma"))
    if m.bias is not None:
        y = b.emit("add", [y, view(m.bias)], {}, b.fresh(name + "_beta"))
    y = b.rename_last(y, name)
    if b.fold_bn and producer is not None and (producer.op == "conv" or (producer.op == "linear" and x.rank == 2)):
        b.bn_candidates.append((producer.name, m, [n.name for n in b.nodes[first:]]))
    return y


def _fold_batchnorms(b: _Builder, nodes: list[Node], output: str) -> list[Node]:
    """Fold each candidate BatchNorm into the conv/linear before it when the BN is that layer's only user.

    The folded weights W * s and (bias - mean) * s + beta, s = gamma / sqrt(var + eps), are detached
    snapshots. The layer node takes the BN output's name and place."""
    for prod_name, m, bn_names in b.bn_candidates:
        by_name = {n.name: n for n in nodes}
        if prod_name not in by_name or any(n not in by_name for n in bn_names):
            continue
        uses = sum(n.inputs.count(prod_name) for n in nodes) + (prod_name == output)
        if uses != 1 or by_name[bn_names[0]].inputs[0] != prod_name:
            continue
        layer = by_name[prod_name]
        w = b.constants[layer.inputs[1]]
        bias = b.constants[layer.inputs[2]] if len(layer.inputs) > 2 else None
        s = (m.weight if m.weight is not None else 1.0) / torch.sqrt(m.running_var + m.eps)
        shift = (m.bias if m.bias is not None else 0.0) - m.running_mean * s
        w_f = _snapshot(w * s.reshape((-1,) + (1,) * (w.dim() - 1)))  # see the module docstring
        b_f = _snapshot(shift if bias is None else bias * s + shift)
        layer.inputs = [layer.inputs[0], b.const(w_f, bn_names[-1] + ".folded_weight"),
                        b.const(b_f, bn_names[-1] + ".folded_bias")]
        layer.name = bn_names[-1]
        nodes = [n for n in nodes if n.name not in bn_names or n is layer]
    return nodes


# ------------------------------------------------------------------------------------ pad, upsample, norm
def _h_pad(b, name, x, pad, mode="constant", value=None):
    """F.pad: `pad` holds (begin, end) pairs from the last axis backwards; the IR wants ONNX layout."""
    x = _need_val(x, "pad")
    pad = [int(p) for p in pad]
    if len(pad) % 2 or len(pad) // 2 > x.rank - 1:
        raise _Unsupported("pad", "pads the batch axis")
    if any(p < 0 for p in pad):
        raise _Unsupported("pad", "negative padding (cropping)")
    begins, ends = [0] * x.rank, [0] * x.rank
    for i in range(len(pad) // 2):
        begins[x.rank - 1 - i], ends[x.rank - 1 - i] = pad[2 * i], pad[2 * i + 1]
    modes = {"constant": "constant", "reflect": "reflect", "replicate": "edge"}
    if mode not in modes:
        raise _Unsupported("pad", f"mode={mode!r}")
    if mode != "constant" and any(begins[:2] + ends[:2]):
        raise _Unsupported("pad", f"{mode} padding of the channel axis")
    attrs = {"pads": begins + ends, "mode": modes[mode]}
    if mode == "constant":
        attrs["value"] = float(value or 0.0)
    return b.emit("pad", [x], attrs, name)


def _h_interpolate(b, name, x, size=None, scale_factor=None, mode="nearest", align_corners=None,
                   recompute_scale_factor=None, antialias=False):
    """Nearest-neighbour upsampling by integer factors (the IR's `resize`)."""
    x = _need_val(x, "interpolate")
    if mode != "nearest" or antialias:
        raise _Unsupported("interpolate", f"mode={mode!r}")
    out = F.interpolate(x.ex, size=size, scale_factor=scale_factor, mode="nearest",
                        recompute_scale_factor=recompute_scale_factor)
    ins, outs = list(x.ex.shape[2:]), list(out.shape[2:])
    if any(o % i for i, o in zip(ins, outs)):
        raise _Unsupported("interpolate", f"non-integer scale {ins} -> {outs}")
    return b.emit("resize", [x], {"size": outs}, name)


def _h_layer_norm(b, name, x, normalized_shape, weight=None, bias=None, eps=1e-5):
    """(x - mean) / sqrt(var + eps) * weight + bias over the trailing `normalized_shape` axes."""
    x = _need_val(x, "layer_norm")
    k = len(normalized_shape) if isinstance(normalized_shape, (list, tuple, torch.Size)) else 1
    if k >= x.rank:
        raise _Unsupported("layer_norm", "normalises over the batch axis")
    axes = list(range(x.rank - k, x.rank))
    mean = b.emit("reducemean", [x], {"axes": axes, "keepdims": 1}, b.fresh(name + "_mean"))
    cen = b.emit("sub", [x, mean], {}, b.fresh(name + "_center"))
    sq = b.emit("mul", [cen, cen], {}, b.fresh(name + "_sq"))
    var = b.emit("reducemean", [sq], {"axes": axes, "keepdims": 1}, b.fresh(name + "_var"))
    ve = b.emit("add", [var, float(eps)], {}, b.fresh(name + "_vareps"))
    std = b.emit("sqrt", [ve], {}, b.fresh(name + "_std"))
    y = b.emit("div", [cen, std], {}, b.fresh(name + "_norm"))
    if weight is not None:
        y = b.emit("mul", [y, weight], {}, b.fresh(name + "_gamma"))
    if bias is not None:
        y = b.emit("add", [y, bias], {}, b.fresh(name + "_beta"))
    return b.rename_last(y, name)


# ------------------------------------------------------------------------------------- module handlers
def _mod_linear(b, name, m: nn.Linear, x):
    return _h_linear(b, name, x, m.weight, m.bias)


def _mod_conv(b, name, m, x):
    if m.padding_mode == "zeros":
        return _h_conv(b, name, x, m.weight, m.bias, m.stride, m.padding, m.dilation, m.groups)
    if m.padding_mode not in ("reflect", "replicate"):
        raise _Unsupported(type(m).__name__, f"padding_mode={m.padding_mode!r}")
    # torch pads explicitly, then convolves without padding
    nd = m.weight.dim() - 2
    pads = _conv_pads(m.padding, list(m.weight.shape[2:]), _ntuple(m.dilation, nd), nd)
    torch_pad = [p for i in reversed(range(nd)) for p in (pads[i], pads[nd + i])]
    x = _h_pad(b, b.fresh(name + "_pad"), x, torch_pad, m.padding_mode)
    return _h_conv(b, name, x, m.weight, m.bias, m.stride, 0, m.dilation, m.groups)


def _mod_conv_transpose(b, name, m, x, output_size=None):
    if output_size is not None:
        raise _Unsupported(type(m).__name__, "output_size argument")
    return _h_conv_transpose(b, name, x, m.weight, m.bias, m.stride, m.padding, m.output_padding, m.groups,
                             m.dilation)


_MODULES: dict[type, Callable] = {
    nn.Linear: _mod_linear,
    nn.Conv1d: _mod_conv, nn.Conv2d: _mod_conv, nn.Conv3d: _mod_conv,
    nn.ConvTranspose1d: _mod_conv_transpose, nn.ConvTranspose2d: _mod_conv_transpose,
    nn.BatchNorm1d: lambda b, n, m, x: _h_batchnorm(b, n, x, m),
    nn.BatchNorm2d: lambda b, n, m, x: _h_batchnorm(b, n, x, m),
    nn.BatchNorm3d: lambda b, n, m, x: _h_batchnorm(b, n, x, m),
    nn.ReLU: lambda b, n, m, x: b.emit("relu", [_need_val(x, "relu")], {}, n),
    nn.LeakyReLU: lambda b, n, m, x: _h_leakyrelu(b, n, x, m.negative_slope),
    nn.Sigmoid: lambda b, n, m, x: b.emit("sigmoid", [_need_val(x, "sigmoid")], {}, n),
    nn.Tanh: lambda b, n, m, x: b.emit("tanh", [_need_val(x, "tanh")], {}, n),
    nn.GELU: lambda b, n, m, x: _h_gelu(b, n, x, m.approximate),
    nn.Softplus: lambda b, n, m, x: _h_softplus(b, n, x, m.beta, m.threshold),
    nn.SiLU: lambda b, n, m, x: _h_silu(b, n, x),
    nn.Softmax: lambda b, n, m, x: _h_softmax(b, n, x, m.dim),
    nn.ReLU6: lambda b, n, m, x: _h_relu6(b, n, x),
    nn.Hardtanh: lambda b, n, m, x: _h_hardtanh(b, n, x, m.min_val, m.max_val),
    nn.MaxPool1d: lambda b, n, m, x: _h_maxpool(b, n, x, m.kernel_size, m.stride, m.padding, m.dilation,
                                                m.ceil_mode, m.return_indices),
    nn.MaxPool2d: lambda b, n, m, x: _h_maxpool(b, n, x, m.kernel_size, m.stride, m.padding, m.dilation,
                                                m.ceil_mode, m.return_indices),
    nn.AvgPool1d: lambda b, n, m, x: _h_avgpool(b, n, x, m.kernel_size, m.stride, m.padding, m.ceil_mode,
                                                m.count_include_pad),
    nn.AvgPool2d: lambda b, n, m, x: _h_avgpool(b, n, x, m.kernel_size, m.stride, m.padding, m.ceil_mode,
                                                m.count_include_pad, m.divisor_override),
    nn.AdaptiveAvgPool1d: lambda b, n, m, x: _h_adaptive_avgpool(b, n, x, m.output_size),
    nn.AdaptiveAvgPool2d: lambda b, n, m, x: _h_adaptive_avgpool(b, n, x, m.output_size),
    nn.Flatten: lambda b, n, m, x: _h_flatten(b, n, x, m.start_dim, m.end_dim),
    nn.Unflatten: lambda b, n, m, x: _h_unflatten(b, n, x, m.dim, m.unflattened_size),
    nn.Identity: lambda b, n, m, x, *a, **k: x,
    nn.Dropout: lambda b, n, m, x: x, nn.Dropout1d: lambda b, n, m, x: x,
    nn.Dropout2d: lambda b, n, m, x: x, nn.Dropout3d: lambda b, n, m, x: x,
    nn.AlphaDropout: lambda b, n, m, x: x,
    GroupSort: lambda b, n, m, x: _h_groupsort(b, n, x, m.group_size),
    nn.ZeroPad2d: lambda b, n, m, x: _h_pad(b, n, x, m.padding),
    nn.ConstantPad1d: lambda b, n, m, x: _h_pad(b, n, x, m.padding, "constant", m.value),
    nn.ConstantPad2d: lambda b, n, m, x: _h_pad(b, n, x, m.padding, "constant", m.value),
    nn.ReflectionPad2d: lambda b, n, m, x: _h_pad(b, n, x, m.padding, "reflect"),
    nn.ReplicationPad2d: lambda b, n, m, x: _h_pad(b, n, x, m.padding, "replicate"),
    nn.Upsample: lambda b, n, m, x: _h_interpolate(b, n, x, m.size, m.scale_factor, m.mode, m.align_corners,
                                                   m.recompute_scale_factor),
    nn.LayerNorm: lambda b, n, m, x: _h_layer_norm(b, n, x, m.normalized_shape, m.weight, m.bias, m.eps),
}

_FUNCTIONS: dict[Any, Callable] = {
    F.relu: _unary("relu"), torch.relu: _unary("relu"), F.relu_: _unary("relu"), torch.relu_: _unary("relu"),
    F.leaky_relu: _h_leakyrelu,
    torch.sigmoid: _unary("sigmoid"), F.sigmoid: _unary("sigmoid"),
    torch.tanh: _unary("tanh"), F.tanh: _unary("tanh"),
    F.gelu: _h_gelu, F.softplus: _h_softplus, F.silu: _h_silu,
    torch.sin: _unary("sin"), torch.cos: _unary("cos"), torch.exp: _unary("exp"), torch.log: _unary("log"),
    torch.sqrt: _unary("sqrt"), torch.abs: _unary("abs"), torch.erf: _unary("erf"),
    torch.reciprocal: _unary("reciprocal"),
    F.softmax: _h_softmax, torch.softmax: _h_softmax,
    torch.clamp: _h_clip, torch.clip: _h_clip, F.hardtanh: _h_hardtanh, F.relu6: _h_relu6,
    F.dropout: _h_identity, F.dropout1d: _h_identity, F.dropout2d: _h_identity, F.alpha_dropout: _h_identity,
    operator.add: _h_add, torch.add: _h_add, operator.iadd: _h_add,
    operator.sub: _h_sub, torch.sub: _h_sub, operator.isub: _h_sub, torch.rsub: _h_rsub,
    operator.mul: _h_mul, torch.mul: _h_mul, operator.imul: _h_mul,
    operator.truediv: _h_truediv, torch.div: _h_truediv, operator.itruediv: _h_truediv,
    operator.pow: _h_pow, torch.pow: _h_pow, torch.square: _h_square,
    operator.neg: _h_neg, torch.neg: _h_neg,
    operator.matmul: _h_matmul, torch.matmul: _h_matmul, torch.mm: _h_matmul,
    F.linear: _h_linear,
    F.conv1d: _h_conv, F.conv2d: _h_conv, F.conv3d: _h_conv,
    F.conv_transpose1d: _h_conv_transpose, F.conv_transpose2d: _h_conv_transpose,
    F.max_pool1d: _h_maxpool, F.max_pool2d: _h_maxpool,
    F.avg_pool1d: _h_avgpool, F.avg_pool2d: _h_avgpool,
    F.adaptive_avg_pool1d: _h_adaptive_avgpool, F.adaptive_avg_pool2d: _h_adaptive_avgpool,
    torch.maximum: _h_maximum, torch.max: _h_maximum, torch.minimum: _h_minimum, torch.min: _h_minimum,
    torch.cat: _h_cat, torch.concat: _h_cat, torch.stack: _h_stack,
    torch.flatten: _h_flatten, torch.reshape: _h_view, torch.squeeze: _h_squeeze,
    torch.unsqueeze: _h_unsqueeze, torch.permute: _h_permute, torch.transpose: _h_transpose,
    torch.sum: _reduce("reducesum"), torch.mean: _reduce("reducemean"),
    operator.getitem: _h_getitem, builtins.getattr: _h_getattr,
    F.pad: _h_pad, F.interpolate: _h_interpolate, F.layer_norm: _h_layer_norm,
}

_METHODS: dict[str, Callable] = {
    "relu": _unary("relu"), "relu_": _unary("relu"), "sigmoid": _unary("sigmoid"), "tanh": _unary("tanh"),
    "sin": _unary("sin"), "cos": _unary("cos"), "exp": _unary("exp"), "log": _unary("log"),
    "sqrt": _unary("sqrt"), "abs": _unary("abs"), "neg": _h_neg, "erf": _unary("erf"),
    "reciprocal": _unary("reciprocal"), "square": _h_square,
    "softmax": _h_softmax, "clamp": _h_clip, "clip": _h_clip,
    "clamp_min": lambda b, n, x, v: _h_clip(b, n, x, min=v), "clamp_max": lambda b, n, x, v: _h_clip(b, n, x, max=v),
    "add": _h_add, "add_": _h_add, "sub": _h_sub, "sub_": _h_sub, "mul": _h_mul, "mul_": _h_mul,
    "div": _h_truediv, "div_": _h_truediv, "pow": _h_pow, "matmul": _h_matmul, "mm": _h_matmul,
    "view": _h_view, "reshape": _h_view, "flatten": _h_flatten, "squeeze": _h_squeeze,
    "unsqueeze": _h_unsqueeze, "unflatten": _h_unflatten, "view_as": _h_view_as, "reshape_as": _h_view_as,
    "permute": _h_permute, "transpose": _h_transpose,
    "sum": _reduce("reducesum"), "mean": _reduce("reducemean"),
    "contiguous": _h_identity, "float": _h_identity, "double": _h_identity, "to": _h_identity,
    "clone": _h_identity, "detach": _h_identity,
    "size": _h_size, "dim": _h_dim,
}


# ================================================================================================ driver
def _trace(module: nn.Module) -> tuple[fx.Graph, _Root]:
    root = _Root(module)
    try:
        graph = _Tracer().trace(root)
    except Exception as e:  # fx raises TraceError, TypeError, RuntimeError, ... for untraceable code
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise InputError(f"torch import: torch.fx cannot trace {type(module).__name__}: {msg}") from e
    return graph, root


def _fetch_attr(root: nn.Module, target: str) -> Any:
    obj: Any = root
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj


def _map(obj: Any, env: dict[fx.Node, Any]) -> Any:
    return fx.node.map_arg(obj, lambda n: env[n])


def _label(target: Any) -> str:
    if isinstance(target, str):
        return target
    return getattr(target, "__name__", str(target))


def load_torch(module: nn.Module, input_shape: tuple[int, ...] | list[int] | int, fold_bn: bool = False,
               name: str | None = None) -> Graph:
    """Convert `module` into a verification `Graph`.

    `input_shape` is the per-sample input shape (no batch axis), e.g. (1, 28, 28) or (784,). The returned
    Graph has input "input" of that shape; its constants hold the module's own Parameter objects, so
    `graph.forward(x)` is differentiable w.r.t. the module's weights. `fold_bn=True` folds BatchNorm into
    the preceding conv/linear (weights then become detached snapshots; see the module docstring).
    """
    if not isinstance(module, nn.Module):
        raise InputError(f"torch import: expected an nn.Module, got {type(module).__name__}")
    if isinstance(input_shape, int):
        input_shape = (input_shape,)
    try:
        input_shape = tuple(int(s) for s in input_shape)
    except (TypeError, ValueError) as e:
        raise InputError(f"torch import: input_shape must be a tuple of ints, got {input_shape!r}") from e
    if any(s <= 0 for s in input_shape):
        raise InputError(f"torch import: input_shape must be positive, got {input_shape}")
    fx_graph, root = _trace(module)
    dtype, device = _param_dtype_device(module)
    names = _ir_names(fx_graph)
    tensor_names = {id(t): k for k, t in list(module.named_parameters()) + list(module.named_buffers())}
    b = _Builder(set(names.values()), dtype, bool(fold_bn), tensor_names)
    b.device = device
    tensors = list(module.parameters()) + list(module.buffers())
    b.param_storages = {t.untyped_storage().data_ptr() for t in tensors}
    b.param_layouts = {(t.data_ptr(), tuple(t.shape), tuple(t.stride()), t.dtype): t for t in tensors}
    gen = torch.Generator().manual_seed(0)
    example = (torch.rand((EXAMPLE_BATCH, *input_shape), generator=gen, dtype=torch.float64) + 0.5).to(dtype=dtype,
                                                                                                device=device)
    env: dict[fx.Node, Any] = {}
    out_val: Any = None
    for node in fx_graph.nodes:
        try:
            res = env[node] = _convert_node(b, root, node, names[node], env, example)
        except _Unsupported as e:
            raise UnsupportedOpError(e.op, names[node], "torch import", e.detail) from None
        if node.op == "output":
            out_val = res
    if isinstance(out_val, (tuple, list)) and len(out_val) == 1:
        out_val = out_val[0]
    if not isinstance(out_val, _Val):
        raise InputError(f"torch import: {type(module).__name__} must return one tensor that depends on its "
                         f"input, got {type(out_val).__name__}")
    nodes, _ = _prune(b.nodes, b.constants, out_val.name)
    nodes = _fold_batchnorms(b, nodes, out_val.name)
    nodes, constants = _prune(nodes, b.constants, out_val.name)
    return Graph(INPUT_NAME, input_shape, nodes, constants, out_val.name, name or type(module).__name__)


def _module_handler(m: nn.Module) -> Callable | None:
    """Handler for a leaf module: by its class, or by a base class whose forward it inherits unchanged
    (e.g. the ParametrizedLinear that torch.nn.utils.parametrize derives from nn.Linear)."""
    for cls in type(m).__mro__:
        h = _MODULES.get(cls)
        if h is not None:
            return h if type(m).forward is cls.forward else None
    return None


def _ir_names(fx_graph: fx.Graph) -> dict[fx.Node, str]:
    """IR name of each fx node: a module call is named after the module's path ("fc1", "layer1_0_conv1"),
    anything else keeps fx's name; all unique, none equal to the input's name."""
    out: dict[fx.Node, str] = {}
    used = {INPUT_NAME}
    for node in fx_graph.nodes:
        base = node.name
        if node.op == "call_module" and isinstance(node.target, str) and node.target.startswith("m."):
            base = node.target[2:].replace(".", "_")
        if base[:1].isdigit():  # children of nn.Sequential: "0" -> "layer0"
            base = "layer" + base
        name, k = base, 1
        while name in used:
            name, k = f"{base}_{k}", k + 1
        used.add(name)
        out[node] = name
    return out


def _convert_node(b: _Builder, root: nn.Module, node: fx.Node, name: str, env, example) -> Any:
    if node.op == "placeholder":  # the wrapper's single input (further forward arguments keep defaults)
        return _Val(INPUT_NAME, example)
    if node.op == "get_attr":
        return _fetch_attr(root, node.target)
    if node.op == "output":
        return _map(node.args[0], env)
    args = _map(node.args, env)
    kwargs = _map(node.kwargs, env)
    if node.op == "call_module":
        m = root.get_submodule(node.target)
        h = _module_handler(m)
        if h is None:
            raise _Unsupported(type(m).__name__, f"module {node.target[2:]!r} of type {type(m).__module__}.{type(m).__qualname__}")
        return _call(h, type(m).__name__, b, name, m, *args, **kwargs)
    if not _contains_val(args) and not _contains_val(kwargs):
        # constant folding: parameter views, shape arithmetic; keeps autograd for parameters
        fn = node.target if node.op == "call_function" else getattr(args[0], node.target)
        call_args = args if node.op == "call_function" else args[1:]
        out = fn(*call_args, **kwargs)
        if isinstance(out, torch.Tensor) and id(out) not in b.tensor_names:  # name it after its source
            src = next((b.tensor_names[id(a)] for a in args if isinstance(a, torch.Tensor) and id(a) in b.tensor_names),
                       None)
            b.tensor_names[id(out)] = f"{src}.{_label(node.target)}" if src else name
        return out
    if node.op == "call_function":
        h = _FUNCTIONS.get(node.target)
        if h is None:
            raise _Unsupported(_label(node.target))
    else:  # call_method
        h = _METHODS.get(node.target)
        if h is None:
            raise _Unsupported(f"Tensor.{node.target}")
    return _call(h, _label(node.target), b, name, *args, **kwargs)


def _call(h: Callable, what: str, *args, **kwargs) -> Any:
    """Run a handler; a call it does not understand (unexpected arguments) is an unsupported use."""
    try:
        inspect.signature(h).bind(*args, **kwargs)
    except TypeError as e:
        raise _Unsupported(what, f"arguments not understood ({e})") from None
    return h(*args, **kwargs)


def snapshot_constants(graph: Graph) -> list[str]:
    """Names of the constants of an imported Graph that depend on parameters but are detached snapshots."""
    return [k for k, t in graph.constants.items() if isinstance(t, torch.Tensor) and getattr(t, "_verify_snapshot", False)]


def _prune(nodes: list[Node], constants: dict[str, torch.Tensor], output: str):
    """Drop nodes and constants the output does not depend on."""
    need = {output}
    kept = []
    for n in reversed(nodes):
        if n.name in need:
            kept.append(n)
            need.update(n.inputs)
    kept.reverse()
    return kept, {k: v for k, v in constants.items() if k in need}

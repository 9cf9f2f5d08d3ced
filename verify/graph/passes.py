"""Graph normalisation passes run after import.

Each pass takes a `Graph` and returns a new, equivalent one (the input is not modified); tests check that
outputs agree before and after. `normalise` runs them all in a fixed order:

- `drop_noops`: remove nodes that return their input unchanged (reshape to the same shape, identity
  transpose, full slice, float->float cast, add/sub of zeros, mul/div by ones).
  ONNX Identity and Dropout never reach the IR: the importer aliases them.
- `merge_reshapes`: a reshape of a reshape reads the original value.
- `fuse_matmul_add`: `matmul` by a constant 2-D matrix becomes `linear` (W stored (out, in)), and a
  following `add`/`sub` of a constant bias is folded into it.
- `fold_batchnorm`: a per-output-channel `mul`/`div`/`add`/`sub` by a constant (BatchNormalization is
  imported as mul+add) is folded into the preceding conv / convtranspose / linear when that layer has no
  other consumer.
- `remove_dead`: nodes and constants that do not reach the output.
"""
from __future__ import annotations

import torch

from verify.graph.ir import Graph, Node

_LAYER_OUT_AXIS = {"linear": 0, "conv": 0, "convtranspose": 1}  # output-channel axis of the weight


def _sample(g: Graph) -> dict[str, torch.Tensor]:
    """Every value at the zero input (batch 1, float64): dtypes and shapes for the pattern checks."""
    return g.forward(torch.zeros((1, *g.input_shape), dtype=torch.float64), return_all=True)


def _replace_uses(g: Graph, old: str, new: str) -> None:
    for n in g.nodes:
        n.inputs = [new if i == old else i for i in n.inputs]
    if g.output == old:
        g.output = new


def _fresh_const(g: Graph, hint: str, t: torch.Tensor) -> str:
    names = set(g.constants) | {n.name for n in g.nodes} | {g.input_name}
    name, i = hint, 1
    while name in names:
        name = f"{hint}_{i}"
        i += 1
    g.constants[name] = t
    return name


def _const_equals(g: Graph, name: str, value: float) -> bool:
    t = g.constants.get(name)
    return t is not None and t.is_floating_point() and bool(torch.all(t == value))


def _is_noop(g: Graph, n: Node, vals: dict[str, torch.Tensor]) -> bool:
    if not n.inputs or n.inputs[0] in g.constants:
        return False
    x = vals[n.inputs[0]]
    y = vals[n.name]
    if tuple(x.shape) != tuple(y.shape):
        return False
    op, at = n.op, n.attrs
    if op in ("reshape", "expand"):
        return True
    if op == "transpose":
        return list(at["perm"]) == list(range(len(at["perm"])))
    if op == "slice":
        return all(s == 1 for s in at["steps"])
    if op == "cast":
        return x.dtype == y.dtype or (x.is_floating_point() and y.is_floating_point())
    if op in ("add", "sub", "mul", "div") and x.is_floating_point() and len(n.inputs) == 2:
        neutral = 0.0 if op in ("add", "sub") else 1.0
        return _const_equals(g, n.inputs[1], neutral)
    return False


def drop_noops(graph: Graph) -> Graph:
    """Remove nodes whose output equals their first input."""
    g = graph.copy()
    vals = _sample(g)
    for n in list(g.nodes):
        if _is_noop(g, n, vals):
            g.nodes.remove(n)
            _replace_uses(g, n.name, n.inputs[0])
    return g


def merge_reshapes(graph: Graph) -> Graph:
    """reshape(reshape(x)) -> reshape(x); the inner reshape goes if nothing else reads it."""
    g = graph.copy()
    nodes = g.node_map()
    for n in g.nodes:
        if n.op == "reshape":
            p = nodes.get(n.inputs[0])
            if p is not None and p.op == "reshape":
                n.inputs = [p.inputs[0]]
    return remove_dead(drop_noops(g))


def remove_dead(graph: Graph) -> Graph:
    """Drop nodes the output does not depend on and constants no node reads."""
    g = graph.copy()
    needed = {g.output}
    for n in reversed(g.nodes):
        if n.name in needed:
            needed.update(n.inputs)
    g.nodes = [n for n in g.nodes if n.name in needed]
    used = {i for n in g.nodes for i in n.inputs}
    g.constants = {k: v for k, v in g.constants.items() if k in used}
    return g


def matmul_to_linear(graph: Graph) -> Graph:
    """matmul(x, W) with a constant float matrix W (in, out) -> linear(x, W^T)."""
    g = graph.copy()
    for i, n in enumerate(g.nodes):
        if n.op != "matmul" or len(n.inputs) != 2:
            continue
        x, w = n.inputs
        if x in g.constants or w not in g.constants:
            continue
        W = g.constants[w]
        if W.dim() != 2 or not W.is_floating_point():
            continue
        wname = _fresh_const(g, f"{n.name}_W", W.detach().double().t().contiguous())
        g.nodes[i] = Node(n.name, "linear", [x, wname], {}, n.shape)
    return remove_dead(g)


def _per_channel(c: torch.Tensor, rank: int, axis: int, channels: int) -> torch.Tensor | None:
    """`c` as a (channels,) vector if, broadcast against a tensor of `rank` dims, it only varies along
    `axis`; None otherwise."""
    if c.dim() > rank or not c.is_floating_point():
        return None
    shape = [1] * (rank - c.dim()) + list(c.shape)
    if any(s != 1 for k, s in enumerate(shape) if k != axis) or shape[axis] not in (1, channels):
        return None
    return c.detach().double().reshape(-1).expand(channels).clone()


def _fold_affine(graph: Graph, layers: set[str], follow: set[str]) -> Graph:
    """Fold constant per-channel `follow` ops into the preceding `layers` node, to a fixed point."""
    g = graph.copy()
    changed = True
    while changed:
        changed = False
        cons = g.consumers()
        for idx, L in enumerate(g.nodes):
            if L.op not in layers or L.name == g.output or len(cons.get(L.name, [])) != 1:
                continue
            if L.op == "convtranspose" and L.attrs.get("group", 1) != 1:
                continue
            A = cons[L.name][0]
            if A.op not in follow or len(A.inputs) != 2 or tuple(A.shape) != tuple(L.shape):
                continue
            if A.inputs[0] == L.name and A.inputs[1] in g.constants:
                left, cname = True, A.inputs[1]
            elif A.inputs[1] == L.name and A.inputs[0] in g.constants:
                left, cname = False, A.inputs[0]
            else:
                continue
            if A.op == "div" and not left:
                continue
            rank = len(L.shape) + 1
            axis = rank - 1 if L.op == "linear" else 1
            W = g.constants[L.inputs[1]].detach().double()
            wax = _LAYER_OUT_AXIS[L.op]
            C = W.shape[wax]
            vec = _per_channel(g.constants[cname], rank, axis, C)
            if vec is None or (A.op == "div" and bool(torch.any(vec == 0))):
                continue
            b = g.constants[L.inputs[2]].detach().double() if len(L.inputs) > 2 else torch.zeros(C, dtype=torch.float64)
            bshape = [1] * W.dim()
            bshape[wax] = C
            if A.op == "mul":
                W, b = W * vec.reshape(bshape), b * vec
            elif A.op == "div":
                W, b = W / vec.reshape(bshape), b / vec
            elif A.op == "add":
                b = b + vec
            elif left:  # sub: L - c
                b = b - vec
            else:  # sub: c - L
                W, b = -W, vec - b
            wname = _fresh_const(g, f"{A.name}_W", W.contiguous())
            bname = _fresh_const(g, f"{A.name}_b", b.contiguous())
            g.nodes[idx] = Node(A.name, L.op, [L.inputs[0], wname, bname], dict(L.attrs), A.shape)
            g.nodes.remove(A)
            changed = True
            break
    return remove_dead(g)


def fuse_matmul_add(graph: Graph) -> Graph:
    """matmul by a constant + add of a constant bias -> one `linear` (W (out, in), bias (out,))."""
    return _fold_affine(matmul_to_linear(graph), {"linear"}, {"add", "sub"})


def fold_batchnorm(graph: Graph) -> Graph:
    """Fold per-channel affine maps (imported BatchNormalization) into the preceding conv/linear."""
    return _fold_affine(graph, set(_LAYER_OUT_AXIS), {"mul", "div", "add", "sub"})


def normalise(graph: Graph) -> Graph:
    """All passes, in order; the result computes the same function with fewer, canonical nodes."""
    g = drop_noops(graph)
    g = merge_reshapes(g)
    g = fuse_matmul_add(g)
    g = fold_batchnorm(g)
    g = drop_noops(g)
    return remove_dead(g)

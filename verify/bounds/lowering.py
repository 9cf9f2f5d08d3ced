"""Rewrites applied to a graph before bounding: operators expressed exactly through ones with relaxations.

* `max(a, b)` = a + relu(b - a) and `min(a, b)` = b - relu(b - a) (two variables; with a constant operand
  the same identities hold, the constant entering as a bias).
* `maxpool`: the windows are gathered (an affine selection; padded positions repeat a valid element of
  the window, which leaves the max unchanged) and reduced by a tree of pairwise maxes.
* `groupsort` with group size 2 (MaxMin): per pair, max and min as above, interleaved back.

Each rewrite is exact, so the concrete network is unchanged; the bounds then come from the ReLU
relaxation (sound, if looser than a dedicated max relaxation).
"""
from __future__ import annotations

import itertools

import torch

from verify.graph import ops as gops
from verify.graph.ir import Graph, Node


class _Builder:
    def __init__(self, graph: Graph):
        self.g = graph
        self.nodes: list[Node] = []
        self.constants = dict(graph.constants)
        self.counter = itertools.count()
        self.shapes = {graph.input_name: graph.input_shape}

    def fresh(self, base: str) -> str:
        return f"{base}__low{next(self.counter)}"

    def add(self, op: str, inputs: list[str], attrs: dict, name: str | None = None) -> str:
        name = name or self.fresh(op)
        args = []
        for i in inputs:
            if i in self.constants:
                args.append(self.constants[i].detach())
            else:
                args.append(torch.zeros(1, *self.shapes[i], dtype=torch.float64))
        shape = tuple(gops.evaluate(op, args, attrs).shape[1:])
        self.nodes.append(Node(name, op, list(inputs), attrs, shape))
        self.shapes[name] = shape
        return name

    def const(self, value: torch.Tensor) -> str:
        name = self.fresh("c")
        self.constants[name] = value
        return name

    def pair_max(self, a: str, b: str, name: str | None = None) -> str:
        d = self.add("sub", [b, a], {})
        r = self.add("relu", [d], {})
        return self.add("add", [a, r], {}, name)

    def pair_min(self, a: str, b: str, name: str | None = None) -> str:
        d = self.add("sub", [b, a], {})
        r = self.add("relu", [d], {})
        return self.add("sub", [b, r], {}, name)


def _maxpool(bld: _Builder, node: Node) -> None:
    x = node.inputs[0]
    C, H, W = bld.shapes[x]
    k = node.attrs["kernel_shape"]
    s = node.attrs.get("strides", k)
    dil = node.attrs.get("dilations", [1, 1])
    pads = node.attrs.get("pads", [0, 0, 0, 0])
    OH, OW = node.shape[1], node.shape[2]
    index = torch.arange(H * W).reshape(H, W)
    windows = []
    for oh in range(OH):
        for ow in range(OW):
            cells = []
            for i in range(k[0]):
                for j in range(k[1]):
                    h = oh * s[0] - pads[0] + i * dil[0]
                    w = ow * s[1] - pads[1] + j * dil[1]
                    if 0 <= h < H and 0 <= w < W:
                        cells.append(int(index[h, w]))
            if not cells:
                raise ValueError(f"maxpool node {node.name!r} has a window with no input element")
            cells += [cells[0]] * (k[0] * k[1] - len(cells))
            windows.append(cells)
    flat = bld.add("reshape", [x], {"shape": [C, H * W]})
    # one gather per window position in the kernel: (C, OH*OW) each
    cols = [bld.add("gather", [flat], {"axis": 2, "indices": [w[t] for w in windows]}) for t in range(k[0] * k[1])]
    while len(cols) > 1:
        nxt = [bld.pair_max(cols[i], cols[i + 1]) for i in range(0, len(cols) - 1, 2)]
        if len(cols) % 2:
            nxt.append(cols[-1])
        cols = nxt
    bld.add("reshape", [cols[0]], {"shape": list(node.shape)}, node.name)


def _groupsort2(bld: _Builder, node: Node) -> None:
    x = node.inputs[0]
    shape = bld.shapes[x]
    n = shape[0]
    rest = list(shape[1:])
    pairs = bld.add("reshape", [x], {"shape": [n // 2, 2] + rest})
    a = bld.add("slice", [pairs], {"axes": [2], "starts": [0], "ends": [1], "steps": [1]})
    b = bld.add("slice", [pairs], {"axes": [2], "starts": [1], "ends": [2], "steps": [1]})
    hi = bld.pair_max(a, b)
    lo = bld.pair_min(a, b)
    both = bld.add("concat", [hi, lo], {"axis": 2})
    bld.add("reshape", [both], {"shape": list(shape)}, node.name)


def needs_lowering(graph: Graph) -> bool:
    return any(n.op in ("maxpool", "max", "min") or (n.op == "groupsort" and n.attrs.get("group_size", 2) == 2)
               for n in graph.nodes)


def lower_for_bounds(graph: Graph) -> Graph:
    """An equivalent graph whose max-like operators are expressed through ReLUs (see module docstring)."""
    if not needs_lowering(graph):
        return graph
    bld = _Builder(graph)
    for node in graph.nodes:
        if node.op == "maxpool" and len(bld.shapes[node.inputs[0]]) == 3:
            _maxpool(bld, node)
        elif node.op in ("max", "min"):
            a, b = node.inputs
            (bld.pair_max if node.op == "max" else bld.pair_min)(a, b, node.name)
        elif node.op == "groupsort" and node.attrs.get("group_size", 2) == 2:
            _groupsort2(bld, node)
        else:
            bld.nodes.append(node)
            bld.shapes[node.name] = node.shape
    g = Graph(graph.input_name, graph.input_shape, bld.nodes, bld.constants, graph.output, graph.name)
    return g

"""Interval bound propagation (IBP) over the graph IR, batched over sub-domains."""
from __future__ import annotations

import torch

from verify.bounds.ops import RULES
from verify.errors import UnsupportedOpError
from verify.graph.ir import Graph, Node


def rule_for(node: Node):
    rule = RULES.get(node.op)
    if rule is None:
        raise UnsupportedOpError(node.op, node.name, detail="no bound rule for this operator")
    return rule


def node_ibp(graph: Graph, node: Node, bounds: dict[str, tuple[torch.Tensor, torch.Tensor]],
             dtype: torch.dtype, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Interval rule of one node from the bounds of its inputs (constants are exact)."""
    lo, hi = [], []
    for i in node.inputs:
        if i in bounds:
            lo.append(bounds[i][0])
            hi.append(bounds[i][1])
        else:
            c = graph.const(i, dtype, device)
            lo.append(c)
            hi.append(c)
    try:
        return rule_for(node).ibp(lo, hi, node, graph)
    except NotImplementedError as e:
        raise UnsupportedOpError(node.op, node.name, detail=str(e)) from None


def ibp(graph: Graph, lower: torch.Tensor, upper: torch.Tensor, return_all: bool = False):
    """Interval bounds of the graph output over the boxes [lower, upper] (shape (B, *input_shape) or (B, n))."""
    B = lower.shape[0]
    lower = lower.reshape(B, *graph.input_shape)
    upper = upper.reshape(B, *graph.input_shape)
    bounds = {graph.input_name: (lower, upper)}
    for node in graph.nodes:
        bounds[node.name] = node_ibp(graph, node, bounds, lower.dtype, lower.device)
    return bounds if return_all else bounds[graph.output]

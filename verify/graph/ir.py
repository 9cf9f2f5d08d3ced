"""The graph IR every part of `verify` works on.

A `Graph` is a list of `Node`s in topological order over named values. A value is the graph input, a
constant (a tensor in `Graph.constants`) or the output of exactly one node. Every non-constant value has a
leading batch dimension (inputs, sub-domains, ...); `Node.shape` is the per-sample shape without it, and
every axis attribute is an axis of the full tensor (batch = axis 0, so stored axes are >= 1).

The canonical operators and their concrete semantics live in `verify.graph.ops`; nothing downstream of the
importers knows whether a graph came from ONNX or from torch.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable

import torch

from verify.graph import ops as graph_ops


@dataclass
class Node:
    """One operator application. `name` is also the name of the value it produces."""

    name: str
    op: str
    inputs: list[str]
    attrs: dict[str, Any] = field(default_factory=dict)
    shape: tuple[int, ...] = ()

    def __repr__(self) -> str:  # compact, for error messages and debugging
        return f"{self.name} = {self.op}({', '.join(self.inputs)}){' ' + str(self.attrs) if self.attrs else ''} -> {self.shape}"


class Graph:
    """A network: one input, one output, nodes in topological order, named constants."""

    def __init__(self, input_name: str, input_shape: Iterable[int], nodes: list[Node],
                 constants: dict[str, torch.Tensor], output: str, name: str = "model"):
        self.input_name = input_name
        self.input_shape = tuple(int(s) for s in input_shape)
        self.nodes = nodes
        self.constants = constants
        self.output = output
        self.name = name
        self._cast_cache: dict[tuple[str, torch.dtype], torch.Tensor] = {}

    # ----------------------------------------------------------------------------------------- queries
    @property
    def output_shape(self) -> tuple[int, ...]:
        return self.shape_of(self.output)

    @property
    def input_size(self) -> int:
        n = 1
        for s in self.input_shape:
            n *= s
        return n

    @property
    def output_size(self) -> int:
        n = 1
        for s in self.output_shape:
            n *= s
        return n

    def node(self, name: str) -> Node:
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(name)

    def node_map(self) -> dict[str, Node]:
        return {n.name: n for n in self.nodes}

    def shape_of(self, value: str) -> tuple[int, ...]:
        """Per-sample shape of a non-constant value."""
        if value == self.input_name:
            return self.input_shape
        for n in self.nodes:
            if n.name == value:
                return n.shape
        raise KeyError(value)

    def is_const(self, value: str) -> bool:
        return value in self.constants

    def consumers(self) -> dict[str, list[Node]]:
        """Map value name -> nodes that read it (non-constant values only)."""
        out: dict[str, list[Node]] = {self.input_name: []}
        for n in self.nodes:
            out.setdefault(n.name, [])
        for n in self.nodes:
            for i in n.inputs:
                if i in out:
                    out[i].append(n)
        return out

    def op_types(self) -> set[str]:
        return {n.op for n in self.nodes}

    def __repr__(self) -> str:
        lines = [f"Graph {self.name}: input {self.input_name} {self.input_shape} -> output {self.output} {self.output_shape}"]
        lines += ["  " + repr(n) for n in self.nodes]
        return "\n".join(lines)

    # ------------------------------------------------------------------------------------ evaluation
    def const(self, name: str, dtype: torch.dtype | None = None, device: torch.device | None = None) -> torch.Tensor:
        """A constant, cast to a floating dtype on request (cached; integer constants are never cast).

        The cast keeps autograd: constants that are trainable parameters (torch importer) stay
        differentiable through the cast."""
        t = self.constants[name]
        if dtype is None or not t.is_floating_point() or (t.dtype == dtype and (device is None or t.device == device)):
            return t
        if t.requires_grad:
            return t.to(dtype=dtype, device=device)
        key = (name, dtype, device)
        c = self._cast_cache.get(key)
        if c is None:
            c = t.to(dtype=dtype, device=device)
            self._cast_cache[key] = c
        return c

    def invalidate_cache(self) -> None:
        """Call after changing `constants` in place (e.g. a training step)."""
        self._cast_cache.clear()

    def forward(self, x: torch.Tensor, return_all: bool = False):
        """Evaluate the network on a batch.

        `x` has shape (N, *input_shape) or (N, input_size) (flattened, as in VNN-LIB's X_i order).
        Returns the output of shape (N, *output_shape), or every value when `return_all`.
        """
        if tuple(x.shape[1:]) != self.input_shape:
            x = x.reshape(x.shape[0], *self.input_shape)
        values: dict[str, torch.Tensor] = {self.input_name: x}
        dtype, device = x.dtype, x.device
        for n in self.nodes:
            args = [values[i] if i in values else self.const(i, dtype, device) for i in n.inputs]
            try:
                values[n.name] = graph_ops.evaluate(n.op, args, n.attrs)
            except Exception as e:  # pragma: no cover - names the node for debugging
                raise RuntimeError(f"evaluating node {n!r}: {e}") from e
        return values if return_all else values[self.output]

    __call__ = forward

    def forward_flat(self, x: torch.Tensor) -> torch.Tensor:
        """Forward on flattened inputs (N, input_size), flattened outputs (N, output_size)."""
        return self.forward(x).reshape(x.shape[0], -1)

    def copy(self) -> "Graph":
        return Graph(self.input_name, self.input_shape,
                     [Node(n.name, n.op, list(n.inputs), dict(n.attrs), n.shape) for n in self.nodes],
                     dict(self.constants), self.output, self.name)

"""Bound propagation: IBP, CROWN and α-CROWN over the graph IR, batched over sub-domains.

Public entry: `compute(graph, lower, upper, method=..., C=None)` (re-exported as `verify.compute_bounds`).
"""
from __future__ import annotations

import torch

from verify.bounds.alpha import AlphaOptions, alpha_crown
from verify.bounds.crown import BoundEngine, Splits
from verify.bounds.interval import ibp
from verify.bounds.lowering import lower_for_bounds
from verify.graph.ir import Graph

METHODS = ("ibp", "crown-ibp", "crown", "alpha-crown")


def engine_for(graph: Graph) -> BoundEngine:
    """The (cached) prepared bound engine of a graph (max-like operators lowered to ReLUs first)."""
    eng = getattr(graph, "_bound_engine", None)
    if eng is None or getattr(eng, "source", None) is not graph or eng.n_source_nodes != len(graph.nodes):
        eng = BoundEngine(lower_for_bounds(graph))
        eng.source = graph
        eng.n_source_nodes = len(graph.nodes)
        graph._bound_engine = eng
    return eng


def compute(graph: Graph, lower: torch.Tensor, upper: torch.Tensor, method: str = "crown",
            C: torch.Tensor | None = None, alpha: AlphaOptions | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Lower and upper bounds over the input boxes [lower, upper] (leading batch of sub-domains).

    Without C: bounds of the network output, shapes (B, *output_shape). With C (S, n_out) or (B, S, n_out):
    bounds of C·y, shape (B, S). IBP and CROWN are differentiable w.r.t. the graph's constants (weights).
    """
    if method not in METHODS:
        raise ValueError(f"unknown bound method {method!r}; choose from {', '.join(METHODS)}")
    lower = torch.as_tensor(lower)
    upper = torch.as_tensor(upper, dtype=lower.dtype)
    if C is not None:
        C = torch.as_tensor(C, dtype=lower.dtype)
    if lower.dim() == 1:
        lower, upper = lower.unsqueeze(0), upper.unsqueeze(0)
    eng = engine_for(graph)
    B = lower.shape[0]
    if method == "ibp":
        l, u = ibp(eng.graph, lower, upper)
        if C is None:
            return l, u
        Cb = C if C.dim() == 3 else C.unsqueeze(0).expand(B, -1, -1)
        return (BoundEngine._interval_objective(Cb, l.reshape(B, -1), u.reshape(B, -1)),
                -BoundEngine._interval_objective(-Cb, l.reshape(B, -1), u.reshape(B, -1)))
    inner = "crown-ibp" if method == "crown-ibp" else "crown"
    n_out = graph.output_size
    if C is None:
        eye = torch.eye(n_out, dtype=lower.dtype, device=lower.device)
        Cb = eye.unsqueeze(0).expand(B, -1, -1)
    else:
        Cb = C.to(lower.dtype)
        Cb = Cb if Cb.dim() == 3 else Cb.unsqueeze(0).expand(B, -1, -1)
    S = Cb.shape[1]
    stacked = torch.cat([Cb, -Cb], dim=1)
    if method == "alpha-crown":
        opts = alpha or AlphaOptions(stop_when_positive=False)
        lb = alpha_crown(eng, lower, upper, stacked, opts)
    else:
        lb = eng.compute(lower, upper, stacked, method=inner)
    lo, hi = lb[:, :S], -lb[:, S:]
    if C is None:
        shape = graph.shape_of(graph.output)
        return lo.reshape(B, *shape), hi.reshape(B, *shape)
    return lo, hi


__all__ = ["compute", "ibp", "BoundEngine", "Splits", "AlphaOptions", "alpha_crown", "engine_for", "METHODS"]

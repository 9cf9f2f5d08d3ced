"""The IBP tightness metric of Mao et al. (2024), "Understanding Certified Training with Interval Bound
Propagation".

With every ReLU fixed to its activation pattern at the clean input x, the network is an affine map
y = J·x' + b near x, and so are its margins C·y (rows e_y - e_j). For an ℓ∞ box of radius ε around x:

* the optimal (exact) box of the margins has radius ε·|C·J|·1;
* IBP through the same fixed-pattern network gives radius ε·|C·W_L|·D_{L-1}·|W_{L-1}| ··· D_1·|W_1|·1
  (D_i the 0/1 activation masks; the last layer fused with C as in training).

Tightness is the ratio optimal / IBP, in (0, 1], averaged over the margins and the images. It does not
depend on ε. It is 1 for a single affine layer and typically falls with depth and width at standard
initialisation; IBP training drives it up.

The IBP radius runs through the bound core's interval rules (`verify.bounds.interval.node_ibp`) with the
ReLU nodes replaced by their fixed masks; the exact radius comes from the Jacobian by autograd.
"""
from __future__ import annotations

import torch

from verify.bounds.interval import node_ibp
from verify.bounds.ops.linear import is_affine
from verify.errors import InputError
from verify.graph.ir import Graph

_FIXED = ("relu", "leakyrelu")


def _masks(graph: Graph, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Slope of each ReLU at the clean input (1 active, 0 or the leaky slope inactive)."""
    with torch.no_grad():
        values = graph.forward(x, return_all=True)
    masks = {}
    for node in graph.nodes:
        if node.op in _FIXED:
            pre = values[node.inputs[0]]
            neg = float(node.attrs.get("alpha", 0.01)) if node.op == "leakyrelu" else 0.0
            masks[node.name] = torch.where(pre > 0, torch.ones_like(pre), torch.full_like(pre, neg))
        elif not is_affine(node, graph):
            raise InputError(f"tightness: node {node.name!r} ({node.op}) is neither affine nor a ReLU; "
                             "the metric is defined for piecewise-linear ReLU networks")
    return masks


def ibp_radius(graph: Graph, x: torch.Tensor, C: torch.Tensor, masks: dict[str, torch.Tensor]) -> torch.Tensor:
    """Radius (B, S) of IBP bounds on C·y over the unit ℓ∞ box around x, ReLUs fixed to `masks`."""
    B = x.shape[0]
    x = x.reshape(B, *graph.input_shape)
    bounds = {graph.input_name: (x - 1.0, x + 1.0)}
    last = graph.nodes[-1]
    elide = last.op == "linear" and last.name == graph.output and len(graph.output_shape) == 1
    for node in (graph.nodes[:-1] if elide else graph.nodes):
        if node.name in masks:
            d = masks[node.name]
            l, u = bounds[node.inputs[0]]
            bounds[node.name] = (d * l, d * u)  # d >= 0: the fixed-pattern ReLU is a diagonal scaling
        else:
            bounds[node.name] = node_ibp(graph, node, bounds, x.dtype, x.device)
    if elide:
        l, u = bounds[last.inputs[0]]
        W = graph.const(last.inputs[1], x.dtype, x.device)
        return torch.einsum("bsi,bi->bs", torch.matmul(C, W).abs(), (u - l) / 2)
    l, u = bounds[graph.output]
    return torch.einsum("bsk,bk->bs", C.abs(), ((u - l) / 2).reshape(B, -1))


def optimal_radius(graph: Graph, x: torch.Tensor, C: torch.Tensor) -> torch.Tensor:
    """Radius (B, S) of the exact box of C·y over the unit ℓ∞ box, ReLUs fixed at x: ||row of C·J||_1."""
    B, S = C.shape[:2]
    xr = x.detach().reshape(B, *graph.input_shape).clone().requires_grad_(True)
    with torch.enable_grad():
        y = graph.forward(xr).reshape(B, -1)
        m = torch.einsum("bsk,bk->bs", C, y)
        rows = []
        for s in range(S):
            (g,) = torch.autograd.grad(m[:, s].sum(), xr, retain_graph=s < S - 1)
            rows.append(g.reshape(B, -1).abs().sum(1))
    return torch.stack(rows, dim=1)


def tightness(graph: Graph, x: torch.Tensor, labels: torch.Tensor, n_classes: int | None = None,
              batch_size: int = 256, reduce: bool = True) -> torch.Tensor:
    """Mean ratio optimal / IBP box radius of the margins at the inputs x (see the module docstring).

    `graph` is a Graph (or an nn.Module with x's per-sample shape). With reduce=False returns the per-image
    mean over margins (B,)."""
    from verify.train.certified import margin_matrix

    if isinstance(graph, torch.nn.Module):
        from verify.importers.torch import load_torch

        graph = load_torch(graph, tuple(x.shape[1:]))
    x = torch.as_tensor(x, dtype=torch.float32)
    labels = torch.as_tensor(labels, dtype=torch.long)
    K = int(n_classes or graph.output_size)
    out = []
    for i in range(0, x.shape[0], batch_size):
        xb, yb = x[i:i + batch_size], labels[i:i + batch_size]
        C = margin_matrix(yb, K, dtype=xb.dtype)
        masks = _masks(graph, xb)
        with torch.no_grad():
            r_ibp = ibp_radius(graph, xb, C, masks)
        r_opt = optimal_radius(graph, xb, C)
        ratio = torch.where(r_ibp > 0, r_opt / r_ibp.clamp(min=1e-30), torch.ones_like(r_ibp))
        out.append(ratio.mean(1).detach())
    per_image = torch.cat(out)
    return per_image.mean() if reduce else per_image

"""The soundness gate of every `sat`: execute a candidate again in float64 and check it against the spec.

Decision (documented in docs/check.md): the candidate is first clipped to the box of the disjunct it was
aimed at (so the input lies in the region with tolerance 0), then the graph runs in float64 and
`Disjunct.holds(x, y, tol=0)` must be true for some disjunct: C y <= d exactly, no output tolerance. A
tolerance would let `sat` be claimed for points that are not violations; attacks keep descending below
zero, so exact checking costs almost nothing in success rate.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from verify.graph.ir import Graph
from verify.spec.spec import Spec


@dataclass
class Counterexample:
    """A float64-verified violation: flattened input x, flattened output y, index of the violated disjunct."""

    x: np.ndarray
    y: np.ndarray
    disjunct: int


def execute64(graph: Graph, x: np.ndarray | torch.Tensor) -> np.ndarray:
    """Flattened float64 outputs (N, n_out) of the graph on flattened inputs (N, n_in)."""
    xt = torch.as_tensor(np.asarray(x, dtype=np.float64) if not isinstance(x, torch.Tensor) else x,
                         dtype=torch.float64)
    if xt.dim() == 1:
        xt = xt.unsqueeze(0)
    with torch.no_grad():
        return graph.forward_flat(xt.detach().to(torch.float64)).numpy()


def verify_candidates(graph: Graph, spec: Spec, x: np.ndarray | torch.Tensor,
                      disjunct: np.ndarray | torch.Tensor | None = None) -> Counterexample | None:
    """First candidate (row of x) that is a float64-verified violation, or None.

    `disjunct` (N,) names the disjunct whose box each candidate is clipped into; without it each
    candidate is checked as given (no clipping)."""
    xs = np.array(x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else x, dtype=np.float64)
    xs = xs.reshape(xs.shape[0] if xs.ndim > 1 else 1, -1)
    if disjunct is not None:
        idx = np.asarray(disjunct.cpu().numpy() if isinstance(disjunct, torch.Tensor) else disjunct).reshape(-1)
        lo = np.stack([spec.disjuncts[j].lower for j in idx]).astype(np.float64)
        hi = np.stack([spec.disjuncts[j].upper for j in idx]).astype(np.float64)
        xs = np.minimum(np.maximum(xs, lo), hi)
    ys = execute64(graph, xs)
    # vectorised screen over all candidates, then the spec's own `holds` on the winner
    hit = np.full(xs.shape[0], -1)
    for j, dj in enumerate(spec.disjuncts):
        in_box = np.all((xs >= dj.lower) & (xs <= dj.upper), axis=1)
        sat = np.all(ys @ np.asarray(dj.C, dtype=np.float64).reshape(-1, ys.shape[1]).T <= dj.d, axis=1)
        hit = np.where((hit < 0) & in_box & sat, j, hit)
    for i in np.flatnonzero(hit >= 0):
        # re-run the winner alone: batched float64 results can differ in the last bit from a single run,
        # and the single run is what a user (or the result file's reader) reproduces
        y1 = execute64(graph, xs[i:i + 1])[0]
        for j, dj in enumerate(spec.disjuncts):
            if dj.holds(xs[i], y1, tol=0.0):
                return Counterexample(xs[i].copy(), y1, j)
    return None

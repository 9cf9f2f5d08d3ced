"""Projected gradient descent on the margin objective, batched over restarts and disjuncts.

Each row of the batch is one restart aimed at one disjunct j: it minimises max_i (C_j y - d_j)_i over
the box of j with signed-gradient steps scaled by the box width per input dimension (so inputs with very
different ranges move alike), a cosine-decaying step size, and projection (clipping) onto the box after
every step. Rows whose margin comes close to zero are handed to `on_candidates`, which re-checks them in
float64 and may stop the search.
"""
from __future__ import annotations

import math
import time
from typing import Callable

import torch

from verify.attack.objective import PackedSpec, margins
from verify.graph.ir import Graph

# a row is re-checked in float64 when its working-precision margin is below this, relative to |y|
CANDIDATE_RTOL = 1e-5
# at most this many rows are re-checked per step (the smallest margins first)
CANDIDATES_PER_STEP = 16


def pgd(graph: Graph, packed: PackedSpec, x0: torch.Tensor, disjunct: torch.Tensor, steps: int,
        deadline: float, on_candidates: Callable[[torch.Tensor, torch.Tensor], bool],
        step0: float = 0.1) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """Run `steps` PGD steps from x0 (N, n_in), row i aimed at disjunct[i].

    Returns (best x per row, best margin per row, stopped) where `stopped` is True when
    `on_candidates(x_rows, disjunct_rows)` returned True (a verified violation) or the deadline passed."""
    lo, hi = packed.lower[disjunct], packed.upper[disjunct]
    width = hi - lo
    x = x0.clone()
    best_x = x0.clone()
    best_m = torch.full((x0.shape[0],), float("inf"), dtype=x0.dtype)
    for t in range(steps):
        if time.perf_counter() > deadline:
            return best_x, best_m, True
        x.requires_grad_(True)
        y = graph.forward_flat(x)
        m = margins(packed, y, disjunct)
        with torch.no_grad():
            md = m.detach()
            better = md < best_m
            best_m = torch.where(better, md, best_m)
            best_x = torch.where(better.unsqueeze(1), x.detach(), best_x)
            thr = CANDIDATE_RTOL * (1.0 + y.detach().abs().amax(dim=1))
            cand = torch.nonzero(md <= thr).flatten()
            if cand.numel():
                cand = cand[torch.argsort(md[cand])][:CANDIDATES_PER_STEP]
                if on_candidates(x.detach()[cand], disjunct[cand]):
                    return best_x, best_m, True
        finite = torch.isfinite(m)
        if not bool(finite.any()):
            break
        (grad,) = torch.autograd.grad(m[finite].sum(), x)
        with torch.no_grad():
            eta = step0 * (0.02 + 0.98 * 0.5 * (1.0 + math.cos(math.pi * t / max(steps - 1, 1))))
            g = torch.nan_to_num(grad).sign()
            x = torch.minimum(torch.maximum(x.detach() - eta * width * g, lo), hi)
    return best_x, best_m, False

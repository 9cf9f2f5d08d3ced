"""The verification driver after falsification: incomplete bounds, then branch and bound.

`prove(graph, spec, settings, deadline)` handles each input region of the spec in turn: α-CROWN (or the
chosen method) on the whole region first; if that does not settle it and branch and bound is enabled, input
splitting for low-dimensional inputs, otherwise activation splitting (β-CROWN for ReLUs, GenBaB for
general nonlinearities; `verify.bab.activation_split`). The answer is honest: `unsat`
only when every region is verified, `sat` with a candidate the caller re-checks by execution, and
`unknown`/`timeout` otherwise.
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass

import numpy as np
import torch

from verify.bab.activation_split import Root, activation_split_search
from verify.bab.input_split import input_split_search
from verify.bab.objective import Objective
from verify.bounds import AlphaOptions, alpha_crown, engine_for
from verify.graph.ir import Graph
from verify.spec.spec import Spec

# a float32 bound must exceed this to count as a proof (covers float32 rounding in the bound computation)
FLOAT32_MARGIN = 1e-4


@dataclass
class ProveResult:
    verdict: str
    x: np.ndarray | None = None
    domains: int = 0
    note: str = ""


def _progress_printer(enabled: bool, t0: float):
    if not enabled:
        return None
    last = [0.0]

    def report(domains: int, left: int, worst: float) -> None:
        now = time.perf_counter()
        if now - last[0] >= 1.0:
            last[0] = now
            sys.stderr.write(f"[bab] {now - t0:7.1f}s  visited {domains}  left {left}  worst bound {worst:.4g}\n")
    return report


def incomplete_bounds(engine, obj: Objective, lower: torch.Tensor, upper: torch.Tensor, method: str,
                      settings, deadline: float):
    """Lower bounds (1, R) of C·y - d over the region by the chosen method, and (for α-CROWN) the
    optimised intermediate bounds and output-objective α, which the activation-split search reuses as
    its root (every domain's α starts from the root's)."""
    C = obj.C.unsqueeze(0)
    L, U = lower.reshape(1, -1), upper.reshape(1, -1)
    if method in ("ibp", "crown"):
        with torch.no_grad():
            return engine.compute(L, U, C, method=method) - obj.d, None
    budget = max(0.0, min(deadline - time.perf_counter(), settings.timeout * 0.5))
    opts = AlphaOptions(iterations=settings.alpha_iters, lr=settings.lr, time_budget=budget,
                        optimize_intermediate=engine.graph.input_size > settings.input_split_max_dim)
    lb, bounds, alphas = alpha_crown(engine, L, U, C, opts, shift=obj.d, return_state=True)
    root = Root.from_alpha_crown(lb, bounds, alphas) if opts.optimize_intermediate else None
    return lb, root


def _detached(graph: Graph) -> Graph:
    """The graph with trainable parameters detached (verification needs no gradients w.r.t. weights)."""
    if not any(t.requires_grad for t in graph.constants.values()):
        return graph
    g = graph.copy()
    g.constants = {k: v.detach() for k, v in g.constants.items()}
    return g


def prove(graph: Graph, spec: Spec, settings, deadline: float) -> ProveResult:
    t0 = time.perf_counter()
    graph = _detached(graph)
    engine = engine_for(graph)
    small = graph.input_size <= settings.input_split_max_dim
    dtype = torch.float64 if (small or settings.dtype == "float64") else torch.float32
    progress = _progress_printer(settings.verbose or settings.progress, t0)
    total_domains = 0
    worst_verdict = "unsat"
    notes = []

    def confirm(x: torch.Tensor) -> bool:
        xs = torch.as_tensor(np.asarray(x.detach().cpu() if torch.is_tensor(x) else x, dtype=np.float64)).reshape(1, -1)
        with torch.no_grad():
            y = graph.forward_flat(xs)[0].numpy()
        return spec.violated_by(xs[0].numpy(), y)

    for lower_np, upper_np, terms in spec.regions():
        obj = Objective(terms, dtype)
        lower = torch.as_tensor(lower_np, dtype=dtype)
        upper = torch.as_tensor(upper_np, dtype=dtype)
        lb, root = incomplete_bounds(engine, obj, lower, upper, settings.method, settings, deadline)
        total_domains += 1
        if bool(obj.score(lb)[0] > (0.0 if dtype == torch.float64 else FLOAT32_MARGIN)):
            continue
        if settings.no_bab:
            worst_verdict = "unknown"
            notes.append(f"{settings.method} bound {obj.score(lb)[0].item():.4g} <= 0; branch and bound disabled")
            continue
        if time.perf_counter() >= deadline:
            return ProveResult("timeout", domains=total_domains, note="timeout after incomplete bounds")
        use_input_split = settings.split == "input" or (settings.split == "auto" and small)
        if use_input_split:
            res = input_split_search(engine, obj, lower, upper, deadline, settings.batch_size,
                                     settings.max_domains, progress, confirm)
        else:
            res = activation_split_search(engine, obj, lower, upper, deadline, settings, progress, confirm,
                                          tol=0.0 if dtype == torch.float64 else FLOAT32_MARGIN, root=root,
                                          branching=settings.branching)
        total_domains += res.domains
        if res.verdict == "sat":
            return ProveResult("sat", x=res.x.detach().cpu().numpy().astype(np.float64), domains=total_domains)
        if res.verdict != "unsat":
            if res.verdict == "timeout":
                return ProveResult("timeout", domains=total_domains, note=res.note)
            worst_verdict = "unknown"
            notes.append(res.note)
    return ProveResult(worst_verdict, domains=total_domains, note="; ".join(n for n in notes if n))

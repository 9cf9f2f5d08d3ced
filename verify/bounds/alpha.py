"""α-CROWN: optimise the relaxation parameters of the nonlinearities by gradient ascent on the bound.

Every unary rule with `has_alpha` exposes a parameter (ReLU lower slopes, S-shaped tangent points) whose
every value in its valid set gives a sound relaxation; so every iterate gives a valid bound and we keep the
element-wise best. The final objective gets one parameter per objective row (B, S, *shape); with
`optimize_intermediate`, every intermediate bound computation gets its own (shared across its rows) and
the whole CROWN sweep is differentiated.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from verify.bounds.crown import BoundEngine, RowAlphas, Splits
from verify.bounds.optim import Adam

# per-row intermediate parameters (RowAlphas) are used while they need at most this many elements in all;
# past it every intermediate value shares one parameter per neuron across its rows
ROW_ALPHA_MAX_ELEMENTS = 1 << 24


@dataclass
class AlphaOptions:
    iterations: int = 20
    lr: float = 0.1
    lr_decay: float = 0.98
    optimize_intermediate: bool = False
    time_budget: float | None = None  # seconds
    early_stop_patience: int = 5
    warmup: int = 10  # iterations before early stopping may trigger
    stop_when_positive: bool = True   # stop once every row's bound is > 0 (nothing more to prove)


def init_alphas(engine: BoundEngine, bounds: dict, B: int, S: int, optimize_intermediate: bool,
                ) -> dict:
    """Starting parameters: CROWN's default choices."""
    alphas: dict[str, dict[str, torch.Tensor]] = {"__output__": {}}
    for n in engine.unary_nodes:
        rule = engine.rules[n.name]
        if not rule.has_alpha:
            continue
        l, u = bounds[n.inputs[0]]
        a0 = rule.alpha_init(l.detach(), u.detach(), n.attrs)
        # per-row copy for the final objective: insert the S axis after the batch axis
        if a0.dim() == l.dim():  # one parameter per neuron (B, *shape)
            a_out = a0.unsqueeze(1).expand(B, S, *l.shape[1:]).clone()
        else:  # stacked parameters (P, B, *shape)
            a_out = a0.unsqueeze(2).expand(a0.shape[0], B, S, *l.shape[1:]).clone()
        alphas["__output__"][n.name] = a_out.requires_grad_()
    for n in engine.nodes:  # two-variable ops (McCormick mixing weights, (2, B, *out) -> (2, B, S, *out))
        rule = engine.rules[n.name]
        if engine.kind[n.name] != "binary" or not getattr(rule, "has_alpha", False):
            continue
        a0 = rule.alpha_init([_bounds_of(engine, bounds, i) for i in n.inputs])
        alphas["__output__"][n.name] = a0.unsqueeze(2).expand(a0.shape[0], B, S, *a0.shape[2:]).clone().requires_grad_()
    if optimize_intermediate:
        pairs = []  # (value, unary node, shared initial parameter)
        for v in engine.relaxed_inputs:
            if v == engine.graph.output:
                continue
            for n in engine.unary_nodes:
                if engine.index[n.name] >= engine.index.get(v, -1) or not engine.rules[n.name].has_alpha:
                    continue
                l, u = bounds[n.inputs[0]]
                pairs.append((v, n, l, engine.rules[n.name].alpha_init(l.detach(), u.detach(), n.attrs)))
        rows = {v: 2 * bounds[v][0][0].numel() for v, *_ in pairs}
        per_row = sum(a0.numel() * rows[v] for v, n, _, a0 in pairs
                      if engine.rules[n.name].row_alpha) <= ROW_ALPHA_MAX_ELEMENTS
        for v, n, l, a0 in pairs:
            group = alphas.setdefault(v, RowAlphas({}, {}) if per_row else {})
            if not (per_row and engine.rules[n.name].row_alpha):
                group[n.name] = a0.clone().requires_grad_()
                continue
            ax = 2 if a0.dim() > l.dim() else 1  # stacked parameters (P, B, *shape) get rows on axis 2
            group.axis[n.name] = ax
            group[n.name] = a0.unsqueeze(ax).expand(*a0.shape[:ax], rows[v], *a0.shape[ax:]).clone().requires_grad_()
    return alphas


def _bounds_of(engine: BoundEngine, bounds: dict, name: str):
    if name in bounds:
        return bounds[name]
    c = engine.graph.constants[name]
    return c, c


def _project(engine: BoundEngine, alphas: dict, bounds: dict) -> None:
    with torch.no_grad():
        for group in alphas.values():
            for name, a in group.items():
                node = engine.nodes[engine.index[name]]
                if engine.kind[name] == "binary":
                    a.copy_(engine.rules[name].alpha_project(a, [_bounds_of(engine, bounds, i) for i in node.inputs]))
                    continue
                l, u = bounds[node.inputs[0]]
                a.copy_(engine.rules[name].alpha_project(a, l, u, node.attrs))


def alpha_crown(engine: BoundEngine, lower: torch.Tensor, upper: torch.Tensor, C: torch.Tensor,
                opts: AlphaOptions | None = None, splits: Splits | None = None, betas: dict | None = None,
                return_state: bool = False,
                shift: torch.Tensor | None = None):
    """Optimised lower bounds of C·y (B, S) over the boxes. Never worse than CROWN's.

    `betas` (β-CROWN) are optimised jointly when given: {value: (beta tensor with requires_grad, sign)}.
    With `return_state`, also returns (best bounds dict of CROWN intermediate values, alphas).
    `shift` (S,) is subtracted from every row (bounds of C·y - shift, e.g. a spec's C·y - d).
    """
    opts = opts or AlphaOptions()
    t0 = time.perf_counter()
    B = lower.shape[0]
    C = C if C.dim() == 3 else C.unsqueeze(0).expand(B, -1, -1)
    S = C.shape[1]
    with torch.no_grad():
        lb0, bounds = engine.compute(lower, upper, C, splits=splits, return_bounds=True)
    if shift is None:
        shift = torch.zeros(C.shape[1], dtype=lb0.dtype, device=lb0.device)
    best = lb0 - shift
    alphas = init_alphas(engine, bounds, B, S, opts.optimize_intermediate)
    params = [a for g in alphas.values() for a in g.values()]
    scales = [getattr(engine.rules[name], "alpha_lr_scale", 1.0) for g in alphas.values() for name in g]
    if betas:
        params += [b for t in betas.values() for b in t[:2]]
        scales += [1.0] * (len(params) - len(scales))
    if not params or opts.iterations <= 0 or (opts.stop_when_positive and bool((best > 0).all())):
        return (best, bounds, alphas) if return_state else best
    optim = Adam(params, lr=opts.lr, lr_decay=opts.lr_decay, scales=scales)
    out_shape = engine.graph.shape_of(engine.graph.output)
    A0 = C.reshape(B, S, *out_shape).to(lower.dtype)
    stall = 0
    best_bounds = dict(bounds)
    for it in range(opts.iterations):
        if opts.optimize_intermediate:
            lb, cur_bounds = engine.compute(lower, upper, C, alphas=alphas, betas=betas, splits=splits,
                                            return_bounds=True)
            with torch.no_grad():  # every iterate's intermediate bounds are valid: keep their intersection
                for k, (l, u) in cur_bounds.items():
                    if k in best_bounds:
                        bl, bu = best_bounds[k]
                        best_bounds[k] = (torch.maximum(bl, l.detach()), torch.minimum(bu, u.detach()))
        else:
            cur_bounds = bounds
            lb = engine.backward(engine.graph.output, A0, bounds, lower, upper, alphas["__output__"], betas)
        lb = lb - shift
        improved = lb.detach() > best + 1e-8
        if improved.any():
            best = torch.maximum(best, lb.detach())
            stall = 0
        elif it >= opts.warmup:  # early iterates may be worse than CROWN's default choice: don't stop then
            stall += 1
        if opts.stop_when_positive and bool((best > 0).all()):
            break
        if stall >= opts.early_stop_patience:
            break
        if opts.time_budget is not None and time.perf_counter() - t0 > opts.time_budget:
            break
        loss = -lb.sum()
        optim.zero_grad()
        loss.backward()
        optim.step()
        _project(engine, alphas, cur_bounds if not opts.optimize_intermediate else bounds)
        if betas:
            with torch.no_grad():
                for t in betas.values():
                    for b in t[:2]:
                        b.clamp_(min=0)
    return (best, best_bounds, alphas) if return_state else best

"""Branch and bound over ReLU activation states with β-CROWN (for high-dimensional inputs).

A domain is a set of split constraints: for some ReLU inputs v_j, v_j >= 0 (active, +1) or v_j <= 0
(inactive, -1); held per domain as sign tensors, batched. Intermediate bounds come from the root's
α-CROWN pass (valid in every sub-domain) with split neurons clamped; each round bounds a batch of children
by optimising the output layer's α slopes and the β multipliers of the split constraints (β-CROWN: the
term -β·s·v_j is valid because s·v_j >= 0 holds on the domain). Branching: BaBSR-style scores from the
output's linear coefficients, computed while bounding (the relaxation intercept each unstable ReLU costs
the bound). Every round also tries the input that minimises each worst domain's linear bound as a
counterexample.
"""
from __future__ import annotations

import time

import torch

from verify.bab.input_split import SearchResult
from verify.bab.objective import Objective
from verify.bounds.alpha import AlphaOptions, alpha_crown
from verify.bounds.crown import BoundEngine


class ReluDomains:
    """Batched domain store: per ReLU input value a sign tensor (N, n_v) in {-1, 0, +1}."""

    def __init__(self, values: list[str], signs: dict[str, torch.Tensor], score: torch.Tensor,
                 branch: torch.Tensor):
        self.values = values
        self.signs = signs        # value -> (N, n_v) int8
        self.score = score        # (N,)
        self.branch = branch      # (N, 2): (value index, neuron index) chosen for the next split; -1 none

    def __len__(self) -> int:
        return self.score.shape[0]

    def take(self, idx: torch.Tensor) -> "ReluDomains":
        return ReluDomains(self.values, {v: s[idx] for v, s in self.signs.items()}, self.score[idx], self.branch[idx])

    @staticmethod
    def cat(a: "ReluDomains", b: "ReluDomains") -> "ReluDomains":
        return ReluDomains(a.values, {v: torch.cat([a.signs[v], b.signs[v]]) for v in a.values},
                           torch.cat([a.score, b.score]), torch.cat([a.branch, b.branch]))


def _relu_nodes(engine: BoundEngine):
    return [n for n in engine.unary_nodes if n.op in ("relu", "leakyrelu")]


def bound_domains(engine: BoundEngine, obj: Objective, root_bounds: dict, lower, upper, signs: dict,
                  relus, iters: int, lr: float, deadline: float):
    """Lower bounds of C·y - d (M, R) for M domains, plus their branching choice (M, 2)."""
    graph = engine.graph
    M = next(iter(signs.values())).shape[0]
    L = lower.reshape(1, -1).expand(M, -1)
    U = upper.reshape(1, -1).expand(M, -1)
    bounds = {}
    for k, (l, u) in root_bounds.items():
        bounds[k] = (l.expand(M, *l.shape[1:]), u.expand(M, *u.shape[1:]))
    for n in relus:
        v = n.inputs[0]
        s = signs[v].reshape(M, *graph.shape_of(v))
        l, u = bounds[v]
        bounds[v] = (torch.where(s > 0, l.clamp(min=0), l), torch.where(s < 0, u.clamp(max=0), u))
    R = obj.n_rows
    C = obj.C.unsqueeze(0).expand(M, -1, -1)
    A0 = C.reshape(M, R, *graph.shape_of(graph.output))
    alphas = {}
    for n in relus:
        l, u = bounds[n.inputs[0]]
        alphas[n.name] = engine.rules[n.name].alpha_init(l, u, n.attrs).unsqueeze(1).expand(M, R, *l.shape[1:]).clone().requires_grad_()
    betas = {}
    for n in relus:
        v = n.inputs[0]
        s = signs[v]
        if bool((s != 0).any()):
            shp = graph.shape_of(v)
            betas[v] = (torch.zeros(M, R, *shp, dtype=L.dtype, requires_grad=True), s.reshape(M, *shp).to(L.dtype))
    params = list(alphas.values()) + [b for b, _ in betas.values()]
    optim = torch.optim.Adam(params, lr=lr)
    best = None
    collect: dict = {}
    for it in range(max(1, iters)):
        collect = {}
        lb = engine.backward(graph.output, A0, bounds, L, U, alphas, betas, collect) - obj.d
        cur = lb.detach()
        best = cur if best is None else torch.maximum(best, cur)
        if it == iters - 1 or bool((obj.score(best) > 0).all()) or time.perf_counter() > deadline:
            break
        optim.zero_grad(set_to_none=True)
        (-lb.sum()).backward()
        optim.step()
        with torch.no_grad():
            for n in relus:
                alphas[n.name].clamp_(0.0, 1.0) if n.op == "relu" else alphas[n.name].copy_(
                    engine.rules[n.name].alpha_project(alphas[n.name], *bounds[n.inputs[0]], n.attrs))
            for b, _ in betas.values():
                b.clamp_(min=0)
    # BaBSR-style branching scores from the last pass
    with torch.no_grad():
        open_rows = (best <= 0).to(L.dtype)  # (M, R)
        best_score = torch.full((M,), -1.0, dtype=L.dtype)
        choice = torch.full((M, 2), -1, dtype=torch.long)
        for vi, n in enumerate(relus):
            v = n.inputs[0]
            l, u = bounds[v]
            lf, uf = l.reshape(M, -1), u.reshape(M, -1)
            A = collect.get(n.name)
            if A is None:
                continue
            A = A.detach().reshape(M, R, -1)
            unstable = (lf < 0) & (uf > 0) & (signs[v] == 0)
            den = torch.where(unstable, uf - lf, torch.ones_like(uf))
            intercept = torch.where(unstable, -uf * lf / den, torch.zeros_like(uf))
            w = (A.clamp(max=0).neg() * open_rows.unsqueeze(-1)).sum(1)  # (M, n)
            wabs = (A.abs() * open_rows.unsqueeze(-1)).sum(1)
            sc = w * intercept + 1e-3 * wabs * intercept
            sc = torch.where(unstable, sc, torch.full_like(sc, -1.0))
            m, j = sc.max(1)
            better = m > best_score
            best_score = torch.where(better, m, best_score)
            choice[better, 0] = vi
            choice[better, 1] = j[better]
        # domains with no unstable neuron left cannot be split further
        choice[best_score < 0] = -1
        A_in = collect.get(graph.input_name)
    return best, choice, (A_in.detach() if A_in is not None else None), L, U


def relu_split_search(engine: BoundEngine, obj: Objective, lower: torch.Tensor, upper: torch.Tensor,
                      deadline: float, settings, progress=None, confirm=None, tol: float = 0.0) -> SearchResult:
    graph = engine.graph
    relus = _relu_nodes(engine)
    if not relus:
        return SearchResult("unknown", note="no ReLU to split on")
    values = [n.inputs[0] for n in relus]
    L0, U0 = lower.reshape(1, -1), upper.reshape(1, -1)
    budget = max(0.0, (deadline - time.perf_counter()) * 0.3)
    opts = AlphaOptions(iterations=settings.alpha_iters, lr=settings.lr, time_budget=budget, optimize_intermediate=True)
    lb_root, root_bounds, _ = alpha_crown(engine, L0, U0, obj.C, opts, return_state=True, shift=obj.d)
    root_bounds = {k: (l.detach(), u.detach()) for k, (l, u) in root_bounds.items()}
    if bool(obj.score(lb_root)[0] > tol):
        return SearchResult("unsat", domains=1)
    signs = {v: torch.zeros(1, graph.shape_of(v) and int(torch.tensor(graph.shape_of(v)).prod()), dtype=torch.int8)
             for v in values}
    lb, choice, _, _, _ = bound_domains(engine, obj, root_bounds, lower, upper, signs, relus,
                                        settings.beta_iters, settings.lr, deadline)
    doms = ReluDomains(values, signs, obj.score(lb), choice)
    domains = 1
    half = max(1, settings.batch_size // 2)
    while True:
        n = len(doms)
        if n == 0:
            return SearchResult("unsat", domains=domains)
        if time.perf_counter() > deadline:
            return SearchResult("timeout", domains=domains, note=f"{n} domains left, worst bound {doms.score.min().item():.4g}")
        if n > settings.max_domains:
            return SearchResult("unknown", domains=domains, note=f"domain limit {settings.max_domains} reached")
        if bool((doms.branch[:, 0] < 0).any()):
            # a domain with every ReLU fixed is a linear program we do not solve exactly: stay honest
            return SearchResult("unknown", domains=domains, note="a fully split domain could not be verified")
        k = min(n, half)
        pick = torch.topk(doms.score, k, largest=False).indices
        keep = torch.ones(n, dtype=torch.bool)
        keep[pick] = False
        parents = doms.take(pick)
        rest = doms.take(keep.nonzero().flatten())
        child_signs = {}
        for vi, v in enumerate(values):
            s = parents.signs[v]
            pos, neg = s.clone(), s.clone()
            sel = parents.branch[:, 0] == vi
            rows = sel.nonzero().flatten()
            cols = parents.branch[sel, 1]
            pos[rows, cols] = 1
            neg[rows, cols] = -1
            child_signs[v] = torch.cat([pos, neg])
        with torch.enable_grad():
            clb, cchoice, A_in, Lc, Uc = bound_domains(engine, obj, root_bounds, lower, upper, child_signs, relus,
                                                       settings.beta_iters, settings.lr, deadline)
        cscore = torch.maximum(obj.score(clb), torch.cat([parents.score, parents.score]))
        domains += 2 * k
        # counterexample candidates: the box corner minimising each open child's linear bound (worst rows)
        if A_in is not None:
            worst_row = clb.argmin(1)
            a = A_in.reshape(A_in.shape[0], A_in.shape[1], -1)[torch.arange(A_in.shape[0]), worst_row]
            xs = torch.where(a >= 0, Lc, Uc)
            bad = obj.violated(graph.forward_flat(xs))
            for i in bad.nonzero().flatten().tolist()[:8]:
                if confirm is None or confirm(xs[i]):
                    return SearchResult("sat", x=xs[i], domains=domains)
        open_ = cscore <= tol
        children = ReluDomains(values, child_signs, cscore, cchoice).take(open_.nonzero().flatten())
        doms = ReluDomains.cat(rest, children)
        if progress is not None:
            progress(domains=domains, left=len(doms), worst=float(doms.score.min()) if len(doms) else 0.0)

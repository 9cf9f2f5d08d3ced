"""Branch and bound over activation inputs: β-CROWN for ReLUs, GenBaB for general nonlinearities.

A domain is a set of interval constraints lo_c <= v_j <= hi_c on the inputs v_j of nonlinear neurons
(a ReLU split at 0 gives v_j >= 0 or v_j <= 0; a sigmoid/tanh/sin/... neuron is split at a branching point
from the pre-optimised lookup tables, or its midpoint). Constraints are held per domain as batched tensors.
Bounding a batch of domains: the root's α-CROWN intermediate bounds (valid in every sub-domain) are
intersected with the domain's constraints, so every relaxation is built on the narrower interval; the
output layer's α parameters and the β multipliers of the constraints are then optimised (β-CROWN: the terms
-β_lo (v - lo_c) - β_hi (hi_c - v) are <= 0 on the domain, so the bound stays valid).

Both factors of a product of two variables can be split too (at their midpoint; the McCormick planes
then tighten on each half). Branching picks, per domain, the neuron with the largest estimated bound improvement: the output
coefficient mass |A_j| on that neuron times the gap between its upper and lower relaxation lines (what
splitting it would shrink) — for a ReLU this is BaBSR's intercept score. Each round also executes the box
corner that minimises each child's linear bound, as a counterexample candidate.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from verify.bab import lp
from verify.bab.input_split import SearchResult
from verify.bab.objective import DomainRows, Objective
from verify.bab.tables import split_points
from verify.bounds.alpha import AlphaOptions, alpha_crown, init_alphas
from verify.bounds.crown import BoundEngine, RowAlphas, Splits
from verify.bounds.optim import Adam
from verify.graph.ir import Node

# a neuron whose interval is narrower than this is not worth splitting
MIN_WIDTH = 1e-6
# domains whose intermediate bounds are refreshed per engine call (the deadline is checked between calls)
REFRESH_CHUNK = 64


class Domains:
    """Batched domain store: per split-able value, constraint tensors lo_c/hi_c (N, n_v) (±inf = none),
    the domain's score and chosen split, optionally its optimised α and β (`state`: name -> (N, ...)
    tensors kept in bfloat16) so that its children start where it ended, and the term of the objective it
    holds (`term` (N,), when each term is searched on its own; None: every domain holds every open term).
    `bounds` (value -> (l, u), each (N, n_v)), when intermediate bounds are refreshed, are each domain's own
    bounds of the split-able values: valid on the domain and passed on to its children (a child lies inside
    its parent), so tightening accumulates down the tree.

    The search removes a batch of parents and adds their open children every round while tens of thousands
    of domains wait: `pop` and `push` work in place on buffers with spare room (the attributes are views of
    their first N rows) and cost in proportion to the domains moved, not to N. Domains are unordered."""

    def __init__(self, lo: dict[str, torch.Tensor], hi: dict[str, torch.Tensor], score: torch.Tensor,
                 branch: torch.Tensor, state: dict[str, torch.Tensor] | None = None,
                 term: torch.Tensor | None = None, bounds: dict | None = None):
        self._n = score.shape[0]
        self._buf = {("lo", v): t for v, t in lo.items()} | {("hi", v): t for v, t in hi.items()}
        self._buf |= {("score",): score, ("branch",): branch}
        self._buf |= {("state", k): t for k, t in (state or {}).items()}
        if term is not None:
            self._buf[("term",)] = term
        for v, (l, u) in (bounds or {}).items():
            self._buf[("l", v)], self._buf[("u", v)] = l, u
        self._has_state, self._has_bounds = state is not None, bounds is not None
        self._owned = False  # the buffers are the caller's tensors (maybe views of others) until copied
        self._views()

    def _views(self) -> None:
        """Point the attributes at the first N rows of the buffers."""
        n, buf = self._n, self._buf
        self.lo = {k[1]: t[:n] for k, t in buf.items() if k[0] == "lo"}
        self.hi = {k[1]: t[:n] for k, t in buf.items() if k[0] == "hi"}
        self.score, self.branch = buf[("score",)][:n], buf[("branch",)][:n]
        self.term = buf[("term",)][:n] if ("term",) in buf else None
        self.state = {k[1]: t[:n] for k, t in buf.items() if k[0] == "state"} if self._has_state else None
        self.bounds = ({k[1]: (t[:n], buf[("u", k[1])][:n]) for k, t in buf.items() if k[0] == "l"}
                       if self._has_bounds else None)

    def __len__(self) -> int:
        return self._n

    def take(self, idx: torch.Tensor) -> "Domains":
        """A new store holding copies of domains `idx`."""
        state = None if self.state is None else {k: t[idx] for k, t in self.state.items()}
        bounds = None if self.bounds is None else {v: (l[idx], u[idx]) for v, (l, u) in self.bounds.items()}
        return Domains({v: t[idx] for v, t in self.lo.items()}, {v: t[idx] for v, t in self.hi.items()},
                       self.score[idx], self.branch[idx], state, None if self.term is None else self.term[idx],
                       bounds)

    def pop(self, idx: torch.Tensor) -> "Domains":
        """Remove domains `idx` (distinct) and return them: the surviving domains of the last len(idx) rows
        move into the holes the others leave."""
        out = self.take(idx)
        n, k = self._n, idx.numel()
        m = n - k
        gone = torch.zeros(n, dtype=torch.bool)
        gone[idx] = True
        holes = gone[:m].nonzero().flatten()
        movers = (~gone[m:]).nonzero().flatten() + m
        if holes.numel():
            self._own(n)
            for t in self._buf.values():
                t[holes] = t[movers]
        self._n = m
        self._views()
        return out

    def push(self, other: "Domains") -> None:
        """Append `other`'s domains. A β met only in one of the two is zero in the other; α/β state is kept
        only while both have it (the search drops it past its memory cap)."""
        n, m = self._n, len(other)
        if m == 0:
            return
        if other.state is None and self._has_state:
            self.drop_state()
        if other.bounds is None and self._has_bounds:  # without their own bounds all fall back to the root's
            self._buf = {k: t for k, t in self._buf.items() if k[0] not in ("l", "u")}
            self._has_bounds = False
        add = {("lo", v): t for v, t in other.lo.items()} | {("hi", v): t for v, t in other.hi.items()}
        add |= {("score",): other.score, ("branch",): other.branch}
        if other.term is not None:
            add[("term",)] = other.term
        if self._has_state:
            add |= {("state", k): t for k, t in other.state.items()}
        if self._has_bounds:
            for v, (l, u) in other.bounds.items():
                add[("l", v)], add[("u", v)] = l, u
        cap = next(iter(self._buf.values())).shape[0]
        # grow by half (amortised O(1) per domain) and at least to fit
        cap = self._own(cap if n + m <= cap else max(n + m, cap + cap // 2))
        for key, t in add.items():
            if key not in self._buf:  # e.g. a β first met in these domains: zero for the others
                self._buf[key] = t.new_zeros(cap, *t.shape[1:])
            self._buf[key][n:n + m] = t
        for key, t in self._buf.items():
            if key not in add:
                if key[0] != "state":
                    raise ValueError(f"domains to add lack {key}")
                t[n:n + m] = 0
        self._n = n + m
        self._views()

    def _own(self, cap: int) -> int:
        """Make the buffers this store's own, with room for `cap` domains (a copy when they are not yet
        its own or too small); returns their capacity."""
        have = next(iter(self._buf.values())).shape[0]
        if self._owned and have >= cap:
            return have
        n = self._n
        for key, t in self._buf.items():
            out = t.new_empty(cap, *t.shape[1:])
            out[:n] = t[:n]
            self._buf[key] = out
        self._owned = True
        return cap

    def drop_state(self) -> None:
        """Forget the α/β state (the children of these domains then start from the root's α)."""
        self._buf = {k: t for k, t in self._buf.items() if k[0] != "state"}
        self._has_state = False
        self._views()

    def state_bytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.state.values()) if self.state else 0


@dataclass
class Root:
    """What the search reuses from an α-CROWN pass over the whole region."""

    lb: torch.Tensor      # (1, R) lower bounds of the objective rows
    bounds: dict          # optimised intermediate bounds (valid in every sub-domain)
    alpha: dict           # output-objective α per unary node (per row)
    inter_alpha: dict     # intermediate-bound α per value (RowAlphas or shared): for refreshing domains' bounds

    @staticmethod
    def from_alpha_crown(lb: torch.Tensor, bounds: dict, alphas: dict) -> "Root":
        def detached(group):
            out = {k: a.detach() for k, a in group.items()}
            return RowAlphas(out, group.axis) if isinstance(group, RowAlphas) else out

        return Root(lb.detach(), {k: (l.detach(), u.detach()) for k, (l, u) in bounds.items()},
                    detached(alphas.get("__output__", {})),
                    {v: detached(g) for v, g in alphas.items() if v != "__output__"})


@dataclass(frozen=True)
class Candidate:
    """A value whose neurons may be split: the input of a unary nonlinearity `node`, or one factor of a
    product `node` of two variables (`other` is then the other factor)."""

    value: str
    node: Node
    other: str | None = None


def split_candidates(engine: BoundEngine) -> list[Candidate]:
    """Every value feeding a nonlinearity, once (by its first reader): inputs of unary nonlinear nodes and
    both factors of element-wise products of two variables."""
    seen, out = {engine.graph.input_name}, []
    for n in engine.nodes:
        kind = engine.kind[n.name]
        if kind == "unary" and n.inputs[0] not in seen:
            seen.add(n.inputs[0])
            out.append(Candidate(n.inputs[0], n))
        elif kind == "binary" and n.op == "mul":
            a, b = n.inputs
            if engine.graph.is_const(a) or engine.graph.is_const(b):
                continue
            if not (engine.graph.shape_of(a) == engine.graph.shape_of(b) == n.shape):
                continue  # broadcast products: not split (still bounded by McCormick planes)
            for v, o in ((a, b), (b, a)):
                if v not in seen:
                    seen.add(v)
                    out.append(Candidate(v, n, o))
    return out


def _constrained_bounds(engine, base_bounds, M, lo_c, hi_c, own: dict | None = None):
    """Bounds of every value on M domains: `base_bounds` (batch 1 or M) intersected with each domain's
    constraints lo_c <= v <= hi_c and, where given, its own bounds `own` (value -> (l, u), each (M, n_v):
    e.g. refreshed ones inherited from its parent)."""
    bounds = {}
    for k, (l, u) in base_bounds.items():
        l, u = l.expand(M, *l.shape[1:]), u.expand(M, *u.shape[1:])
        if k in lo_c:
            shp = l.shape
            l = torch.maximum(l, lo_c[k].reshape(shp).to(l.dtype))
            u = torch.minimum(u, hi_c[k].reshape(shp).to(u.dtype))
            if own is not None and k in own:
                l = torch.maximum(l, own[k][0].reshape(shp).to(l.dtype))
                u = torch.minimum(u, own[k][1].reshape(shp).to(u.dtype))
            u = torch.maximum(u, l)  # an empty intersection can only come from rounding: keep it valid
        bounds[k] = (l, u)
    return bounds


def split_signs(lo_c: dict, hi_c: dict) -> dict:
    """Sign constraints implied by interval constraints: +1 where lo_c >= 0 (v >= 0 holds), -1 where
    hi_c <= 0, 0 elsewhere (int8, same shapes)."""
    return {v: torch.where(lo_c[v] >= 0, 1, torch.where(hi_c[v] <= 0, -1, 0)).to(torch.int8) for v in lo_c}


def split_children(nodes: list[Candidate], lo: dict, hi: dict, branch: torch.Tensor, base_bounds: dict,
                   use_tables: bool = True) -> tuple[dict, dict]:
    """Constraints of the 2k children of k domains split at `branch` (k, 2) = (candidate index, neuron):
    children [0, k) take the lower part (v <= point), [k, 2k) the upper part (v >= point). The point is 0
    for ReLUs, the midpoint for product factors, and the lookup-table point (or midpoint) otherwise, on the
    neuron's current interval (`base_bounds`, batch 1 or k, intersected with the domain's constraints)."""
    k = branch.shape[0]
    c_lo, c_hi = {}, {}
    for ni, cand in enumerate(nodes):
        v, node = cand.value, cand.node
        lo_p, hi_p = lo[v], hi[v]
        left_hi, right_lo = hi_p.clone(), lo_p.clone()
        sel = (branch[:, 0] == ni).nonzero().flatten()
        if sel.numel():
            cols = branch[sel, 1]
            rl, ru = base_bounds[v]
            l_now = torch.maximum(rl.reshape(rl.shape[0], -1).expand(k, -1)[sel, cols], lo_p[sel, cols])
            u_now = torch.minimum(ru.reshape(ru.shape[0], -1).expand(k, -1)[sel, cols], hi_p[sel, cols])
            if cand.other is not None:  # a product factor: bisect
                point = (l_now + u_now) / 2
            elif node.op in ("relu", "leakyrelu"):
                point = torch.zeros_like(l_now)
            else:
                point = split_points(node.op, l_now, u_now, node.attrs, use_tables=use_tables)
                point = torch.minimum(torch.maximum(point, l_now), u_now)
            left_hi[sel, cols] = point
            right_lo[sel, cols] = point
        c_lo[v] = torch.cat([lo_p, right_lo])
        c_hi[v] = torch.cat([left_hi, hi_p])
    return c_lo, c_hi


def bound_domains(engine: BoundEngine, obj: Objective | DomainRows, root_bounds: dict, lower, upper, lo_c: dict, hi_c: dict,
                  nodes, iters: int, lr: float, deadline: float, refresh: dict | None = None, branching: str = "gap",
                  warm: dict | None = None, fsb: int = 1, use_tables: bool = True, beta_lr: float | None = None,
                  state: dict | None = None, patience: int = 3, refined: dict | None = None,
                  split_at: torch.Tensor | None = None, focus: dict | None = None, scores: dict | None = None,
                  term: torch.Tensor | None = None, early_below: float | None = None):
    """Lower bounds of C·y - d (M, R), branching choices (M, 2), the input coefficients for M domains,
    the box, the final α and β (`state`, bfloat16, for the children's warm start), and the bounds of the
    split-able values the domains were bounded with (value -> (l, u), each (M, n_v)).

    `warm` maps unary node names to starting α (one domain's worth, broadcast to all M), e.g. the root's
    optimised α: a good start matters because each domain gets only a few optimisation steps. `state`
    (per domain, e.g. the parents' final α and β) overrides it where given.
    `fsb` > 1 picks each domain's branching among its `fsb` best heuristic candidates by filtered smart
    branching (one CROWN pass per candidate and child); 1 takes the heuristic's best.
    `refined` (value -> (l, u), each (M, n_v)) are bounds known to hold on each domain (its parent's), used
    beside the root's. `refresh` (the root's intermediate α) recomputes the intermediate bounds under the
    domains' split signs; `split_at` (M,), the candidate index of each domain's newest split, lets it skip
    the values up to that split (nothing new constrains them); `focus` (value -> (M, n_v) mask) limits it
    to the masked neurons (`term` (M,): domains with equal terms share masks). Domains whose bound is
    below -`early_below` branch on their earliest unstable layer. `scores`, if given, receives the
    branching scores of every candidate neuron."""
    graph = engine.graph
    beta_lr = lr if beta_lr is None else beta_lr
    M = next(iter(lo_c.values())).shape[0]
    L = lower.reshape(1, -1).expand(M, -1)
    U = upper.reshape(1, -1).expand(M, -1)
    bounds = _constrained_bounds(engine, root_bounds, M, lo_c, hi_c, refined)
    if refresh is not None:
        bounds = _refresh_bounds(engine, obj, bounds, L, U, lo_c, hi_c, refresh, nodes, split_at, deadline, focus,
                                 term)
    R = obj.n_rows
    A0 = obj.spec(M).reshape(M, R, *graph.shape_of(graph.output))
    # per-row α of the unary nonlinearities (products keep their default McCormick planes here)
    alphas = {k: a for k, a in init_alphas(engine, bounds, M, R, False)["__output__"].items()
              if engine.kind[k] == "unary"}
    with torch.no_grad():  # start from the domain's own state, else the shared warm start, else CROWN's
        for name, a in alphas.items():
            if state and "a:" + name in state:
                start = state["a:" + name].to(a.dtype).movedim(0, _batch_axis(engine, name, a))
            elif warm and name in warm:
                start = warm[name].expand_as(a)
            else:
                continue
            node = engine.nodes[engine.index[name]]
            l, u = bounds[node.inputs[0]]
            a.copy_(engine.rules[name].alpha_project(start, l, u, node.attrs))
    betas, masks = {}, {}
    for cand in nodes:
        v = cand.value
        has_lo, has_hi = torch.isfinite(lo_c[v]), torch.isfinite(hi_c[v])
        if not bool(has_lo.any() or has_hi.any()):
            continue
        shp = graph.shape_of(v)
        z = torch.zeros((), dtype=L.dtype)
        lo_f = torch.where(has_lo, lo_c[v].to(L.dtype), z).reshape(M, *shp)
        hi_f = torch.where(has_hi, hi_c[v].to(L.dtype), z).reshape(M, *shp)
        b_lo = torch.zeros(M, R, *shp, dtype=L.dtype, requires_grad=True)
        b_hi = torch.zeros(M, R, *shp, dtype=L.dtype, requires_grad=True)
        betas[v] = (b_lo, b_hi, lo_f, hi_f)
        masks[v] = (has_lo.reshape(M, 1, *shp).to(L.dtype), has_hi.reshape(M, 1, *shp).to(L.dtype))
        if state and "bl:" + v in state:
            with torch.no_grad():
                b_lo.copy_(state["bl:" + v].to(L.dtype).reshape(b_lo.shape) * masks[v][0])
                b_hi.copy_(state["bh:" + v].to(L.dtype).reshape(b_hi.shape) * masks[v][1])
    # ReLUs inactive at the root stay so, unsplit, in every domain: the backward passes drop their columns
    # (`live`), and their α and β (which multiply zero) are optimised only on the live columns
    live = engine.live_neurons(root_bounds)
    full = {}  # parameter key -> (full-width tensor, live columns): to widen the results again
    proj_bounds = {}
    for name in list(alphas):
        cols = live.get(name)
        if cols is not None and alphas[name].shape[-1] > 1 and _batch_axis(engine, name, alphas[name]) == 0:
            full["a:" + name] = (alphas[name].detach(), cols)
            alphas[name] = alphas[name].detach().index_select(-1, cols).requires_grad_()
            l, u = bounds[engine.nodes[engine.index[name]].inputs[0]]
            proj_bounds[name] = (l.index_select(-1, cols), u.index_select(-1, cols))
    for cand in nodes:
        v, cols = cand.value, live.get(cand.node.name)
        if v in betas and cols is not None and cand.other is None:
            b_lo, b_hi, lo_f, hi_f = betas[v]
            full["bl:" + v], full["bh:" + v] = (b_lo.detach(), cols), (b_hi.detach(), cols)
            betas[v] = (b_lo.detach().index_select(-1, cols).requires_grad_(),
                        b_hi.detach().index_select(-1, cols).requires_grad_(), lo_f, hi_f)
            masks[v] = tuple(m.index_select(-1, cols) for m in masks[v])
    params = list(alphas.values()) + [b for t in betas.values() for b in t[:2]]
    # β and the ReLU slopes take `beta_lr`; other α (tangent points, slopes of S-shaped functions) keep
    # `lr` times their rule's scale: measured, a larger step helps the former and hurts the latter
    boost = beta_lr / lr
    scales = [getattr(engine.rules[name], "alpha_lr_scale", 1.0)
              * (boost if engine.nodes[engine.index[name]].op in ("relu", "leakyrelu") else 1.0) for name in alphas]
    scales += [boost] * (2 * len(betas))
    optim = Adam(params, lr=lr, scales=scales) if params else None
    best, collect = None, {}
    stall, best_total = 0, -torch.inf
    relax_cache: dict = {}  # the bounds stay fixed over the iterations: relaxations reuse their α-free parts
    for it in range(max(1, iters)):
        collect = {}
        lb = engine.backward(graph.output, A0, bounds, L, U, alphas, betas, collect, cache=relax_cache,
                              live=live) - obj.d
        cur = lb.detach()
        best = cur if best is None else torch.maximum(best, cur)
        total = float(obj.score(best).clamp(max=0).sum())
        stall = stall + 1 if total <= best_total + 1e-4 * abs(best_total) else 0
        best_total = max(best_total, total)
        if (optim is None or it == iters - 1 or stall >= patience or bool((obj.score(best) > 0).all())
                or time.perf_counter() > deadline):
            break
        optim.zero_grad()
        (-lb.sum()).backward()
        optim.step()
        with torch.no_grad():
            for n in engine.unary_nodes:
                if n.name in alphas:
                    l, u = proj_bounds.get(n.name) or bounds[n.inputs[0]]
                    alphas[n.name].copy_(engine.rules[n.name].alpha_project(alphas[n.name], l, u, n.attrs))
            for v, (b_lo, b_hi, _, _) in betas.items():
                b_lo.clamp_(min=0).mul_(masks[v][0])
                b_hi.clamp_(min=0).mul_(masks[v][1])

    def widened(key, t):
        """A parameter at full width again (the dropped columns keep their starting values)."""
        if key not in full:
            return t
        start, cols = full[key]
        return start.index_copy(-1, cols, t)

    with torch.no_grad():
        alphas = {k: widened("a:" + k, a.detach()) for k, a in alphas.items()}
        betas = {v: (widened("bl:" + v, t[0].detach()), widened("bh:" + v, t[1].detach()), t[2], t[3])
                 for v, t in betas.items()}
    early = None
    if early_below is not None:
        early = obj.score(best) < -early_below
    cands = _candidates(engine, obj, nodes, bounds, collect, best, M, R, branching, top=max(1, fsb), scores=scores,
                        early=early)
    if fsb > 1 and time.perf_counter() < deadline:
        choice = _strong_branching(engine, obj, nodes, bounds, cands, A0, L, U,
                                   {k: a.detach() for k, a in alphas.items()},
                                   {v: (t[0].detach(), t[1].detach(), t[2], t[3]) for v, t in betas.items()},
                                   use_tables)
    else:
        choice = cands[:, 0]
    A_in = collect.get(graph.input_name)
    final = {"a:" + k: a.detach().movedim(_batch_axis(engine, k, a), 0).to(torch.bfloat16) for k, a in alphas.items()}
    for v, (b_lo, b_hi, _, _) in betas.items():
        final["bl:" + v] = b_lo.detach().to(torch.bfloat16)
        final["bh:" + v] = b_hi.detach().to(torch.bfloat16)
    used = {c.value: (bounds[c.value][0].reshape(M, -1), bounds[c.value][1].reshape(M, -1)) for c in nodes}
    if refresh is not None:
        # refreshed bounds can contradict a domain's own split constraints (a split z >= 0 whose refreshed
        # upper bound, after a later split upstream, is < 0): no input reaches such a domain
        best = best.masked_fill(_empty(used).unsqueeze(1), torch.inf)
    return best, choice, (A_in.detach() if A_in is not None else None), L, U, final, used


def _empty(bounds: dict) -> torch.Tensor:
    """(M,) True for domains whose bounds (value -> (l, u), each (M, n)) have a neuron with l > u by more
    than float rounding could explain (1e-3 of 1 + |l| + |u|): lower bounds are sound, so no point of the
    domain attains l there, and upper ones likewise -- the domain is empty."""
    out = None
    for l, u in bounds.values():
        e = ((l - u) > 1e-3 * (1 + l.abs() + u.abs())).any(1)
        out = e if out is None else out | e
    return out


def _refresh_bounds(engine: BoundEngine, obj, bounds: dict, L, U, lo_c: dict, hi_c: dict, alphas: dict,
                    nodes, split_at: torch.Tensor | None, deadline: float, focus: dict | None = None,
                    term: torch.Tensor | None = None) -> dict:
    """The intermediate bounds of M domains recomputed by CROWN under their split signs with the root's
    optimised intermediate α, intersected with `bounds`: never looser, tighter downstream of a split.

    Domains are grouped by the candidate of their newest split (`split_at`): the values up to it keep the
    bounds they have (with parents' bounds passed down, those already hold every earlier split), so a split
    in a late layer costs only the layers after it. In chunks, so the deadline is checked between them: past
    it, the remaining domains keep the bounds they have (valid, only looser). `focus` (value -> (M, n_v)
    mask) picks the neurons re-bounded; domains of one `term` (M,) share it and are kept in the same
    chunks, so a chunk bounds the union of few masks."""
    graph = engine.graph
    M = L.shape[0]
    signs = split_signs(lo_c, hi_c)
    spec = obj.spec(M)
    if split_at is None:
        groups = [(torch.arange(M), ())]
    else:
        groups = []
        for c in split_at.unique().tolist():
            stop = engine.index.get(nodes[c].value, -1)
            idx = (split_at == c).nonzero().flatten()
            if term is not None:  # domains of one term share their focus: keep them in the same chunks
                idx = idx[torch.argsort(term[idx], stable=True)]
            groups.append((idx,
                           {n.name for n in engine.nodes if engine.index[n.name] <= stop}))
    order, parts = [], {k: ([], []) for k in bounds}
    for idx, keep in groups:
        for s0 in range(0, idx.numel(), REFRESH_CHUNK):
            sel = idx[s0:s0 + REFRESH_CHUNK]
            part = {k: (l[sel], u[sel]) for k, (l, u) in bounds.items()}
            if time.perf_counter() < deadline:
                n = sel.numel()
                with torch.no_grad():
                    _, fresh = engine.compute(L[sel], U[sel], spec[sel], method="crown", alphas=alphas,
                                              splits=Splits({v: t[sel].reshape(n, *graph.shape_of(v))
                                                             for v, t in signs.items()}),
                                              prior=part, return_bounds=True, intermediate="backward", keep=keep,
                                              focus=None if focus is None else {v: f[sel] for v, f in focus.items()})
                part = {k: fresh.get(k, b) for k, b in part.items()}
            order.append(sel)
            for k, (l, u) in part.items():
                parts[k][0].append(l)
                parts[k][1].append(u)
    back = torch.argsort(torch.cat(order))
    return {k: (torch.cat(ls)[back], torch.cat(us)[back]) for k, (ls, us) in parts.items()}


def _batch_axis(engine: BoundEngine, name: str, alpha: torch.Tensor) -> int:
    """The domain axis of a per-row α of unary node `name`: 0 for (B, S, *shape), 1 for stacked
    parameters (P, B, S, *shape)."""
    n_shape = len(engine.graph.shape_of(engine.nodes[engine.index[name]].inputs[0]))
    return 0 if alpha.dim() == n_shape + 2 else 1


def _row_alphas(engine: BoundEngine, alphas: dict | None, rows: torch.Tensor) -> dict | None:
    """The unary nodes' output-objective α (one domain's worth) restricted to the objective rows `rows`:
    (R,) for rows shared by every domain, or (M, r) for each domain's own rows (the result then has M on
    the batch axis). The row axis follows the batch axis; stacked parameters (P, B, S, ...) have it one
    later."""
    if not alphas:
        return None
    out = {}
    for name, a in alphas.items():
        if engine.kind[name] != "unary":
            continue
        ax = _batch_axis(engine, name, a)
        sel = a.index_select(ax + 1, rows.flatten())
        out[name] = sel if rows.dim() == 1 else sel.reshape(*sel.shape[:ax], *rows.shape, *sel.shape[ax + 2:])
    return out


@torch.no_grad()
def _candidates(engine, obj, nodes, bounds, collect, best, M, R, branching: str = "gap", top: int = 1,
                scores: dict | None = None, early: torch.Tensor | None = None):
    """(M, top, 2): the `top` best (candidate index, neuron index) per domain by heuristic score, best
    first; (-1, -1) where a domain has fewer candidates.

    "gap" (default; a BBPS-style estimate of the bound improvement): |A| times the gap between the
    relaxation lines at the interval midpoint. "width" (the BaBSR-style fallback for general neurons):
    |A| times the interval width, ignoring the function's shape. ReLUs always use BaBSR's intercept score.
    `scores`, if given, receives each candidate value's scores (M, n_v) (-1 where not a candidate).
    Domains marked in `early` (M,) take their candidates from the first value (in graph order) that has
    any: with refreshed intermediate bounds an early split tightens every later layer, which is what a
    domain far from verified needs; the score only ranks that value's neurons."""
    open_rows = (best <= 0).to(best.dtype).unsqueeze(-1)  # (M, R, 1)
    seen = torch.zeros(M, dtype=torch.bool)
    all_sc, all_id = [], []
    for ni, c in enumerate(nodes):
        n = c.node
        A = collect.get(n.name)
        if A is None:
            continue
        l, u = bounds[c.value]
        lf, uf = l.reshape(M, -1), u.reshape(M, -1)
        A = A.detach().reshape(M, R, -1)
        if c.other is not None:
            # a product's McCormick planes are off by at most (ux - lx)(uy - ly)/4 at the centre
            ol, ou = bounds[c.other]
            gap = (uf - lf) * (ou.reshape(M, -1) - ol.reshape(M, -1)) / 4
            gap = torch.nan_to_num(gap, nan=0.0, posinf=1e30).clamp(min=0)
            cand = ((uf - lf) > MIN_WIDTH) & (gap > 0)
            mass = (A.abs() * open_rows).sum(1)
        elif n.op in ("relu", "leakyrelu"):
            # BaBSR: the upper line's intercept -u·l/(u-l) costs the bound where the coefficient is negative
            cand = (lf < 0) & (uf > 0)
            gap = torch.where(cand, -uf * lf / torch.where(cand, uf - lf, torch.ones_like(uf)), torch.zeros_like(uf))
            mass = (A.clamp(max=0).neg() * open_rows).sum(1) + 1e-3 * (A.abs() * open_rows).sum(1)
        else:
            lw, lb, uw, ub = engine.rules[n.name].relax(l, u, n.attrs, None)
            mid = (lf + uf) / 2
            gap = (uw.reshape(M, -1) * mid + ub.reshape(M, -1)) - (lw.reshape(M, -1) * mid + lb.reshape(M, -1))
            gap = torch.nan_to_num(gap, nan=0.0, posinf=1e30).clamp(min=0)
            cand = ((uf - lf) > MIN_WIDTH) & (gap > 0)
            if branching == "width":
                gap = torch.where(cand, uf - lf, torch.zeros_like(gap))
            mass = (A.abs() * open_rows).sum(1)
        sc = torch.where(cand, mass * gap, torch.full_like(gap, -1.0))
        if scores is not None:
            scores[c.value] = sc
        if early is not None:  # these domains split in their earliest layer that has a candidate
            sc = torch.where((early & seen).unsqueeze(1), torch.full_like(sc, -1.0), sc)
            seen |= (sc >= 0).any(1)
        t = min(top, sc.shape[1])
        v, j = sc.topk(t, dim=1)
        all_sc.append(v)
        all_id.append(torch.stack([torch.full_like(j, ni), j], -1))
    choice = torch.full((M, top, 2), -1, dtype=torch.long)
    if not all_sc:
        return choice
    sc, ids = torch.cat(all_sc, 1), torch.cat(all_id, 1)
    t = min(top, sc.shape[1])
    v, k = sc.topk(t, dim=1)
    picked = ids.gather(1, k.unsqueeze(-1).expand(-1, -1, 2))
    picked[v < 0] = -1
    choice[:, :t] = picked
    return choice


@torch.no_grad()
def _strong_branching(engine, obj, nodes, bounds, cands, A0, L, U, alphas, betas, use_tables: bool = True):
    """Filtered smart branching (FSB): among each domain's heuristic candidates (M, K, 2), pick the one
    whose two children have the best worse-child bound, each child bounded by one CROWN pass with the
    domain's optimised α and β (the new split's β starts at 0). Returns (M, 2)."""
    M, K = cands.shape[:2]
    graph = engine.graph
    values = [c.value for c in nodes]
    lo = {v: torch.full((M, int(bounds[v][0][0].numel())), -torch.inf, dtype=L.dtype) for v in values}
    hi = {v: torch.full_like(lo[v], torch.inf) for v in values}
    rep = lambda t, axis: torch.cat([t, t], axis)  # noqa: E731  (two children per domain)
    be2 = {v: tuple(rep(t, 0) for t in b) for v, b in betas.items()}
    A2 = rep(A0, 0)
    d2 = obj.d if obj.d.dim() == 1 else rep(obj.d, 0)  # shared rows (R,) or each domain's own (M, r)
    best_val = torch.full((M,), -torch.inf, dtype=L.dtype)
    best_k = torch.zeros(M, dtype=torch.long)
    for k in range(K):
        branch = cands[:, k]
        valid = branch[:, 0] >= 0
        if not bool(valid.any()):
            break
        c_lo, c_hi = split_children(nodes, lo, hi, branch.clamp(min=0) * valid.unsqueeze(-1), bounds, use_tables)
        child_bounds = _constrained_bounds(engine, {key: (rep(l, 0), rep(u, 0)) for key, (l, u) in bounds.items()},
                                           2 * M, c_lo, c_hi)
        al = {}
        for name, a in alphas.items():
            node = engine.nodes[engine.index[name]]
            l, u = child_bounds[node.inputs[0]]
            al[name] = engine.rules[name].alpha_project(rep(a, _batch_axis(engine, name, a)), l, u, node.attrs)
        lb = engine.backward(graph.output, A2, child_bounds, rep(L, 0), rep(U, 0), al, be2) - d2
        worse = torch.minimum(*obj.score(lb).reshape(2, M))
        worse = torch.where(valid, worse, torch.full_like(worse, -torch.inf))
        better = worse > best_val
        best_val = torch.where(better, worse, best_val)
        best_k = torch.where(better, torch.full_like(best_k, k), best_k)
    return cands[torch.arange(M), best_k]


def _polish(engine: BoundEngine, nodes, objective_of, root_bounds: dict, lower, upper, lo_c: dict, hi_c: dict,
            term, score: torch.Tensor, state: dict, used: dict, settings, deadline: float, tol: float,
            use_tables: bool) -> torch.Tensor:
    """Scores of a batch of children after the near misses (score in (-polish_below, tol]) get
    `polish_iters` more α/β steps, continuing from their final α/β on the bounds they were bounded with
    (`used`, fixed: no refresh, so a step costs one backward pass over few domains). A child proven that
    way is never split; the others keep the regular steps' α/β for their own children. Any α/β give a
    sound bound, so the better of the two scores is kept."""
    near = ((score > -settings.polish_below) & (score <= tol)).nonzero().flatten()
    if near.numel() == 0 or time.perf_counter() > deadline:
        return score
    o, warm = objective_of(None if term is None else term[near])
    with torch.enable_grad():
        lb = bound_domains(engine, o, root_bounds, lower, upper, {v: t[near] for v, t in lo_c.items()},
                           {v: t[near] for v, t in hi_c.items()}, nodes, settings.polish_iters,
                           min(settings.lr, settings.polish_lr), deadline, warm=warm, use_tables=use_tables,
                           beta_lr=settings.polish_lr,
                           state={k: t[near] for k, t in state.items()}, patience=10,
                           refined={v: (l[near], u[near]) for v, (l, u) in used.items()})[0]
    return score.index_copy(0, near, torch.maximum(score[near], o.score(lb)))


def _lp_settle(engine: BoundEngine, obj: Objective, root_bounds: dict, lower, upper, doms: Domains,
               values: list[str], tol: float, confirm, deadline: float):
    """Decide fully split domains by linear programming (`verify.bab.lp`, ReLU networks only).

    Returns (mask of the domains proven, a confirmed counterexample or None)."""
    settled = torch.zeros(len(doms), dtype=torch.bool)
    if not lp.applicable(engine):
        return settled, None
    dt = torch.float64
    base = {k: (l.to(dt), u.to(dt)) for k, (l, u) in root_bounds.items()}
    for i in range(len(doms)):
        if time.perf_counter() > deadline:
            break
        lo_i = {v: doms.lo[v][i:i + 1].to(dt) for v in values}
        hi_i = {v: doms.hi[v][i:i + 1].to(dt) for v in values}
        own = None if doms.bounds is None else {v: (l[i:i + 1], u[i:i + 1]) for v, (l, u) in doms.bounds.items()}
        bounds = _constrained_bounds(engine, base, 1, lo_i, hi_i, own)  # with the domain's refreshed bounds
        signs = {v: s[0] for v, s in split_signs(lo_i, hi_i).items()}
        obj_i = obj if doms.term is None else obj.subset_terms(torch.arange(obj.n_terms) == doms.term[i])
        res = lp.solve_domain(engine, obj_i, bounds, lower, upper, signs, tol)
        if res is None:
            continue
        if res.verified:
            settled[i] = True
        elif res.x is not None:
            x = torch.as_tensor(res.x, dtype=dt)
            if confirm is None or confirm(x):
                return settled, x
    return settled, None


def activation_split_search(engine: BoundEngine, obj: Objective, lower: torch.Tensor, upper: torch.Tensor,
                            deadline: float, settings, progress=None, confirm=None, tol: float = 0.0,
                            use_tables: bool = True, branching: str = "gap", root=None) -> SearchResult:
    """Search until every domain is verified, a counterexample is confirmed, or time/memory runs out.

    `root` (a `Root`) is the α-CROWN pass already made on the whole
    region (the driver's incomplete step); without it the search makes its own."""
    nodes = split_candidates(engine)
    if not nodes:
        return SearchResult("unknown", note="no nonlinear neuron to split on")
    L0, U0 = lower.reshape(1, -1), upper.reshape(1, -1)
    if root is None:
        budget = max(0.0, (deadline - time.perf_counter()) * 0.3)
        opts = AlphaOptions(iterations=settings.alpha_iters, lr=settings.lr, time_budget=budget, optimize_intermediate=True)
        root = Root.from_alpha_crown(*alpha_crown(engine, L0, U0, obj.C, opts, return_state=True, shift=obj.d))
    lb_root = root.lb
    if bool(obj.score(lb_root)[0] > tol):
        return SearchResult("unsat", domains=1)
    # terms already verified at the root stay verified in every sub-domain: bound only the open ones
    obj = obj.open_terms(lb_root.detach().reshape(1, -1) - tol)
    return _search(engine, nodes, obj, root, lower, upper, deadline, settings, progress, confirm, tol,
                   use_tables, branching)


def _search(engine: BoundEngine, nodes: list[Candidate], obj: Objective, root: Root, lower: torch.Tensor,
            upper: torch.Tensor, deadline: float, settings, progress, confirm, tol: float, use_tables: bool,
            branching: str) -> SearchResult:
    """The branch-and-bound loop for the open terms `obj` (rows `obj.rows` of the root's objective).

    With `settings.per_term` (and more than one open term) each domain holds one term: the search starts
    from one domain per term, every domain is bounded on its own term's rows only (a backward pass costs
    in proportion to the rows, so this is up to T times cheaper per domain), branching serves that term
    alone, and the terms' domains still share each batch. Otherwise every domain holds every open term."""
    graph = engine.graph
    values = [c.value for c in nodes]
    root_bounds = root.bounds
    on = settings.refresh_intermediate
    if on is None:
        on = all(c.other is None and c.node.op == "relu" for c in nodes)
    refresh = root.inter_alpha if on else None
    term_rows = obj.padded_term_rows() if settings.per_term and obj.n_terms > 1 else None
    early_below = settings.early_split_below if refresh is not None else None

    def objective_of(term):
        """The objective and the root's α for a batch of domains holding terms `term` (None: all)."""
        o = obj if term is None else DomainRows(obj, term_rows[term])
        return o, _row_alphas(engine, root.alpha, o.rows)

    dtype = lower.dtype
    sizes = {v: int(torch.tensor(graph.shape_of(v)).prod()) for v in values}
    term = None if term_rows is None else torch.arange(obj.n_terms)
    n0 = 1 if term is None else obj.n_terms
    lo_c = {v: torch.full((n0, sizes[v]), -torch.inf, dtype=dtype) for v in values}
    hi_c = {v: torch.full((n0, sizes[v]), torch.inf, dtype=dtype) for v in values}
    o, warm = objective_of(term)
    scores: dict = {}
    with torch.enable_grad():
        lb, choice, _, _, _, state, used = bound_domains(
            engine, o, root_bounds, lower, upper, lo_c, hi_c, nodes, settings.beta_iters, settings.lr, deadline,
            branching=branching, warm=warm, fsb=settings.fsb, use_tables=use_tables, beta_lr=settings.bab_lr,
            scores=scores, early_below=early_below)
    keep_state = settings.warm_start_mb > 0
    doms = Domains(lo_c, hi_c, o.score(lb), choice, state if keep_state else None, term,
                   used if refresh is not None else None)
    # the neurons refreshed in every sub-domain of a term: its `refresh_top` best by the starting domain's
    # branching score (per value)
    focus = None
    if refresh is not None and settings.refresh_top > 0:
        focus = {}
        for v, sc in scores.items():
            t = min(settings.refresh_top, sc.shape[1])
            top = sc.topk(t, dim=1).indices
            focus[v] = torch.zeros_like(sc, dtype=torch.bool).scatter_(1, top, True) & (sc >= 0)
    domains = n0
    half = max(1, settings.batch_size // 2)
    while True:
        n = len(doms)
        if n == 0:
            return SearchResult("unsat", domains=domains)
        if time.perf_counter() > deadline:
            return SearchResult("timeout", domains=domains, note=f"{n} domains left, worst bound {doms.score.min().item():.4g}")
        if n > settings.max_domains:
            return SearchResult("unknown", domains=domains, note=f"domain limit {settings.max_domains} reached")
        stuck = doms.branch[:, 0] < 0
        if bool(stuck.any()):
            # nothing left to split: on a fully split ReLU domain the network is affine, so a linear program
            # decides it exactly; domains it leaves open (other nonlinearities, solver trouble) get a long
            # cold-started β optimisation (optimal β give the same bound) before the search gives up
            sd = doms.pop(stuck.nonzero().flatten())
            settled, x = _lp_settle(engine, obj, root_bounds, lower, upper, sd, values, tol, confirm, deadline)
            if x is not None:
                return SearchResult("sat", x=x, domains=domains)  # float64, as confirmed
            sd = sd.take((~settled).nonzero().flatten())
            if len(sd):
                o, warm = objective_of(sd.term)
                with torch.enable_grad():
                    slb = bound_domains(engine, o, root_bounds, lower, upper, sd.lo, sd.hi, nodes,
                                        25 * settings.beta_iters, settings.lr, deadline, warm=warm,
                                        use_tables=use_tables, beta_lr=settings.lr, patience=50,
                                        refined=sd.bounds)[0]
                if not bool((o.score(slb) > tol).all()):
                    return SearchResult("unknown", domains=domains,
                                        note="a domain with nothing left to split could not be verified")
            continue
        k = min(n, half)
        parents = doms.pop(torch.topk(doms.score, k, largest=False).indices)
        c_lo, c_hi = split_children(nodes, parents.lo, parents.hi, parents.branch,
                                    root_bounds if parents.bounds is None else parents.bounds, use_tables)
        # both children start from their parent's final α and β (the new split's β from 0)
        c_state = None if parents.state is None else {k: torch.cat([t, t]) for k, t in parents.state.items()}
        c_term = None if parents.term is None else torch.cat([parents.term, parents.term])
        o, warm = objective_of(c_term)
        with torch.enable_grad():
            clb, cchoice, A_in, Lc, Uc, state, used = bound_domains(
                engine, o, root_bounds, lower, upper, c_lo, c_hi, nodes, settings.beta_iters, settings.lr,
                deadline, branching=branching, warm=warm, fsb=settings.fsb, use_tables=use_tables,
                beta_lr=settings.bab_lr, state=c_state, refresh=refresh,
                refined=None if parents.bounds is None else {v: (torch.cat([l, l]), torch.cat([u, u]))
                                                             for v, (l, u) in parents.bounds.items()},
                split_at=torch.cat([parents.branch[:, 0], parents.branch[:, 0]]), term=c_term,
                early_below=early_below,
                focus=None if focus is None else {v: f[0 if c_term is None else c_term].expand(2 * k, -1)
                                                  for v, f in focus.items()})
        cscore = torch.maximum(o.score(clb), torch.cat([parents.score, parents.score]))
        if settings.polish_iters > 0:
            cscore = _polish(engine, nodes, objective_of, root_bounds, lower, upper, c_lo, c_hi, c_term, cscore,
                             state, used, settings, deadline, tol, use_tables)
        domains += 2 * k
        if A_in is not None:
            worst_row = clb.argmin(1)
            a = A_in.reshape(A_in.shape[0], A_in.shape[1], -1)[torch.arange(A_in.shape[0]), worst_row]
            xs = torch.where(a >= 0, Lc, Uc)
            with torch.no_grad():
                bad = obj.violated(graph.forward_flat(xs))
            for i in bad.nonzero().flatten().tolist()[:8]:
                if confirm is None or confirm(xs[i]):
                    return SearchResult("sat", x=xs[i], domains=domains)
        open_ = cscore <= tol
        children = Domains(c_lo, c_hi, cscore, cchoice, state if keep_state else None, c_term,
                           used if refresh is not None else None)
        children = children.take(open_.nonzero().flatten())
        doms.push(children)
        if keep_state and doms.state_bytes() > settings.warm_start_mb * 2**20:
            keep_state = False  # memory cap: from here on, domains start from the root's α and zero β
            doms.drop_state()
        if progress is not None:
            progress(domains=domains, left=len(doms), worst=float(doms.score.min()) if len(doms) else 0.0)

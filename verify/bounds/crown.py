"""CROWN: backward linear bound propagation over the graph IR, batched over sub-domains.

`BoundEngine(graph)` prepares a graph once; `engine.compute(lower, upper, C=...)` returns lower bounds of
every row of C·y over each box (stack [C; -C] for upper bounds). The sweep goes through the nodes in
topological order; every value that feeds a nonlinearity gets its bounds from IBP, tightened by a CROWN
backward pass from that value (only for the neurons whose relaxation depends on them, e.g. unstable
ReLUs). The last step is a backward pass from the output with the objective rows C.

Backward pass: a linear form A·v + bias is carried from a value v to the inputs of the node producing v.
Affine nodes map A exactly (A·W for linear layers, a vector-Jacobian product for every other affine op);
an element-wise nonlinearity uses its relaxation lines: A⁺ takes the lower line and A⁻ the upper one.
At the graph input the linear form is minimised over the box in closed form.

Optimisable parameters (α-CROWN) and β multipliers (β-CROWN) plug in through `alphas` / `betas`.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from verify.bounds.forward import forward_bounds
from verify.bounds.forward import supported as forward_supported
from verify.bounds.interval import node_ibp, rule_for
from verify.bounds.ops.linear import is_affine
from verify.errors import UnsupportedOpError
from verify.graph import ops as gops
from verify.graph.ir import Graph, Node

# ops whose output is exactly linear in the inputs (no constant offset): their backward adds no bias term
_NO_OFFSET = {"reshape", "transpose", "slice", "gather", "expand", "avgpool", "globalavgpool", "reducesum",
              "reducemean", "resize", "neg", "matmul"}


class RowAlphas(dict):
    """Relaxation parameters for one intermediate value's bounds with one copy per objective row.

    Maps unary node name -> tensor whose axis `axis[name]` has 2·n rows for the value's n neurons (lower
    bound of neuron j in row j, upper bound in row n + j); names missing from `axis` hold one shared
    parameter (no row axis). `_tighten` selects the rows of the neurons it bounds. Per-neuron parameters
    are what make α-CROWN's intermediate bounds tight on deep networks: one shared slope per ReLU has to
    serve every neuron of the next layers at once."""

    def __init__(self, tensors: dict[str, torch.Tensor], axis: dict[str, int]):
        super().__init__(tensors)
        self.axis = axis

    def rows(self, idx: torch.Tensor, n: int) -> dict[str, torch.Tensor]:
        sel = torch.cat([idx, idx + n])
        return {k: a.index_select(self.axis[k], sel) if k in self.axis else a for k, a in self.items()}


@dataclass
class Splits:
    """Per-domain sign constraints on pre-activation values: +1 means v >= 0, -1 means v <= 0, 0 free.

    `signs[value_name]` has shape (B, *shape) (int8 or float)."""

    signs: dict[str, torch.Tensor] = field(default_factory=dict)


class BoundEngine:
    """Prepared bound computation for one graph."""

    def __init__(self, graph: Graph):
        self.graph = graph
        self.nodes = list(graph.nodes)
        self.index = {n.name: i for i, n in enumerate(self.nodes)}
        self.rules = {}
        self.kind: dict[str, str] = {}
        for n in self.nodes:
            rule = rule_for(n)
            if hasattr(rule, "prepare"):  # rules that read constant inputs (e.g. pow's exponent) up front
                rule.prepare(n, graph)
            self.rules[n.name] = rule
            if is_affine(n, graph):
                self.kind[n.name] = "affine"
            elif rule.kind == "unary":
                self.kind[n.name] = "unary"
            else:
                self.kind[n.name] = rule.kind
                if rule.kind == "affine":  # an affine-registered op used nonlinearly (e.g. x*y)
                    raise UnsupportedOpError(n.op, n.name, detail="operator on two variables has no relaxation yet")
        # values whose bounds feed a relaxation -> the nonlinear nodes reading them
        self.relaxed_inputs: dict[str, list[Node]] = {}
        for n in self.nodes:
            if self.kind[n.name] != "affine":
                for i in n.inputs:
                    if not graph.is_const(i):
                        self.relaxed_inputs.setdefault(i, []).append(n)
        self.unary_nodes = [n for n in self.nodes if self.kind[n.name] == "unary"]
        self.forward_ok = forward_supported(self)
        # ReLUs whose input is a 1-D dense layer read by nothing else: backward passes may drop the columns
        # of neurons that are inactive in every domain of the batch (they contribute exactly zero)
        readers: dict[str, int] = {}
        for n in self.nodes:
            for i in n.inputs:
                readers[i] = readers.get(i, 0) + 1
        self.prunable = {n.name for n in self.nodes
                         if n.op == "relu" and readers.get(n.inputs[0]) == 1 and n.inputs[0] in self.index
                         and self.nodes[self.index[n.inputs[0]]].op == "linear"
                         and len(graph.shape_of(n.inputs[0])) == 1 and n.inputs[0] != graph.output}
        # ... of those, the ones whose output only a dense layer reads: that layer's backward step can
        # produce just the live columns, so the ReLU step never sees the dead ones
        self.prunable_out = {n.name: n for n in self.nodes
                             if n.name in self.prunable and readers.get(n.name) == 1}
        self.input_linear = self._find_input_linear(readers)

    def _find_input_linear(self, readers: dict[str, int]) -> str | None:
        """The dense layer that reads the graph input (through reshapes only, each read by nothing else),
        or None: its backward step can minimise over the input box directly (`_input_box_bound`)."""
        graph = self.graph
        v = graph.input_name
        while readers.get(v) == 1:
            node = next(n for n in self.nodes if v in n.inputs)
            if node.inputs[0] != v:
                return None
            if node.op == "linear" and len(graph.shape_of(v)) == 1:
                return node.name
            if node.op != "reshape" or any(not graph.is_const(i) for i in node.inputs[1:]):
                return None
            v = node.name
        return None

    # ----------------------------------------------------------------------------------- backward
    def backward(self, start: str, A0: torch.Tensor, bounds: dict, lower: torch.Tensor, upper: torch.Tensor,
                 alphas: dict[str, torch.Tensor] | None = None,
                 betas: dict[str, tuple[torch.Tensor, torch.Tensor]] | None = None,
                 collect: dict[str, torch.Tensor] | None = None, cache: dict | None = None,
                 live: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """Lower bound of A0·v_start over each box: returns (B, S).

        When `collect` is a dict, it receives the linear coefficients A of every value fully propagated
        (keyed by value name, plus the graph input), for branching heuristics; zero at the neurons dropped
        as inactive (see `live`), which are never branching candidates.

        `A0` has shape (B, S, *shape(start)). `alphas[node]` are relaxation parameters of unary nodes for
        this objective (per row: (B, S, *shape) or shared: (B, *shape)). `betas[value]` =
        (beta_lo, beta_hi, lo_c, hi_c): Lagrangian multipliers (B, S, *shape), >= 0 and zero where
        unconstrained, of split constraints lo_c <= value <= hi_c (B, *shape) that hold on each domain.
        `cache` (a dict kept by the caller across calls with the same `bounds`, e.g. the iterations of an
        optimiser) lets the relaxations reuse what does not depend on α.
        `live` (ReLU node name -> indices of its input neurons) names the only neurons of a prunable ReLU
        that may be active or split in any domain of the batch (e.g. those not inactive at the root of a
        search): the others' columns are dropped. That ReLU's α and the β on its input may then be given
        either full width or already restricted to those columns (last axis of length len(live[name])).
        Without it, and when neither `collect`, `cache` nor a β at the ReLU is given, the batch's own
        inactive neurons are dropped.
        """
        graph = self.graph
        B, S = A0.shape[:2]
        dtype, device = A0.dtype, A0.device
        As: dict[str, torch.Tensor] = {start: A0}
        bias = torch.zeros(B, S, dtype=dtype, device=device)
        stop = self.index.get(start, -1)
        kept: dict[str, torch.Tensor] = {}  # value -> the neuron indices its (pruned) A still has
        # dropping inactive ReLUs' columns (exact); not where A is collected for heuristics or the
        # relaxations are cached across calls
        prune = collect is None and cache is None and bool(self.prunable)
        for idx in range(stop, -1, -1):
            node = self.nodes[idx]
            A = As.pop(node.name, None)
            if A is None:
                continue
            cols = kept.get(node.name)  # A holds only these columns of the value (the rest are zero)
            if betas and node.name in betas:
                # split constraints lo_c <= v <= hi_c hold on the domain: f >= f - b_lo (v - lo_c) - b_hi (hi_c - v)
                b_lo, b_hi, lo_c, hi_c = betas[node.name]
                if cols is not None:
                    lo_c, hi_c = self._kept(cache, ("beta", node.name), cols, lo_c, hi_c)
                    if b_lo.shape[-1] != cols.numel():  # else given already restricted to the kept columns
                        b_lo, b_hi = b_lo.index_select(-1, cols), b_hi.index_select(-1, cols)
                A = A - b_lo + b_hi
                bias = bias + (b_lo * lo_c.unsqueeze(1)).flatten(2).sum(-1) - (b_hi * hi_c.unsqueeze(1)).flatten(2).sum(-1)
            if collect is not None:
                collect[node.name] = A if cols is None else A.new_zeros(
                    *A.shape[:-1], graph.shape_of(node.name)[-1]).index_copy(-1, cols, A)
            kind = self.kind[node.name]
            if kind == "affine":
                if node.name == self.input_linear and collect is None:
                    b_in = self._input_box_bound(node, A, cols, lower, upper)
                    if b_in is not None:  # nothing else reaches the input: the pass ends here
                        bias = bias + b_in
                        continue
                keep_in = None
                relu = self.prunable_out.get(node.inputs[0]) if node.op == "linear" else None
                if relu is not None:
                    keep_in = self._kept_columns(relu, bounds, live, prune, betas)
                    if keep_in is not None:
                        kept[relu.name] = keep_in
                bias = bias + self._affine_backward(node, A, As, kept.pop(node.name, None), keep_in)
            elif kind == "unary":
                src = node.inputs[0]
                l, u = bounds[src]
                alpha = alphas.get(node.name) if alphas else None
                rule = self.rules[node.name]
                cols = kept.pop(node.name, None)
                if cols is None and node.name in self.prunable and src not in As:
                    cols = self._kept_columns(node, bounds, live, prune, betas)
                    if cols is not None:
                        A = A.index_select(-1, cols)
                if cols is not None:  # keep only the neurons that may be active in some domain of the batch
                    kept[src] = cols
                    l, u = self._kept(cache, ("bounds", node.name), cols, l, u)
                    if alpha is not None and alpha.shape[-1] not in (1, cols.numel()):
                        alpha = alpha.index_select(-1, cols)
                if cache is None:
                    lw, lb, uw, ub = rule.relax(l, u, node.attrs, alpha)
                else:
                    lw, lb, uw, ub = rule.relax_cached(l, u, node.attrs, alpha, cache, node.name)
                lw_, uw_ = (t if t.dim() == A.dim() else t.unsqueeze(1) for t in (lw, uw))
                # A⁺·lw + A⁻·uw, written without a boolean mask: relu(A)·(lw - uw) + A·uw (boolean ops
                # and torch.where cost several times a float op on CPU); where a slope is infinite the
                # masked form keeps 0·inf out
                A_pos = torch.relu(A)
                if bool(torch.isfinite(lw_.sum() + uw_.sum())):  # a sum is finite only if every term is
                    A_next = torch.addcmul(A * uw_, A_pos, lw_ - uw_)
                else:
                    A_next = A * torch.where(A >= 0, lw_, uw_)
                self._accumulate(As, src, A_next)
                bias = bias + self._relax_bias(A, A_pos, lb, ub)
            elif kind == "binary":  # two-variable ops (products, quotients) with their own backward rule
                dtype_ = A.dtype
                in_bounds = [bounds[i] if i in bounds else (graph.const(i, dtype_, device),) * 2 for i in node.inputs]
                alpha = alphas.get(node.name) if alphas else None
                A_ins, b = self.rules[node.name].backward(A, in_bounds, alpha)
                bias = bias + b
                for name, Ai in zip(node.inputs, A_ins):
                    if not graph.is_const(name) and Ai is not None:
                        self._accumulate(As, name, Ai)
            else:  # pragma: no cover
                raise UnsupportedOpError(node.op, node.name)
        A_in = As.pop(graph.input_name, None)
        if A_in is None:
            return bias
        if collect is not None:
            collect[graph.input_name] = A_in
        centre = ((upper + lower) / 2).reshape(B, -1, 1)
        radius = ((upper - lower) / 2).reshape(B, -1, 1)
        A_in = A_in.reshape(B, S, -1)
        return bias + (torch.bmm(A_in, centre) - torch.bmm(A_in.abs(), radius)).squeeze(-1)

    def _input_box_bound(self, node: Node, A: torch.Tensor, kept: torch.Tensor | None, lower: torch.Tensor,
                         upper: torch.Tensor) -> torch.Tensor | None:
        """min over the input box of A·(W x + b) for the dense layer `node` reading the (reshaped) input, (B, S),
        when every domain of the batch has the same finite box (else None: the caller maps A to the input).

        A·W·x over the box is A·W·c - |A·W|·r; with a shared box this is A·(W c + b) - ‖A·(W diag r)‖₁, so the
        (B, S, n_in) product is made once and read once, instead of being multiplied with c and, through a
        separate |·|, with r. Bounding intermediate neurons of a dense net spends most of its time in this
        widest step. `kept`: A holds only these rows of W."""
        graph = self.graph
        B = lower.shape[0]
        lo, hi = lower.reshape(B, -1), upper.reshape(B, -1)
        if B > 1 and not (lo.stride(0) == 0 and hi.stride(0) == 0):
            if not (torch.equal(lo, lo[:1].expand_as(lo)) and torch.equal(hi, hi[:1].expand_as(hi))):
                return None
        c, r = (hi[0] + lo[0]) / 2, (hi[0] - lo[0]) / 2
        if not bool(torch.isfinite(r.sum() + c.sum())):
            return None
        W = graph.const(node.inputs[1], A.dtype, A.device)
        if kept is not None:
            W = W.index_select(0, kept)
        shift = W @ c
        if len(node.inputs) > 2:
            b = graph.const(node.inputs[2], A.dtype, A.device)
            shift = shift + (b if kept is None else b.index_select(0, kept))
        P = torch.matmul(A, W * r)
        P = P.abs() if P.requires_grad else P.abs_()
        return torch.matmul(A, shift) - P.sum(-1)

    @staticmethod
    def _relax_bias(A: torch.Tensor, A_pos: torch.Tensor, lb: torch.Tensor, ub: torch.Tensor) -> torch.Tensor:
        """Sum over neurons of A⁺·lb + A⁻·ub, shape (B, S), given A⁺ = relu(A); a batched matmul when
        offsets are shared by rows."""
        B, S = A.shape[:2]
        if lb.dim() == A.dim() - 1:  # offsets (B, *shape), shared by every row
            # A⁻·ub + A⁺·lb = A·ub + A⁺·(lb - ub): two batched matmuls, no A⁻ materialised
            has_lb = bool(lb.any())
            out = torch.bmm((A if has_lb else A - A_pos).reshape(B, S, -1), ub.reshape(B, -1, 1)).squeeze(-1)
            if has_lb:
                out = out + torch.bmm(A_pos.reshape(B, S, -1), (lb - ub).reshape(B, -1, 1)).squeeze(-1)
        else:
            out = (A_pos * lb + (A - A_pos) * ub).flatten(2).sum(-1)
        if bool(torch.isfinite(out).all()):  # no infinite offset took part (it would give ±inf or NaN)
            return out
        # infinite offsets (unbounded relaxations): 0 * inf must count as 0, not NaN
        pos = A >= 0
        lb_, ub_ = (t if t.dim() == A.dim() else t.unsqueeze(1) for t in (lb, ub))
        term = torch.where(pos, A * lb_, A * ub_)
        return torch.where(A == 0, torch.zeros((), dtype=A.dtype), term).flatten(2).sum(-1)

    @staticmethod
    def _kept(cache: dict | None, key, cols: torch.Tensor, *tensors: torch.Tensor) -> tuple:
        """`tensors` restricted to the columns `cols` (last axis). With a `cache` (kept across the calls of
        one optimisation, whose bounds and split constraints stay fixed) the gather is made once per
        (cols, tensors), not once per call."""
        if cache is None:
            return tuple(t.index_select(-1, cols) for t in tensors)
        hit = cache.get(key)
        if hit is None or hit[0] is not cols or any(a is not b for a, b in zip(hit[1], tensors)):
            hit = cache[key] = (cols, tensors, tuple(t.index_select(-1, cols) for t in tensors))
        return hit[2]

    @staticmethod
    def _accumulate(As: dict, name: str, A: torch.Tensor) -> None:
        prev = As.get(name)
        As[name] = A if prev is None else prev + A

    def live_neurons(self, bounds: dict) -> dict[str, torch.Tensor]:
        """For `backward(live=...)`: each prunable ReLU's input neurons not inactive under `bounds` (e.g. a
        search's root bounds, which every domain's bounds lie inside: a neuron inactive there is never
        split and never active), where enough are inactive to pay."""
        out = {}
        for name in self.prunable:
            src = self.nodes[self.index[name]].inputs[0]
            if src in bounds:
                cols = self._live_neurons(*bounds[src])
                if cols is not None:
                    out[name] = cols
        return out

    def _kept_columns(self, relu: Node, bounds: dict, live: dict | None, prune: bool,
                      betas: dict | None) -> torch.Tensor | None:
        """The input neurons of prunable ReLU `relu` a backward pass keeps (None: all): the caller's `live`
        set, else, when `prune` allows it and no β sits on the ReLU's input, the batch's own live neurons.
        Never with a β on the ReLU's output (its columns would not line up)."""
        if betas and relu.name in betas:
            return None
        if live and relu.name in live:
            return live[relu.name]
        if prune and not (betas and relu.inputs[0] in betas):
            return self._live_neurons(*bounds[relu.inputs[0]])
        return None

    @staticmethod
    def _live_neurons(l: torch.Tensor, u: torch.Tensor) -> torch.Tensor | None:
        """Indices of the ReLU inputs not provably inactive (u <= 0 and l < 0) in some domain of the batch, or None
        when too few are inactive everywhere for dropping them to pay. Inactive neurons have all-zero
        relaxation lines, so their columns of A contribute nothing further back."""
        dead = ((u <= 0) & (l < 0)).reshape(l.shape[0], -1).all(0)
        n_dead = int(dead.sum())
        if n_dead < 0.2 * dead.numel():
            return None
        return (~dead).nonzero().flatten()

    def _affine_backward(self, node: Node, A: torch.Tensor, As: dict, kept: torch.Tensor | None = None,
                         keep_in: torch.Tensor | None = None) -> torch.Tensor:
        """Map A through an affine node into its inputs; return the bias term (B, S). For a linear node,
        `kept`: A holds only these output neurons (the others' coefficients being zero); `keep_in`: produce
        only these input columns (the caller knows the others are multiplied by zero further back)."""
        graph = self.graph
        B, S = A.shape[:2]
        dtype, device = A.dtype, A.device
        if node.op == "linear":
            W = graph.const(node.inputs[1], dtype, device)
            if kept is not None:
                W = W.index_select(0, kept)
            if keep_in is not None:
                W = W.index_select(1, keep_in)
            self._accumulate(As, node.inputs[0], torch.matmul(A, W))
            if len(node.inputs) > 2:
                b = graph.const(node.inputs[2], dtype, device)
                if kept is not None:
                    b = b.index_select(0, kept)
                return (A * b).flatten(2).sum(-1)
            return torch.zeros(B, S, dtype=dtype, device=device)
        if node.op == "reshape":
            self._accumulate(As, node.inputs[0], A.reshape(B, S, *graph.shape_of(node.inputs[0])))
            return torch.zeros(B, S, dtype=dtype, device=device)
        # generic exact step: vector-Jacobian product of the affine map at zero
        var_idx = [k for k, name in enumerate(node.inputs) if not graph.is_const(name)]
        out_shape = A.shape[2:]
        A_flat = A.reshape(B * S, *out_shape)
        need_graph = A.requires_grad or any(graph.constants[n].requires_grad for n in node.inputs if graph.is_const(n))
        with torch.enable_grad():
            leaves, args = [], []
            for k, name in enumerate(node.inputs):
                if k in var_idx:
                    leaf = torch.zeros(1, *graph.shape_of(name), dtype=dtype, device=device, requires_grad=True)
                    leaves.append(leaf)
                    args.append(leaf.expand(B * S, *graph.shape_of(name)))
                else:
                    args.append(graph.const(name, dtype, device))
            y = gops.evaluate(node.op, args, node.attrs)
            grads = torch.autograd.grad(y, [args[k] for k in var_idx], A_flat,
                                        create_graph=need_graph, allow_unused=True)
        for k, g in zip(var_idx, grads):
            name = node.inputs[k]
            if g is None:
                continue
            self._accumulate(As, name, g.reshape(B, S, *graph.shape_of(name)))
        if node.op in _NO_OFFSET or (len(var_idx) == len(node.inputs) and node.op in ("add", "sub", "concat")):
            return torch.zeros(B, S, dtype=dtype, device=device)
        zero_args = [torch.zeros(1, *graph.shape_of(n), dtype=dtype, device=device) if k in var_idx
                     else graph.const(n, dtype, device) for k, n in enumerate(node.inputs)]
        y0 = gops.evaluate(node.op, zero_args, node.attrs)
        return (A * y0.reshape(1, 1, *out_shape)).flatten(2).sum(-1)

    # -------------------------------------------------------------------------------------- sweep
    def compute(self, lower: torch.Tensor, upper: torch.Tensor, C: torch.Tensor | None = None,
                method: str = "crown", alphas: dict | None = None, betas: dict | None = None,
                splits: Splits | None = None, return_bounds: bool = False,
                collect: dict | None = None, intermediate: str = "auto", prior: dict | None = None,
                keep=(), focus: dict | None = None):
        """Lower bounds of C·y over each box (B, S); with C None, returns (lower, upper) of the output.

        method: "ibp" (intervals only), "crown" (CROWN intermediate and final bounds), "crown-ibp"
        (IBP intermediate bounds, CROWN at the output). With "crown", `intermediate` picks how
        intermediate bounds are computed: "backward" (CROWN from each value), "forward" (forward-mode linear
        bounds, cheap for few inputs) or "auto" (forward when the input has <= 16 dimensions and every op
        supports it, unless α parameters for intermediate values are given). `alphas` maps a start value ("__output__" for the
        final objective, or an intermediate value name) to {unary node name: alpha tensor}.
        `prior` (value -> (l, u)) are bounds known to hold, intersected with the computed ones; the values
        named in `keep` are not tightened by CROWN (their prior is already as tight as it would make them),
        and where `focus` maps a value to a (B, n) mask, only the masked neurons of it are.
        """
        graph = self.graph
        B = lower.shape[0]
        lower = lower.reshape(B, *graph.input_shape)
        upper = upper.reshape(B, *graph.input_shape)
        signs = splits.signs if splits else {}
        if method == "crown" and intermediate == "auto":
            intermediate = "hybrid" if (graph.input_size <= 16 and self.forward_ok
                                        and not (alphas and len(alphas) > 1)) else "backward"
        fwd = None
        if method == "crown" and intermediate in ("forward", "hybrid"):
            fwd = forward_bounds(self, lower, upper, signs)
        if method == "crown" and intermediate == "forward":
            bounds, nodes = fwd, []
        else:
            bounds = {graph.input_name: (lower, upper)}
            nodes = self.nodes
        for node in nodes:
            l, u = node_ibp(graph, node, bounds, lower.dtype, lower.device)
            if fwd is not None:
                l, u = torch.maximum(l, fwd[node.name][0]), torch.minimum(u, fwd[node.name][1])
            if prior is not None and node.name in prior:
                l, u = torch.maximum(l, prior[node.name][0]), torch.minimum(u, prior[node.name][1])
            if (method == "crown" and node.name in self.relaxed_inputs and node.name != graph.output
                    and node.name not in keep):
                l, u = self._tighten(node, l, u, bounds, lower, upper,
                                     alphas.get(node.name) if alphas else None, signs,
                                     focus.get(node.name) if focus else None)
            s = signs.get(node.name)
            if s is not None:
                l = torch.where(s > 0, l.clamp(min=0), l)
                u = torch.where(s < 0, u.clamp(max=0), u)
            bounds[node.name] = (l, u)
        out = graph.output
        if method == "ibp":
            l, u = bounds[out]
            if C is None:
                return (l, u, bounds) if return_bounds else (l, u)
            lb = self._interval_objective(C, l.reshape(B, -1), u.reshape(B, -1))
            return (lb, bounds) if return_bounds else lb
        out_shape = graph.shape_of(out)
        n_out = graph.output_size
        if C is None:
            eye = torch.eye(n_out, dtype=lower.dtype, device=lower.device)
            Cfull = torch.cat([eye, -eye]).unsqueeze(0).expand(B, -1, -1)
        else:
            Cfull = C if C.dim() == 3 else C.unsqueeze(0).expand(B, -1, -1)
        A0 = Cfull.reshape(B, Cfull.shape[1], *out_shape).to(lower.dtype)
        a = alphas.get("__output__") if alphas else None
        lb = self.backward(out, A0, bounds, lower, upper, a, betas, collect)
        if C is None:
            l, u = lb[:, :n_out].reshape(B, *out_shape), (-lb[:, n_out:]).reshape(B, *out_shape)
            il, iu = bounds[out]
            l, u = torch.maximum(l, il), torch.minimum(u, iu)
            return (l, u, bounds) if return_bounds else (l, u)
        lb = torch.maximum(lb, self._interval_objective(Cfull, *(t.reshape(B, -1) for t in bounds[out])))
        return (lb, bounds) if return_bounds else lb

    @staticmethod
    def _interval_objective(C: torch.Tensor, l: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        C = C if C.dim() == 3 else C.unsqueeze(0)
        Cp, Cn = C.clamp(min=0), C.clamp(max=0)
        return (Cp * l.unsqueeze(1)).sum(-1) + (Cn * u.unsqueeze(1)).sum(-1)

    def _tighten(self, node: Node, l, u, bounds, lower, upper, alphas, signs, focus=None):
        """CROWN bounds for the neurons of `node` whose relaxation needs them (and that `focus`, a (B, n)
        mask, selects); intersect with IBP."""
        B = l.shape[0]
        need = torch.zeros_like(l, dtype=torch.bool)
        for consumer in self.relaxed_inputs[node.name]:
            rule = self.rules[consumer.name]
            if self.kind[consumer.name] == "unary":
                need |= rule.needs_bounds(l, u, consumer.attrs)
            else:
                need |= True
        s = signs.get(node.name)
        if s is not None:
            need &= s == 0
        needf = need.reshape(B, -1)
        if focus is not None:
            needf = needf & focus
        idx = needf.any(0).nonzero().flatten()
        k = idx.numel()
        if k == 0:
            return l, u
        n = l[0].numel()
        pairs = int(needf.sum())
        if alphas is None and B > 1 and pairs < 0.5 * B * k:
            return self._tighten_sparse(node, l, u, needf, bounds, lower, upper)
        if isinstance(alphas, RowAlphas):
            alphas = alphas.rows(idx, n)
        if node.op == "linear" and l.dim() == 2 and not self.graph.is_const(node.inputs[0]):
            # ±v_j of a dense layer is ±(W_j·x + b_j): start from the selected weight rows, shared by the batch,
            # instead of a batched product of unit rows with W
            W = self.graph.const(node.inputs[1], l.dtype, l.device).index_select(0, idx)
            src = node.inputs[0]
            A1 = torch.cat([W, -W]).unsqueeze(0).expand(B, -1, -1).reshape(B, 2 * k, *self.graph.shape_of(src))
            lb = self.backward(src, A1, bounds, lower, upper, alphas)
            if len(node.inputs) > 2:
                b = self.graph.const(node.inputs[2], l.dtype, l.device).index_select(0, idx)
                lb = lb + torch.cat([b, -b])
        else:
            A0 = torch.zeros(B, 2 * k, n, dtype=l.dtype, device=l.device)
            ar = torch.arange(k, device=l.device)
            A0[:, ar, idx] = 1.0
            A0[:, k + ar, idx] = -1.0
            lb = self.backward(node.name, A0.reshape(B, 2 * k, *l.shape[1:]), bounds, lower, upper, alphas)
        lf = l.reshape(B, -1)
        uf = u.reshape(B, -1)
        new_l = torch.maximum(lf[:, idx], lb[:, :k])
        new_u = torch.minimum(uf[:, idx], -lb[:, k:])
        lf = lf.index_copy(1, idx, new_l)
        uf = uf.index_copy(1, idx, new_u)
        return lf.reshape(l.shape), uf.reshape(u.shape)

    def _tighten_sparse(self, node: Node, l, u, needf, bounds, lower, upper):
        """CROWN bounds for exactly the (domain, neuron) pairs that need them: each pair becomes its own
        batch row (two objective rows: +v_j and -v_j) with its domain's bounds gathered. Cheaper than the
        dense form when each domain has few such neurons but their union over domains is large."""
        B = l.shape[0]
        bi, ji = needf.nonzero(as_tuple=True)
        R = bi.numel()
        n = needf.shape[1]
        A0 = torch.zeros(R, 2, n, dtype=l.dtype, device=l.device)
        ar = torch.arange(R, device=l.device)
        A0[ar, 0, ji] = 1.0
        A0[ar, 1, ji] = -1.0
        stop = self.index[node.name]
        gathered = {k: (v[0][bi], v[1][bi]) for k, v in bounds.items()
                    if k == self.graph.input_name or self.index.get(k, stop + 1) < stop}
        lb = self.backward(node.name, A0.reshape(R, 2, *l.shape[1:]), gathered, lower[bi], upper[bi])
        lf = l.reshape(B, -1).clone()
        uf = u.reshape(B, -1).clone()
        lf[bi, ji] = torch.maximum(lf[bi, ji], lb[:, 0])
        uf[bi, ji] = torch.minimum(uf[bi, ji], -lb[:, 1])
        return lf.reshape(l.shape), uf.reshape(u.shape)

"""The bound optimisers' fast paths give what the plain computations give.

The branch-and-bound inner loop reuses each ReLU relaxation's α-free part across iterations
(`relax_cached`), writes the backward step without boolean masks, and steps Adam with torch's fused
kernel; backward passes drop the columns of ReLUs inactive in every domain of the batch; each must agree
with the straightforward form it replaces.
"""
from __future__ import annotations

import pytest
import torch

from verify.bounds import optim
from verify.bounds.ops.base import RULES


@pytest.mark.parametrize("op,attrs", [("relu", {}), ("leakyrelu", {"alpha": 0.1})])
@pytest.mark.parametrize("per_row", [False, True])
def test_cached_relu_relaxation_equals_relax(op, attrs, per_row):
    rule = RULES[op]
    g = torch.Generator().manual_seed(0)
    l = torch.randn(6, 10, generator=g, dtype=torch.float64) * 2
    u = l + torch.rand(6, 10, generator=g, dtype=torch.float64) * 3
    l[0, 0], u[1, 1] = -torch.inf, torch.inf  # unbounded ends take the general path
    shape = (6, 3, 10) if per_row else (6, 10)
    cache = {}
    for _ in range(3):  # the second and third calls reuse the cache
        alpha = rule.alpha_project(torch.rand(*shape, generator=g, dtype=torch.float64), l, u, attrs)
        want = rule.relax(l, u, attrs, alpha)
        got = rule.relax_cached(l, u, attrs, alpha, cache, "n")
        for w, h in zip(want, got):
            assert torch.equal(w, h.expand_as(w)) or torch.allclose(w, h.expand_as(w), equal_nan=True)
    assert torch.equal(rule.relax_cached(l, u, attrs, None, cache, "n")[0], rule.relax(l, u, attrs, None)[0])


def _two_layer_case(seed: int, width: int = 16, inactive: int = 0):
    """A 4-input ReLU net with two hidden layers (float64; `inactive` first-layer neurons pushed far below
    0), its engine, five boxes, two objective rows per box, and the CROWN bounds of every value."""
    from verify.bounds.crown import BoundEngine
    from verify.importers.torch import load_torch

    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Linear(4, width), torch.nn.ReLU(), torch.nn.Linear(width, width),
                              torch.nn.ReLU(), torch.nn.Linear(width, 3)).double()
    with torch.no_grad():
        net[0].bias[:inactive] -= 10.0
    graph = load_torch(net, (4,))
    engine = BoundEngine(graph)
    L = torch.rand(5, 4, dtype=torch.float64) - 1
    U = L + torch.rand(5, 4, dtype=torch.float64)
    C = torch.randn(5, 2, 3, dtype=torch.float64)
    _, bounds = engine.compute(L, U, C, method="crown", return_bounds=True)
    return graph, engine, L, U, C, bounds


def test_backward_with_relaxation_cache_equals_plain_backward():
    graph, engine, L, U, C, bounds = _two_layer_case(1)
    plain = engine.backward(graph.output, C, bounds, L, U)
    cache = {}
    for _ in range(2):
        assert torch.allclose(engine.backward(graph.output, C, bounds, L, U, cache=cache), plain, atol=1e-12)


@pytest.mark.parametrize("per_row_alpha", [False, True])
def test_backward_dropping_inactive_relus_equals_plain_backward(per_row_alpha):
    # most first-layer neurons are inactive on the boxes, so pruning applies
    graph, engine, L, U, C, bounds = _two_layer_case(3, width=32, inactive=20)
    assert engine.prunable  # both ReLUs read a dense layer
    first = graph.nodes[[n.op for n in graph.nodes].index("relu")]
    l, u = bounds[first.inputs[0]]
    assert int(((u <= 0) & (l < 0)).all(0).sum()) >= 20
    alphas = None
    if per_row_alpha:
        alphas = {n.name: torch.rand(5, 2, 32, dtype=torch.float64) for n in engine.unary_nodes}
    pruned = engine.backward(graph.output, C, bounds, L, U, alphas)
    # sound on sampled points of each box: C·y(x) >= the pruned bound
    x = L.unsqueeze(1) + (U - L).unsqueeze(1) * torch.rand(5, 200, 4, dtype=torch.float64)
    y = graph.forward(x.reshape(-1, 4)).reshape(5, 200, 3)
    assert bool((torch.einsum("bro,bso->bsr", C, y) >= pruned.unsqueeze(1) - 1e-9).all())
    engine.prunable = set()
    plain = engine.backward(graph.output, C, bounds, L, U, alphas)
    assert torch.allclose(pruned, plain, atol=1e-10)
    _, plain_bounds = engine.compute(L, U, C, method="crown", return_bounds=True)
    for v, (lo, hi) in bounds.items():
        assert torch.allclose(lo, plain_bounds[v][0], atol=1e-10) and torch.allclose(hi, plain_bounds[v][1], atol=1e-10)


@pytest.mark.parametrize("flatten", [False, True])
def test_backward_minimises_over_a_shared_input_box_at_the_first_dense_layer(flatten):
    """With one box for the whole batch, the first dense layer's step minimises over it directly
    (A·(W c + b) - ‖A·W·diag r‖₁): the same bound as mapping A to the input and minimising there (which
    collecting A for branching forces), gradients included; different boxes take the plain path."""
    from verify.bounds.crown import BoundEngine
    from verify.importers.torch import load_torch

    torch.manual_seed(5)
    layers = [torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Linear(16, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3)]
    net = torch.nn.Sequential(*([torch.nn.Flatten()] if flatten else []), *layers).double()
    graph = load_torch(net, (1, 2, 2) if flatten else (4,))
    engine = BoundEngine(graph)
    assert engine.input_linear is not None
    taken = []
    direct = engine._input_box_bound
    engine._input_box_bound = lambda *a: taken.append(direct(*a) is not None) or direct(*a)
    L1 = torch.rand(1, *graph.input_shape, dtype=torch.float64) - 1
    U1 = L1 + torch.rand(1, *graph.input_shape, dtype=torch.float64)
    for L, U, shared in ((L1.expand(5, *L1.shape[1:]), U1.expand(5, *U1.shape[1:]), True),
                         (L1.repeat(5, *[1] * (L1.dim() - 1)), U1.repeat(5, *[1] * (U1.dim() - 1)), True),
                         (L1 - torch.rand(5, *L1.shape[1:], dtype=torch.float64), U1.expand(5, *U1.shape[1:]), False)):
        C = torch.randn(5, 2, 3, dtype=torch.float64, requires_grad=True)
        _, bounds = engine.compute(L, U, C.detach(), method="crown", return_bounds=True)
        taken.clear()
        fused = engine.backward(graph.output, C, bounds, L, U)
        assert taken == [shared]
        (g_fused,) = torch.autograd.grad(fused.sum(), C)
        plain = engine.backward(graph.output, C, bounds, L, U, collect={})
        (g_plain,) = torch.autograd.grad(plain.sum(), C)
        assert torch.allclose(fused, plain, atol=1e-10) and torch.allclose(g_fused, g_plain, atol=1e-10)
        x = L.unsqueeze(1) + (U - L).unsqueeze(1) * torch.rand(5, 100, *L.shape[1:], dtype=torch.float64)
        y = graph.forward(x.reshape(-1, *L.shape[1:])).reshape(5, 100, 3)
        assert bool((torch.einsum("bro,bso->bsr", C.detach(), y) >= fused.detach().unsqueeze(1) - 1e-9).all())


def test_backward_with_root_live_neurons_keeps_betas_collect_and_cache_exact():
    """The branch-and-bound objective pass drops the ReLUs inactive at the root (`live=`) while it
    collects A for branching, reuses cached relaxations and carries β of split neurons."""
    graph, engine, L, U, C, bounds = _two_layer_case(4, width=32, inactive=20)
    live = engine.live_neurons(bounds)
    assert live
    relu = next(n for n in graph.nodes if n.op == "relu" and n.name in live)
    src, n = relu.inputs[0], bounds[relu.inputs[0]][0].shape[-1]
    on = torch.zeros(n, dtype=torch.bool)
    on[live[relu.name]] = True
    b_lo = torch.rand(5, 2, n, dtype=torch.float64) * on  # β only where a split can be
    b_hi = torch.rand(5, 2, n, dtype=torch.float64) * on
    betas = {src: (b_lo, b_hi, torch.randn(5, n, dtype=torch.float64), torch.randn(5, n, dtype=torch.float64))}
    alphas = {m.name: torch.rand(5, 2, 32, dtype=torch.float64) for m in engine.unary_nodes}
    got_c, want_c = {}, {}
    got = engine.backward(graph.output, C, bounds, L, U, alphas, betas, got_c, cache={}, live=live)
    want = engine.backward(graph.output, C, bounds, L, U, alphas, betas, want_c, cache={})
    assert torch.allclose(got, want, atol=1e-10)
    assert set(got_c) == set(want_c)
    cols = {}  # collected A is zero at the dropped neurons (never branching candidates), exact elsewhere
    for m in graph.nodes:
        if m.name in live:
            cols[m.name] = cols[m.inputs[0]] = live[m.name]
    for k in want_c:
        assert got_c[k].shape == want_c[k].shape
        c = cols.get(k)
        g, w = (got_c[k], want_c[k]) if c is None else (got_c[k][..., c], want_c[k][..., c])
        assert torch.allclose(g, w, atol=1e-10)
        if c is not None:
            assert int((got_c[k] != 0).sum()) == int((g != 0).sum())


def test_backward_takes_alpha_and_beta_restricted_to_the_live_columns():
    """The search optimises a pruned ReLU's α and the β on its input only on the live columns: given
    so, the bound equals the full-width one, and a relaxation cache reused across calls (the optimiser's
    iterations) stays exact when the β values change."""
    graph, engine, L, U, C, bounds = _two_layer_case(5, width=32, inactive=20)
    live = engine.live_neurons(bounds)
    relu = next(n for n in graph.nodes if n.op == "relu" and n.name in live)
    src, cols = relu.inputs[0], live[relu.name]
    n = bounds[src][0].shape[-1]
    on = torch.zeros(n, dtype=torch.float64)
    on[cols] = 1.0
    alphas = {m.name: torch.rand(5, 2, 32, dtype=torch.float64) for m in engine.unary_nodes}
    lo_c, hi_c = torch.randn(5, n, dtype=torch.float64), torch.randn(5, n, dtype=torch.float64)
    cache: dict = {}
    for seed in range(2):
        torch.manual_seed(seed)
        b_lo, b_hi = torch.rand(5, 2, n, dtype=torch.float64) * on, torch.rand(5, 2, n, dtype=torch.float64) * on
        want = engine.backward(graph.output, C, bounds, L, U, alphas, {src: (b_lo, b_hi, lo_c, hi_c)}, live=live)
        narrow_a = dict(alphas)
        narrow_a[relu.name] = alphas[relu.name][..., cols]
        narrow_b = {src: (b_lo[..., cols], b_hi[..., cols], lo_c, hi_c)}
        got = engine.backward(graph.output, C, bounds, L, U, narrow_a, narrow_b, cache=cache, live=live)
        assert torch.allclose(got, want, atol=1e-10)


def test_fused_adam_step_equals_the_plain_loop(monkeypatch):
    g = torch.Generator().manual_seed(2)
    start = [torch.rand(4, 5, generator=g) for _ in range(3)]
    grads = [[torch.randn(4, 5, generator=g) for _ in start] for _ in range(6)]

    def run(fused: bool):
        monkeypatch.setattr(optim, "_FUSED", getattr(torch, "_fused_adam_", None) if fused else None)
        ps = [p.clone() for p in start]
        opt = optim.Adam(ps, lr=0.1, scales=[1.0, 0.5, 1.0], lr_decay=0.9)
        for k, step in enumerate(grads):
            for p, gr in zip(ps, step):
                p.grad = gr.clone()
            if k % 2:
                ps[2].grad = None  # a parameter without a gradient this step is left alone
            opt.step()
        return ps

    if getattr(torch, "_fused_adam_", None) is None:
        pytest.skip("this torch has no fused Adam kernel")
    for a, b in zip(run(True), run(False)):
        assert torch.allclose(a, b, atol=1e-6)

"""Branch and bound on small networks whose answer is known by dense enumeration.

A 2-input ReLU network's maximum over a box is pinned down by a fine grid plus a Lipschitz bound on the
grid spacing: a threshold below the grid maximum is certainly violated (sat); one above the grid maximum
plus the Lipschitz slack is certainly safe (unsat). Both search modes (input splitting, ReLU splitting
with β-CROWN) must give exactly those answers; every sat is re-checked by execution.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn

from verify.api import check, compute_bounds
from verify.importers.torch import load_torch
from verify.settings import Settings
from verify.spec.spec import Disjunct, Spec

torch.set_num_threads(1)


def _net(seed: int, hidden=(12, 12)):
    torch.manual_seed(seed)
    sizes = (2, *hidden, 1)
    layers = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers).double()


def _grid_max(module, lo, hi, n=401):
    xs = torch.stack(torch.meshgrid(torch.linspace(lo[0], hi[0], n, dtype=torch.float64),
                                    torch.linspace(lo[1], hi[1], n, dtype=torch.float64), indexing="ij"), -1)
    with torch.no_grad():
        y = module(xs.reshape(-1, 2)).reshape(-1)
    lip = 1.0
    for m in module:
        if isinstance(m, nn.Linear):
            lip *= torch.linalg.matrix_norm(m.weight, ord=2).item()
    spacing = max((hi[0] - lo[0]), (hi[1] - lo[1])) / (n - 1)
    return y.max().item(), lip * spacing * np.sqrt(2) / 2


def _spec_output_above(t: float, lo, hi) -> Spec:
    """Unsafe iff y >= t, i.e. -y <= -t."""
    return Spec(2, 1, [Disjunct(np.array(lo, float), np.array(hi, float), np.array([[-1.0]]), np.array([-t]))])


def _assert_known_answers(module, settings, frac: float = 0.05):
    """On [-1, 1]²: a threshold above the grid maximum plus its Lipschitz slack is unsat; one `frac` below
    the grid maximum is sat, with a counterexample inside the box that reaches it when executed."""
    g = load_torch(module, (2,))
    lo, hi = [-1.0, -1.0], [1.0, 1.0]
    ymax, slack = _grid_max(module, lo, hi)
    safe = check(g, _spec_output_above(ymax + slack + 1e-3, lo, hi), settings)
    assert safe.verdict == "unsat", safe.note
    unsafe_t = ymax - frac * max(1.0, abs(ymax))
    bad = check(g, _spec_output_above(unsafe_t, lo, hi), settings)
    assert bad.verdict == "sat"
    assert module(torch.as_tensor(bad.x).reshape(1, 2)).item() >= unsafe_t
    assert np.all(bad.x >= np.array(lo)) and np.all(bad.x <= np.array(hi))


@pytest.mark.parametrize("split", ["input", "activation"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_known_answers(split, seed):
    _assert_known_answers(_net(seed), Settings(timeout=30, split=split, attack_share=0.0, attack_min_s=0.0, seed=seed))


def test_disjunction_of_two_boxes_and_terms():
    """unsat needs every (box, term) pair verified; one violated pair makes it sat."""
    module = _net(5)
    g = load_torch(module, (2,))
    boxes = [([-1.0, -1.0], [0.0, 0.0]), ([0.0, 0.0], [1.0, 1.0])]
    maxes = [_grid_max(module, lo, hi) for lo, hi in boxes]
    t_safe = max(m + s for m, s in maxes) + 1e-3
    settings = Settings(timeout=30, split="input", attack_share=0.0, attack_min_s=0.0)
    dj = [Disjunct(np.array(lo), np.array(hi), np.array([[-1.0]]), np.array([-t_safe])) for lo, hi in boxes]
    # second term: y <= very low value (never true) -> still unsat overall
    dj += [Disjunct(np.array(lo), np.array(hi), np.array([[1.0]]), np.array([-1e6])) for lo, hi in boxes]
    assert check(g, Spec(2, 1, dj), settings).verdict == "unsat"
    lo2, hi2 = boxes[1]
    dj.append(Disjunct(np.array(lo2), np.array(hi2), np.array([[-1.0]]), np.array([-(maxes[1][0] - 0.1)])))
    assert check(g, Spec(2, 1, dj), settings).verdict == "sat"


def test_timeout_is_honoured():
    import time

    torch.manual_seed(0)
    module = nn.Sequential(nn.Linear(5, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 1)).double()
    g = load_torch(module, (5,))
    lo, hi = -np.ones(5) * 3, np.ones(5) * 3
    with torch.no_grad():
        ymax = module(torch.rand(20000, 5, dtype=torch.float64) * 6 - 3).max().item()
    # a threshold just above the sampled max: hard to decide either way
    spec = Spec(5, 1, [Disjunct(lo, hi, np.array([[-1.0]]), np.array([-(ymax + 1e-4)]))])
    t0 = time.perf_counter()
    res = check(g, spec, Settings(timeout=3, attack_share=0.2))
    assert time.perf_counter() - t0 < 3 + 2.5
    assert res.verdict in ("timeout", "unsat", "sat", "unknown")
    if res.verdict == "sat":
        assert module(torch.as_tensor(res.x).reshape(1, 5)).item() >= ymax + 1e-4


@pytest.mark.parametrize("seed", [0, 3])
def test_filtered_smart_branching_known_answers(seed):
    """Activation splitting with FSB (4 candidates per domain) gives the same known answers."""
    _assert_known_answers(_net(seed, hidden=(16, 16)),
                          Settings(timeout=30, split="activation", fsb=4, attack_share=0.0, attack_min_s=0.0))


def test_open_terms_drops_only_verified_terms():
    """Terms whose root bound is > 0 leave the search's objective; the others keep their rows in order."""
    from verify.bab.objective import Objective

    terms = [(np.array([[1.0, 0.0]]), np.array([0.0])),
             (np.array([[0.0, 1.0], [1.0, 1.0]]), np.array([0.0, 1.0])),
             (np.array([[-1.0, 0.0]]), np.array([2.0]))]
    obj = Objective(terms, torch.float64, combine=False)
    lb = torch.tensor([[0.5, -1.0, -0.2, -3.0]], dtype=torch.float64)  # term 0 verified, 1 and 2 open
    sub = obj.open_terms(lb)
    assert sub.n_terms == 2 and sub.rows.tolist() == [1, 2, 3]
    assert torch.equal(sub.C, obj.C[1:]) and torch.equal(sub.d, obj.d[1:])
    assert sub.term.tolist() == [0, 0, 1]
    # the restricted score equals the full score whenever the dropped term is verified
    rows = torch.tensor([[0.1, -0.5, 0.3, -0.1], [0.2, -0.5, -0.6, 0.4]], dtype=torch.float64)
    assert torch.equal(sub.score(rows[:, 1:]), obj.score(rows))
    assert obj.open_terms(-lb.abs()) is obj


def test_candidates_are_ranked_best_first():
    """The top-k candidate list starts with the single best choice and marks missing ones with -1."""
    from verify.bab.activation_split import _candidates, split_candidates
    from verify.bab.objective import Objective
    from verify.bounds import engine_for

    module = _net(1, hidden=(6,))
    g = load_torch(module, (2,))
    engine = engine_for(g)
    nodes = split_candidates(engine)
    M, R = 3, 1
    torch.manual_seed(0)
    l = -torch.rand(M, 6, dtype=torch.float64)
    u = torch.rand(M, 6, dtype=torch.float64)
    l[:, :4] = 0.1  # only neurons 4 and 5 are unstable
    bounds = {nodes[0].value: (l, u)}
    collect = {nodes[0].node.name: -torch.rand(M, R, 6, dtype=torch.float64)}
    obj = Objective([(np.array([[1.0]]), np.array([0.0]))], torch.float64)
    best = -torch.ones(M, R, dtype=torch.float64)
    top = _candidates(engine, obj, nodes, bounds, collect, best, M, R, top=4)
    one = _candidates(engine, obj, nodes, bounds, collect, best, M, R, top=1)
    assert torch.equal(top[:, 0], one[:, 0])
    assert set(top[:, :2, 1].flatten().tolist()) <= {4, 5}
    assert bool((top[:, 2:] == -1).all())


@pytest.mark.parametrize("warm_start_mb", [0, 1024])
def test_warm_start_from_parent_keeps_answers(warm_start_mb):
    """Children starting from their parent's α and β (or, at 0 MiB, from the root's α) give the known answers."""
    _assert_known_answers(_net(4, hidden=(16, 16)), Settings(timeout=30, split="activation", warm_start_mb=warm_start_mb,
                                                             attack_share=0.0, attack_min_s=0.0))


def test_domain_store_keeps_state_batch_first():
    """take/cat carry the per-domain α/β state; a β met in only one part is zero-filled in the other."""
    from verify.bab.activation_split import Domains

    lo = {"v": torch.zeros(3, 2)}
    a = Domains(lo, {"v": torch.ones(3, 2)}, torch.arange(3.0), torch.zeros(3, 2, dtype=torch.long),
                {"a:r": torch.ones(3, 1, 2), "bl:v": torch.full((3, 1, 2), 2.0)})
    b = Domains({"v": torch.zeros(2, 2)}, {"v": torch.ones(2, 2)}, torch.arange(2.0), torch.zeros(2, 2, dtype=torch.long),
                {"a:r": torch.zeros(2, 1, 2)})
    c = a.take(torch.tensor([2, 0]))
    c.push(b)
    assert len(c) == 4 and c.state["a:r"].shape == (4, 1, 2)
    assert c.state["bl:v"][:2].eq(2.0).all() and c.state["bl:v"][2:].eq(0.0).all()
    assert c.state_bytes() == 2 * 4 * 2 * 4


def test_domain_store_pop_and_push_in_place():
    """pop returns exactly the chosen domains and leaves the others (in some order); push appends past the
    buffers' size; neither writes into the tensors the store was built from."""
    from verify.bab.activation_split import Domains

    n = 7
    score = torch.arange(float(n))
    lo = {"v": score.reshape(n, 1).repeat(1, 2)}
    bounds = {"v": (score.reshape(1, n, 1).expand(2, n, 2)[0], torch.zeros(n, 2))}  # a view of another tensor
    d = Domains(lo, {"v": lo["v"] + 1}, score, torch.zeros(n, 2, dtype=torch.long),
                {"a:r": score.reshape(n, 1, 1).clone()}, torch.arange(n), bounds)
    got = d.pop(torch.tensor([1, 5, 2]))
    assert got.score.tolist() == [1.0, 5.0, 2.0] and got.lo["v"][:, 0].tolist() == [1.0, 5.0, 2.0]
    assert sorted(d.score.tolist()) == [0.0, 3.0, 4.0, 6.0]
    for i, sc in enumerate(d.score.tolist()):  # every field of a domain moved together
        assert d.lo["v"][i, 0] == sc and d.hi["v"][i, 1] == sc + 1 and d.term[i] == sc
        assert d.state["a:r"][i, 0, 0] == sc and d.bounds["v"][0][i, 0] == sc
    assert score.tolist() == list(map(float, range(n)))  # the caller's tensors are untouched
    for _ in range(3):
        d.push(got.take(torch.arange(3)))
    assert len(d) == 13 and sorted(d.score.tolist())[-3:] == [5.0, 5.0, 6.0]
    assert (d.lo["v"][:, 0] == d.score).all() and (d.state["a:r"][:, 0, 0] == d.score).all()
    d.drop_state()
    d.push(got)
    assert d.state is None and len(d) == 16
    d.push(Domains(got.lo, got.hi, got.score, got.branch, None, got.term))  # no own bounds: drop them all
    assert d.bounds is None and len(d) == 19


@pytest.mark.parametrize("seed", [4, 6])
def test_refreshed_intermediate_bounds_keep_answers(seed):
    """Children whose intermediate bounds are recomputed under their splits (root's per-neuron α) give the
    known answers on a three-hidden-layer net."""
    _assert_known_answers(_net(seed, hidden=(12, 12, 12)), Settings(timeout=30, split="activation",
                                                                     refresh_intermediate=True, attack_share=0.0,
                                                                     attack_min_s=0.0))


def _three_layer_root():
    """A 2-10-10-10-1 ReLU net on [-1, 1]^2 with its α-CROWN root (per-neuron intermediate α), for the
    refresh tests: (graph, engine, L, U, C, Root)."""
    from verify.bab.activation_split import Root
    from verify.bounds import AlphaOptions, alpha_crown, engine_for

    g = load_torch(_net(8, hidden=(10, 10, 10)), (2,))
    eng = engine_for(g)
    L, U = -torch.ones(1, 2, dtype=torch.float64), torch.ones(1, 2, dtype=torch.float64)
    C = torch.tensor([[1.0]], dtype=torch.float64)
    root = Root.from_alpha_crown(*alpha_crown(eng, L, U, C, AlphaOptions(iterations=10, optimize_intermediate=True,
                                                                         stop_when_positive=False), return_state=True))
    return g, eng, L, U, C, root


def _meets_splits(vs: dict, lo_c: dict, hi_c: dict, i: int) -> torch.Tensor:
    """(N,) True for the sampled points whose values `vs` meet domain i's split constraints."""
    inside = torch.ones(next(iter(vs.values())).shape[0], dtype=torch.bool)
    for v in lo_c:
        inside &= ((vs[v] >= lo_c[v][i]) & (vs[v] <= hi_c[v][i])).all(1)
    return inside


def _sample_points(g, seed: int, n_patterns: int):
    """For the refresh/polish containment tests: `n_patterns` random points of [-1, 1]^2 (whose ReLU patterns
    define domains; none when 0) and then 50,000 sample points, with every value of the net at each:
    (x0, xs, v0, vs), x0 and v0 None when `n_patterns` is 0."""
    gen = torch.Generator().manual_seed(seed)
    x0 = torch.rand(n_patterns, 2, generator=gen, dtype=torch.float64) * 2 - 1 if n_patterns else None
    xs = torch.rand(50_000, 2, generator=gen, dtype=torch.float64) * 2 - 1
    with torch.no_grad():
        v0 = g.forward(x0, return_all=True) if n_patterns else None
        return x0, xs, v0, g.forward(xs, return_all=True)


def test_refreshed_bounds_contain_every_sampled_point_of_the_domain():
    """bound_domains' refresh: for domains given by split signs of a random point's pattern, every sampled
    input of the box that meets the domain's signs has its intermediate values inside the refreshed bounds,
    which are never looser than the root's."""
    from verify.bab.activation_split import _constrained_bounds, split_signs
    from verify.bounds.crown import Splits

    g, eng, L, U, C, root = _three_layer_root()
    relu_in = [n.inputs[0] for n in eng.nodes if n.op == "relu"]
    x0, xs, v0, vs = _sample_points(g, 0, 3)
    lo_c, hi_c = {}, {}
    for v in relu_in[:2]:  # split the first two layers' unstable neurons by each point's pattern
        l, u = root.bounds[v]
        unstable = (l < 0) & (u > 0)
        lo_c[v] = torch.where(unstable & (v0[v] >= 0), 0.0, -torch.inf)
        hi_c[v] = torch.where(unstable & (v0[v] < 0), 0.0, torch.inf)
    M = 3
    bounds = _constrained_bounds(eng, root.bounds, M, lo_c, hi_c)
    signs = split_signs(lo_c, hi_c)
    with torch.no_grad():
        _, fresh = eng.compute(L.expand(M, -1), U.expand(M, -1), C.unsqueeze(0).expand(M, -1, -1), method="crown",
                               alphas=root.inter_alpha, splits=Splits(signs), prior=bounds, return_bounds=True,
                               intermediate="backward")
    tighter = 0.0
    for i in range(M):
        inside = _meets_splits(vs, lo_c, hi_c, i)
        assert int(inside.sum()) > 0
        for v in relu_in:
            l, u = fresh[v]
            assert (l[i] >= bounds[v][0][i] - 1e-12).all() and (u[i] <= bounds[v][1][i] + 1e-12).all()
            assert (vs[v][inside] >= l[i] - 1e-9).all() and (vs[v][inside] <= u[i] + 1e-9).all(), v
            tighter += float((bounds[v][1][i] - bounds[v][0][i]).sum() - (u[i] - l[i]).sum())
    assert tighter > 0  # the splits did tighten something downstream


def test_inherited_refresh_skipping_upstream_values_contains_sampled_points():
    """Refresh passed down the tree: a parent split in layer 1 is refreshed, then its children split in
    layer 2 start from the parent's bounds and skip the values up to their split. Every sampled input that
    meets a child's splits has its values inside the child's bounds, which are never looser than the
    parent's; and the skipped values keep exactly the parent's bounds."""
    from verify.bab.activation_split import (
        _constrained_bounds,
        _refresh_bounds,
        split_candidates,
    )
    from verify.bab.objective import Objective

    g, eng, L, U, C, root = _three_layer_root()
    obj = Objective([(np.array([[1.0]]), np.array([0.0]))], torch.float64)
    nodes = split_candidates(eng)
    vals = [c.value for c in nodes]
    _, xs, _, vs = _sample_points(g, 1, 0)

    def unstable_pick(bounds, v, i):
        l, u = bounds[v][0].reshape(bounds[v][0].shape[0], -1), bounds[v][1].reshape(bounds[v][1].shape[0], -1)
        return int(((l[i] < 0) & (u[i] > 0)).nonzero()[0])

    # parent: one domain, the first unstable neuron of layer 1 split at 0 (upper side)
    lo_c = {v: torch.full((1, 10), -torch.inf, dtype=torch.float64) for v in vals}
    hi_c = {v: torch.full((1, 10), torch.inf, dtype=torch.float64) for v in vals}
    j = unstable_pick(root.bounds, vals[0], 0)
    lo_c[vals[0]][0, j] = 0.0
    base = _constrained_bounds(eng, root.bounds, 1, lo_c, hi_c)
    par = _refresh_bounds(eng, obj, base, L, U, lo_c, hi_c, root.inter_alpha, nodes, torch.tensor([0]), float("inf"))
    # children: the parent's next split in layer 2, both sides, starting from the parent's bounds
    k = unstable_pick(par, vals[1], 0)
    c_lo = {v: torch.cat([t, t]) for v, t in lo_c.items()}
    c_hi = {v: torch.cat([t, t]) for v, t in hi_c.items()}
    c_hi[vals[1]][0, k] = 0.0
    c_lo[vals[1]][1, k] = 0.0
    start = _constrained_bounds(eng, {v: (torch.cat([l, l]), torch.cat([u, u])) for v, (l, u) in par.items()},
                                2, c_lo, c_hi)
    kids = _refresh_bounds(eng, obj, start, L.expand(2, -1), U.expand(2, -1), c_lo, c_hi, root.inter_alpha, nodes,
                           torch.tensor([1, 1]), float("inf"))
    assert torch.equal(kids[vals[0]][0], start[vals[0]][0])  # upstream of the split: kept as given
    for i in range(2):
        inside = _meets_splits(vs, c_lo, c_hi, i)
        assert int(inside.sum()) > 0
        for v in vals:
            l, u = kids[v][0][i].reshape(-1), kids[v][1][i].reshape(-1)
            assert (l >= par[v][0][0].reshape(-1) - 1e-12).all() and (u <= par[v][1][0].reshape(-1) + 1e-12).all()
            assert (vs[v][inside] >= l - 1e-9).all() and (vs[v][inside] <= u + 1e-9).all(), v


def test_padded_term_rows_and_domain_rows_keep_each_terms_score():
    """Each term's rows, padded by repeating its first row; a domain holding one term scores it as the
    full objective scores that term alone."""
    from verify.bab.objective import DomainRows, Objective

    terms = [(np.array([[1.0, 0.0]]), np.array([0.0])),
             (np.array([[0.0, 1.0], [1.0, 1.0]]), np.array([0.0, 1.0])),
             (np.array([[-1.0, 0.0]]), np.array([2.0]))]
    obj = Objective(terms, torch.float64, combine=False)
    rows = obj.padded_term_rows()
    assert rows.tolist() == [[0, 0], [1, 2], [3, 3]]
    dom = DomainRows(obj, rows[torch.tensor([1, 2, 0])])
    assert dom.C.shape == (3, 2, 2) and dom.rows.tolist() == [[1, 2], [3, 3], [0, 0]]
    vals = torch.tensor([[0.3, -0.5, 0.2, -0.1]], dtype=torch.float64)
    per_term = obj.term_max(vals)[0]  # (T,)
    assert torch.equal(dom.score(vals[0, rows[torch.tensor([1, 2, 0])]]), per_term[torch.tensor([1, 2, 0])])


@pytest.mark.parametrize("per_term", [True, False])
def test_disjunction_of_terms_known_answers_with_and_without_per_term_search(per_term):
    """A two-output net and three terms (y0 high; y1 high; y0 high and y1 fairly high, a two-row term):
    thresholds above each output's grid maximum plus its Lipschitz slack are unsat; lowering one term's threshold below the
    grid maximum makes it sat, whether the terms share domains or are searched each on its own."""
    torch.manual_seed(7)
    module = nn.Sequential(nn.Linear(2, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 2)).double()
    g = load_torch(module, (2,))
    lo, hi = np.array([-1.0, -1.0]), np.array([1.0, 1.0])
    heads = [nn.Sequential(*module, nn.Linear(2, 1, bias=False)).double() for _ in range(2)]
    for k, h in enumerate(heads):
        with torch.no_grad():
            h[-1].weight.copy_(torch.eye(2, dtype=torch.float64)[k:k + 1])
    maxes = [_grid_max(h, lo.tolist(), hi.tolist()) for h in heads]
    safe = [m + s + 1e-3 for m, s in maxes]
    settings = Settings(timeout=30, split="activation", per_term=per_term, attack_share=0.0, attack_min_s=0.0)

    def spec(t0, t1):
        return Spec(2, 2, [Disjunct(lo, hi, np.array([[-1.0, 0.0]]), np.array([-t0])),
                           Disjunct(lo, hi, np.array([[0.0, -1.0]]), np.array([-t1])),
                           Disjunct(lo, hi, -np.eye(2), np.array([-t0, -(maxes[1][0] - 0.3)]))])

    ok = check(g, spec(*safe), settings)
    assert ok.verdict == "unsat" and ok.domains > 3  # the search ran past the root
    bad = check(g, spec(safe[0], maxes[1][0] - 0.05), settings)
    assert bad.verdict == "sat"
    assert module(torch.as_tensor(bad.x).reshape(1, 2))[0, 1].item() >= maxes[1][0] - 0.05


def test_timeout_is_honoured_by_activation_splitting_with_refresh():
    """Activation splitting with per-domain refreshed intermediate bounds (the costliest bounding step)
    still stops within a second or two of the timeout."""
    import time

    torch.manual_seed(0)
    module = nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(),
                           nn.Linear(64, 2)).double()
    g = load_torch(module, (20,))
    lo, hi = -np.ones(20), np.ones(20)
    with torch.no_grad():
        y = module(torch.rand(20000, 20, dtype=torch.float64) * 2 - 1)
    sampled = (y[:, 0] - y[:, 1]).max().item()
    crown = compute_bounds(g, (lo, hi), method="crown", C=np.array([[1.0, -1.0]]))[1].item()
    # unsafe iff y0 - y1 >= t, t 30% of the way from the sampled maximum to CROWN's bound: the search
    # neither proves nor falsifies it in 3 s
    t = sampled + 0.3 * (crown - sampled)
    spec = Spec(20, 2, [Disjunct(lo, hi, np.array([[-1.0, 1.0]]), np.array([-t]))])
    t0 = time.perf_counter()
    res = check(g, spec, Settings(timeout=3, split="activation", refresh_intermediate=True, batch_size=4096,
                                  attack_share=0.1))
    assert time.perf_counter() - t0 < 3 + 2.5
    assert res.domains > 100  # the search ran
    if res.verdict == "sat":
        out = module(torch.as_tensor(res.x).reshape(1, 20))[0]
        assert (out[0] - out[1]).item() >= t


def test_domains_with_contradictory_refreshed_bounds_count_as_empty():
    """A neuron whose refreshed lower bound exceeds its upper one by more than rounding marks its domain
    empty (verified); a rounding-sized crossing does not."""
    from verify.bab.activation_split import _empty

    l = torch.tensor([[0.0, 1.0], [0.0, 5.0], [0.0, 2.0]])
    u = torch.tensor([[1.0, 2.0], [1.0, 5.0 - 1e-5], [0.0, -0.5]])
    assert _empty({"v": (l, u), "w": (torch.zeros(3, 1), torch.ones(3, 1))}).tolist() == [False, False, True]


def test_bound_domains_marks_a_domain_emptied_by_its_refreshed_bounds_verified():
    """y = relu(relu(x) - 0.5) on x in [-1, 1]. The domain {x <= 0, relu(x) - 0.5 >= 0} is empty: refreshed
    under the sign x <= 0, the second pre-activation is exactly -0.5, below its split's 0. bound_domains must
    report it verified (+inf) while the consistent domain {x >= 0, relu(x) - 0.5 >= 0} (where y - 1 lies
    in [-1, -0.5]) keeps a sound, unproven bound."""
    from verify.bab.activation_split import Root, bound_domains, split_candidates
    from verify.bab.objective import Objective
    from verify.bounds import AlphaOptions, alpha_crown, engine_for

    net = nn.Sequential(nn.Linear(1, 1), nn.ReLU(), nn.Linear(1, 1), nn.ReLU(), nn.Linear(1, 1)).double()
    with torch.no_grad():
        for layer, b in ((net[0], 0.0), (net[2], -0.5), (net[4], 0.0)):
            layer.weight.fill_(1.0)
            layer.bias.fill_(b)
    g = load_torch(net, (1,))
    eng = engine_for(g)
    L, U = -torch.ones(1, 1, dtype=torch.float64), torch.ones(1, 1, dtype=torch.float64)
    obj = Objective([(np.array([[1.0]]), np.array([1.0]))], torch.float64)  # y - 1 >= 0: false everywhere
    root = Root.from_alpha_crown(*alpha_crown(eng, L, U, obj.C, AlphaOptions(iterations=5, optimize_intermediate=True,
                                                                             stop_when_positive=False),
                                              return_state=True, shift=obj.d))
    nodes = split_candidates(eng)
    z1, z2 = (c.value for c in nodes)
    inf = torch.inf
    lo_c = {z1: torch.tensor([[-inf], [0.0]], dtype=torch.float64), z2: torch.zeros(2, 1, dtype=torch.float64)}
    hi_c = {z1: torch.tensor([[0.0], [inf]], dtype=torch.float64), z2: torch.full((2, 1), inf, dtype=torch.float64)}
    with torch.enable_grad():
        best = bound_domains(eng, obj, root.bounds, L, U, lo_c, hi_c, nodes, 5, 0.1, float("inf"),
                             refresh=root.inter_alpha)[0]
    assert best[0, 0] == inf
    assert best[1, 0] <= -1.0 + 1e-9
    with torch.enable_grad():  # without the refresh nothing shows the first domain empty
        plain = bound_domains(eng, obj, root.bounds, L, U, lo_c, hi_c, nodes, 5, 0.1, float("inf"))[0]
    assert torch.isfinite(plain).all()


def test_polishing_near_miss_children_keeps_answers(monkeypatch):
    """With every open child polished (more α/β steps on its fixed bounds before it is stored), the known
    answers still hold, and polishing does prove some children (so it is exercised)."""
    import verify.bab.activation_split as A

    proven = []
    orig = A._polish

    def counting(*args, **kwargs):
        out = orig(*args, **kwargs)
        proven.append(int(((args[9] <= 0) & (out > 0)).sum()))
        return out

    monkeypatch.setattr(A, "_polish", counting)
    _assert_known_answers(_net(4, hidden=(16, 16)), Settings(timeout=30, split="activation", polish_below=10.0,
                                                             polish_iters=20, attack_share=0.0, attack_min_s=0.0))
    assert proven and sum(proven) > 0


def test_polished_bounds_hold_on_every_sampled_point_of_the_domain():
    """_polish: for domains given by a random point's split pattern, the polished lower bound of y (the
    max of the regular and the polished bound) stays below y at every sampled input that meets the
    domain's splits, and polishing does raise some bound (so the check is not vacuous)."""
    from verify.bab.activation_split import _polish, bound_domains, split_candidates
    from verify.bab.objective import Objective

    g, eng, L, U, C, root = _three_layer_root()
    obj = Objective([(np.array([[1.0]]), np.array([0.0]))], torch.float64)
    nodes = split_candidates(eng)
    vals = [c.value for c in nodes]
    x0, xs, v0, vs = _sample_points(g, 2, 4)
    with torch.no_grad():
        ys = g.forward(xs).reshape(-1)
    lo_c, hi_c = {}, {}
    for k, v in enumerate(vals):  # the first layer split by each point's pattern, the others free
        l, u = root.bounds[v]
        unstable = ((l < 0) & (u > 0)).reshape(1, -1) & (k == 0)
        lo_c[v] = torch.where(unstable & (v0[v] >= 0), 0.0, -torch.inf)
        hi_c[v] = torch.where(unstable & (v0[v] < 0), 0.0, torch.inf)
    M = x0.shape[0]
    with torch.enable_grad():
        lb, _, _, _, _, state, used = bound_domains(eng, obj, root.bounds, L, U, lo_c, hi_c, nodes, 2, 0.1,
                                                    float("inf"), refresh=root.inter_alpha)
    score = obj.score(lb)
    settings = Settings(polish_below=1e9, polish_iters=50, polish_lr=0.05)
    polished = _polish(eng, nodes, lambda term: (obj, None), root.bounds, L, U, lo_c, hi_c, None, score, state,
                       used, settings, float("inf"), 0.0, True)
    assert (polished >= score).all() and bool((polished > score + 1e-6).any())
    for i in range(M):
        inside = _meets_splits(vs, lo_c, hi_c, i)
        assert int(inside.sum()) > 0
        assert float(ys[inside].min()) >= float(polished[i]) - 1e-9

"""The linear program for fully split ReLU domains (`verify.bab.lp`).

On a domain where every unstable ReLU is fixed to the activation pattern of a sampled point, the network
is affine; the LP's certified bound must lie below every sampled value of the objective on that domain
(soundness), prove a threshold just above the sampled maximum (exactness), and return a point that violates
a threshold just below it. End to end, the activation-split search with weak β steps must reach fully split
domains and still give the known answers.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from verify.bab import lp
from verify.bab.objective import Objective
from verify.bounds import engine_for
from verify.importers.torch import load_torch

torch.set_num_threads(1)


def _net(seed: int, sizes=(2, 8, 8, 1)):
    torch.manual_seed(seed)
    layers = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers).double().eval()


def _domain(module, g, eng, seed):
    """Root CROWN bounds on [-1, 1]^2, the sign pattern of one random point on the unstable neurons, and
    10^5 samples of the box that share the pattern (the domain)."""
    lo, hi = -torch.ones(1, 2, dtype=torch.float64), torch.ones(1, 2, dtype=torch.float64)
    with torch.no_grad():
        _, _, bounds = eng.compute(lo, hi, return_bounds=True)
    gen = torch.Generator().manual_seed(seed)
    x0 = torch.rand(1, 2, generator=gen, dtype=torch.float64) * 2 - 1
    xs = torch.rand(100_000, 2, generator=gen, dtype=torch.float64) * 2 - 1
    with torch.no_grad():
        v0 = g.forward(x0, return_all=True)
        vs = g.forward(xs, return_all=True)
    signs, same = {}, torch.ones(xs.shape[0], dtype=torch.bool)
    dom_bounds = {}
    for n in eng.nodes:
        if n.op != "relu":
            continue
        v = n.inputs[0]
        l, u = bounds[v]
        unstable = ((l < 0) & (u > 0))[0]
        s = torch.where(unstable, torch.where(v0[v][0] >= 0, 1, -1), 0)
        signs[v] = s
        same &= ((torch.sign(vs[v]) == s) | (s == 0) | (vs[v] == 0)).all(1)
    for k, (l, u) in bounds.items():
        if k in signs:
            s = signs[k]
            l = torch.where(s > 0, l.clamp(min=0), l)
            u = torch.where(s < 0, u.clamp(max=0), u)
        dom_bounds[k] = (l, u)
    return lo, hi, signs, dom_bounds, vs[g.output][same, 0]


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_lp_is_sound_and_exact_on_a_fully_split_domain(seed):
    module = _net(seed)
    g = load_torch(module, (2,))
    eng = engine_for(g)
    lo, hi, signs, bounds, ys = _domain(module, g, eng, seed)
    assert ys.numel() > 0
    top = float(ys.max())
    # unsafe iff y >= t  (-y <= -t)
    safe = Objective([(np.array([[-1.0]]), np.array([-(top + 0.05)]))], torch.float64)
    r = lp.solve_domain(eng, safe, bounds, lo, hi, signs, tol=0.0)
    assert r is not None and r.verified
    assert r.bound <= float((top + 0.05) - ys.max()) + 1e-9   # never above a sampled value of t - y
    unsafe = Objective([(np.array([[-1.0]]), np.array([-(top - 0.05)]))], torch.float64)
    r = lp.solve_domain(eng, unsafe, bounds, lo, hi, signs, tol=0.0)
    assert not r.verified and r.x is not None
    with torch.no_grad():
        assert module(torch.as_tensor(r.x).reshape(1, 2)).item() >= top - 0.05 - 1e-7


def test_lp_declines_a_domain_with_unstable_relus():
    module = _net(0)
    g = load_torch(module, (2,))
    eng = engine_for(g)
    lo, hi = -torch.ones(1, 2, dtype=torch.float64), torch.ones(1, 2, dtype=torch.float64)
    with torch.no_grad():
        _, _, bounds = eng.compute(lo, hi, return_bounds=True)
    obj = Objective([(np.array([[-1.0]]), np.array([-100.0]))], torch.float64)
    signs = {n.inputs[0]: torch.zeros(8, dtype=torch.long) for n in eng.nodes if n.op == "relu"}
    assert lp.solve_domain(eng, obj, bounds, lo, hi, signs, tol=0.0) is None


def test_search_reaches_fully_split_domains_and_keeps_known_answers(monkeypatch):
    """β steps too weak to prove anything before every ReLU is split: the LP must settle those domains."""
    from tests.test_bab import _grid_max, _spec_output_above
    from verify.api import check
    from verify.settings import Settings

    calls = []
    real = lp.solve_domain
    monkeypatch.setattr(lp, "solve_domain", lambda *a, **k: calls.append(1) or real(*a, **k))
    module = _net(7, (2, 6, 6, 1))
    g = load_torch(module, (2,))
    lo, hi = [-1.0, -1.0], [1.0, 1.0]
    ymax, slack = _grid_max(module, lo, hi)
    settings = Settings(timeout=60, split="activation", attack_share=0.0, attack_min_s=0.0, beta_iters=1,
                        alpha_iters=0, lr=1e-6, bab_lr=1e-6, warm_start_mb=0)
    safe = check(g, _spec_output_above(ymax + slack + 1e-3, lo, hi), settings)
    assert safe.verdict == "unsat", safe.note
    assert calls, "no fully split domain was reached"
    bad = check(g, _spec_output_above(ymax - 0.02 * max(1.0, abs(ymax)), lo, hi), settings)
    assert bad.verdict == "sat"


def test_empty_domain_is_certified_only_when_empty():
    lo, hi = np.array([-1.0, -1.0]), np.array([1.0, 1.0])
    # x0 >= 0.5 and x0 <= 0.2: empty
    G, h = np.array([[-1.0, 0.0], [1.0, 0.0]]), np.array([0.5, -0.2])
    assert lp._empty_domain_bound(G, h, lo, hi) > 0
    # x0 >= 0.5 and x0 + x1 <= 0.2: feasible (x = (0.5, -0.5))
    G, h = np.array([[-1.0, 0.0], [1.0, 1.0]]), np.array([0.5, -0.2])
    assert lp._empty_domain_bound(G, h, lo, hi) <= 0

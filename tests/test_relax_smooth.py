"""Sampling soundness of the exp / log / sqrt / reciprocal / softplus / pow relaxations (float64).

For every function: intervals around random centres (hypothesis), degenerate (l = u), tiny and very wide
ones, ones straddling the inflection points / the pole / the domain edge, and infinite ones; the interval
rule and both lines must hold at sampled points for the default and for random valid α."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from verify.bounds.ops import RULES
from verify.bounds.ops.checks import interval_batch, worst_violation

TOL = 1e-9
INF = math.inf

CASES = {
    "exp": (torch.exp, {}, (0.0,)),
    "log": (torch.log, {}, (0.0, 1e-300, 1.0)),
    "sqrt": (torch.sqrt, {}, (0.0, 1e-12)),
    "reciprocal": (torch.reciprocal, {}, (0.0, 1e-9)),
    "softplus": (F.softplus, {}, (0.0, 20.0)),
}
POWERS = [2.0, 3.0, 4.0, 5.0, -1.0, -2.0, -3.0, 0.5, 1.5, 2.5, -0.5, 1.0, 0.0, 0.25]
for _p in POWERS:
    CASES[f"pow{_p:g}"] = ((lambda p: (lambda x: torch.pow(x, p)))(_p), {"exponent": _p}, (0.0, 1.0, -1.0))


def _rule(name):
    return RULES["pow" if name.startswith("pow") else name]


def _check(name, seed, centre, log_width):
    fn, attrs, special = CASES[name]
    l, u = interval_batch(seed, 60, centre, log_width, special)
    v = worst_violation(_rule(name), fn, l, u, attrs, seed)
    assert v["ibp"] <= TOL and v["lower"] <= TOL and v["upper"] <= TOL, (name, v)


@pytest.mark.parametrize("name", sorted(CASES))
@settings(max_examples=6, deadline=None, derandomize=True)
@given(seed=st.integers(0, 2 ** 20), centre=st.floats(-30, 30), log_width=st.floats(-4, 1.5))
def test_sound_on_random_intervals(name, seed, centre, log_width):
    _check(name, seed, centre, log_width)


@pytest.mark.parametrize("name", sorted(CASES))
def test_sound_near_domain_edges_and_wide(name):
    for seed, centre, lw in [(1, 0.0, -6.0), (2, 1e-3, -3.0), (3, 0.0, 2.0), (4, 200.0, 2.0), (5, -200.0, 2.5)]:
        _check(name, seed, centre, lw)


@pytest.mark.parametrize("name", sorted(CASES))
def test_infinite_bounds_give_sound_finite_or_infinite_lines(name):
    fn, attrs, _ = CASES[name]
    l = torch.tensor([-INF, -INF, -5.0, 0.0, 2.0, -INF])
    u = torch.tensor([INF, 1.0, INF, INF, 3.0, -1.0])
    v = worst_violation(_rule(name), fn, l, u, attrs)
    assert max(v.values()) <= TOL, v
    lw, lb, uw, ub = _rule(name).relax(l, u, attrs)
    assert not any(bool(torch.isnan(t).any()) for t in (lw, lb, uw, ub))


def test_domain_decisions():
    """log: l <= 0 gives a -inf lower bound (log 0 = -inf); reciprocal over 0: infinite both ways;
    sqrt below 0 (NaN in the network) is bounded on [l, u] ∩ [0, inf)."""
    l, u = torch.tensor([-1.0, 0.0]), torch.tensor([4.0, 4.0])
    lo, hi = RULES["log"].interval(l, u, {})
    assert torch.all(lo == -INF) and torch.allclose(hi, torch.log(u))
    lw, lb, uw, ub = RULES["log"].relax(l, u, {})
    assert torch.all(lw == 0) and torch.all(lb == -INF) and torch.isfinite(ub).all()
    lo, hi = RULES["reciprocal"].interval(torch.tensor([-1.0, 0.0]), torch.tensor([1.0, 2.0]), {})
    assert torch.all(lo == -INF) and torch.all(hi == INF)
    lo, hi = RULES["sqrt"].interval(torch.tensor([-1.0]), torch.tensor([4.0]), {})
    assert float(lo) == 0.0 and float(hi) == 2.0


def test_lines_are_tight_on_convex_and_concave_pieces():
    """exp on [0, 1]: default upper line is the chord; lower line touches exp at the mean-value point."""
    l, u = torch.tensor([0.0], dtype=torch.float64), torch.tensor([1.0], dtype=torch.float64)
    lw, lb, uw, ub = RULES["exp"].relax(l, u, {})
    k = math.e - 1
    assert abs(float(uw) - k) < 1e-12 and abs(float(ub) - 1.0) < 1e-12
    t = math.log(k)
    assert abs(float(lb) - (math.exp(t) - k * t)) < 1e-12
    # log on [1, e]: the lower line is the chord
    lw, lb, uw, ub = RULES["log"].relax(torch.tensor([1.0], dtype=torch.float64), torch.tensor([math.e], dtype=torch.float64), {})
    assert abs(float(lw) - 1 / (math.e - 1)) < 1e-12 and abs(float(lw + lb)) < 1e-12


def test_pow_exponent_from_graph_constant():
    from verify.graph.ir import Graph, Node

    g = Graph("x", (3,), [Node("y", "pow", ["x", "p"], {}, (3,))], {"p": torch.tensor(3.0)}, "y")
    rule = RULES["pow"]
    node = g.nodes[0]
    lo, hi = rule.ibp([torch.tensor([[-2.0, 0.5, 1.0]]), torch.tensor(3.0)],
                      [torch.tensor([[1.0, 0.5, 2.0]]), torch.tensor(3.0)], node, g)
    assert node.attrs["exponent"] == 3.0
    assert torch.allclose(lo, torch.tensor([[-8.0, 0.125, 1.0]])) and torch.allclose(hi, torch.tensor([[1.0, 0.125, 8.0]]))
    g2 = Graph("x", (3,), [Node("y", "pow", ["x", "p"], {}, (3,))], {"p": torch.tensor([1.0, 2.0, 3.0])}, "y")
    with pytest.raises(NotImplementedError, match="non-scalar"):
        rule.ibp([torch.zeros(1, 3), g2.constants["p"]], [torch.ones(1, 3), g2.constants["p"]], g2.nodes[0], g2)


def test_float32_lines_hold_against_float64_function():
    """The rounding allowance keeps float32 lines sound for the float64 function (relative 1e-6)."""
    for name in ("exp", "log", "sqrt", "reciprocal", "softplus", "pow2", "pow3", "pow0.5"):
        fn, attrs, special = CASES[name]
        l, u = interval_batch(7, 60, 0.5, 0.0, special, dtype=torch.float32)
        lw, lb, uw, ub = _rule(name).relax(l, u, attrs)
        x = l.double() + torch.rand(200, *l.shape, dtype=torch.float64) * (u - l).double()
        y = fn(x)
        ok = torch.isfinite(y)
        for w, b, sgn in ((lw, lb, 1), (uw, ub, -1)):
            line = torch.where(w == 0, b.double().expand_as(x), w.double() * x + b.double())
            exc = sgn * (line - y) / (1 + y.abs() + (w.double() * x).abs() + b.double().abs())
            assert float(torch.where(ok & torch.isfinite(line), exc, torch.zeros_like(exc)).max()) <= 1e-6, name

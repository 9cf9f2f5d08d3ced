"""Sampling soundness of sin / cos / GELU / erf / abs / clip / sign / floor / ceil relaxations (float64).

Intervals include several periods of sin and cos, huge arguments, the inflection points of GELU (±√2) and
erf (0), the kinks of abs and clip, and infinite bounds; random valid α must stay sound."""
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
PI = math.pi

CASES = {
    "sin": (torch.sin, {}, (0.0, PI / 2, PI, -PI / 2, 10 * PI)),
    "cos": (torch.cos, {}, (0.0, PI / 2, PI, -PI, 7 * PI / 2)),
    "gelu": (F.gelu, {}, (-math.sqrt(2), math.sqrt(2), 0.0, -0.75)),
    "gelu_tanh": ((lambda x: F.gelu(x, approximate="tanh")), {"approximate": "tanh"}, (-1.4185, 1.4185, -0.75)),
    "erf": (torch.erf, {}, (0.0,)),
    "abs": (torch.abs, {}, (0.0,)),
    "clip": ((lambda x: torch.clamp(x, -1.0, 2.0)), {"min": -1.0, "max": 2.0}, (-1.0, 2.0)),
    "relu6": ((lambda x: torch.clamp(x, 0.0, 6.0)), {"min": 0.0, "max": 6.0}, (0.0, 6.0)),
    "clip_min_only": ((lambda x: torch.clamp(x, min=0.5)), {"min": 0.5, "max": None}, (0.5,)),
    "sign": (torch.sign, {}, (0.0,)),
    "floor": (torch.floor, {}, (0.0, 1.0, -2.0)),
    "ceil": (torch.ceil, {}, (0.0, 1.0, -2.0)),
}
OPS = {"gelu_tanh": "gelu", "relu6": "clip", "clip_min_only": "clip"}


def _check(name, seed, centre, log_width):
    fn, attrs, special = CASES[name]
    l, u = interval_batch(seed, 60, centre, log_width, special)
    v = worst_violation(RULES[OPS.get(name, name)], fn, l, u, attrs, seed)
    assert v["ibp"] <= TOL and v["lower"] <= TOL and v["upper"] <= TOL, (name, v)


@pytest.mark.parametrize("name", sorted(CASES))
@settings(max_examples=6, deadline=None, derandomize=True)
@given(seed=st.integers(0, 2 ** 20), centre=st.floats(-20, 20), log_width=st.floats(-4, 1.5))
def test_sound_on_random_intervals(name, seed, centre, log_width):
    _check(name, seed, centre, log_width)


@pytest.mark.parametrize("name", sorted(CASES))
def test_sound_wide_and_far(name):
    for seed, centre, lw in [(1, 0.0, 2.0), (2, 1e4, 1.0), (3, -1e5, 2.5), (4, 0.0, -8.0)]:
        _check(name, seed, centre, lw)


@pytest.mark.parametrize("name", sorted(CASES))
def test_infinite_bounds(name):
    fn, attrs, _ = CASES[name]
    l = torch.tensor([-INF, -INF, -5.0, 2.0], dtype=torch.float64)
    u = torch.tensor([INF, 1.0, INF, 3.0], dtype=torch.float64)
    rule = RULES[OPS.get(name, name)]
    v = worst_violation(rule, fn, l, u, attrs)
    assert max(v.values()) <= TOL, v
    assert not any(bool(torch.isnan(t).any()) for t in rule.relax(l, u, attrs))


def test_sin_range_is_exact_over_periods():
    l = torch.tensor([0.0, 0.1, -10.0, 100.0], dtype=torch.float64)
    u = torch.tensor([PI, 0.2, 10.0, 100.0 + 2 * PI], dtype=torch.float64)
    lo, hi = RULES["sin"].interval(l, u, {})
    x = l + torch.linspace(0, 1, 200001, dtype=torch.float64).unsqueeze(1) * (u - l)
    assert torch.allclose(lo, torch.sin(x).amin(0), atol=1e-9) and torch.allclose(hi, torch.sin(x).amax(0), atol=1e-9)


def test_sin_default_lines_are_chord_and_tangent_on_concave_piece():
    l, u = torch.tensor([0.2], dtype=torch.float64), torch.tensor([2.5], dtype=torch.float64)
    lw, lb, uw, ub = RULES["sin"].relax(l, u, {})
    k = (math.sin(2.5) - math.sin(0.2)) / 2.3
    assert abs(float(lw) - k) < 1e-12 and abs(float(lw * 0.2 + lb) - math.sin(0.2)) < 1e-12  # chord
    t = math.acos(k)  # upper: tangent where cos t = k
    assert abs(float(uw * t + ub) - math.sin(t)) < 1e-12


def test_gelu_alpha_gradient_improves_objective():
    """The lines are differentiable in α (envelope theorem): a gradient step on the lower slope lowers
    the gap at the chosen point."""
    l, u = torch.tensor([-3.0], dtype=torch.float64), torch.tensor([1.0], dtype=torch.float64)
    rule = RULES["gelu"]
    alpha = rule.alpha_init(l, u, {}).clone().requires_grad_()
    lw, lb, _, _ = rule.relax(l, u, {}, alpha)
    val = lw * 1.0 + lb  # lower line at x = 1: maximise
    val.sum().backward()
    assert alpha.grad is not None and torch.isfinite(alpha.grad).all() and float(alpha.grad[0].abs()) > 0


def test_float32_lines_hold_against_float64_function():
    """The rounding allowance keeps float32 lines sound for the float64 function (relative 1e-6)."""
    for name in ("sin", "cos", "gelu", "gelu_tanh", "erf", "abs", "clip"):
        fn, attrs, special = CASES[name]
        for seed, centre, lw in ((7, 0.5, 0.0), (8, 100.0, 1.5)):
            l, u = interval_batch(seed, 60, centre, lw, special, dtype=torch.float32)
            alpha = RULES[OPS.get(name, name)].alpha_init(l, u, attrs)
            lw_, lb, uw, ub = RULES[OPS.get(name, name)].relax(l, u, attrs, alpha)
            x = l.double() + torch.rand(200, *l.shape, dtype=torch.float64) * (u - l).double()
            y = fn(x)
            for w, b, sgn in ((lw_, lb, 1), (uw, ub, -1)):
                line = w.double() * x + b.double()
                exc = sgn * (line - y) / (1 + y.abs() + (w.double() * x).abs() + b.double().abs())
                assert float(exc.max()) <= 1e-6, name

"""Sampling soundness of the core relaxations (relu, leakyrelu, sigmoid, tanh) in the same style as the
other test_relax_* files: random, degenerate, tiny, very wide and inflection-straddling intervals, with the
default and random valid α (shared and per objective row)."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from verify.bounds.ops import RULES
from verify.bounds.ops.checks import interval_batch, worst_violation
from verify.bounds.ops.sshaped_slope import SigmoidSlopeRule, TanhSlopeRule

TOL = 1e-9
INF = math.inf

CASES = {
    "relu": (torch.relu, {}, (0.0,)),
    "leakyrelu": ((lambda x: F.leaky_relu(x, 0.1)), {"alpha": 0.1}, (0.0,)),
    "sigmoid": (torch.sigmoid, {}, (0.0,)),
    "tanh": (torch.tanh, {}, (0.0,)),
}
# the unregistered (slope, exact offset) alternatives for sigmoid / tanh
ALT = {"sigmoid_slope": (SigmoidSlopeRule(), torch.sigmoid), "tanh_slope": (TanhSlopeRule(), torch.tanh)}


@pytest.mark.parametrize("name", sorted(ALT))
@settings(max_examples=6, deadline=None, derandomize=True)
@given(seed=st.integers(0, 2 ** 20), centre=st.floats(-10, 10), log_width=st.floats(-4, 2))
def test_slope_form_sigmoid_tanh_sound(name, seed, centre, log_width):
    rule, fn = ALT[name]
    l, u = interval_batch(seed, 60, centre, log_width, (0.0,))
    inf = torch.tensor([-INF, -3.0, -INF], dtype=torch.float64), torch.tensor([2.0, INF, INF], dtype=torch.float64)
    for lo, hi in ((l, u), inf):
        v = worst_violation(rule, fn, lo, hi, {}, seed)
        assert max(v.values()) <= TOL, (name, v)


def _check(name, seed, centre, log_width):
    fn, attrs, special = CASES[name]
    l, u = interval_batch(seed, 60, centre, log_width, special)
    v = worst_violation(RULES[name], fn, l, u, attrs, seed)
    assert v["ibp"] <= TOL and v["lower"] <= TOL and v["upper"] <= TOL, (name, v)


@pytest.mark.parametrize("name", sorted(CASES))
@settings(max_examples=8, deadline=None, derandomize=True)
@given(seed=st.integers(0, 2 ** 20), centre=st.floats(-10, 10), log_width=st.floats(-4, 1.5))
def test_sound_on_random_intervals(name, seed, centre, log_width):
    _check(name, seed, centre, log_width)


@pytest.mark.parametrize("name", sorted(CASES))
def test_sound_wide_tiny_and_far(name):
    for seed, centre, lw in [(1, 0.0, 2.5), (2, 30.0, 1.0), (3, -40.0, 1.0), (4, 0.0, -9.0), (5, 0.0, 0.0)]:
        _check(name, seed, centre, lw)


@pytest.mark.parametrize("name", ["relu", "leakyrelu"])
def test_infinite_bounds_only_on_the_stable_side(name):
    """Infinite bounds on a side where the function is linear are handled (relu/leakyrelu)."""
    fn, attrs, _ = CASES[name]
    l = torch.tensor([-INF, 1.0], dtype=torch.float64)
    u = torch.tensor([-1.0, INF], dtype=torch.float64)
    v = worst_violation(RULES[name], fn, l, u, attrs)
    assert max(v.values()) <= TOL, v


@pytest.mark.parametrize("name", sorted(CASES))
def test_infinite_bounds_unstable(name):
    fn, attrs, _ = CASES[name]
    l = torch.tensor([-INF, -3.0, -INF], dtype=torch.float64)
    u = torch.tensor([2.0, INF, INF], dtype=torch.float64)
    v = worst_violation(RULES[name], fn, l, u, attrs)
    assert max(v.values()) <= TOL, v


def test_leakyrelu_default_slope_matches_semantics():
    l, u = interval_batch(3, 60, 0.0, 0.5, (0.0,))
    v = worst_violation(RULES["leakyrelu"], lambda x: F.leaky_relu(x, 0.01), l, u, {})
    assert max(v.values()) <= TOL, v

"""McCormick backward rules for x*y and x/y, and the softmax interval rule, checked by sampling (float64).

For the two-input rules, A·z >= A_x·x + A_y·y + bias must hold at sampled points of the box for random A
(both signs), random valid mixing weights (shared and per row) and broadcast input shapes."""
from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from verify.bounds.ops import RULES
from verify.bounds.ops.softmax import softmax_interval

TOL = 1e-9
D = torch.float64


def _box(g, shape, centre, width, cross_zero=True):
    c = centre + torch.randn(shape, generator=g, dtype=D) * 2
    if not cross_zero:
        c = c.abs() + 0.5
    w = width * torch.rand(shape, generator=g, dtype=D)
    lo = c - w * torch.rand(shape, generator=g, dtype=D)
    hi = c + w * torch.rand(shape, generator=g, dtype=D)
    if not cross_zero:
        lo = lo.clamp(min=0.25)
        hi = torch.maximum(hi, lo)
    return lo, hi


def _sample(g, lo, hi, n):
    t = torch.rand((n, *lo.shape), generator=g, dtype=D)
    corners = torch.randint(0, 2, (n // 4, *lo.shape), generator=g).to(D)  # box corners are extreme
    t = torch.cat([t, corners])
    return lo + t * (hi - lo)


def _check_binary(op, seed, sx, sy, width, alpha_kind, divisor_positive=False):
    g = torch.Generator().manual_seed(seed)
    B, S = 3, 4
    lx, ux = _box(g, (B, *sx), 0.0, width)
    ly, uy = _box(g, (B, *sy), 0.0, width, cross_zero=not divisor_positive)
    if divisor_positive and seed % 2:  # negative divisors too
        ly, uy = -uy, -ly
    out = torch.broadcast_shapes(lx.shape, ly.shape)
    A = torch.randn((B, S, *out[1:]), generator=g, dtype=D)
    rule = RULES[op]
    alpha = None
    if alpha_kind == "shared":
        alpha = torch.rand((2, *out), generator=g, dtype=D)
    elif alpha_kind == "rows":
        alpha = torch.rand((2, B, S, *out[1:]), generator=g, dtype=D)
    (Ax, Ay), bias = rule.backward(A, [(lx, ux), (ly, uy)], alpha)
    assert Ax.shape == (B, S, *sx) and Ay.shape == (B, S, *sy) and bias.shape == (B, S)
    n = 400
    x, y = _sample(g, lx, ux, n), _sample(g, ly, uy, n)
    z = x * y if op == "mul" else x / y
    lhs = (A.unsqueeze(0) * z.unsqueeze(2)).flatten(3).sum(-1)                      # (n, B, S)
    rhs = ((Ax.unsqueeze(0) * x.unsqueeze(2)).flatten(3).sum(-1)
           + (Ay.unsqueeze(0) * y.unsqueeze(2)).flatten(3).sum(-1) + bias)
    scale = 1 + lhs.abs() + rhs.abs()
    assert float(((rhs - lhs) / scale).max()) <= TOL
    lo, hi = rule.ibp([lx, ly], [ux, uy], None, None)
    assert float((lo - z).max()) <= TOL and float((z - hi).max()) <= TOL


SHAPES = [((5,), (5,)), ((2, 3), (2, 1)), ((1, 4), (3, 4))]


@pytest.mark.parametrize("op", ["mul", "div"])
@pytest.mark.parametrize("alpha_kind", [None, "shared", "rows"])
@settings(max_examples=5, deadline=None, derandomize=True)
@given(seed=st.integers(0, 2 ** 20), shapes=st.sampled_from(SHAPES), width=st.floats(1e-6, 20.0))
def test_binary_backward_is_sound(op, alpha_kind, seed, shapes, width):
    _check_binary(op, seed, shapes[0], shapes[1], width, alpha_kind, divisor_positive=(op == "div"))


def test_mccormick_is_exact_at_box_corners():
    lx, ux = torch.tensor([[-1.0]], dtype=D), torch.tensor([[2.0]], dtype=D)
    ly, uy = torch.tensor([[0.5]], dtype=D), torch.tensor([[3.0]], dtype=D)
    A = torch.ones(1, 1, 1, dtype=D)
    for a in (0.0, 1.0):
        alpha = torch.full((2, 1, 1), a, dtype=D)
        (Ax, Ay), b = RULES["mul"].backward(A, [(lx, ux), (ly, uy)], alpha)
        # a = 1 -> plane P1 is tight at (lx, ly); a = 0 -> P2 at (ux, uy)
        x, y = (lx, ly) if a == 1.0 else (ux, uy)
        assert abs(float(Ax * x + Ay * y + b) - float(x * y)) < 1e-12


def test_division_by_interval_holding_zero_is_unbounded():
    lo, hi = RULES["div"].ibp([torch.tensor([[1.0]]), torch.tensor([[-1.0]])],
                              [torch.tensor([[2.0]]), torch.tensor([[1.0]])], None, None)
    assert float(lo) == -math.inf and float(hi) == math.inf
    A = torch.tensor([[[1.0], [-1.0], [0.0]]], dtype=D)
    (Ax, Ay), b = RULES["div"].backward(A, [(torch.tensor([[1.0]], dtype=D), torch.tensor([[2.0]], dtype=D)),
                                            (torch.tensor([[-1.0]], dtype=D), torch.tensor([[1.0]], dtype=D))])
    assert b[0, 0] == -math.inf and b[0, 1] == -math.inf and b[0, 2] == 0.0
    assert not torch.isnan(Ax).any() and not torch.isnan(Ay).any()


@settings(max_examples=25, deadline=None, derandomize=True)
@given(seed=st.integers(0, 2 ** 20), width=st.floats(0.0, 30.0), n=st.integers(1, 8), shift=st.floats(-50, 50))
def test_softmax_interval_and_lines(seed, width, n, shift):
    g = torch.Generator().manual_seed(seed)
    c = shift + torch.randn(4, n, generator=g, dtype=D) * 3
    lo_x = c - width * torch.rand(4, n, generator=g, dtype=D)
    hi_x = c + width * torch.rand(4, n, generator=g, dtype=D)
    lo, hi = softmax_interval(lo_x, hi_x, 1)
    t = torch.rand(300, 4, n, generator=g, dtype=D)
    t = torch.cat([t, torch.randint(0, 2, (100, 4, n), generator=g).to(D)])
    x = lo_x + t * (hi_x - lo_x)
    y = torch.softmax(x, -1)
    assert float((lo - y).max()) <= TOL and float((y - hi).max()) <= TOL
    rule = RULES["softmax"]
    a0 = rule.alpha_init(lo_x, hi_x, {"axis": 1})
    alphas = [None, a0, rule.alpha_project(a0 + torch.randn(a0.shape, generator=g, dtype=D) * 0.2, lo_x, hi_x, {}),
              torch.zeros_like(a0), rule.alpha_project(torch.rand((2, 4, 3, n), generator=g, dtype=D), lo_x, hi_x, {})]
    for alpha in alphas:
        lw, lb, uw, ub = rule.relax(lo_x, hi_x, {"axis": 1}, alpha)
        xx, yy = (x, y) if lw.dim() == 2 else (x.unsqueeze(2), y.unsqueeze(2))
        low = torch.where(lw == 0, lb, lw * xx + lb)
        up = torch.where(uw == 0, ub, uw * xx + ub)
        assert float((low - yy).max()) <= TOL and float((yy - up).max()) <= TOL
        assert not torch.isnan(low).any() and not torch.isnan(up).any()
    # slope 0 gives the constant lines at the interval bounds (up to rounding)
    lw, lb, uw, ub = rule.relax(lo_x, hi_x, {"axis": 1}, torch.zeros_like(a0))
    assert torch.allclose(lb, lo, rtol=1e-12, atol=1e-14) and torch.allclose(ub, hi, rtol=1e-12, atol=1e-14)


def test_softmax_lines_beat_constants_on_own_logit():
    """With the other logits fixed, softmax_i is a sigmoid of x_i: the default lines follow it."""
    lo_x = torch.tensor([[-2.0, 0.0, 0.5]], dtype=D)
    hi_x = torch.tensor([[2.0, 0.0, 0.5]], dtype=D)
    lw, lb, uw, ub = RULES["softmax"].relax(lo_x, hi_x, {"axis": 1})
    assert float(lw[0, 0]) > 0 and float(uw[0, 0]) > 0
    lo, hi = softmax_interval(lo_x, hi_x, 1)
    x = torch.linspace(-2, 2, 101, dtype=D)
    gap_lines = ((uw[0, 0] - lw[0, 0]) * x + ub[0, 0] - lb[0, 0]).mean()
    assert float(gap_lines) < 0.5 * float(hi[0, 0] - lo[0, 0])


def test_softmax_interval_is_tight_for_points():
    x = torch.tensor([[0.3, -1.0, 2.0]], dtype=D)
    lo, hi = softmax_interval(x, x, 1)
    assert torch.allclose(lo, torch.softmax(x, 1), atol=1e-14) and torch.allclose(hi, torch.softmax(x, 1), atol=1e-14)


def test_logsumexp_others_matches_explicit_sum():
    from verify.bounds.ops.softmax import logsumexp_others

    g = torch.Generator().manual_seed(0)
    v = torch.randn(5, 7, generator=g, dtype=D) * 30
    v[0, 3] = v[0, 5]  # a tie for the maximum
    ref = torch.stack([torch.logsumexp(torch.cat([v[:, :i], v[:, i + 1:]], 1), 1) for i in range(7)], 1)
    assert torch.allclose(logsumexp_others(v, 1), ref, rtol=1e-13, atol=1e-13)
    assert torch.all(logsumexp_others(v[:, :1], 1) == -math.inf)

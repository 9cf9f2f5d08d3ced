"""Falsification: planted violations are found and verified in float64; safe properties never give `sat`."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from verify.attack import execute64, falsify, verify_candidates
from verify.attack.objective import all_margins, margins, pack
from verify.attack.sampling import corners
from verify.graph.ir import Graph, Node
from verify.spec.spec import Disjunct, Spec


def mlp(weights: list[tuple[np.ndarray, np.ndarray]], n_in: int) -> Graph:
    """A ReLU MLP as a Graph (linear, relu, ..., linear)."""
    nodes, consts, cur = [], {}, "x"
    for k, (W, b) in enumerate(weights):
        consts[f"W{k}"] = torch.tensor(W, dtype=torch.float32)
        consts[f"b{k}"] = torch.tensor(b, dtype=torch.float32)
        nodes.append(Node(f"l{k}", "linear", [cur, f"W{k}", f"b{k}"], {}, (W.shape[0],)))
        cur = f"l{k}"
        if k < len(weights) - 1:
            nodes.append(Node(f"r{k}", "relu", [cur], {}, (W.shape[0],)))
            cur = f"r{k}"
    return Graph("x", (n_in,), nodes, consts, cur)


def random_mlp(seed: int, sizes=(5, 32, 32, 5)) -> Graph:
    rng = np.random.default_rng(seed)
    ws = [(rng.standard_normal((o, i)) / np.sqrt(i), rng.standard_normal(o) * 0.1) for i, o in zip(sizes, sizes[1:])]
    return mlp(ws, sizes[0])


def box_spec(lo, hi, C, d) -> Spec:
    lo, hi = np.asarray(lo, float), np.asarray(hi, float)
    C = np.atleast_2d(np.asarray(C, float))
    return Spec(len(lo), C.shape[1], [Disjunct(lo, hi, C, np.atleast_1d(np.asarray(d, float)))])


def planted_spec(graph: Graph, seed: int) -> Spec:
    """'output 0 is the largest' over a box, with d set so that only a small part of the box violates it."""
    rng = np.random.default_rng(seed)
    n_in, n_out = graph.input_size, graph.output_size
    lo, hi = -np.ones(n_in), np.ones(n_in)
    xs = lo + rng.random((20000, n_in)) * (hi - lo)
    ys = execute64(graph, xs)
    C = np.zeros((n_out - 1, n_out))
    for i in range(1, n_out):
        C[i - 1, 0], C[i - 1, i] = -1.0, 1.0   # y_i - y_0 <= d
    m = (ys @ C.T).max(axis=1)
    d = np.full(n_out - 1, np.quantile(m, 0.001))  # ~0.1 % of the box violates it
    return box_spec(lo, hi, C, d)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_planted_violation_found_and_verified(seed):
    g = random_mlp(seed)
    spec = planted_spec(g, seed)
    r = falsify(g, spec, time_budget=10.0, seed=seed)
    assert r.found, r
    cex = r.counterexample
    dj = spec.disjuncts[cex.disjunct]
    assert np.all(cex.x >= dj.lower) and np.all(cex.x <= dj.upper)
    y = execute64(g, cex.x[None])[0]
    np.testing.assert_array_equal(y, cex.y)
    assert spec.violated_by(cex.x, y, tol=0.0)
    assert r.best_margin <= 0.0


def test_safe_property_is_never_sat():
    # y = relu(x) - relu(-x) - x == 0 everywhere; unsafe iff y <= -1e-3: impossible
    W0 = np.array([[1.0], [-1.0]])
    W1 = np.array([[1.0, -1.0]])
    g = mlp([(W0, np.zeros(2)), (W1, np.zeros(1))], 1)  # y = relu(x) - relu(-x) = x
    spec = box_spec([0.5], [2.0], [[1.0]], [0.4999])     # unsafe iff x <= 0.4999 on [0.5, 2]
    r = falsify(g, spec, time_budget=0.5, seed=0)
    assert not r.found
    assert r.best_margin >= 0.0 and r.time_s < 2.0


def test_boundary_point_counts_exactly_and_tolerance_is_zero():
    g = mlp([(np.array([[1.0]]), np.zeros(1))], 1)       # y = x
    spec = box_spec([0.0], [1.0], [[1.0]], [0.25])        # unsafe iff y <= 0.25
    assert verify_candidates(g, spec, np.array([[0.25]])) is not None        # equality is a violation
    assert verify_candidates(g, spec, np.array([[0.25 + 1e-12]])) is None   # no output tolerance
    assert verify_candidates(g, spec, np.array([[-1e-12]])) is None          # outside the box, unclipped
    cex = verify_candidates(g, spec, np.array([[-0.5]]), disjunct=np.array([0]))  # clipped into the box
    assert cex is not None and cex.x[0] == 0.0


def test_second_input_box_and_disjunction():
    # two disjuncts with different boxes; only the second box contains a violation (x >= 2 -> y >= 2)
    g = mlp([(np.array([[1.0], [-1.0]]), np.zeros(2)), (np.array([[1.0, 0.0]]), np.zeros(1))], 1)  # y = relu(x)
    d1 = Disjunct(np.array([-1.0]), np.array([1.0]), np.array([[-1.0]]), np.array([-1.5]))   # y >= 1.5: no
    d2 = Disjunct(np.array([1.0]), np.array([3.0]), np.array([[-1.0]]), np.array([-2.9]))    # y >= 2.9: x>=2.9
    spec = Spec(1, 1, [d1, d2])
    r = falsify(g, spec, time_budget=5.0, seed=0)
    assert r.found and r.counterexample.disjunct == 1
    assert r.counterexample.x[0] >= 2.9


def test_deterministic_with_seed():
    g = random_mlp(7)
    spec = planted_spec(g, 7)
    a = falsify(g, spec, time_budget=10.0, seed=3)
    b = falsify(g, spec, time_budget=10.0, seed=3)
    assert a.found and b.found
    np.testing.assert_array_equal(a.counterexample.x, b.counterexample.x)


def test_margins_match_numpy():
    rng = np.random.default_rng(0)
    C1, C2 = rng.standard_normal((3, 4)), rng.standard_normal((1, 4))
    d1, d2 = rng.standard_normal(3), rng.standard_normal(1)
    lo, hi = np.zeros(2), np.ones(2)
    spec = Spec(2, 4, [Disjunct(lo, hi, C1, d1), Disjunct(lo, hi, C2, d2)])
    P = pack(spec, torch.float64)
    y = rng.standard_normal((6, 4))
    want = np.stack([(y @ C1.T - d1).max(1), (y @ C2.T - d2).max(1)], axis=1)
    got = all_margins(P, torch.tensor(y))
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-12)
    got1 = margins(P, torch.tensor(y), torch.tensor([0, 1, 0, 1, 0, 1]))
    np.testing.assert_allclose(got1.numpy(), want[np.arange(6), [0, 1, 0, 1, 0, 1]], rtol=1e-12)


def test_corners_enumerate_free_dimensions_only():
    lo, hi = np.array([0.0, 1.0, -1.0]), np.array([1.0, 1.0, 1.0])   # middle dimension is fixed
    P = pack(Spec(3, 1, [Disjunct(lo, hi, np.ones((1, 1)), np.zeros(1))]), torch.float64)
    x, r = corners(P, 16, torch.Generator().manual_seed(0))
    assert x.shape == (4, 3) and bool((r == 0).all())
    assert {tuple(v) for v in x.tolist()} == {(a, 1.0, b) for a in (0.0, 1.0) for b in (-1.0, 1.0)}


def test_degenerate_box_and_empty_constraint_rows():
    g = random_mlp(1)
    lo = hi = np.full(5, 0.3)
    y = execute64(g, lo[None])[0]
    spec = box_spec(lo, hi, [np.eye(5)[0]], [y[0]])  # the single point violates with equality
    r = falsify(g, spec, time_budget=2.0)
    assert r.found and np.array_equal(r.counterexample.x, lo)

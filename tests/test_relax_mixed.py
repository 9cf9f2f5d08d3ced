"""The issue's mixed test network: ReLU, sigmoid, sin, cos, x² and a product of two hidden values.

Bounds from IBP and CROWN / α-CROWN must contain the outputs of densely sampled inputs (so nothing they
prove is ever contradicted by a sample), and CROWN must be much tighter than IBP on a small box. The
product goes through the engine's backward step for `kind == "binary"` rules (verify/bounds/ops/product.py)."""
from __future__ import annotations

import pytest
import torch

from verify.bounds import AlphaOptions, compute
from verify.graph.ir import Graph, Node

D = torch.float64


def mixed_net(seed: int = 0, n_in: int = 4, w: int = 8) -> Graph:
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g, dtype=D)
    c = {"W0": r(w, n_in) / 2, "b0": r(w) * 0.2, "W1": r(w, w) / 3, "b1": r(w) * 0.2, "W2": r(w, w) / 3,
         "b2": r(w) * 0.2, "W3": r(w, w) / 3, "W4": r(w, w // 2) / 2, "Wo": r(2, w + w // 2) / 3, "p2": torch.tensor(2.0, dtype=D)}
    h = w // 2
    nodes = [
        Node("z0", "linear", ["x", "W0", "b0"], {}, (w,)), Node("a0", "relu", ["z0"], {}, (w,)),
        Node("z1", "linear", ["a0", "W1", "b1"], {}, (w,)), Node("a1", "sigmoid", ["z1"], {}, (w,)),
        Node("z2", "linear", ["a1", "W2", "b2"], {}, (w,)), Node("s", "sin", ["z2"], {}, (w,)),
        Node("c", "cos", ["z2"], {}, (w,)),
        Node("z3", "linear", ["s", "W3"], {}, (w,)), Node("q", "pow", ["z3", "p2"], {}, (w,)),
        Node("left", "slice", ["c"], {"axes": [1], "starts": [0], "ends": [h], "steps": [1]}, (h,)),
        Node("right", "slice", ["q"], {"axes": [1], "starts": [h], "ends": [w], "steps": [1]}, (h,)),
        Node("prod", "mul", ["left", "right"], {}, (h,)),
        Node("z4", "linear", ["prod", "W4"], {}, (w,)),
        Node("cat", "concat", ["z4", "prod"], {"axis": 1}, (w + h,)),
        Node("y", "linear", ["cat", "Wo"], {}, (2,)),
    ]
    return Graph("x", (n_in,), nodes, c, "y")


def _samples(g, lo, hi, n=20000, seed=3):
    gen = torch.Generator().manual_seed(seed)
    t = torch.rand(n, g.input_size, generator=gen, dtype=D)
    x = lo + t * (hi - lo)
    return g.forward(x)


@pytest.mark.parametrize("eps", [0.02, 0.3])
def test_ibp_contains_dense_samples(eps):
    g = mixed_net()
    x0 = torch.full((1, 4), 0.1, dtype=D)
    lo, hi = compute(g, x0 - eps, x0 + eps, method="ibp")
    ys = _samples(g, x0 - eps, x0 + eps)
    assert float((lo - ys).max()) <= 1e-9 and float((ys - hi).max()) <= 1e-9


@pytest.mark.parametrize("eps", [0.02, 0.3])
def test_crown_verifies_and_falsifies_consistently_with_sampling(eps):
    g = mixed_net()
    x0 = torch.full((1, 4), 0.1, dtype=D)
    ys = _samples(g, x0 - eps, x0 + eps)
    lo_i, hi_i = compute(g, x0 - eps, x0 + eps, method="ibp")
    lo, hi = compute(g, x0 - eps, x0 + eps, method="crown")
    lo_a, hi_a = compute(g, x0 - eps, x0 + eps, method="alpha-crown",
                         alpha=AlphaOptions(iterations=10, stop_when_positive=False))
    for l_, h_ in ((lo, hi), (lo_a, hi_a)):
        assert float((l_ - ys).max()) <= 1e-9 and float((ys - h_).max()) <= 1e-9
    assert float(((hi - lo) - (hi_i - lo_i)).max()) <= 1e-9
    # a property "y_k >= t" with t below the α-CROWN bound is proven; sampling finds no violation of it
    # (containment above), and the gap to the sampled minimum is small on the small box
    gap_a = ys.amin(0) - lo_a[0]
    gap_i = ys.amin(0) - lo_i[0]
    assert torch.all(gap_a >= -1e-9) and torch.all(gap_a <= gap_i + 1e-9)
    if eps == 0.02:  # small box: CROWN is much tighter than IBP
        assert float((hi - lo).sum()) < 0.7 * float((hi_i - lo_i).sum())

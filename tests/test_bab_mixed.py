"""`verify.check` (falsification + bounds + branch and bound) on the issue's mixed network (ReLU, sigmoid, sin,
cos, x² and a product of two hidden values), cross-checked by dense sampling: a threshold below the
sampled maximum must be falsified with a real counterexample; one above it (by a margin) must be proven,
with input splitting and with activation splitting (GenBaB on the sigmoid/sin/cos/pow neurons)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from test_relax_mixed import _samples, mixed_net
from verify.api import check
from verify.settings import Settings
from verify.spec.spec import Disjunct, Spec


def _spec_y0_at_least(t: float, lo, hi) -> Spec:
    return Spec(4, 2, [Disjunct(lo.numpy()[0], hi.numpy()[0], np.array([[-1.0, 0.0]]), np.array([-t]))])


@pytest.mark.parametrize("split", ["input", "activation"])
def test_mixed_network_verified_and_falsified(split):
    g = mixed_net()
    x0 = torch.full((1, 4), 0.1, dtype=torch.float64)
    lo, hi = x0 - 0.05, x0 + 0.05
    ys = _samples(g, lo, hi, n=50000)
    ymax, ymin = float(ys[:, 0].max()), float(ys[:, 0].min())
    span = ymax - ymin
    settings = Settings(timeout=30, split=split, dtype="float64", seed=0)
    safe = check(g, _spec_y0_at_least(ymax + 0.05 * span, lo, hi), settings)
    assert safe.verdict == "unsat", safe.note
    bad = check(g, _spec_y0_at_least(ymax - 0.05 * span, lo, hi), settings)
    assert bad.verdict == "sat"
    y = g.forward(torch.as_tensor(bad.x).reshape(1, 4))
    assert float(y[0, 0]) >= ymax - 0.05 * span


def test_product_of_two_hidden_values_is_split():
    """y = a(x)·b(x) for two hidden linear neurons: McCormick planes alone cannot prove a threshold close to
    the true maximum; splitting the factors (activation-split search) must."""
    from verify.graph.ir import Graph, Node

    D = torch.float64
    c = {"Wa": torch.tensor([[1.0, 0.5]], dtype=D), "Wb": torch.tensor([[0.7, -1.0]], dtype=D),
         "ba": torch.tensor([0.2], dtype=D), "bb": torch.tensor([0.1], dtype=D)}
    g = Graph("x", (2,), [Node("a", "linear", ["x", "Wa", "ba"], {}, (1,)), Node("b", "linear", ["x", "Wb", "bb"], {}, (1,)),
                          Node("y", "mul", ["a", "b"], {}, (1,))], c, "y")
    lo, hi = -torch.ones(1, 2, dtype=D), torch.ones(1, 2, dtype=D)
    grid = torch.stack(torch.meshgrid(torch.linspace(-1, 1, 401, dtype=D), torch.linspace(-1, 1, 401, dtype=D),
                                      indexing="ij"), -1).reshape(-1, 2)
    ys = g.forward(grid)[:, 0]
    ymax = float(ys.max())  # a·b is bilinear in x: its max over the box lies on the grid's boundary lines
    from verify.bounds import compute

    root_upper = float(compute(g, lo, hi, method="crown")[1][0, 0])
    t = ymax + 0.05
    assert root_upper > t  # the root relaxation alone cannot prove it
    spec = Spec(2, 1, [Disjunct(lo.numpy()[0], hi.numpy()[0], np.array([[-1.0]]), np.array([-t]))])
    res = check(g, spec, Settings(timeout=30, split="activation", dtype="float64", attack_share=0.0, attack_min_s=0.0))
    assert res.verdict == "unsat", res.note
    assert res.domains > 1

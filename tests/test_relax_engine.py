"""End to end: networks with the new unary relaxations (sin, cos, x², x³, exp, gelu, erf, softplus, abs,
clip, softmax, log/sqrt on positive values) bounded by IBP, CROWN and α-CROWN through the existing engine;
the bounds must contain the outputs of densely sampled inputs (float64), and CROWN must be no looser than
IBP on these small boxes."""
from __future__ import annotations

import pytest
import torch

from verify.bounds import AlphaOptions, compute
from verify.graph.ir import Graph, Node

D = torch.float64


def _net(acts: list[tuple[str, dict, list]], width: int = 6, n_in: int = 3, seed: int = 0) -> Graph:
    """linear -> act -> linear -> act ... -> linear(2); an act entry is (op, attrs, extra const inputs) or
    (op, attrs, extra, True) to apply it directly to the previous activation (no linear layer between)."""
    g = torch.Generator().manual_seed(seed)
    nodes, consts = [], {}
    prev, d = "x", n_in
    for i, (op, attrs, extra, *direct) in enumerate(acts):
        if direct:
            ins = [prev]
        else:
            consts[f"W{i}"] = torch.randn(width, d, generator=g, dtype=D) / d ** 0.5
            consts[f"b{i}"] = torch.randn(width, generator=g, dtype=D) * 0.3
            nodes.append(Node(f"z{i}", "linear", [prev, f"W{i}", f"b{i}"], {}, (width,)))
            ins = [f"z{i}"]
        for j, c in enumerate(extra):
            consts[f"c{i}_{j}"] = torch.as_tensor(c, dtype=D)
            ins.append(f"c{i}_{j}")
        nodes.append(Node(f"a{i}", op, ins, dict(attrs), (width,)))
        prev, d = f"a{i}", width
    consts["Wo"] = torch.randn(2, d, generator=g, dtype=D) / d ** 0.5
    nodes.append(Node("y", "linear", [prev, "Wo"], {}, (2,)))
    return Graph("x", (n_in,), nodes, consts, "y")


NETS = {
    "sin_cos_sq": [("sin", {}, []), ("cos", {}, []), ("pow", {}, [2.0])],
    "gelu_erf_cube": [("gelu", {}, []), ("erf", {}, []), ("pow", {}, [3.0])],
    "exp_softplus_abs": [("softplus", {}, []), ("abs", {}, []), ("exp", {}, [])],
    "clip_tanhgelu": [("clip", {"min": -0.5, "max": 0.7}, []), ("gelu", {"approximate": "tanh"}, [])],
    "sqrt_log_recip": [("softplus", {}, []), ("sqrt", {}, [], True), ("exp", {}, []), ("log", {}, [], True),
                       ("exp", {}, []), ("reciprocal", {}, [], True)],
    "softmax": [("sin", {}, []), ("softmax", {"axis": 1}, [])],
}


@pytest.mark.parametrize("name", sorted(NETS))
@pytest.mark.parametrize("eps", [0.05, 0.5])
def test_bounds_contain_sampled_outputs(name, eps):
    g = _net(NETS[name], n_in=3 if name != "softmax" else 20)
    gen = torch.Generator().manual_seed(1)
    x0 = torch.randn(2, g.input_size, generator=gen, dtype=D)
    lo_in, hi_in = x0 - eps, x0 + eps
    xs = lo_in.unsqueeze(1) + torch.rand(2, 4000, g.input_size, generator=gen, dtype=D) * (2 * eps)
    ys = g.forward(xs.reshape(-1, g.input_size)).reshape(2, 4000, 2)
    res = {}
    for method in ("ibp", "crown", "alpha-crown"):
        opts = AlphaOptions(iterations=8, stop_when_positive=False) if method == "alpha-crown" else None
        lo, hi = compute(g, lo_in, hi_in, method=method, alpha=opts)
        assert torch.isfinite(lo).all() and torch.isfinite(hi).all(), method
        assert float((lo.unsqueeze(1) - ys).max()) <= 1e-9, method
        assert float((ys - hi.unsqueeze(1)).max()) <= 1e-9, method
        res[method] = (hi - lo)
    assert float((res["crown"] - res["ibp"]).max()) <= 1e-9
    assert float((res["alpha-crown"] - res["crown"]).max()) <= 1e-9


def test_crown_tighter_than_ibp_on_a_small_box():
    g = _net(NETS["sin_cos_sq"])
    x0 = torch.zeros(1, 3, dtype=D)
    lo_i, hi_i = compute(g, x0 - 0.05, x0 + 0.05, method="ibp")
    lo_c, hi_c = compute(g, x0 - 0.05, x0 + 0.05, method="crown")
    assert float((hi_c - lo_c).sum()) < 0.9 * float((hi_i - lo_i).sum())

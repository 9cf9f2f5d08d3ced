"""End-to-end soundness of IBP, CROWN and α-CROWN on random networks of every supported operator mix.

For random boxes (a batch of sub-domains at once) we sample 10^4 inputs, run the network concretely, and
check every output lies inside every method's bounds; plus the ordering facts the methods promise.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from verify.bounds import AlphaOptions, compute
from verify.importers.torch import load_torch
from verify.nn import GroupSort

torch.set_num_threads(1)
ACTS = {"relu": nn.ReLU, "leakyrelu": lambda: nn.LeakyReLU(0.1), "sigmoid": nn.Sigmoid, "tanh": nn.Tanh}


class Residual(nn.Module):
    def __init__(self, width: int, act):
        super().__init__()
        self.inp = nn.Linear(4, width)
        self.a = nn.Linear(width, width)
        self.b = nn.Linear(width, width)
        self.act = act()
        self.out = nn.Linear(2 * width, 3)

    def forward(self, x):
        h = self.act(self.inp(x))
        r = h + self.b(self.act(self.a(h)))          # residual addition of two variables
        z = torch.cat([r[:, : r.shape[1] // 2] * 2.0, -r[:, r.shape[1] // 2:] / 3.0, r - 0.5], dim=1)
        return self.out(z[:, : 2 * r.shape[1]])


class SmallCNN(nn.Module):
    def __init__(self, act):
        super().__init__()
        self.c1 = nn.Conv2d(1, 3, 3, stride=1, padding=1)
        self.c2 = nn.Conv2d(3, 4, 3, stride=2, padding=0)
        self.pool = nn.AvgPool2d(2)
        self.act = act()
        self.fc = nn.Linear(4 * 1 * 1, 5)

    def forward(self, x):
        h = self.act(self.c1(x))
        h = self.act(self.c2(h))
        h = self.pool(h)
        return self.fc(torch.flatten(h, 1))


def mlp(act, sizes=(4, 16, 16, 3)):
    layers = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(ACTS[act]())
    return nn.Sequential(*layers)


def _cases():
    for act in ACTS:
        yield f"mlp-{act}", (lambda a=act: mlp(a)), (4,)
        yield f"res-{act}", (lambda a=act: Residual(8, ACTS[a])), (4,)
    yield "cnn-relu", (lambda: SmallCNN(nn.ReLU)), (1, 6, 6)
    yield "cnn-sigmoid", (lambda: SmallCNN(nn.Sigmoid)), (1, 6, 6)


def _sample(lo, hi, n):
    r = torch.rand(lo.shape[0], n, *lo.shape[1:], dtype=lo.dtype)
    return lo.unsqueeze(1) + (hi - lo).unsqueeze(1) * r


@pytest.mark.parametrize("name,make,shape", list(_cases()), ids=[c[0] for c in _cases()])
@pytest.mark.parametrize("width", [0.0, 0.1, 2.0])
def test_outputs_inside_bounds(name, make, shape, width):
    torch.manual_seed(hash((name, width)) % 2**31)
    module = make().double().eval()
    g = load_torch(module, shape)
    B, n = 3, 10_000 // 3
    centre = torch.randn(B, *shape, dtype=torch.float64)
    lo, hi = centre - width / 2, centre + width / 2
    xs = _sample(lo, hi, n).reshape(B * n, *shape)
    xs = torch.cat([xs, lo, hi])  # the corners l = u cases included
    with torch.no_grad():
        ys = module(xs)
    y_box = ys[: B * n].reshape(B, n, -1)
    for method in ["ibp", "crown-ibp", "crown", "alpha-crown"]:
        l, u = compute(g, lo, hi, method=method, alpha=AlphaOptions(iterations=5, stop_when_positive=False))
        l, u = l.reshape(B, 1, -1), u.reshape(B, 1, -1)
        tol = 1e-9 * (1 + y_box.abs().max())
        assert (y_box >= l - tol).all(), f"{method}: lower bound above a sampled output"
        assert (y_box <= u + tol).all(), f"{method}: upper bound below a sampled output"
        assert torch.isfinite(l).all() and torch.isfinite(u).all()


@pytest.mark.parametrize("act", ["relu", "leakyrelu"])
def test_crown_not_looser_than_ibp_on_relu_mlps(act):
    torch.manual_seed(1)
    g = load_torch(mlp(act, (5, 30, 30, 30, 4)).double(), (5,))
    lo = torch.rand(4, 5, dtype=torch.float64)
    hi = lo + 0.3
    li, ui = compute(g, lo, hi, method="ibp")
    lc, uc = compute(g, lo, hi, method="crown")
    assert (lc >= li - 1e-9).all() and (uc <= ui + 1e-9).all()
    assert (uc - lc).sum() < (ui - li).sum()


@pytest.mark.parametrize("act", ["relu", "sigmoid", "tanh"])
def test_alpha_crown_at_least_crown(act):
    torch.manual_seed(2)
    g = load_torch(mlp(act, (5, 20, 20, 3)).double(), (5,))
    lo = torch.rand(2, 5, dtype=torch.float64)
    hi = lo + 0.5
    C = torch.randn(2, 4, 3, dtype=torch.float64)
    lc, _ = compute(g, lo, hi, method="crown", C=C)
    la, _ = compute(g, lo, hi, method="alpha-crown", C=C, alpha=AlphaOptions(iterations=15, stop_when_positive=False))
    assert (la >= lc - 1e-9).all()


def test_batch_of_boxes_equals_one_by_one():
    torch.manual_seed(3)
    g = load_torch(mlp("relu", (5, 20, 20, 5)).double(), (5,))
    lo = torch.rand(8, 5, dtype=torch.float64) - 0.5
    hi = lo + torch.rand(8, 5, dtype=torch.float64) * 0.2
    lb, ub = compute(g, lo, hi, method="crown")
    for i in range(8):
        l1, u1 = compute(g, lo[i:i + 1], hi[i:i + 1], method="crown")
        assert torch.allclose(l1, lb[i:i + 1], atol=1e-9) and torch.allclose(u1, ub[i:i + 1], atol=1e-9)


def test_ibp_and_crown_differentiable_wrt_weights():
    torch.manual_seed(4)
    m = mlp("relu", (4, 8, 3))
    g = load_torch(m, (4,))
    lo = torch.zeros(2, 4)
    hi = torch.ones(2, 4) * 0.1
    for method in ["ibp", "crown-ibp", "crown"]:
        m.zero_grad()
        l, u = compute(g, lo, hi, method=method)
        (u - l).sum().backward()
        assert m[0].weight.grad is not None and m[0].weight.grad.abs().sum() > 0


class PoolNet(nn.Module):
    """MaxPool (with padding), MaxMin pairs and elementwise max/min: lowered to ReLUs for bounding."""

    def __init__(self):
        super().__init__()
        self.c = nn.Conv2d(1, 2, 3, padding=1)
        self.pool = nn.MaxPool2d(3, stride=2, padding=1)
        self.fc = nn.Linear(2 * 3 * 3, 6)
        self.out = nn.Linear(6, 3)
        self.maxmin = GroupSort(2)

    def forward(self, x):
        h = self.pool(torch.relu(self.c(x)))
        z = self.maxmin(self.fc(torch.flatten(h, 1)))
        return self.out(torch.maximum(z, -z) - torch.minimum(z, z * 0.5))


@pytest.mark.parametrize("width", [0.0, 0.2, 1.5])
def test_maxpool_and_maxmin_lowering_sound(width):
    torch.manual_seed(7)
    m = PoolNet().double().eval()
    g = load_torch(m, (1, 6, 6))
    from verify.bounds import engine_for

    low = engine_for(g).graph
    assert "maxpool" not in low.op_types() and "groupsort" not in low.op_types()
    x = torch.randn(20, 1, 6, 6, dtype=torch.float64)
    assert torch.allclose(low.forward(x), m(x), atol=1e-12)  # the rewrite is exact
    B, n = 2, 5000
    centre = torch.randn(B, 1, 6, 6, dtype=torch.float64)
    lo, hi = centre - width / 2, centre + width / 2
    xs = _sample(lo, hi, n).reshape(B * n, 1, 6, 6)
    with torch.no_grad():
        ys = m(xs).reshape(B, n, -1)
    for method in ["ibp", "crown", "alpha-crown"]:
        l, u = compute(g, lo, hi, method=method, alpha=AlphaOptions(iterations=5, stop_when_positive=False))
        assert (ys >= l.reshape(B, 1, -1) - 1e-9).all() and (ys <= u.reshape(B, 1, -1) + 1e-9).all()


def test_sparse_intermediate_path_matches_dense(monkeypatch):
    """Domains with few unstable neurons each (but a large union) take the per-(domain, neuron) path;
    its bounds must equal the dense path's."""
    torch.manual_seed(5)
    g = load_torch(mlp("relu", (20, 40, 40, 40, 3)).double(), (20,))
    from verify.bounds import engine_for
    from verify.bounds.crown import BoundEngine

    eng = engine_for(g)
    centre = torch.randn(16, 20, dtype=torch.float64)
    width = torch.where(torch.arange(16) % 4 == 0, 0.5, 1e-3).to(torch.float64).unsqueeze(1)
    lo, hi = centre - width, centre + width
    calls = []
    orig = BoundEngine._tighten_sparse
    monkeypatch.setattr(BoundEngine, "_tighten_sparse", lambda self, *a: calls.append(1) or orig(self, *a))
    ls, us = eng.compute(lo, hi, method="crown", intermediate="backward")
    assert calls, "the sparse path was not exercised"
    monkeypatch.setattr(BoundEngine, "_tighten_sparse", lambda self, node, l, u, needf, *a: (l, u))
    dense = [eng.compute(lo[i:i + 1], hi[i:i + 1], method="crown", intermediate="backward") for i in range(16)]
    ld = torch.cat([d[0] for d in dense])
    ud = torch.cat([d[1] for d in dense])
    assert torch.allclose(ls, ld, atol=1e-9) and torch.allclose(us, ud, atol=1e-9)


@pytest.mark.parametrize("act", ["relu", "sigmoid"])
@pytest.mark.parametrize("per_row", [True, False])
def test_optimised_intermediate_bounds_contain_samples(act, per_row, monkeypatch):
    """α-CROWN with optimised intermediate bounds (per-neuron parameters, or shared ones past the memory
    cap): every intermediate value and the objective of 10^4 sampled inputs lie inside the bounds."""
    import verify.bounds.alpha as alpha_mod
    from verify.bounds import alpha_crown, engine_for

    if not per_row:
        monkeypatch.setattr(alpha_mod, "ROW_ALPHA_MAX_ELEMENTS", 0)
    torch.manual_seed(4)
    module = mlp(act, (5, 24, 24, 24, 24, 4)).double().eval()
    g = load_torch(module, (5,))
    eng = engine_for(g)
    lo = torch.rand(2, 5, dtype=torch.float64) - 0.5
    hi = lo + 0.6
    C = torch.randn(2, 3, 4, dtype=torch.float64)
    lb, bounds, alphas = alpha_crown(eng, lo, hi, C, AlphaOptions(iterations=15, lr=0.3, optimize_intermediate=True,
                                                                  stop_when_positive=False), return_state=True)
    rows_used = any(getattr(grp, "axis", None) for k, grp in alphas.items() if k != "__output__")
    assert rows_used == (per_row and act == "relu")  # per-row intermediate α: ReLU slopes only
    xs = _sample(lo, hi, 5000)
    with torch.no_grad():
        vals = g.forward(xs.reshape(-1, 5), return_all=True)
    for name, (l, u) in bounds.items():
        if name == g.input_name or name not in vals:
            continue
        v = vals[name].reshape(2, 5000, -1)
        assert (v >= l.reshape(2, 1, -1) - 1e-9).all() and (v <= u.reshape(2, 1, -1) + 1e-9).all(), name
    cy = torch.einsum("bso,bno->bns", C, vals[g.output].reshape(2, 5000, -1))
    assert (cy >= lb.unsqueeze(1) - 1e-9).all()

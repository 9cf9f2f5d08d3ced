"""The IBP tightness metric (Mao et al. 2024): exact values on small nets, and the paper's two trends."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from verify.datasets import load_digits
from verify.importers.torch import load_torch
from verify.train.certified import TrainConfig, margin_matrix, train
from verify.train.models import mlp
from verify.train.tightness import tightness


@pytest.fixture(scope="module")
def digits():
    x, y = load_digits("train")
    return torch.as_tensor(x), torch.as_tensor(y)


def test_single_affine_layer_is_exact(digits):
    x, y = digits
    torch.manual_seed(0)
    m = mlp((1, 8, 8), 10, hidden=())
    assert float(tightness(m, x[:50], y[:50])) == pytest.approx(1.0, abs=1e-6)


def test_matches_explicit_matrix_formula():
    """Two-layer ReLU net: tightness = mean over margins of |C W2 D W1| 1 / (|C W2| D |W1| 1)."""
    torch.manual_seed(1)
    m = nn.Sequential(nn.Linear(5, 7), nn.ReLU(), nn.Linear(7, 3))
    x = torch.randn(4, 5)
    y = torch.tensor([0, 1, 2, 1])
    W1, b1, W2 = m[0].weight.detach(), m[0].bias.detach(), m[2].weight.detach()
    C = margin_matrix(y, 3)
    expect = []
    for i in range(4):
        D = torch.diag(((W1 @ x[i] + b1) > 0).float())
        opt = (C[i] @ W2 @ D @ W1).abs().sum(1)
        ibp = (C[i] @ W2).abs() @ D @ W1.abs() @ torch.ones(5)
        expect.append((opt / ibp).mean())
    got = tightness(m, x, y, reduce=False)
    assert torch.allclose(got, torch.stack(expect), rtol=1e-5)
    assert float(tightness(load_torch(m, (5,)), x, y)) == pytest.approx(float(torch.stack(expect).mean()), rel=1e-5)


def test_in_unit_interval_for_cnn(digits):
    x, y = digits
    torch.manual_seed(0)
    from verify.train.models import build_model

    t = tightness(build_model("cnn-tiny", (1, 8, 8)), x[:64], y[:64], reduce=False)
    assert t.shape == (64,)
    assert bool(((t > 0) & (t <= 1 + 1e-6)).all())


def test_trend_falls_with_depth_at_initialisation(digits):
    """Paper trend 1: at (standard) initialisation tightness decreases as the network gets deeper."""
    x, y = digits
    means = []
    for depth in range(1, 5):
        vals = []
        for seed in range(3):
            torch.manual_seed(seed)
            vals.append(float(tightness(mlp((1, 8, 8), 10, hidden=(64,) * depth), x[:100], y[:100])))
        means.append(sum(vals) / len(vals))
    assert all(a > 1.5 * b for a, b in zip(means, means[1:])), means
    assert means[-1] < 0.05


def test_trend_ibp_training_raises_tightness(digits):
    """Paper trend 2: after IBP training tightness is far higher than after standard training."""
    x, y = digits
    x, y = x[:800], y[:800]
    result = {}
    for method in ("standard", "ibp"):
        torch.manual_seed(0)
        m = mlp((1, 8, 8), 10, hidden=(64, 64))
        cfg = TrainConfig(method=method, eps=0.05, epochs=8, batch_size=64, lr=2e-3, ramp_epochs=3,
                          tightness_samples=0, seed=0)
        train(m, x, y, cfg)
        result[method] = float(tightness(m, x[:200], y[:200]))
    assert result["ibp"] > 0.3, result
    assert result["ibp"] > 2.5 * result["standard"], result

"""Certified training: schedule, margins, elided IBP bounds, initialisation, regulariser, BatchNorm, the
three training methods end to end on the 8x8 digits, and evaluation."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from verify.bounds import compute
from verify.datasets import load_digits
from verify.importers.torch import load_torch
from verify.train.certified import (EpsSchedule, TrainConfig, ibp_init_, ibp_margins, margin_matrix, robust_ce,
                                    sabr_box, train, warmup_regularizer)
from verify.train.evaluate import certified_mask, elided_graph, evaluate, margin_rows
from verify.train.models import build_model, mlp

EPS = 0.05


@pytest.fixture(scope="module")
def digits():
    xtr, ytr = load_digits("train")
    xte, yte = load_digits("test")
    return torch.as_tensor(xtr), torch.as_tensor(ytr), torch.as_tensor(xte), torch.as_tensor(yte)


@pytest.fixture(scope="module")
def trained(digits):
    """The same small MLP trained with IBP and with standard training (shared by several tests)."""
    xtr, ytr, _, _ = digits
    out = {}
    for method in ("ibp", "standard"):
        torch.manual_seed(0)
        m = mlp((1, 8, 8), 10, hidden=(64, 64))
        cfg = TrainConfig(method=method, eps=EPS, epochs=8, batch_size=64, lr=2e-3, ramp_epochs=3,
                          tightness_samples=128, seed=0)
        out[method] = train(m, xtr, ytr, cfg)
    return out


# ---------------------------------------------------------------------------------------- pieces
def test_eps_schedule_is_smooth_monotone_and_reaches_target():
    s = EpsSchedule(0.3, warmup_steps=10, ramp_steps=100)
    vals = [s(t) for t in range(130)]
    assert vals[:10] == [0.0] * 10
    assert all(b >= a for a, b in zip(vals, vals[1:]))
    assert vals[110] == pytest.approx(0.3) and vals[-1] == pytest.approx(0.3)
    # the polynomial and linear pieces meet with the same value and slope at the mid point
    m = s.warmup_steps + s.mid * s.ramp_steps
    left, right = s(int(m) - 1), s(int(m) + 1)
    assert abs((right - s(int(m))) - (s(int(m)) - left)) < 1e-3 * 0.3
    assert s(int(m)) < 0.3 * s.mid  # slower than linear at first


def test_margin_matrix_rows():
    y = torch.tensor([0, 3, 9])
    C = margin_matrix(y, 10)
    assert C.shape == (3, 9, 10)
    logits = torch.randn(3, 10)
    m = torch.einsum("bsk,bk->bs", C, logits)
    for b in range(3):
        others = [j for j in range(10) if j != y[b]]
        assert torch.allclose(m[b], logits[b, y[b]] - logits[b, others])
    assert torch.equal(margin_rows(3, 10), C[1])


def test_robust_ce_equals_ce_of_logits_when_bounds_are_exact():
    logits = torch.randn(5, 10)
    y = torch.randint(0, 10, (5,))
    lb = torch.einsum("bsk,bk->bs", margin_matrix(y, 10), logits)
    assert robust_ce(lb).item() == pytest.approx(nn.functional.cross_entropy(logits, y).item(), rel=1e-5)


@pytest.mark.parametrize("model", ["mlp", "cnn-tiny"])
def test_elided_ibp_is_sound_tighter_and_matches_compute(model):
    torch.manual_seed(0)
    net = build_model(model, (1, 8, 8))
    g = load_torch(net, (1, 8, 8))
    x = torch.rand(6, 1, 8, 8)
    y = torch.randint(0, 10, (6,))
    C = margin_matrix(y, 10)
    lo, hi = (x - 0.1).clamp(0, 1), (x + 0.1).clamp(0, 1)
    lb, _ = ibp_margins(g, lo, hi, C)
    plain, _ = compute(g, lo, hi, method="ibp", C=C)
    assert bool((lb >= plain - 1e-5).all()) and bool((lb > plain + 1e-4).any())
    # sound: below the margins at sampled points of the box
    for _ in range(20):
        pts = lo + torch.rand_like(x) * (hi - lo)
        true = torch.einsum("bsk,bk->bs", C, net(pts))
        assert bool((lb <= true + 1e-5).all())
    # the evaluation path (compute on the per-label elided graph) gives the same numbers
    for i in range(6):
        ge = elided_graph(g, margin_rows(int(y[i]), 10))
        lbe, _ = compute(ge, lo[i:i + 1], hi[i:i + 1], method="ibp")
        assert torch.allclose(lbe[0], lb[i], atol=1e-5)


def test_margins_are_differentiable_wrt_weights():
    torch.manual_seed(0)
    net = build_model("cnn-tiny", (1, 8, 8))
    g = load_torch(net, (1, 8, 8))
    x = torch.rand(4, 1, 8, 8)
    C = margin_matrix(torch.tensor([1, 2, 3, 4]), 10)
    lb, _ = ibp_margins(g, x - 0.05, x + 0.05, C)
    robust_ce(lb).backward()
    assert all(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in net.parameters())


def test_ibp_init_standard_deviation():
    torch.manual_seed(0)
    net = mlp((784,), 10, hidden=(400, 400))
    ibp_init_(net)
    for layer, fan_in in ((net[1], 784), (net[3], 400)):
        assert float(layer.weight.detach().std()) == pytest.approx(math.sqrt(2 * math.pi) / fan_in, rel=0.02)
    # the last layer keeps its initialisation
    assert float(net[5].weight.detach().std()) > 2 * math.sqrt(2 * math.pi) / 400


def test_ibp_init_keeps_box_radius_stable():
    """Shi et al.'s point: with IBP init the box radius grows far less with depth than with the default."""
    x = torch.rand(32, 100)
    ratios = {}
    for init in (False, True):
        torch.manual_seed(0)
        net = mlp((100,), 10, hidden=(100,) * 6)
        if init:
            ibp_init_(net)
        g = load_torch(net, (100,))
        from verify.bounds.interval import ibp

        b = ibp(g, x - 0.01, x + 0.01, return_all=True)
        pre = [n.inputs[0] for n in g.nodes if n.op == "relu"]
        r = [float(((b[v][1] - b[v][0]) / 2).mean().detach()) for v in pre]
        ratios[init] = r[-1] / r[0]
    assert ratios[True] < 0.2 * ratios[False], ratios


def test_warmup_regularizer_is_finite_and_differentiable():
    torch.manual_seed(0)
    net = build_model("mlp", (1, 8, 8))
    g = load_torch(net, (1, 8, 8))
    x = torch.rand(16, 1, 8, 8)
    C = margin_matrix(torch.randint(0, 10, (16,)), 10)
    _, bounds = ibp_margins(g, x - 0.1, x + 0.1, C, keep_bounds=True)
    reg = warmup_regularizer(g, bounds)
    assert torch.isfinite(reg) and float(reg.detach()) >= 0
    reg.backward()
    assert net[1].weight.grad is not None


def test_sabr_box_inside_eps_box():
    x = torch.rand(50, 64)
    lo, hi = (x - 0.1).clamp(0, 1), (x + 0.1).clamp(0, 1)
    xa = lo + torch.rand_like(x) * (hi - lo)
    a, b = sabr_box(xa, lo, hi, 0.3, 0.1)
    assert bool((a >= lo - 1e-7).all() & (b <= hi + 1e-7).all() & (a <= xa + 1e-7).all() & (b >= xa - 1e-7).all())
    assert torch.allclose((b - a)[(hi - lo) > 0.06], torch.tensor(0.06), atol=1e-6)


# ---------------------------------------------------------------------------------------- training
def test_ibp_training_certifies_far_more_than_standard(trained, digits):
    _, _, xte, yte = digits
    cert = {k: float(certified_mask(r.graph, xte, yte, EPS, "ibp").float().mean()) for k, r in trained.items()}
    assert cert["ibp"] > 0.5, cert
    assert cert["ibp"] > cert["standard"] + 0.3, cert
    h = trained["ibp"].history
    assert len(h) == 8 and h[0].eps == 0.0 and h[-1].eps == pytest.approx(EPS)
    assert h[-1].tightness > h[0].tightness


def test_evaluate_orders_metrics(trained, digits):
    _, _, xte, yte = digits
    r = trained["ibp"]
    res = evaluate(r.model, xte[:150], yte[:150], EPS, methods=("ibp", "crown-ibp", "crown"), graph=r.graph)
    for k in ("clean_acc", "pgd_acc", "ibp_cert_acc", "crown_cert_acc"):
        assert 0.0 <= res[k] <= 1.0
    assert res["clean_acc"] >= res["pgd_acc"] >= res["crown_cert_acc"] >= res["ibp_cert_acc"]
    # CROWN certifies every image IBP certifies
    ibp = certified_mask(r.graph, xte[:150], yte[:150], EPS, "ibp")
    crown = certified_mask(r.graph, xte[:150], yte[:150], EPS, "crown")
    assert bool((crown | ~ibp).all())


@pytest.mark.parametrize("method", ["crown-ibp", "sabr"])
def test_other_methods_train_end_to_end(method, digits):
    xtr, ytr, xte, yte = digits
    torch.manual_seed(0)
    m = mlp((1, 8, 8), 10, hidden=(64, 64))
    cfg = TrainConfig(method=method, eps=EPS, epochs=5, batch_size=64, lr=2e-3, ramp_epochs=2,
                      tightness_samples=0, seed=0)
    res = train(m, xtr[:640], ytr[:640], cfg)
    assert res.history[-1].eps == pytest.approx(EPS)
    assert all(math.isfinite(h.loss) for h in res.history)
    acc = float((m(xte).argmax(1) == yte).float().mean())
    assert acc > 0.5
    crown = float(certified_mask(res.graph, xte[:100], yte[:100], EPS, "crown").float().mean())
    assert crown > 0.2


def test_training_is_deterministic(digits):
    xtr, ytr, _, _ = digits
    outs = []
    for _ in range(2):
        torch.manual_seed(5)
        m = mlp((1, 8, 8), 10, hidden=(32,))
        cfg = TrainConfig(eps=EPS, epochs=2, batch_size=128, tightness_samples=0, seed=3)
        train(m, xtr[:256], ytr[:256], cfg)
        outs.append(torch.cat([p.detach().flatten() for p in m.parameters()]))
    assert torch.equal(outs[0], outs[1])


def test_batchnorm_bounds_use_clean_batch_statistics(digits):
    """A BatchNorm model trains; during the bound pass the graph reads the clean batch's statistics,
    and afterwards the graph is back on the running statistics (its inference function)."""
    xtr, ytr, _, _ = digits
    torch.manual_seed(0)
    m = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Linear(32, 10))
    seen = []
    from verify.train import certified as cert_mod

    orig = cert_mod.training_bounds

    def spy(cfg, model, graph, x, y, C, eps, ramp, gen=None, keep_bounds=False):
        bn = model[2]
        h = model[1](x.flatten(1))
        key = next(k for k in graph.constants if k.startswith("2.running_mean"))
        seen.append((torch.allclose(graph.constants[key].flatten(), h.mean(0), atol=1e-5),
                     graph.constants[key] is not bn.running_mean))
        return orig(cfg, model, graph, x, y, C, eps, ramp, gen, keep_bounds)

    cert_mod.training_bounds = spy
    try:
        cfg = TrainConfig(eps=EPS, epochs=3, batch_size=64, ramp_epochs=1, tightness_samples=32, seed=0)
        res = train(m, xtr[:512], ytr[:512], cfg)
    finally:
        cert_mod.training_bounds = orig
    assert seen and all(a for a, _ in seen)
    m.eval()
    g = res.graph  # the inference graph (BatchNorm on running statistics)
    x = xtr[:20]
    assert torch.allclose(g.forward(x), m(x), atol=1e-5)


def test_bad_config_is_input_error():
    from verify.errors import InputError

    with pytest.raises(InputError):
        TrainConfig(method="magic").validate()
    with pytest.raises(InputError):
        build_model("resnet-9000", (1, 8, 8))


def test_cascade_is_cumulative_and_bounded_by_pgd(trained, digits):
    from verify.train.evaluate import cascade

    _, _, xte, yte = digits
    r = trained["ibp"]
    out = cascade(r.model, r.graph, xte[:120], yte[:120], EPS, methods=("ibp", "crown"))
    ibp = float(certified_mask(r.graph, xte[:120], yte[:120], EPS, "ibp").float().mean())
    assert out["after_ibp"] == pytest.approx(ibp)
    assert out["after_ibp"] <= out["after_crown"] <= out["pgd_acc"] <= out["clean_acc"]
    assert out["crown_attempted"] == round(120 * (out["pgd_acc"] - out["after_ibp"]))

"""Randomly assembled networks: the imported Graph equals the module (hypothesis-driven)."""
from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from verify.export import to_onnx
from verify.importers.torch import load_torch
from verify.nn import GroupSort

ACTS = [nn.ReLU, nn.Sigmoid, nn.Tanh, nn.GELU, nn.Softplus, lambda: nn.LeakyReLU(0.2), lambda: GroupSort(2)]


@st.composite
def mlps(draw):
    n_in = draw(st.integers(1, 6))
    layers, width = [], n_in
    for _ in range(draw(st.integers(1, 4))):
        out = 2 * draw(st.integers(1, 5))  # even, so that GroupSort(2) fits
        layers.append(nn.Linear(width, out))
        if draw(st.booleans()):
            layers.append(nn.BatchNorm1d(out))
        layers.append(draw(st.sampled_from(ACTS))())
        width = out
    layers.append(nn.Linear(width, draw(st.integers(1, 4))))
    return nn.Sequential(*layers), (n_in,)


@st.composite
def cnns_with_size(draw):
    h = draw(st.integers(6, 10))
    c = draw(st.integers(1, 3))
    layers, side = [], h
    for _ in range(draw(st.integers(1, 2))):
        k, s = draw(st.integers(1, min(3, side))), draw(st.integers(1, 2))
        p = draw(st.integers(0, k // 2))
        out = 2 * draw(st.integers(1, 3))
        layers.append(nn.Conv2d(c, out, k, stride=s, padding=p))
        side = (side + 2 * p - k) // s + 1
        if draw(st.booleans()):
            layers.append(nn.BatchNorm2d(out))
        layers.append(draw(st.sampled_from(ACTS))())
        pool = draw(st.sampled_from(["none", "max", "avg"]))
        if pool != "none" and side >= 2:
            layers.append(nn.MaxPool2d(2) if pool == "max" else nn.AvgPool2d(2))
            side //= 2
        c = out
    layers += [nn.Flatten(), nn.Linear(c * side * side, 3)]
    return nn.Sequential(*layers), (layers[0].in_channels, h, h)


def _randomise(net: nn.Module, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    for m in net.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.copy_(torch.rand(m.running_mean.shape, generator=gen) - 0.5)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=gen) + 0.5)


def _check(net: nn.Module, shape, seed: int, fold: bool) -> None:
    torch.manual_seed(seed)
    for p in net.parameters():
        torch.nn.init.normal_(p, std=0.5)
    with torch.no_grad():
        _randomise(net, seed)
    net.eval()
    g = load_torch(net, shape, fold_bn=fold)
    x = torch.randn((5, *shape), generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        torch.testing.assert_close(g.forward(x), net(x), rtol=1e-5, atol=1e-5)
    to_onnx(load_torch(net, shape, fold_bn=True))  # exports (checker passes)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec=mlps(), seed=st.integers(0, 1000), fold=st.booleans())
def test_random_mlps(spec, seed, fold):
    _check(spec[0], spec[1], seed, fold)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec=cnns_with_size(), seed=st.integers(0, 1000), fold=st.booleans())
def test_random_cnns(spec, seed, fold):
    _check(spec[0], spec[1], seed, fold)

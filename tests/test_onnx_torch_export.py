"""Networks exported by torch.onnx (the TorchScript exporter) import and match onnxruntime: real-world
op patterns (Shape->Gather->Concat->Reshape, Constant slices, BatchNormalization kept with
do_constant_folding=False, dynamic batch axes) across opsets."""
from __future__ import annotations

import io
import warnings

import numpy as np
import pytest
import torch
import torch.nn as nn

from models import run_ort
from verify.importers import load_onnx

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")


class ConvNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(1, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.pool = nn.MaxPool2d(2)
        self.up = nn.Upsample(scale_factor=2)
        self.c2 = nn.Conv2d(4, 4, 3, stride=2, padding=1)
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4 * 4 * 4 + 4, 10)

    def forward(self, x):
        y = self.pool(torch.relu(self.bn(self.c1(x))))
        z = torch.tanh(self.c2(self.up(y)))
        a = self.gap(z).flatten(1)
        f = torch.cat([z.view(x.shape[0], -1)[:, :64], a], 1)
        return torch.softmax(self.fc(f), -1) * torch.sigmoid(f[:, :10]) + nn.functional.gelu(f[:, 10:20])


class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(12, 16), nn.BatchNorm1d(16), nn.LeakyReLU(0.2),
                                 nn.Dropout(0.5), nn.Linear(16, 8), nn.Softplus(), nn.Linear(8, 3))

    def forward(self, x):
        h = self.net(x)
        return torch.clamp(h, -1.0, 2.0) + h.abs().sqrt().unsqueeze(1).squeeze(1) - h.mean(dim=1, keepdim=True)


def _export(net: nn.Module, shape, opset: int, dynamic: bool, fold: bool) -> "onnx.ModelProto":
    buf = io.BytesIO()
    kw = {"dynamic_axes": {"x": {0: "batch"}, "y": {0: "batch"}}} if dynamic else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(net, torch.zeros(1, *shape), buf, opset_version=opset, input_names=["x"],
                              output_names=["y"], dynamo=False, do_constant_folding=fold, **kw)
        except Exception as e:  # pragma: no cover - exporter not available in this torch build
            pytest.skip(f"torch.onnx.export unavailable: {e}")
    return onnx.load_from_string(buf.getvalue())


def _randomise_bn(net: nn.Module) -> nn.Module:
    torch.manual_seed(0)
    for m in net.modules():
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            with torch.no_grad():
                m.running_mean.uniform_(-1, 1)
                m.running_var.uniform_(0.5, 2)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-1, 1)
    return net.eval()


@pytest.mark.parametrize("opset,dynamic,fold", [(11, False, True), (13, True, False), (17, True, True),
                                                (17, False, False)])
@pytest.mark.parametrize("which", ["conv", "mlp"])
def test_torch_export_roundtrip(which, opset, dynamic, fold):
    net, shape = (ConvNet(), (1, 8, 8)) if which == "conv" else (MLP(), (3, 4))
    net = _randomise_bn(net)
    m = _export(net, shape, opset, dynamic, fold)
    g = load_onnx(m)
    xs = np.random.default_rng(opset).uniform(-1, 1, (6, *shape)).astype(np.float32)
    ref = run_ort(m, xs).reshape(6, -1)
    y = g.forward_flat(torch.from_numpy(xs).reshape(6, -1)).numpy()
    assert np.abs(y - ref).max() <= 1e-5 * max(1.0, np.abs(ref).max())
    with torch.no_grad():
        yt = net(torch.from_numpy(xs).double().float()).reshape(6, -1).numpy()
    assert np.abs(y - yt).max() <= 1e-5 * max(1.0, np.abs(yt).max())
    # BatchNormalization nodes (kept when the exporter does not fold) end up inside conv / linear
    assert not {"mul"} & g.op_types() or which == "conv"
    assert "matmul" not in g.op_types()

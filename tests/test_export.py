"""ONNX export: the written model, run by onnxruntime and re-imported by our ONNX importer, equals the module."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from verify.errors import InputError, UnsupportedOpError
from verify.export import export_onnx, to_onnx
from verify.graph.ir import Graph, Node
from verify.importers.torch import load_torch
from verify.nn import GroupSort

ort = pytest.importorskip("onnxruntime")


class Fn(nn.Module):
    def __init__(self, fn, n_in=None, n_out=None):
        super().__init__()
        self.fn = fn
        self.lin = nn.Linear(n_in, n_out) if n_in else None

    def forward(self, x):
        return self.fn(self.lin(x) if self.lin is not None else x)


class Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 2, 3, padding=1)
        self.bn = nn.BatchNorm2d(2)
        self.fc = nn.Linear(2 * 5 * 5, 3)

    def forward(self, x):
        h = torch.relu(x + self.bn(self.conv(x)))
        return self.fc(h.flatten(1))


def _bn_stats(net: nn.Module) -> nn.Module:
    g = torch.Generator().manual_seed(1)
    for m in net.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            with torch.no_grad():
                m.running_mean.copy_(torch.rand(m.running_mean.shape, generator=g) - 0.5)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
    return net.eval()


def _models():
    torch.manual_seed(0)
    return {
        "mlp": (nn.Sequential(nn.Linear(5, 10), nn.ReLU(), nn.Linear(10, 3)), (5,)),
        "acts": (nn.Sequential(nn.Linear(4, 8), nn.LeakyReLU(0.1), nn.Linear(8, 8), nn.Sigmoid(), nn.Linear(8, 6),
                               nn.Tanh(), nn.Linear(6, 3), nn.Softmax(dim=1)), (4,)),
        "cnn": (nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2),
                              nn.Conv2d(4, 6, 3, stride=2, padding=1), nn.ReLU(), nn.AvgPool2d(2), nn.Flatten(),
                              nn.Linear(6, 10)), (1, 8, 8)),
        "pools": (nn.Sequential(nn.Conv2d(2, 3, 2, dilation=2, groups=1), nn.MaxPool2d(3, 2, padding=1),
                                nn.AvgPool2d(3, 1, padding=1, count_include_pad=False), nn.AdaptiveAvgPool2d((1, 1)),
                                nn.Flatten()), (2, 9, 9)),
        "ceil_pools": (nn.Sequential(nn.MaxPool2d(2, 2, padding=1, ceil_mode=True),
                                     nn.AvgPool2d(2, 2, padding=1, ceil_mode=True), nn.Flatten()), (2, 9, 7)),
        "convtranspose": (nn.Sequential(nn.ConvTranspose2d(2, 3, 3, stride=2, padding=1, output_padding=1),
                                        nn.Flatten()), (2, 3, 3)),
        "maxmin": (nn.Sequential(nn.Linear(4, 8), GroupSort(2), nn.Linear(8, 6), GroupSort(2), nn.Linear(6, 2)), (4,)),
        "maxmin_conv": (nn.Sequential(nn.Conv2d(1, 4, 3), GroupSort(2), nn.Flatten(), nn.Linear(4 * 3 * 3, 2)),
                        (1, 5, 5)),
        "groupsort4": (nn.Sequential(nn.Linear(4, 8), GroupSort(4), nn.Linear(8, 2)), (4,)),
        "fullsort": (nn.Sequential(nn.Linear(3, 5), GroupSort(5), nn.Linear(5, 2)), (3,)),
        "residual": (_bn_stats(Residual()), (2, 5, 5)),
        "arith": (Fn(lambda x: (x - 1.0) * torch.sigmoid(x) / (x * x + 2.0) + 3.0 - x ** 2, 3, 4), (3,)),
        "gelu": (Fn(lambda x: F.gelu(x) + F.gelu(x, approximate="tanh"), 3, 4), (3,)),
        "unary": (Fn(lambda x: torch.sin(x) + torch.cos(x) * torch.exp(-x.abs()) - torch.log(1 + x * x)
                     + torch.clamp(x, -0.3, 0.4) + F.softplus(x), 3, 4), (3,)),
        "reshape_family": (Fn(lambda x: torch.cat([x[:, 1:3].flatten(1), x.transpose(1, 2)[:, :, ::2].flatten(1)], dim=1)
                              .view(x.size(0), 2, -1).sum(dim=2)), (3, 4)),
        "reduce": (Fn(lambda x: x.mean(dim=(1, 2)) + x.sum(-1)[:, 0], 2, 4), (3, 2)),
        "linear3d": (nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Flatten()), (2, 4)),
        "pad_upsample": (nn.Sequential(nn.ZeroPad2d((1, 0, 2, 1)), nn.Conv2d(2, 2, 3, padding=1, padding_mode="reflect"),
                                       nn.Upsample(scale_factor=2), nn.Flatten()), (2, 3, 3)),
        "layernorm": (nn.Sequential(nn.Linear(3, 6), nn.LayerNorm(6), nn.ReLU(), nn.Linear(6, 2)), (3,)),
    }


MODELS = _models()
NEEDS_TOPK = {"groupsort4", "fullsort"}


def _samples(shape, n=4, seed=0):
    return torch.randn((n, *shape), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("key", sorted(MODELS))
def test_onnxruntime_equals_module(key, tmp_path):
    net, shape = MODELS[key]
    net.eval()
    path = tmp_path / f"{key}.onnx"
    model = export_onnx(net, path, shape)
    assert model.opset_import[0].version == 13
    loaded = onnx.load(str(path))
    assert [i.name for i in loaded.graph.input] == ["input"]
    dims = [d.dim_value for d in loaded.graph.input[0].type.tensor_type.shape.dim]
    assert dims == [1, *shape]
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        for x in _samples(shape):
            got = sess.run(None, {"input": x[None].numpy()})[0]
            ref = net(x[None]).numpy()
            np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("key", sorted(MODELS))
def test_reimport_with_load_onnx_equals_module(key, tmp_path):
    try:
        from verify.importers.onnx import load_onnx
    except ImportError:
        pytest.skip("verify.importers.onnx is not available")
    net, shape = MODELS[key]
    net.eval()
    path = tmp_path / f"{key}.onnx"
    export_onnx(net, path, shape)
    try:
        g = load_onnx(str(path))
    except UnsupportedOpError as e:
        if key in NEEDS_TOPK and e.op == "TopK":
            pytest.skip("the ONNX importer does not read TopK (GroupSort with groups larger than 2)")
        raise
    assert g.input_shape == tuple(shape)
    x = _samples(shape, n=5, seed=1)
    with torch.no_grad():
        torch.testing.assert_close(g.forward(x).reshape(5, -1).float(), net(x).reshape(5, -1), rtol=1e-4, atol=1e-5)


def test_export_graph_and_maxmin_pattern(tmp_path):
    """A Graph exports directly; MaxMin uses only Reshape/Slice/Max/Min/Concat (no TopK)."""
    net, shape = MODELS["maxmin"]
    g = load_torch(net.eval(), shape)
    model = export_onnx(g, tmp_path / "g.onnx")
    ops = [n.op_type for n in model.graph.node]
    assert "TopK" not in ops and ops.count("Max") == 2 and ops.count("Min") == 2
    assert [n.op_type for n in to_onnx(load_torch(MODELS["groupsort4"][0], (4,))).graph.node].count("TopK") == 1
    assert model.graph.output[0].name == "output"


def test_export_errors(tmp_path):
    net, shape = MODELS["mlp"]
    with pytest.raises(InputError):
        export_onnx(net, tmp_path / "a.onnx")  # module without input_shape
    g = load_torch(net, shape)
    with pytest.raises(InputError):
        export_onnx(g, tmp_path / "a.onnx", input_shape=(6,))
    with pytest.raises(InputError):
        export_onnx("not a model", tmp_path / "a.onnx", input_shape=(5,))
    bad = Graph("input", (3,), [Node("y", "lrn", ["input"], {}, (3,))], {}, "y")  # an op export does not know
    with pytest.raises(UnsupportedOpError):
        export_onnx(bad, tmp_path / "b.onnx")


def test_export_ops_from_onnx_graphs(tmp_path):
    """cast / where / equal / expand (ops the ONNX importer emits) export and run like the IR."""
    nodes = [
        Node("r", "reshape", ["input"], {"shape": [1, 4]}, (1, 4)),
        Node("e", "expand", ["r"], {"shape": [3, 4]}, (3, 4)),
        Node("neg_e", "neg", ["e"], {}, (3, 4)),
        Node("w", "where", ["cond", "e", "neg_e"], {}, (3, 4)),
        Node("q", "equal", ["w", "zero"], {}, (3, 4)),
        Node("qf", "cast", ["q"], {"to": "float"}, (3, 4)),
        Node("y", "add", ["w", "qf"], {}, (3, 4)),
    ]
    consts = {"cond": torch.tensor([[True, False, True, False]] * 3), "zero": torch.zeros(())}
    g = Graph("input", (4,), nodes, consts, "y")
    path = tmp_path / "ops.onnx"
    export_onnx(g, path)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = torch.tensor([[0.0, 1.5, -2.0, 0.0]])
    np.testing.assert_allclose(sess.run(None, {"input": x.numpy()})[0], g.forward(x).numpy(), rtol=1e-6)

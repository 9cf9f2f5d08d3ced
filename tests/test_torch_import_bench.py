"""Measured numbers for docs/torch-import-export.md: import / export time and agreement on larger models.

Run: OMP_NUM_THREADS=1 python -m pytest -m bench -s tests/test_torch_import_bench.py
"""
from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from torch import nn

from verify.export import export_onnx
from verify.importers.torch import load_torch
from verify.nn import GroupSort


class Block(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.short = nn.Sequential() if stride == 1 and c_in == c_out else nn.Sequential(
            nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x):
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.short(x))


class ResNet8(nn.Module):
    """A CIFAR ResNet with 4 residual blocks (8 convs on the main path)."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        self.layers = nn.Sequential(Block(16, 16, 1), Block(16, 32, 2), Block(32, 32, 1), Block(32, 64, 2))
        self.pool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(64, 10)

    def forward(self, x):
        return self.fc(self.pool(self.layers(self.stem(x))).flatten(1))


def _models():
    torch.manual_seed(0)
    return {
        "mnist_mlp_3x256": (nn.Sequential(nn.Flatten(), nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 256),
                                          nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10)), (1, 28, 28)),
        "cifar_cnn_4conv": (nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 32, 4, 2, 1),
                                          nn.ReLU(), nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(),
                                          nn.Conv2d(64, 64, 4, 2, 1), nn.ReLU(), nn.Flatten(),
                                          nn.Linear(64 * 8 * 8, 512), nn.ReLU(), nn.Linear(512, 10)), (3, 32, 32)),
        "cifar_resnet8_bn": (ResNet8(), (3, 32, 32)),
        "maxmin_mlp_4x128": (nn.Sequential(nn.Linear(64, 128), GroupSort(2), nn.Linear(128, 128), GroupSort(2),
                                           nn.Linear(128, 128), GroupSort(2), nn.Linear(128, 10)), (64,)),
    }


def _time(fn, reps=5) -> float:
    """Best of `reps` runs after a warm-up."""
    fn()
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return min(ts)


def _time_pair(f1, f2, reps=15) -> tuple[float, float]:
    """Best times of two functions timed alternately (the minimum resists other jobs' load best)."""
    f1(), f2()
    t1, t2 = [], []
    for _ in range(reps):
        for f, ts in ((f1, t1), (f2, t2)):
            t0 = time.perf_counter()
            f()
            ts.append(time.perf_counter() - t0)
    return min(t1), min(t2)


@pytest.mark.bench
def test_import_export_numbers(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    torch.set_num_threads(1)
    rows = []
    for key, (net, shape) in _models().items():
        for m in net.modules():  # non-trivial BatchNorm statistics
            if isinstance(m, nn.BatchNorm2d):
                with torch.no_grad():
                    m.running_mean.uniform_(-0.5, 0.5)
                    m.running_var.uniform_(0.5, 2.0)
        net.eval()
        n_par = sum(p.numel() for p in net.parameters())
        t_imp = _time(lambda: load_torch(net, shape))
        g = load_torch(net, shape)
        x = torch.randn(64, *shape, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            ref = net(x)
            err32 = ((g.forward(x) - ref).abs().max() / ref.abs().max()).item()
            net64 = net.double()
            g64 = load_torch(net64, shape)
            err64 = ((g64.forward(x.double()) - net64(x.double())).abs().max()).item()
            net.float()
        path = tmp_path / f"{key}.onnx"
        t_exp = _time(lambda: export_onnx(net, path, shape), reps=3)
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        with torch.no_grad():
            ort_err = max(float(np.abs(sess.run(None, {"input": x[i:i + 1].numpy()})[0] - ref[i:i + 1].numpy()).max())
                          for i in range(8))
        xb = torch.randn(128, *shape, generator=torch.Generator().manual_seed(1))
        t_gfb, t_mfb = _time_pair(lambda: (net.zero_grad(), g.forward(xb).square().sum().backward()),
                                  lambda: (net.zero_grad(), net(xb).square().sum().backward()))
        rows.append((key, n_par, len(g.nodes), t_imp * 1e3, err32, err64, t_exp * 1e3, ort_err,
                     t_gfb * 1e3, t_mfb * 1e3))
        assert err32 < 1e-5 and err64 < 1e-10 and ort_err < 1e-4
    print("\n| model | params | IR nodes | load_torch ms | fwd rel. err f32 | fwd abs. err f64 | export ms "
          "| ORT abs. err | fwd+bwd ms, Graph / module (batch 128) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r[0]} | {r[1]} | {r[2]} | {r[3]:.1f} | {r[4]:.1e} | {r[5]:.1e} | {r[6]:.1f} | {r[7]:.1e} | {r[8]:.1f} / {r[9]:.1f} |")

"""ONNX -> IR -> ONNX on the shared benchmark networks: the re-exported file computes what the original does."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from verify.export import export_onnx

ort = pytest.importorskip("onnxruntime")
SHARED = Path(__file__).resolve().parents[2] / "shared" / "benchmarks"
NETS = ["acasxu/onnx/ACASXU_run2a_1_1_batch_2000.onnx", "mnist_fc_2021/onnx/mnist-net_256x2.onnx",
        "eran_2021/onnx/ffnnSIGMOID__Point_6x200.onnx", "eran_2021/onnx/mnist_relu_9_200.onnx",
        "vnncomp_test/onnx/test_small.onnx", "vnncomp_test/onnx/test_sat.onnx"]


@pytest.mark.parametrize("rel", NETS)
def test_reexport_equals_original(rel, tmp_path):
    path = SHARED / rel
    if not path.exists():
        pytest.skip(f"{path} is missing (the shared/ folder beside the repository)")
    try:
        from verify.importers.onnx import load_onnx
    except ImportError:
        pytest.skip("verify.importers.onnx is not available")
    g = load_onnx(str(path))
    out = tmp_path / "re.onnx"
    export_onnx(g, out)
    orig = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    new = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    inp = orig.get_inputs()[0]
    shape = [d if isinstance(d, int) and d > 0 else 1 for d in inp.shape]
    elem = onnx.load(str(path)).graph.input[0].type.tensor_type.elem_type
    dtype = np.float64 if elem == onnx.TensorProto.DOUBLE else np.float32
    rng = np.random.default_rng(0)
    for _ in range(4):
        x = rng.uniform(0.0, 1.0, size=shape).astype(dtype)
        ref = orig.run(None, {inp.name: x})[0]
        got = new.run(None, {"input": x.reshape(1, *g.input_shape).astype(np.float32)})[0]
        np.testing.assert_allclose(got.reshape(-1), ref.reshape(-1), rtol=1e-4, atol=1e-5)

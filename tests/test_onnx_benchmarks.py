"""Every benchmark network in ../shared/benchmarks/*/onnx: IR forward vs onnxruntime on 100 points drawn
from the input boxes of that network's specs (float32 and float64 forwards)."""
from __future__ import annotations

import csv
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from models import run_ort
from verify.importers import load_onnx

ort = pytest.importorskip("onnxruntime")
import onnx  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared"
BENCH = SHARED / "benchmarks"
ONNX_FILES = sorted(BENCH.glob("*/onnx/*.onnx")) if BENCH.is_dir() else []
_BOUND = re.compile(r"\(\s*(<=|>=)\s+X_(\d+)\s+([-+]?[0-9.]+(?:[eE][-+]?\d+)?)\s*\)")


def _specs_for(path: Path) -> list[Path]:
    """The vnnlib files instances.csv pairs with this network (first few)."""
    out: list[Path] = []
    inst = path.parents[1] / "instances.csv"
    if inst.is_file():
        with open(inst) as f:
            for row in csv.reader(f):
                if row and (path.parents[1] / row[0]).resolve() == path.resolve():
                    spec = path.parents[1] / row[1]
                    if spec not in out:
                        out.append(spec)
    return out[:4]


def _box(spec: Path, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Hull of the input bounds asserted in a VNN-LIB file (cheap regex; unbounded -> [0, 1])."""
    lo = np.full(n, np.inf)
    hi = np.full(n, -np.inf)
    for op, i, v in _BOUND.findall(spec.read_text()):
        i, v = int(i), float(v)
        if i >= n:
            continue
        if op == ">=":
            lo[i] = min(lo[i], v)
        else:
            hi[i] = max(hi[i], v)
    lo[~np.isfinite(lo)] = 0.0
    hi[~np.isfinite(hi)] = 1.0
    return lo, np.maximum(hi, lo)


def _points(path: Path, n_in: int, count: int, rng) -> np.ndarray:
    specs = _specs_for(path)
    boxes = [_box(s, n_in) for s in specs] or [(np.zeros(n_in), np.ones(n_in))]
    per = [count // len(boxes) + (k < count % len(boxes)) for k in range(len(boxes))]
    return np.concatenate([rng.uniform(lo, hi, (m, n_in)) for (lo, hi), m in zip(boxes, per)]).astype(np.float32)


@pytest.mark.skipif(not ONNX_FILES, reason=f"benchmark networks not found under {BENCH}")
@pytest.mark.parametrize("path", ONNX_FILES, ids=[p.name for p in ONNX_FILES])
def test_benchmark_network_matches_onnxruntime(path: Path):
    model = onnx.load(path)
    g = load_onnx(path)
    rng = np.random.default_rng(abs(hash(path.name)) % 2**32)
    xs = _points(path, g.input_size, 100, rng)
    ref = run_ort(model, xs).reshape(len(xs), -1).astype(np.float64)
    scale = max(1.0, float(np.abs(ref).max()))
    x = torch.from_numpy(xs)
    y32 = g.forward_flat(x).double().numpy()
    y64 = g.forward_flat(x.double()).numpy()
    assert y32.shape == ref.shape == (100, g.output_size)
    assert np.abs(y32 - ref).max() <= 1e-5 * scale
    assert np.abs(y64 - ref).max() <= 1e-5 * scale
    assert np.abs(y64 - y32).max() <= 1e-5 * scale


@pytest.mark.skipif(not ONNX_FILES, reason=f"benchmark networks not found under {BENCH}")
def test_benchmark_graphs_are_normalised():
    """Benchmark networks import as reshape / linear / activations only (MatMul+Add fused, no-ops gone)."""
    allowed = {"reshape", "linear", "relu", "sigmoid", "sub", "div"}
    for path in ONNX_FILES:
        g = load_onnx(path)
        assert g.op_types() <= allowed, (path.name, g.op_types())
        assert sum(n.op == "reshape" for n in g.nodes) <= 1, path.name
        for n in g.nodes:
            if n.op == "linear":
                assert len(n.inputs) in (2, 3) and g.constants[n.inputs[1]].dtype == torch.float64

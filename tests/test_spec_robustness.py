"""Robustness specs: the written text parses back to the exact box and C/d; model layouts; the CLI."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from verify.cli import main
from verify.errors import InputError
from verify.spec.robustness import onnx_io_sizes, robustness_spec, write_robustness_spec
from verify.spec.vnnlib import parse_vnnlib, parse_vnnlib_text

SHARED = Path(__file__).resolve().parents[2] / "shared"


def tiny_onnx(path: Path, in_shape: list, n_out: int = 10, batch_param: bool = False) -> Path:
    """A Flatten + Gemm model with the given input shape (weights irrelevant: only shapes are read)."""
    n_in = int(np.prod(in_shape[1:]))
    w = numpy_helper.from_array(np.zeros((n_in, n_out), dtype=np.float32), "W")
    dims = (["N"] + list(in_shape[1:])) if batch_param else in_shape
    graph = helper.make_graph(
        [helper.make_node("Flatten", ["x"], ["f"], axis=1), helper.make_node("Gemm", ["f", "W"], ["y"])],
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, dims)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [dims[0], n_out])],
        initializer=[w],
    )
    onnx.save(helper.make_model(graph), str(path))
    return path


def expected_rows(label: int, n: int):
    """Y_j >= Y_label for each j != label, as C y <= d rows: Y_label - Y_j <= 0."""
    out = []
    for j in range(n):
        if j != label:
            r = [0.0] * n
            r[label], r[j] = 1.0, -1.0
            out.append([r])
    return out


def test_spec_parses_back_to_exact_box_and_rows():
    rng = np.random.default_rng(1)
    image = rng.random((1, 6, 5)).astype(np.float32)
    image[0, 0, :2] = [0.0, 1.0]  # clipped at both ends
    eps = 0.05
    spec = parse_vnnlib_text(robustness_spec(image, 3, eps, 7), n_inputs=30, n_outputs=7)
    x = image.astype(np.float64).reshape(-1)
    lo, hi = np.clip(x - eps, 0, 1), np.clip(x + eps, 0, 1)
    assert len(spec.disjuncts) == 6
    for dj, C in zip(spec.disjuncts, expected_rows(3, 7)):
        assert np.array_equal(dj.lower, lo) and np.array_equal(dj.upper, hi)
        assert dj.C.tolist() == C and dj.d.tolist() == [0.0]
    assert spec.disjuncts[0].lower[:2].tolist() == [0.0, 0.95]
    assert spec.disjuncts[0].upper[:2].tolist() == [0.05, 1.0]


def test_bad_arguments():
    img = np.zeros(4)
    with pytest.raises(InputError, match="eps must be"):
        robustness_spec(img, 0, -0.1, 10)
    with pytest.raises(InputError, match="label 10 is not a class index"):
        robustness_spec(img, 10, 0.1, 10)


@pytest.mark.parametrize("shape", [[1, 784], [1, 784, 1], [1, 1, 28, 28], [1, 28, 28]])
def test_model_layouts_row_major(tmp_path, shape):
    model = tiny_onnx(tmp_path / "m.onnx", shape, batch_param=len(shape) == 4)
    assert onnx_io_sizes(model)[:2] == (784, 10)
    image = np.random.default_rng(0).random((1, 28, 28)).astype(np.float32)
    out = tmp_path / "s.vnnlib"
    info = write_robustness_spec(out, image, 4, 0.02, model)
    assert info["n_inputs"] == 784 and info["n_outputs"] == 10
    dj = parse_vnnlib(out, 784, 10).disjuncts[0]
    assert np.array_equal(dj.lower, np.clip(image.reshape(-1).astype(np.float64) - 0.02, 0, 1))


def test_channels_last_model_and_mismatch(tmp_path):
    image = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4) / 24  # [C, H, W]
    nhwc = tiny_onnx(tmp_path / "nhwc.onnx", [1, 3, 4, 2], n_out=5)
    write_robustness_spec(tmp_path / "a.vnnlib", image, 0, 0.0, nhwc)
    dj = parse_vnnlib(tmp_path / "a.vnnlib").disjuncts[0]
    assert np.array_equal(dj.lower, image.transpose(1, 2, 0).reshape(-1).astype(np.float64))
    assert len(parse_vnnlib(tmp_path / "a.vnnlib").disjuncts) == 4
    wrong = tiny_onnx(tmp_path / "w.onnx", [1, 100])
    with pytest.raises(InputError, match="has 100 elements but the image"):
        write_robustness_spec(tmp_path / "b.vnnlib", image, 0, 0.1, wrong)
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    with pytest.raises(InputError, match="not a readable ONNX model"):
        write_robustness_spec(tmp_path / "b.vnnlib", image, 0, 0.1, tmp_path / "junk.onnx")


def test_cli_digits(tmp_path, capsys):
    from verify.datasets import load_digits

    model = tiny_onnx(tmp_path / "d.onnx", [1, 1, 8, 8])
    out = tmp_path / "d.vnnlib"
    rc = main(["spec", "robustness", "--dataset", "digits", "--image-index", "5", "--eps", "0.1",
               "--model", str(model), "--out", str(out), "--json"])
    assert rc == 0
    info = json.loads(capsys.readouterr().out)
    x, y = load_digits("test")
    assert info["label"] == int(y[5]) and info["n_inputs"] == 64
    spec = parse_vnnlib(out, 64, 10)
    assert len(spec.disjuncts) == 9
    for dj, C in zip(spec.disjuncts, expected_rows(int(y[5]), 10)):
        assert np.array_equal(dj.upper, np.clip(x[5].reshape(-1).astype(np.float64) + 0.1, 0, 1))
        assert dj.C.tolist() == C


def test_cli_errors(tmp_path, capsys):
    rc = main(["spec", "robustness", "--dataset", "digits", "--index", "100000", "--eps", "0.1",
               "--out", str(tmp_path / "x.vnnlib")])
    assert rc == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "out of range" in err[0]
    rc = main(["spec", "robustness", "--dataset", "mnist", "--data-dir", str(tmp_path / "none"), "--index", "0",
               "--eps", "0.1", "--out", str(tmp_path / "x.vnnlib")])
    assert rc == 2 and "pass --data-dir" in capsys.readouterr().err


def test_cli_info(tmp_path, capsys):
    p = tmp_path / "s.vnnlib"
    p.write_text(robustness_spec(np.zeros(4), 1, 0.5, 3))
    assert main(["spec", "info", str(p), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert (info["n_inputs"], info["n_outputs"], info["disjuncts"], info["input_boxes"]) == (4, 3, 2, 1)


def test_matches_eran_spec_for_mnist_image():
    """Our spec for MNIST test image 1013, eps 0.015 equals the VNN-COMP 2021 ERAN spec (8-digit rounding)."""
    ref = SHARED / "benchmarks" / "eran_2021" / "vnnlib" / "mnist_spec_idx_1013_eps_0.01500.vnnlib"
    model = SHARED / "benchmarks" / "eran_2021" / "onnx" / "mnist_relu_9_200.onnx"
    if not (ref.is_file() and model.is_file() and (SHARED / "data" / "mnist").is_dir()):
        pytest.skip("shared ERAN benchmark or MNIST data not found")
    from verify.datasets import load_mnist

    x, y = load_mnist("test")
    text = robustness_spec(x[1013], int(y[1013]), 0.015, onnx_io_sizes(model)[1])
    ours, theirs = parse_vnnlib_text(text), parse_vnnlib(ref)
    assert len(ours.disjuncts) == len(theirs.disjuncts) == 9
    for a, b in zip(ours.disjuncts, theirs.disjuncts):
        assert np.abs(a.lower - b.lower).max() < 5e-8 and np.abs(a.upper - b.upper).max() < 5e-8
        assert np.array_equal(a.C, b.C) and np.array_equal(a.d, b.d)

"""`verify check` in-process through `verify.cli.main`: result text and files, --json, bad input -> exit 2."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from verify import api
from verify.cli import main
from verify.errors import UnsupportedOpError
from verify.spec.results import read_result


def save_mlp(path: Path, weights: list[tuple[np.ndarray, np.ndarray]], op: str = "Relu") -> Path:
    """A Gemm/<op>/.../Gemm ONNX model with input shape [1, n_in]."""
    nodes, inits, cur = [], [], "input"
    for k, (W, b) in enumerate(weights):
        inits += [numpy_helper.from_array(W.astype(np.float32), f"W{k}"),
                  numpy_helper.from_array(b.astype(np.float32), f"b{k}")]
        nodes.append(helper.make_node("Gemm", [cur, f"W{k}", f"b{k}"], [f"g{k}"], transB=1))
        cur = f"g{k}"
        if k < len(weights) - 1:
            nodes.append(helper.make_node(op, [cur], [f"a{k}"]))
            cur = f"a{k}"
    n_in, n_out = weights[0][0].shape[1], weights[-1][0].shape[0]
    g = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, n_in])],
                          [helper.make_tensor_value_info(cur, TensorProto.FLOAT, [1, n_out])], inits)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    onnx.save(model, str(path))
    return path


def box_vnnlib(path: Path, lo, hi, rows: list[str], n_out: int) -> Path:
    """VNN-LIB with a box on X and a conjunction of output atoms (strings like '(<= Y_0 Y_1)')."""
    lines = [f"(declare-const X_{i} Real)" for i in range(len(lo))]
    lines += [f"(declare-const Y_{j} Real)" for j in range(n_out)]
    for i, (a, b) in enumerate(zip(lo, hi)):
        lines += [f"(assert (>= X_{i} {a}))", f"(assert (<= X_{i} {b}))"]
    lines += [f"(assert {r})" for r in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def net(tmp_path):
    """y0 = x0 + x1, y1 = 1 (a ReLU hidden layer of width 2 that passes non-negative inputs through)."""
    W0, b0 = np.eye(2), np.zeros(2)
    W1, b1 = np.array([[1.0, 1.0], [0.0, 0.0]]), np.array([0.0, 1.0])
    return save_mlp(tmp_path / "net.onnx", [(W0, b0), (W1, b1)])


def run_cli(argv, capsys):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_sat_prints_result_and_writes_file(net, tmp_path, capsys):
    spec = box_vnnlib(tmp_path / "p.vnnlib", [0, 0], [1, 1], ["(>= Y_0 1.9)"], 2)   # x0 + x1 >= 1.9
    code, out, err = run_cli(["check", net, spec, "--no-bab", "--timeout", "10", "--result", tmp_path / "r.txt"],
                             capsys)
    assert code == 0 and err == ""
    assert out.splitlines()[0] == "sat" and "(X_0 " in out and "(Y_1 " in out
    verdict, x, y = read_result(tmp_path / "r.txt")
    assert verdict == "sat" and x[0] + x[1] >= 1.9 - 1e-6 and y[0] >= 1.9
    assert (tmp_path / "r.txt").read_text() == out


def test_json_is_one_object(net, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(api, "_prove_module", lambda: None)   # falsification only
    spec = box_vnnlib(tmp_path / "p.vnnlib", [0, 0], [1, 1], ["(>= Y_0 2.5)"], 2)   # impossible
    code, out, err = run_cli(["check", net, spec, "--no-bab", "--timeout", "2", "--attack-share", "0.25",
                              "--json"], capsys)
    assert code == 0
    obj = json.loads(out)
    assert obj["result"] == "unknown" and obj["counterexample"] is None
    assert 0 < obj["time_s"] <= obj["seconds"] < 3
    spec2 = box_vnnlib(tmp_path / "q.vnnlib", [0, 0], [1, 1], ["(>= Y_0 1.0)"], 2)
    code, out, _ = run_cli(["check", net, spec2, "--no-bab", "--json"], capsys)
    obj = json.loads(out)
    assert obj["result"] == "sat" and sum(obj["counterexample"]["x"]) >= 1.0


def assert_one_line_error(code, out, err, *needles):
    assert code == 2, (code, err)
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for n in needles:
        assert str(n) in lines[0], (n, lines[0])


def test_missing_model(tmp_path, capsys):
    spec = box_vnnlib(tmp_path / "p.vnnlib", [0, 0], [1, 1], ["(>= Y_0 1.0)"], 2)
    assert_one_line_error(*run_cli(["check", tmp_path / "nope.onnx", spec], capsys), "nope.onnx")


def test_corrupt_model(tmp_path, capsys):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x07garbage\xff\xfe not a protobuf" * 10)
    spec = box_vnnlib(tmp_path / "p.vnnlib", [0, 0], [1, 1], ["(>= Y_0 1.0)"], 2)
    assert_one_line_error(*run_cli(["check", bad, spec], capsys), "bad.onnx")


def test_unsupported_op(tmp_path, capsys):
    W = np.eye(2)
    m = save_mlp(tmp_path / "odd.onnx", [(W, np.zeros(2)), (W, np.zeros(2))], op="Hardmax")
    spec = box_vnnlib(tmp_path / "p.vnnlib", [0, 0], [1, 1], ["(>= Y_0 1.0)"], 2)
    assert_one_line_error(*run_cli(["check", m, spec], capsys), "odd.onnx", "Hardmax")


def test_dimension_mismatch(net, tmp_path, capsys):
    spec = box_vnnlib(tmp_path / "three.vnnlib", [0, 0, 0], [1, 1, 1], ["(>= Y_0 1.0)"], 2)
    assert_one_line_error(*run_cli(["check", net, spec], capsys), "three.vnnlib", "3 inputs", "net.onnx")


def test_malformed_vnnlib(net, tmp_path, capsys):
    spec = tmp_path / "broken.vnnlib"
    spec.write_text("(declare-const X_0 Real)\n(declare-const X_1 Real)\n(declare-const Y_0 Real)\n"
                    "(assert (<= X_0 1.0)\n")
    assert_one_line_error(*run_cli(["check", net, spec], capsys), "broken.vnnlib")


def test_missing_spec(net, tmp_path, capsys):
    assert_one_line_error(*run_cli(["check", net, tmp_path / "none.vnnlib"], capsys), "none.vnnlib")


def test_bad_option_is_usage_error(net, tmp_path, capsys):
    spec = box_vnnlib(tmp_path / "p.vnnlib", [0, 0], [1, 1], ["(>= Y_0 1.0)"], 2)
    assert_one_line_error(*run_cli(["check", net, spec, "--attack-share", "3"], capsys), "attack_share")
    assert_one_line_error(*run_cli(["check", net, spec, "--polish", "-1"], capsys), "polish")
    with pytest.raises(SystemExit) as e:   # argparse usage errors leave through SystemExit(2)
        main(["check", str(net), str(spec), "--method", "magic"])
    assert e.value.code == 2
    assert_one_line_error(2, *capsys.readouterr(), "--method")


def test_safe_property_proved_by_the_prover(net, tmp_path, capsys):
    if api._prove_module() is None:
        pytest.skip("verify.bab.driver not built")
    spec = box_vnnlib(tmp_path / "p.vnnlib", [0, 0], [1, 1], ["(>= Y_0 2.5)"], 2)   # y0 <= 2 on the box
    code, out, err = run_cli(["check", net, spec, "--timeout", "20"], capsys)
    assert code == 0 and out == "unsat\n"
    code, out, err = run_cli(["check", net, spec, "--timeout", "20", "--split", "activation", "--polish", "20"], capsys)
    assert code == 0 and out == "unsat\n"


def test_unsupported_op_at_bound_time_is_unknown_with_a_note(net, tmp_path, capsys, monkeypatch):
    def prove(graph, spec, settings, deadline):
        raise UnsupportedOpError("erf", "node_3")

    monkeypatch.setattr(api, "_prove_module", lambda: type("Driver", (), {"prove": staticmethod(prove)}))
    spec = box_vnnlib(tmp_path / "p.vnnlib", [0, 0], [1, 1], ["(>= Y_0 2.5)"], 2)
    code, out, err = run_cli(["check", net, spec, "--timeout", "2", "--attack-share", "0.1"], capsys)
    assert code == 0 and out == "unknown\n"
    assert len(err.strip().splitlines()) == 1 and "'erf'" in err and "node_3" in err

"""`verify train certified` end to end: train on the digits, export ONNX, re-import it, write robustness
specs with `verify spec robustness` and decide them with `verify check`: every image IBP certifies is
proven (unsat), so `check` certifies at least as many images as IBP alone."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from verify.cli import main

EPS = 0.03


def _json(capsys) -> dict:
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1, out  # exactly one JSON object on stdout
    return json.loads(out[0])


@pytest.fixture(scope="module")
def trained_onnx(tmp_path_factory):
    d = tmp_path_factory.mktemp("cert_cli")
    path = d / "model.onnx"
    return d, path


def test_train_check_end_to_end(trained_onnx, capsys):
    d, path = trained_onnx
    rc = main(["train", "certified", "--dataset", "digits", "--model", "mlp", "--method", "ibp", "--eps", str(EPS),
               "--epochs", "10", "--test-limit", "60", "--eval-subset", "30",
               "--out", str(path), "--json", "--no-progress-bar"])
    assert rc == 0
    res = _json(capsys)
    for k in ("clean_acc", "pgd_acc", "ibp_cert_acc", "crown_cert_acc"):
        assert 0.0 <= res[k] <= 1.0
    assert res["clean_acc"] >= res["pgd_acc"] >= res["ibp_cert_acc"]
    assert res["ibp_cert_acc"] > 0.2
    assert 0 < res["tightness"] <= 1 and res["seconds"] > 0 and res["crown_n"] == 30
    assert len(res["history"]) == 10
    assert path.is_file()

    # the ONNX file re-imports to the same function
    from verify.api import load_model
    from verify.datasets import load_digits
    from verify.train.evaluate import certified_mask

    g = load_model(str(path))
    x, y = load_digits("test")
    x, y = torch.as_tensor(x[:40]), torch.as_tensor(y[:40])
    cert40 = certified_mask(g, x, y, EPS, "ibp")
    # three images IBP certifies and three it does not (when there are so many)
    pick = cert40.nonzero().flatten()[:3].tolist() + (~cert40).nonzero().flatten()[:3].tolist()
    assert len(pick) >= 4, cert40.tolist()
    ibp = cert40[pick]
    assert int(ibp.sum()) >= 2, ibp.tolist()  # the comparison below must have something to compare

    verdicts = []
    for i in pick:
        spec = d / f"img{i}.vnnlib"
        assert main(["spec", "robustness", "--dataset", "digits", "--index", str(i), "--eps", str(EPS),
                     "--model", str(path), "--out", str(spec), "--json"]) == 0
        capsys.readouterr()
        assert main(["check", str(path), str(spec), "--json", "--timeout", "10"]) == 0
        verdicts.append(_json(capsys)["result"])
    proven = np.array([v == "unsat" for v in verdicts])
    assert all(proven[k] for k in range(len(pick)) if ibp[k]), (verdicts, ibp.tolist())
    assert proven.sum() >= int(ibp.sum())
    # a sat verdict must be a real counterexample: the image is then not IBP-certified either
    assert not any(v == "sat" and bool(ibp[k]) for k, v in enumerate(verdicts))


def test_bad_dataset_is_usage_error(capsys):
    rc = main(["train", "certified", "--dataset", "cifar-1000", "--epochs", "1", "--json"])
    assert rc == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cifar-1000" in err[0]

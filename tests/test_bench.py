"""`verify bench`: results.csv, result files, judging against expected.csv, caching, bad input."""
from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from verify import api
from verify.spec.results import read_result

try:
    from tests.test_cli_check import assert_one_line_error, box_vnnlib, run_cli, save_mlp
except ImportError:  # tests/ on sys.path instead of the repo root
    from test_cli_check import assert_one_line_error, box_vnnlib, run_cli, save_mlp

SHARED = Path(__file__).resolve().parents[2] / "shared"


@pytest.fixture
def suite(tmp_path):
    """A benchmark folder: one model, a sat and an (unprovable without BaB) safe property."""
    d = tmp_path / "bm"
    (d / "onnx").mkdir(parents=True)
    (d / "vnnlib").mkdir()
    W0, b0 = np.eye(2), np.zeros(2)
    W1, b1 = np.array([[1.0, 1.0], [0.0, 0.0]]), np.array([0.0, 1.0])
    save_mlp(d / "onnx" / "net.onnx", [(W0, b0), (W1, b1)])
    box_vnnlib(d / "vnnlib" / "sat.vnnlib", [0, 0], [1, 1], ["(>= Y_0 1.5)"], 2)
    box_vnnlib(d / "vnnlib" / "safe.vnnlib", [0, 0], [1, 1], ["(>= Y_0 2.5)"], 2)
    (d / "instances.csv").write_text("onnx/net.onnx,vnnlib/sat.vnnlib,20\n"
                                     "onnx/net.onnx,vnnlib/safe.vnnlib,2\n"
                                     "onnx/net.onnx,vnnlib/sat.vnnlib,20\n")
    return d


def write_expected(d: Path, sat_expected: str) -> None:
    (d / "expected.csv").write_text("onnx,vnnlib,expected,best_tool,best_time_s,source\n"
                                    f"onnx/net.onnx,vnnlib/sat.vnnlib,{sat_expected},x,1,y\n"
                                    "onnx/net.onnx,vnnlib/safe.vnnlib,unsat,x,1,y\n")


def read_rows(path: Path) -> list[dict]:
    with path.open() as f:
        return list(csv.DictReader(f))


def test_bench_writes_results_and_judges(suite, tmp_path, capsys, monkeypatch):
    write_expected(suite, "sat")
    monkeypatch.setattr(api, "_prove_module", lambda: None)   # falsification only: the safe one stays unsolved
    loads = []
    real = api.load_model
    monkeypatch.setattr(api, "load_model",
                        lambda p, s=None: (loads.append(p) if isinstance(p, (str, Path)) else None) or real(p, s))
    out = tmp_path / "out" / "deeper"
    code, stdout, err = run_cli(["bench", suite / "instances.csv", "--no-bab", "--timeout-scale", "0.5",
                                 "--out", out, "--attack-share", "0.5"], capsys)
    assert code == 0, err
    rows = read_rows(out / "results.csv")
    assert list(rows[0]) == ["onnx", "vnnlib", "result", "time_s", "result_file", "domains"]
    assert [r["result"] for r in rows] == ["sat", "unknown", "sat"]
    assert rows[0]["onnx"] == "onnx/net.onnx" and rows[1]["vnnlib"] == "vnnlib/safe.vnnlib"
    assert 0.4 < float(rows[1]["time_s"]) < 1.5   # 2 s x 0.5 scale = 1 s timeout, attack share 0.5, then unknown
    verdict, x, y = read_result(out / rows[0]["result_file"])
    assert verdict == "sat" and x.sum() >= 1.5 and y[0] >= 1.5
    assert read_result(out / rows[1]["result_file"])[0] == "unknown"
    assert len(loads) == 1                         # the model is loaded once per run
    assert "| 2 | 0 | 1 | 0 |" in stdout          # correct | wrong | unsolved | not judged


def test_bench_wrong_answer_exits_1(suite, tmp_path, capsys):
    write_expected(suite, "unsat")                 # a planted, false expectation
    code, stdout, err = run_cli(["bench", suite / "instances.csv", "--no-bab", "--limit", "1",
                                 "--out", tmp_path / "o", "--no-progress-bar", "--json"], capsys)
    assert code == 1
    obj = json.loads(stdout)
    assert obj["wrong"] == 1 and obj["instances"] == 1 and obj["rows"][0]["judged"] == "wrong"
    assert "WRONG" in err


def test_bench_every_and_limit(suite, tmp_path, capsys):
    code, stdout, _ = run_cli(["bench", suite / "instances.csv", "--no-bab", "--every", "2", "--json",
                               "--out", tmp_path / "o", "--no-progress-bar"], capsys)
    obj = json.loads(stdout)
    assert code == 0 and obj["instances"] == 2 and obj["verdicts"] == {"sat": 2}
    assert obj["judged"] is False and obj["not judged"] == 2


def test_bench_offset_shards_the_list(suite, tmp_path, capsys):
    rows = []
    for offset in (0, 1):
        code, stdout, _ = run_cli(["bench", suite / "instances.csv", "--no-bab", "--every", "2", "--offset",
                                   str(offset), "--json", "--out", tmp_path / f"o{offset}", "--no-progress-bar"], capsys)
        assert code == 0
        rows += [(r["onnx"], r["vnnlib"]) for r in json.loads(stdout)["rows"]]
    code, stdout, _ = run_cli(["bench", suite / "instances.csv", "--no-bab", "--json", "--out", tmp_path / "all",
                               "--no-progress-bar"], capsys)
    assert sorted(rows) == sorted((r["onnx"], r["vnnlib"]) for r in json.loads(stdout)["rows"])  # same multiset


def test_bench_bad_instance_is_recorded_as_error(suite, tmp_path, capsys):
    (suite / "instances.csv").write_text("onnx/missing.onnx,vnnlib/sat.vnnlib,5\nonnx/net.onnx,vnnlib/sat.vnnlib,5\n")
    code, stdout, err = run_cli(["bench", suite / "instances.csv", "--no-bab", "--out", tmp_path / "o",
                                 "--no-progress-bar"], capsys)
    assert code == 2
    assert [r["result"] for r in read_rows(tmp_path / "o" / "results.csv")] == ["error", "sat"]
    assert "missing.onnx" in err and "Traceback" not in err


def test_bench_jobs_runs_instances_in_worker_processes_with_the_same_rows(suite, tmp_path, capsys):
    """--jobs 2: two spawned workers; rows in list order, the same verdicts and counterexample files as one
    process, and a bad instance in a worker is still one `error` row with a one-line message."""
    write_expected(suite, "sat")
    lines = (suite / "instances.csv").read_text() + "onnx/missing.onnx,vnnlib/sat.vnnlib,5\n"
    (suite / "instances.csv").write_text(lines)
    got = {}
    for jobs in ("1", "2"):
        code, stdout, err = run_cli(["bench", suite / "instances.csv", "--jobs", jobs, "--timeout", "3",
                                     "--out", tmp_path / jobs, "--no-progress-bar", "--json"], capsys)
        assert code == 2, err                       # the missing model is bad input
        assert "missing.onnx" in err and "Traceback" not in err
        obj = json.loads(stdout)
        assert obj["wrong"] == 0 and obj["correct"] == 3
        got[jobs] = [(r["onnx"], r["vnnlib"], r["result"], r["result_file"]) for r in read_rows(tmp_path / jobs / "results.csv")]
    assert got["1"] == got["2"]
    assert [g[2] for g in got["2"]] == ["sat", "unsat", "sat", "error"]
    for g in got["2"][::2][:2]:                     # the sat files hold counterexamples that violate the spec
        verdict, x, y = read_result(tmp_path / "2" / g[3])
        assert verdict == "sat" and x.sum() >= 1.5 and y[0] >= 1.5


@pytest.mark.skipif(sys.platform == "win32", reason="process groups and SIGINT are POSIX")
def test_bench_jobs_interrupt_ends_the_workers_at_once(suite, tmp_path):
    """Ctrl-C during a --jobs run: exit 130 with one line, without waiting for the running instances (each
    would falsify for 60 s here)."""
    (suite / "instances.csv").write_text("onnx/net.onnx,vnnlib/safe.vnnlib,60\n" * 2)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.Popen([sys.executable, "-m", "verify.cli", "bench", str(suite / "instances.csv"), "--jobs", "2",
                             "--no-bab", "--attack-share", "1.0", "--out", str(tmp_path / "o"), "--no-progress-bar"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    time.sleep(6)  # the workers start (spawn, import torch) and take an instance each
    t0 = time.perf_counter()
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert time.perf_counter() - t0 < 10
    assert err.strip().splitlines() == ["verify: interrupted"]


def test_bench_jobs_a_dead_worker_fails_its_instances_and_the_run_goes_on(suite):
    """Workers killed mid-instance (as the out-of-memory killer would): their instances come back as
    internal errors naming the instance, at once, instead of hanging or ending the run."""
    import multiprocessing

    from verify.commands.check import _outcomes, read_instances
    from verify.settings import Settings

    (suite / "instances.csv").write_text("onnx/net.onnx,vnnlib/sat.vnnlib,20\n"
                                         + "onnx/net.onnx,vnnlib/safe.vnnlib,60\n" * 2)
    instances = read_instances(suite / "instances.csv")
    gen = _outcomes(instances, lambda inst: Settings(no_bab=True, attack_share=1.0, timeout=inst.timeout), 2, 1)
    first = next(gen)  # the sat one; the other worker is falsifying a 60 s instance
    assert first[0] == 0 and first[1].verdict == "sat"
    t0 = time.perf_counter()
    for child in multiprocessing.active_children():  # the pool's two workers
        child.kill()
    rest = sorted(gen, key=lambda t: t[0])
    assert time.perf_counter() - t0 < 10
    assert [i for i, _ in rest] == [1, 2]
    for i, oc in rest:
        assert oc.verdict == "error" and oc.error == "internal"
        assert "worker process failed" in oc.message and "safe.vnnlib" in oc.message


def test_bench_jobs_must_be_positive(suite, tmp_path, capsys):
    assert_one_line_error(*run_cli(["bench", suite / "instances.csv", "--jobs", "0", "--out", tmp_path / "o"],
                                   capsys), "--jobs")


def test_bench_jobs_with_nothing_selected_is_an_empty_run(suite, tmp_path, capsys):
    code, stdout, err = run_cli(["bench", suite / "instances.csv", "--jobs", "2", "--limit", "0", "--json",
                                 "--out", tmp_path / "o", "--no-progress-bar"], capsys)
    assert code == 0, err
    assert json.loads(stdout)["instances"] == 0


def test_unreadable_csv(tmp_path, capsys):
    assert_one_line_error(*run_cli(["bench", tmp_path / "none.csv", "--out", tmp_path / "o"], capsys), "none.csv")
    bad = tmp_path / "bad.csv"
    bad.write_text("a.onnx,b.vnnlib,5\nonly-two,columns\n")
    assert_one_line_error(*run_cli(["bench", bad, "--out", tmp_path / "o"], capsys), "bad.csv:2")
    (tmp_path / "dir.csv").mkdir()
    assert_one_line_error(*run_cli(["bench", tmp_path / "dir.csv", "--out", tmp_path / "o"], capsys), "dir.csv")


@pytest.mark.bench
def test_acasxu_falsification_finds_the_sat_instances(tmp_path, capsys):
    """Every expected-sat ACAS Xu instance gets a verified counterexample; no sat where unsat is expected."""
    csv_path = SHARED / "benchmarks" / "acasxu" / "instances.csv"
    if not csv_path.exists():
        pytest.skip(f"{csv_path} not present (the shared benchmarks folder beside the repo)")
    # --attack-share 1.0: falsification gets the whole (scaled, 2.3 s) timeout, nothing else runs
    code, stdout, err = run_cli(["bench", csv_path, "--no-bab", "--timeout-scale", "0.02", "--attack-share", "1.0",
                                 "--json", "--out", tmp_path / "acas", "--no-progress-bar"], capsys)
    obj = json.loads(stdout)
    assert code == 0 and obj["wrong"] == 0
    found = [r for r in obj["rows"] if r["expected"] == "sat" and r["result"] == "sat"]
    assert len(found) >= 44
    for r in found:   # every counterexample file reads back as a violation
        verdict, x, y = read_result(tmp_path / "acas" / r["result_file"])
        spec = api.load_spec(csv_path.parent / r["vnnlib"])
        assert verdict == "sat" and spec.violated_by(x, y)

"""Convex training of two-layer ReLU networks: reference problems, certificates, conversion, CLI.

Reference numbers come from the convex-training issue (two spirals: 1,561 patterns, optimum 1.3914658;
breast cancer with 100 sampled patterns: 3.3218181, the latter in test_convex_bench.py).
"""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from verify.errors import InputError
from verify.train.convex import data, fit
from verify.train.convex.admm import solve_admm
from verify.train.convex.colgen import solve_colgen
from verify.train.convex.cvx import solve_cvxpy
from verify.train.convex.gated import scenario_bound, solve_gated
from verify.train.convex.network import export_onnx, nonconvex_objective, to_module
from verify.train.convex.patterns import enumerate_patterns, sample_patterns
from verify.train.convex.problem import ConvexProblem

SPIRALS_OPT = 1.3914658


@pytest.fixture(scope="module")
def spirals_problem():
    ds = data.spirals()
    X = data.with_bias(ds.X_train)
    return ConvexProblem(X, ds.y_train, enumerate_patterns(X), ds.beta)


@pytest.fixture(scope="module")
def spirals_solution(spirals_problem):
    return solve_colgen(spirals_problem)


def test_spirals_has_1561_patterns(spirals_problem):
    assert spirals_problem.P == 1561
    # every sampled pattern is one of the enumerated ones
    S = sample_patterns(spirals_problem.X, 5000, seed=3)
    known = {c.tobytes() for c in spirals_problem.D.T}
    assert all(c.tobytes() in known for c in S.T)


def test_spirals_global_optimum_certified(spirals_solution):
    cert = spirals_solution["certificate"]
    assert abs(cert["primal"] - SPIRALS_OPT) / SPIRALS_OPT < 1e-6
    assert cert["rel_gap"] <= 1e-6
    assert cert["dual"] <= cert["primal"]
    assert cert["cone_violation"] <= 1e-8


def test_adam_never_below_global_optimum(spirals_problem, spirals_solution):
    """Any network's nonconvex objective is ≥ the certified lower bound of the all-patterns program."""
    lb = spirals_solution["certificate"]["dual"]
    X = torch.as_tensor(spirals_problem.X[:, :2])
    y = torch.as_tensor(spirals_problem.y)
    beta = spirals_problem.beta
    for h in (10, 50, 200):
        for seed in range(2):
            torch.manual_seed(seed)
            net = torch.nn.Sequential(torch.nn.Linear(2, h), torch.nn.ReLU(), torch.nn.Linear(h, 1, bias=False)).double()
            opt = torch.optim.Adam(net.parameters(), lr=1e-2)
            for _ in range(300):
                opt.zero_grad()
                f = net(X).ravel()
                reg = (net[0].weight ** 2).sum() + (net[0].bias ** 2).sum() + (net[2].weight ** 2).sum()
                loss = 0.5 * ((f - y) ** 2).sum() + 0.5 * beta * reg
                loss.backward()
                opt.step()
            assert float(loss.detach()) >= lb - 1e-9


def test_module_objective_equals_convex_objective(spirals_problem, spirals_solution):
    V, W = spirals_solution["V"], spirals_solution["W"]
    net = to_module(V, W, bias=True, dtype=torch.float64)
    conv = spirals_problem.objective(V, W)
    nonconv = nonconvex_objective(net, spirals_problem.X[:, :2], spirals_problem.y, spirals_problem.beta)
    assert abs(conv - nonconv) <= 1e-9 * conv
    assert net[0].in_features == 2 and net[2].out_features == 1


def test_onnx_roundtrip(tmp_path, spirals_problem, spirals_solution):
    ort = pytest.importorskip("onnxruntime")
    net = to_module(spirals_solution["V"], spirals_solution["W"])
    path = export_onnx(net, tmp_path / "spirals.onnx")
    x = spirals_problem.X[:, :2].astype(np.float32)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    out = sess.run(None, {sess.get_inputs()[0].name: x})[0]
    with torch.no_grad():
        ref = net(torch.as_tensor(x)).numpy()
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)


def _small_bc(P=8, n=120):
    ds = data.breast_cancer()
    X = data.with_bias(ds.X_train[:n])
    return ConvexProblem(X, ds.y_train[:n], sample_patterns(X, P, 0), 0.1)


def test_certificates_bracket_each_other():
    """ADMM's and cvxpy's rigorous bounds must be consistent: each dual ≤ the other's primal."""
    prob = _small_bc()
    ref = solve_cvxpy(prob, solver="CLARABEL", eps=1e-10)["certificate"]
    adm = solve_admm(prob, tol=1e-6, max_iters=3000)["certificate"]
    assert ref["rel_gap"] < 1e-6
    assert adm["dual"] <= ref["primal"] + 1e-9
    assert ref["dual"] <= adm["primal"] + 1e-9
    assert adm["cone_violation"] <= 1e-8
    assert adm["primal"] <= ref["primal"] * (1 + 1e-2)


def test_certificate_detects_suboptimal_point():
    prob = _small_bc()
    ref = solve_cvxpy(prob, solver="CLARABEL", eps=1e-10)
    cert = prob.certificate(0.5 * ref["V"], 0.5 * ref["W"])
    assert cert["rel_gap"] > 1e-3
    assert cert["dual"] <= ref["certificate"]["primal"] + 1e-9


def test_fit_same_seed_same_patterns_both_solvers():
    ds = data.breast_cancer()
    a = fit(ds.X_train[:100], ds.y_train[:100], beta=0.1, patterns=6, solver="admm", seed=4, max_iters=200)
    b = fit(ds.X_train[:100], ds.y_train[:100], beta=0.1, patterns=6, solver="cvxpy", seed=4,
            cvxpy_solver="CLARABEL")
    assert np.array_equal(a.D, b.D)
    assert b.gap is not None and b.rel_gap < 1e-5
    assert a.objective >= b.lower_bound - 1e-9
    assert isinstance(a.module, torch.nn.Sequential) and a.seconds > 0


def test_fit_rejects_bad_arguments():
    X = np.zeros((5, 2))
    with pytest.raises(ValueError):
        fit(X, np.ones(4))
    with pytest.raises(ValueError):
        fit(X, np.ones(5), solver="newton")
    with pytest.raises(ValueError):
        fit(X, np.ones(5), loss="logistic", solver="admm")


def test_gated_relaxation_lower_bounds_relu_program():
    prob = _small_bc(P=10)
    g = solve_gated(prob, tol=1e-7)
    relu = solve_cvxpy(prob, solver="CLARABEL", eps=1e-10)["certificate"]
    assert g["certificate"]["dual"] <= g["certificate"]["primal"]
    assert g["certificate"]["dual"] <= relu["primal"] + 1e-9
    assert scenario_bound(100, 398) == 1.0
    assert scenario_bound(5000, 100) < scenario_bound(2000, 100) < 1.0


def test_csv_loader_errors(tmp_path):
    p = tmp_path / "bad.csv"
    p.write_text("a,b,label\n1,2,0\n3,x,1\n")
    with pytest.raises(InputError, match="bad.csv:3"):
        data.from_csv(p)
    with pytest.raises(InputError):
        data.load(str(tmp_path / "missing.csv"))


def test_cli_json(tmp_path):
    csv = tmp_path / "toy.csv"
    rng = np.random.default_rng(0)
    Xr = rng.standard_normal((60, 3))
    lab = (Xr[:, 0] * Xr[:, 1] > 0).astype(int)
    csv.write_text("\n".join(",".join(f"{v:.6f}" for v in row) + f",{l}" for row, l in zip(Xr, lab)) + "\n")
    out = tmp_path / "m.onnx"
    r = subprocess.run([sys.executable, "-m", "verify.cli", "train", "convex", "--dataset", str(csv), "--patterns",
                        "20", "--solver", "admm", "--time-limit", "1", "--out", str(out), "--json"],
                       check=False, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    obj = json.loads(r.stdout)
    for k in ("objective", "gap", "seconds", "train_acc", "test_acc"):
        assert k in obj
    assert out.exists() and obj["train_acc"] > 0.6
    bad = subprocess.run([sys.executable, "-m", "verify.cli", "train", "convex", "--dataset", "nope", "--json"],
                         check=False, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and bad.stdout == "" and len(bad.stderr.strip().splitlines()) == 1


def test_robust_training_is_certified_and_pgd_agrees():
    """Convex adversarial training: training points the interval check certifies are never broken by PGD,
    and the robust network certifies more points than the standard one."""
    from verify.train.convex.adversarial import certify_linf, pgd_attack

    ds = data.digits01()
    X, y, eps = ds.X_train[:80], ds.y_train[:80], 0.05
    rob = fit(X, y, beta=0.1, patterns=4, adversarial_eps=eps, cvxpy_solver="SCS", eps=1e-6)
    std = fit(X, y, beta=0.1, patterns=4, solver="cvxpy", cvxpy_solver="SCS", eps=1e-6)
    c_rob = certify_linf(rob.module, X, y, eps, 0.0, 1.0)
    c_std = certify_linf(std.module, X, y, eps, 0.0, 1.0)
    broken = pgd_attack(rob.module, X, y, eps, 0.0, 1.0)
    assert not np.any(c_rob & broken)
    assert rob.info["robust_train_acc"] >= 0.9
    assert c_rob.mean() >= c_std.mean()
    # the robust objective bounds the standard objective of the same network from above
    assert rob.objective >= rob.info["standard_objective"] - 1e-6


def test_certify_linf_is_sound_against_sampling():
    from verify.train.convex.adversarial import certify_linf

    rng = np.random.default_rng(1)
    net = torch.nn.Sequential(torch.nn.Linear(3, 6), torch.nn.ReLU(), torch.nn.Linear(6, 1)).double()
    X = rng.standard_normal((50, 3))
    with torch.no_grad():
        y = np.sign(net(torch.as_tensor(X)).numpy().ravel())
    eps = 0.3
    cert = certify_linf(net, X, y, eps)
    for k in np.flatnonzero(cert):
        Z = X[k] + eps * rng.uniform(-1, 1, (2000, 3))
        Z[:8] = X[k] + eps * np.array(np.meshgrid(*[[-1, 1]] * 3)).reshape(3, -1).T
        with torch.no_grad():
            m = y[k] * net(torch.as_tensor(Z)).numpy().ravel()
        assert m.min() > 0


def test_trained_network_through_onnx_and_verify_check(tmp_path, spirals_problem, spirals_solution):
    """The exported network goes through the project's verifier: a tiny box around a correctly
    classified training point is robust (unsat), a box covering both classes is not (sat)."""
    import verify
    from verify.spec.spec import Disjunct, Spec

    net = to_module(spirals_solution["V"], spirals_solution["W"])
    path = export_onnx(net, tmp_path / "spirals.onnx")
    X, y = spirals_problem.X[:, :2], spirals_problem.y
    with torch.no_grad():
        f = net(torch.as_tensor(X, dtype=torch.float32)).numpy().ravel()
    k = int(np.argmax(y * f))  # the most confidently classified point
    C = np.array([[1.0 if y[k] > 0 else -1.0]])
    tiny = Spec(2, 1, [Disjunct(X[k] - 1e-4, X[k] + 1e-4, C, np.zeros(1))])
    wide = Spec(2, 1, [Disjunct(np.full(2, -1.5), np.full(2, 1.5), C, np.zeros(1))])
    assert verify.check(str(path), tiny, timeout=20).verdict == "unsat"
    res = verify.check(str(path), wide, timeout=20)
    assert res.verdict == "sat"
    with torch.no_grad():
        fx = float(net(torch.as_tensor(res.x, dtype=torch.float32).reshape(1, 2)))
    assert C[0, 0] * fx <= 1e-5


def test_logistic_loss_objective_matches_network():
    """With the logistic loss the recovered network's nonconvex objective equals the convex optimum."""
    from verify.train.convex.network import module_weights

    ds = data.breast_cancer()
    X, y = ds.X_train[:120], ds.y_train[:120]
    r = fit(X, y, beta=0.1, patterns=5, loss="logistic", solver="cvxpy", cvxpy_solver="CLARABEL")
    W1, b1, W2, b2 = module_weights(r.module.double())
    f = (np.maximum(X @ W1.T + b1, 0.0) @ W2.T + b2).ravel()
    nonconvex = np.sum(np.logaddexp(0.0, -y * f)) + 0.05 * (np.sum(W1 ** 2) + np.sum(b1 ** 2) + np.sum(W2 ** 2))
    assert r.gap is None
    assert abs(nonconvex - r.objective) <= 1e-5 * r.objective

"""`verify.check`: falsify, then branch and bound (stand-in driver here), float64 re-check of every `sat`."""
from __future__ import annotations

import types

import numpy as np
import pytest

from verify import api
from verify.errors import InputError, UnsupportedOpError
from verify.settings import Settings
from verify.spec.spec import Disjunct, Spec

try:
    from tests.test_attack import box_spec, mlp, planted_spec, random_mlp
except ImportError:  # tests/ on sys.path instead of the repo root
    from test_attack import box_spec, mlp, planted_spec, random_mlp


def identity_graph():
    return mlp([(np.array([[1.0]]), np.zeros(1))], 1)  # y = x


def fake_driver(verdict="unsat", x=None, raises=None, domains=7):
    calls = []

    def prove(graph, spec, settings, deadline):
        calls.append((graph, spec, settings, deadline))
        if raises is not None:
            raise raises
        return types.SimpleNamespace(verdict=verdict, x=x, domains=domains, note="stand-in")

    return types.SimpleNamespace(prove=prove, calls=calls)


def test_sat_from_attack_carries_verified_counterexample():
    g = random_mlp(0)
    spec = planted_spec(g, 0)
    res = api.check(g, spec, timeout=20, no_bab=True)
    assert res.verdict == "sat"
    assert spec.violated_by(res.x, res.y)
    assert 0 < res.time_s < 20


def test_without_a_prover_unknown_within_the_attack_share(monkeypatch):
    monkeypatch.setattr(api, "_prove_module", lambda: None)
    g = identity_graph()
    spec = box_spec([0.5], [1.0], [[1.0]], [0.1])  # unsafe iff x <= 0.1: impossible
    res = api.check(g, spec, timeout=10, attack_share=0.1, attack_min_s=0.2)
    assert res.verdict == "unknown" and "not available" in res.note
    assert res.time_s < 3.0


def test_real_prover_settles_a_safe_property():
    if api._prove_module() is None:
        pytest.skip("verify.bab.driver not built")
    spec = box_spec([0.5], [1.0], [[1.0]], [0.1])  # y = x >= 0.5 > 0.1 on the box
    res = api.check(identity_graph(), spec, timeout=20, attack_share=0.0)
    assert res.verdict == "unsat"
    g = random_mlp(3)
    res = api.check(g, planted_spec(g, 3), timeout=4, attack_share=0.0)   # the prover alone
    assert res.verdict in ("sat", "unknown", "timeout")
    if res.verdict == "sat":
        assert planted_spec(g, 3).violated_by(res.x, res.y)


def test_full_attack_share_ends_as_timeout():
    spec = box_spec([0.5], [1.0], [[1.0]], [0.1])
    res = api.check(identity_graph(), spec, timeout=0.5, attack_share=1.0)
    assert res.verdict == "timeout"
    assert 0.4 < res.time_s < 1.5


def test_driver_verdicts_pass_through_with_deadline(monkeypatch):
    drv = fake_driver("unsat")
    monkeypatch.setattr(api, "_prove_module", lambda: drv)
    spec = box_spec([0.5], [1.0], [[1.0]], [0.1])
    res = api.check(identity_graph(), spec, timeout=5, attack_min_s=0.1, attack_share=0.0)
    assert res.verdict == "unsat" and res.domains == 7
    (_, _, settings, deadline), = drv.calls
    assert settings.timeout == 5 and deadline > 0


def test_driver_sat_is_rechecked(monkeypatch):
    spec = box_spec([0.0], [1.0], [[1.0]], [0.1])  # unsafe iff x <= 0.1; attack disabled by a zero share
    # a wrong candidate from the driver is not reported as sat
    monkeypatch.setattr(api, "_prove_module", lambda: fake_driver("sat", x=np.array([0.5])))
    res = api.check(identity_graph(), spec, Settings(attack_share=0.0, attack_min_s=0.0, timeout=5))
    assert res.verdict == "unknown" and "re-check" in res.note
    # a right one is, with its float64 output
    monkeypatch.setattr(api, "_prove_module", lambda: fake_driver("sat", x=np.array([0.05])))
    res = api.check(identity_graph(), spec, Settings(attack_share=0.0, attack_min_s=0.0, timeout=5))
    assert res.verdict == "sat" and res.x[0] == 0.05 and res.y[0] == 0.05


def test_falsification_resumes_after_the_prover_gives_up(monkeypatch):
    g = random_mlp(5)
    spec = planted_spec(g, 5)   # centre and corners miss this one
    drv = fake_driver("unknown")
    monkeypatch.setattr(api, "_prove_module", lambda: drv)
    # a first attack too short to find it (centre and corners only), so the prover is called
    res = api.check(g, spec, timeout=20, attack_share=1e-9, attack_min_s=0.0)
    assert len(drv.calls) == 1
    assert res.verdict == "sat" and spec.violated_by(res.x, res.y) and res.domains == 7
    monkeypatch.setattr(api, "_prove_module", lambda: fake_driver("unknown"))
    res = api.check(identity_graph(), box_spec([0.5], [1.0], [[1.0]], [0.1]), timeout=1.5, attack_min_s=0.1,
                    attack_share=0.05)
    assert res.verdict == "unknown" and "resumed" in res.note and 1.2 < res.time_s < 2.5


def test_unsupported_op_at_bound_time_is_unknown_with_its_name(monkeypatch):
    err = UnsupportedOpError("sign", "node_7")
    monkeypatch.setattr(api, "_prove_module", lambda: fake_driver(raises=err))
    spec = box_spec([0.5], [1.0], [[1.0]], [0.1])
    res = api.check(identity_graph(), spec, timeout=5, attack_min_s=0.1, attack_share=0.0)
    assert res.verdict == "unknown" and "'sign'" in res.note and "node_7" in res.note


def test_dimension_mismatch_is_input_error():
    spec = box_spec([0.0, 0.0], [1.0, 1.0], [[1.0]], [0.0])
    with pytest.raises(InputError, match="declares 2 inputs"):
        api.check(identity_graph(), spec, timeout=1)
    spec = box_spec([0.0], [1.0], [[1.0, 1.0]], [0.0])
    with pytest.raises(InputError, match="declares 2 outputs"):
        api.check(identity_graph(), spec, timeout=1)


def test_empty_region_is_unsat():
    res = api.check(identity_graph(), Spec(1, 1, []), timeout=1)
    assert res.verdict == "unsat"


def test_settings_validation_and_budget():
    s = Settings(timeout=116)
    assert s.attack_budget() == pytest.approx(1.16)
    assert Settings(timeout=10).attack_budget() == 1.0           # raised to attack_min_s
    assert Settings(timeout=300, attack_share=0.1).attack_budget() == pytest.approx(30.0)
    assert Settings(timeout=1.5).attack_budget() == 0.75         # never more than half a short timeout
    assert Settings(timeout=10, attack_share=1.0).attack_budget() == 10.0
    assert Settings(timeout=10, attack_share=0.0).attack_budget() == 0.0
    assert Settings(timeout=120).attack_budget(n_inputs=5) == pytest.approx(1.2)
    assert Settings(timeout=120).attack_budget(n_inputs=784) == 3.0   # high-dimensional floor
    assert Settings(timeout=4).attack_budget(n_inputs=784) == 2.0     # still at most half the timeout
    with pytest.raises(TypeError):
        s.replace(timout=3)
    with pytest.raises(ValueError):
        Settings(method="deeppoly")
    with pytest.raises(ValueError):
        Settings(attack_share=1.5)


def test_multi_box_spec_through_check():
    g = mlp([(np.array([[1.0], [-1.0]]), np.zeros(2)), (np.array([[1.0, 0.0]]), np.zeros(1))], 1)
    d1 = Disjunct(np.array([-1.0]), np.array([1.0]), np.array([[-1.0]]), np.array([-1.5]))
    d2 = Disjunct(np.array([1.0]), np.array([3.0]), np.array([[-1.0]]), np.array([-2.9]))
    res = api.check(g, Spec(1, 1, [d1, d2]), timeout=5, no_bab=True)
    assert res.verdict == "sat" and res.x[0] >= 2.9


def test_compute_bounds_forwards_box_and_spec_rows():
    pytest.importorskip("verify.bounds")
    g = mlp([(np.array([[1.0], [-1.0]]), np.zeros(2)), (np.array([[1.0, 1.0]]), np.zeros(1))], 1)  # |x|
    lo, hi = api.compute_bounds(g, (np.array([-1.0]), np.array([2.0])), method="ibp")
    assert float(lo.min()) <= 0.0 and float(hi.max()) >= 2.0          # sound for |x| on [-1, 2]
    spec = box_spec([1.0], [2.0], [[-1.0]], [0.0])                     # row -y: bounds of -|x| on [1, 2]
    lo, hi = api.compute_bounds(g, spec, method="crown")
    assert float(lo.reshape(-1)[0]) == pytest.approx(-2.0, abs=1e-6)
    assert float(hi.reshape(-1)[0]) == pytest.approx(-1.0, abs=1e-6)
    verify_pkg = __import__("verify")
    assert verify_pkg.compute_bounds is api.compute_bounds

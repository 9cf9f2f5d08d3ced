"""The structure-exploiting interior-point method for convex two-layer ReLU training (verify.train.convex.ipm)."""
from __future__ import annotations

import numpy as np
import pytest

from verify.train.convex import data, fit, ipm, problem
from verify.train.convex.cvx import solve_cvxpy
from verify.train.convex.patterns import sample_patterns
from verify.train.convex.problem import ConvexProblem


def _bc(n: int = 120, P: int = 20, seed: int = 0) -> ConvexProblem:
    ds = data.breast_cancer()
    X = data.with_bias(ds.X_train[:n])
    return ConvexProblem(X, ds.y_train[:n], sample_patterns(X, P, seed), 0.1)


@pytest.fixture(scope="module")
def bc_ref():
    prob = _bc()
    return prob, solve_cvxpy(prob, solver="CLARABEL", eps=1e-10)["certificate"]


def test_nt_scaling_identities():
    """W z = W⁻¹ s = λ, W⁻² s = z, λ ∘ (λ ⦸ r) = r and the step to the cone boundary, row by row."""
    rng = np.random.default_rng(0)

    def inside(m, k):
        v = rng.standard_normal((m, k))
        v[:, 0] = np.linalg.norm(v[:, 1:], axis=1) + rng.random(m) + 0.1
        return v

    s, z = inside(6, 5), inside(6, 5)
    b, v, wbar, lam = ipm._soc_scaling(s, z)
    assert np.allclose(ipm._soc_W(b, v, z), ipm._soc_Winv(b, v, s), atol=1e-12)
    assert np.allclose(np.einsum("mij,mj->mi", ipm._soc_H(b, wbar), s), z, atol=1e-12)
    r = rng.standard_normal((6, 5))
    assert np.allclose(ipm._soc_prod(lam, ipm._soc_div(lam, r)), r, atol=1e-12)
    d = rng.standard_normal((6, 5))
    a = ipm._soc_maxstep(s, d)
    edge = s + a * d
    assert abs((edge[:, 0] - np.linalg.norm(edge[:, 1:], axis=1)).min()) < 1e-10
    inner = s + 0.99 * a * d
    assert (inner[:, 0] - np.linalg.norm(inner[:, 1:], axis=1)).min() > 0


def test_ipm_matches_clarabel_with_certificate(bc_ref):
    prob, ref = bc_ref
    r = ipm.solve_interior(prob)
    c = r["certificate"]
    assert c["rel_gap"] <= 1e-7
    assert abs(c["primal"] - ref["primal"]) <= 1e-7 * ref["primal"]
    assert c["dual"] <= ref["primal"] + 1e-9 and ref["dual"] <= c["primal"] + 1e-9
    assert c["cone_violation"] <= 1e-8


def test_ipm_multipliers_certify_without_nnls(bc_ref, monkeypatch):
    """The LP multipliers of the IPM are the cone multipliers of the dual certificate: with them no
    pattern needs a projection (NNLS), and the gap is still tight."""
    prob, ref = bc_ref
    r = ipm.solve_ipm(prob)
    assert r["status"] in ("optimal", "stalled")

    def no_nnls(*a, **k):
        raise AssertionError("NNLS should not be needed")

    monkeypatch.setattr(problem, "_cone_dist", no_nnls)
    lam = prob.y - prob.predict(r["V"], r["W"])
    c = prob.certificate(r["V"], r["W"], duals=[lam], multipliers=[r["mu"]], residual_dual=False)
    assert c["rel_gap"] <= 1e-6
    assert c["dual"] <= ref["primal"] + 1e-9


def test_ipm_working_set_rounds_reach_the_full_optimum(bc_ref):
    """Column generation from a small working set prices every pattern and ends at the same optimum."""
    prob, ref = bc_ref
    r = ipm.solve_interior(prob, working_set=6, add=4, init_cols=np.arange(3))
    assert r["rounds"] > 1
    assert r["certificate"]["rel_gap"] <= 1e-7
    assert abs(r["certificate"]["primal"] - ref["primal"]) <= 1e-7 * ref["primal"]


def test_fit_ipm_and_admm_polish_agree():
    ds = data.breast_cancer()
    a = fit(ds.X_train[:150], ds.y_train[:150], beta=0.1, patterns=15, solver="ipm", seed=2)
    b = fit(ds.X_train[:150], ds.y_train[:150], beta=0.1, patterns=15, solver="admm", polish="ipm", seed=2)
    assert np.array_equal(a.D, b.D)
    assert a.rel_gap <= 1e-7 and b.rel_gap <= 1e-7
    assert abs(a.objective - b.objective) <= 1e-7 * a.objective
    assert b.info["iters"] <= 100 and b.info["ipm_iters"] > 0
    with pytest.raises(ValueError):
        fit(ds.X_train[:20], ds.y_train[:20], solver="admm", polish="newton")


def test_pattern_search_improves_on_adams_patterns():
    """Each round's program is solved exactly; the best objective is ≤ the convex optimum over the first
    network's own patterns (round 0), which is ≤ that network's nonconvex objective; the certified
    all-patterns lower bound stays below every objective."""
    from verify.train.convex.colgen import pattern_search

    ds = data.breast_cancer()
    X = data.with_bias(ds.X_train[:120])
    r = pattern_search(X, ds.y_train[:120], 0.1, max_patterns=60, rounds=2, hidden=30, adam_steps=600,
                       refine_steps=200, time_limit=60.0)
    tr = r["trace"]
    assert len(tr) == 3 and all(t["patterns"] <= 60 for t in tr)
    assert tr[0]["objective"] <= r["adam_objective"] + 1e-9
    assert r["certificate"]["primal"] == min(t["objective"] for t in tr)
    assert r["certificate"]["rel_gap"] <= 1e-5
    assert r["dual_lower_bound_full"] <= r["certificate"]["primal"]
    assert r["D"].shape[1] <= 60


def test_spirals_global_optimum_by_ipm_column_generation():
    """The issue's two spirals over all 1,561 patterns: the IPM's column generation prices every pattern
    and certifies the global optimum 1.3914658."""
    from verify.train.convex.patterns import enumerate_patterns

    ds = data.spirals()
    X = data.with_bias(ds.X_train)
    prob = ConvexProblem(X, ds.y_train, enumerate_patterns(X), ds.beta)
    r = ipm.solve_interior(prob)
    c = r["certificate"]
    assert r["working_set"] < prob.P and r["rounds"] > 1
    assert abs(c["primal"] - 1.3914658) / 1.3914658 < 1e-6
    assert c["rel_gap"] <= 1e-6 and c["cone_violation"] <= 1e-8


def test_cone_bounds_are_upper_bounds_on_the_projection():
    """The batched FISTA bounds are ≥ the exact ‖Π_K(g)‖ (NNLS) and close to it after enough steps;
    pricing with them gives the same values where they matter."""
    prob = _bc(n=100, P=12, seed=3)
    lam = np.random.default_rng(0).standard_normal(prob.n)
    G = prob.X.T @ (prob.D * lam[:, None])
    S = prob.signs
    exact = np.array([problem._cone_dist(S[:, [j]] * prob.X, G[:, j])[0] for j in range(prob.P)])
    b1, M1 = problem._cone_bounds(prob.X, S, G, None, 20)
    b2, _ = problem._cone_bounds(prob.X, S, G, M1, 2000)
    assert np.all(b1 >= exact - 1e-12) and np.all(b2 >= exact - 1e-12)
    assert np.all(b2 <= b1 + 1e-12) and np.allclose(b2, exact, rtol=1e-3, atol=1e-9)
    rv, _ = prob.price(lam)
    rv2, _ = prob.price(lam, fista_iters=50, store=np.zeros((prob.n, 2 * prob.P)))
    big = rv > prob.beta
    assert np.allclose(rv[big], rv2[big], rtol=1e-9)

"""Lipschitz bounds: published values, certificate soundness, input formats, CLI.

Published/reference values: LipSDP paper (random_weights.mat), the seed paper's MaxMin nets (values of
shared/data/README.md) and the issue's seeded 10-50-50-10 ReLU net.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn

import verify
from verify.errors import InputError
from verify.lipsdp import Activation, LipNet, lipschitz
from verify.lipsdp.api import _normalise
from verify.lipsdp.chain import Chain, NotPositiveDefinite, certify_with_repair
from verify.lipsdp.fast import solve_fast

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "lipschitz"


def _data(name: str) -> Path:
    p = DATA / name
    if not p.exists():
        pytest.skip(f"shared data file {p} is missing (the LipSDP / QCs_MaxMin weights)")
    return p


def seeded_net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(10, 50), nn.ReLU(), nn.Linear(50, 50), nn.ReLU(), nn.Linear(50, 10))


def _bracket_ok(r):
    assert 0 <= r.lower <= r.upper <= r.naive * (1 + 1e-12)


# ------------------------------------------------------------------------------ reference values
def test_seeded_net_published_values():
    net = seeded_net()
    n = lipschitz(net, method="naive")
    assert n.upper == pytest.approx(1.567186, rel=1e-6)
    assert n.lower > 0.40
    _bracket_ok(n)
    r = lipschitz(net, method="lipsdp-neuron", lower=False)
    assert r.upper == pytest.approx(0.597558, rel=1e-5)
    assert r.upper >= 0.5975581  # the true optimum (0.5975581...): a certified bound cannot be below it
    lay = lipschitz(net, method="lipsdp-layer", lower=False)
    assert lay.upper == pytest.approx(0.711453, rel=1e-5)
    assert r.upper <= lay.upper <= n.upper


def test_random_weights_published():
    p = _data("random_weights.mat")
    r = lipschitz(p, method="lipsdp-neuron")
    assert r.upper == pytest.approx(36.482, rel=1e-3)
    assert r.naive == pytest.approx(43.306, rel=1e-3)
    _bracket_ok(r)
    lay = lipschitz(p, method="lipsdp-layer", lower=False)
    assert lay.upper == pytest.approx(39.839, rel=1e-3)


def test_maxmin_2fc_32_seed_paper():
    p = _data("weights_l2_2fc_32.mat")
    nsr = lipschitz(p, method="lipsdp-nsr", solver="CLARABEL", lower=False)
    assert nsr.upper == pytest.approx(38.548, rel=1e-3)
    assert nsr.naive == pytest.approx(42.463, rel=1e-3)
    # the extended QC set (free cross multipliers) is at least as tight, and still above a true quotient
    full = lipschitz(p, method="lipsdp-neuron", samples=16)
    assert full.upper <= nsr.upper
    assert full.lower > 35.0
    _bracket_ok(full)


# the seed paper's LipSDP-NSR values (shared/data/README.md); 18fc_128 (13 s) is in the bench file
PAPER_NSR = {"2fc_16": 22.594, "2fc_32": 38.548, "2fc_64": 73.773, "2fc_128": 70.865, "5fc_32": 224.526,
             "5fc_64": 386.807, "8fc_32": 401.033, "8fc_64": 722.342, "8fc_128": 714.139, "18fc_32": 17431.5,
             "18fc_64": 22842.3}


@pytest.mark.parametrize("key", sorted(PAPER_NSR))
def test_nsr_ipm_reproduces_seed_paper(key):
    r = lipschitz(_data(f"weights_l2_{key}.mat"), method="lipsdp-nsr", lower=False)
    assert r.solver == "ipm"
    assert r.upper == pytest.approx(PAPER_NSR[key], rel=1e-3)
    # the dual point brackets the SDP optimum tightly: the certified bound is within 2e-5 of the best
    assert r.sdp_lower <= r.upper <= r.naive
    assert r.sdp_lower >= r.upper * (1 - 2e-5)


def test_maxmin_2fc_16_fast():
    r = lipschitz(_data("weights_l2_2fc_16.mat"), method="lipsdp-neuron", samples=16)
    _bracket_ok(r)
    assert r.upper < 22.594  # below the seed paper's LipSDP-NSR value (22.594) with the extended QCs
    assert r.sdp_lower >= r.upper * (1 - 1e-3)   # and proved within 0.1 % of the extended SDP's optimum


# ------------------------------------------------------------------------------ exactness cases
def _orthogonal(n, rng):
    q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    return q


@pytest.mark.parametrize("act", [Activation.groupsort(2), Activation.groupsort(4),
                                 Activation.householder([0.6, 0.8])])
def test_orthogonal_weights_give_one(act):
    rng = np.random.default_rng(1)
    net = LipNet([_orthogonal(8, rng) for _ in range(4)], [act] * 3)
    r = lipschitz(net, samples=16)
    assert r.upper == pytest.approx(1.0, abs=1e-6)
    assert r.lower == pytest.approx(1.0, abs=1e-6)


def test_single_linear_layer_is_exact():
    W = np.array([[3.0, 0.0], [0.0, 1.0]])
    r = lipschitz(LipNet([W], []))
    assert r.upper == pytest.approx(3.0, rel=1e-9)
    assert r.lower == pytest.approx(3.0, rel=1e-6)


# ------------------------------------------------------------------------------ certificate soundness
def _dense_M(chain: Chain, theta, rho):
    """The full LipSDP matrix M(rho), assembled densely (independent of the elimination)."""
    Ws, l = chain.weights, chain.l
    dims = [Ws[0].shape[1]] + [W.shape[0] for W in Ws[:-1]]
    off = np.cumsum([0] + dims)
    M = np.zeros((off[-1], off[-1]))
    mats = [q.matrices(m) for q, m in zip(chain.qcs, chain.unpack(theta))]
    M[:dims[0], :dims[0]] += rho * np.eye(dims[0])
    for k, (P, R, Q) in enumerate(mats):
        # q(v, w) with v = W z_k and w = z_{k+1} - A z_k (A = 0 without a skip): [v; w] = E [z_k; z_{k+1}]
        a, b = slice(off[k], off[k + 1]), slice(off[k + 1], off[k + 2])
        A = np.zeros((dims[k + 1], dims[k])) if chain.skips[k] is None else chain.skips[k]
        E = np.block([[Ws[k], np.zeros((dims[k + 1], dims[k + 1]))], [-A, np.eye(dims[k + 1])]])
        Rd = R.dense()
        F = E.T @ np.block([[P.dense(), Rd], [Rd.T, Q.dense()]]) @ E
        ab = np.r_[a, b]
        M[np.ix_(ab, ab)] -= F
    last = slice(off[l], off[l + 1])
    M[last, last] -= Ws[-1].T @ Ws[-1]
    return M


@pytest.mark.parametrize("acts", [["relu", "relu"], ["tanh", "sigmoid"], ["maxmin", "maxmin"],
                                  ["leakyrelu", "maxmin"]])
def test_certificate_is_feasible_and_tight(acts):
    rng = np.random.default_rng(3)
    ws = [rng.standard_normal((6, 5)), rng.standard_normal((6, 6)), rng.standard_normal((3, 6))]
    mk = {"maxmin": lambda: Activation.groupsort(2), "relu": lambda: Activation.slope("relu"),
          "tanh": lambda: Activation.slope("tanh"), "sigmoid": lambda: Activation.slope("sigmoid"),
          "leakyrelu": lambda: Activation.slope("leakyrelu", 0.1)}
    net = LipNet(ws, [mk[a]() for a in acts])
    chain = Chain(net)
    res = solve_fast(chain, time_limit=20)
    rho, _, theta = certify_with_repair(chain, res.theta)
    assert np.linalg.eigvalsh(_dense_M(chain, theta, rho))[0] >= -1e-9 * rho
    assert np.linalg.eigvalsh(_dense_M(chain, theta, rho * (1 - 1e-4)))[0] < 0
    # and it really bounds the network: no sampled quotient exceeds it
    x = torch.randn(2000, 5, dtype=torch.float64)
    y = x + 1e-3 * torch.randn(2000, 5, dtype=torch.float64)
    q = (net.forward_torch(x) - net.forward_torch(y)).norm(dim=1) / (x - y).norm(dim=1)
    assert q.max().item() <= np.sqrt(rho)


def test_infeasible_multipliers_are_repaired_not_trusted():
    torch.manual_seed(0)
    net, _ = _normalise(verify.lipsdp.load_network(seeded_net()))
    chain = Chain(net)
    with pytest.raises(NotPositiveDefinite):
        chain.certify_rho(np.zeros(chain.n_params))  # lam = 0: last block -W'W is not PD
    rho, t, _ = certify_with_repair(chain, np.zeros(chain.n_params))
    assert t > 0 and np.isfinite(rho)
    # a solver's optimistic raw value below the optimum can never come out as the certified bound
    good = solve_fast(chain, time_limit=20)
    rho_good, _, _ = certify_with_repair(chain, good.theta)
    assert rho_good >= good.value * (1 - 1e-12)


# ------------------------------------------------------------------------------ SDP dual bound
def test_sdp_lower_below_clarabel_optimum():
    """sdp_lower <= the SDP optimum (Clarabel's raw value, accurate to ~1e-8) <= certified upper."""
    torch.manual_seed(4)
    net = nn.Sequential(nn.Linear(6, 20), nn.ReLU(), nn.Linear(20, 20), nn.ReLU(), nn.Linear(20, 4))
    fast = lipschitz(net, method="lipsdp-neuron", lower=False)
    ref = lipschitz(net, method="lipsdp-neuron", solver="CLARABEL", lower=False)
    assert fast.sdp_lower <= ref.solver_value * (1 + 1e-7)
    assert ref.solver_value <= fast.upper * (1 + 1e-7)
    assert fast.sdp_lower >= fast.upper * (1 - 1e-3)      # the dual point is nearly optimal
    lay = lipschitz(net, method="lipsdp-layer", lower=False)
    lay_ref = lipschitz(net, method="lipsdp-layer", solver="CLARABEL", lower=False)
    assert lay.sdp_lower <= lay_ref.solver_value * (1 + 1e-7) <= lay.upper * (1 + 2e-7)
    # extended GroupSort QCs (equality-constrained dual): the same bracket around Clarabel's optimum
    from verify.nn import GroupSort

    mm = nn.Sequential(nn.Linear(6, 12), GroupSort(2), nn.Linear(12, 12), GroupSort(2), nn.Linear(12, 4))
    full = lipschitz(mm, method="lipsdp-neuron", lower=False)
    full_ref = lipschitz(mm, method="lipsdp-neuron", solver="CLARABEL", lower=False)
    assert full.sdp_lower <= full_ref.solver_value * (1 + 1e-6)
    assert full.sdp_lower >= full.upper * (1 - 1e-2)


@pytest.mark.parametrize("acts", [["relu", "relu"], ["tanh", "leakyrelu"], ["maxmin", "relu"],
                                  ["householder", "maxmin"]])
@pytest.mark.parametrize("coupling", ["full", "paper"])
def test_dual_repair_makes_any_point_feasible(acts, coupling):
    """Random (infeasible) dual candidates come out meeting every QC, and never above the SDP optimum."""
    from verify.lipsdp import dual

    rng = np.random.default_rng(5)
    mk = {"relu": Activation.slope("relu"), "tanh": Activation.slope("tanh"),
          "leakyrelu": Activation.slope("leakyrelu", 0.2), "maxmin": Activation.groupsort(2),
          "householder": Activation.householder([0.6, 0.8])}
    net = LipNet([rng.standard_normal((6, 5)), rng.standard_normal((6, 6)), rng.standard_normal((3, 6))],
                 [mk[a] for a in acts])
    chain = Chain(net, coupling=coupling)
    opt = lipschitz(net, method="lipsdp-nsr" if coupling == "paper" else "lipsdp-neuron",
                    solver="CLARABEL", lower=False).solver_value ** 2
    for _ in range(5):
        Ys = [rng.standard_normal((n, 4)) for n in [5, 6, 6]]
        val, viol = dual.repair(chain, Ys)
        assert viol < 1e-12
        assert 0 <= val <= opt * (1 + 1e-6)


@pytest.mark.parametrize("acts", [[Activation.groupsort(4)] * 2, [Activation.householder([0.6, 0.8]),
                                                                 Activation.groupsort(2)]])
def test_ipm_matches_clarabel(acts):
    """The barrier solver and Clarabel on the dense LMI agree on lipsdp-nsr (GroupSort(4), Householder)."""
    rng = np.random.default_rng(11)
    net = LipNet([rng.standard_normal((8, 6)), rng.standard_normal((8, 8)), rng.standard_normal((4, 8))], acts)
    a = lipschitz(net, method="lipsdp-nsr", lower=False)
    b = lipschitz(net, method="lipsdp-nsr", solver="CLARABEL", lower=False)
    assert a.solver == "ipm"
    assert a.upper == pytest.approx(b.upper, rel=1e-5)
    assert b.solver_value * (1 - 1e-6) <= a.upper and a.sdp_lower <= b.solver_value * (1 + 1e-6)


def test_ipm_refuses_slope_layers():
    with pytest.raises(InputError, match="ipm"):
        lipschitz(seeded_net(), method="lipsdp-nsr", solver="ipm", lower=False)


# ------------------------------------------------------------------------------ l_inf
def test_linf_small_net():
    torch.manual_seed(1)
    net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 2))
    r = lipschitz(net, norm="inf", method="lipsdp-neuron", solver="CLARABEL")
    _bracket_ok(r)
    assert r.upper < r.naive
    assert r.solver_value is not None and r.solver_value <= r.upper * (1 + 1e-3)
    with pytest.raises(InputError):
        lipschitz(net, norm="inf", solver="fast")


# ------------------------------------------------------------------------------ input formats
def _graph_of(seq: nn.Sequential, extra_op: str | None = None):
    from verify.graph.ir import Graph, Node

    nodes, consts, cur = [], {}, "x"
    for i, m in enumerate(seq):
        name = f"n{i}"
        if isinstance(m, nn.Linear):
            consts[f"W{i}"], consts[f"b{i}"] = m.weight.detach(), m.bias.detach()
            nodes.append(Node(name, "linear", [cur, f"W{i}", f"b{i}"], {}, (m.out_features,)))
        elif isinstance(m, nn.ReLU):
            nodes.append(Node(name, "relu", [cur], {}, nodes[-1].shape))
        elif type(m).__name__ in ("GroupSort", "MaxMin"):
            nodes.append(Node(name, "groupsort", [cur], {"group_size": m.group_size}, nodes[-1].shape))
        cur = name
    if extra_op:
        nodes.append(Node("bad", extra_op, [cur], {}, nodes[-1].shape))
        cur = "bad"
    return Graph("x", (seq[0].in_features,), nodes, consts, cur)


def test_graph_torch_and_groupsort_module_agree():
    from verify.nn import GroupSort

    torch.manual_seed(2)
    seq = nn.Sequential(nn.Linear(6, 8), GroupSort(2), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 3))
    a = lipschitz(seq, samples=16)
    b = lipschitz(_graph_of(seq), samples=16)
    assert a.upper == pytest.approx(b.upper, rel=1e-9)
    assert a.lower == pytest.approx(b.lower, rel=1e-9)
    _bracket_ok(a)
    # the graph's forward (biases included) is what the lower bound evaluates
    ln = verify.lipsdp.load_network(seq)
    x = torch.randn(5, 6, dtype=torch.float64)
    assert torch.allclose(ln.forward_torch(x), seq.double()(x))


def test_unsupported_op_is_input_error():
    seq = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    with pytest.raises(InputError, match="softmax"):
        lipschitz(_graph_of(seq, "softmax"))
    with pytest.raises(InputError, match="Conv2d"):
        lipschitz(nn.Sequential(nn.Conv2d(1, 1, 3)))
    with pytest.raises(InputError):
        lipschitz(seq, method="bogus")
    with pytest.raises(InputError):
        lipschitz(seq, norm=3)


def test_onnx_input(tmp_path):
    pytest.importorskip("verify.importers.onnx")
    seq = nn.Sequential(nn.Linear(5, 7), nn.ReLU(), nn.Linear(7, 2))
    path = tmp_path / "m.onnx"
    torch.onnx.export(seq, torch.zeros(1, 5), str(path), dynamo=False)
    a, b = lipschitz(path, lower=False), lipschitz(seq, lower=False)
    assert a.upper == pytest.approx(b.upper, rel=1e-6)


# ------------------------------------------------------------------------------ CLI
def test_cli_json(capsys):
    from verify.cli import main

    p = _data("random_weights.mat")
    assert main(["lipschitz", str(p), "--json", "--method", "lipsdp-layer"]) == 0
    out = json.loads(capsys.readouterr().out)
    for key in ("upper", "lower", "solver_value", "method", "seconds", "sdp_lower"):
        assert key in out
    assert out["upper"] == pytest.approx(39.839, rel=1e-3)
    assert out["lower"] <= out["upper"]


# ------------------------------------------------------------------------------ residual nets
def test_residual_mat_bounds():
    """resweights_5_32: x_1 = W_1 u, x_{i+1} = x_i + MaxMin(W_i x_i), y = W_L x_4 (QCs_MaxMin's LMI)."""
    p = _data("resweights_5_32.mat")
    net = verify.lipsdp.load_network(p)
    assert net.residual and net.dims == [784, 32, 32, 32, 32, 10]
    Ws = net.weights
    trivial = np.linalg.norm(Ws[0], 2) * np.prod([1 + np.linalg.norm(W, 2) for W in Ws[1:-1]]) \
        * np.linalg.norm(Ws[-1], 2)
    r = lipschitz(p, method="lipsdp-neuron", samples=4, time_limit=8)
    assert r.naive == pytest.approx(trivial, rel=1e-9)
    _bracket_ok(r)
    assert r.upper < 0.5 * r.naive and r.sdp_lower <= r.upper
    with pytest.raises(InputError, match="residual"):
        lipschitz(p, norm="inf", lower=False)


def _residual_net(rng, first_skip: bool):
    n, ws = 4, [rng.standard_normal((4, 12))] + [rng.standard_normal((4, 4)) for _ in range(3)] + \
        [rng.standard_normal((3, 4))]
    acts = [Activation.groupsort(2), Activation.slope("relu"), Activation.groupsort(2), Activation.slope("tanh")]
    skips = [rng.standard_normal((n, 12)) if first_skip else None] + [np.eye(n)] * 3
    return LipNet(ws, acts, skips=skips, biases=[rng.standard_normal(W.shape[0]) for W in ws])


def _maxmin_np(p):
    a, b = p[:, 0::2], p[:, 1::2]
    return np.stack([np.maximum(a, b), np.minimum(a, b)], -1).reshape(p.shape)


@pytest.mark.parametrize("first_skip", [False, True])
def test_residual_chain_agrees_with_dense_lmi_and_samples(first_skip):
    """Residual layers: the elimination's certificate is tight for the independently assembled dense LMI,
    not looser than cvxpy's, and no sampled quotient of the real network exceeds it."""
    rng = np.random.default_rng(7)
    net = _residual_net(rng, first_skip)
    x = torch.randn(3, 12, dtype=torch.float64)
    h = x.numpy()
    acts = [_maxmin_np, lambda p: np.maximum(p, 0), _maxmin_np, np.tanh]
    for k, W in enumerate(net.weights[:-1]):
        h = acts[k](h @ W.T + net.biases[k]) + (0 if net.skips[k] is None else h @ net.skips[k].T)
    assert np.allclose(net.forward_torch(x).numpy(), h @ net.weights[-1].T + net.biases[-1])
    chain = Chain(net)
    res = solve_fast(chain, time_limit=20)
    rho, _, theta = certify_with_repair(chain, res.theta)
    assert np.linalg.eigvalsh(_dense_M(chain, theta, rho))[0] >= -1e-9 * rho
    assert np.linalg.eigvalsh(_dense_M(chain, theta, rho * (1 - 1e-4)))[0] < 0
    fast = lipschitz(net, method="lipsdp-neuron", samples=16)
    ref = lipschitz(net, method="lipsdp-neuron", solver="CLARABEL", lower=False)
    _bracket_ok(fast)
    assert fast.upper <= ref.upper * (1 + 1e-4) and fast.upper < fast.naive
    xs = torch.randn(4000, 12, dtype=torch.float64)
    ys = xs + 1e-3 * torch.randn(4000, 12, dtype=torch.float64)
    q = (net.forward_torch(xs) - net.forward_torch(ys)).norm(dim=1) / (xs - ys).norm(dim=1)
    assert q.max().item() <= fast.upper


def test_cli_bad_input(capsys, tmp_path):
    from verify.cli import main

    bad = tmp_path / "x.mat"
    bad.write_bytes(b"not a mat file")
    assert main(["lipschitz", str(bad)]) == 2
    assert main(["lipschitz", str(tmp_path / "missing.onnx")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(e.startswith("verify: error:") for e in err)


def test_conv_through_its_matrix(tmp_path):
    pytest.importorskip("verify.importers.onnx")
    torch.manual_seed(0)
    seq = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(50, 3))
    path = tmp_path / "conv.onnx"
    torch.onnx.export(seq, torch.zeros(1, 1, 5, 5), str(path), dynamo=False)
    r = lipschitz(path, samples=16)
    eye = torch.eye(25, dtype=torch.float64).reshape(25, 1, 5, 5)
    conv = torch.nn.functional.conv2d(eye, seq[0].weight.detach().double(), padding=1).reshape(25, -1).T
    naive = np.linalg.norm(conv.numpy(), 2) * np.linalg.norm(seq[3].weight.detach().double().numpy(), 2)
    assert r.naive == pytest.approx(naive, rel=1e-9)
    assert r.details["dims"] == [25, 50, 3]
    _bracket_ok(r)
    assert r.upper < 0.8 * r.naive

"""`verify.lipschitz`: certified Lipschitz brackets [lower, upper] of feed-forward networks.

Methods (`method=`):
  naive          product of the layers' exact norms (SVD for l2, max row sum for l_inf)
  lipsdp-neuron  LipSDP with one multiplier per neuron (slope-restricted activations) and, for GroupSort /
                 MaxMin / Householder layers, per-group QCs: non-expansiveness plus the invariant
                 E(v - w) = 0 with free multipliers on both sides (the seed paper's QCs, extended)
  lipsdp-layer   the same with one multiplier set per layer
  lipsdp-nsr     the seed paper's exact multiplier set for GroupSort/Householder (T = lam I + a E per group,
                 no cross term); equals lipsdp-neuron on slope-restricted layers; reproduces its tables

Solvers (`solver=`): "fast" (the project's structure-exploiting first-order solver, `verify.lipsdp.fast`;
default for l2 neuron/layer), "ipm" (the project's block-structured barrier method, `verify.lipsdp.ipm`;
default for lipsdp-nsr on GroupSort / Householder nets, whose optimum lies on the boundary where a
first-order method crawls) or any installed cvxpy solver name ("SCS" default for l_inf, "CLARABEL" for
lipsdp-nsr on nets that mix slope-restricted and GroupSort layers).

Every upper bound is recomputed from the solver's multipliers in float64 (`verify.lipsdp.chain`) and
capped by the norm product; the solver's own objective is reported beside it as `solver_value`. For l2
SDP methods `sdp_lower` is a lower bound on the SDP's optimum (not on the Lipschitz constant) from a
repaired feasible point of its dual (`verify.lipsdp.dual`): upper - sdp_lower bounds how far the
certified bound is from the best the method could give.
"""
from __future__ import annotations

import contextlib
import os
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from verify.errors import InputError
from verify.lipsdp.chain import Chain, NotPositiveDefinite, certify_with_repair
from verify.lipsdp.cheap import lower_bound, norm_product
from verify.lipsdp.network import LipNet, load_network

METHODS = ("naive", "lipsdp-neuron", "lipsdp-layer", "lipsdp-nsr")


@dataclass
class LipschitzResult:
    """A certified bracket: lower <= Lipschitz constant <= upper (in the given norm)."""

    upper: float
    lower: float
    solver_value: float | None
    method: str
    seconds: float
    norm: str
    naive: float
    solver: str | None = None
    network: str = ""
    sdp_lower: float | None = None   # lower bound on the SDP optimum (dual feasible point), l2 SDP methods
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k, v in list(d.items()):
            if isinstance(v, float) and not np.isfinite(v):
                d[k] = None
        return d


def _norm_name(norm) -> str:
    s = str(norm).lower()
    if s in ("2", "l2", "2.0"):
        return "2"
    if s in ("inf", "linf", "l_inf", "infinity"):
        return "inf"
    if isinstance(norm, float) and np.isinf(norm):
        return "inf"
    raise InputError(f"norm {norm!r} is not supported (use 2 or inf)")


def _homogeneous(net: LipNet) -> bool:
    """Positively homogeneous activations: scaling W_k by s scales f by s (all but sigmoid/tanh), and no
    residual layer (A z + σ(W z) does not scale with W)."""
    return not net.residual and \
        all(a.kind != "slope" or a.name in ("relu", "leakyrelu", "identity") for a in net.activations)


def _normalise(net: LipNet) -> tuple[LipNet, float]:
    """Scale each W_k to unit spectral norm when that changes f only by a constant factor."""
    if not _homogeneous(net):
        return net, 1.0
    norms = [float(np.linalg.norm(W, 2)) for W in net.weights]
    if any(n == 0.0 for n in norms):
        return net, 1.0
    return net.with_weights([W / n for W, n in zip(net.weights, norms)]), float(np.prod(norms))


def lipschitz(model: Any, norm: int | str | float = 2, method: str = "lipsdp-neuron", solver: str | None = None,
              lower: bool = True, seed: int = 0, time_limit: float = 600.0, samples: int | None = None,
              verbose: bool = False, threads: int | None = None) -> LipschitzResult:
    """Certified Lipschitz bracket of `model` (a .mat/.onnx path, Graph, nn.Sequential or LipNet).

    For norm="inf" the constant is that of |f(x)-f(y)|_inf <= L |x-y|_inf (the max over output rows of the
    seed paper's scalar-output l_inf formulation). `samples`: starts of the lower-bound search (default: 4
    to 64 by network size). `time_limit` bounds the fast solver (any iterate is a
    valid certificate, so a timeout only loosens the bound). BLAS threads: `threads`, else
    OMP_NUM_THREADS, else one (the eliminations are small dense products that threads only slow down).
    """
    with _blas_threads(threads):
        return _lipschitz(model, norm, method, solver, lower, seed, time_limit, samples, verbose)


@contextlib.contextmanager
def _blas_threads(threads: int | None):
    if threads is None and os.environ.get("OMP_NUM_THREADS"):
        yield
        return
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover
        yield
        return
    with threadpool_limits(limits=int(threads or 1)):
        yield


def _lipschitz(model, norm, method, solver, lower, seed, time_limit, samples, verbose) -> LipschitzResult:
    t0 = time.monotonic()
    norm = _norm_name(norm)
    method = method.lower()
    if method not in METHODS:
        raise InputError(f"unknown method {method!r} (choose from {', '.join(METHODS)})")
    net = load_network(model)
    naive = norm_product(net, norm)
    lo = 0.0
    if lower:
        # every reading of an ambiguous file (meta["variants"], see load_mat) must be bounded: take the least
        lo = min(lower_bound(v, norm, samples=samples, seed=seed) for v in [net] + net.meta.get("variants", []))
    details: dict[str, Any] = {"dims": net.dims, "activations": sorted({a.describe() for a in net.activations})}
    solver_value = None
    used_solver = None
    sdp_lower = None
    if method == "naive" or len(net.weights) == 1:
        upper = naive
    else:
        scaled, factor = _normalise(net)
        tied = method == "lipsdp-layer"
        coupling = "paper" if method == "lipsdp-nsr" else "full"
        if norm == "2":
            # lipsdp-nsr has no cross term, so its optimum sits on the boundary of every pivot: an
            # interior-point solver is the right default there (the project's block-structured barrier
            # method where it applies, Clarabel on residual / mixed nets); the fast solver for the rest
            boundary = method == "lipsdp-nsr" and any(a.kind != "slope" for a in net.activations)
            pure = all(a.kind != "slope" for a in net.activations) and not net.residual
            used_solver = solver or (("ipm" if pure else "CLARABEL") if boundary else "fast")
            cert, raw, info = _solve_l2(scaled, tied, coupling, used_solver, time_limit, verbose)
            dual_rho = info.pop("dual_rho", None)
            if dual_rho is not None:
                sdp_lower = float(np.sqrt(max(dual_rho, 0.0))) * factor
        else:
            used_solver = solver or "SCS"
            if net.residual:
                raise InputError(f"{net.name}: the l_inf SDP is not available for residual nets (use --method naive)")
            if used_solver.lower() == "fast":
                raise InputError("the fast solver handles norm 2 only; choose a cvxpy solver for norm inf")
            cert, raw, info = _solve_linf(scaled, tied, coupling, used_solver, verbose)
        details.update(info)
        solver_value = raw * factor if raw is not None and np.isfinite(raw) else None
        upper = min(cert * factor, naive) if np.isfinite(cert) else naive
        details["certified_sdp"] = cert * factor if np.isfinite(cert) else None
    if lo > upper:  # impossible unless a bug: never report an inverted bracket
        raise RuntimeError(f"lower bound {lo} exceeds certified upper bound {upper}")
    sdp_cert = details.get("certified_sdp")
    if sdp_lower is not None and sdp_cert is not None and sdp_lower > sdp_cert * (1 + 1e-9):
        raise RuntimeError(f"SDP dual bound {sdp_lower} exceeds the certified SDP bound {sdp_cert}")
    return LipschitzResult(upper=float(upper), lower=float(lo), solver_value=solver_value, method=method,
                           seconds=time.monotonic() - t0, norm=norm, naive=float(naive), solver=used_solver,
                           network=net.name, sdp_lower=sdp_lower, details=details)


def _solve_l2(net: LipNet, tied: bool, coupling: str, solver: str, time_limit: float, verbose: bool):
    chain = Chain(net, tied=tied, coupling=coupling)
    info: dict[str, Any] = {}
    factors, warm, Zdual = None, None, None
    if solver.lower() == "fast":
        from verify.lipsdp.fast import solve_fast

        t = time.monotonic()
        warm = _nsr_warm_start(net, chain, time_limit / 3)
        if warm is not None:
            info["warm_start"] = "lipsdp-nsr (ipm)"
        r = solve_fast(chain, theta0=warm, time_limit=time_limit - (time.monotonic() - t))
        theta, raw = r.theta, float(np.sqrt(max(r.value, 0.0)))
        info.update(iterations=r.iterations, evaluations=r.evaluations, solve_seconds=time.monotonic() - t)
    elif solver.lower() == "ipm":
        from verify.lipsdp.ipm import solve_ipm, supports

        if not supports(chain):
            raise InputError("the ipm solver handles lipsdp-nsr on GroupSort / Householder nets only "
                             "(no slope-restricted or residual layers); choose fast or a cvxpy solver")
        r = solve_ipm(chain, time_limit=time_limit)
        theta, raw, factors = r.theta, float(np.sqrt(max(r.value, 0.0))), r.factors
        info.update(iterations=r.iterations, solve_seconds=r.seconds, barrier_gap=r.gap)
    else:
        from verify.lipsdp.sdp_cvxpy import solve_cvxpy

        t = time.monotonic()
        r = solve_cvxpy(chain, "2", solver, verbose)
        theta, raw, Zdual = r["theta"], r["solver_value"], r.get("dual")
        info.update(status=r["status"], solve_seconds=time.monotonic() - t)
    if theta is None:
        info["certificate"] = "solver returned no multipliers"
        return np.inf, raw, info
    best = (np.inf, None, None)
    for cand in [theta] + ([] if warm is None else [warm]):
        try:
            best = min(best, certify_with_repair(chain, cand), key=lambda c: c[0])
        except NotPositiveDefinite:
            continue
    rho, t, used = best
    if used is None:
        info["certificate"] = "multipliers could not be certified"
        return np.inf, raw, info
    info["repair_t"] = t
    info.update(_dual(chain, used, factors, Zdual))
    return float(np.sqrt(rho)), raw, info


def _nsr_warm_start(net: LipNet, chain: Chain, time_limit: float) -> np.ndarray | None:
    """For the extended GroupSort QCs on nets the barrier solver handles: the seed paper's multipliers (its
    optimum, to 1e-4, from `verify.lipsdp.ipm`) as a starting point, with b = a (no cross term).

    The extended set contains the paper's, so this point is feasible and certifies the paper's value; the
    first-order solver only improves on it (and both are certified, the better reported). On deep MaxMin
    nets it is a far better start than the norm-based reference (18fc_128: 19978 after 20 s against 34188
    from the reference in 18 s).
    """
    from verify.lipsdp.ipm import solve_ipm, supports

    if chain.qcs[0].tied or any("b" not in q.names for q in chain.qcs):
        return None
    paper = Chain(net, coupling="paper")
    if not supports(paper):
        return None
    r = solve_ipm(paper, time_limit=time_limit, rel_gap=1e-4)
    return chain.pack([dict(m, b=m["a"]) for m in paper.unpack(r.theta)])


def _dual(chain: Chain, theta: np.ndarray, factors, Z=None) -> dict[str, Any]:
    """A lower bound on this chain's SDP optimum from a repaired dual point (see `verify.lipsdp.dual`):
    the barrier's Newton dual, else the best of the conic solver's own dual matrix and the eigenvector
    construction."""
    from verify.lipsdp import dual

    t = time.monotonic()
    if factors is not None:
        val, viol = dual.from_blocks(chain, factors)
    else:
        val, viol = dual.from_eigen(chain, theta)
        if Z is not None and Z.shape[0] == sum(W.shape[1] for W in chain.weights):
            val, viol = max((val, viol), dual.from_matrix(chain, Z))
    return {"dual_rho": val, "dual_violation": viol, "dual_seconds": time.monotonic() - t}


def _solve_linf(net: LipNet, tied: bool, coupling: str, solver: str, verbose: bool):
    """max over output rows j of the certified scalar-output l_inf bound."""
    from verify.lipsdp.sdp_cvxpy import solve_cvxpy

    worst, worst_raw = 0.0, 0.0
    statuses = []
    for j in range(net.weights[-1].shape[0]):
        chain = Chain(net, tied=tied, out=net.weights[-1][j:j + 1], reduce=False, coupling=coupling)
        r = solve_cvxpy(chain, "inf", solver, verbose)
        statuses.append(r["status"])
        if r["theta"] is None or r["mu"] is None:
            return np.inf, np.nan, {"status": statuses, "certificate": f"no multipliers for output {j}"}
        mu = r["mu"]
        try:
            val, _, _ = certify_with_repair(chain, r["theta"], value=lambda th: chain.certify_linf(th, mu))
        except NotPositiveDefinite:
            return np.inf, np.nan, {"status": statuses, "certificate": f"output {j} could not be certified"}
        worst = max(worst, float(np.sqrt(val)))
        worst_raw = max(worst_raw, r["solver_value"])
    return worst, worst_raw, {"status": statuses}

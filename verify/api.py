"""The public library surface: load a model and a spec, check a property, compute bounds.

    graph  = verify.load_model("net.onnx")            # or an nn.Module plus input_shape
    spec   = verify.load_spec("prop.vnnlib")
    result = verify.check(graph, spec, timeout=30)   # or paths; overrides are Settings fields
    result.verdict, result.x, result.y, result.time_s

`check` runs falsification for a bounded share of the timeout (`Settings.attack_budget`), then hands the
rest of the time to `verify.bab.driver.prove` when that module exists (incomplete bounds, then branch and
bound unless `no_bab` is set); if the prover gives up (`unknown`) with time left, falsification resumes
with the next seed until the deadline. Every `sat` carries a counterexample that was executed again in float64 and
meets the spec exactly.
"""
from __future__ import annotations

import importlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from verify.errors import InputError, UnsupportedOpError
from verify.graph.ir import Graph
from verify.settings import Settings
from verify.spec.spec import Spec

# falsification resumes after a prover's `unknown` only when at least this much time is left (seconds)
RESUME_MIN_S = 0.5


@dataclass
class CheckResult:
    """Outcome of one `check`: verdict in {sat, unsat, unknown, timeout}; (x, y) the verified
    counterexample (flattened float64) for sat; time_s the wall time from reading the model to the verdict;
    domains the branch-and-bound domains visited; note a one-line explanation for unknown/timeout."""

    verdict: str
    x: np.ndarray | None = None
    y: np.ndarray | None = None
    time_s: float = 0.0
    domains: int = 0
    note: str = ""
    attack_time_s: float = 0.0


def load_model(path_or_module: Any, input_shape: tuple[int, ...] | None = None) -> Graph:
    """A `Graph` from an ONNX path or an nn.Module (+ input shape); a Graph is returned unchanged."""
    if isinstance(path_or_module, Graph):
        return path_or_module
    importers = importlib.import_module("verify.importers")
    if hasattr(importers, "load_model"):
        return importers.load_model(path_or_module, input_shape)
    # the per-format importers directly (before the package grows its dispatcher)
    if isinstance(path_or_module, (str, Path)):
        return importlib.import_module("verify.importers.onnx").load_onnx(str(path_or_module))
    if input_shape is None:
        raise InputError("an nn.Module needs input_shape")
    return importlib.import_module("verify.importers.torch").load_torch(path_or_module, input_shape)


def load_spec(path: str | Path, n_inputs: int | None = None, n_outputs: int | None = None) -> Spec:
    """Parse a VNN-LIB file into a `Spec` (counts, when given, must match the declared variables)."""
    from verify.spec.vnnlib import parse_vnnlib

    return parse_vnnlib(path, n_inputs, n_outputs)


def _name(obj: Any, default: str) -> str:
    if isinstance(obj, (str, Path)):
        return str(obj)
    return getattr(obj, "path", None) or getattr(obj, "name", None) or default


def check_dimensions(graph: Graph, spec: Spec, model_name: str = "model", spec_name: str = "spec") -> None:
    """InputError unless the spec's X/Y counts equal the model's flattened input/output sizes."""
    if spec.n_inputs != graph.input_size:
        raise InputError(f"{spec_name}: declares {spec.n_inputs} inputs (X_i) but model {model_name} takes "
                         f"{graph.input_size} (input shape {list(graph.input_shape)})")
    if spec.n_outputs != graph.output_size:
        raise InputError(f"{spec_name}: declares {spec.n_outputs} outputs (Y_i) but model {model_name} produces "
                         f"{graph.output_size} (output shape {list(graph.output_shape)})")


def _prove_module():
    """`verify.bab.driver` when it exists, else None (branch and bound not built)."""
    try:
        return importlib.import_module("verify.bab.driver")
    except ModuleNotFoundError as e:
        if e.name in ("verify.bab.driver", "verify.bab"):
            return None
        raise


def recheck(graph: Graph, spec: Spec, x: np.ndarray):
    """float64 re-check of one candidate input: clipped into each disjunct's box in turn."""
    from verify.attack import verify_candidates

    xs = np.repeat(np.asarray(x, dtype=np.float64).reshape(1, -1), len(spec.disjuncts), axis=0)
    return verify_candidates(graph, spec, xs, np.arange(len(spec.disjuncts)))


def check(model: Any, spec: Any, settings: Settings | None = None, input_shape: tuple[int, ...] | None = None,
          **overrides: Any) -> CheckResult:
    """Decide whether `spec` (a Spec or a VNN-LIB path) has a violation on `model` (Graph, ONNX path, nn.Module).

    `overrides` are `Settings` fields (timeout=..., no_bab=True, seed=..., ...). Bad input raises
    `InputError`; an operator the bound engine cannot handle gives `unknown` with a note naming it."""
    t0 = time.perf_counter()
    settings = (settings or Settings()).replace(**overrides) if overrides else (settings or Settings())
    deadline = t0 + settings.timeout
    model_name, spec_name = _name(model, "model"), _name(spec, "spec")
    graph = load_model(model, input_shape)
    if not isinstance(spec, Spec):
        spec = load_spec(spec)
    check_dimensions(graph, spec, model_name, spec_name)

    def done(verdict: str, x=None, y=None, domains: int = 0, note: str = "") -> CheckResult:
        return CheckResult(verdict, x, y, time.perf_counter() - t0, domains, note, attack_time)

    attack_time = 0.0
    if not spec.disjuncts:  # every disjunct had an empty input box: nothing can violate the property
        return done("unsat", note="the spec's input region is empty")

    from verify.attack import falsify

    budget = min(settings.attack_budget(n_inputs=graph.input_size), deadline - time.perf_counter())
    attack = falsify(graph, spec, budget, seed=settings.seed, dtype=settings.torch_dtype,
                     restarts=settings.attack_restarts, steps=settings.attack_steps)
    attack_time = attack.time_s
    if attack.found:
        cex = attack.counterexample
        return done("sat", cex.x, cex.y)
    attack_note = (f"falsification found no counterexample in {attack.time_s:.1f} s "
                   f"({attack.evaluations} evaluations, best margin {attack.best_margin:.3g})")
    if time.perf_counter() >= deadline:
        return done("timeout", note=attack_note)
    driver = _prove_module()
    if driver is None:
        return done("unknown", note=attack_note + "; bounds and branch and bound not available")
    try:
        res = driver.prove(graph, spec, settings, deadline)
    except UnsupportedOpError as e:
        return done("unknown", note=f"bound engine: unsupported operator {e.op!r} (node {e.node!r}); {attack_note}")
    verdict = getattr(res, "verdict", "unknown")
    domains = int(getattr(res, "domains", 0) or 0)
    note = str(getattr(res, "note", "") or "")
    left = deadline - time.perf_counter()
    if verdict == "unknown" and not settings.no_bab and left > RESUME_MIN_S and settings.attack_share > 0:
        # the prover gave up early (e.g. its domain budget): falsify for the rest of the time, new seed
        more = falsify(graph, spec, left, seed=settings.seed + 1, dtype=settings.torch_dtype,
                       restarts=settings.attack_restarts, steps=settings.attack_steps)
        attack_time += more.time_s
        if more.found:
            return done("sat", more.counterexample.x, more.counterexample.y, domains=domains)
        note = (note + "; " if note else "") + f"falsification resumed for {more.time_s:.1f} s, nothing found"
    if verdict == "sat":
        x = getattr(res, "x", None)
        cex = recheck(graph, spec, x) if x is not None else None
        if cex is None:
            return done("unknown", domains=domains,
                        note="branch and bound reported a counterexample that fails the float64 re-check")
        return done("sat", cex.x, cex.y, domains=domains, note=note)
    if verdict not in ("unsat", "unknown", "timeout"):
        raise RuntimeError(f"branch and bound returned an unknown verdict {verdict!r}")
    return done(verdict, domains=domains, note=note)


def compute_bounds(model: Any, spec_or_box: Any, method: str = "crown", C: np.ndarray | None = None,
                   input_shape: tuple[int, ...] | None = None):
    """Bounds on the model's outputs (or on C·y) over an input box, forwarded to `verify.bounds.compute`.

    `spec_or_box` is a Spec / VNN-LIB path (its input box; with C=None the spec's constraint rows of that
    box are bounded, stacked in disjunct order) or a pair (lower, upper) of flattened input bounds."""
    graph = load_model(model, input_shape)
    if isinstance(spec_or_box, (str, Path)):
        spec_or_box = load_spec(spec_or_box)
    if isinstance(spec_or_box, Spec):
        regions = spec_or_box.regions()
        if len(regions) != 1:
            raise ValueError(f"spec has {len(regions)} input boxes; pass one (lower, upper) box instead")
        lower, upper, terms = regions[0]
        if C is None:
            C = np.vstack([c for c, _ in terms])
    else:
        lower, upper = spec_or_box
    bounds = importlib.import_module("verify.bounds")
    return bounds.compute(graph, np.asarray(lower, dtype=np.float64), np.asarray(upper, dtype=np.float64),
                          method=method, C=C)

"""verify: a neural-network verification engine.

Public API (imported lazily so that `import verify` stays fast):
    verify.load_model(path_or_module, input_shape=None) -> Graph
    verify.load_spec(path) -> Spec
    verify.check(model, spec, ...) -> CheckResult
    verify.compute_bounds(model, spec_or_box, method=...) -> (lower, upper)
    verify.lipschitz(model, norm=2, method=...) -> LipschitzResult
    verify.train (package): verify.train.certified, verify.train.convex.fit
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

_LAZY = {
    "load_model": ("verify.api", "load_model"),
    "load_spec": ("verify.api", "load_spec"),
    "check": ("verify.api", "check"),
    "compute_bounds": ("verify.api", "compute_bounds"),
    "lipschitz": ("verify.lipsdp", "lipschitz"),
    "Graph": ("verify.graph.ir", "Graph"),
    "Spec": ("verify.spec.spec", "Spec"),
}


def __getattr__(name: str):
    if name in _LAZY:
        mod, attr = _LAZY[name]
        return getattr(importlib.import_module(mod), attr)
    if name in ("train", "graph", "importers", "spec", "attack", "bab", "lipsdp"):
        return importlib.import_module(f"verify.{name}")
    raise AttributeError(f"module 'verify' has no attribute {name!r}")

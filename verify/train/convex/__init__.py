"""Convex training of two-layer ReLU networks (Pilanci & Ergen 2020; Bai, Gautam & Sojoudi 2022).

`fit(X, y, beta=..., patterns=..., solver="admm"|"cvxpy"|"colgen", loss=..., adversarial_eps=None)` returns
a `FitResult` with `objective`, `gap` (a rigorous duality gap), `module` (Linear → ReLU → Linear) and
`seconds`. Submodules: `patterns` (sampling, exact enumeration), `problem` (the program and its certificate),
`cvx` (cvxpy), `admm`, `colgen` (column generation, pattern search), `gated` (sampled convex programs),
`adversarial` (ℓ∞ robust counterpart), `network` (nn.Module / ONNX), `data` (reference data sets).
"""
from __future__ import annotations

import importlib

__all__ = ["FitResult", "fit"]


def __getattr__(name: str):
    if name in ("fit", "FitResult"):
        return getattr(importlib.import_module("verify.train.convex.trainer"), name)
    raise AttributeError(f"module 'verify.train.convex' has no attribute {name!r}")

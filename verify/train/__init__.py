"""Training networks the verifier can certify: `verify.train.certified`, `verify.train.convex`.

Subpackages are imported lazily, so `import verify.train` stays cheap and `verify.train.convex.fit(...)`
works after a plain `import verify`.
"""
from __future__ import annotations

import importlib


def __getattr__(name: str):
    if name in ("convex", "certified", "tightness"):
        return importlib.import_module(f"verify.train.{name}")
    raise AttributeError(f"module 'verify.train' has no attribute {name!r}")

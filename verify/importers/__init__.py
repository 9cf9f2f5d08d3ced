"""Importers: ONNX files and torch modules -> `verify.graph.Graph`.

`load_model` dispatches on its argument: a path (or `onnx.ModelProto`) goes to the ONNX importer, an
`nn.Module` to the torch importer (imported lazily, so torch-only users do not load onnx and vice versa).
"""
from __future__ import annotations

import os
from typing import Any, Sequence

from verify.errors import InputError


def load_onnx(path_or_model: Any, normalise: bool = True):
    """ONNX file or `ModelProto` -> normalised `Graph` (see `verify.importers.onnx.load_onnx`)."""
    from verify.importers.onnx import load_onnx as _load
    return _load(path_or_model, normalise=normalise)


def load_model(path_or_module: Any, input_shape: Sequence[int] | None = None):
    """A `Graph` from an `.onnx` path / `ModelProto` or a torch `nn.Module` (which needs `input_shape`,
    the per-sample input shape, unless the torch importer can infer it)."""
    if isinstance(path_or_module, (str, os.PathLike)):
        path = os.fspath(path_or_module)
        if not path.lower().endswith(".onnx"):
            raise InputError(f"{path}: unsupported model file (expected .onnx)")
        return load_onnx(path)
    try:
        import onnx
        if isinstance(path_or_module, onnx.ModelProto):
            return load_onnx(path_or_module)
    except ImportError:  # pragma: no cover
        pass
    import torch.nn as nn
    if isinstance(path_or_module, nn.Module):
        from verify.importers.torch import load_torch
        return load_torch(path_or_module, input_shape)
    from verify.graph.ir import Graph
    if isinstance(path_or_module, Graph):
        return path_or_module
    raise InputError(f"cannot load a model from {type(path_or_module).__name__}")


__all__ = ["load_onnx", "load_model"]

"""L∞ local-robustness specifications around a dataset image, written as VNN-LIB.

The property file describes the *unsafe* set (VNN-LIB convention): some input x with
max(image - eps, 0) <= x <= min(image + eps, 1) (element-wise) for which some class j != label scores at
least the true class, i.e. `(assert (or (and (>= Y_j Y_t)) ...))`. `unsat` therefore means "robust".

Inputs are numbered in the model's input layout: the flattened (row-major, C order) order of the model's
input tensor. For an image [C, H, W] fed to a model whose input has C·H·W elements (e.g. [1, 784],
[1, 784, 1], [1, 1, 28, 28]) that is the image's own row-major order.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from verify.errors import InputError


def robustness_box(image: np.ndarray, eps: float, lo: float = 0.0, hi: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """The flattened L∞ box [image - eps, image + eps] clipped to [lo, hi], in float64."""
    x = np.asarray(image, dtype=np.float64).reshape(-1)
    return np.clip(x - eps, lo, hi), np.clip(x + eps, lo, hi)


def robustness_spec(
    image: np.ndarray,
    label: int,
    eps: float,
    n_classes: int,
    comment: str | None = None,
) -> str:
    """VNN-LIB text: x in the clipped L∞ ball of radius eps around `image` (flattened row-major) and some
    class j != label with Y_j >= Y_label. Bounds are written with `repr(float)` (exact float64)."""
    eps = float(eps)
    if not np.isfinite(eps) or eps < 0:
        raise InputError(f"eps must be a finite number >= 0, got {eps}")
    n_classes = int(n_classes)
    label = int(label)
    if n_classes < 2:
        raise InputError(f"a robustness property needs at least 2 classes, got {n_classes}")
    if not 0 <= label < n_classes:
        raise InputError(f"label {label} is not a class index of a {n_classes}-class model")
    lower, upper = robustness_box(image, eps)
    parts: list[str] = []
    if comment:
        parts += [f"; {line}" for line in comment.splitlines()]
    parts.append(f"; L-infinity robustness: eps {eps!r}, true class {label}, {lower.size} inputs, {n_classes} outputs")
    parts.append("; unsafe if some other class scores at least the true class")
    parts.append("")
    parts += [f"(declare-const X_{i} Real)" for i in range(lower.size)]
    parts.append("")
    parts += [f"(declare-const Y_{j} Real)" for j in range(n_classes)]
    parts.append("")
    for i, (lo, hi) in enumerate(zip(lower.tolist(), upper.tolist())):
        parts.append(f"(assert (<= X_{i} {hi!r}))")
        parts.append(f"(assert (>= X_{i} {lo!r}))")
    parts.append("")
    parts.append("(assert (or")
    parts += [f"    (and (>= Y_{j} Y_{label}))" for j in range(n_classes) if j != label]
    parts.append("))")
    return "\n".join(parts) + "\n"


def onnx_io_sizes(model_path: str | Path) -> tuple[int, int, tuple[int, ...]]:
    """(input element count, output element count, input shape) of an ONNX model's first real input and
    first output. Symbolic (batch) dimensions count as 1."""
    import onnx

    model_path = Path(model_path)
    try:
        model = onnx.load(str(model_path), load_external_data=False)
    except FileNotFoundError:
        raise InputError(f"{model_path}: model file not found") from None
    except Exception as e:  # onnx raises DecodeError and friends for corrupt files
        raise InputError(f"{model_path}: not a readable ONNX model ({type(e).__name__})") from None
    inits = {i.name for i in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in inits]
    if not inputs or not model.graph.output:
        raise InputError(f"{model_path}: the model has no graph input or output")

    def shape_of(v) -> tuple[int, ...]:
        if not v.type.tensor_type.HasField("shape"):
            raise InputError(f"{model_path}: tensor {v.name!r} has no declared shape")
        return tuple(int(d.dim_value) if d.HasField("dim_value") else 1 for d in v.type.tensor_type.shape.dim)

    in_shape = shape_of(inputs[0])
    out_shape = shape_of(model.graph.output[0])
    return int(np.prod(in_shape)), int(np.prod(out_shape)), in_shape


def write_robustness_spec(
    out_path: str | Path,
    image: np.ndarray,
    label: int,
    eps: float,
    model_path: str | Path | None = None,
    n_classes: int = 10,
    comment: str | None = None,
) -> dict:
    """Write the robustness spec for `image` to `out_path`, laid out for the model's input when given.

    Returns a summary dict (n_inputs, n_outputs, input_shape). With a model, its input must have as many
    elements as the image, and its output element count is the number of classes.
    """
    image = np.asarray(image)
    in_shape: tuple[int, ...] | None = None
    if model_path is not None:
        n_in, n_out, in_shape = onnx_io_sizes(model_path)
        if n_in != image.size:
            raise InputError(
                f"{model_path}: the model input {list(in_shape)} has {n_in} elements but the image "
                f"{list(image.shape)} has {image.size}"
            )
        n_classes = n_out
        # a multi-channel [C, H, W] image fed to a channels-last [.., H, W, C] input: follow the model's order
        if image.ndim == 3 and image.shape[0] > 1:
            c, h, w = image.shape
            if tuple(in_shape[-3:]) == (h, w, c) and tuple(in_shape[-3:]) != (c, h, w):
                image = image.transpose(1, 2, 0)
    text = robustness_spec(image, label, eps, n_classes, comment=comment)
    out_path = Path(out_path)
    try:
        out_path.parent.mkdir(parents=True, exist_ok=True)
        out_path.write_text(text)
    except OSError as e:
        raise InputError(f"{out_path}: cannot write spec: {e.strerror or e}") from None
    return {"n_inputs": int(image.size), "n_outputs": int(n_classes),
            "input_shape": list(in_shape) if in_shape is not None else None}

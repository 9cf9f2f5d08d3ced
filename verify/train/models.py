"""Model presets for certified training: small MLPs and the "cnn-small" of the certified-training
literature (conv16-conv32-fc100, the CROWN-IBP paper's small MNIST model).

Every preset is a plain `nn.Sequential` of Conv2d / Linear / ReLU / Flatten, so it imports into the graph
IR (`verify.importers.torch.load_torch`) and exports to ONNX without special cases. Any other `nn.Module`
works with the trainer too; the presets only save typing.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from verify.errors import InputError

#: names accepted by `build_model` (and the CLI's --model)
PRESETS = ("mlp", "mlp-deep", "cnn-small", "cnn-tiny")


def mlp(input_shape: tuple[int, ...], n_classes: int = 10, hidden: tuple[int, ...] = (256, 256)) -> nn.Sequential:
    """Flatten -> [Linear -> ReLU]* -> Linear."""
    n_in = math.prod(input_shape)
    layers: list[nn.Module] = [nn.Flatten()]
    for h in hidden:
        layers += [nn.Linear(n_in, h), nn.ReLU()]
        n_in = h
    layers.append(nn.Linear(n_in, n_classes))
    return nn.Sequential(*layers)


def cnn_small(input_shape: tuple[int, ...], n_classes: int = 10, channels: tuple[int, int] = (16, 32),
              hidden: int = 100) -> nn.Sequential:
    """conv(c1, 4x4, stride 2, pad 1) -> ReLU -> conv(c2, 4x4, stride 2, pad 1) -> ReLU -> fc(hidden) -> ReLU -> fc.

    On 28x28 MNIST the feature maps are 14x14 and 7x7; on the 8x8 digits 4x4 and 2x2."""
    if len(input_shape) != 3:
        raise InputError(f"cnn-small needs image input (C, H, W), got input shape {tuple(input_shape)}")
    c, h, w = input_shape
    c1, c2 = channels
    h2, w2 = _conv_out(_conv_out(h)), _conv_out(_conv_out(w))
    return nn.Sequential(
        nn.Conv2d(c, c1, 4, stride=2, padding=1), nn.ReLU(),
        nn.Conv2d(c1, c2, 4, stride=2, padding=1), nn.ReLU(),
        nn.Flatten(),
        nn.Linear(c2 * h2 * w2, hidden), nn.ReLU(),
        nn.Linear(hidden, n_classes),
    )


def _conv_out(n: int, k: int = 4, s: int = 2, p: int = 1) -> int:
    return (n + 2 * p - k) // s + 1


def build_model(name: str, input_shape: tuple[int, ...], n_classes: int = 10, seed: int | None = None) -> nn.Module:
    """A preset by name: 'mlp' (2x256), 'mlp-deep' (5x100), 'cnn-small' (conv16-conv32-fc100),
    'cnn-tiny' (conv8-conv16-fc64, for quick tests)."""
    if seed is not None:
        torch.manual_seed(seed)
    key = name.lower().replace("_", "-")
    if key == "mlp":
        return mlp(input_shape, n_classes)
    if key == "mlp-deep":
        return mlp(input_shape, n_classes, hidden=(100,) * 5)
    if key == "cnn-small":
        return cnn_small(input_shape, n_classes)
    if key == "cnn-tiny":
        return cnn_small(input_shape, n_classes, channels=(8, 16), hidden=64)
    raise InputError(f"unknown model preset {name!r}; expected one of {', '.join(PRESETS)}")

"""Neural-network building blocks that the verifier understands natively.

`GroupSort` is the gradient-norm-preserving activation of Anil et al. 2019 ("Sorting out Lipschitz function
approximation"): it splits the features (axis 1) into consecutive groups of `group_size` and sorts each group
in descending order. `group_size=2` is MaxMin. Being 1-Lipschitz and piecewise linear, it is the usual
activation of Lipschitz-constrained networks; the IR op "groupsort" (verify.graph.ops) has the same
semantics, so `verify.importers.torch.load_torch` maps this module to it.
"""
from __future__ import annotations

import torch
from torch import nn


def group_sort(x: torch.Tensor, group_size: int = 2) -> torch.Tensor:
    """Sort each consecutive group of `group_size` entries along axis 1 in descending order.

    `x` has a batch axis 0 and features (or channels) on axis 1; further axes are carried along, so on
    (N, C, H, W) the groups are made of channels at each pixel. Axis 1 must be divisible by `group_size`.
    """
    if x.dim() < 2:
        raise ValueError(f"group_sort needs a batch axis and a feature axis, got shape {tuple(x.shape)}")
    n, c = x.shape[0], x.shape[1]
    g = int(group_size)
    if g < 1 or c % g:
        raise ValueError(f"group_sort: {c} features are not divisible into groups of {g}")
    if g == 1:
        return x
    y = x.reshape(n, c // g, g, *x.shape[2:])
    if g == 2:  # MaxMin: max/min are cheaper than a sort and have the same subgradients
        a, b = y[:, :, 0], y[:, :, 1]
        out = torch.stack((torch.maximum(a, b), torch.minimum(a, b)), dim=2)
    else:
        out = torch.sort(y, dim=2, descending=True).values
    return out.reshape(x.shape)


class GroupSort(nn.Module):
    """GroupSort activation: sort consecutive groups of `group_size` features (axis 1) descending.

    `GroupSort(2)` is MaxMin; `GroupSort(C)` on C features is FullSort.
    """

    def __init__(self, group_size: int = 2):
        super().__init__()
        if int(group_size) < 1:
            raise ValueError(f"group_size must be >= 1, got {group_size}")
        self.group_size = int(group_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return group_sort(x, self.group_size)

    def extra_repr(self) -> str:
        return f"group_size={self.group_size}"


class MaxMin(GroupSort):
    """GroupSort with groups of two."""

    def __init__(self):
        super().__init__(2)

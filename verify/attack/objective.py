"""The spec as tensors for attacks: padded disjunct boxes and output constraints, and the margin objective.

A disjunct j is violated at (x, y) iff x lies in its box and max_i (C_j y - d_j)_i <= 0. That maximum is
the *margin* an attack minimises: negative or zero means a violation. Disjuncts have different row counts,
so rows are padded to the largest count and masked out of the maximum.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from verify.spec.spec import Spec


@dataclass
class PackedSpec:
    """A `Spec` as tensors of one dtype.

    lower/upper: (J, n_in) box of each disjunct; C: (J, m, n_out); d: (J, m); mask: (J, m) real rows;
    region: (J,) index of the disjunct's input box among `region_lower/upper` (R, n_in)."""

    lower: torch.Tensor
    upper: torch.Tensor
    C: torch.Tensor
    d: torch.Tensor
    mask: torch.Tensor
    region: torch.Tensor
    region_lower: torch.Tensor
    region_upper: torch.Tensor

    @property
    def n_disjuncts(self) -> int:
        return int(self.lower.shape[0])

    @property
    def n_regions(self) -> int:
        return int(self.region_lower.shape[0])


def pack(spec: Spec, dtype: torch.dtype = torch.float32) -> PackedSpec:
    """Stack the disjuncts of `spec`, grouping identical input boxes into regions."""
    J = len(spec.disjuncts)
    if J == 0:
        raise ValueError("spec has no disjuncts")
    m = max(int(np.asarray(dj.C).reshape(-1, spec.n_outputs).shape[0]) for dj in spec.disjuncts)
    m = max(m, 1)
    C = np.zeros((J, m, spec.n_outputs))
    d = np.zeros((J, m))
    mask = np.zeros((J, m), dtype=bool)
    lower = np.zeros((J, spec.n_inputs))
    upper = np.zeros((J, spec.n_inputs))
    region = np.zeros(J, dtype=np.int64)
    boxes: list[tuple[np.ndarray, np.ndarray]] = []
    for j, dj in enumerate(spec.disjuncts):
        Cj = np.asarray(dj.C, dtype=np.float64).reshape(-1, spec.n_outputs)
        k = Cj.shape[0]
        C[j, :k] = Cj
        d[j, :k] = np.asarray(dj.d, dtype=np.float64).reshape(-1)
        mask[j, :k] = True
        lower[j] = np.asarray(dj.lower, dtype=np.float64).reshape(-1)
        upper[j] = np.asarray(dj.upper, dtype=np.float64).reshape(-1)
        for r, (lo, hi) in enumerate(boxes):
            if np.array_equal(lo, lower[j]) and np.array_equal(hi, upper[j]):
                region[j] = r
                break
        else:
            region[j] = len(boxes)
            boxes.append((lower[j], upper[j]))
    t = lambda a: torch.as_tensor(a, dtype=dtype)  # noqa: E731
    return PackedSpec(t(lower), t(upper), t(C), t(d), torch.as_tensor(mask), torch.as_tensor(region),
                      t(np.stack([b[0] for b in boxes])), t(np.stack([b[1] for b in boxes])))


def margins(packed: PackedSpec, y: torch.Tensor, disjunct: torch.Tensor) -> torch.Tensor:
    """Margin of each sample against its own disjunct: y (N, n_out), disjunct (N,) -> (N,)."""
    Cy = torch.einsum("nmk,nk->nm", packed.C[disjunct], y) - packed.d[disjunct]
    return Cy.masked_fill(~packed.mask[disjunct], float("-inf")).amax(dim=1)


def all_margins(packed: PackedSpec, y: torch.Tensor, region: torch.Tensor | None = None) -> torch.Tensor:
    """Margins of every sample against every disjunct: (N, J).

    When `region` (N,) is given, disjuncts whose box is a different region get +inf (a sample drawn in
    one box says nothing about another)."""
    Cy = torch.einsum("jmk,nk->njm", packed.C, y) - packed.d.unsqueeze(0)
    out = Cy.masked_fill(~packed.mask.unsqueeze(0), float("-inf")).amax(dim=2)
    if region is not None:
        out = out.masked_fill(packed.region.unsqueeze(0) != region.unsqueeze(1), float("inf"))
    return out

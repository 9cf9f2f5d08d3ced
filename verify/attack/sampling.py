"""Candidate points inside the spec's input boxes: centres, corners and uniform samples (seeded)."""
from __future__ import annotations

import torch

from verify.attack.objective import PackedSpec

# enumerate every corner of a box up to this many input dimensions (2**12 = 4096 points)
MAX_ENUM_DIMS = 12


def centres(packed: PackedSpec) -> tuple[torch.Tensor, torch.Tensor]:
    """Midpoint of every region: points (R, n_in) and their region indices (R,)."""
    x = 0.5 * (packed.region_lower + packed.region_upper)
    return x, torch.arange(packed.n_regions)


def corners(packed: PackedSpec, per_region: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Vertices of each region: all of them when the box has few non-degenerate dimensions, else random ones."""
    xs, rs = [], []
    for r in range(packed.n_regions):
        lo, hi = packed.region_lower[r], packed.region_upper[r]
        free = torch.nonzero(hi > lo).flatten()
        k = int(free.numel())
        if k <= MAX_ENUM_DIMS:
            codes = torch.arange(2 ** k)
            bits = ((codes.unsqueeze(1) >> torch.arange(k)) & 1).bool()
        else:
            bits = torch.rand(per_region, k, generator=gen) < 0.5
        x = lo.expand(bits.shape[0], -1).clone()
        x[:, free] = torch.where(bits, hi[free], lo[free]).to(x.dtype)
        xs.append(x)
        rs.append(torch.full((x.shape[0],), r, dtype=torch.long))
    return torch.cat(xs), torch.cat(rs)


def uniform(packed: PackedSpec, region: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """One uniform point in the box of each entry of `region` (N,) -> (N, n_in)."""
    lo, hi = packed.region_lower[region], packed.region_upper[region]
    u = torch.rand(lo.shape, generator=gen, dtype=torch.float64).to(lo.dtype)
    return lo + u * (hi - lo)

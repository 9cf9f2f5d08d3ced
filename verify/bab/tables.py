"""Branching-point lookup tables for splitting a nonlinear neuron's input interval [l, u] (GenBaB).

Splitting [l, u] at s gives two sub-domains whose relaxations are tighter; the midpoint is not the best s
for a curved function. For each function we store, on a grid of (l, u), the split ratio r = (s - l)/(u - l)
that minimises the looseness of the default relaxation on both halves, measured as the area between the
upper and the lower line: area(l, s) + area(s, u), with area(a, b) = ∫_a^b (upper - lower) dx. The ratio is
optimised offline (`verify tables build`: a grid of 63 candidate ratios, then a finer pass around the best)
and stored compactly (float16, compressed .npz in `verify/data/`, ~0.1 MB; loading takes milliseconds).

At run time `split_points(op, l, u, attrs)` interpolates the ratio bilinearly on the grid; outside the grid
(or for functions without a table) it falls back to the midpoint, and for piecewise-linear functions (relu,
leakyrelu, abs, clip) it splits at the kink, which makes both halves exact. Periodic functions are looked
up after shifting l into [-π, π); reciprocal on negative intervals uses its odd symmetry; log-scaled grids
(log, sqrt, reciprocal) index by log10 of the bounds.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

TABLE_PATH = Path(__file__).resolve().parents[1] / "data" / "branching_points.npz"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class TableSpec:
    """One function's table: IR op + attrs, and the square (l, u) grid [lo, hi]^2 with n points per axis
    (in log10 units when `log_scale`)."""

    op: str
    attrs: tuple = ()
    lo: float = -8.0
    hi: float = 8.0
    n: int = 65
    log_scale: bool = False
    period: float = 0.0      # shift l into [-period/2, period/2) before the lookup
    odd: bool = False        # f(-x) = -f(x): negative intervals use the mirrored table

    @property
    def attr_dict(self) -> dict[str, Any]:
        return dict(self.attrs)


SPECS: dict[str, TableSpec] = {
    "sigmoid": TableSpec("sigmoid", lo=-8, hi=8, n=65),
    "tanh": TableSpec("tanh", lo=-5, hi=5, n=81),
    "erf": TableSpec("erf", lo=-4, hi=4, n=65),
    "gelu": TableSpec("gelu", (("approximate", "none"),), lo=-6, hi=6, n=73),
    "sin": TableSpec("sin", lo=-math.pi, hi=3 * math.pi, n=81, period=2 * math.pi),
    "cos": TableSpec("cos", lo=-math.pi, hi=3 * math.pi, n=81, period=2 * math.pi),
    "exp": TableSpec("exp", lo=-10, hi=6, n=65),
    "softplus": TableSpec("softplus", lo=-10, hi=10, n=81),
    "log": TableSpec("log", lo=-3, hi=3, n=61, log_scale=True),
    "sqrt": TableSpec("sqrt", lo=-3, hi=3, n=61, log_scale=True),
    "reciprocal": TableSpec("reciprocal", lo=-3, hi=3, n=61, log_scale=True, odd=True),
    "pow2": TableSpec("pow", (("exponent", 2.0),), lo=-8, hi=8, n=33),
    "pow3": TableSpec("pow", (("exponent", 3.0),), lo=-4, hi=4, n=65),
}

# piecewise-linear functions: split at the kink (both halves become exact)
_KINKS = {"relu": lambda a: (0.0,), "leakyrelu": lambda a: (0.0,), "abs": lambda a: (0.0,),
          "clip": lambda a: tuple(float(v) for v in (a.get("min"), a.get("max")) if v is not None)}


def table_key(op: str, attrs: dict[str, Any] | None = None) -> str | None:
    """The table name for an IR op and its attributes, or None when there is no table."""
    attrs = attrs or {}
    if op == "pow":
        p = attrs.get("exponent")
        key = f"pow{float(p):g}" if p is not None else None
        return key if key in SPECS else None
    if op == "gelu" and attrs.get("approximate", "none") != "none":
        return None
    return op if op in SPECS and SPECS[op].op == op else None


# ----------------------------------------------------------------------------------------- building
def _area(rule, a: torch.Tensor, b: torch.Tensor, attrs) -> torch.Tensor:
    """∫_a^b (upper - lower) dx of the default relaxation on [a, b] (inf where a line is infinite)."""
    lw, lb, uw, ub = rule.relax(a, b, attrs)
    dw, db = uw - lw, ub - lb
    area = dw * (b * b - a * a) / 2 + db * (b - a)
    return torch.where(torch.isnan(area), torch.full_like(area, math.inf), area)


def _grid(spec: TableSpec) -> torch.Tensor:
    g = torch.linspace(spec.lo, spec.hi, spec.n, dtype=torch.float64)
    return 10.0 ** g if spec.log_scale else g


def optimise_ratios(rule, l: torch.Tensor, u: torch.Tensor, attrs, n_coarse: int = 63,
                    n_fine: int = 16) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Best split ratio per interval (coarse grid, then a finer pass around the best), the looseness at
    it and at the midpoint."""
    def cost(r):  # r: (R, N)
        s = l + r * (u - l)
        return _area(rule, l.expand_as(s), s, attrs) + _area(rule, s, u.expand_as(s), attrs)

    r = torch.arange(1, n_coarse + 1, dtype=torch.float64).unsqueeze(1) / (n_coarse + 1)
    c = cost(r.expand(-1, l.numel()))
    best = c.argmin(0)
    step = 1.0 / (n_coarse + 1)
    centre = (best + 1).to(torch.float64) * step
    off = torch.linspace(-step, step, 2 * n_fine + 1, dtype=torch.float64).unsqueeze(1)
    rf = (centre.unsqueeze(0) + off).clamp(step / 4, 1 - step / 4)
    cf = cost(rf)
    i = cf.argmin(0)
    ratio = rf.gather(0, i.unsqueeze(0)).squeeze(0)
    mid = cost(torch.full((1, l.numel()), 0.5, dtype=torch.float64)).squeeze(0)
    return ratio, cf.gather(0, i.unsqueeze(0)).squeeze(0), mid


def build_table(key: str, chunk: int = 2048, n: int | None = None) -> tuple[np.ndarray, dict[str, float]]:
    """The (n, n) ratio table of one function (invalid cells l >= u filled from the nearest valid one),
    and summary numbers: the mean looseness with table splits relative to midpoint splits.
    `n` overrides the grid size (a coarse table for quick checks)."""
    from verify.bounds.ops import RULES

    spec = SPECS[key] if n is None else replace(SPECS[key], n=int(n))
    rule, attrs = RULES[spec.op], spec.attr_dict
    g = _grid(spec)
    n = spec.n
    L, U = torch.meshgrid(g, g, indexing="ij")
    valid = U > L
    lv, uv = L[valid], U[valid]
    ratios, best, mids = [], [], []
    for i in range(0, lv.numel(), chunk):
        r, c, m = optimise_ratios(rule, lv[i:i + chunk], uv[i:i + chunk], attrs)
        ratios.append(r)
        best.append(c)
        mids.append(m)
    ratio = torch.full((n, n), 0.5, dtype=torch.float64)
    ratio[valid] = torch.cat(ratios)
    for i in range(n):  # l >= u cells: copy the first valid cell of the row (keeps interpolation smooth)
        ratio[i, : i + 1] = ratio[i, i + 1] if i + 1 < n else 0.5
    best_c, mid_c = torch.cat(best), torch.cat(mids)
    ok = torch.isfinite(best_c) & torch.isfinite(mid_c) & (mid_c > 0)
    rel = (best_c[ok] / mid_c[ok])
    stats = {"cells": int(valid.sum()), "mean_looseness_vs_midpoint": float(rel.mean()) if rel.numel() else 1.0,
             "min_looseness_vs_midpoint": float(rel.min()) if rel.numel() else 1.0}
    return ratio.numpy().astype(np.float16), stats


def build_tables(keys: list[str] | None = None, path: Path | str | None = None,
                 n: int | None = None) -> dict[str, dict]:
    """Optimise and save the tables (all of SPECS by default, grids of `n` points per axis when given);
    returns per-table stats and seconds. Tables already in the file and not rebuilt are kept."""
    keys = list(keys or SPECS)
    unknown = [k for k in keys if k not in SPECS]
    if unknown:
        from verify.errors import InputError

        raise InputError(f"unknown table(s) {', '.join(unknown)}; known: {', '.join(SPECS)}")
    path = Path(path) if path else TABLE_PATH
    arrays: dict[str, np.ndarray] = {}
    if path.exists():  # keep tables not rebuilt now
        with np.load(path, allow_pickle=False) as old:
            arrays = {k: old[k] for k in old.files}
    report = {}
    for key in keys:
        t0 = time.perf_counter()
        ratio, stats = build_table(key, n=n)
        spec = SPECS[key] if n is None else replace(SPECS[key], n=int(n))
        arrays[f"{key}.ratio"] = ratio
        arrays[f"{key}.meta"] = np.array(json.dumps({
            "op": spec.op, "attrs": spec.attr_dict, "lo": spec.lo, "hi": spec.hi, "n": spec.n,
            "log_scale": spec.log_scale, "period": spec.period, "odd": spec.odd}))
        stats["seconds"] = round(time.perf_counter() - t0, 3)
        report[key] = stats
    arrays["__version__"] = np.array(FORMAT_VERSION)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez_compressed(tmp, **arrays)
    tmp.replace(path)
    _CACHE.pop(str(path), None)
    return report


# ------------------------------------------------------------------------------------------ lookup
class BranchingTables:
    """Loaded tables: `split_points(op, l, u, attrs)` gives the split point of every interval."""

    def __init__(self, arrays: dict[str, np.ndarray]):
        self.tables: dict[str, tuple[TableSpec, torch.Tensor]] = {}
        for name in arrays:
            if not name.endswith(".meta"):
                continue
            key = name[: -len(".meta")]
            meta = json.loads(str(arrays[name]))
            spec = TableSpec(meta["op"], tuple(sorted(meta["attrs"].items())), meta["lo"], meta["hi"], meta["n"],
                             meta["log_scale"], meta["period"], meta["odd"])
            self.tables[key] = (spec, torch.from_numpy(arrays[f"{key}.ratio"].astype(np.float32)))

    def has(self, op: str, attrs: dict[str, Any] | None = None) -> bool:
        key = table_key(op, attrs)
        return key is not None and key in self.tables

    def ratio(self, key: str, l: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """Interpolated split ratio in (0, 1) for intervals of one table (0.5 outside the grid)."""
        spec, table = self.tables[key]
        l64, u64 = l.detach().to(torch.float64), u.detach().to(torch.float64)
        flip = torch.zeros_like(l64, dtype=torch.bool)
        if spec.period:
            shift = torch.floor((l64 + spec.period / 2) / spec.period) * spec.period
            shift = torch.where(torch.isfinite(shift), shift, torch.zeros_like(shift))
            l64, u64 = l64 - shift, u64 - shift
        if spec.odd:
            flip = u64 <= 0
            l64, u64 = torch.where(flip, -u64, l64), torch.where(flip, -l64, u64)
        if spec.log_scale:
            inside = l64 > 0
            l64 = torch.log10(l64.clamp(min=1e-300))
            u64 = torch.log10(u64.clamp(min=1e-300))
        else:
            inside = torch.ones_like(flip)
        step = (spec.hi - spec.lo) / (spec.n - 1)
        fi, fj = (l64 - spec.lo) / step, (u64 - spec.lo) / step
        inside &= (fi >= 0) & (fj >= 0) & (fi <= spec.n - 1) & (fj <= spec.n - 1) & (u64 > l64)
        i0 = fi.floor().clamp(0, spec.n - 2)
        j0 = fj.floor().clamp(0, spec.n - 2)
        ti, tj = (fi - i0).clamp(0, 1), (fj - j0).clamp(0, 1)
        i0, j0 = i0.nan_to_num(0).long(), j0.nan_to_num(0).long()
        flat = table.to(torch.float64).flatten()
        n = spec.n
        v00, v01 = flat[i0 * n + j0], flat[i0 * n + j0 + 1]
        v10, v11 = flat[(i0 + 1) * n + j0], flat[(i0 + 1) * n + j0 + 1]
        r = (1 - ti) * ((1 - tj) * v00 + tj * v01) + ti * ((1 - tj) * v10 + tj * v11)
        r = torch.where(inside & torch.isfinite(r), r, torch.full_like(r, 0.5)).clamp(0.01, 0.99)
        return torch.where(flip, 1 - r, r)

    def split_points(self, op: str, l: torch.Tensor, u: torch.Tensor,
                     attrs: dict[str, Any] | None = None) -> torch.Tensor:
        """Split points s with l < s < u where u > l (s = l where l = u): the table's choice, the kink of a
        piecewise-linear function, or the midpoint."""
        attrs = attrs or {}
        mid = l + (u - l) / 2
        if op in _KINKS:  # the kink nearest the midpoint, among those strictly inside (l, u)
            s, dist = mid, torch.full_like(mid, math.inf)
            for k in _KINKS[op](attrs):
                d = (k - mid).abs()
                take = (l < k) & (k < u) & (d < dist)
                s = torch.where(take, torch.full_like(s, k), s)
                dist = torch.where(take, d, dist)
            return s
        key = table_key(op, attrs)
        if key is None or key not in self.tables:
            return mid
        r = self.ratio(key, l, u).to(l.dtype)
        s = l + r * (u - l)
        ok = torch.isfinite(s) & (s > l) & (s < u)
        return torch.where(ok, s, mid)


_CACHE: dict[str, BranchingTables] = {}


def load_tables(path: Path | str | None = None) -> BranchingTables:
    """The tables stored at `path` (the packaged file by default), loaded once per process."""
    path = Path(path) if path else TABLE_PATH
    key = str(path)
    if key not in _CACHE:
        if not path.exists():
            _CACHE[key] = BranchingTables({})
        else:
            with np.load(path, allow_pickle=False) as z:
                _CACHE[key] = BranchingTables({k: z[k] for k in z.files})
    return _CACHE[key]


def split_points(op: str, l: torch.Tensor, u: torch.Tensor, attrs: dict[str, Any] | None = None,
                 use_tables: bool = True) -> torch.Tensor:
    """Branching points for neurons of `op` with input bounds [l, u] (midpoints when `use_tables` is off)."""
    if not use_tables:
        if op in _KINKS:
            return BranchingTables({}).split_points(op, l, u, attrs)
        return l + (u - l) / 2
    return load_tables().split_points(op, l, u, attrs)

"""Branching-point tables: the packaged file loads fast, lookups are inside (l, u), reproduce the stored
optimum at grid points, fall back to the midpoint outside the grid, honour periodicity / odd symmetry, and
reduce the relaxation looseness compared with midpoint splits. `verify tables build` regenerates a table."""
from __future__ import annotations

import json
import math
import time

import numpy as np
import torch

from verify.bab import tables as T
from verify.bounds.ops import RULES
from verify.cli import main

D = torch.float64


def test_packaged_tables_load_in_milliseconds():
    T._CACHE.clear()
    t0 = time.perf_counter()
    tabs = T.load_tables()
    ms = (time.perf_counter() - t0) * 1e3
    assert set(T.SPECS) <= set(tabs.tables), "packaged table file is missing tables: run `verify tables build`"
    assert ms < 500


def test_lookup_matches_grid_values_and_stays_inside():
    tabs = T.load_tables()
    spec, table = tabs.tables["gelu"]
    g = torch.linspace(spec.lo, spec.hi, spec.n, dtype=D)
    i, j = 10, 40
    r = tabs.ratio("gelu", g[i:i + 1], g[j:j + 1])
    assert abs(float(r) - float(table[i, j])) < 1e-6
    gen = torch.Generator().manual_seed(0)
    l = torch.rand(1000, generator=gen, dtype=D) * 20 - 10
    u = l + torch.rand(1000, generator=gen, dtype=D) * 8
    for op, attrs in [("gelu", {}), ("sigmoid", {}), ("sin", {}), ("exp", {}), ("pow", {"exponent": 3.0}),
                      ("log", {}), ("reciprocal", {}), ("tanh", {})]:
        s = T.split_points(op, l, u, attrs)
        assert torch.all((s > l) & (s < u)), op


def test_fallbacks_kinks_and_symmetries():
    tabs = T.load_tables()
    l, u = torch.tensor([50.0, -3.0], dtype=D), torch.tensor([60.0, -3.0], dtype=D)
    s = tabs.split_points("sigmoid", l, u)
    assert float(s[0]) == 55.0 and float(s[1]) == -3.0      # outside the grid: midpoint; l = u: l
    s = tabs.split_points("pow", torch.tensor([1.0], dtype=D), torch.tensor([2.0], dtype=D), {"exponent": 7.0})
    assert float(s) == 1.5                                  # no table for x^7: midpoint
    s = tabs.split_points("relu", torch.tensor([-1.0, 1.0], dtype=D), torch.tensor([3.0, 2.0], dtype=D))
    assert s.tolist() == [0.0, 1.5]
    s = tabs.split_points("clip", torch.tensor([-3.0], dtype=D), torch.tensor([4.0], dtype=D), {"min": -1.0, "max": 1.0})
    assert float(s) == 1.0                                  # the kink nearest the midpoint 0.5
    l, u = torch.tensor([0.3], dtype=D), torch.tensor([2.2], dtype=D)
    r0 = tabs.ratio("sin", l, u)
    r1 = tabs.ratio("sin", l + 6 * math.pi, u + 6 * math.pi)
    assert abs(float(r0 - r1)) < 1e-6                       # periodic
    r_pos = tabs.ratio("reciprocal", torch.tensor([0.5], dtype=D), torch.tensor([3.0], dtype=D))
    r_neg = tabs.ratio("reciprocal", torch.tensor([-3.0], dtype=D), torch.tensor([-0.5], dtype=D))
    assert abs(float(r_pos + r_neg) - 1.0) < 1e-6           # odd symmetry


def _looseness(op, attrs, l, u, s):
    return T._area(RULES[op], l, s, attrs) + T._area(RULES[op], s, u, attrs)


def test_table_splits_are_tighter_than_midpoint_on_average_and_never_much_looser():
    gen = torch.Generator().manual_seed(1)
    for op, attrs, lo, hi in [("gelu", {}, -5, 5), ("sigmoid", {}, -7, 7), ("exp", {}, -8, 5), ("sin", {}, -3, 9),
                              ("pow", {"exponent": 3.0}, -3, 3), ("log", {}, 0.01, 100)]:
        l = lo + torch.rand(400, generator=gen, dtype=D) * (hi - lo)
        u = l + torch.rand(400, generator=gen, dtype=D) * (hi - l)
        t = _looseness(op, attrs, l, u, T.split_points(op, l, u, attrs))
        m = _looseness(op, attrs, l, u, T.split_points(op, l, u, attrs, use_tables=False))
        ok = torch.isfinite(t) & torch.isfinite(m) & (m > 1e-12)
        ratio = t[ok] / m[ok]
        assert float(ratio.mean()) < 0.97, (op, float(ratio.mean()))
        assert float(ratio.max()) < 1.3, (op, float(ratio.max()))  # interpolation across a jump of the optimum


def test_cli_build_writes_a_loadable_table(tmp_path, capsys):
    out = tmp_path / "t.npz"
    assert main(["tables", "build", "--only", "exp", "pow3", "--grid", "9", "--out", str(out), "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert set(rep["tables"]) == {"exp", "pow3"} and rep["tables"]["exp"]["mean_looseness_vs_midpoint"] < 1
    with np.load(out) as z:
        assert z["exp.ratio"].shape == (9, 9)
    tabs = T.load_tables(out)
    s = tabs.split_points("exp", torch.tensor([-2.0], dtype=D), torch.tensor([3.0], dtype=D))
    assert -2.0 < float(s) < 3.0
    assert main(["tables", "build", "--only", "nope", "--out", str(out)]) == 2
    assert main(["tables", "info", "--path", str(out), "--json"]) == 0
    assert set(json.loads(capsys.readouterr().out)["tables"]) == {"exp", "pow3"}

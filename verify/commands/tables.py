"""`verify tables build` (re-optimise the branching-point tables shipped in verify/data/) and
`verify tables info` (load them and list what they hold, with the load time)."""
from __future__ import annotations

import json
import sys
import time


def register(subparsers) -> None:
    p = subparsers.add_parser("tables", help="branching-point lookup tables for general nonlinearities")
    sub = p.add_subparsers(dest="tables_command", parser_class=type(p))

    b = sub.add_parser("build", help="optimise the split-point tables and write them",
                       description="For each function, find on a grid of input intervals [l, u] the split point "
                       "that minimises the relaxation looseness of both halves, and store the tables as a "
                       "compressed .npz (default: the packaged verify/data/branching_points.npz).")
    b.add_argument("--only", nargs="+", metavar="NAME", default=None,
                   help="rebuild only these tables (others in the file are kept)")
    b.add_argument("--out", default=None, help="output .npz path (default: the packaged table file)")
    b.add_argument("--grid", type=int, default=None, help="grid points per axis (default: each table's own)")
    b.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    b.set_defaults(func=run_build)

    i = sub.add_parser("info", help="load the tables and list them")
    i.add_argument("--path", default=None, help="table file (default: the packaged one)")
    i.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    i.set_defaults(func=run_info)

    p.set_defaults(func=lambda args: (p.print_help(sys.stderr), 2)[1])


def run_build(args) -> int:
    from verify.bab.tables import TABLE_PATH, build_tables

    t0 = time.perf_counter()
    if args.grid is not None and args.grid < 3:
        from verify.errors import InputError

        raise InputError(f"--grid {args.grid}: need at least 3 points per axis")
    report = build_tables(args.only, args.out, args.grid)
    out = {"out": str(args.out or TABLE_PATH), "tables": report, "seconds": round(time.perf_counter() - t0, 3)}
    if args.json:
        print(json.dumps(out))
    else:
        for k, v in report.items():
            print(f"{k:12s} {v['cells']:6d} cells  looseness vs midpoint split: mean {v['mean_looseness_vs_midpoint']:.3f}"
                  f", best {v['min_looseness_vs_midpoint']:.3f}  ({v['seconds']:.1f} s)", file=sys.stderr)
        print(f"wrote {out['out']} in {out['seconds']:.1f} s")
    return 0


def run_info(args) -> int:
    from pathlib import Path

    from verify.bab import tables as T

    path = Path(args.path) if args.path else T.TABLE_PATH
    if args.path and not path.exists():
        from verify.errors import InputError

        raise InputError(f"{path}: no such table file")
    T._CACHE.pop(str(path), None)
    t0 = time.perf_counter()
    tabs = T.load_tables(path)
    load_ms = (time.perf_counter() - t0) * 1e3
    info = {k: {"op": s.op, "attrs": dict(s.attrs), "grid": [s.lo, s.hi, s.n], "log_scale": s.log_scale}
            for k, (s, _) in tabs.tables.items()}
    out = {"path": str(path), "tables": info, "load_ms": round(load_ms, 3)}
    if args.json:
        print(json.dumps(out))
    else:
        for k, v in info.items():
            print(f"{k:12s} op={v['op']} grid [{v['grid'][0]:.3g}, {v['grid'][1]:.3g}] x {v['grid'][2]}"
                  f"{' (log10)' if v['log_scale'] else ''}")
        print(f"{len(info)} tables from {path}, loaded in {load_ms:.1f} ms")
    return 0

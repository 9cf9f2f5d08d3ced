"""Measurements for docs/nonlinear.md.

    python docs/bench_nonlinear.py relax              # cost of one relaxation per rule
    python docs/bench_nonlinear.py sigmoid [N]        # ERAN sigmoid 6x200: CROWN / α-CROWN proven counts,
                                                      # registered sigmoid rule vs SigmoidSlopeRule
Run with OMP_NUM_THREADS=1.
"""
from __future__ import annotations

import csv
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2] / "shared" / "benchmarks" / "eran_2021"


def bench_relax() -> None:
    from verify.bounds.ops import RULES

    g = torch.Generator().manual_seed(0)
    l = torch.randn(100, 2000, generator=g) * 2
    u = l + torch.rand(100, 2000, generator=g) * 3
    for op, at in [("relu", {}), ("sigmoid", {}), ("tanh", {}), ("sin", {}), ("cos", {}), ("gelu", {}),
                   ("erf", {}), ("exp", {}), ("softplus", {}), ("pow", {"exponent": 2.0}),
                   ("pow", {"exponent": 3.0}), ("abs", {})]:
        r = RULES[op]
        r.relax(l, u, at)
        t = time.perf_counter()
        for _ in range(5):
            r.relax(l, u, at)
        t1 = (time.perf_counter() - t) / 5
        a = r.alpha_init(l, u, at)
        a = a.clone().requires_grad_() if a is not None else None
        t = time.perf_counter()
        for _ in range(3):
            out = r.relax(l, u, at, a)
            if a is not None:
                sum(o.sum() for o in out).backward()
        t2 = (time.perf_counter() - t) / 3
        print(f"{op:9s} {at}  relax {t1 * 1e3:7.1f} ms   relax + alpha grad {t2 * 1e3:7.1f} ms")


def bench_sigmoid(n: int) -> None:
    from verify.api import load_model, load_spec
    from verify.bounds import AlphaOptions, alpha_crown, engine_for
    from verify.bounds.ops import RULES
    from verify.bounds.ops.sshaped_slope import SigmoidSlopeRule

    rows = [r for r in csv.reader(open(ROOT / "instances.csv")) if "SIGMOID" in r[0]][:n]
    expected = {(r[0], r[1]): r[2] for r in csv.reader(open(ROOT / "expected.csv"))}
    orig = RULES["sigmoid"]
    try:
        for name, rule in [("registered", orig), ("SigmoidSlopeRule", SigmoidSlopeRule())]:
            RULES["sigmoid"] = rule
            eng = engine_for(load_model(str(ROOT / rows[0][0])))
            tc = ta = 0.0
            pc = pa = 0
            wrong = 0
            for r in rows:
                spec = load_spec(ROOT / r[1])
                ok_c = ok_a = True
                for lo, hi, terms in spec.regions():
                    C = torch.tensor(np.concatenate([c for c, _ in terms]), dtype=torch.float32).unsqueeze(0)
                    d = torch.tensor(np.concatenate([d for _, d in terms]), dtype=torch.float32)
                    L = torch.tensor(lo, dtype=torch.float32).unsqueeze(0)
                    U = torch.tensor(hi, dtype=torch.float32).unsqueeze(0)
                    t = time.perf_counter()
                    with torch.no_grad():
                        lb = eng.compute(L, U, C)[0] - d
                    tc += time.perf_counter() - t
                    t = time.perf_counter()
                    lba = alpha_crown(eng, L, U, C, AlphaOptions(iterations=20, lr=0.1))[0] - d
                    ta += time.perf_counter() - t
                    i = 0
                    for c, _ in terms:
                        m = c.shape[0]
                        ok_c &= bool((lb[i:i + m] > 0).any())
                        ok_a &= bool((lba[i:i + m] > 0).any())
                        i += m
                pc += ok_c
                pa += ok_a
                wrong += (ok_a or ok_c) and expected.get((r[0], r[1])) == "sat"
            print(f"{name:17s} CROWN proven {pc}/{len(rows)} ({tc:.1f} s)   alpha-CROWN proven {pa}/{len(rows)} "
                  f"({ta:.1f} s)   proven but expected sat: {wrong}", flush=True)
    finally:
        RULES["sigmoid"] = orig


if __name__ == "__main__":
    torch.set_num_threads(1)
    what = sys.argv[1] if len(sys.argv) > 1 else "relax"
    if what == "relax":
        bench_relax()
    else:
        bench_sigmoid(int(sys.argv[2]) if len(sys.argv) > 2 else 36)

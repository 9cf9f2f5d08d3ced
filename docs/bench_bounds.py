"""Speed of the bound engine (issue 3's speed table): CROWN and α-CROWN for one spec on the MNIST 256x6 and
ERAN 9x200 networks, and CROWN for a batch of 1,024 ACAS Xu sub-boxes.

Run: OMP_NUM_THREADS=1 python docs/bench_bounds.py [--shared ../shared]
Prints a markdown table (median of `--repeat` runs after one warm-up).
"""
from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from verify.bab.objective import Objective
from verify.bounds import AlphaOptions, alpha_crown, engine_for
from verify.importers.onnx import load_onnx
from verify.spec.vnnlib import parse_vnnlib


def timed(fn, repeat):
    fn()
    ts = []
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts), out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shared", default=str(Path(__file__).resolve().parents[2] / "shared"))
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(1)
    b = Path(args.shared) / "benchmarks"
    rows = []
    for label, onnx, spec in [
        ("MNIST 256x6, prop_0_0.03", b / "mnist_fc_2021/onnx/mnist-net_256x6.onnx", b / "mnist_fc_2021/vnnlib/prop_0_0.03.vnnlib"),
        ("ERAN relu 9x200, idx 8098", b / "eran_2021/onnx/mnist_relu_9_200.onnx", b / "eran_2021/vnnlib/mnist_spec_idx_8098_eps_0.01500.vnnlib"),
        ("ERAN sigmoid 6x200, idx 7167", b / "eran_2021/onnx/ffnnSIGMOID__Point_6x200.onnx", b / "eran_2021/vnnlib/mnist_spec_idx_7167_eps_0.01200.vnnlib"),
    ]:
        g = load_onnx(onnx)
        eng = engine_for(g)
        lo, hi, terms = parse_vnnlib(spec).regions()[0]
        obj = Objective(terms, torch.float32)
        L = torch.tensor(lo, dtype=torch.float32)[None]
        U = torch.tensor(hi, dtype=torch.float32)[None]
        with torch.no_grad():
            t_c, lb_c = timed(lambda: eng.compute(L, U, obj.C[None], method="crown") - obj.d, args.repeat)
        opts = AlphaOptions(iterations=20, stop_when_positive=False)
        t_a, lb_a = timed(lambda: alpha_crown(eng, L, U, obj.C, opts, shift=obj.d), 1)
        opts_i = AlphaOptions(iterations=20, optimize_intermediate=True, stop_when_positive=False)
        t_ai, lb_ai = timed(lambda: alpha_crown(eng, L, U, obj.C, opts_i, shift=obj.d), 1)
        rows.append((label, t_c, obj.score(lb_c).item(), t_a, obj.score(lb_a).item(), t_ai, obj.score(lb_ai).item()))
    print("| network, spec | CROWN s | CROWN score | α-CROWN (output α, 20 it) s | score | α-CROWN (all layers, 20 it) s | score |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r[0]} | {r[1]:.3f} | {r[2]:.4g} | {r[3]:.2f} | {r[4]:.4g} | {r[5]:.2f} | {r[6]:.4g} |")
    g = load_onnx(b / "acasxu/onnx/ACASXU_run2a_1_1_batch_2000.onnx")
    eng = engine_for(g)
    lo, hi, terms = parse_vnnlib(b / "acasxu/vnnlib/prop_1.vnnlib").regions()[0]
    for dt in (torch.float32, torch.float64):
        lo_t, hi_t = torch.tensor(lo, dtype=dt), torch.tensor(hi, dtype=dt)
        # 1,024 sub-boxes: a 4x4x4x4x4 grid of the property's box
        grid = torch.stack(torch.meshgrid(*[torch.arange(4)] * 5, indexing="ij"), -1).reshape(-1, 5).to(dt)
        w = (hi_t - lo_t) / 4
        L = lo_t + grid * w
        U = L + w
        obj = Objective(terms, dt)
        C = obj.C[None].expand(1024, -1, -1)
        print()
        for inter in ("hybrid", "backward", "forward"):
            with torch.no_grad():
                t, _ = timed(lambda: eng.compute(L, U, C, method="crown", intermediate=inter), args.repeat)
            print(f"ACAS Xu 1_1 prop 1, 1,024 sub-boxes, CROWN ({inter} intermediate), {str(dt)[6:]}: {t:.3f} s")


if __name__ == "__main__":
    main()

"""`verify lipschitz MODEL [--norm 2|inf] [--method ...] [--solver ...] [--json]`.

Prints a certified bracket [lower, upper] of the model's Lipschitz constant. MODEL is an ONNX file or a
`.mat` weights file in the layout of shared/data/lipschitz (cell `weights` = ReLU net, `W` = MaxMin net).
"""
from __future__ import annotations

import json
import sys

from verify.lipsdp.api import METHODS


def register(subparsers) -> None:
    p = subparsers.add_parser("lipschitz", help="certified Lipschitz bounds (norm product, LipSDP)",
                              description="Certified Lipschitz constant bracket of a feed-forward network.")
    p.add_argument("model", help="an .onnx file or a .mat weights file")
    p.add_argument("--norm", default="2", choices=["2", "inf"], help="l2 (default) or l_inf")
    p.add_argument("--method", default="lipsdp-neuron", choices=list(METHODS),
                   help="naive = product of layer norms; lipsdp-* = SDP bounds (default lipsdp-neuron)")
    p.add_argument("--solver", default=None,
                   help="'fast' (own first-order solver, l2 default), 'ipm' (own barrier method, lipsdp-nsr default "
                        "on GroupSort nets) or a cvxpy solver (SCS, CLARABEL)")
    p.add_argument("--no-lower", action="store_true", help="skip the sampled lower bound")
    p.add_argument("--seed", type=int, default=0, help="seed of the lower-bound search")
    p.add_argument("--timeout", type=float, default=600.0, help="time limit of the fast solver (s)")
    p.add_argument("--threads", type=int, default=None, help="torch / BLAS threads")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def run(args) -> int:
    from verify.lipsdp.api import lipschitz

    res = lipschitz(args.model, norm=args.norm, method=args.method, solver=args.solver,
                    lower=not args.no_lower, seed=args.seed, time_limit=args.timeout, threads=args.threads)
    if args.json:
        sys.stdout.write(json.dumps(res.to_dict(), default=_jsonable) + "\n")
        return 0
    sv = "-" if res.solver_value is None else f"{res.solver_value:.6g}"
    print(f"model:        {args.model} ({'-'.join(map(str, res.details.get('dims', [])))})")
    print(f"norm:         l{res.norm}")
    print(f"method:       {res.method}" + (f" (solver {res.solver})" if res.solver else ""))
    print(f"upper:        {res.upper:.6g}  (certified)")
    print(f"lower:        {res.lower:.6g}")
    print(f"solver value: {sv}  (raw, not a bound)")
    if res.sdp_lower is not None:
        print(f"sdp lower:    {res.sdp_lower:.6g}  (the SDP's optimum is >= this: a dual feasible point)")
    print(f"norm product: {res.naive:.6g}")
    print(f"seconds:      {res.seconds:.2f}")
    return 0


def _jsonable(o):
    try:
        import numpy as np

        if isinstance(o, np.generic):
            return o.item()
        if isinstance(o, np.ndarray):
            return o.tolist()
    except ImportError:  # pragma: no cover
        pass
    return str(o)

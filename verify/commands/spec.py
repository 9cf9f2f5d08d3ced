"""`verify spec robustness` (write an L∞ robustness VNN-LIB spec for a dataset image) and
`verify spec info` (parse a VNN-LIB file and summarise it, with the parse time)."""
from __future__ import annotations

import json
import sys
import time


def register(subparsers) -> None:
    p = subparsers.add_parser("spec", help="create or inspect VNN-LIB specifications")
    sub = p.add_subparsers(dest="spec_command", parser_class=type(p))

    r = sub.add_parser(
        "robustness",
        help="write an L-infinity robustness spec around a dataset image",
        description="Write a VNN-LIB file: inputs in the L-infinity ball of radius EPS around test image I "
        "(clipped to [0, 1], in the model's input layout), unsafe if some other class scores at least "
        "the true class.",
    )
    r.add_argument("--dataset", default="mnist", help="mnist, fashion-mnist or digits (default: mnist)")
    r.add_argument("--data-dir", default=None, help="folder with the IDX files (default: shared/data/<dataset>)")
    r.add_argument("--split", default="test", choices=["test", "train"], help="dataset split (default: test)")
    r.add_argument("--index", "--image-index", dest="index", type=int, required=True, help="image index")
    r.add_argument("--eps", type=float, required=True, help="L-infinity radius")
    r.add_argument("--model", default=None, help="ONNX model: sets the input layout and the number of classes")
    r.add_argument("--n-classes", type=int, default=10, help="number of classes when no --model is given")
    r.add_argument("--out", required=True, help="output .vnnlib path")
    r.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    r.set_defaults(func=run_robustness)

    i = sub.add_parser("info", help="parse a VNN-LIB file and summarise it")
    i.add_argument("vnnlib", help="the .vnnlib file")
    i.add_argument("--repeat", type=int, default=1, help="parse N times and report the fastest time")
    i.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    i.set_defaults(func=run_info)

    p.set_defaults(func=lambda args: (p.print_help(sys.stderr), 2)[1])


def run_robustness(args) -> int:
    from verify.datasets import load_dataset
    from verify.errors import InputError
    from verify.spec.robustness import write_robustness_spec

    t0 = time.perf_counter()
    images, labels = load_dataset(args.dataset, args.split, args.data_dir)
    if not 0 <= args.index < len(images):
        raise InputError(f"--index {args.index} is out of range: the {args.dataset} {args.split} split has "
                         f"{len(images)} images")
    label = int(labels[args.index])
    comment = f"dataset {args.dataset} ({args.split} split), image index {args.index}, label {label}"
    info = write_robustness_spec(args.out, images[args.index], label, args.eps, args.model, args.n_classes, comment)
    out = {"out": args.out, "dataset": args.dataset, "split": args.split, "index": args.index, "label": label,
           "eps": args.eps, **info, "seconds": round(time.perf_counter() - t0, 4)}
    if args.json:
        print(json.dumps(out))
    else:
        print(f"wrote {args.out}: {args.dataset} {args.split} image {args.index} (label {label}), eps {args.eps}, "
              f"{info['n_inputs']} inputs, {info['n_outputs']} outputs")
    return 0


def run_info(args) -> int:
    from verify.spec.vnnlib import parse_vnnlib

    best = float("inf")
    for _ in range(max(1, args.repeat)):
        t0 = time.perf_counter()
        spec = parse_vnnlib(args.vnnlib)
        best = min(best, time.perf_counter() - t0)
    regions = spec.regions()
    out = {"path": args.vnnlib, "n_inputs": spec.n_inputs, "n_outputs": spec.n_outputs,
           "disjuncts": len(spec.disjuncts), "input_boxes": len(regions),
           "output_rows": [int(dj.C.shape[0]) for dj in spec.disjuncts],
           "parse_seconds": round(best, 6)}
    if args.json:
        print(json.dumps(out))
    else:
        print(f"{args.vnnlib}: {spec.n_inputs} inputs, {spec.n_outputs} outputs, {len(spec.disjuncts)} disjuncts "
              f"over {len(regions)} input box(es); parsed in {best * 1e3:.2f} ms")
    return 0

"""`verify train certified`: certified training (IBP, CROWN-IBP, SABR) of a preset model on MNIST,
Fashion-MNIST or the 8x8 digits, evaluation with the project's bound core, ONNX export.

    verify train certified --dataset mnist --eps 0.1 --method ibp --model cnn-small --epochs 20 \\
        --out model.onnx --json

A progress bar per epoch goes to stderr; with --json, stdout carries exactly one JSON object with
clean_acc, pgd_acc, ibp_cert_acc, crown_cert_acc (fractions in [0, 1]), tightness and seconds.
"""
from __future__ import annotations

import json
import sys
import time


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "certified", help="certified training (IBP, CROWN-IBP, SABR) with ONNX export",
        description="Train a classifier to be certifiably robust in an L-infinity ball of radius --eps, "
        "evaluate it (clean, PGD, IBP- and CROWN-certified accuracy) and write it as ONNX.")
    p.add_argument("--dataset", default="digits", help="mnist, fashion-mnist or digits (default: digits, "
                   "scikit-learn's 8x8 digits, needs no files)")
    p.add_argument("--data-dir", default=None, help="folder with the IDX files (default: shared/data/<dataset>)")
    p.add_argument("--model", default="cnn-small", help="preset: mlp, mlp-deep, cnn-small, cnn-tiny (default cnn-small)")
    p.add_argument("--method", default="ibp", choices=["ibp", "crown-ibp", "sabr", "standard"],
                   help="training method (default ibp; 'standard' is plain cross-entropy)")
    p.add_argument("--eps", type=float, default=0.1, help="L-infinity radius to certify (default 0.1)")
    p.add_argument("--eps-train", type=float, default=None, help="radius trained for (default: 1.1 x --eps)")
    p.add_argument("--epochs", type=int, default=20, help="training epochs (default 20)")
    p.add_argument("--batch-size", type=int, default=64, help="batch size (default 64)")
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (default 1e-3)")
    p.add_argument("--warmup-epochs", type=float, default=1.0, help="epochs at eps = 0 (default 1)")
    p.add_argument("--ramp-epochs", type=float, default=8.0, help="epochs of the smooth eps ramp (default 8)")
    p.add_argument("--kappa-end", type=float, default=0.5, help="clean-loss weight after the ramp (default 0.5)")
    p.add_argument("--crown-beta-end", type=float, default=0.0,
                   help="CROWN-IBP: weight of the CROWN-IBP bound after the ramp (it falls from 1; default 0)")
    p.add_argument("--sabr-lambda", type=float, default=0.4, help="SABR small-box radius factor (default 0.4)")
    p.add_argument("--ibp-init", action="store_true",
                   help="Shi et al.'s IBP initialisation (default: torch's initialisation)")
    p.add_argument("--reg-weight", type=float, default=0.5, help="warm-up regulariser weight (default 0.5)")
    p.add_argument("--train-limit", type=int, default=0, help="train on the first N images only (0: all)")
    p.add_argument("--test-limit", type=int, default=0, help="evaluate on the first N test images (0: all)")
    p.add_argument("--eval-subset", type=int, default=1000,
                   help="test images certified by CROWN / alpha-CROWN (default 1000; IBP uses all)")
    p.add_argument("--verifiers", default="crown", help="comma list of bound methods run on the subset besides IBP: "
                   "crown (always), crown-ibp, alpha-crown (default crown)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: OMP_NUM_THREADS, else 1)")
    p.add_argument("--out", default=None, help="write the trained model here as ONNX")
    p.add_argument("--no-progress-bar", action="store_true", help="no progress bar on stderr")
    p.add_argument("--json", action="store_true", help="print exactly one JSON object on stdout")
    p.set_defaults(func=run)


def run(args) -> int:
    from tqdm import tqdm

    from verify.datasets import load_dataset
    from verify.errors import InputError
    from verify.train.certified import TrainConfig, train
    from verify.train.evaluate import evaluate
    from verify.train.models import build_model

    t0 = time.perf_counter()
    # CROWN always runs (crown_cert_acc is part of the JSON); the option adds more bound methods
    verifiers = list(dict.fromkeys(["crown"] + [v.strip() for v in args.verifiers.split(",") if v.strip()]))
    for v in verifiers:
        if v not in ("crown", "crown-ibp", "alpha-crown", "ibp"):
            raise InputError(f"--verifiers: unknown bound method {v!r} (crown, crown-ibp, alpha-crown)")
    x_tr, y_tr = load_dataset(args.dataset, "train", args.data_dir)
    x_te, y_te = load_dataset(args.dataset, "test", args.data_dir)
    if args.train_limit > 0:
        x_tr, y_tr = x_tr[:args.train_limit], y_tr[:args.train_limit]
    if args.test_limit > 0:
        x_te, y_te = x_te[:args.test_limit], y_te[:args.test_limit]
    n_classes = int(max(y_tr.max(), y_te.max())) + 1
    model = build_model(args.model, tuple(x_tr.shape[1:]), n_classes, seed=args.seed)
    eps_train = round(1.1 * args.eps, 10) if args.eps_train is None else args.eps_train
    cfg = TrainConfig(method=args.method, eps=args.eps, eps_train=eps_train, epochs=args.epochs,
                      batch_size=args.batch_size, lr=args.lr, warmup_epochs=args.warmup_epochs,
                      ramp_epochs=args.ramp_epochs, kappa_end=args.kappa_end, sabr_lambda=args.sabr_lambda,
                      crown_beta_end=args.crown_beta_end,
                      ibp_init=args.ibp_init, reg_weight=args.reg_weight, seed=args.seed)
    cfg.validate()

    bar = None
    if not args.no_progress_bar:
        bar = tqdm(total=args.epochs * -(-len(y_tr) // args.batch_size), file=sys.stderr, unit="batch",
                   dynamic_ncols=True, mininterval=0.5)

    def progress(k, steps, info):
        if bar is not None:
            bar.update(1)
            bar.set_postfix(eps=f"{info['eps']:.4f}", loss=f"{info['loss']:.3f}", acc=f"{info['acc']:.3f}",
                            refresh=False)

    def on_epoch(h):
        line = (f"epoch {h.epoch}/{args.epochs}: eps {h.eps:.4f} loss {h.loss:.4f} train acc {h.clean_acc:.4f} "
                f"train cert {h.robust_acc:.4f} tightness {h.tightness:.4f} ({h.seconds:.1f}s)")
        (bar.write(line, file=sys.stderr) if bar is not None else print(line, file=sys.stderr))
        if bar is not None:
            bar.set_description(f"epoch {h.epoch + 1 if h.epoch < args.epochs else h.epoch}/{args.epochs}")

    if bar is not None:
        bar.set_description(f"epoch 1/{args.epochs}")
    result = train(model, x_tr, y_tr, cfg, n_classes=n_classes, progress=progress, on_epoch=on_epoch)
    if bar is not None:
        bar.close()
    subsets = {v: args.eval_subset for v in verifiers if v != "ibp"} if args.eval_subset > 0 else {}
    metrics = evaluate(model, x_te, y_te, args.eps, methods=["ibp"] + [v for v in verifiers if v != "ibp"],
                       method_subsets=subsets, graph=result.graph)
    if args.out:
        from verify.export import export_onnx

        export_onnx(model, args.out, tuple(x_tr.shape[1:]))
    out = {
        "dataset": args.dataset, "model": args.model, "method": args.method, "eps": args.eps,
        "eps_train": eps_train, "epochs": args.epochs,
        "clean_acc": metrics["clean_acc"], "pgd_acc": metrics["pgd_acc"], "ibp_cert_acc": metrics["ibp_cert_acc"],
        **{f"{v.replace('-', '_')}_cert_acc": metrics[f"{v.replace('-', '_')}_cert_acc"] for v in verifiers},
        "n_test": metrics["n"],
        **{f"{v.replace('-', '_')}_n": metrics.get(f"{v.replace('-', '_')}_n", metrics["n"]) for v in verifiers},
        "tightness": result.history[-1].tightness, "train_seconds": result.seconds,
        "history": [h.__dict__ for h in result.history], "out": args.out,
        "seconds": time.perf_counter() - t0,
    }
    if args.json:
        print(json.dumps(out))
    else:
        parts = [f"clean {out['clean_acc']:.4f}", f"PGD {out['pgd_acc']:.4f}", f"IBP-certified {out['ibp_cert_acc']:.4f}"]
        parts += [f"{v}-certified {out[v.replace('-', '_') + '_cert_acc']:.4f}" for v in verifiers]
        parts += [f"tightness {out['tightness']:.3f}", f"{out['seconds']:.1f}s"]
        print(", ".join(parts) + (f"; wrote {args.out}" if args.out else ""))
    return 0

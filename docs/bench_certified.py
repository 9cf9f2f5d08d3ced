"""Benchmark: certified training on MNIST (or the 8x8 digits) with the project's own bound core.

Trains a preset model with `verify.train.certified.train` on one CPU thread, then evaluates on the test
set: clean and PGD accuracy and IBP-certified accuracy on every test image, CROWN and α-CROWN certified
accuracy on the first `--subset` test images. Prints one JSON object (and writes it to --json-out).

    OMP_NUM_THREADS=1 python docs/bench_certified.py --method ibp --epochs 20 --eps 0.1 --json-out ibp.json
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

from verify.datasets import load_dataset  # noqa: E402
from verify.train.certified import TrainConfig, train  # noqa: E402
from verify.train.evaluate import evaluate  # noqa: E402
from verify.train.models import build_model  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="mnist")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--model", default="cnn-small")
    p.add_argument("--method", default="ibp", choices=["ibp", "crown-ibp", "sabr", "standard"])
    p.add_argument("--eps", type=float, default=0.1)
    p.add_argument("--eps-train", type=float, default=None)
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--warmup-epochs", type=float, default=1.0)
    p.add_argument("--ramp-epochs", type=float, default=8.0)
    p.add_argument("--kappa-end", type=float, default=0.0)
    p.add_argument("--crown-beta-end", type=float, default=0.0)
    p.add_argument("--sabr-lambda", type=float, default=0.4)
    p.add_argument("--test-limit", type=int, default=0, help="evaluate on the first N test images (0: all)")
    p.add_argument("--no-ibp-init", action="store_true")
    p.add_argument("--reg-weight", type=float, default=0.5)
    p.add_argument("--train-limit", type=int, default=0, help="use only the first N training images (0: all)")
    p.add_argument("--subset", type=int, default=1000, help="test images for CROWN / alpha-CROWN")
    p.add_argument("--pgd-subset", type=int, default=0, help="attack only the first N test images (0: all)")
    p.add_argument("--verifiers", default="crown,alpha-crown", help="bound methods run on the subset")
    p.add_argument("--cascade", action="store_true",
                   help="on the subset, certify with IBP, then the --verifiers on the rest, then `verify check`")
    p.add_argument("--check-timeout", type=float, default=0.0,
                   help="with --cascade: `verify check` (BaB) timeout per image left open (0: skip)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--save", default=None, help="save the trained state_dict here")
    p.add_argument("--load", default=None, help="evaluate this saved state_dict instead of training")
    p.add_argument("--json-out", default=None)
    a = p.parse_args()

    x_tr, y_tr = load_dataset(a.dataset, "train", a.data_dir)
    x_te, y_te = load_dataset(a.dataset, "test", a.data_dir)
    if a.train_limit:
        x_tr, y_tr = x_tr[:a.train_limit], y_tr[:a.train_limit]
    if a.test_limit:
        x_te, y_te = x_te[:a.test_limit], y_te[:a.test_limit]
    model = build_model(a.model, tuple(x_tr.shape[1:]), seed=a.seed)
    cfg = TrainConfig(method=a.method, eps=a.eps, eps_train=a.eps_train, epochs=a.epochs, batch_size=a.batch_size,
                      lr=a.lr, warmup_epochs=a.warmup_epochs, ramp_epochs=a.ramp_epochs, kappa_end=a.kappa_end,
                      crown_beta_end=a.crown_beta_end, sabr_lambda=a.sabr_lambda, seed=a.seed,
                      ibp_init=not a.no_ibp_init, reg_weight=a.reg_weight)
    t0 = time.process_time()
    w0 = time.perf_counter()
    if a.load:
        from verify.train.certified import TrainResult, load_graph

        model.load_state_dict(torch.load(a.load))
        model.eval()
        res = TrainResult(model, load_graph(model, tuple(x_tr.shape[1:])))
    else:
        res = train(model, x_tr, y_tr, cfg,
                    on_epoch=lambda h: print(json.dumps(h.__dict__), file=sys.stderr, flush=True))
    train_cpu, train_wall = time.process_time() - t0, time.perf_counter() - w0
    if a.save:
        torch.save(model.state_dict(), a.save)
    subset_methods = [m for m in a.verifiers.split(",") if m and m != "ibp"]
    # with --cascade the subset verifiers run only inside the cascade
    methods = ["ibp"] + ([] if a.cascade else subset_methods)
    subsets = {m: a.subset for m in methods if m != "ibp"}
    w1 = time.perf_counter()
    metrics = evaluate(model, x_te, y_te, a.eps, methods=methods, method_subsets=subsets, graph=res.graph,
                       pgd_subset=a.pgd_subset or None)
    # IBP on the same subset, for a like-for-like comparison with the subset verifiers
    from verify.train.evaluate import certified_mask

    n = min(a.subset, len(y_te))
    metrics["ibp_cert_acc_subset"] = float(certified_mask(res.graph, x_te[:n], y_te[:n], a.eps, "ibp").float().mean())
    if a.cascade:
        # the project's best verifier on the subset: IBP, then CROWN and alpha-CROWN on what is left, then
        # (--check-timeout) `verify check` with branch and bound on the rest
        from verify.train.evaluate import cascade

        cas = cascade(model, res.graph, x_te[:n], y_te[:n], a.eps, methods=["ibp"] + subset_methods,
                      check_timeout=a.check_timeout)
        metrics.update({f"subset_{k}": v for k, v in cas.items()})
    out = {"args": vars(a), "train_cpu_seconds": train_cpu, "train_wall_seconds": train_wall,
           "eval_wall_seconds": time.perf_counter() - w1, "threads": torch.get_num_threads(),
           "final_tightness": res.history[-1].tightness if res.history else None, "history": [h.__dict__ for h in res.history], **metrics}
    text = json.dumps(out)
    print(text)
    if a.json_out:
        with open(a.json_out, "w") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

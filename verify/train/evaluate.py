"""Evaluation of a (certifiably) trained classifier: clean accuracy, PGD accuracy, and certified accuracy
by the project's bound core (`verify.bounds.compute` with IBP, CROWN-IBP, CROWN or α-CROWN).

Certification of image x with label y at radius ε: every margin (C·f)(x') = f_y(x') - f_j(x') is proven
positive over the ℓ∞ box of radius ε around x, clipped to the input domain. As in training, the margin
matrix is fused into the last linear layer: `elided_graph` makes, per label, a copy of the Graph whose
output is the K-1 margins, and `compute` bounds that output directly.
"""
from __future__ import annotations

import time
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from verify.bounds import compute
from verify.graph.ir import Graph, Node


def elided_graph(graph: Graph, C: torch.Tensor) -> Graph:
    """A copy of `graph` whose output is C·y (C of shape (S, K)); when the output node is a linear layer
    C is fused into its weights and bias, otherwise a linear node with weight C is appended."""
    g = graph.copy()
    # evaluation needs no gradients w.r.t. the weights: detached constants keep the bound passes lean
    g.constants = {k: v.detach() for k, v in g.constants.items()}
    last = g.nodes[-1]
    C = C.to(torch.float32)
    if last.name == g.output and last.op == "linear" and len(g.output_shape) == 1:
        W = g.constants[last.inputs[1]].to(C.dtype)
        b = g.constants[last.inputs[2]].to(C.dtype) if len(last.inputs) > 2 else torch.zeros(W.shape[0])
        wn, bn = f"{last.name}.elided_weight", f"{last.name}.elided_bias"
        g.constants[wn], g.constants[bn] = C @ W, C @ b
        g.nodes[-1] = Node(last.name, "linear", [last.inputs[0], wn, bn], {}, (C.shape[0],))
        return g
    flat = g.output
    if len(g.output_shape) != 1:
        flat = f"{g.output}__flat"
        g.nodes.append(Node(flat, "reshape", [g.output], {"shape": [g.output_size]}, (g.output_size,)))
    wn = "__margin_weight"
    g.constants[wn] = C
    g.nodes.append(Node("__margins", "linear", [flat, wn], {}, (C.shape[0],)))
    g.output = "__margins"
    return g


def margin_rows(label: int, n_classes: int) -> torch.Tensor:
    """(K-1, K) rows e_label - e_j, j != label."""
    eye = torch.eye(n_classes)
    return torch.stack([eye[label] - eye[j] for j in range(n_classes) if j != label])


def certified_mask(graph: Graph, x: torch.Tensor, y: torch.Tensor, eps: float, method: str = "ibp",
                   n_classes: int | None = None, batch_size: int = 256, clip: tuple[float, float] = (0.0, 1.0),
                   progress: Callable[[int], None] | None = None) -> torch.Tensor:
    """Boolean (N,): image i is proven robust at radius eps by `method` (a `verify.bounds` method)."""
    x = torch.as_tensor(x, dtype=torch.float32)
    y = torch.as_tensor(y, dtype=torch.long)
    K = int(n_classes or graph.output_size)
    out = torch.zeros(x.shape[0], dtype=torch.bool)
    for label in torch.unique(y).tolist():
        g = elided_graph(graph, margin_rows(label, K))
        idx = (y == label).nonzero().flatten()
        for i in range(0, idx.numel(), batch_size):
            sel = idx[i:i + batch_size]
            xb = x[sel]
            lo = (xb - eps).clamp(*clip)
            hi = (xb + eps).clamp(*clip)
            with torch.no_grad() if method != "alpha-crown" else torch.enable_grad():
                lb, _ = compute(g, lo, hi, method=method)
            out[sel] = (lb.detach() > 0).all(1)
            if progress is not None:
                progress(sel.numel())
    return out


def pgd_attack(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, steps: int = 20,
               restarts: int = 1, clip: tuple[float, float] = (0.0, 1.0), seed: int = 0) -> torch.Tensor:
    """Boolean (N,): still classified correctly after `restarts` signed-gradient PGD runs of `steps`
    steps on the margin loss (max_j f_j - f_y) inside the clipped ε-box. The clean input counts too."""
    gen = torch.Generator().manual_seed(seed)
    lo = (x - eps).clamp(*clip)
    hi = (x + eps).clamp(*clip)
    with torch.no_grad():
        robust = model(x).argmax(1) == y
    onehot = F.one_hot(y, model(x[:1]).shape[1]).bool()
    for r in range(restarts):
        start = torch.rand(x.shape, generator=gen) if r else torch.full_like(x, 0.5)
        xa = lo + start * (hi - lo)
        for t in range(steps):
            xa.requires_grad_(True)
            z = model(xa)
            other = z.masked_fill(onehot, float("-inf")).amax(1)
            loss = (other - z[onehot]).sum()
            (g,) = torch.autograd.grad(loss, xa)
            alpha = 2.5 * eps / steps * (1 + np.cos(np.pi * t / steps)) / 2 + eps / steps / 4
            xa = torch.minimum(torch.maximum(xa.detach() + alpha * g.sign(), lo), hi)
        with torch.no_grad():
            robust &= model(xa).argmax(1) == y
    return robust


def evaluate(model: nn.Module, x: torch.Tensor | np.ndarray, y: torch.Tensor | np.ndarray, eps: float,
             methods: Sequence[str] = ("ibp", "crown"), pgd_steps: int = 20, pgd_restarts: int = 1,
             batch_size: int = 256, graph: Graph | None = None, clip: tuple[float, float] = (0.0, 1.0),
             method_subsets: dict[str, int] | None = None, pgd_subset: int | None = None) -> dict:
    """Metrics of `model` on (x, y) at radius eps: clean_acc, pgd_acc and `<method>_cert_acc` for each
    bound method, as fractions in [0, 1], with per-metric seconds. `method_subsets` limits a method to the
    first n images (e.g. {"alpha-crown": 1000}); its result then carries `<method>_n`; `pgd_subset` does the
    same for the attack (`pgd_n`)."""
    from verify.train.certified import load_graph

    model.eval()
    x = torch.as_tensor(x, dtype=torch.float32)
    y = torch.as_tensor(y, dtype=torch.long)
    if graph is None:
        graph = load_graph(model, tuple(x.shape[1:]))
    res: dict = {"n": int(x.shape[0]), "eps": eps}
    t = time.perf_counter()
    with torch.no_grad():
        clean = torch.cat([model(x[i:i + 1024]).argmax(1) == y[i:i + 1024] for i in range(0, len(y), 1024)])
    res["clean_acc"] = float(clean.float().mean())
    res["clean_seconds"] = time.perf_counter() - t
    t = time.perf_counter()
    n_pgd = min(pgd_subset or len(y), len(y))
    pgd = torch.cat([pgd_attack(model, x[i:min(i + batch_size, n_pgd)], y[i:min(i + batch_size, n_pgd)], eps,
                                pgd_steps, pgd_restarts, clip) for i in range(0, n_pgd, batch_size)]
                    + [clean[n_pgd:]])  # beyond the attacked subset only the clean prediction is known
    res["pgd_acc"] = float(pgd[:n_pgd].float().mean())
    if n_pgd != len(y):
        res["pgd_n"] = n_pgd
    res["pgd_seconds"] = time.perf_counter() - t
    for m in methods:
        n = min((method_subsets or {}).get(m, len(y)), len(y))
        t = time.perf_counter()
        # only images that are correct and survive PGD can be certified: skip the others (sound shortcut)
        cand = (clean & pgd)[:n]
        cert = torch.zeros(n, dtype=torch.bool)
        if bool(cand.any()):
            ci = cand.nonzero().flatten()
            cert[ci] = certified_mask(graph, x[:n][ci], y[:n][ci], eps, m, batch_size=batch_size, clip=clip)
        key = m.replace("-", "_")
        res[f"{key}_cert_acc"] = float(cert.float().mean())
        res[f"{key}_seconds"] = time.perf_counter() - t
        if n != len(y):
            res[f"{key}_n"] = int(n)
    return res


def check_mask(graph: Graph, x: torch.Tensor, y: torch.Tensor, eps: float, timeout: float = 30.0,
               n_classes: int | None = None) -> list[str]:
    """Verdicts of the project's complete verifier (`verify.api.check`: falsification, bounds, branch and
    bound) on the robustness spec of each image, as `verify spec robustness` would write it."""
    import tempfile
    from pathlib import Path

    from verify.api import check
    from verify.spec.robustness import robustness_spec
    from verify.spec.vnnlib import parse_vnnlib

    K = int(n_classes or graph.output_size)
    verdicts = []
    with tempfile.TemporaryDirectory() as d:
        for i in range(x.shape[0]):
            p = Path(d) / f"img{i}.vnnlib"
            p.write_text(robustness_spec(np.asarray(x[i]), int(y[i]), eps, K))
            verdicts.append(check(graph, parse_vnnlib(p), timeout=timeout).verdict)
    return verdicts


def cascade(model: nn.Module, graph: Graph, x: torch.Tensor, y: torch.Tensor, eps: float,
            methods: Sequence[str] = ("ibp", "crown", "alpha-crown"), check_timeout: float = 0.0,
            pgd_steps: int = 20, clip: tuple[float, float] = (0.0, 1.0)) -> dict:
    """Certify each image with the cheapest method that succeeds: the methods in order, each only on the
    images no earlier one certified, then (check_timeout > 0) the complete verifier `verify.api.check` on
    the rest. Images misclassified or broken by PGD are never attempted. Returns cumulative certified
    fractions `after_<method>` (and `after_check`), PGD accuracy and the seconds of every stage."""
    x = torch.as_tensor(x, dtype=torch.float32)
    y = torch.as_tensor(y, dtype=torch.long)
    n = len(y)
    t = time.perf_counter()
    with torch.no_grad():
        clean = model(x).argmax(1) == y
    robust = clean & pgd_attack(model, x, y, eps, pgd_steps, clip=clip)
    out: dict = {"n": n, "clean_acc": float(clean.float().mean()), "pgd_acc": float(robust.float().mean()),
                 "pgd_seconds": time.perf_counter() - t}
    cert = torch.zeros(n, dtype=torch.bool)
    for m in methods:
        t = time.perf_counter()
        todo = (robust & ~cert).nonzero().flatten()
        if todo.numel():
            cert[todo] = certified_mask(graph, x[todo], y[todo], eps, m, clip=clip)
        key = m.replace("-", "_")
        out[f"after_{key}"] = float(cert.float().mean())
        out[f"{key}_attempted"] = int(todo.numel())
        out[f"{key}_seconds"] = time.perf_counter() - t
    if check_timeout > 0:
        t = time.perf_counter()
        todo = (robust & ~cert).nonzero().flatten()
        verdicts = check_mask(graph, x[todo], y[todo], eps, check_timeout) if todo.numel() else []
        for i, v in zip(todo.tolist(), verdicts):
            cert[i] = v == "unsat"
        out["after_check"] = float(cert.float().mean())
        out["check_verdicts"] = {v: verdicts.count(v) for v in sorted(set(verdicts))}
        out["check_seconds"] = time.perf_counter() - t
    return out

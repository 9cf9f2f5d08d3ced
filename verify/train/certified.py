"""Certified training: IBP (Gowal et al. 2018; Shi et al. 2021), CROWN-IBP (Zhang et al. 2020) and SABR
(Müller et al. 2023), with a smooth per-batch ε schedule.

The bounds come from the project's bound core: the model is imported once into the graph IR with
`verify.importers.torch.load_torch`, whose constants are the module's own Parameters, so bounds computed
on the Graph are differentiable w.r.t. the weights and follow every optimiser step.

* IBP: the interval rules of `verify.bounds.ops.RULES` (through `verify.bounds.interval.node_ibp`) up to
  the input of the last linear layer; that last layer is fused with the margin matrix C (rows
  e_y - e_j), so the margins are bounded through the single affine map C·W ("elision"), which is
  tighter than bounding the logits first.
* CROWN-IBP: `verify.bounds.compute(..., method="crown-ibp", C=C)` (IBP intermediate bounds, CROWN at the
  output), mixed with the IBP bound as β·CROWN-IBP + (1-β)·IBP, β falling from 1 to `crown_beta_end` over
  the ε ramp (Zhang et al. 2020: CROWN-IBP stabilises the start, IBP gives the final IBP-certifiable model).
* SABR: IBP through a small box of radius λ·ε placed around a PGD point inside the ε-box.

The robust loss is the cross-entropy of the vector (0, -lb_1, ..., -lb_{K-1}) with target 0, where lb_j are
lower bounds of the margins; the training loss is κ·clean + (1-κ)·robust with κ falling over the ramp.
IBP initialisation and the warm-up regulariser (bound-tightness and ReLU-balance terms) follow Shi et al.
(2021). Models with BatchNorm normalise the bound computation with the clean batch's statistics.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from verify.bounds import compute
from verify.bounds.interval import node_ibp
from verify.errors import InputError
from verify.graph.ir import Graph

METHODS = ("ibp", "crown-ibp", "sabr", "standard")
# warm-up + ramp end by this fraction of the run at the latest (shorter runs shrink them proportionally)
RAMP_END_MAX = 0.6


# ------------------------------------------------------------------------------------------ ε schedule
@dataclass
class EpsSchedule:
    """ε per training step: 0 for `warmup_steps`, then a smooth ramp to `eps` over `ramp_steps`, then flat.

    The ramp (Shi et al. 2021's "smoothed" schedule) grows polynomially, ε ∝ t^β, up to the fraction `mid`
    of the ramp and linearly afterwards; the two pieces meet with equal value and slope."""

    eps: float
    warmup_steps: int
    ramp_steps: int
    mid: float = 0.25
    beta: float = 4.0

    def progress(self, step: int) -> float:
        """Fraction of the ramp done at `step`, in [0, 1]."""
        if step < self.warmup_steps:
            return 0.0
        if self.ramp_steps <= 0:
            return 1.0
        return min(1.0, (step - self.warmup_steps) / self.ramp_steps)

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return 0.0
        p = self.progress(step)
        m, b = self.mid, self.beta
        a = m / (b * (1 - m) + m)  # value fraction at p = mid that makes the slopes match
        if p < m:
            return self.eps * a * (p / m) ** b
        return self.eps * (1 - (1 - a) * (1 - p) / (1 - m))


# --------------------------------------------------------------------------------------------- config
@dataclass
class TrainConfig:
    """Hyper-parameters of `train`. Epoch counts are converted to steps with the number of batches."""

    method: str = "ibp"
    eps: float = 0.1                 # target ε (the test radius)
    eps_train: float | None = None   # ε trained for (default: eps)
    epochs: int = 20
    batch_size: int = 128
    lr: float = 5e-4
    lr_milestones: tuple[float, ...] = (0.7, 0.85)   # fractions of the run where lr *= lr_decay
    lr_decay: float = 0.2
    weight_decay: float = 0.0
    warmup_epochs: float = 1.0        # ε = 0 (standard training)
    ramp_epochs: float = 8.0          # smooth ε ramp
    kappa_start: float = 1.0          # clean-loss weight at the start of the ramp
    kappa_end: float = 0.0            # ... and from its end on
    ibp_init: bool = True             # Shi et al. 2021 initialisation
    reg_weight: float = 0.5           # warm-up regulariser weight (scaled by 1 - ε/ε_train); 0 disables
    reg_tol: float = 0.5
    grad_clip: float = 10.0
    sabr_lambda: float = 0.4          # SABR small-box radius factor
    attack_steps: int = 8             # PGD steps inside training (SABR)
    crown_beta_end: float = 0.0       # CROWN-IBP mix: lb = β·CROWN-IBP + (1-β)·IBP, β from 1 to this
    clip_min: float = 0.0             # input domain
    clip_max: float = 1.0
    seed: int = 0
    tightness_samples: int = 256      # training images for the per-epoch tightness metric (0: off)

    def validate(self) -> None:
        if self.method not in METHODS:
            raise InputError(f"unknown training method {self.method!r}; choose from {', '.join(METHODS)}")
        if not self.eps >= 0 or (self.eps_train is not None and not self.eps_train >= 0):
            raise InputError(f"eps must be >= 0, got {self.eps}")
        if self.epochs < 1 or self.batch_size < 1:
            raise InputError("epochs and batch size must be positive")
        if not 0 < self.sabr_lambda <= 1:
            raise InputError(f"SABR lambda must be in (0, 1], got {self.sabr_lambda}")


@dataclass
class EpochLog:
    """What one epoch did: ε at its end, mean loss, training accuracies (clean and certified by the
    training bound at the current ε), tightness on a fixed training subset, wall time."""

    epoch: int
    eps: float
    lr: float
    loss: float
    clean_acc: float
    robust_acc: float
    tightness: float | None
    seconds: float


@dataclass
class TrainResult:
    model: nn.Module
    graph: Graph
    history: list[EpochLog] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return {"history": [asdict(h) for h in self.history], "seconds": self.seconds}


# ------------------------------------------------------------------------------------ margins, losses
def margin_matrix(labels: torch.Tensor, n_classes: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """C of shape (B, K-1, K) with rows e_y - e_j for every j != y: C·logits > 0 iff y wins."""
    B = labels.shape[0]
    eye = torch.eye(n_classes, dtype=dtype, device=labels.device)
    C = eye[labels].unsqueeze(1) - eye.unsqueeze(0)                    # (B, K, K); row y is zero
    keep = torch.arange(n_classes, device=labels.device).unsqueeze(0) != labels.unsqueeze(1)
    return C[keep].reshape(B, n_classes - 1, n_classes)


def robust_ce(margin_lb: torch.Tensor) -> torch.Tensor:
    """Cross-entropy upper bound from margin lower bounds (B, K-1): CE of (0, -lb) with target 0."""
    z = torch.cat([torch.zeros_like(margin_lb[:, :1]), -margin_lb], dim=1)
    return F.cross_entropy(z, torch.zeros(z.shape[0], dtype=torch.long, device=z.device))


def ibp_margins(graph: Graph, lower: torch.Tensor, upper: torch.Tensor, C: torch.Tensor,
                keep_bounds: bool = False) -> tuple[torch.Tensor, dict]:
    """IBP lower bounds of C·y (B, S) with the last linear layer fused with C (elision).

    Every node but the last goes through the bound core's interval rules; when the output node is a
    `linear` layer, the margins are bounded through W' = C·W, b' = C·b directly. Returns the bounds and,
    when `keep_bounds`, the interval bounds of every value (for the regulariser)."""
    B = lower.shape[0]
    lower = lower.reshape(B, *graph.input_shape)
    upper = upper.reshape(B, *graph.input_shape)
    bounds = {graph.input_name: (lower, upper)}
    last = graph.nodes[-1]
    elide = last.name == graph.output and last.op == "linear" and len(graph.output_shape) == 1
    body = graph.nodes[:-1] if elide else graph.nodes
    for node in body:
        bounds[node.name] = node_ibp(graph, node, bounds, lower.dtype, lower.device)
    if elide:
        l, u = bounds[last.inputs[0]]
        W = graph.const(last.inputs[1], lower.dtype, lower.device)
        Cb = C if C.dim() == 3 else C.unsqueeze(0).expand(B, -1, -1)
        We = torch.matmul(Cb, W)                                           # (B, S, n_in)
        c, r = (u + l) / 2, (u - l) / 2
        lb = torch.einsum("bsi,bi->bs", We, c) - torch.einsum("bsi,bi->bs", We.abs(), r)
        if len(last.inputs) > 2:
            lb = lb + torch.einsum("bsk,k->bs", Cb, graph.const(last.inputs[2], lower.dtype, lower.device))
    else:
        Cb = C if C.dim() == 3 else C.unsqueeze(0).expand(B, -1, -1)
        l, u = bounds[graph.output]
        l, u = l.reshape(B, -1), u.reshape(B, -1)
        lb = (Cb.clamp(min=0) * l.unsqueeze(1)).sum(-1) + (Cb.clamp(max=0) * u.unsqueeze(1)).sum(-1)
    return lb, (bounds if keep_bounds else {})


# --------------------------------------------------------------------------------- initialisation
def ibp_init_(model: nn.Module) -> None:
    """Shi et al. (2021) IBP initialisation: every Linear/Conv weight but the last layer's is drawn from
    N(0, σ²) with σ = √(2π)/fan_in, which keeps the IBP box radius roughly constant across layers."""
    layers = [m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d))]
    with torch.no_grad():
        for m in layers[:-1]:
            fan_in = m.weight[0].numel()
            m.weight.normal_(0.0, math.sqrt(2 * math.pi) / fan_in)


# ------------------------------------------------------------------------------------ regulariser
def warmup_regularizer(graph: Graph, bounds: dict, tol: float = 0.5) -> torch.Tensor:
    """Shi et al. (2021)'s warm-up regulariser from the IBP bounds of every ReLU's input.

    Bound tightness: penalise layers whose mean box radius grew beyond the input's (ReLU(τ - r_0/r_i)/τ).
    ReLU balance: penalise an imbalance between active and inactive neurons, in the mean and the spread of
    their box centres (ReLU(τ - min(ρ, 1/ρ))/τ for each ratio ρ). Averaged over the ReLU layers."""
    lo0, hi0 = bounds[graph.input_name]
    r0 = ((hi0 - lo0) / 2).mean()
    total = lo0.new_zeros(())
    count = 0
    for node in graph.nodes:
        if node.op not in ("relu", "leakyrelu") or node.inputs[0] not in bounds:
            continue
        l, u = bounds[node.inputs[0]]
        c, r = (u + l) / 2, (u - l) / 2
        total = total + F.relu(tol - r0 / r.mean().clamp(min=1e-12)) / tol
        act, inact = (l > 0).to(c.dtype), (u < 0).to(c.dtype)
        mean_act = (c * act).mean()
        mean_inact = (c * inact).mean()
        dev = (c - c.mean()) ** 2
        ratios = [mean_act / (-mean_inact), (dev * act).sum() / (dev * inact).sum()]
        for rho in ratios:
            term = F.relu(tol - torch.minimum(rho, 1 / rho.clamp(min=1e-12))) / tol
            if torch.isfinite(term):
                total = total + term
        count += 1
    return total / max(count, 1)


# -------------------------------------------------------------------------------------- BatchNorm
class _BatchStats:
    """Normalise bound computations with the clean batch's BatchNorm statistics.

    A forward hook records each BatchNorm's batch mean and standard deviation during the clean forward
    pass (in training mode); `swap()` temporarily puts them in place of the running statistics the graph
    reads (the importer stores per-channel views of `running_mean` and the `running_std` constant)."""

    def __init__(self, model: nn.Module, graph: Graph):
        self.slots: list[tuple[nn.Module, str, str]] = []
        self.stats: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self.hooks = []
        names = {id(m): n for n, m in model.named_modules()}
        bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        for m in bns:
            prefix = names[id(m)]
            mean_key = next((k for k in graph.constants if k in (f"{prefix}.running_mean", f"{prefix}.running_mean.view")), None)
            std_key = next((k for k in graph.constants if k in (f"{prefix}.running_std", f"{prefix}.running_std.view")), None)
            if mean_key is None or std_key is None:
                raise InputError(f"certified training: BatchNorm {prefix!r} was folded or not found in the graph; "
                                 "import the model in training mode")
            self.slots.append((m, mean_key, std_key))
            self.hooks.append(m.register_forward_hook(self._record))

    def _record(self, m, inputs, output) -> None:
        if not m.training:
            return
        x = inputs[0]
        dims = [d for d in range(x.dim()) if d != 1]
        mean = x.mean(dim=dims)
        var = x.var(dim=dims, unbiased=False)
        self.stats[id(m)] = (mean, torch.sqrt(var + m.eps))

    def swap(self, graph: Graph) -> Callable[[], None]:
        """Put the recorded batch statistics into the graph; returns the function that restores it."""
        saved = {}
        for m, mk, sk in self.slots:
            if id(m) not in self.stats:
                continue
            mean, std = self.stats[id(m)]
            saved[mk], saved[sk] = graph.constants[mk], graph.constants[sk]
            graph.constants[mk] = mean.reshape(saved[mk].shape)
            graph.constants[sk] = std.reshape(saved[sk].shape)

        def restore() -> None:
            graph.constants.update(saved)
        return restore

    def remove(self) -> None:
        for h in self.hooks:
            h.remove()


# -------------------------------------------------------------------------------------------- SABR
def pgd_in_box(model: nn.Module, x: torch.Tensor, y: torch.Tensor, lower: torch.Tensor, upper: torch.Tensor,
               steps: int, gen: torch.Generator | None = None) -> torch.Tensor:
    """Signed-gradient PGD on the cross-entropy inside [lower, upper], from a random start."""
    width = upper - lower
    start = torch.rand(x.shape, generator=gen, dtype=x.dtype) if gen is not None else torch.rand_like(x)
    xa = (lower + start * width).detach()
    step = 2.5 * width / 2 / max(steps, 1)
    for _ in range(steps):
        xa.requires_grad_(True)
        loss = F.cross_entropy(model(xa), y)
        (g,) = torch.autograd.grad(loss, xa)
        xa = torch.minimum(torch.maximum(xa.detach() + step * g.sign(), lower), upper)
    return xa.detach()


def sabr_box(xa: torch.Tensor, lower: torch.Tensor, upper: torch.Tensor, lam: float, eps: float):
    """The box of radius λ·ε (at most half the ε-box's width per input) around xa, shifted to lie inside
    [lower, upper]."""
    r = torch.minimum(torch.full_like(xa, lam * eps), (upper - lower) / 2)
    c = torch.minimum(torch.maximum(xa, lower + r), upper - r)
    return c - r, c + r


# ------------------------------------------------------------------------------------------- training
def _batches(n: int, batch_size: int, gen: torch.Generator) -> Iterator[torch.Tensor]:
    perm = torch.randperm(n, generator=gen)
    for i in range(0, n, batch_size):
        yield perm[i:i + batch_size]


def load_graph(model: nn.Module, input_shape: tuple[int, ...]) -> Graph:
    """The model as a Graph whose constants are the model's Parameters (differentiable bounds)."""
    from verify.importers.torch import load_torch

    return load_torch(model, tuple(input_shape), fold_bn=False)


def _inference_graph(model: nn.Module, graph: Graph, bn: _BatchStats, input_shape: tuple[int, ...]) -> Graph:
    """The graph of the model's inference function (eval mode): the training graph itself, or for
    BatchNorm models a fresh import, since the importer's BatchNorm scale is a snapshot of running_var."""
    if not bn.slots:
        return graph
    from verify.importers.torch import load_torch

    was = model.training
    model.eval()
    g = load_torch(model, tuple(input_shape), fold_bn=True)
    model.train(was)
    return g


def training_bounds(cfg: TrainConfig, model: nn.Module, graph: Graph, x: torch.Tensor, y: torch.Tensor,
                    C: torch.Tensor, eps: float, ramp: float, gen: torch.Generator | None = None,
                    keep_bounds: bool = False) -> tuple[torch.Tensor, dict]:
    """Margin lower bounds (B, K-1) the chosen method trains on, at radius eps; ramp = ramp progress."""
    lower = (x - eps).clamp(cfg.clip_min, cfg.clip_max)
    upper = (x + eps).clamp(cfg.clip_min, cfg.clip_max)
    if cfg.method == "sabr":
        was = model.training
        model.eval()
        xa = pgd_in_box(model, x, y, lower, upper, cfg.attack_steps, gen)
        model.train(was)
        lower, upper = sabr_box(xa, lower, upper, cfg.sabr_lambda, eps)
    lb, bounds = ibp_margins(graph, lower, upper, C, keep_bounds=keep_bounds)
    if cfg.method == "crown-ibp":
        beta = 1.0 - ramp * (1.0 - cfg.crown_beta_end)
        if beta > 0.0:
            lb_crown = compute(graph, lower, upper, method="crown-ibp", C=C)[0]
            lb = beta * lb_crown + (1 - beta) * lb
    return lb, bounds


def train(model: nn.Module, x_train: torch.Tensor | np.ndarray, y_train: torch.Tensor | np.ndarray,
          cfg: TrainConfig, n_classes: int | None = None, progress: Callable[[int, int, dict], None] | None = None,
          on_epoch: Callable[[EpochLog], None] | None = None) -> TrainResult:
    """Train `model` in place with cfg.method on (x_train, y_train); returns the model, its Graph and
    one `EpochLog` per epoch. `progress(step_in_epoch, steps_per_epoch, info)` is called after each batch."""
    from verify.train.tightness import tightness

    cfg.validate()
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    x_train = torch.as_tensor(x_train, dtype=torch.float32)
    y_train = torch.as_tensor(y_train, dtype=torch.long)
    n = x_train.shape[0]
    K = int(n_classes or int(y_train.max()) + 1)
    input_shape = tuple(x_train.shape[1:])
    if cfg.ibp_init and cfg.method != "standard":
        ibp_init_(model)
    model.train()
    graph = load_graph(model, input_shape)
    bn = _BatchStats(model, graph)
    steps_per_epoch = math.ceil(n / cfg.batch_size)
    eps_train = cfg.eps if cfg.eps_train is None else cfg.eps_train
    warm, ramp_ep = cfg.warmup_epochs, cfg.ramp_epochs
    if warm + ramp_ep > RAMP_END_MAX * cfg.epochs:  # short runs: shrink the schedule to leave time at full ε
        f = RAMP_END_MAX * cfg.epochs / (warm + ramp_ep)
        warm, ramp_ep = warm * f, ramp_ep * f
    sched = EpsSchedule(eps_train if cfg.method != "standard" else 0.0,
                        round(warm * steps_per_epoch), round(ramp_ep * steps_per_epoch))
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    total = cfg.epochs * steps_per_epoch
    milestones = sorted(round(f * total) for f in cfg.lr_milestones)
    tsel = torch.randperm(n, generator=torch.Generator().manual_seed(cfg.seed + 1))[:cfg.tightness_samples]
    result = TrainResult(model, graph)
    t_start = time.perf_counter()
    step = 0
    try:
        for epoch in range(cfg.epochs):
            t0 = time.perf_counter()
            sums = {"loss": 0.0, "clean": 0, "robust": 0, "n": 0}
            eps = 0.0
            for k, idx in enumerate(_batches(n, cfg.batch_size, gen)):
                lr = cfg.lr * cfg.lr_decay ** sum(step >= m for m in milestones)
                for g in opt.param_groups:
                    g["lr"] = lr
                x, y = x_train[idx], y_train[idx]
                eps = sched(step)
                ramp = sched.progress(step)
                logits = model(x)
                clean = F.cross_entropy(logits, y)
                loss = clean
                robust_ok = torch.zeros((), dtype=torch.long)
                if eps > 0:
                    C = margin_matrix(y, K)
                    restore = bn.swap(graph)
                    try:
                        reg_on = cfg.reg_weight > 0 and eps < eps_train
                        lb, bounds = training_bounds(cfg, model, graph, x, y, C, eps, ramp, gen, keep_bounds=reg_on)
                        kappa = cfg.kappa_start + ramp * (cfg.kappa_end - cfg.kappa_start)
                        loss = kappa * clean + (1 - kappa) * robust_ce(lb)
                        if reg_on:
                            loss = loss + cfg.reg_weight * (1 - eps / eps_train) * warmup_regularizer(graph, bounds, cfg.reg_tol)
                    finally:
                        restore()
                    robust_ok = (lb.detach() > 0).all(1).sum()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if cfg.grad_clip:
                    nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                opt.step()
                step += 1
                b = y.shape[0]
                sums["loss"] += float(loss.detach()) * b
                sums["clean"] += int((logits.detach().argmax(1) == y).sum())
                sums["robust"] += int(robust_ok)
                sums["n"] += b
                if progress is not None:
                    progress(k + 1, steps_per_epoch, {"eps": eps, "loss": sums["loss"] / sums["n"],
                                                      "acc": sums["clean"] / sums["n"]})
            tight = None
            if cfg.tightness_samples > 0:
                model.eval()
                tight = float(tightness(_inference_graph(model, graph, bn, input_shape), x_train[tsel],
                                        y_train[tsel], n_classes=K))
                model.train()
            log = EpochLog(epoch + 1, eps, lr, sums["loss"] / sums["n"], sums["clean"] / sums["n"],
                           sums["robust"] / sums["n"], tight, time.perf_counter() - t0)
            result.history.append(log)
            if on_epoch is not None:
                on_epoch(log)
    finally:
        bn.remove()
    model.eval()
    result.graph = _inference_graph(model, graph, bn, input_shape)
    result.seconds = time.perf_counter() - t_start
    return result

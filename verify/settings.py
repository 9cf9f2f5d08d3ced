"""Run settings for `verify check` / `verify bench` and the library calls behind them.

One small dataclass, passed explicitly to whoever needs it (attack, bound engine, branch and bound); there
is no global configuration object. Every CLI option of `check` maps to one field here, and
`Settings.replace(**overrides)` gives a modified copy (unknown names raise, so a typo is not silently
ignored).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

METHODS = ("ibp", "crown", "alpha-crown")
DTYPES = ("float32", "float64")


@dataclass
class Settings:
    """Knobs for one verification run. Defaults suit a CPU with a few cores."""

    # bound method used by the bound engine / branch and bound
    method: str = "alpha-crown"
    # skip branch and bound: falsification and incomplete bounds decide, else `unknown`
    no_bab: bool = False
    # wall-clock limit for one instance, seconds (model load, spec parse, attack, bounds, search)
    timeout: float = 60.0
    # seed of every random choice (attack restarts, sampling); same seed -> same answer
    seed: int = 0
    # share of the timeout given to falsification before bounds/branch and bound start (small: the prover
    # searches for counterexamples too, and falsification resumes if the prover gives up with time left)
    attack_share: float = 0.01
    # ... but at least this many seconds when the timeout allows (never more than half the timeout)
    attack_min_s: float = 1.0
    # ... and at least this many for inputs with more than `input_split_max_dim` dimensions: branch and bound
    # splits ReLUs there and meets counterexamples only by chance, while low-dimensional input splitting
    # evaluates domain centres and finds them itself
    attack_min_s_high_dim: float = 3.0
    input_split_max_dim: int = 16
    # PGD restarts per disjunct per round, and steps per round
    attack_restarts: int = 256
    attack_steps: int = 30
    # torch threads (None: honour OMP_NUM_THREADS, else one thread; see verify.cli.configure_threads)
    threads: int | None = None
    # floating type of the hot path (attack gradients, bounds); counterexamples are always re-checked in float64
    dtype: str = "float32"
    # log progress / details to stderr
    verbose: bool = False
    progress: bool = False
    # branch and bound budget: maximum number of domains alive, and domains bounded per batch
    max_domains: int = 200_000
    batch_size: int = 1024
    # optimisation iterations for alpha (and beta) parameters, and their learning rates: `lr` for α,
    # `bab_lr` for β and the ReLU slopes inside the activation-split search, where each domain gets few
    # steps (measured on MNIST 256x4: 0.3 settles in 5 s what 0.1 leaves open at 30 s; sigmoid slopes
    # need the smaller step)
    alpha_iters: int = 20
    beta_iters: int = 20
    lr: float = 0.1
    bab_lr: float = 0.3
    # branch and bound: "auto" picks input splitting for inputs of <= input_split_max_dim dimensions, else
    # activation splitting ("input" / "activation" force one); `branching` scores non-ReLU neurons by
    # relaxation gap ("gap", BBPS-style) or interval width ("width", BaBSR-style); ReLUs always use BaBSR
    split: str = "auto"
    branching: str = "gap"
    # activation splitting: each domain's split is chosen among its `fsb` best heuristic candidates by
    # filtered smart branching (bounding both children of each); 1 takes the heuristic's first choice
    fsb: int = 1
    # memory (MiB) for keeping each open domain's optimised α and β, so its children start from them;
    # past the cap (or at 0) children start from the root's α and zero β
    warm_start_mb: int = 1024
    # activation splitting: recompute each child's intermediate bounds under its split constraints (CROWN
    # with the root's optimised per-neuron α, intersected with its parent's bounds, which it inherits) for
    # the layers after its newest split. None (default): on when every split-able neuron is a ReLU input
    # (measured on the MNIST and ERAN ReLU nets), off otherwise
    refresh_intermediate: bool | None = None
    # with refresh: re-bound only each term's `refresh_top` most important unstable neurons per value (by the
    # branching score at the search's start); the others keep their parent's bounds. 0 (default): all
    refresh_top: int = 0
    # with refresh: a domain whose bound is below -early_split_below branches on the earliest layer that
    # has an unstable neuron (its split tightens every later layer); None: always by score
    early_split_below: float | None = 1.5
    # activation splitting: each domain holds one open term of the disjunction and is bounded on that
    # term's rows only (the terms' domains share batches), instead of every domain holding every open term
    per_term: bool = True
    # activation splitting: children left open with a bound in (-polish_below, 0] get `polish_iters` more α/β
    # steps of size `polish_lr` on their own (their intermediate bounds fixed, so each step is cheap); a child
    # proven that way is never split, the others keep the regular steps' α/β for their children. 0 steps
    # (default): off. Measured with 20 (docs/bab.md): MNIST 256x4 prop_4_0.05 30 -> 19 s, prop_9_0.03 147 -> 157 s
    polish_below: float = 0.4
    polish_iters: int = 0
    polish_lr: float = 0.05

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {', '.join(METHODS)}, not {self.method!r}")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, not {self.dtype!r}")
        if not self.timeout > 0:
            raise ValueError(f"timeout must be positive, not {self.timeout!r}")
        if not 0.0 <= self.attack_share <= 1.0:
            raise ValueError(f"attack_share must lie in [0, 1], not {self.attack_share!r}")
        if self.split not in ("auto", "input", "activation"):
            raise ValueError(f"split must be auto, input or activation, not {self.split!r}")
        if self.fsb < 1:
            raise ValueError(f"fsb must be >= 1, not {self.fsb!r}")
        if self.polish_iters < 0:
            raise ValueError(f"polish steps must be >= 0, not {self.polish_iters!r}")
        if self.branching not in ("gap", "width"):
            raise ValueError(f"branching must be gap or width, not {self.branching!r}")

    def replace(self, **overrides) -> "Settings":
        """A copy with some fields changed; unknown field names raise TypeError."""
        names = {f.name for f in dataclasses.fields(self)}
        bad = sorted(set(overrides) - names)
        if bad:
            raise TypeError(f"unknown setting(s): {', '.join(bad)}")
        return dataclasses.replace(self, **overrides)

    @property
    def torch_dtype(self):
        import torch

        return torch.float64 if self.dtype == "float64" else torch.float32

    def attack_budget(self, timeout: float | None = None, n_inputs: int | None = None) -> float:
        """Seconds of falsification for an instance with this timeout (and input dimension).

        `attack_share * timeout`, raised to `attack_min_s` (`attack_min_s_high_dim` for more than
        `input_split_max_dim` inputs) when that is small, but never more than half the timeout unless the
        share itself asks for more (share 1.0 = falsify for the whole timeout; share 0 = no falsification)."""
        t = self.timeout if timeout is None else float(timeout)
        if self.attack_share <= 0:
            return 0.0  # falsification switched off
        share = self.attack_share * t
        floor = self.attack_min_s
        if n_inputs is not None and n_inputs > self.input_split_max_dim:
            floor = max(floor, self.attack_min_s_high_dim)
        if share >= floor:
            return share
        return max(share, min(floor, 0.5 * t))

"""Falsification driver: cheap points first, then rounds of PGD with random restarts, until a verified
violation is found or the time budget is spent.

Order of work (every candidate goes through `verify.attack.recheck`, float64):
1. the centre of every input box, then its corners (all of them for boxes with <= 12 free dimensions);
2. rounds, each: a batch of uniform samples in every box, then PGD from restarts aimed at each disjunct —
   half of them fresh uniform points, 3/8 uniform points with some coordinates snapped onto the box's
   faces, 1/8 the best point found so far, jittered; the step size cycles over STEP_SIZES.
The generator is seeded, so a run with the same seed and enough time gives the same answer.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from verify.attack.objective import PackedSpec, all_margins, pack
from verify.attack.pgd import pgd
from verify.attack.recheck import Counterexample, verify_candidates
from verify.attack.sampling import centres, corners, uniform
from verify.graph.ir import Graph
from verify.spec.spec import Spec

# upper limit on rows evaluated in one batched forward pass, and on rows x input size of one PGD batch
MAX_BATCH = 4096
MAX_ELEMENTS = 2 ** 18
# initial PGD step (fraction of the box width per dimension), cycled over rounds: small steps keep restarts in
# their own basin (many small basins are searched: ACAS Xu), large ones jump between faces and corners of the
# box (high-dimensional L-inf boxes: MNIST)
STEP_SIZES = (0.03, 1.0, 0.01, 0.25)
# probability that a coordinate of a face start is put on a bound of the box
FACE_SNAP = 0.3


@dataclass
class AttackResult:
    """What falsification found: a verified counterexample or None, and how hard it looked."""

    counterexample: Counterexample | None
    evaluations: int = 0
    rounds: int = 0
    best_margin: float = float("inf")
    time_s: float = 0.0

    @property
    def found(self) -> bool:
        return self.counterexample is not None


class _Search:
    """State shared by the phases: the graph, packed spec, generator, best points, stop flag."""

    def __init__(self, graph: Graph, spec: Spec, dtype: torch.dtype, seed: int, deadline: float):
        self.graph, self.spec, self.dtype, self.deadline = graph, spec, dtype, deadline
        self.packed: PackedSpec = pack(spec, dtype)
        self.gen = torch.Generator().manual_seed(int(seed))
        self.cex: Counterexample | None = None
        self.evaluations = 0
        J = self.packed.n_disjuncts
        self.best_x = 0.5 * (self.packed.lower + self.packed.upper)  # (J, n_in) best point per disjunct
        self.best_m = torch.full((J,), float("inf"), dtype=dtype)

    def out_of_time(self) -> bool:
        return time.perf_counter() > self.deadline

    def recheck(self, x: torch.Tensor, disjunct: torch.Tensor) -> bool:
        """float64 re-check of candidate rows; remembers the first verified violation."""
        if self.cex is None:
            self.cex = verify_candidates(self.graph, self.spec, x, disjunct)
        return self.cex is not None

    def evaluate(self, x: torch.Tensor, region: torch.Tensor) -> bool:
        """Score points drawn in regions against every disjunct of their region; re-check promising ones."""
        for s in range(0, x.shape[0], MAX_BATCH):
            xb, rb = x[s:s + MAX_BATCH], region[s:s + MAX_BATCH]
            with torch.no_grad():
                y = self.graph.forward_flat(xb.to(self.dtype))
            self.evaluations += xb.shape[0]
            m = all_margins(self.packed, y, rb)          # (n, J), +inf outside the point's region
            mj, j = m.min(dim=1)
            # best point per disjunct
            col_min, col_arg = m.min(dim=0)
            better = col_min < self.best_m
            self.best_m = torch.where(better, col_min, self.best_m)
            self.best_x[better] = xb[col_arg[better]].to(self.dtype)
            cand = torch.nonzero(mj <= 1e-5 * (1.0 + y.abs().amax(dim=1))).flatten()
            if cand.numel():
                cand = cand[torch.argsort(mj[cand])][:64]
                if self.recheck(xb[cand], j[cand]):
                    return True
            if self.out_of_time():
                return False
        return False


def falsify(graph: Graph, spec: Spec, time_budget: float, seed: int = 0, dtype: torch.dtype = torch.float32,
            restarts: int = 256, steps: int = 30, samples: int = 1024) -> AttackResult:
    """Search for an input in the spec's region whose output meets the unsafe condition.

    Stops at the first float64-verified violation or after `time_budget` seconds. `restarts` is the number
    of PGD restarts per disjunct per round (capped so one batch stays under MAX_BATCH rows), `steps` the
    PGD steps per round, `samples` the uniform samples per input box per round."""
    t0 = time.perf_counter()
    s = _Search(graph, spec, dtype, seed, t0 + max(0.0, float(time_budget)))
    P = s.packed
    J = P.n_disjuncts
    rounds = 0

    def result() -> AttackResult:
        return AttackResult(s.cex, s.evaluations, rounds, float(s.best_m.min()) if J else float("inf"),
                            time.perf_counter() - t0)

    if time_budget <= 0:  # no falsification asked for
        return result()
    n_in = max(1, P.lower.shape[1])
    per = max(2, min(int(restarts), MAX_BATCH // J, MAX_ELEMENTS // (J * n_in)))
    n_samples = max(1, min(int(samples), MAX_BATCH // P.n_regions, MAX_ELEMENTS // (P.n_regions * n_in)))
    x, r = centres(P)
    if s.evaluate(x.to(dtype), r):
        return result()
    x, r = corners(P, n_samples, s.gen)
    if s.evaluate(x.to(dtype), r):
        return result()
    while not s.out_of_time():
        rounds += 1
        # uniform samples in every box
        region = torch.arange(P.n_regions).repeat_interleave(n_samples)
        if s.evaluate(uniform(P, region, s.gen), region):
            break
        # PGD restarts: fresh uniform points, some snapped onto faces of the box (violations often sit on
        # the boundary), and a few jittered around the best point of the disjunct so far
        disjunct = torch.arange(J).repeat_interleave(per)
        x0 = uniform(P, P.region[disjunct], s.gen)
        lo, hi = P.lower[disjunct], P.upper[disjunct]
        k = torch.arange(J * per) % per
        face = (k >= per // 2) & (k < per - per // 8)
        if bool(face.any()):
            snap = (torch.rand(x0.shape, generator=s.gen) < FACE_SNAP) & face.unsqueeze(1)
            side = torch.rand(x0.shape, generator=s.gen) < 0.5
            x0 = torch.where(snap, torch.where(side, hi, lo), x0)
        near = k >= per - per // 8
        if bool(near.any()):
            width = hi[near] - lo[near]
            noise = (torch.rand(width.shape, generator=s.gen, dtype=torch.float64).to(dtype) - 0.5) * 0.1 * width
            x0[near] = torch.minimum(torch.maximum(s.best_x[disjunct[near]] + noise, lo[near]), hi[near])
        step0 = STEP_SIZES[(rounds - 1) % len(STEP_SIZES)]
        bx, bm, stopped = pgd(graph, P, x0, disjunct, steps, s.deadline, s.recheck, step0=step0)
        s.evaluations += x0.shape[0] * steps
        # keep the best PGD point of every disjunct
        bm_j = torch.full((J,), float("inf"), dtype=dtype).scatter_reduce(0, disjunct, bm, "amin")
        for j in torch.nonzero(bm_j < s.best_m).flatten().tolist():
            rows = torch.nonzero(disjunct == j).flatten()
            k = rows[torch.argmin(bm[rows])]
            s.best_m[j] = bm[k]
            s.best_x[j] = bx[k]
        if stopped:
            break
    return result()

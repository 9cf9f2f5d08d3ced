"""The specification model: what `verify` decides.

A VNN-LIB file describes the *unsafe* set. We normalise it to disjunctive form: the property is violated
(`sat`) iff some `Disjunct` is satisfiable, i.e. there is an x with lower <= x <= upper (element-wise, over
the flattened input in VNN-LIB's X_i order) whose flattened output y satisfies every row of C·y <= d.
`unsat` (verified) means no disjunct is satisfiable.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Disjunct:
    """One conjunction: x in [lower, upper] and C @ y <= d (all rows)."""

    lower: np.ndarray  # (n_inputs,) float64
    upper: np.ndarray  # (n_inputs,) float64
    C: np.ndarray      # (m, n_outputs) float64
    d: np.ndarray      # (m,) float64

    def holds(self, x: np.ndarray, y: np.ndarray, tol: float = 0.0) -> bool:
        """True when (x, y) is a violation: x inside the box (up to tol) and C y <= d (up to tol)."""
        x = np.asarray(x, dtype=np.float64).reshape(-1)
        y = np.asarray(y, dtype=np.float64).reshape(-1)
        in_box = bool(np.all(x >= self.lower - tol) and np.all(x <= self.upper + tol))
        return in_box and bool(np.all(self.C @ y <= self.d + tol))


@dataclass
class Spec:
    """A whole property: unsafe iff any disjunct is satisfiable."""

    n_inputs: int
    n_outputs: int
    disjuncts: list[Disjunct] = field(default_factory=list)
    path: str | None = None

    def regions(self) -> list[tuple[np.ndarray, np.ndarray, list[tuple[np.ndarray, np.ndarray]]]]:
        """Group disjuncts by identical input box: [(lower, upper, [(C, d), ...]), ...], order kept."""
        out: list[tuple[np.ndarray, np.ndarray, list[tuple[np.ndarray, np.ndarray]]]] = []
        for dj in self.disjuncts:
            for lo, hi, terms in out:
                if np.array_equal(lo, dj.lower) and np.array_equal(hi, dj.upper):
                    terms.append((dj.C, dj.d))
                    break
            else:
                out.append((dj.lower, dj.upper, [(dj.C, dj.d)]))
        return out

    def violated_by(self, x: np.ndarray, y: np.ndarray, tol: float = 0.0) -> bool:
        return any(dj.holds(x, y, tol) for dj in self.disjuncts)

"""Activation patterns D_i = diag(1[X g_i >= 0]) of a two-layer ReLU network on the training data.

Patterns are stored as one boolean matrix `D` of shape (n, P), column i the diagonal of D_i.
`sample_patterns` draws them from Gaussian directions; `enumerate_patterns` lists *every* pattern of a
low-dimensional data set (the regions of the hyperplane arrangement {x_k^T g = 0}), which makes the
convex program equal to the training problem of an arbitrarily wide network.
"""
from __future__ import annotations

from itertools import combinations, product

import numpy as np

from verify.errors import InputError


def dedupe(D: np.ndarray, drop_zero: bool = True) -> np.ndarray:
    """Unique columns of a boolean pattern matrix, first occurrences kept in their original order;
    the all-zero pattern (a neuron that is never active) is dropped when `drop_zero`."""
    D = np.asarray(D, dtype=bool)
    if D.shape[1] == 0:
        return D
    packed = np.packbits(D, axis=0)
    _, first = np.unique(packed, axis=1, return_index=True)
    keep = np.sort(first)
    D = D[:, keep]
    if drop_zero:
        D = D[:, D.any(axis=0)]
    return D


def patterns_from_directions(X: np.ndarray, G: np.ndarray) -> np.ndarray:
    """D = 1[X G >= 0] for directions G of shape (d, P), deduplicated keeping first occurrences."""
    return dedupe(X @ G >= 0)


def sample_patterns(X: np.ndarray, num: int, seed: int = 0) -> np.ndarray:
    """Patterns from `default_rng(seed).standard_normal((d, num))` (d = X.shape[1], bias included)."""
    G = np.random.default_rng(seed).standard_normal((X.shape[1], int(num)))
    return patterns_from_directions(X, G)


def enumerate_patterns(X: np.ndarray, max_subsets: int = 2_000_000, tol: float = 1e-12) -> np.ndarray:
    """All activation patterns of X (n, d) for d small: every region of the central arrangement of the
    hyperplanes {g : x_k^T g = 0} has an extreme ray on the intersection of d-1 of them (for X of full
    column rank), so for each (d-1)-subset we take its null direction ±g and set the subset's own signs
    in all 2^(d-1) ways. Points that lie on such a ray by accident (degenerate data) get both signs too.
    """
    X = np.asarray(X, dtype=float)
    n, d = X.shape
    if np.linalg.matrix_rank(X) < d:
        raise InputError(f"enumerate_patterns: the data matrix has rank < d = {d}; drop redundant columns")
    if d == 1:
        return dedupe(np.stack([X[:, 0] >= 0, X[:, 0] <= 0], axis=1))
    from math import comb

    if comb(n, d - 1) > max_subsets:
        raise InputError(f"enumerate_patterns: C({n}, {d - 1}) subsets is too many; sample patterns instead")
    cols: list[np.ndarray] = []
    signs = np.array(list(product([True, False], repeat=d - 1)))  # (2^(d-1), d-1)
    scale = np.linalg.norm(X, axis=1).max()
    for S in combinations(range(n), d - 1):
        S = list(S)
        Vt = np.linalg.svd(X[S], full_matrices=True)[2]
        g = Vt[-1]
        for s in (1.0, -1.0):
            z = s * (X @ g)
            base = z >= 0
            ties = np.abs(z) <= tol * scale
            ties[S] = False
            tie_idx = np.flatnonzero(ties)
            B = np.repeat(base[None, :], len(signs), axis=0)
            B[:, S] = signs
            if tie_idx.size:  # degenerate: other points on the ray take both signs
                extra = np.array(list(product([True, False], repeat=tie_idx.size)))
                B = np.repeat(B, len(extra), axis=0)
                B[:, tie_idx] = np.tile(extra, (len(signs), 1))
            cols.append(B)
    D = np.concatenate(cols, axis=0).T
    return dedupe(D)

"""Reference data sets for convex two-layer training, built exactly as the convex-training issue states.

Every loader returns a `Dataset`: standardised training/test features *without* the bias column (the
convex program appends it, see `with_bias`), labels in {-1, +1}, and the standardisation used, so that a
trained network can be applied to new raw inputs.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from verify.errors import InputError


@dataclass
class Dataset:
    """A binary classification problem with labels in {-1, +1}."""

    name: str
    X_train: np.ndarray
    y_train: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    mean: np.ndarray | None = None  # standardisation applied to raw features (None: none)
    std: np.ndarray | None = None
    beta: float = 0.1  # the reference regularisation strength for this problem


def with_bias(X: np.ndarray) -> np.ndarray:
    """Append a column of ones (the bias feature of the convex program)."""
    return np.hstack([X, np.ones((X.shape[0], 1), dtype=X.dtype)])


def spirals(n: int = 40, noise: float = 0.02, seed: int = 0) -> Dataset:
    """Two interleaved spirals: t = linspace(0, 3π, n), label +1 for even index, -1 for odd,
    r = 0.3 + t/(3π), point r·(cos(t + π[label<0]), sin(t + π[label<0])) + noise·N(0, 1).

    All points are training points (the reference problem has no test split); the test set is the same.
    """
    t = np.linspace(0.0, 3 * np.pi, n)
    y = np.where(np.arange(n) % 2 == 0, 1.0, -1.0)
    r = 0.3 + t / (3 * np.pi)
    phase = t + np.pi * (y < 0)
    X = r[:, None] * np.stack([np.cos(phase), np.sin(phase)], axis=1)
    X = X + noise * np.random.default_rng(seed).standard_normal((n, 2))
    return Dataset("spirals", X, y, X.copy(), y.copy(), None, None, beta=0.01)


def _split_standardise(name: str, X: np.ndarray, y: np.ndarray, seed: int, beta: float) -> Dataset:
    from sklearn.model_selection import train_test_split

    Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.3, random_state=seed, stratify=y)
    mean = Xtr.mean(axis=0)
    std = Xtr.std(axis=0)  # population std (ddof = 0)
    std = np.where(std > 0, std, 1.0)
    return Dataset(name, (Xtr - mean) / std, ytr.astype(float), (Xte - mean) / std, yte.astype(float),
                   mean, std, beta=beta)


def breast_cancer(seed: int = 0) -> Dataset:
    """scikit-learn's breast cancer data, y ∈ {-1, +1}, 70/30 stratified split, standardised on train."""
    from sklearn.datasets import load_breast_cancer

    d = load_breast_cancer()
    y = np.where(d.target == 1, 1.0, -1.0)
    return _split_standardise("breast_cancer", d.data.astype(float), y, seed, beta=0.1)


def digits01(seed: int = 0) -> Dataset:
    """scikit-learn's 8x8 digits restricted to classes 0 (label -1) and 1 (label +1), pixels scaled to
    [0, 1] and *not* standardised (so that ℓ∞ radii are in pixel units)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    keep = d.target <= 1
    X = d.data[keep].astype(float) / 16.0
    y = np.where(d.target[keep] == 1, 1.0, -1.0)
    Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.3, random_state=seed, stratify=y)
    return Dataset("digits01", Xtr, ytr, Xte, yte, None, None, beta=0.1)


def from_csv(path: str | Path, seed: int = 0) -> Dataset:
    """A CSV of numeric features with the label in the last column (two distinct values, mapped to
    -1/+1 in sorted order); a non-numeric first row is taken as a header."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: no such file")
    rows: list[list[float]] = []
    with p.open() as fh:
        for lineno, line in enumerate(fh, 1):
            line = line.strip()
            if not line:
                continue
            parts = line.split(",")
            try:
                rows.append([float(v) for v in parts])
            except ValueError:
                if lineno == 1 and not rows:
                    continue  # header
                raise InputError(f"{p}:{lineno}: non-numeric value in {line[:60]!r}") from None
            if len(rows[-1]) != len(rows[0]):
                raise InputError(f"{p}:{lineno}: expected {len(rows[0])} columns, got {len(rows[-1])}")
    if len(rows) < 4 or len(rows[0]) < 2:
        raise InputError(f"{p}: need at least 4 rows and 2 columns (features..., label)")
    A = np.asarray(rows)
    labels = np.unique(A[:, -1])
    if labels.size != 2:
        raise InputError(f"{p}: the last column must hold exactly two label values, found {labels.size}")
    y = np.where(A[:, -1] == labels[1], 1.0, -1.0)
    return _split_standardise(p.stem, A[:, :-1], y, seed, beta=0.1)


def load(name: str, seed: int = 0) -> Dataset:
    """`breast_cancer`, `digits01`, `spirals` or a path to a CSV file."""
    if name == "breast_cancer":
        return breast_cancer(seed)
    if name == "digits01":
        return digits01(seed)
    if name == "spirals":
        return spirals()
    if name.endswith(".csv") or Path(name).exists():
        return from_csv(name, seed)
    raise InputError(f"unknown dataset {name!r}: use breast_cancer, digits01, spirals or a CSV file")

"""The search objective of one input region: a disjunction of conjunctions of linear output constraints.

The region is unsafe iff some term t has C_t·y <= d_t (every row). A sub-domain is verified when every
term has a row whose lower bound of (C_r·y - d_r) is > 0. All rows of all terms are stacked into one matrix
so a single bound computation covers the whole disjunction; `score` reduces row bounds to one number
per domain (> 0 means verified): min over terms of max over the term's rows.
"""
from __future__ import annotations

import itertools

import numpy as np
import torch


class Objective:
    def __init__(self, terms: list[tuple[np.ndarray, np.ndarray]], dtype: torch.dtype, device=None,
                 combine: bool = True):
        if combine:
            terms = [self._with_combinations(np.atleast_2d(c), np.atleast_1d(dd)) for c, dd in terms]
        C = np.vstack([np.asarray(c, dtype=np.float64) for c, _ in terms])
        d = np.concatenate([np.asarray(dd, dtype=np.float64).reshape(-1) for _, dd in terms])
        self.C = torch.as_tensor(C, dtype=dtype, device=device)
        self.d = torch.as_tensor(d, dtype=dtype, device=device)
        self.term = torch.as_tensor(np.concatenate([np.full(len(np.atleast_1d(dd)), i) for i, (_, dd) in enumerate(terms)]),
                                    dtype=torch.long, device=device)
        self.n_terms = len(terms)
        self.n_rows = C.shape[0]
        self.rows = torch.arange(self.n_rows, device=device)  # indices of these rows in the full objective

    @staticmethod
    def _with_combinations(C: np.ndarray, d: np.ndarray, max_rows: int = 6):
        """Add nonnegative combinations of a conjunction's rows (the sum over every subset of >= 2 rows).

        If λ >= 0 and λ·(C·y - d) > 0 everywhere on a domain, some row is positive at every point, so the
        conjunction is infeasible there: the extra rows keep the meaning, and their bounds can be tighter
        than every single row's (a bound on a sum is not the sum of the bounds)."""
        m = C.shape[0]
        if m < 2 or m > max_rows:
            return C, d
        scale = 1.0 / np.maximum(np.abs(C).sum(1), 1e-12)  # normalise rows so no row dominates a sum
        Cn, dn = C * scale[:, None], d * scale
        extra_C, extra_d = [], []
        for size in range(2, m + 1):
            for subset in itertools.combinations(range(m), size):
                idx = list(subset)
                extra_C.append(Cn[idx].sum(0))
                extra_d.append(dn[idx].sum())
        return np.vstack([C, np.array(extra_C)]), np.concatenate([d, np.array(extra_d)])

    def open_terms(self, lb_rows: torch.Tensor) -> "Objective":
        """The objective restricted to the terms not yet verified by `lb_rows` (1, R).

        A term verified on a region (some row's lower bound > 0) stays verified on every sub-domain, since
        sub-domains only add constraints: the search need not bound its rows again. Restricting the rows
        cuts the cost of every backward pass in proportion."""
        return self.subset_terms(self.term_max(lb_rows.reshape(1, -1))[0] <= 0)

    def subset_terms(self, keep_terms: torch.Tensor) -> "Objective":
        """The objective restricted to the terms where `keep_terms` (T,) bool is true; `rows` keeps each
        remaining row's index in the full objective."""
        if bool(keep_terms.all()):
            return self
        rows = keep_terms[self.term]
        out = Objective.__new__(Objective)
        out.C, out.d = self.C[rows], self.d[rows]
        new_id = torch.cumsum(keep_terms.long(), 0) - 1
        out.term = new_id[self.term[rows]]
        out.n_terms = int(keep_terms.sum())
        out.n_rows = int(rows.sum())
        out.rows = self.rows[rows]
        return out

    def padded_term_rows(self) -> torch.Tensor:
        """(T, r) indices of each term's rows, r the largest term's row count; a shorter term repeats its
        first row (a repeated row leaves the max over the term's rows, and so the score, unchanged)."""
        counts = torch.bincount(self.term, minlength=self.n_terms)
        out = torch.empty(self.n_terms, int(counts.max()), dtype=torch.long, device=self.C.device)
        for t in range(self.n_terms):
            idx = (self.term == t).nonzero().flatten()
            out[t, :len(idx)] = idx
            out[t, len(idx):] = idx[0]
        return out

    def spec(self, M: int) -> torch.Tensor:
        """(M, R, n_out): the objective matrix for M domains."""
        return self.C.unsqueeze(0).expand(M, -1, -1)

    def term_max(self, rows: torch.Tensor) -> torch.Tensor:
        """(N, R) row values -> (N, T): max over each term's rows."""
        N = rows.shape[0]
        out = torch.full((N, self.n_terms), -torch.inf, dtype=rows.dtype, device=rows.device)
        return out.scatter_reduce(1, self.term.unsqueeze(0).expand(N, -1), rows, reduce="amax")

    def score(self, lb_rows: torch.Tensor) -> torch.Tensor:
        """(N, R) lower bounds of C·y - d -> (N,) domain score; > 0 means verified."""
        return self.term_max(lb_rows).min(1).values

    def violated(self, y: torch.Tensor) -> torch.Tensor:
        """(N, n_out) outputs -> (N,) bool: some term has all rows C·y - d <= 0."""
        vals = y.reshape(y.shape[0], -1) @ self.C.T - self.d
        return (self.term_max(vals) <= 0).any(1)

    def margin(self, y: torch.Tensor) -> torch.Tensor:
        """(N,) how far from a violation (<= 0 means violated): min over terms of max over rows."""
        vals = y.reshape(y.shape[0], -1) @ self.C.T - self.d
        return self.term_max(vals).min(1).values


class DomainRows:
    """The objective of a batch of domains that each hold one term of `obj`: domain i bounds the rows
    `rows[i]` (from `Objective.padded_term_rows`), so a backward pass carries one term's rows per domain
    instead of every open term's. Offers what the bounding step uses of an `Objective`: `spec`, `d`,
    `n_rows`, `rows` (indices in the full objective, (M, r)) and `score`."""

    def __init__(self, obj: Objective, rows: torch.Tensor):
        self.C = obj.C[rows]        # (M, r, n_out)
        self.d = obj.d[rows]        # (M, r)
        self.rows = obj.rows[rows]  # (M, r)
        self.n_rows = rows.shape[1]

    def spec(self, M: int) -> torch.Tensor:
        return self.C

    def score(self, lb_rows: torch.Tensor) -> torch.Tensor:
        """(N, r) lower bounds -> (N,) score: every row belongs to the domain's one term, so the max."""
        return lb_rows.max(1).values

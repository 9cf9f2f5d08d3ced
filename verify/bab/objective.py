"""The search objective of one input region: a disjunction of conjunctions of linear output constraints.

The region is unsafe iff some term t has C_t·y <= d_t (every row). A sub-domain is verified when every
term has a row whose lower bound of (C_r·y - d_r) is > 0. All rows of all terms are stacked into one matrix
so a single bound computation covers the whole disjunction; `score` reduces row bounds to one number
per domain (> 0 means verified): min over terms of max over the term's rows.
"""
from __future__ import annotations

import numpy as np
import torch


class Objective:
    def __init__(self, terms: list[tuple[np.ndarray, np.ndarray]], dtype: torch.dtype, device=None):
        C = np.vstack([np.asarray(c, dtype=np.float64) for c, _ in terms])
        d = np.concatenate([np.asarray(dd, dtype=np.float64).reshape(-1) for _, dd in terms])
        self.C = torch.as_tensor(C, dtype=dtype, device=device)
        self.d = torch.as_tensor(d, dtype=dtype, device=device)
        self.term = torch.as_tensor(np.concatenate([np.full(len(np.atleast_1d(dd)), i) for i, (_, dd) in enumerate(terms)]),
                                    dtype=torch.long, device=device)
        self.n_terms = len(terms)
        self.n_rows = C.shape[0]

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

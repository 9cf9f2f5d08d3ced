"""Registry of per-operator bound rules.

Every IR operator the bound engine understands has one `OpRule` here, registered by op name. A rule has

* `ibp(args_lo, args_hi, node, graph)` -> (lo, hi): the interval rule. `args_lo/args_hi` hold, per input, the
  lower/upper bound tensor (for a constant input both are the constant itself).
* `kind`: "affine" (exactly linear in its non-constant inputs: its backward step is exact and generic),
  "unary" (element-wise nonlinearity with a linear relaxation), or "special" (own backward step).

Unary rules additionally give `relax(l, u, alpha)` -> (lw, lb, uw, ub): lines with
lw*x + lb <= f(x) <= uw*x + ub for every x in [l, u]. `alpha` is the optimisable parameter (or None for the
default choice); `alpha_init(l, u)` returns its starting value (None when the op has no parameter) and
`alpha_project(alpha, l, u)` maps a gradient step back into the valid set.
"""
from __future__ import annotations

from typing import Any

import torch

RULES: dict[str, "OpRule"] = {}


def register(*names: str):
    def deco(cls):
        inst = cls()
        for n in names:
            RULES[n] = inst
        return cls
    return deco


class OpRule:
    kind = "affine"

    def ibp(self, lo: list[torch.Tensor], hi: list[torch.Tensor], node, graph) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError


class MonotoneRule(OpRule):
    """Operators non-decreasing in every input: the interval rule is f(lo), f(hi)."""

    def ibp(self, lo, hi, node, graph):
        from verify.graph.ops import evaluate

        return evaluate(node.op, lo, node.attrs), evaluate(node.op, hi, node.attrs)


class UnaryRule(OpRule):
    """Element-wise nonlinearity with a linear relaxation."""

    kind = "unary"
    has_alpha = False
    # step-size scale for α optimisation, relative to a parameter living in [0, 1]
    alpha_lr_scale = 1.0
    # optimise one parameter per intermediate neuron bound (α-CROWN's per-row intermediate α) rather than
    # one shared per neuron; measured worth it for ReLU slopes only (ERAN 9x200: 19 proven vs 17), while
    # per-row sigmoid slopes lost a spec on ERAN 6x200 (their first Adam steps do more damage per row)
    row_alpha = False

    def ibp(self, lo, hi, node, graph):
        return self.interval(lo[0], hi[0], node.attrs)

    def interval(self, l: torch.Tensor, u: torch.Tensor, attrs: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def relax(self, l: torch.Tensor, u: torch.Tensor, attrs: dict[str, Any], alpha=None):
        """Return (lw, lb, uw, ub) valid on [l, u]."""
        raise NotImplementedError

    def relax_cached(self, l: torch.Tensor, u: torch.Tensor, attrs: dict[str, Any], alpha, cache: dict, key: str):
        """`relax`, for callers that relax the same (l, u) many times with changing α (the bound
        optimisers): a rule may keep in `cache[key]` whatever does not depend on α. Default: no reuse."""
        return self.relax(l, u, attrs, alpha)

    def alpha_init(self, l: torch.Tensor, u: torch.Tensor, attrs: dict[str, Any]):
        return None

    def alpha_project(self, alpha, l, u, attrs):
        return alpha

    def needs_bounds(self, l: torch.Tensor, u: torch.Tensor, attrs: dict[str, Any]) -> torch.Tensor:
        """Mask of neurons whose relaxation depends on tight input bounds (default: all)."""
        return torch.ones_like(l, dtype=torch.bool)

"""Generic sound relaxation of a scalar function: a line is a slope plus its exact extremal offset.

For a slope k, the tightest lower line of f on [l, u] with that slope is k*x + min_{[l,u]} (f(x) - k*x), and
the tightest upper line is k*x + max_{[l,u]} (f(x) - k*x). Both are sound for *every* k, so α-CROWN can
optimise the slopes freely (`alpha` = stacked (lower slope, upper slope)); the projection only keeps them
in the range of f' on [l, u], where they are useful.

The extremum of g(x) = f(x) - k*x over [l, u] is exact because we evaluate g on a finite candidate set that
provably contains its minimiser and maximiser:

* the endpoints l and u;
* the inflection points of f (clamped into [l, u]): between two of them f' is monotone, so g is convex or
  concave there and its extremes on that piece are at the piece ends or at its stationary point;
* the solutions of f'(x) = k (clamped into [l, u]), from a closed form per function or from bisection on
  each monotone piece of f'. Every candidate lies in [l, u], so extra candidates never hurt soundness.

Periodic functions have infinitely many stationary points; their rules return, per family x0 + 2πn, only
the first and last member inside [l, u] (g is linear in n along a family, so these two hold its extremes).

Rounding: offsets are widened by a few ulps of the terms involved, plus the curvature bound times the
squared bisection bracket where roots come from bisection, so float32 lines stay sound too.

Domains: a rule may declare a domain [lo, hi] (log, sqrt, fractional powers: x >= 0). Outside it the network
computes NaN, which never satisfies (nor violates) an output constraint, so lines only need to hold on
[l, u] ∩ domain; a value that goes to ±inf inside the domain (log(0)) gives an infinite offset. Poles inside
[l, u] (1/x with l <= 0 <= u) give infinite bounds. Any non-finite slope or offset, or an infinite input
bound, is replaced by the constant line of the interval bound (slope 0, offset = IBP bound), which is sound.
"""
from __future__ import annotations

import math
from typing import Any

import torch

from verify.bounds.ops.base import UnaryRule

_INF = math.inf


def bisect_root(dfun, k: torch.Tensor, a: torch.Tensor, b: torch.Tensor, increasing: bool,
                steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Root of dfun(x) = k on [a, b] where dfun is monotone; the bracket's midpoint and its width.

    Where there is no root the result converges to the end of [a, b] nearest to it (a valid candidate)."""
    lo, hi = torch.broadcast_tensors(a, b, k)[:2]
    lo, hi = lo.clone(), torch.maximum(hi, lo)
    for _ in range(steps):
        mid = (lo + hi) / 2
        v = dfun(mid) - k
        right = (v < 0) if increasing else (v > 0)
        lo = torch.where(right, mid, lo)
        hi = torch.where(right, hi, mid)
    return (lo + hi) / 2, hi - lo


class SlopeRule(UnaryRule):
    """Element-wise function relaxed by (slope, exact offset) lines; see the module docstring."""

    # the parameters are line slopes, typically a fraction of the function's slope range: smaller steps
    # (measured on ERAN sigmoid 6x200: lr 0.1 never improved an all-layer α-CROWN bound, 0.02 did)
    alpha_lr_scale = 0.2

    has_alpha = True
    domain: tuple[float, float] = (-_INF, _INF)
    monotone: int = 0            # +1 non-decreasing, -1 non-increasing on the domain, 0 neither
    global_range: tuple[float, float] = (-_INF, _INF)  # used when an interval makes f undefined (NaN)
    d2_max: float = 0.0          # bound on |f''| (only needed by rules whose roots come from bisection)
    ulps: float = 8.0            # rounding allowance, in units of the dtype's epsilon

    # -- to override --------------------------------------------------------------------------------
    def f(self, x: torch.Tensor, attrs: dict[str, Any]) -> torch.Tensor:
        raise NotImplementedError

    def df(self, x: torch.Tensor, attrs: dict[str, Any]) -> torch.Tensor:
        raise NotImplementedError

    def inflections(self, attrs: dict[str, Any]) -> tuple[float, ...]:
        """Points between which f' is monotone (inflections of f and kinks)."""
        return ()

    def stationary(self, k: torch.Tensor, l: torch.Tensor, u: torch.Tensor,
                   attrs: dict[str, Any]) -> tuple[list[torch.Tensor], torch.Tensor | None]:
        """Points including every solution of f'(x) = k in [l, u] (NaN where none); and the bisection
        bracket width (None for closed forms)."""
        raise NotImplementedError

    def poles(self, l: torch.Tensor, u: torch.Tensor, attrs: dict[str, Any]) -> torch.Tensor | None:
        """Mask of intervals holding a pole (f unbounded both ways); None when f has none."""
        return None

    def domain_of(self, attrs: dict[str, Any]) -> tuple[float, float]:
        return self.domain

    def monotone_of(self, attrs: dict[str, Any]) -> int:
        return self.monotone

    # -- helpers ------------------------------------------------------------------------------------
    def _clip(self, l, u, attrs):
        lo, hi = self.domain_of(attrs)
        ld = l.clamp(min=lo) if lo > -_INF else l
        ud = u.clamp(max=hi) if hi < _INF else u
        ud = torch.maximum(ud, ld)  # an interval wholly outside the domain collapses to its edge
        return ld, ud

    def _candidates(self, k, ld, ud, attrs) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Stacked candidate points (P, *shape) inside [ld, ud], and the bisection bracket width."""
        shape = torch.broadcast_shapes(k.shape, ld.shape)
        ld, ud = ld.expand(shape), ud.expand(shape)
        pts = [ld, ud]
        for p in self.inflections(attrs):
            pts.append(torch.minimum(torch.maximum(torch.full_like(ld, p), ld), ud))
        with torch.no_grad():
            roots, width = self.stationary(k.detach(), ld.detach(), ud.detach(), attrs)
        for r in roots:
            r = torch.where(torch.isnan(r), ld.detach(), r.expand(shape))
            pts.append(torch.minimum(torch.maximum(r, ld), ud))
        return torch.stack(pts), width

    def _margin(self, terms: torch.Tensor, X: torch.Tensor, width) -> torch.Tensor:
        """Rounding allowance: a few ulps of the largest term, plus the second-order error of evaluating g
        at a stationary point that is off by the bisection bracket or the rounding of X."""
        eps = torch.finfo(X.dtype).eps
        m = self.ulps * eps * terms.nan_to_num(0.0, 0.0, 0.0).amax(0) + torch.finfo(X.dtype).tiny
        if self.d2_max:
            off = 4 * eps * X.detach().abs().nan_to_num(0.0, 0.0, 0.0).amax(0)
            if width is not None:
                off = off + width
            m = m + 0.5 * self.d2_max * off ** 2
        return m

    def offsets(self, k: torch.Tensor, l: torch.Tensor, u: torch.Tensor,
                attrs: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """(min, max) over [l, u] ∩ domain of f(x) - k*x, widened for rounding."""
        ld, ud = self._clip(l, u, attrs)
        X, width = self._candidates(k, ld, ud, attrs)
        F = self.f(X, attrs)
        kX = k * X
        G = F - kX
        m = self._margin(F.abs() + kX.abs(), X, width)
        return G.amin(0) - m, G.amax(0) + m

    # -- interval rule ------------------------------------------------------------------------------
    def interval(self, l, u, attrs):
        ld, ud = self._clip(l, u, attrs)
        mono = self.monotone_of(attrs)
        if mono > 0:
            lo, hi = self.f(ld, attrs), self.f(ud, attrs)
        elif mono < 0:
            lo, hi = self.f(ud, attrs), self.f(ld, attrs)
        else:
            X, width = self._candidates(torch.zeros_like(ld), ld, ud, attrs)
            F = self.f(X, attrs)
            m = self._margin(F.abs(), X, width)
            lo, hi = F.amin(0) - m, F.amax(0) + m
            glo, ghi = self.global_range
            lo = torch.where(torch.isnan(lo), torch.full_like(lo, glo), lo.clamp(min=glo))
            hi = torch.where(torch.isnan(hi), torch.full_like(hi, ghi), hi.clamp(max=ghi))
        lo = torch.where(torch.isnan(lo), torch.full_like(lo, -_INF), lo)
        hi = torch.where(torch.isnan(hi), torch.full_like(hi, _INF), hi)
        pole = self.poles(l, u, attrs)
        if pole is not None:
            lo = torch.where(pole, torch.full_like(lo, -_INF), lo)
            hi = torch.where(pole, torch.full_like(hi, _INF), hi)
        return lo, hi

    # -- α parameters -------------------------------------------------------------------------------
    def slope_range(self, l, u, attrs) -> tuple[torch.Tensor, torch.Tensor]:
        """Range of f' over [l, u] ∩ domain (f' is monotone between the inflection points)."""
        ld, ud = self._clip(l, u, attrs)
        pts = [ld, ud] + [torch.minimum(torch.maximum(torch.full_like(ld, p), ld), ud) for p in self.inflections(attrs)]
        D = self.df(torch.stack(pts), attrs)
        return D.amin(0), D.amax(0)

    def chord_slope(self, l, u, attrs) -> torch.Tensor:
        ld, ud = self._clip(l, u, attrs)
        w = ud - ld
        flat = w <= 0
        k = (self.f(ud, attrs) - self.f(ld, attrs)) / torch.where(flat, torch.ones_like(w), w)
        k = torch.where(flat, self.df(ld, attrs), k)
        return torch.where(torch.isfinite(k), k, torch.zeros_like(k))

    def alpha_init(self, l, u, attrs):
        kmin, kmax = self.slope_range(l, u, attrs)
        k = self.chord_slope(l, u, attrs)
        k = torch.maximum(torch.minimum(k, kmax), kmin)
        k = torch.where(torch.isfinite(k), k, torch.zeros_like(k))
        return torch.stack([k, k.clone()])

    def alpha_project(self, alpha, l, u, attrs):
        kmin, kmax = self.slope_range(l, u, attrs)
        if alpha.dim() > l.dim() + 1:  # per-row (2, B, S, ...)
            kmin, kmax = kmin.unsqueeze(1), kmax.unsqueeze(1)
        kmin = torch.where(torch.isnan(kmin), torch.full_like(kmin, -_INF), kmin)
        kmax = torch.where(torch.isnan(kmax), torch.full_like(kmax, _INF), kmax)
        a = torch.maximum(torch.minimum(alpha, kmax), kmin)
        return torch.where(torch.isfinite(a), a, torch.zeros_like(a))

    # -- linear relaxation --------------------------------------------------------------------------
    def relax(self, l, u, attrs, alpha=None):
        if alpha is None:
            alpha = self.alpha_init(l, u, attrs)
        k0, k1 = alpha[0], alpha[1]
        per_row = k0.dim() > l.dim()
        lx, ux = (l.unsqueeze(1), u.unsqueeze(1)) if per_row else (l, u)
        if k0 is k1 or (not k0.requires_grad and not k1.requires_grad and torch.equal(k0, k1)):
            lb, ub = self.offsets(k0, lx, ux, attrs)
        else:
            lb = self.offsets(k0, lx, ux, attrs)[0]
            ub = self.offsets(k1, lx, ux, attrs)[1]
        return finalize(self, l, u, attrs, k0, lb, k1, ub)


def finalize(rule: UnaryRule, l, u, attrs, lw, lb, uw, ub):
    """Replace non-finite lines (and lines over infinite intervals or poles) by the constant IBP lines.

    `l, u` have the bound shape (B, ...); the lines may carry an extra objective axis (B, S, ...)."""
    shape = torch.broadcast_shapes(lw.shape, lb.shape, uw.shape, ub.shape)
    lw, lb, uw, ub = (t.expand(shape) for t in (lw, lb, uw, ub))
    infinite = ~(torch.isfinite(l) & torch.isfinite(u))
    pole = rule.poles(l, u, attrs) if hasattr(rule, "poles") else None
    if pole is not None:
        infinite = infinite | pole
    if len(shape) > l.dim():
        infinite = infinite.unsqueeze(1)
    bad_lo = infinite | ~(torch.isfinite(lw) & torch.isfinite(lb))
    bad_up = infinite | ~(torch.isfinite(uw) & torch.isfinite(ub))
    if not bool(bad_lo.any() or bad_up.any()):
        return lw, lb, uw, ub
    with torch.no_grad():
        lo, hi = rule.interval(l.detach(), u.detach(), attrs)
    if len(shape) > l.dim():
        lo, hi = lo.unsqueeze(1), hi.unsqueeze(1)
    zero = torch.zeros((), dtype=lw.dtype, device=lw.device)
    lw = torch.where(bad_lo, zero, lw)
    lb = torch.where(bad_lo, lo.expand(shape), lb)
    uw = torch.where(bad_up, zero, uw)
    ub = torch.where(bad_up, hi.expand(shape), ub)
    return lw, lb, uw, ub

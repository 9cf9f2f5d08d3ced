"""A minimal Adam for the bound optimisers (α, β).

torch.optim's optimizers import torch._dynamo on their first step (several seconds of start-up per
process, more under load); the bound optimisation needs nothing beyond plain Adam with projection, so it
uses this instead. Maximises nothing by itself: callers put the gradient of the loss to minimise in
`.grad` (via `loss.backward()`) and call `step()`.
"""
from __future__ import annotations

import torch


class Adam:
    def __init__(self, params: list[torch.Tensor], lr: float = 0.1, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, lr_decay: float = 1.0, scales: list[float] | None = None):
        """`scales` multiply `lr` per parameter (parameters live on different scales: ReLU slopes in
        [0, 1], sigmoid line slopes in [0, 0.25])."""
        self.params = [p for p in params]
        self.scales = list(scales) if scales is not None else [1.0] * len(self.params)
        self.lr, self.b1, self.b2, self.eps, self.decay = lr, betas[0], betas[1], eps, lr_decay
        self.m = [torch.zeros_like(p) for p in self.params]
        self.v = [torch.zeros_like(p) for p in self.params]
        self.t = 0

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        self.t += 1
        c1 = 1 - self.b1 ** self.t
        c2 = 1 - self.b2 ** self.t
        for p, m, v, sc in zip(self.params, self.m, self.v, self.scales):
            if p.grad is None:
                continue
            g = p.grad
            m.mul_(self.b1).add_(g, alpha=1 - self.b1)
            v.mul_(self.b2).addcmul_(g, g, value=1 - self.b2)
            p.addcdiv_(m, (v / c2).sqrt_().add_(self.eps), value=-self.lr * sc / c1)
        self.lr *= self.decay

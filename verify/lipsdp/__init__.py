"""Lipschitz constants of neural networks: certified brackets from norm products, sampled lower bounds and
LipSDP (with the seed paper's quadratic constraints for GroupSort / MaxMin / Householder activations).

Public entry: `lipschitz(model, norm=2, method="lipsdp-neuron", solver=None)` -> `LipschitzResult`.
"""
from verify.lipsdp.api import METHODS, LipschitzResult, lipschitz
from verify.lipsdp.network import Activation, LipNet, load_network

__all__ = ["lipschitz", "LipschitzResult", "METHODS", "LipNet", "Activation", "load_network"]

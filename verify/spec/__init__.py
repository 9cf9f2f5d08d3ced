"""Specifications: VNN-LIB parsing (`vnnlib`), the `Spec` model (`spec`), result files (`results`)."""
from verify.spec.spec import Disjunct, Spec

__all__ = ["Disjunct", "Spec"]

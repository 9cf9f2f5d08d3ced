"""Per-operator bound rules, one module per operator family.

Importing this package imports every module in it, which registers its rules in `RULES` (so adding an
operator family is adding one file here).
"""
import importlib
import pkgutil

from verify.bounds.ops.base import RULES

for _mod in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_mod.name}")

__all__ = ["RULES"]

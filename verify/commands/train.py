"""`verify train certified|convex`: dispatches to the training subcommand modules."""
from __future__ import annotations

import importlib

TRAIN_MODULES = ["verify.commands.train_certified", "verify.commands.train_convex"]


def register(subparsers) -> None:
    p = subparsers.add_parser("train", help="train networks the verifier can certify")
    sub = p.add_subparsers(dest="train_command", parser_class=type(p))
    for mod_name in TRAIN_MODULES:
        try:
            mod = importlib.import_module(mod_name)
        except ModuleNotFoundError as e:
            if e.name == mod_name:
                continue
            raise
        mod.register(sub)

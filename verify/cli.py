"""The `verify` command line.

Each subcommand lives in its own module under `verify.commands` and exposes `register(subparsers)`,
which adds its parser and sets `func=run` (run(args) -> exit code). Exit codes (DESIGN conventions):
0 for any verdict, 2 for bad input or usage (one line on stderr), 1 for an internal error.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
import warnings

from verify.errors import InputError

# subcommand modules, in the order `verify --help` lists them
COMMAND_MODULES = [
    "verify.commands.check",      # check, bench
    "verify.commands.lipschitz",  # lipschitz
    "verify.commands.train",      # train certified | train convex
    "verify.commands.spec",       # spec robustness
    "verify.commands.tables",     # tables build
]


class _Parser(argparse.ArgumentParser):
    """argparse that reports usage errors as one line and exit code 2."""

    def error(self, message: str):  # noqa: D401
        sys.stderr.write(f"verify: error: {message}\n")
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="verify", description="Neural-network verification engine")
    parser.add_argument("--debug", action="store_true", help="show tracebacks for internal errors")
    sub = parser.add_subparsers(dest="command", parser_class=_Parser)
    for mod_name in COMMAND_MODULES:
        try:
            mod = importlib.import_module(mod_name)
        except ModuleNotFoundError as e:
            if e.name == mod_name:
                continue  # subcommand not built yet
            raise
        mod.register(sub)
    return parser


def configure_threads(threads: int | None) -> None:
    """Honour --threads, else OMP_NUM_THREADS, else one thread (fastest per process on small machines)."""
    import torch

    if threads:
        torch.set_num_threads(int(threads))
    elif not os.environ.get("OMP_NUM_THREADS"):
        torch.set_num_threads(1)


def main(argv: list[str] | None = None) -> int:
    warnings.filterwarnings("ignore")
    logging.captureWarnings(True)
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return 2
    configure_threads(getattr(args, "threads", None))
    try:
        return int(args.func(args) or 0)
    except InputError as e:
        sys.stderr.write(f"verify: error: {e}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write("verify: interrupted\n")
        return 130
    except Exception as e:  # internal error: one line unless --debug
        if args.debug or os.environ.get("VERIFY_DEBUG"):
            raise
        sys.stderr.write(f"verify: internal error: {type(e).__name__}: {e}\n")
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

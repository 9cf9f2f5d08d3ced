"""Error types shared by the whole package.

`InputError` is bad user input (a missing or corrupt file, an unsupported operator, a malformed spec):
the CLI turns it into one line on stderr and exit code 2. Anything else escaping is an internal error
(exit code 1).
"""
from __future__ import annotations


class InputError(Exception):
    """Bad input from the user: the message names the file / line / node and what is wrong."""


class UnsupportedOpError(InputError):
    """An operator the importer or the bound engine cannot handle."""

    def __init__(self, op: str, node: str, where: str = "", detail: str = ""):
        self.op = op
        self.node = node
        msg = f"unsupported operator {op!r} (node {node!r})"
        if where:
            msg = f"{where}: {msg}"
        if detail:
            msg += f": {detail}"
        super().__init__(msg)


def read_input_bytes(path, what: str) -> bytes:
    """The bytes of a user's input file, gunzipped when it is gzip-compressed.

    Unreadable or corrupt files raise `InputError` naming the file and `what` it was meant to be."""
    import gzip
    import zlib
    from pathlib import Path

    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise InputError(f"{path}: cannot read {what}: {e.strerror or e}") from None
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as e:
            raise InputError(f"{path}: corrupt gzip file ({e})") from None
    return raw

"""VNN-COMP result files: write and read.

Format (one verdict per file):

    sat
    (
    (X_0 0.5)
    (X_1 -1.25e-05)
    (Y_0 3.0)
    )

The first line is the verdict: `sat`, `unsat`, `unknown`, `timeout` or `error`. Only `sat` carries the
counterexample: every input X_i, then every output Y_j, one `(name value)` pair per line, values written as
Python's `repr(float(v))` (shortest text that round-trips to the same float64; never `(- 0.5)` and never a
numpy repr). The reader also accepts what other tools write: `((X_0 0.5)` ... `(Y_0 1.0))` on fewer
lines, SMT-LIB negatives `(- 0.5)`, and the VNN-COMP 2021 verdict words `violated` (= sat) and
`holds` (= unsat).
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Sequence

import numpy as np

from verify.errors import InputError

VERDICTS = ("sat", "unsat", "unknown", "timeout", "error")
_ALIASES = {"violated": "sat", "holds": "unsat"}
_NUM = r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?|[+-]?inf|nan"
_PAIR_RE = re.compile(
    r"\(\s*([XY])_(\d+)\s+(?:(" + _NUM + r")|\(\s*-\s+(" + _NUM + r")\s*\))\s*\)"
)


def _values(v) -> list[float]:
    """Flatten anything array-like to plain Python floats (so repr gives float64 text, not numpy's)."""
    if hasattr(v, "detach"):  # a torch tensor
        v = v.detach().cpu().double().numpy()
    arr = np.asarray(v, dtype=np.float64).reshape(-1)
    return [float(a) for a in arr]


def format_result(
    verdict: str,
    x: Sequence[float] | np.ndarray | None = None,
    y: Sequence[float] | np.ndarray | None = None,
) -> str:
    """The text of a result file. `sat` needs the counterexample (x, y); for other verdicts x and y are
    ignored (so callers can pass whatever their result object holds)."""
    if verdict not in VERDICTS:
        raise ValueError(f"verdict must be one of {VERDICTS}, not {verdict!r}")
    if verdict != "sat":
        return verdict + "\n"  # only `sat` carries a counterexample; x, y are ignored otherwise
    if x is None or y is None:
        raise ValueError("a 'sat' result needs the counterexample input x and output y")
    lines = ["sat", "("]
    lines += [f"(X_{i} {repr(v)})" for i, v in enumerate(_values(x))]
    lines += [f"(Y_{j} {repr(v)})" for j, v in enumerate(_values(y))]
    lines.append(")")
    return "\n".join(lines) + "\n"


def write_result(
    path: str | Path,
    verdict: str,
    x: Sequence[float] | np.ndarray | None = None,
    y: Sequence[float] | np.ndarray | None = None,
) -> None:
    """Write a VNN-COMP result file (parent folders are created)."""
    text = format_result(verdict, x, y)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def parse_result_text(text: str, source: str = "<result>") -> tuple[str, np.ndarray | None, np.ndarray | None]:
    """Parse the text of a result file: (verdict, x, y); x and y are float64 arrays for `sat`, else None."""
    stripped = text.lstrip()
    if not stripped:
        raise InputError(f"{source}:1: empty result file; expected a verdict ({', '.join(VERDICTS)})")
    first_line_no = text[: len(text) - len(stripped)].count("\n") + 1
    first, _, rest = stripped.partition("\n")
    word = first.strip().lower()
    verdict = _ALIASES.get(word, word)
    if verdict not in VERDICTS:
        raise InputError(f"{source}:{first_line_no}: expected a verdict ({', '.join(VERDICTS)}), got {first.strip()!r}")
    if verdict != "sat":
        if rest.strip():
            raise InputError(f"{source}:{first_line_no + 1}: unexpected text after the verdict {verdict!r}")
        return verdict, None, None
    vals: dict[str, dict[int, float]] = {"X": {}, "Y": {}}
    body = rest
    pos = 0
    for m in _PAIR_RE.finditer(body):
        gap = body[pos : m.start()]
        if gap.strip(" \t\r\n("):
            at = pos + len(gap) - len(gap.lstrip(" \t\r\n("))
            line = first_line_no + 1 + body.count("\n", 0, at)
            raise InputError(f"{source}:{line}: expected '(X_i value)' or '(Y_j value)', got {gap.strip()[:40]!r}")
        pos = m.end()
        letter, idx = m.group(1), int(m.group(2))
        v = float(m.group(3)) if m.group(3) is not None else -float(m.group(4))
        if idx in vals[letter]:
            line = first_line_no + 1 + body.count("\n", 0, m.start())
            raise InputError(f"{source}:{line}: {letter}_{idx} given twice")
        vals[letter][idx] = v
    tail = body[pos:]
    if tail.strip(" \t\r\n)"):
        at = pos + len(tail) - len(tail.lstrip(" \t\r\n)"))
        line = first_line_no + 1 + body.count("\n", 0, at)
        raise InputError(f"{source}:{line}: expected '(X_i value)', '(Y_j value)' or ')', got {tail.strip()[:40]!r}")
    if body.count("(") != body.count(")"):
        raise InputError(f"{source}: unbalanced parentheses in the counterexample")
    out = []
    for letter in "XY":
        d = vals[letter]
        if not d:
            raise InputError(f"{source}: a 'sat' result needs the counterexample values {letter}_0, {letter}_1, ...")
        n = max(d) + 1
        if len(d) != n:
            missing = min(set(range(n)) - set(d))
            raise InputError(f"{source}: {letter}_{missing} is missing from the counterexample")
        out.append(np.array([d[i] for i in range(n)], dtype=np.float64))
    return verdict, out[0], out[1]


def read_result(path: str | Path) -> tuple[str, np.ndarray | None, np.ndarray | None]:
    """Read a VNN-COMP result file: (verdict, x, y); x and y are float64 arrays for `sat`, else None."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise InputError(f"{path}: cannot read result file: {e.strerror or e}") from None
    except UnicodeDecodeError:
        raise InputError(f"{path}: not a text file") from None
    return parse_result_text(text, source=str(path))

"""VNN-LIB 1.0 parser: text -> `Spec` (a disjunction of input boxes with output constraints C·y <= d).

Grammar handled (SMT-LIB subset used by VNN-LIB):
  (declare-const X_i Real) / (declare-const Y_j Real)
  (assert F)   F := (and F...) | (or F...) | (<= t t ...) | (>= ...) | (< ...) | (> ...) | (= ...)
               t := X_i | Y_j | number | (+ t...) | (- t) | (- t t...) | (* t...) | (/ t c)
Strict comparisons are read as non-strict (the usual VNN-COMP convention: the boundary has measure zero).
`(check-sat)`, `(get-model)`, `(set-logic ...)`, `(set-info ...)`, `(set-option ...)` and `(exit)` are ignored.

How it works, and why it is fast: the whole text is split into tokens by one regular expression (comments
dropped), then a recursive-descent parser walks the token list (recursion depth = nesting depth of the
formula, never per character); the two shapes that make up almost every large file,
`(declare-const X_i Real)` and `(assert (<= X_i number))`, are handled inline without a call. Each atomic comparison is normalised once into an "atom" (a bound on one
X, a row of C·y <= d, or `false`) stored in flat lists; a formula becomes its disjunctive normal form, a
list of terms, each term a list of atom ids. Conjunctions of single-term formulas (the usual
one-bound-per-assert input box) are concatenated, not multiplied. Boxes are finally built per term with
vectorised numpy updates. A 784-input MNIST spec parses in a few milliseconds (see docs/specs.md).

Positions (line:column) are computed only when an error is reported, by re-scanning the text.
"""
from __future__ import annotations

import itertools
import re
from pathlib import Path

import numpy as np

from verify.errors import InputError, read_input_bytes
from verify.spec.spec import Disjunct, Spec

#: default cap on the number of DNF terms of any (sub)formula; a larger expansion raises InputError.
MAX_TERMS = 100_000

_TOKEN_RE = re.compile(r";[^\n]*|\(|\)|[^\s();]+")
_COMMENT_RE = re.compile(r";[^\n]*")
_PLAIN_TOKEN_RE = re.compile(r"\(|\)|[^\s();]+")
_NUMBER_RE = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?\Z")
_COMPARISONS = {"<=", ">=", "<", ">", "="}
_IGNORED_COMMANDS = {"check-sat", "get-model", "set-logic", "set-info", "set-option", "exit"}

# atom kinds
_X_UPPER, _X_LOWER, _Y_ROW = 0, 1, 2
_BOUND_OPS = {"<=": _X_UPPER, "<": _X_UPPER, ">=": _X_LOWER, ">": _X_LOWER}


class _Parser:
    """One parse of one text. Holds the token list and the atom table."""

    def __init__(self, text: str, source: str, max_terms: int):
        self.text = text
        self.source = source
        self.max_terms = max_terms
        # comments are cut first (C speed); the token sequence equals _TOKEN_RE's minus its comment matches
        self.toks = _PLAIN_TOKEN_RE.findall(_COMMENT_RE.sub("", text)) if ";" in text else _PLAIN_TOKEN_RE.findall(text)
        self.n = len(self.toks)
        self.x_declared: set[int] = set()
        self.y_declared: set[int] = set()
        # atom table (parallel lists)
        self.a_kind: list[int] = []
        self.a_var: list[int] = []
        self.a_val: list[float] = []
        self.y_rows: dict[int, tuple[dict[int, float], float]] = {}

    # ------------------------------------------------------------------ errors
    def _pos(self, k: int) -> tuple[int, int]:
        """(line, column), 1-based, of token k (or of the end of the text when k is past the end)."""
        if k >= self.n:
            off = len(self.text)
        else:
            seen = -1
            off = len(self.text)
            for m in _TOKEN_RE.finditer(self.text):
                if m.group()[0] == ";":
                    continue
                seen += 1
                if seen == k:
                    off = m.start()
                    break
        line = self.text.count("\n", 0, off) + 1
        col = off - (self.text.rfind("\n", 0, off) + 1) + 1
        return line, col

    def error(self, k: int, what: str) -> InputError:
        line, col = self._pos(k)
        got = repr(self.toks[k]) if k < self.n else "end of file"
        return InputError(f"{self.source}:{line}:{col}: {what}, got {got}")

    def unsupported(self, k: int, what: str) -> InputError:
        line, col = self._pos(k)
        return InputError(f"{self.source}:{line}:{col}: unsupported: {what}")

    def expect(self, k: int, tok: str) -> int:
        if k >= self.n or self.toks[k] != tok:
            raise self.error(k, f"expected {tok!r}")
        return k + 1

    # ------------------------------------------------------------------ top level
    def parse(self) -> list[list[int]]:
        """Parse every command; return the DNF (list of terms of atom ids) of the conjunction of asserts."""
        toks = self.toks
        n = self.n
        k = 0
        asserts: list[list[list[int]]] = []
        run: list[int] | None = None  # atoms of consecutive one-bound asserts, shared as one conjunct
        number_match = _NUMBER_RE.match
        a_kind, a_var, a_val, x_declared = self.a_kind, self.a_var, self.a_val, self.x_declared
        while k < n:
            # fast path, the shape of almost every input-box line:  ( assert ( op X_i number ) )
            if (
                k + 7 < n
                and toks[k + 1] == "assert"
                and toks[k + 6] == ")"
                and toks[k + 7] == ")"
                and toks[k + 2] == "("
                and toks[k + 3] in _BOUND_OPS
                and toks[k + 4][:2] == "X_"
                and number_match(toks[k + 5])
                and toks[k] == "("
            ):
                name = toks[k + 4]
                idx = int(name[2:]) if name[2:].isdigit() else -1
                if idx in x_declared:
                    if run is None:
                        run = []
                        asserts.append([run])
                    run.append(len(a_kind))
                    a_kind.append(_BOUND_OPS[toks[k + 3]])
                    a_var.append(idx)
                    a_val.append(float(toks[k + 5]))
                    k += 8
                    continue
            # fast path:  ( declare-const X_i Real )  with a new index
            if k + 4 < n and toks[k + 1] == "declare-const" and toks[k + 3] == "Real" and toks[k + 4] == ")":
                name = toks[k + 2]
                if name[1:2] == "_" and name[2:].isdigit() and toks[k] == "(":
                    target = x_declared if name[0] == "X" else self.y_declared if name[0] == "Y" else None
                    idx = int(name[2:])
                    if target is not None and idx not in target:
                        target.add(idx)
                        k += 5
                        continue
            k = self.expect(k, "(")
            if k >= n:
                raise self.error(k, "expected a command name")
            cmd = toks[k]
            if cmd == "assert":
                dnf, k = self.formula(k + 1)
                asserts.append(dnf)
                run = None
                k = self.expect(k, ")")
            elif cmd == "declare-const":
                k = self.declare(k + 1)
            elif cmd in _IGNORED_COMMANDS:
                k = self.skip_to_close(k + 1)
            else:
                raise self.error(k, "expected 'declare-const' or 'assert'")
        return self.conj(asserts, 0)

    def skip_to_close(self, k: int) -> int:
        depth = 1
        while k < self.n:
            t = self.toks[k]
            if t == "(":
                depth += 1
            elif t == ")":
                depth -= 1
                if depth == 0:
                    return k + 1
            k += 1
        raise self.error(k, "expected ')'")

    def declare(self, k: int) -> int:
        if k >= self.n:
            raise self.error(k, "expected a variable name X_i or Y_j")
        name = self.toks[k]
        kind, idx = self.var_index(name)
        if kind is None:
            raise self.error(k, "expected a variable name X_i or Y_j")
        target = self.x_declared if kind == "X" else self.y_declared
        if idx in target:
            raise self.error(k, f"duplicate declaration of {name}")
        target.add(idx)
        if k + 1 >= self.n or self.toks[k + 1] != "Real":
            raise self.error(k + 1, "expected sort 'Real'")
        return self.expect(k + 2, ")")

    @staticmethod
    def var_index(tok: str) -> tuple[str | None, int]:
        if len(tok) > 2 and tok[1] == "_" and tok[0] in "XY" and tok[2:].isdigit():
            return tok[0], int(tok[2:])
        return None, -1

    # ------------------------------------------------------------------ boolean structure
    def conj(self, parts: list[list[list[int]]], k: int) -> list[list[int]]:
        """DNF of a conjunction of DNFs. Runs of single-term parts are concatenated once; only parts with
        several terms are crossed. Atom order follows the text."""
        segments: list[list[int] | list[list[int]]] = []  # a flat atom list (run of singles) or a multi DNF
        is_multi: list[bool] = []
        total = 1
        for p in parts:
            if not p:  # a false conjunct makes the whole conjunction false
                return []
            if len(p) == 1:
                if is_multi and not is_multi[-1]:
                    segments[-1].extend(p[0])
                else:
                    segments.append(list(p[0]))
                    is_multi.append(False)
            else:
                segments.append(p)
                is_multi.append(True)
                total *= len(p)
        if total > self.max_terms:
            raise self.unsupported(
                k, f"the formula expands to {total} disjunctive-normal-form terms (limit {self.max_terms})"
            )
        if total == 1:
            return [segments[0] if len(segments) == 1 else [a for s in segments for a in s]]
        choices = [seg if m else [seg] for seg, m in zip(segments, is_multi)]
        out = []
        for combo in itertools.product(*choices):
            term: list[int] = []
            for t in combo:
                term.extend(t)
            out.append(term)
        return out

    def formula(self, k: int) -> tuple[list[list[int]], int]:
        """Parse a boolean formula starting at token k. Returns (dnf, next k)."""
        toks = self.toks
        if k >= self.n or toks[k] != "(":
            if k < self.n and toks[k] in ("true", "false"):
                return ([[]] if toks[k] == "true" else []), k + 1
            raise self.error(k, "expected '(' starting a formula")
        start = k
        k += 1
        if k >= self.n:
            raise self.error(k, "expected 'and', 'or' or a comparison")
        op = toks[k]
        if op in _COMPARISONS:
            return self.comparison(k)
        if op == "and" or op == "or":
            k += 1
            parts = []
            while k < self.n and toks[k] != ")":
                dnf, k = self.formula(k)
                parts.append(dnf)
            k = self.expect(k, ")")
            if op == "and":
                return self.conj(parts, start), k
            out: list[list[int]] = []
            for p in parts:
                out.extend(p)
            if len(out) > self.max_terms:
                raise self.unsupported(
                    start, f"the formula expands to {len(out)} disjunctive-normal-form terms (limit {self.max_terms})"
                )
            return out, k
        if op == "not":
            raise self.unsupported(k, "'not' (rewrite the property without negation)")
        raise self.error(k, "expected 'and', 'or' or a comparison (<=, >=, <, >, =)")

    # ------------------------------------------------------------------ comparisons and atoms
    def comparison(self, k: int) -> tuple[list[list[int]], int]:
        """k points at the comparison operator (after '('). Returns (dnf, index after ')')."""
        toks = self.toks
        op = toks[k]
        # fast path: (op X_i number) -- the shape of almost every input-box line
        if k + 3 < self.n and toks[k + 3] == ")":
            a, b = toks[k + 1], toks[k + 2]
            if a[:2] == "X_" and a[2:].isdigit() and op != "=":
                v = self.number(b)
                if v is not None:
                    i = int(a[2:])
                    if i not in self.x_declared:
                        raise self.error(k + 1, f"{a} is used before its declaration; expected a declared variable")
                    upper = op in ("<=", "<")
                    return [[self.x_atom(i, upper, v)]], k + 4
        k += 1
        terms = []
        term_pos = []
        while k < self.n and toks[k] != ")":
            term_pos.append(k)
            t, k = self.term(k)
            terms.append(t)
        k = self.expect(k, ")")
        if len(terms) < 2:
            raise self.error(k - 1, f"expected at least two operands for {op!r}")
        atoms: list[int] = []
        for j in range(len(terms) - 1):
            lhs, rhs = terms[j], terms[j + 1]
            # each comparison is turned into one or two "expr <= 0" forms
            if op in ("<=", "<"):
                forms = [_sub(lhs, rhs)]
            elif op in (">=", ">"):
                forms = [_sub(rhs, lhs)]
            else:  # "="
                forms = [_sub(lhs, rhs), _sub(rhs, lhs)]
            for f in forms:
                a = self.le_zero_atom(f, term_pos[j])
                if a is False:
                    return [], k
                if a is not None:
                    atoms.append(a)
        return [atoms], k

    def x_atom(self, i: int, upper: bool, v: float) -> int:
        a = len(self.a_kind)
        self.a_kind.append(_X_UPPER if upper else _X_LOWER)
        self.a_var.append(i)
        self.a_val.append(v)
        return a

    def le_zero_atom(self, f: tuple[dict, dict, float], k: int):
        """Atom for  sum(coef·X) + sum(coef·Y) + c <= 0.  Returns an atom id, None (always true), False."""
        xd, yd, c = f
        xd = {i: v for i, v in xd.items() if v != 0.0}
        yd = {j: v for j, v in yd.items() if v != 0.0}
        if xd and yd:
            raise self.unsupported(k, "a constraint mixing input (X) and output (Y) variables")
        if len(xd) > 1:
            raise self.unsupported(k, "a linear constraint over several input (X) variables")
        if xd:
            (i, a), = xd.items()
            bound = (0.0 - c) / a + 0.0  # + 0.0 turns -0.0 into 0.0
            return self.x_atom(i, a > 0, bound)
        if yd:
            aid = len(self.a_kind)
            self.a_kind.append(_Y_ROW)
            self.a_var.append(-1)
            self.a_val.append(0.0)
            self.y_rows[aid] = (yd, 0.0 - c)
            return aid
        # constant comparison
        if c <= 0:
            return None
        return False

    # ------------------------------------------------------------------ linear terms
    @staticmethod
    def number(tok: str) -> float | None:
        c = tok[0]
        if (c.isdigit() or c in "+-.") and _NUMBER_RE.match(tok):
            return float(tok)
        return None

    def term(self, k: int) -> tuple[tuple[dict, dict, float], int]:
        """Parse a linear term; returns ((x coeffs, y coeffs, constant), next k)."""
        toks = self.toks
        if k >= self.n:
            raise self.error(k, "expected a term")
        t = toks[k]
        if t != "(":
            if t == ")":
                raise self.error(k, "expected a term (variable, number or arithmetic expression)")
            v = self.number(t)
            if v is not None:
                return ({}, {}, v), k + 1
            kind, idx = self.var_index(t)
            if kind == "X":
                if idx not in self.x_declared:
                    raise self.error(k, f"{t} is used before its declaration; expected a declared variable")
                return ({idx: 1.0}, {}, 0.0), k + 1
            if kind == "Y":
                if idx not in self.y_declared:
                    raise self.error(k, f"{t} is used before its declaration; expected a declared variable")
                return ({}, {idx: 1.0}, 0.0), k + 1
            raise self.error(k, "expected a number or a declared variable X_i / Y_j")
        k += 1
        if k >= self.n:
            raise self.error(k, "expected an arithmetic operator")
        op = toks[k]
        if op not in ("+", "-", "*", "/"):
            raise self.error(k, "expected an arithmetic operator (+, -, *, /)")
        k += 1
        args = []
        arg_pos = []
        while k < self.n and toks[k] != ")":
            arg_pos.append(k)
            a, k = self.term(k)
            args.append(a)
        k = self.expect(k, ")")
        if not args:
            raise self.error(k - 1, f"expected an operand for {op!r}")
        if op == "+":
            acc = args[0]
            for a in args[1:]:
                acc = _add(acc, a, 1.0)
            return acc, k
        if op == "-":
            if len(args) == 1:
                return _scale(args[0], -1.0), k
            acc = args[0]
            for a in args[1:]:
                acc = _add(acc, a, -1.0)
            return acc, k
        if op == "*":
            coef = 1.0
            lin = None
            for a, p in zip(args, arg_pos):
                if a[0] or a[1]:
                    if lin is not None:
                        raise self.unsupported(p, "a product of two variables (nonlinear term)")
                    lin = a
                else:
                    coef *= a[2]
            if lin is None:
                return ({}, {}, coef), k
            return _scale(lin, coef), k
        # "/": a linear term divided by constants
        acc = args[0]
        for a, p in zip(args[1:], arg_pos[1:]):
            if a[0] or a[1]:
                raise self.unsupported(p, "division by a variable (nonlinear term)")
            if a[2] == 0.0:
                raise self.error(p, "expected a non-zero divisor")
            acc = _scale(acc, 1.0 / a[2])
        return acc, k


def _add(a: tuple[dict, dict, float], b: tuple[dict, dict, float], s: float) -> tuple[dict, dict, float]:
    xd = dict(a[0])
    for i, v in b[0].items():
        xd[i] = xd.get(i, 0.0) + s * v
    yd = dict(a[1])
    for j, v in b[1].items():
        yd[j] = yd.get(j, 0.0) + s * v
    return xd, yd, a[2] + s * b[2]


def _sub(a, b):
    return _add(a, b, -1.0)


def _scale(a: tuple[dict, dict, float], s: float) -> tuple[dict, dict, float]:
    return ({i: s * v for i, v in a[0].items()}, {j: s * v for j, v in a[1].items()}, s * a[2])


def _check_declared(declared: set[int], letter: str, expected: int | None, source: str) -> int:
    n = len(declared)
    if n and max(declared) != n - 1:
        missing = min(set(range(max(declared) + 1)) - declared)
        raise InputError(f"{source}: {letter}_{missing} is not declared (declared {letter} indices must be 0..n-1)")
    if expected is not None and n != expected:
        what = "inputs" if letter == "X" else "outputs"
        raise InputError(f"{source}: the spec declares {n} {what} ({letter}_i) but the model has {expected}")
    if n == 0:
        raise InputError(f"{source}: no {letter}_i variables declared; expected (declare-const {letter}_0 Real)")
    return n


def parse_vnnlib_text(
    text: str,
    n_inputs: int | None = None,
    n_outputs: int | None = None,
    source: str = "<vnnlib>",
    max_terms: int = MAX_TERMS,
) -> Spec:
    """Parse VNN-LIB text into a `Spec`.

    n_inputs / n_outputs, when given (e.g. from the model), must equal the declared counts.
    `source` names the text in error messages (`source:line:column: what was expected`).
    Raises InputError for malformed text, for unsupported constraints (mixed X/Y, multi-X linear) and
    for an input variable without a lower or upper bound in some disjunct.
    """
    p = _Parser(text, source, max_terms)
    try:
        dnf = p.parse()
    except RecursionError:
        raise InputError(f"{source}: formula nested too deeply to parse") from None
    nx = _check_declared(p.x_declared, "X", n_inputs, source)
    ny = _check_declared(p.y_declared, "Y", n_outputs, source)

    kind = np.asarray(p.a_kind, dtype=np.int64)
    var = np.asarray(p.a_var, dtype=np.int64)
    val = np.asarray(p.a_val, dtype=np.float64)

    disjuncts: list[Disjunct] = []
    for ti, term in enumerate(dnf):
        ids = np.fromiter(term, dtype=np.int64, count=len(term))
        kinds = kind[ids]
        lower = np.full(nx, -np.inf)
        upper = np.full(nx, np.inf)
        up = ids[kinds == _X_UPPER]
        lo = ids[kinds == _X_LOWER]
        np.minimum.at(upper, var[up], val[up])
        np.maximum.at(lower, var[lo], val[lo])
        rows = ids[kinds == _Y_ROW]
        C = np.zeros((len(rows), ny))
        d = np.zeros(len(rows))
        for r, aid in enumerate(rows.tolist()):
            yd, dv = p.y_rows[aid]
            for j, v in yd.items():
                C[r, j] = v
            d[r] = dv
        if np.any(lower > upper):
            continue  # an empty box: this disjunct can never be satisfied
        if not (np.all(np.isfinite(lower)) and np.all(np.isfinite(upper))):
            bad = int(np.flatnonzero(~(np.isfinite(lower) & np.isfinite(upper)))[0])
            side = "lower" if not np.isfinite(lower[bad]) else "upper"
            where = f" in disjunct {ti}" if len(dnf) > 1 else ""
            raise InputError(f"{source}: input X_{bad} has no {side} bound{where}; every X_i needs both bounds")
        disjuncts.append(Disjunct(lower=lower, upper=upper, C=C, d=d))
    return Spec(n_inputs=nx, n_outputs=ny, disjuncts=disjuncts)


def parse_vnnlib(
    path: str | Path,
    n_inputs: int | None = None,
    n_outputs: int | None = None,
    max_terms: int = MAX_TERMS,
) -> Spec:
    """Read and parse a `.vnnlib` file (plain text; a `.gz` file is decompressed). See `parse_vnnlib_text`."""
    path = Path(path)
    raw = read_input_bytes(path, "spec file")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise InputError(f"{path}: not a text file (byte {e.start} is not UTF-8)") from None
    spec = parse_vnnlib_text(text, n_inputs, n_outputs, source=str(path), max_terms=max_terms)
    spec.path = str(path)
    return spec

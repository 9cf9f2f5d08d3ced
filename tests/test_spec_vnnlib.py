"""VNN-LIB parser: hand-derived values for ACAS Xu / MNIST properties, every syntactic form, errors, speed,
and a property test (random boxes + random linear output constraints -> text -> parse -> same numbers)."""
from __future__ import annotations

import re
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from verify.errors import InputError
from verify.spec.vnnlib import parse_vnnlib, parse_vnnlib_text

SHARED = Path(__file__).resolve().parents[2] / "shared"
BENCH = SHARED / "benchmarks"


def decl(nx: int, ny: int) -> str:
    return "".join(f"(declare-const X_{i} Real)\n" for i in range(nx)) + "".join(
        f"(declare-const Y_{j} Real)\n" for j in range(ny)
    )


def row(n: int, entries: dict[int, float]) -> list[float]:
    r = [0.0] * n
    for j, v in entries.items():
        r[j] = v
    return r


# --------------------------------------------------------------------------- ACAS Xu, hand-derived
ACAS_PROP_6 = decl(5, 5) + """
; Spec 6
(assert (or
    (and (<= X_0 0.700434925) (>= X_0 -0.129289109) (<= X_1 0.499999896) (>= X_1 0.11140846) (<= X_2 -0.499204121) (>= X_2 -0.499999896) (<= X_3 0.5) (>= X_3 -0.5) (<= X_4 0.5) (>= X_4 -0.5))
    (and (<= X_0 0.700434925) (>= X_0 -0.129289109) (<= X_1 -0.11140846) (>= X_1 -0.499999896) (<= X_2 -0.499204121) (>= X_2 -0.499999896) (<= X_3 0.5) (>= X_3 -0.5) (<= X_4 0.5) (>= X_4 -0.5))
))

; unsafe if coc is not minimal
(assert (or
    (and (<= Y_1 Y_0))
    (and (<= Y_2 Y_0))
    (and (<= Y_3 Y_0))
    (and (<= Y_4 Y_0))
))
"""


def test_acas_prop6_two_boxes_times_four_outputs():
    spec = parse_vnnlib_text(ACAS_PROP_6)
    assert (spec.n_inputs, spec.n_outputs) == (5, 5)
    box1 = ([-0.129289109, 0.11140846, -0.499999896, -0.5, -0.5], [0.700434925, 0.499999896, -0.499204121, 0.5, 0.5])
    box2 = ([-0.129289109, -0.499999896, -0.499999896, -0.5, -0.5], [0.700434925, -0.11140846, -0.499204121, 0.5, 0.5])
    assert len(spec.disjuncts) == 8
    for k, dj in enumerate(spec.disjuncts):
        lo, hi = box1 if k < 4 else box2
        assert dj.lower.tolist() == lo and dj.upper.tolist() == hi
        j = k % 4 + 1  # Y_j <= Y_0  <=>  -Y_0 + Y_j <= 0
        assert dj.C.tolist() == [row(5, {0: -1.0, j: 1.0})]
        assert dj.d.tolist() == [0.0]
    regions = spec.regions()
    assert len(regions) == 2 and all(len(terms) == 4 for _, _, terms in regions)


def test_acas_prop1_and_prop7_from_benchmarks():
    if not BENCH.is_dir():
        pytest.skip(f"shared benchmarks not found at {BENCH}")
    s1 = parse_vnnlib(BENCH / "acasxu" / "vnnlib" / "prop_1.vnnlib", n_inputs=5, n_outputs=5)
    assert len(s1.disjuncts) == 1
    dj = s1.disjuncts[0]
    assert dj.lower.tolist() == [0.6, -0.5, -0.5, 0.45, -0.5]
    assert dj.upper.tolist() == [0.679857769, 0.5, 0.5, 0.5, -0.45]
    assert dj.C.tolist() == [[-1.0, 0.0, 0.0, 0.0, 0.0]] and dj.d.tolist() == [-3.991125645861615]
    s7 = parse_vnnlib(BENCH / "acasxu" / "vnnlib" / "prop_7.vnnlib")
    assert len(s7.disjuncts) == 2
    for dj, t in zip(s7.disjuncts, (3, 4)):  # Y_t <= Y_k for k = 0, 1, 2
        assert dj.C.tolist() == [row(5, {k: -1.0, t: 1.0}) for k in range(3)]
        assert dj.d.tolist() == [0.0, 0.0, 0.0]
        assert dj.lower.tolist() == [-0.328422877, -0.499999896, -0.499999896, -0.5, -0.5]
        assert dj.upper.tolist() == [0.679857769, 0.499999896, 0.499999896, 0.5, 0.5]


# --------------------------------------------------------------------------- MNIST
def _regex_box(text: str, n: int) -> tuple[np.ndarray, np.ndarray]:
    """An independent reading of one-bound-per-assert input lines."""
    lo, hi = np.full(n, np.nan), np.full(n, np.nan)
    for op, i, v in re.findall(r"\(assert \((<=|>=) X_(\d+) ([-+0-9.eE]+)\)\)", text):
        (hi if op == "<=" else lo)[int(i)] = float(v)
    return lo, hi


@pytest.mark.parametrize("name,label", [("mnist_fc_2021/vnnlib/prop_0_0.03.vnnlib", 8),
                                        ("eran_2021/vnnlib/mnist_spec_idx_1013_eps_0.01500.vnnlib", 9)])
def test_mnist_props(name, label):
    path = BENCH / name
    if not path.is_file():
        pytest.skip(f"benchmark spec not found: {path}")
    spec = parse_vnnlib(path, n_inputs=784, n_outputs=10)
    lo, hi = _regex_box(path.read_text(), 784)
    assert not np.isnan(lo).any() and not np.isnan(hi).any()
    others = [j for j in range(10) if j != label]
    assert len(spec.disjuncts) == 9
    for dj, j in zip(spec.disjuncts, others):  # Y_j >= Y_label  <=>  Y_label - Y_j <= 0
        assert np.array_equal(dj.lower, lo) and np.array_equal(dj.upper, hi)
        assert dj.C.tolist() == [row(10, {label: 1.0, j: -1.0})]
        assert dj.d.tolist() == [0.0]
    assert len(spec.regions()) == 1


def test_every_benchmark_spec_parses():
    files = sorted(BENCH.glob("*/vnnlib/*.vnnlib"))
    if not files:
        pytest.skip(f"no benchmark specs under {BENCH}")
    for f in files:
        spec = parse_vnnlib(f)
        assert spec.disjuncts, f
        for dj in spec.disjuncts:
            assert np.all(dj.lower <= dj.upper) and np.all(np.isfinite(dj.lower)) and np.all(np.isfinite(dj.upper))
            assert dj.C.shape == (len(dj.d), spec.n_outputs)


def test_784_input_spec_parses_fast():
    from verify.spec.robustness import robustness_spec

    rng = np.random.default_rng(0)
    text = robustness_spec(rng.random(784), 3, 0.02, 10)
    best = min(_timed(lambda: parse_vnnlib_text(text)) for _ in range(3))
    assert best < 0.1, f"784-input spec took {best:.3f} s"
    files = sorted(BENCH.glob("*/vnnlib/*.vnnlib"), key=lambda p: p.stat().st_size)
    if files:
        best = min(_timed(lambda: parse_vnnlib(files[-1])) for _ in range(3))
        assert best < 0.1, f"{files[-1]} took {best:.3f} s"


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


# --------------------------------------------------------------------------- every syntactic form
def test_linear_terms_every_form():
    text = decl(3, 4) + """
    ; comments anywhere ; (assert (<= X_0 99))
    (assert (<= X_0 1e-2))            (assert (>= X_0 -2.5E-1)) ; scientific notation
    (assert (< (- X_1) 3))            ; -X_1 < 3  ->  X_1 >= -3 (strict read as non-strict)
    (assert (> 4.0 X_1))              ; X_1 < 4
    (assert (<= (* 2.0 X_2) 1))       ; X_2 <= 0.5
    (assert (>= (* -4 X_2) (- 8)))    ; -4 X_2 >= -8  ->  X_2 <= 2 (looser; 0.5 kept)
    (assert (>= (+ X_2 1) 0.75))      ; X_2 >= -0.25
    (assert (<= (+ Y_0 (* -1 Y_3)) 0.5))
    (assert (>= (* 2.0 Y_1) (- Y_2 Y_0 -3)))
    (assert (<= (/ (- Y_3 Y_1) 4) (+ 1 (* 0.5 2))))
    (assert (<= 0 1))                 ; constant true: no row
    (check-sat)
    """
    spec = parse_vnnlib_text(text)
    (dj,) = spec.disjuncts
    assert dj.lower.tolist() == [-0.25, -3.0, -0.25]
    assert dj.upper.tolist() == [0.01, 4.0, 0.5]
    assert dj.C.tolist() == [
        [1.0, 0.0, 0.0, -1.0],   # Y_0 - Y_3 <= 0.5
        [-1.0, -2.0, 1.0, 0.0],  # Y_2 - Y_0 + 3 - 2 Y_1 <= 0
        [0.0, -0.25, 0.0, 0.25],  # (Y_3 - Y_1)/4 <= 2
    ]
    assert dj.d.tolist() == [0.5, -3.0, 2.0]


def test_nested_and_or_to_dnf():
    text = decl(1, 3) + """
    (assert (and (or (and (>= X_0 0) (<= X_0 1)) (and (>= X_0 2) (<= X_0 3)))))
    (assert (or (and (or (<= Y_0 1) (<= Y_1 2)) (<= Y_2 3)) (>= Y_0 Y_1)))
    """
    spec = parse_vnnlib_text(text)
    got = [(dj.lower[0], dj.upper[0], dj.C.tolist(), dj.d.tolist()) for dj in spec.disjuncts]
    terms = [([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]], [1.0, 3.0]),
             ([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0]], [2.0, 3.0]),
             ([[-1.0, 1.0, 0.0]], [0.0])]
    want = [(lo, hi, C, d) for lo, hi in ((0.0, 1.0), (2.0, 3.0)) for C, d in terms]
    assert got == want
    assert len(spec.regions()) == 2


def test_chained_equal_and_false_branches():
    text = decl(2, 2) + """
    (assert (<= -1 X_0 1))               ; chain: -1 <= X_0 and X_0 <= 1
    (assert (= X_1 0.25))
    (assert (or (<= 1 0) (and (<= X_0 5) (<= Y_0 Y_1)) false))  ; false branches vanish
    (assert (or (and (>= X_0 0.5) (<= X_0 0.0)) (<= Y_1 7)))     ; empty-box branch vanishes
    """
    spec = parse_vnnlib_text(text)
    (dj,) = spec.disjuncts
    assert dj.lower.tolist() == [-1.0, 0.25] and dj.upper.tolist() == [1.0, 0.25]
    assert dj.C.tolist() == [[1.0, -1.0], [0.0, 1.0]] and dj.d.tolist() == [0.0, 7.0]


def test_bounds_only_spec_and_ignored_commands():
    text = "(set-logic QF_LRA)\n" + decl(1, 1) + "(assert (>= X_0 -1))\n(assert (<= X_0 1))\n(check-sat)\n(exit)\n"
    (dj,) = parse_vnnlib_text(text).disjuncts
    assert dj.C.shape == (0, 1) and dj.d.shape == (0,)


# --------------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    "body,where,msg",
    [
        ("(assert (<= X_0 1)\n", "3:1", "expected ')'"),
        ("(assert (<= X_0 1)))\n", "2:20", "expected '('"),
        ("(assert (foo X_0 1))\n", "2:10", "expected 'and', 'or' or a comparison"),
        ("(assert (<= X_0 abc))\n", "2:17", "expected a number or a declared variable"),
        ("(assert (<= X_7 1))\n", "2:13", "used before its declaration"),
        ("(assert (<= (^ X_0 2) 1))\n", "2:14", "expected an arithmetic operator"),
        ("(frobnicate)\n", "2:2", "expected 'declare-const' or 'assert'"),
        ("(assert (<= (* X_0 X_0) 1))\n", "2:20", "unsupported: a product of two variables"),
        ("(assert (<= X_0 Y_0))\n", "2:13", "unsupported: a constraint mixing input (X) and output (Y)"),
    ],
)
def test_malformed_text_reports_line_and_column(body, where, msg):
    text = "(declare-const X_0 Real) (declare-const Y_0 Real)\n" + body
    with pytest.raises(InputError) as e:
        parse_vnnlib_text(text, source="bad.vnnlib")
    assert str(e.value).startswith(f"bad.vnnlib:{where}: "), str(e.value)
    assert msg in str(e.value)


def test_semantic_errors():
    with pytest.raises(InputError, match="unsupported: a linear constraint over several input"):
        parse_vnnlib_text(decl(2, 1) + "(assert (<= (+ X_0 X_1) 1))")
    with pytest.raises(InputError, match="X_1 has no lower bound"):
        parse_vnnlib_text(decl(2, 1) + "(assert (<= X_0 1)) (assert (>= X_0 0)) (assert (<= X_1 1))")
    with pytest.raises(InputError, match="X_0 has no upper bound in disjunct 1"):
        parse_vnnlib_text(decl(1, 1) + "(assert (or (<= 0 X_0 1) (>= X_0 2)))")
    with pytest.raises(InputError, match="declares 1 inputs .X_i. but the model has 784"):
        parse_vnnlib_text(decl(1, 1) + "(assert (<= 0 X_0 1))", n_inputs=784)
    with pytest.raises(InputError, match="X_1 is not declared"):
        parse_vnnlib_text("(declare-const X_0 Real)(declare-const X_2 Real)(declare-const Y_0 Real)")
    with pytest.raises(InputError, match="duplicate declaration"):
        parse_vnnlib_text("(declare-const X_0 Real)(declare-const X_0 Real)")
    with pytest.raises(InputError, match="cannot read spec file"):
        parse_vnnlib("/nonexistent/spec.vnnlib")


def test_dnf_blowup_is_capped():
    n = 20  # 2^20 terms if expanded
    text = decl(n, 1) + "".join(f"(assert (or (<= 0 X_{i} 1) (<= 2 X_{i} 3)))\n" for i in range(n))
    with pytest.raises(InputError, match=r"expands to 1048576 disjunctive-normal-form terms \(limit 1000\)"):
        parse_vnnlib_text(text, max_terms=1000)
    ok = decl(3, 1) + "".join(f"(assert (or (<= 0 X_{i} 1) (<= 2 X_{i} 3)))\n" for i in range(3))
    assert len(parse_vnnlib_text(ok, max_terms=8).disjuncts) == 8


# --------------------------------------------------------------------------- property test
finite = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False)
coef = st.floats(min_value=-8, max_value=8, allow_nan=False).filter(lambda c: c != 0.0)


@st.composite
def specs(draw):
    nx = draw(st.integers(1, 6))
    ny = draw(st.integers(1, 5))
    boxes = []
    for _ in range(draw(st.integers(1, 3))):
        a = np.array([draw(finite) for _ in range(nx)])
        b = np.array([draw(finite) for _ in range(nx)])
        boxes.append((np.minimum(a, b), np.maximum(a, b)))
    terms = []
    for _ in range(draw(st.integers(1, 4))):
        rows = []
        for _ in range(draw(st.integers(1, 3))):
            idx = draw(st.lists(st.integers(0, ny - 1), min_size=1, max_size=ny, unique=True))
            rows.append(({j: draw(coef) for j in idx}, draw(finite)))
        terms.append(rows)
    style = draw(st.integers(0, 3))
    return nx, ny, boxes, terms, style


def _bound_text(i: int, v: float, upper: bool, style: int) -> str:
    x, v = f"X_{i}", float(v)
    if style == 0:
        return f"({'<=' if upper else '>='} {x} {v!r})"
    if style == 1:
        return f"({'>=' if upper else '<='} {v!r} {x})"
    if style == 2:  # scaled by 2: exact in binary floating point
        return f"({'<=' if upper else '>='} (* 2 {x}) {2 * v!r})"
    return f"({'>=' if upper else '<='} (- {x}) {-v!r})"


def _row_text(r: dict[int, float], d: float, style: int) -> str:
    lin = " ".join(f"(* {c!r} Y_{j})" for j, c in r.items())
    return f"(<= (+ {lin}) {d!r})" if style % 2 == 0 else f"(>= {d!r} (+ {lin}))"


@settings(max_examples=60, deadline=None)
@given(specs())
def test_random_specs_round_trip(case):
    nx, ny, boxes, terms, style = case
    box_terms = [
        "(and " + " ".join(_bound_text(i, lo[i], False, style) + " " + _bound_text(i, hi[i], True, style)
                           for i in range(nx)) + ")"
        for lo, hi in boxes
    ]
    out_terms = ["(and " + " ".join(_row_text(r, d, style) for r, d in rows) + ")" for rows in terms]
    text = decl(nx, ny) + f"(assert (or {' '.join(box_terms)}))\n(assert (or {' '.join(out_terms)}))\n"
    spec = parse_vnnlib_text(text, n_inputs=nx, n_outputs=ny)
    assert len(spec.disjuncts) == len(boxes) * len(terms)
    k = 0
    for lo, hi in boxes:
        for rows in terms:
            dj = spec.disjuncts[k]
            k += 1
            assert np.array_equal(dj.lower, lo) and np.array_equal(dj.upper, hi)
            C = np.array([row(ny, r) for r, _ in rows])
            d = np.array([dv for _, dv in rows])
            assert np.array_equal(dj.C, C) and np.array_equal(dj.d, d)


def test_deep_nesting_is_an_input_error():
    depth = 5000
    text = decl(1, 1) + "(assert " + "(and " * depth + "(<= 0 X_0 1)" + ")" * depth + ")"
    with pytest.raises(InputError, match="nested too deeply"):
        parse_vnnlib_text(text)
    ok = 50
    text = decl(1, 1) + "(assert " + "(and (or " * ok + "(<= 0 X_0 1)" + "))" * ok + ")"
    assert len(parse_vnnlib_text(text).disjuncts) == 1


_FUZZ_TOKENS = ["(", ")", "(", ")", "assert", "declare-const", "X_0", "Y_0", "X_1", "Real", "<=", ">=", "=",
                "and", "or", "+", "-", "*", "/", "1", "-2.5", "0", "1e3", "foo", ";c\n", "\n", "true", "false"]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(_FUZZ_TOKENS), max_size=40))
def test_garbage_raises_only_input_error(tokens):
    text = "(declare-const X_0 Real)(declare-const Y_0 Real)" + " ".join(tokens)
    try:
        spec = parse_vnnlib_text(text)
    except InputError as e:
        assert str(e).startswith("<vnnlib>")
    else:
        assert all(np.all(dj.lower <= dj.upper) for dj in spec.disjuncts)

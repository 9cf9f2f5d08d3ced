"""VNN-COMP result files: exact text, float64 round trip, the forms other tools write, and bad files."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from verify.errors import InputError
from verify.spec.results import format_result, parse_result_text, read_result, write_result


def test_sat_text_is_exact():
    x = np.array([0.5, -1.25e-05], dtype=np.float64)
    y = np.float32([0.1, 3.0])
    assert format_result("sat", x, y) == (
        "sat\n(\n(X_0 0.5)\n(X_1 -1.25e-05)\n(Y_0 0.10000000149011612)\n(Y_1 3.0)\n)\n"
    )


@pytest.mark.parametrize("verdict", ["unsat", "unknown", "timeout", "error"])
def test_other_verdicts(verdict, tmp_path):
    assert format_result(verdict) == verdict + "\n"
    p = tmp_path / "sub" / "r.txt"
    write_result(p, verdict)
    assert read_result(p) == (verdict, None, None)


def test_bad_calls():
    with pytest.raises(ValueError):
        format_result("violated")
    with pytest.raises(ValueError):
        format_result("sat")
    assert format_result("unsat", x=[1.0], y=[2.0]) == "unsat\n"


floats = st.floats(allow_nan=False, allow_infinity=False, width=64)


@settings(max_examples=80, deadline=None)
@given(st.lists(floats, min_size=1, max_size=12), st.lists(floats, min_size=1, max_size=6))
def test_round_trip_is_bit_exact(xs, ys):
    verdict, x, y = parse_result_text(format_result("sat", xs, ys))
    assert verdict == "sat"
    assert [repr(v) for v in x.tolist()] == [repr(v) for v in xs]
    assert [repr(v) for v in y.tolist()] == [repr(v) for v in ys]


def test_write_and_read_file(tmp_path):
    p = tmp_path / "out" / "result.txt"
    write_result(p, "sat", x=np.array([[1.0, 2.0]]), y=[-3.5])
    assert p.read_text().splitlines()[0] == "sat"
    verdict, x, y = read_result(p)
    assert verdict == "sat" and x.tolist() == [1.0, 2.0] and y.tolist() == [-3.5]


def test_reads_other_tools_forms():
    text = "violated\n((X_1 (- 0.5))\n (X_0 1e-3)\n (Y_0 (- 2)))\n"
    verdict, x, y = parse_result_text(text)
    assert verdict == "sat" and x.tolist() == [0.001, -0.5] and y.tolist() == [-2.0]
    assert parse_result_text("\n  holds \n") == ("unsat", None, None)
    assert parse_result_text("TIMEOUT\n") == ("timeout", None, None)


@pytest.mark.parametrize(
    "text,msg",
    [
        ("", "empty result file"),
        ("maybe\n", "r.txt:1: expected a verdict"),
        ("unsat\n((X_0 1.0))\n", "r.txt:2: unexpected text"),
        ("sat\n((X_0 1.0)\n (Y_0 abc))\n", "r.txt:3: expected '(X_i value)'"),
        ("sat\n((X_0 1.0)\n (X_2 1.0)\n (Y_0 0.0))\n", "X_1 is missing"),
        ("sat\n((X_0 1.0)\n (X_0 1.0)\n (Y_0 0.0))\n", "r.txt:3: X_0 given twice"),
        ("sat\n((X_0 1.0))\n", "Y_0, Y_1, ..."),
        ("sat\n((X_0 1.0)\n (Y_0 0.0)\n", "unbalanced parentheses"),
    ],
)
def test_bad_files(text, msg):
    with pytest.raises(InputError, match=None) as e:
        parse_result_text(text, source="r.txt")
    assert msg in str(e.value)


def test_missing_file(tmp_path):
    with pytest.raises(InputError, match="cannot read result file"):
        read_result(tmp_path / "nope.txt")

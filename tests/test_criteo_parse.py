"""Parsing and validating chunks of real rows: values, padding, line endings, every
malformed kind in strict (file:line: field: problem) and lenient (skipped and counted)."""

from pathlib import Path

import numpy as np
import pytest

from cce_dlrm.data.criteo import parse
from cce_dlrm.data.criteo.errors import CriteoInputError
from cce_dlrm.data.criteo.features import dense_features
from cce_dlrm.data.criteo.parse import parse_chunk
from cce_dlrm.data.criteo.schema import (
    BAD_CATEGORICAL, BAD_DENSE, BAD_LABEL, EMPTY_LINE, LONG_CATEGORICAL, TOO_MANY_FIELDS,
    TRUNCATED_ROW,
)
from cce_dlrm.data.criteo.source import LineChunk

FIXTURE = Path(__file__).parent / "fixtures" / "criteo" / "kaggle_rows_400.txt"
ROWS = FIXTURE.read_text().splitlines()


def chunk(lines, first_line=0, unterminated=False, crlf=False):
    end = "\r\n" if crlf else "\n"
    text = (end.join(lines) + end).encode()
    return LineChunk(0, bytearray(text), len(text), first_line, len(lines), 0, len(text), unterminated)


def with_field(row, col, value):
    fields = row.split("\t")
    fields[col] = value
    return "\t".join(fields)


def python_values(lines):
    """Reference values, computed field by field in Python."""
    rows = [(ln.split("\t") + [""] * 40)[:40] for ln in lines]
    labels = [int(r[0]) for r in rows]
    dense = [[int(x) if x else 0 for x in r[1:14]] for r in rows]
    cats = [[int(x, 16) if x else -1 for x in r[14:40]] for r in rows]
    return labels, np.array(dense).T, np.array(cats).T


def test_real_rows_match_python():
    rows = parse_chunk(chunk(ROWS, first_line=1000), "f.txt", strict=True)
    labels, dense, cats = python_values(ROWS)
    assert rows.labels.tolist() == labels and rows.labels.dtype == np.uint8
    assert (rows.dense == dense).all() and (rows.cats == cats).all()
    assert rows.lines.tolist() == list(range(1000, 1400))
    assert not rows.skipped and rows.padded == 0
    assert (rows.dense < 0).any() and (rows.cats == -1).any()  # negatives, empties present


def test_fast_and_checked_paths_agree():
    c = chunk(ROWS)
    fast, checked = parse._parse_fast(c), parse._parse_checked(c, "f.txt", strict=True)
    assert fast is not None
    for name in ("lines", "labels", "dense", "cats"):
        assert np.array_equal(getattr(fast, name), getattr(checked, name)), name


def test_hex_values_beyond_int32_and_short_or_uppercase():
    values = ["ffffffff", "80000000", "7fffffff", "00000000", "FFFFFFFE", "1a", "", "0000000a"]
    lines = [with_field(ROWS[0], 14 + i, v) for i, v in enumerate(values)]
    rows = parse_chunk(chunk(lines), "f.txt", strict=True)
    got = [rows.cats[i, i] for i in range(len(values))]
    assert got == [0xFFFFFFFF, 0x80000000, 0x7FFFFFFF, 0, 0xFFFFFFFE, 26, -1, 10]
    assert rows.cats.dtype == np.int64


def test_crlf_endings():
    a = parse_chunk(chunk(ROWS), "f.txt", strict=True)
    b = parse_chunk(chunk(ROWS, crlf=True), "f.txt", strict=True)
    assert (a.cats == b.cats).all() and (a.dense == b.dense).all() and (a.labels == b.labels).all()


def test_stripped_trailing_fields_are_padded_and_counted():
    full = [with_field(with_field(ROWS[i], 38, ""), 39, "") for i in range(5)]
    stripped = list(full)
    stripped[1] = full[1].rstrip("\t")      # the two empty trailing fields stripped
    stripped[3] = "1"                       # only the label left
    expected = list(full)
    expected[3] = "1" + "\t" * 39
    for crlf in (False, True):
        rows = parse_chunk(chunk(stripped, crlf=crlf), "f.txt", strict=True)
        ref = parse_chunk(chunk(expected), "f.txt", strict=True)
        assert rows.padded == 2 and not rows.skipped
        assert (rows.cats == ref.cats).all() and (rows.dense == ref.dense).all()
        assert (rows.cats[:, 3] == -1).all() and (rows.dense[:, 3] == 0).all()


# (mutation of row 37, kind, field, words of the problem)
MALFORMED = [
    (lambda r: with_field(r, 0, "2"), BAD_LABEL, "label", "must be 0 or 1, found '2'"),
    (lambda r: with_field(r, 0, ""), BAD_LABEL, "label", "empty label"),
    (lambda r: with_field(r, 0, "01"), BAD_LABEL, "label", "found '01'"),
    (lambda r: with_field(r, 3, "x5"), BAD_DENSE, "I3", "not an integer"),
    (lambda r: with_field(r, 3, "1.5"), BAD_DENSE, "I3", "'1.5'"),
    (lambda r: with_field(r, 3, " 5"), BAD_DENSE, "I3", "not an integer"),
    (lambda r: with_field(r, 3, "0x1f"), BAD_DENSE, "I3", "'0x1f'"),
    (lambda r: with_field(r, 3, "-"), BAD_DENSE, "I3", "not an integer"),
    (lambda r: with_field(r, 13, "99999999999999999999"), BAD_DENSE, "I13", "outside int64"),
    (lambda r: with_field(r, 18, "zz12ab34"), BAD_CATEGORICAL, "C5", "not hexadecimal: 'zz12ab34'"),
    (lambda r: with_field(r, 18, "-1"), BAD_CATEGORICAL, "C5", "not hexadecimal"),
    (lambda r: with_field(r, 39, "123456789"), LONG_CATEGORICAL, "C26", "more than 8 hex digits"),
    (lambda r: with_field(r, 20, "ab\rcd"), BAD_CATEGORICAL, "C7", "carriage return"),
    (lambda r: with_field(r, 2, "\r"), BAD_DENSE, "I2", "carriage return"),
    (lambda r: r + "\textra", TOO_MANY_FIELDS, None, "41 tab-separated fields, expected 40"),
    (lambda r: r + "\te\rxtra", TOO_MANY_FIELDS, None, "41 tab-separated fields"),
    (lambda r: "", EMPTY_LINE, None, "empty line"),
]


@pytest.mark.parametrize("mutate, kind, field, problem", MALFORMED)
def test_malformed_row_strict(mutate, kind, field, problem):
    lines = list(ROWS[:60])
    lines[37] = mutate(lines[37])
    with pytest.raises(CriteoInputError) as err:
        parse_chunk(chunk(lines, first_line=500), "day_3.gz", strict=True)
    e = err.value
    assert (e.file, e.line, e.field) == ("day_3.gz", 538, field)  # line 500 + 37, 1-based
    assert problem in str(e) and str(e).startswith("day_3.gz:538: ")
    if field:
        assert f"field {field}: " in str(e)


@pytest.mark.parametrize("mutate, kind, field, problem", MALFORMED)
def test_malformed_row_lenient(mutate, kind, field, problem):
    lines = list(ROWS[:60])
    lines[37] = mutate(lines[37])
    rows = parse_chunk(chunk(lines, first_line=500), "f.txt", strict=False)
    assert dict(rows.skipped) == {kind: 1}
    assert rows.lines.tolist() == [500 + i for i in range(60) if i != 37]
    good = parse_chunk(chunk(ROWS[:37] + ROWS[38:60]), "f.txt", strict=True)
    assert (rows.cats == good.cats).all() and (rows.dense == good.dense).all()


def test_cut_off_last_line():
    lines = list(ROWS[:10])
    lines[-1] = "\t".join(lines[-1].split("\t")[:23])
    with pytest.raises(CriteoInputError, match=r"f.txt:10: last line is cut off \(23 of 40"):
        parse_chunk(chunk(lines, unterminated=True), "f.txt", strict=True)
    rows = parse_chunk(chunk(lines, unterminated=True), "f.txt", strict=False)
    assert dict(rows.skipped) == {TRUNCATED_ROW: 1} and len(rows) == 9
    # the same short line followed by a newline is a stripped row: padded, kept
    rows = parse_chunk(chunk(lines), "f.txt", strict=True)
    assert len(rows) == 10 and rows.padded == 1


def test_first_problem_in_file_order_is_reported():
    lines = list(ROWS[:20])
    lines[5] = lines[5] + "\tx"                # structural problem
    lines[3] = with_field(lines[3], 20, "g")   # content problem, earlier
    with pytest.raises(CriteoInputError, match=r"^f.txt:4: field C7: not hexadecimal"):
        parse_chunk(chunk(lines), "f.txt", strict=True)


def test_row_with_several_problems_is_counted_once():
    lines = list(ROWS[:20])
    lines[2] = with_field(with_field(with_field(lines[2], 0, "7"), 4, "y"), 30, "q")
    rows = parse_chunk(chunk(lines), "f.txt", strict=False)
    assert dict(rows.skipped) == {BAD_LABEL: 1} and len(rows) == 19


def test_every_row_bad_in_lenient_mode():
    rows = parse_chunk(chunk(["", "", "x"]), "f.txt", strict=False)
    assert len(rows) == 0 and rows.skipped == {EMPTY_LINE: 2, BAD_LABEL: 1}


def test_dense_transform():
    raw = np.array([[-5, 0, 1, 10**6, 2**62]] * 13, np.int64)
    out = dense_features(raw)
    assert out.shape == (5, 13) and out.dtype == np.float32 and out.flags.c_contiguous
    expected = np.log1p(np.array([0, 0, 1, 10**6, 2**62], np.float64)).astype(np.float32)
    assert (out == expected[:, None]).all()

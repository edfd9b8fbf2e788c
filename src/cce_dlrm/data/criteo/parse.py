"""Parsing one chunk of raw lines into validated columns, with pyarrow's CSV reader.

Two paths give the same result for the same lines:

* the fast path reads the chunk with typed columns (integers parsed by pyarrow, in
  threads) and only checks that nothing was irregular;
* any irregularity (a short or long row, an empty line, a bad value anywhere) sends the
  chunk down the checked path, which finds every problem with its line number, pads rows
  whose trailing empty fields were stripped, and either raises for the first problem
  (strict) or drops the bad rows and counts them by kind (lenient).

Accepted values: label ``0``/``1``; integers ``-?[0-9]+`` within int64 (empty = 0);
categoricals of 1 to 8 hex digits, either case (empty is its own value, -1 here).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from cce_dlrm.data.criteo import binary
from cce_dlrm.data.criteo.errors import CriteoInputError, show_value
from cce_dlrm.data.criteo.schema import (
    BAD_CATEGORICAL, BAD_DENSE, BAD_LABEL, CATEGORICAL_COLUMNS, DENSE_COLUMNS, EMPTY_LINE,
    FIELD_NAMES, LONG_CATEGORICAL, MAX_HEX_DIGITS, NUM_CATEGORICAL, NUM_DENSE, NUM_FIELDS,
    TOO_MANY_FIELDS, TRUNCATED_ROW,
)
from cce_dlrm.data.criteo.source import LineChunk

_PARSE = dict(delimiter="\t", quote_char=False, double_quote=False, escape_char=False,
              newlines_in_values=False)
_FAST_TYPES = {
    name: (pa.int64() if i in DENSE_COLUMNS else pa.binary()) for i, name in enumerate(FIELD_NAMES)
}
_BINARY_TYPES = {name: pa.binary() for name in FIELD_NAMES}
_CONVERT = dict(null_values=[""], strings_can_be_null=False, quoted_strings_can_be_null=False)
# pyarrow's integer parser also takes " 5" and "0x1f"; rows with these characters go
# down the checked path, which rejects them, so both paths accept the same integers.
_INT_EXTRAS = (b" ", b"x", b"X")
_INT64_DIGITS = 18  # any decimal of up to 18 digits fits in int64


@dataclass
class ParsedRows:
    """The valid rows of one chunk, in file order (n rows)."""

    lines: np.ndarray  # (n,) int64: 0-based line number of each row in its file
    labels: np.ndarray  # (n,) uint8
    dense: np.ndarray  # (13, n) int64 raw integers, empty = 0
    cats: np.ndarray  # (26, n) int64 raw categorical values 0..2^32-1, empty = -1
    skipped: Counter = field(default_factory=Counter)  # malformed kind -> rows skipped
    padded: int = 0  # rows whose stripped trailing fields were filled in

    def __len__(self) -> int:
        return len(self.labels)


def _read(data: bytes, types: dict, on_invalid=None, threads: bool = True) -> pa.Table:
    # pyarrow parses blocks in parallel threads; 4 MiB blocks measured fastest (2 cores)
    block = 4 << 20
    return pacsv.read_csv(
        pa.BufferReader(pa.py_buffer(data)),
        read_options=pacsv.ReadOptions(column_names=FIELD_NAMES, block_size=block,
                                       use_threads=threads),
        parse_options=pacsv.ParseOptions(**_PARSE, ignore_empty_lines=True,
                                         invalid_row_handler=on_invalid),
        convert_options=pacsv.ConvertOptions(column_types=types, **_CONVERT),
    )


def _labels(column: pa.ChunkedArray) -> np.ndarray | None:
    """Binary label column -> (n,) uint8, or None unless every value is exactly 0 or 1."""
    parts = []
    for arr in column.chunks:
        offsets, data = binary.buffers(arr)
        chars = data[offsets[0]:offsets[-1]]
        if len(chars) != len(arr) or not ((chars == 48) | (chars == 49)).all():
            return None
        parts.append(chars - np.uint8(48))
    return np.concatenate(parts) if parts else np.zeros(0, np.uint8)


def _hex_into(column: pa.ChunkedArray, out: np.ndarray) -> bool:
    """Writes the column's hex values into ``out`` (n,); False if any value is not hex."""
    pos = 0
    for arr in column.chunks:
        if binary.hex_column(arr, out[pos:pos + len(arr)]) is None:
            return False
        pos += len(arr)
    return True


def _ints_into(column: pa.ChunkedArray, out: np.ndarray) -> None:
    """Writes an int64 column into ``out`` (n,), nulls (empty fields) as 0."""
    pos = 0
    for arr in column.chunks:
        n = len(arr)
        part = out[pos:pos + n]
        validity, values = arr.buffers()
        part[:] = np.frombuffer(values, np.int64, n, arr.offset * 8)
        if arr.null_count:  # a null's slot holds no defined value: multiply by the valid bit
            bits = np.unpackbits(np.frombuffer(validity, np.uint8), count=arr.offset + n,
                                 bitorder="little")[arr.offset:]
            part *= bits
        pos += n


def _empty_rows() -> ParsedRows:
    return ParsedRows(np.zeros(0, np.int64), np.zeros(0, np.uint8),
                      np.zeros((NUM_DENSE, 0), np.int64), np.zeros((NUM_CATEGORICAL, 0), np.int64))


def _parse_fast(chunk: LineChunk, threads: bool = True) -> ParsedRows | None:
    """Typed read of a clean chunk; None as soon as anything is irregular."""
    if any(chunk.contains(extra) for extra in _INT_EXTRAS):
        return None
    data = chunk.data
    invalid = []
    try:
        table = _read(data, _FAST_TYPES, lambda row: invalid.append(1) or "skip", threads)
    except pa.ArrowInvalid:  # an integer column holds a non-integer
        return None
    if invalid or table.num_rows != chunk.n_lines:  # short/long rows, empty lines
        return None
    labels = _labels(table.column(0))
    if labels is None:
        return None
    cats = np.empty((NUM_CATEGORICAL, table.num_rows), np.int64)
    for j, col in enumerate(CATEGORICAL_COLUMNS):
        if not _hex_into(table.column(col), cats[j]):
            return None
    dense = np.empty((NUM_DENSE, table.num_rows), np.int64)
    for j, col in enumerate(DENSE_COLUMNS):
        _ints_into(table.column(col), dense[j])
    lines = np.arange(chunk.first_line, chunk.first_line + chunk.n_lines, dtype=np.int64)
    return ParsedRows(lines, labels, dense, cats)


def parse_chunk(chunk: LineChunk, file: str, strict: bool, threads: bool = True) -> ParsedRows:
    """Validated rows of one chunk of ``file`` (the name used in error messages);
    ``threads``: let pyarrow parse with all CPUs.

    Raises CriteoInputError for the first malformed line if ``strict``.
    """
    if chunk.n_lines == 0:
        return _empty_rows()
    return _parse_fast(chunk, threads) or _parse_checked(chunk, file, strict)


# ----------------------------------------------------------------------------------------
# The checked path


@dataclass
class _Problem:
    line: int  # index of the line within the chunk
    kind: str
    problem: str
    field: str | None = None
    column: int = -1  # field's column, to keep the first bad field of a row


def _kind_of_column(col: int) -> str:
    return BAD_LABEL if col == 0 else BAD_DENSE if col <= NUM_DENSE else BAD_CATEGORICAL


def _line_structure(data: bytes):
    """Per line of ``data``: start, end (without '\\r\\n'), number of tab-separated fields;
    and the problems of carriage returns inside lines (pyarrow would split lines there)."""
    b = np.frombuffer(data, np.uint8)
    newlines = np.flatnonzero(b == 10)
    starts = np.concatenate([[0], newlines[:-1] + 1])
    ends = newlines.copy()
    has_cr = (ends > starts) & (b[np.maximum(ends - 1, 0)] == 13)
    ends[has_cr] -= 1
    tabs = np.flatnonzero(b == 9)
    fields = np.diff(np.concatenate([[0], np.searchsorted(tabs, newlines)])) + 1
    problems = {}
    for pos in np.flatnonzero(b == 13).tolist():
        line = int(np.searchsorted(newlines, pos))
        if pos != ends[line] and line not in problems:  # not the '\r' of a '\r\n'
            col = int(np.searchsorted(tabs, pos) - np.searchsorted(tabs, starts[line]))
            if col < NUM_FIELDS:
                name = FIELD_NAMES[col]
                problems[line] = _Problem(line, _kind_of_column(col),
                                          "contains a carriage return (\\r)", name, col)
    return starts, ends, fields, list(problems.values())


def _dense_bad_rows(arr: pa.Array) -> np.ndarray:
    """Rows of a binary integer column that are not ``-?[0-9]+`` within int64 (or empty)."""
    offsets, data = binary.buffers(arr)
    lengths = np.diff(offsets)
    chars = data[offsets[0]:offsets[-1]]
    first = np.zeros(len(chars), bool)
    first[(offsets[:-1] - offsets[0])[lengths > 0]] = True
    ok = ((chars - np.uint8(48)) < 10) | ((chars == 45) & first)
    bad = set(binary.rows_with(offsets, offsets[0] + np.flatnonzero(~ok)).tolist())
    lone_minus = (lengths == 1) & (binary.first_bytes(offsets, data) == 45)
    bad.update(np.flatnonzero(lone_minus).tolist())
    for i in np.flatnonzero(lengths > _INT64_DIGITS).tolist():  # rare: check the range exactly
        if i not in bad and not -(2**63) <= int(arr[i].as_py()) < 2**63:
            bad.add(i)
    return np.array(sorted(bad), np.int64)


def _hex_bad_rows(arr: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(rows with a non-hex character, rows of only hex digits but more than 8 of them)."""
    offsets, data = binary.buffers(arr)
    chars = data[offsets[0]:offsets[-1]]
    nonhex = binary.rows_with(offsets, offsets[0] + np.flatnonzero(~binary.is_hex_char(chars)))
    long = np.flatnonzero(np.diff(offsets) > MAX_HEX_DIGITS)
    return nonhex, np.setdiff1d(long, nonhex)


def _content_problems(table: pa.Table, line_of_row: np.ndarray, describe: bool) -> list[_Problem]:
    """Every bad field of a table of 40 binary columns, at most one problem per row
    (the first bad field in column order). Messages are written only if ``describe``."""
    found: dict[int, _Problem] = {}

    def add(rows, col, kind, message):
        arr = table.column(col).chunk(0)
        for r in rows.tolist():
            if r not in found or found[r].column > col:
                text = message(arr[r].as_py()) if describe else ""
                found[r] = _Problem(int(line_of_row[r]), kind, text, FIELD_NAMES[col], col)

    offsets, data = binary.buffers(table.column(0).chunk(0))
    first = binary.first_bytes(offsets, data)
    bad_label = np.flatnonzero((np.diff(offsets) != 1) | ((first != 48) & (first != 49)))
    add(bad_label, 0, BAD_LABEL,
        lambda v: "empty label" if not v else f"label must be 0 or 1, found {show_value(v)}")
    for col in DENSE_COLUMNS:
        add(_dense_bad_rows(table.column(col).chunk(0)), col, BAD_DENSE,
            lambda v: f"not an integer (or outside int64): {show_value(v)}")
    for col in CATEGORICAL_COLUMNS:
        nonhex, long = _hex_bad_rows(table.column(col).chunk(0))
        add(nonhex, col, BAD_CATEGORICAL, lambda v: f"not hexadecimal: {show_value(v)}")
        add(long, col, LONG_CATEGORICAL,
            lambda v: f"more than {MAX_HEX_DIGITS} hex digits: {show_value(v)}")
    return list(found.values())


def _parse_checked(chunk: LineChunk, file: str, strict: bool) -> ParsedRows:
    data = chunk.data
    starts, ends, fields, cr_problems = _line_structure(data)
    n = len(starts)
    # one problem per line; a whole-row problem replaces a field's
    by_line = {p.line: p for p in cr_problems}
    for i in np.flatnonzero(ends == starts).tolist():
        by_line[i] = _Problem(i, EMPTY_LINE, "empty line")
    for i in np.flatnonzero(fields > NUM_FIELDS).tolist():
        by_line[i] = _Problem(i, TOO_MANY_FIELDS,
                              f"{fields[i]} tab-separated fields, expected {NUM_FIELDS}")
    short = (fields < NUM_FIELDS) & (ends > starts)
    if chunk.unterminated and short[-1]:
        by_line[n - 1] = _Problem(n - 1, TRUNCATED_ROW,
                                  f"last line is cut off ({fields[-1]} of {NUM_FIELDS} fields "
                                  "and no final newline)")
        short[-1] = False
    problems = list(by_line.values())
    usable = np.ones(n, bool)
    usable[list(by_line)] = False
    pad = np.where(short & usable, NUM_FIELDS - fields, 0)
    kept_lines = np.flatnonzero(usable)

    # Rebuild the text of the usable lines, padding stripped rows with empty fields.
    view = memoryview(data)
    pieces = []
    for i in kept_lines.tolist():
        pieces.append(view[starts[i]:ends[i]])
        pieces.append(b"\t" * int(pad[i]) + b"\n")
    table = _read(b"".join(pieces), _BINARY_TYPES).combine_chunks() if pieces else None
    if table is not None and table.num_rows != len(kept_lines):
        raise RuntimeError(f"{file}: internal error, re-parsed {table.num_rows} of "
                           f"{len(kept_lines)} rows near line {chunk.first_line + 1}")
    if table is not None:
        problems += _content_problems(table, kept_lines, describe=strict)

    if strict and problems:
        p = min(problems, key=lambda q: q.line)
        raise CriteoInputError(file, chunk.first_line + p.line + 1, p.problem, p.field)

    skipped = Counter(p.kind for p in problems)
    if table is None:
        rows = _empty_rows()
        rows.skipped = skipped
        return rows
    bad_lines = {p.line for p in problems}
    keep = np.array([i not in bad_lines for i in kept_lines.tolist()], bool)
    table = table.filter(pa.array(keep))
    rows = _convert_checked(table)
    rows.lines = chunk.first_line + kept_lines[keep]
    rows.skipped = skipped
    rows.padded = int(np.count_nonzero(pad[kept_lines[keep]]))
    return rows


def _convert_checked(table: pa.Table) -> ParsedRows:
    """Typed columns of a validated all-binary table (lines filled in by the caller)."""
    n = table.num_rows
    label = table.column(0).combine_chunks()
    offsets, data = binary.buffers(label)
    labels = (data[offsets[:-1]] - np.uint8(48)) if n else np.zeros(0, np.uint8)
    dense = np.zeros((NUM_DENSE, n), np.int64)
    for j, col in enumerate(DENSE_COLUMNS):
        arr = table.column(col).combine_chunks()
        text = arr.cast(pa.string())
        nonempty = np.diff(binary.buffers(arr)[0]) > 0
        if nonempty.any():
            dense[j, nonempty] = text.filter(pa.array(nonempty)).cast(pa.int64()).to_numpy()
    cats = np.empty((NUM_CATEGORICAL, n), np.int64)
    for j, col in enumerate(CATEGORICAL_COLUMNS):
        cats[j] = binary.hex_column(table.column(col).combine_chunks())
    return ParsedRows(np.zeros(n, np.int64), labels.astype(np.uint8), dense, cats)

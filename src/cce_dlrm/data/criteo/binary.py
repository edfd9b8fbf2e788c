"""NumPy views of pyarrow binary columns, and vectorised checks and conversions on them.

A pyarrow binary array is an offsets buffer (n+1 int32) plus one data buffer holding all
values back to back; viewing both with NumPy lets whole columns be checked and converted
without a Python loop over values.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from cce_dlrm.data.criteo.schema import MAX_HEX_DIGITS

_U = np.uint64
_LOW_NIBBLES = _U(0x0F0F0F0F0F0F0F0F)
_BIT6 = _U(0x0101010101010101)
_PAIR_MASK = _U(0x000F000F000F000F)


def buffers(arr: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(offsets (n+1,) int32, data (m,) uint8) of one binary array; the values are
    ``data[offsets[i]:offsets[i+1]]`` (offsets need not start at 0 for a sliced array)."""
    n = len(arr)
    _, off_buf, data_buf = arr.buffers()
    offsets = np.frombuffer(off_buf, np.int32, n + 1, arr.offset * 4)
    data = np.frombuffer(data_buf, np.uint8) if data_buf is not None else np.zeros(0, np.uint8)
    return offsets, data


def first_bytes(offsets: np.ndarray, data: np.ndarray) -> np.ndarray:
    """(n,) uint8: the first byte of each value, 0 for an empty value."""
    lengths = np.diff(offsets)
    out = np.zeros(len(lengths), np.uint8)
    nonempty = lengths > 0
    out[nonempty] = data[offsets[:-1][nonempty]]
    return out


def rows_with(offsets: np.ndarray, byte_positions: np.ndarray) -> np.ndarray:
    """Sorted unique row indices that contain the given absolute data positions."""
    return np.unique(np.searchsorted(offsets, byte_positions, side="right") - 1)


def is_hex_char(chars: np.ndarray) -> np.ndarray:
    """(m,) uint8 -> (m,) bool: 0-9, a-f or A-F (uint8 arithmetic wraps, so one compare each)."""
    digit = (chars - np.uint8(48)) < 10
    letter = ((chars | np.uint8(32)) - np.uint8(97)) < 6
    return digit | letter


def _pack_hex8(chars: np.ndarray) -> np.ndarray:
    """(8k,) uint8 of k 8-hex-digit values (validated) -> (k,) uint32, eight bytes at a time.

    Each uint64 holds one value's 8 characters, the first in its lowest byte. A hex
    character's value is its low nibble, plus 9 when bit 6 is set (letters, either case).
    """
    x = chars.view(_U)
    nib = (x & _LOW_NIBBLES) + ((x >> _U(6)) & _BIT6) * _U(9)
    # byte pairs -> one byte each, first character in the high nibble
    pairs = ((nib & _PAIR_MASK) << _U(4)) | ((nib >> _U(8)) & _PAIR_MASK)
    # the 4 result bytes sit in the low byte of each 16-bit lane, most significant first
    return np.ascontiguousarray(pairs.view(np.uint8)[0::2]).view(">u4").astype(np.uint32)


def _right_align(chars: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Values of 1..8 hex digits -> (8k,) uint8 padded on the left with '0'."""
    k = len(lengths)
    out = np.full(k * MAX_HEX_DIGITS, ord("0"), np.uint8)
    row = np.repeat(np.arange(k), lengths)
    start = np.cumsum(lengths) - lengths
    pos = np.arange(len(chars)) - start[row]
    out[row * MAX_HEX_DIGITS + (MAX_HEX_DIGITS - lengths)[row] + pos] = chars
    return out


def hex_column(arr: pa.Array, out: np.ndarray | None = None) -> np.ndarray | None:
    """Hex strings of up to 8 digits -> (n,) int64 (written into ``out`` if given), -1 for
    an empty value.

    Returns None if any value has more than 8 characters or a character that is not a
    hex digit, so the caller can find and report the rows. The integers are unsigned
    32-bit (0 .. 0xFFFFFFFF) held in int64: no overflow, whatever NumPy's default int.
    """
    offsets, data = buffers(arr)
    n = len(arr)
    out = np.empty(n, np.int64) if out is None else out
    if n == 0 or offsets[-1] == offsets[0]:
        out.fill(-1)
        return out
    lengths = np.diff(offsets)
    chars = data[offsets[0]:offsets[-1]]
    if lengths.max() > MAX_HEX_DIGITS or not is_hex_char(chars).all():
        return None
    nonempty = lengths != 0
    k = int(np.count_nonzero(nonempty))
    if len(chars) != k * MAX_HEX_DIGITS:  # some values are shorter than 8 digits
        chars = _right_align(chars, lengths[nonempty])
    values = _pack_hex8(np.ascontiguousarray(chars))
    if k == n:
        out[:] = values
    else:
        out.fill(-1)
        out[nonempty] = values
    return out

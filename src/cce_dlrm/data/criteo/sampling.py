"""Row sampling decided per line with a counter-based hash: negative subsampling of the
training split, and ``row_fraction`` (a fraction of all rows, every split).

Each row's uniform number depends only on (seed, file, line number, stream), not on chunk
boundaries, threads or resumes, so an interrupted run and an uninterrupted one keep the
same rows. The two samplings draw from different streams, so they are independent.
"""

from __future__ import annotations

import numpy as np

_M1, _M2, _GOLDEN = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB), np.uint64(
    0x9E3779B97F4A7C15)


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser: a bijective mix of 64-bit keys (arithmetic wraps mod 2^64)."""
    z = x + _GOLDEN
    z = (z ^ (z >> np.uint64(30))) * _M1
    z = (z ^ (z >> np.uint64(27))) * _M2
    return z ^ (z >> np.uint64(31))


NEGATIVE_STREAM = 0  # negative subsampling (stream 0: the numbers of before streams existed)
ROW_FRACTION_STREAM = 1


def line_uniforms(seed: int, file_index: int, lines: np.ndarray,
                  stream: int = NEGATIVE_STREAM) -> np.ndarray:
    """(n,) line numbers -> (n,) float64 in [0, 1), independent across lines, seeds and
    streams."""
    salt = _splitmix64(np.array([seed & (2**64 - 1)], np.uint64))[0]
    if stream:
        salt = _splitmix64(np.array([salt ^ np.uint64(stream)], np.uint64))[0]
    keys = (lines.astype(np.uint64) + (np.uint64(file_index) << np.uint64(40))) ^ salt
    return (_splitmix64(keys) >> np.uint64(11)).astype(np.float64) * 2.0**-53


def keep_mask(labels: np.ndarray, in_train: np.ndarray, rate: float, seed: int,
              file_index: int, lines: np.ndarray) -> np.ndarray:
    """Rows kept: all but the training negatives whose uniform number is below ``rate``."""
    if rate <= 0:
        return np.ones(len(labels), bool)
    candidates = in_train & (labels == 0)
    drop = np.zeros(len(labels), bool)
    drop[candidates] = line_uniforms(seed, file_index, lines[candidates]) < rate
    return ~drop


def fraction_mask(fraction: float, seed: int, file_key: int, lines: np.ndarray) -> np.ndarray:
    """Rows kept by ``row_fraction``: those whose uniform number (own stream) is below
    ``fraction``; every row when it is 1."""
    if fraction >= 1.0:
        return np.ones(len(lines), bool)
    return line_uniforms(seed, file_key, lines, ROW_FRACTION_STREAM) < fraction

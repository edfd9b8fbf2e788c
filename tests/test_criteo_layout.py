"""Split arithmetic of the DLRM reference, by line number (no real data needed)."""

import numpy as np
import pytest

from cce_dlrm.data.criteo.inputs import PreprocessConfigError, parse_days
from cce_dlrm.data.criteo.layout import (
    Segment, day_sizes, halves, kaggle_segments, split_of_lines, split_rows, terabyte_segments,
)


def test_kaggle_real_file_sizes():
    # train.txt has 45,840,617 rows: 4 days of 6,548,660 then 3 of 6,548,659
    assert day_sizes(45_840_617) == [6_548_660] * 4 + [6_548_659] * 3
    segments = kaggle_segments(45_840_617)
    assert split_rows(segments) == {"train": 39_291_958, "test": 3_274_330, "val": 3_274_329}
    # contiguous and in file order: days 0..5 train, day 6 first half test, second half val
    assert segments == [Segment("train", 0, 39_291_958),
                        Segment("test", 39_291_958, 42_566_288),
                        Segment("val", 42_566_288, 45_840_617)]


def test_terabyte_sizes():
    # day 23 has 178,274,637 rows: halved, the first (larger) half is test
    assert halves(178_274_637) == (89_137_319, 89_137_318)
    assert terabyte_segments(True, 178_274_637) == [
        Segment("test", 0, 89_137_319), Segment("val", 89_137_319, 178_274_637)]
    assert terabyte_segments(False) == [Segment("train", 0, None)]
    with pytest.raises(ValueError):
        terabyte_segments(True)


@pytest.mark.parametrize("n", [0, 1, 6, 7, 10, 13, 400, 1001])
def test_every_line_in_exactly_one_split(n):
    segments = kaggle_segments(n)
    split = split_of_lines(segments, np.arange(n))
    assert (split >= 0).all()
    assert (np.diff(split) >= 0).all()  # train, then test, then val
    counts = np.bincount(split, minlength=3)
    assert dict(zip(("train", "test", "val"), counts.tolist())) == split_rows(segments)
    sizes = day_sizes(n)
    assert counts[0] == sum(sizes[:6]) and counts[1] + counts[2] == sizes[6]
    assert 0 <= counts[1] - counts[2] <= 1


def test_lines_outside_segments_are_marked():
    split = split_of_lines(kaggle_segments(10), np.array([0, 9, 10, 11]))
    assert split.tolist()[2:] == [-1, -1]


@pytest.mark.parametrize("days, expected", [
    ("0-23", list(range(24))), ("0-2,23", [0, 1, 2, 23]), (7, [7]), ([23, 0, 1], [0, 1, 23]),
    ("3, 1", [1, 3]),
])
def test_parse_days(days, expected):
    assert parse_days(days) == expected


@pytest.mark.parametrize("days", ["24", "0-24", "x", "5-3", [], "-1"])
def test_parse_days_rejects(days):
    with pytest.raises(PreprocessConfigError):
        parse_days(days)

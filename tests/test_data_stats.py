"""Tail and head statistics (scripts/data_stats.py) on inputs whose answers are known."""

import numpy as np
import pytest

from cce_dlrm.analysis.data_stats import column_stats, markdown_table, read_criteo_text, table_stats


def test_column_stats_on_a_known_column():
    stats = column_stats(np.array([5, 5, 5, 7, 9]))
    assert (stats.rows, stats.distinct, stats.once, stats.head_rows) == (5, 3, 2, 3)
    assert stats.once_share == pytest.approx(2 / 3) and stats.head_share == pytest.approx(3 / 5)


def test_head_is_the_top_one_percent_of_distinct_values():
    # 150 distinct values: the top 1% is 2 values (ceil(1.5)); value 0 x 51, value 1 x 50
    values = np.concatenate([np.zeros(51), np.ones(50), np.arange(2, 150)]).astype(int)
    stats = column_stats(values)
    assert stats.distinct == 150 and stats.once == 148
    assert stats.head_rows == 101 and stats.head_share == pytest.approx(101 / 249)


def test_table_stats_pool_the_tail_and_read_raw_criteo_rows(tmp_path):
    raw = tmp_path / "rows.txt"
    # label, 13 integers, 26 categoricals; the second row lost its trailing empty fields
    rows = ["1\t" + "\t".join(["1"] * 13) + "\t" + "\t".join(["aa"] * 26),
            "0\t" + "\t".join(["2"] * 13) + "\t" + "\t".join(["bb"] * 20),
            "0\t" + "\t".join(["3"] * 13) + "\t" + "\t".join(["aa"] * 26)]
    raw.write_text("\n".join(rows) + "\n")
    sparse, labels = read_criteo_text(raw)
    assert sparse.shape == (3, 26) and list(labels) == [1, 0, 0]
    assert sparse[1, 25] == ""  # an empty field is its own value
    stats = table_stats(sparse, labels)
    assert stats.click_rate == pytest.approx(1 / 3)
    # every column: values aa (x2) and bb or "" (x1): 1 of 2 distinct seen once
    assert stats.once_share == pytest.approx(0.5)
    assert stats.head_share == pytest.approx(2 / 3)
    text = markdown_table([("a", stats), ("b", stats)])
    assert "| C26 | 0.500 (2) | 0.667 | 0.500 (2) | 0.667 |" in text
    assert "| a | 3 | 0.333 |" in text

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


def test_script_says_what_is_wrong_in_one_line(tmp_path, capsys):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "scripts" / "data_stats.py"
    spec = importlib.util.spec_from_file_location("data_stats_script", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    assert script.main(["--real", str(tmp_path / "missing.txt")]) == 1
    assert "no real Criteo rows" in capsys.readouterr().err
    real = tmp_path / "rows.txt"
    real.write_text("1\t" + "\t".join(["1"] * 13) + "\t" + "\t".join(["aa"] * 26) + "\n")
    assert script.main(["--real", str(real), "--dataset", "no_such_dataset"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error:") and len(err.strip().splitlines()) == 1
    assert script.main(["--real", str(real), "--dataset", "criteo_kaggle"]) == 1
    assert "not generated" in capsys.readouterr().err


def test_script_compares_a_tiny_synthetic_dataset(tmp_path):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "scripts" / "data_stats.py"
    spec = importlib.util.spec_from_file_location("data_stats_script2", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    real = tmp_path / "rows.txt"
    real.write_text("".join(f"{i % 2}\t" + "\t".join(["1"] * 13) + "\t" + "\t".join([f"{i:08x}"] * 26) + "\n"
                            for i in range(50)))
    out = tmp_path / "stats.md"
    assert script.main(["--real", str(real), "--dataset", "synthetic_control", "--large-rows", "2000",
                        "--out", str(out), f"paths.data_dir={tmp_path}", "dataset.build.rows=3000",
                        "dataset.build.max_cardinality=500", "+dataset.build.progress=false"]) == 0
    text = out.read_text()
    assert "| all | 1.000 (1,300) |" in text  # 26 features x 50 distinct real values, all seen once
    assert "| Kaggle head | 50 | 0.500 |" in text and "synthetic_control 2,000" in text

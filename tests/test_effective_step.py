"""The effective-step measurement (scripts/effective_step.py) and equal learning dynamics for qr."""

import pytest

from cce_dlrm.analysis.effective_step import build_one_feature, compose_method, effective_step

NUM_IDS = 20_000


def measure(key, overrides=()):
    cfg = compose_method(key, list(overrides))
    return effective_step(build_one_feature(cfg, NUM_IDS), NUM_IDS, batch=2048, lr=1.0)


def test_full_table_moves_exactly_one_and_summed_tables_two():
    full = measure("full")
    assert full.mean == pytest.approx(1.0, abs=1e-4) and full.sem < 1e-4
    assert full.init_std == pytest.approx(0.05, rel=0.05)
    assert measure("hashing").mean == pytest.approx(1.0, abs=0.05)
    assert measure("cce").mean == pytest.approx(2.0, abs=0.1)  # A and B both get the full gradient


def test_step_is_independent_of_the_learning_rate_for_a_linear_method():
    cfg = compose_method("hashing")
    a = effective_step(build_one_feature(cfg, NUM_IDS), NUM_IDS, lr=1.0).mean
    b = effective_step(build_one_feature(cfg, NUM_IDS), NUM_IDS, lr=0.1).mean
    assert a == pytest.approx(b, rel=1e-3)


@pytest.mark.parametrize("partitions", [2, 3])
def test_qr_mult_learns_within_2x_of_hashing(partitions):
    """Factors near 1 (the reference's init) instead of init_std ** (1/s): before the change
    the ratio was 0.10 (2 partitions) and 0.05 (3)."""
    hashing = measure("hashing").mean
    qr = measure("qr", ["method.op=mult", f"method.partitions={partitions}"])
    assert 0.5 < qr.mean / hashing < 2.0
    assert qr.init_std == pytest.approx(0.05, rel=0.1)


def test_script_writes_a_row_for_every_method(tmp_path):
    import importlib.util
    from pathlib import Path

    from cce_dlrm.analysis.effective_step import method_keys

    path = Path(__file__).resolve().parents[1] / "scripts" / "effective_step.py"
    spec = importlib.util.spec_from_file_location("effective_step_script", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    out = tmp_path / "steps.md"
    assert script.main(["--num-ids", "3000", "--batch", "256", "--out", str(out)]) == 0
    rows = [line.split("|")[1].strip() for line in out.read_text().splitlines() if line.startswith("| ")]
    assert set(method_keys()) | {"qr (3 partitions)"} <= set(rows)
    assert script.main(["--num-ids", "1"]) == 1

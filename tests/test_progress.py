"""Progress: a tqdm bar on a terminal; one log line every few seconds otherwise."""

import io
import logging

from cce_dlrm.training.evaluation import auc_undefined_reason, entropy_bce, split_label_summary
from cce_dlrm.training.progress import LogProgress, NoProgress, progress_bar


class _Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_log_progress_emits_one_line_per_interval():
    clock, lines = _Clock(), []
    bar = LogProgress(total=1000, desc="train", interval=30, batch_size=128, per_epoch=400,
                      clock=clock, emit=lines.append)
    for _ in range(100):  # 100 steps of 0.125 s: 12.5 s, under the interval, nothing is written
        clock.now += 0.125
        bar.update(1)
    assert lines == []
    bar.set_postfix(loss="0.4512")
    for _ in range(900):  # 900 more: 125 s in all, a line at 30, 60, 90 and 120 s
        clock.now += 0.125
        bar.update(1)
    bar.close()
    assert len(lines) == 4
    # at 30 s (step 240): 240 * 128 / 30 = 1,024 samples/s; 760 steps left at 8/s = 95 s
    assert lines[0] == "train: step 240/1,000 (24.0%), epoch 1/3, loss=0.4512, 1,024 samples/s, ETA 0:01:35"
    assert lines[-1].startswith("train: step 960/1,000 (96.0%), epoch 3/3")
    assert all("\r" not in line for line in lines)


def test_resumed_progress_counts_speed_from_this_process():
    clock, lines = _Clock(), []
    bar = LogProgress(total=200, desc="train", interval=5, batch_size=10, initial=100, clock=clock,
                      emit=lines.append)
    clock.now = 5.0
    bar.update(50)
    assert lines == ["train: step 150/200 (75.0%), 100 samples/s, ETA 0:00:05"]


def test_log_lines_go_to_the_logging_system(caplog):
    bar = LogProgress(total=10, desc="val", interval=0.0)
    with caplog.at_level(logging.INFO, logger="cce_dlrm.progress"):
        bar.update(5)
    assert [r.getMessage() for r in caplog.records] == ["val: step 5/10 (50.0%), ETA 0:00:00"]


def test_bar_kind_follows_the_output():
    from tqdm import tqdm

    assert isinstance(progress_bar(10, "train", enabled=True, stream=io.StringIO()), LogProgress)
    bar = progress_bar(10, "train", enabled=True, stream=_Terminal())
    assert isinstance(bar, tqdm)
    bar.close()
    assert isinstance(progress_bar(10, "train", enabled=False, stream=_Terminal()), NoProgress)


def test_auc_undefined_and_per_split_baseline():
    import numpy as np

    assert auc_undefined_reason(100, 0) == "split has no positive rows"
    assert auc_undefined_reason(100, 100) == "split has no negative rows"
    assert auc_undefined_reason(0, 0) == "split is empty"
    assert auc_undefined_reason(100, 3) is None
    summary = split_label_summary(np.array([0, 0, 0, 1], dtype=np.uint8))
    assert summary["click_rate"] == 0.25 and summary["auc_undefined"] is None
    assert summary["baseline_bce"] == entropy_bce(0.25)
    assert split_label_summary(np.zeros(8, dtype=np.uint8))["auc_undefined"] == "split has no positive rows"
    assert split_label_summary(np.zeros(0, dtype=np.uint8)) == {
        "click_rate": None, "baseline_bce": None, "auc_undefined": "split is empty"}

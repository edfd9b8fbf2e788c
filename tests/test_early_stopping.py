"""The paper's early stopping rule on scripted validation sequences."""

import pytest

from cce_dlrm.training.early_stopping import epoch_minima, epoch_of, should_stop


def _history(values_per_epoch, steps_per_epoch=6, val_every=3):
    """Validations every ``val_every`` batches, ``len(values)`` of them per epoch."""
    history = []
    for e, values in enumerate(values_per_epoch):
        for i, v in enumerate(values):
            history.append({"step": e * steps_per_epoch + (i + 1) * val_every, "val_bce": v})
    return history


def test_a_validation_at_the_last_batch_belongs_to_that_epoch():
    assert [epoch_of(s, 6) for s in (1, 6, 7, 12, 13)] == [0, 0, 1, 1, 2]


def test_stops_when_the_previous_epochs_minimum_is_lower():
    history = _history([[0.50, 0.47], [0.46, 0.45], [0.455, 0.451], [0.44, 0.43]])
    assert epoch_minima(history, 6) == {0: 0.47, 1: 0.45, 2: 0.451, 3: 0.43}
    assert [should_stop(history, 6, e) for e in range(3)] == [False, False, True]


def test_an_epoch_whose_minimum_ties_the_previous_one_goes_on():
    history = _history([[0.47, 0.47], [0.48, 0.47]])
    assert not should_stop(history, 6, 1)  # "below": a tie is not below


def test_the_first_epoch_never_stops_and_rule_none_never_does():
    history = _history([[0.40], [0.60]])
    assert not should_stop(history, 6, 0)
    assert should_stop(history, 6, 1) and not should_stop(history, 6, 1, rule="none")
    with pytest.raises(ValueError, match="early stopping"):
        should_stop(history, 6, 1, rule="patience")


def test_non_finite_values_are_ignored_and_missing_epochs_do_not_stop():
    history = [{"step": 6, "val_bce": 0.5}, {"step": 12, "val_bce": float("nan")}]
    assert not should_stop(history, 6, 1)

"""Eval-set metrics: the label layouts training code writes, and clear errors for the ones that cannot fit."""

from __future__ import annotations

import numpy as np
import pytest

from edgeseq.errors import InputError
from edgeseq.metrics import binary_threshold, task_metric

LOGITS = np.array([[2.0, 0.1, 0.3], [0.1, 3.0, 0.2], [0.0, 0.1, 1.0], [1.0, 0.0, 0.5]])  # predicts 0, 1, 2, 0


def test_class_ids_and_one_hot_rows_agree():
    ids = np.array([0, 1, 2, 1])
    assert task_metric(LOGITS, ids) == ("accuracy", 0.75)
    assert task_metric(LOGITS, np.eye(3)[ids]) == ("accuracy", 0.75)  # to_categorical's float rows
    assert task_metric(LOGITS, np.eye(3, dtype=np.int64)[ids]) == ("accuracy", 0.75)
    assert task_metric(LOGITS, ids[:, None]) == ("accuracy", 0.75)  # (n, 1) ids


def test_per_step_labels_skip_ignore_index_and_padding():
    out = np.stack([LOGITS, LOGITS])  # (2 samples, 4 steps, 3 classes): predicts 0, 1, 2, 0 each
    y = np.array([[0, 1, 2, 1], [0, 1, -100, -100]])
    assert task_metric(out, y) == ("accuracy", pytest.approx(5 / 6))
    assert task_metric(out, y, lengths=np.array([3, 2])) == ("accuracy", 1.0)


def test_a_sigmoid_output_is_cut_at_one_half_and_a_logit_at_zero():
    probs = np.array([[0.9], [0.2], [0.6], [0.4]])
    y = np.array([1, 0, 1, 0])
    assert binary_threshold(probs) == 0.5 and task_metric(probs, y) == ("accuracy", 1.0)
    logits = np.array([2.0, -1.0, 0.5, -0.3])
    assert binary_threshold(logits) == 0.0 and task_metric(logits, y) == ("accuracy", 1.0)
    # the float model's threshold holds for a quantized copy that strays past 1
    assert task_metric(np.array([1.01, 0.2, 0.6, 0.4]), y, threshold=0.5) == ("accuracy", 1.0)


@pytest.mark.parametrize("y, message", [
    (np.array([1, 2, 3, 3]), r"hold 3, but the model's first output has 3 classes, 0..2; labels count from 0"),
    (np.array([0, -1, 2, 1]), r"hold -1"),
    (np.array([[0, 1], [1, 0], [0, 0], [1, 1]]), r"takes class ids of shape \(4,\)"),
    (np.zeros(3, np.int64), r"have 3 samples, the model gave 4"),
    (np.zeros((4, 2)), r"give one target per output value"),
])
def test_labels_that_cannot_fit_say_why(y, message):
    with pytest.raises(InputError, match=message):
        task_metric(LOGITS, y)


def test_binary_labels_must_be_zero_or_one():
    with pytest.raises(InputError, match="a one-output \\(binary\\) model takes labels 0 and 1"):
        task_metric(np.array([0.1, 0.9]), np.array([1, 2]))


def test_float_targets_are_regression():
    assert task_metric(np.array([[1.0], [2.0]]), np.array([1.5, 2.0])) == ("mae", 0.25)


def test_a_mae_increase_over_an_exact_float_model_is_read_against_the_targets():
    from edgeseq.metrics import metric_drop

    assert metric_drop("mae", 0.10, 0.11) == pytest.approx(0.1)  # 10% worse than the float model
    # labels made from the float model's own outputs: its MAE is ~0, so any change was "+2,700,000 %"
    assert metric_drop("mae", 1e-8, 0.003, target_scale=0.5) == pytest.approx(0.006, rel=1e-3)
    assert metric_drop("mae", 1e-8, 0.003) > 1e4  # (without the targets' scale)


def test_float_class_ids_are_told_to_be_integers():
    with pytest.raises(InputError, match=r"'y' are float64 whole numbers, one per sample.*y.astype\(int\)"):
        task_metric(np.zeros((4, 3)), np.array([0.0, 2.0, 1.0, 1.0]))

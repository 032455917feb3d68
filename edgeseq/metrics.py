"""Task metrics on an eval set: accuracy for classifiers (integer labels), MAE for regressors.

>>> task_metric(np.array([[0.1, 0.9], [0.8, 0.2]]), np.array([1, 0]))
('accuracy', 1.0)
"""

from __future__ import annotations

import numpy as np


def is_classification(y: np.ndarray) -> bool:
    return np.asarray(y).dtype.kind in "iub"


def task_metric(outputs: np.ndarray, y: np.ndarray) -> tuple[str, float]:
    """Return (name, value): accuracy of argmax for integer labels, else mean absolute error."""
    y = np.asarray(y)
    if is_classification(y):
        pred = predictions(outputs)
        return "accuracy", float(np.mean(pred == y.reshape(pred.shape)))
    out = np.asarray(outputs, dtype=np.float64).reshape(len(y), -1)
    return "mae", float(np.mean(np.abs(out - np.asarray(y, np.float64).reshape(len(y), -1))))


def predictions(outputs: np.ndarray) -> np.ndarray:
    """Class predictions: argmax over the last axis (or > 0 for a single logit)."""
    out = np.asarray(outputs)
    if out.ndim == 1 or out.shape[-1] == 1:
        return (out.reshape(len(out)) > 0).astype(np.int64)
    return out.reshape(len(out), -1).argmax(axis=-1)


def metric_drop(name: str, reference: float, candidate: float) -> float:
    """How much worse ``candidate`` is: accuracy points lost, or relative MAE increase."""
    if name == "accuracy":
        return reference - candidate
    return (candidate - reference) / max(abs(reference), 1e-12)

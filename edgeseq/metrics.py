"""Task metrics on an eval set: accuracy for classifiers, MAE for regressors.

Labels are read the way training code writes them: class ids (``(n,)``, or ``(n, steps)`` for a
per-step tagger, where PyTorch's ``ignore_index`` -100 marks steps to skip), one-hot rows (Keras'
``to_categorical``, integer or float), or 0/1 for a single-output binary classifier, whose output is
read as a probability (threshold 0.5) when the reference outputs all lie in [0, 1] (a sigmoid), else
as a logit (threshold 0). Anything else with float labels is regression (mean absolute error).

>>> task_metric(np.array([[0.1, 0.9], [0.8, 0.2]]), np.array([1, 0]))
('accuracy', 1.0)
"""

from __future__ import annotations

import numpy as np

from .errors import InputError

IGNORE_INDEX = -100  # PyTorch's CrossEntropyLoss default: a label there is not scored


def is_classification(y: np.ndarray) -> bool:
    return np.asarray(y).dtype.kind in "iub"


def binary_threshold(reference: np.ndarray) -> float:
    """0.5 when a one-output model's reference outputs are probabilities (all in [0, 1]), else 0.0 (logits).

    Decide it once, from the float model, and use it for every file compared: a quantized sigmoid may
    stray outside [0, 1] by a rounding step.
    """
    ref = np.asarray(reference, np.float64)
    finite = ref[np.isfinite(ref)]
    return 0.5 if finite.size and finite.min() >= 0.0 and finite.max() <= 1.0 else 0.0


def task_metric(outputs: np.ndarray, y: np.ndarray, threshold: float | None = None,
                lengths: np.ndarray | None = None, steps: int | None = None) -> tuple[str, float]:
    """Return (name, value): accuracy for class labels (see the module docstring), else mean absolute error.

    ``threshold`` is the binary cut (default :func:`binary_threshold` of ``outputs``); ``lengths`` (one per
    sample) leaves out per-step labels past each sample's length; for regression targets, those whose axis 1
    is the inputs' padded length ``steps`` (a forecast horizon of another size is scored whole).
    """
    out, y = np.asarray(outputs), np.asarray(y)
    labels = class_labels(out, y)
    if labels is None:
        if out.size != y.size:
            if y.dtype.kind == "f" and y.ndim == 1 and y.size and np.all(np.isfinite(y)) and np.all(y == np.round(y)):
                raise InputError(f"eval labels 'y' are {y.dtype} whole numbers, one per sample, for an output of shape "
                                 f"{out.shape}: class ids must be integers; save them with y.astype(int)")
            raise InputError(f"eval labels 'y' have shape {y.shape}, but the model's first output has shape "
                             f"{out.shape}: give one target per output value (or integer class ids for a classifier)")
        diff = np.abs(out.astype(np.float64).reshape(y.shape) - y.astype(np.float64))
        if lengths is not None and steps is not None and y.ndim >= 2 and y.shape[1] == steps:  # per-step targets
            lengths = np.asarray(lengths).reshape(-1)
            valid = np.arange(y.shape[1])[None, :] < lengths[:, None]
            return "mae", float(np.mean(diff[valid]))
        return "mae", float(np.mean(diff))
    pred = predictions(out, binary_threshold(out) if threshold is None else threshold).reshape(labels.shape)
    scored = labels != IGNORE_INDEX
    if lengths is not None and labels.ndim == 2:  # per-step labels: the padding is not scored
        lengths = np.asarray(lengths).reshape(-1)
        scored &= np.arange(labels.shape[1])[None, :] < lengths[:, None]
    if not scored.any():
        raise InputError("eval labels 'y': every label is -100 (ignored) or padding; nothing to score")
    return "accuracy", float(np.mean(pred[scored] == labels[scored]))


def class_labels(out: np.ndarray, y: np.ndarray) -> np.ndarray | None:
    """The class id of each scored position, shaped like :func:`predictions`; None for regression targets.

    Raises InputError when ``y`` looks like classes but cannot match the output (shape or range).
    """
    if len(y) != len(out):
        raise InputError(f"eval labels 'y' have {len(y)} samples, the model gave {len(out)} outputs")
    classes = out.shape[-1] if out.ndim > 1 else 1
    binary = classes == 1
    if y.shape == out.shape and not binary and _one_hot(y):  # to_categorical: one row of 0s and a 1 per sample
        return y.argmax(axis=-1)
    if not is_classification(y):
        return None
    want = out.shape[:-1] if out.ndim > 1 else out.shape
    if y.shape != want and y.size != int(np.prod(want)):
        hint = (" (per-step outputs take a label per step: shape (samples, steps))" if out.ndim == 3 else "")
        raise InputError(f"eval labels 'y' have shape {y.shape}; the model's first output {out.shape} takes class "
                         f"ids of shape {tuple(want)}{hint}, or one-hot rows of shape {out.shape}")
    labels = y.astype(np.int64).reshape(want)
    scored = labels[labels != IGNORE_INDEX]
    top = 1 if binary else classes - 1
    if scored.size and (scored.min() < 0 or scored.max() > top):
        bad = int(scored.max() if scored.max() > top else scored.min())
        what = ("a one-output (binary) model takes labels 0 and 1" if binary
                else f"the model's first output has {classes} classes, 0..{top}")
        raise InputError(f"eval labels 'y' hold {bad}, but {what}; labels count from 0"
                         + (" (-100 marks a step to skip)" if labels.ndim > 1 else ""))
    return labels


def _one_hot(y: np.ndarray) -> bool:
    values = np.asarray(y)
    if values.size == 0 or not np.isin(values, (0, 1)).all():
        return False
    return bool((values.sum(axis=-1) == 1).all())


def predictions(outputs: np.ndarray, threshold: float = 0.0) -> np.ndarray:
    """Class predictions: argmax over the last axis, or ``> threshold`` for a single output."""
    out = np.asarray(outputs)
    if out.ndim == 1 or out.shape[-1] == 1:
        return (out.reshape(out.shape[:-1] if out.ndim > 1 else out.shape) > threshold).astype(np.int64)
    return out.argmax(axis=-1)


# Below this fraction of the targets' mean magnitude the float model's MAE is "about zero" (an eval set
# labelled with the float model's own outputs): a relative increase over it would refuse any change at all.
NEAR_ZERO_MAE = 1e-3


def metric_drop(name: str, reference: float, candidate: float, target_scale: float | None = None) -> float:
    """How much worse ``candidate`` is: accuracy points lost, or the MAE increase relative to the float MAE
    (to ``target_scale``, the targets' mean absolute value, when the float MAE is about zero)."""
    if name == "accuracy":
        return reference - candidate
    return (candidate - reference) / max(abs(reference), mae_basis(reference, target_scale), 1e-12)


def mae_basis(reference: float, target_scale: float | None) -> float:
    """What a MAE increase is relative to: the float MAE, or the targets' scale when that MAE is about zero."""
    if target_scale and abs(reference) < NEAR_ZERO_MAE * target_scale:
        return float(target_scale)
    return abs(reference)


def target_scale(y: np.ndarray) -> float:
    """Mean absolute value of regression targets (0 when empty)."""
    y = np.asarray(y, np.float64)
    return float(np.mean(np.abs(y))) if y.size else 0.0

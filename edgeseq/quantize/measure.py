"""Measuring a quantized file against its float original: task metric on an eval set, output drift.

:func:`compare_metric` and :func:`drift` only measure; the caller decides (see ``api.quantize``).

>>> m = compare_metric("m.onnx", "m.int8.onnx", load_dataset("eval.npz", need_labels=True))  # doctest: +SKIP
>>> m.passed                                                                                  # doctest: +SKIP
True
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..metrics import binary_threshold, mae_basis, metric_drop, target_scale, task_metric
from ..tolerances import max_metric_drop
from .data import Dataset

DRIFT_RANDOM_BATCH = 16


@dataclass
class MetricComparison:
    """Task metric of the float and the quantized file on one eval set, and the verdict."""

    metric: str  # "accuracy" or "mae"
    float_value: float
    quantized_value: float
    drop: float  # accuracy points lost (fraction) or relative MAE increase
    max_drop: float
    samples: int
    eval_file: str
    relative_to: str = ""  # for MAE: "" (the float MAE) or "the targets' mean |y|" when the float MAE is ~0

    @property
    def passed(self) -> bool:
        return math.isfinite(self.quantized_value) and self.drop <= self.max_drop + 1e-12

    def describe(self, precision: str) -> str:
        if self.metric == "accuracy":
            return (f"accuracy float {self.float_value:.4f} vs {precision} {self.quantized_value:.4f}: "
                    f"drop {100 * self.drop:.2f} points (max {100 * self.max_drop:.2f}) on {self.samples} samples")
        basis = (f" of {self.relative_to} (the float MAE is about 0: labels made from its own outputs?)"
                 if self.relative_to else "")
        return (f"MAE float {self.float_value:.5g} vs {precision} {self.quantized_value:.5g}: "
                f"{100 * self.drop:+.2f}%{basis} (max +{100 * self.max_drop:.2f}%) on {self.samples} samples")

    def to_card(self) -> dict[str, Any]:
        d = asdict(self)
        d["passed"] = self.passed
        return d


@dataclass
class Drift:
    """How far the quantized outputs move from the float outputs on the same inputs."""

    inputs: str  # "eval", "calibration" or "random"
    samples: int
    max_abs: float
    mean_abs: float
    sqnr_db: float  # 10 log10(sum float^2 / sum (quant - float)^2); inf when identical
    note: str = ""
    nonfinite: bool = False  # the quantized model gives NaN/Inf where the float model does not

    def describe(self) -> str:
        sqnr = "inf" if math.isinf(self.sqnr_db) else f"{self.sqnr_db:.1f} dB"
        text = (f"output drift vs float on {self.samples} {self.inputs} samples: max abs {self.max_abs:.3g}, "
                f"mean abs {self.mean_abs:.3g}, SQNR {sqnr}")
        return text + (f" ({self.note})" if self.note else "")

    def to_card(self) -> dict[str, Any]:
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in asdict(self).items()}


def predict(path: str | Path, data: Dataset, threads: int | None = None) -> np.ndarray:
    """First output of an ONNX file on a dataset (lengths honoured), on CPU."""
    from ..runtime.session import Session

    session = Session(path, device="cpu", threads=threads)
    inputs = session.data_inputs()
    if len(inputs) == 1:
        return session.predict(data.x, lengths=data.lengths)
    out = session.data_outputs()[0].name  # several inputs: the first is x, the others come by name
    feeds = {inputs[0].name: data.x, **data.others}
    if session.lengths_input and data.lengths is not None:  # a --lengths file: the padding is not data
        feeds[session.lengths_input] = data.lengths
    step = session.batch_size
    return np.concatenate([session.run({k: v[i : i + step] for k, v in feeds.items()}, outputs=[out])[out]
                           for i in range(0, len(data.x), step)])


def compare_metric(float_path: str | Path, quant_path: str | Path, data: Dataset, max_drop: float | None = None,
                   float_outputs: np.ndarray | None = None) -> MetricComparison:
    """Task metric (accuracy for integer labels, else MAE) of both files on ``data``."""
    assert data.y is not None, "eval data needs labels"
    ref = predict(float_path, data) if float_outputs is None else float_outputs
    threshold = binary_threshold(ref)  # a one-output model: probability or logit, read from the float model
    # the padded length, which per-step targets follow (a time-first set's lengths count its axis 1)
    time_first = data.lengths is not None and len(data.lengths) != len(data.x)
    steps = int(data.x.shape[0] if time_first else data.x.shape[1]) if data.x.ndim > 1 else None
    name, ref_value = task_metric(ref, data.y, threshold, data.lengths, steps=steps)
    _, value = task_metric(predict(quant_path, data), data.y, threshold, data.lengths, steps=steps)
    scale = target_scale(data.y) if name == "mae" else None
    drop = metric_drop(name, ref_value, value, scale) if math.isfinite(value) else math.inf
    basis = "the targets' mean |y|" if name == "mae" and mae_basis(ref_value, scale) != abs(ref_value) else ""
    return MetricComparison(name, ref_value, value, drop, max_metric_drop(name, max_drop), len(data.y),
                            Path(data.source).name, basis)


def drift_between(reference: np.ndarray, candidate: np.ndarray, inputs: str) -> Drift:
    """Drift statistics of ``candidate`` against ``reference`` (elements where the reference is finite)."""
    ref = np.asarray(reference, np.float64)
    got = np.asarray(candidate, np.float64)
    finite = np.isfinite(ref)
    note = ""
    if not finite.all():
        note = f"float model gives NaN/Inf on {np.mean(~finite):.0%} of outputs for these inputs; ignored"
    if (finite & ~np.isfinite(got)).any():
        return Drift(inputs, len(ref), math.inf, math.inf, -math.inf, "quantized model gives NaN/Inf where float does not",
                     nonfinite=True)
    if not finite.any():
        return Drift(inputs, len(ref), math.nan, math.nan, math.nan, note + "; pass --calibration or --eval data")
    diff = np.abs(got[finite] - ref[finite])
    noise, signal = float(np.sum(diff**2)), float(np.sum(ref[finite] ** 2))
    sqnr = math.inf if noise == 0 else 10 * math.log10(max(signal, 1e-30) / noise)
    return Drift(inputs, len(ref), float(diff.max()), float(diff.mean()), sqnr, note)


def drift(float_path: str | Path, quant_path: str | Path, data: Dataset | None, inputs: str,
          float_outputs: np.ndarray | None = None) -> Drift:
    """Drift on ``data``, or on random inputs shaped from the float file's model card when ``data`` is None."""
    if data is None:
        data = random_dataset(float_path)
        inputs = "random"
    ref = predict(float_path, data) if float_outputs is None else float_outputs
    return drift_between(ref, predict(quant_path, data), inputs)


def random_dataset(path: str | Path, seed: int = 0) -> Dataset:
    """Random inputs at the export example's length (standard normal floats, ids within the vocabulary)."""
    from ..export.parity import spec_of_session
    from ..runtime.session import Session

    spec = spec_of_session(Session(path, device="cpu"))
    arrays = spec.random(spec.fixed_batch or DRIFT_RANDOM_BATCH, max(spec.example_length, 1), seed=seed)
    return Dataset(arrays[0], None, None, "random", dict(zip(spec.names[1:], arrays[1:])))

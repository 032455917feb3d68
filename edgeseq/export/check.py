"""``edgeseq check``: parity of an ONNX file against its PyTorch (or Keras) source over a sweep.

>>> report = check("m.onnx", "models/motion_lstm.py:build", lengths=[1, 17, 1000])  # doctest: +SKIP
>>> report.passed                                                                    # doctest: +SKIP
True
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

from ..tolerances import Tolerance, tolerance_for
from . import parity
from .loading import is_keras_ref, load_model

DEFAULT_BATCH_SIZES = (1, 3, 16)
DEFAULT_LENGTHS = (1, 2, 17, 100, 1000)


def check(
    onnx_path: str | Path,
    against: Any,
    *,
    weights: str | Path | None = None,
    batch_sizes: Iterable[int] = DEFAULT_BATCH_SIZES,
    lengths: Iterable[int] = DEFAULT_LENGTHS,
    atol: float | None = None,
    rtol: float | None = None,
    device: str = "cpu",
    eval_data: str | Path | None = None,
    progress: Callable[[str], None] | None = None,
) -> parity.ParityReport:
    """Measure parity of ``onnx_path`` against a model reference or ``nn.Module`` (no raising on mismatch).

    Lengths always include 1 and one longer than the export example.
    """
    from ..runtime.session import Session

    session = Session(onnx_path, device=device)
    spec = parity.spec_of_session(session)
    lengths = sorted(set(lengths) | {1, 2 * spec.example_length + 1})
    precision = session.card.get("precision", "float32")
    base = tolerance_for(precision)
    tol = Tolerance(atol if atol is not None else base.atol, rtol if rtol is not None else base.rtol, base.min_sqnr_db)
    names = [o.name for o in session.outputs]
    if isinstance(against, str) and is_keras_ref(against):
        from ..keras import keras_reference

        keras_fn = keras_reference(against)

        def run_ref(arrays: list[np.ndarray]) -> list[np.ndarray]:
            out = keras_fn(*arrays)
            return [np.asarray(o) for o in (out if isinstance(out, (list, tuple)) else [out])]
    else:
        model = load_model(against, weights) if isinstance(against, (str, Path)) else against.eval()
        run_ref = parity.torch_runner(model)

    def run_onnx(arrays: list[np.ndarray]) -> list[np.ndarray]:
        out = session.run(dict(zip(spec.names, arrays)))
        return [out[n] for n in names]

    report = parity.measure_runners(run_onnx, run_ref, spec, names, batch_sizes, lengths, tol, precision, progress=progress)
    report.provider = session.providers[0]
    if eval_data is not None:
        _compare_metrics(report, session, run_ref, eval_data)
    return report


def _compare_metrics(report: parity.ParityReport, session: Any, run_ref: Callable[..., list[np.ndarray]],
                     eval_data: str | Path) -> None:
    """Add the task metric of PyTorch and ONNX on an eval set (x, y[, lengths]) to the report."""
    from ..metrics import predictions, task_metric
    from ..runtime.io import read_input

    data = np.load(eval_data, allow_pickle=False)
    batch = read_input(eval_data)
    y = data["y"]
    onnx_out = session.predict(batch.x, lengths=batch.lengths)
    ref_out = reference_outputs(run_ref, batch.x, batch.lengths)
    name, onnx_value = task_metric(onnx_out, y)
    _, ref_value = task_metric(ref_out, y)
    agree = float(np.mean(predictions(onnx_out) == predictions(ref_out))) if name == "accuracy" else None
    report.extra["metrics"] = {"metric": name, "pytorch": ref_value, "onnx": onnx_value, "agreement": agree,
                               "samples": int(len(y))}
    line = f"eval set {Path(eval_data).name}: {name} PyTorch {ref_value:.4f} vs ONNX {onnx_value:.4f}"
    if agree is not None:
        line += f"; same prediction on {agree:.2%} of {len(y)} samples"
    report.extra["metric_lines"] = [line]


def reference_outputs(run_ref: Callable[..., list[np.ndarray]], x: np.ndarray, lengths: np.ndarray | None,
                      batch_size: int = 256) -> np.ndarray:
    """First output of the reference on x; samples with lengths run unpadded, grouped by length."""
    if lengths is None:
        return np.concatenate([run_ref([x[i : i + batch_size]])[0] for i in range(0, len(x), batch_size)])
    result: np.ndarray | None = None
    for length in np.unique(lengths):
        idx = np.flatnonzero(lengths == length)
        for i in range(0, len(idx), batch_size):
            part = idx[i : i + batch_size]
            y = run_ref([x[part, : int(length)]])[0]
            if result is None:
                result = np.empty((len(x), *y.shape[1:]), y.dtype)
            result[part] = y
    assert result is not None
    return result

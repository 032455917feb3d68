"""Eval and calibration data: arrays ``x`` (+ ``y`` for eval, ``lengths`` when variable) and feeds.

>>> data = load_dataset("models/data/fashion_lstm-test.npz", need_labels=True)   # doctest: +SKIP
>>> data.x.shape, data.y.shape                                                   # doctest: +SKIP
((2000, 28, 28), (2000,))
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from ..runtime.io import read_input

CALIBRATION_SAMPLES = 512  # enough to fix activation ranges; more only costs time
CALIBRATION_BATCH = 32


@dataclass
class Dataset:
    """Inputs (batch first), optional labels and per-sample lengths, and where they came from."""

    x: np.ndarray
    y: np.ndarray | None = None
    lengths: np.ndarray | None = None
    source: str = ""
    others: dict[str, np.ndarray] = field(default_factory=dict)  # the other inputs of a multi-input model, by name

    def __len__(self) -> int:
        return len(self.x)

    def spread(self, n: int) -> Dataset:
        """``n`` evenly spaced samples (batch-first data): deterministic, and it covers sets sorted by class."""
        if n >= len(self):
            return self
        idx = np.linspace(0, len(self) - 1, n).round().astype(np.int64)
        lengths = None if self.lengths is None else self.lengths[idx]
        y = None if self.y is None else self.y[idx]
        return Dataset(self.x[idx], y, lengths, self.source, {k: v[idx] for k, v in self.others.items()})

    @property
    def variable_length(self) -> bool:
        return self.lengths is not None and not (self.lengths == self.x.shape[1]).all()


def load_dataset(path: str | Path, need_labels: bool = False) -> Dataset:
    """Read ``.npz`` (x[, y][, lengths]) or ``.npy`` (x); with ``need_labels`` the ``y`` array is required."""
    path = Path(path)
    batch = read_input(path)
    if batch.x.ndim < 2:
        raise InputError(f"{path}: 'x' has shape {batch.x.shape}; expected (samples, steps, ...)")
    y = None
    if path.suffix.lower() == ".npz":
        try:
            with np.load(path, allow_pickle=False) as data:
                y = data["y"] if "y" in data.files else None
        except (ValueError, OSError, zipfile.BadZipFile) as exc:
            raise InputError(f"{path}: not a valid .npz file ({exc})") from None
    if need_labels:
        if y is None:
            raise InputError(f"{path}: an eval set needs labels; save it with numpy.savez(path, x=..., y=...)")
        # samples along axis 0, or along axis 1 in a time-first model's (steps, samples, ...) data
        per_sample = len(y) == len(batch.x) or (len(y) == batch.x.shape[1] and (
            batch.lengths is None or len(batch.lengths) == len(y)))
        if not per_sample or y.dtype.kind not in "biuf":
            raise InputError(f"{path}: 'y' must hold one number per sample of 'x' ({len(batch.x)}); "
                             f"got shape {y.shape} dtype {y.dtype}")
    return Dataset(batch.x, y, batch.lengths, str(path))


def batches(data: Dataset, batch_size: int = CALIBRATION_BATCH,
            batch_axis: int = 0) -> Iterator[tuple[np.ndarray, np.ndarray | None, dict[str, np.ndarray]]]:
    """Yield (x, lengths, other inputs) chunks; variable-length samples are grouped by length and unpadded.

    Padding would feed zeros the model never sees in use and widen the calibrated ranges.
    ``batch_axis`` is 1 for time-first models (their data is (steps, samples, ...)); the other inputs
    of a multi-input model (``data.others``, samples first) follow the same samples.
    """
    n = data.x.shape[batch_axis]

    def others(idx: np.ndarray) -> dict[str, np.ndarray]:
        return {k: np.ascontiguousarray(v[idx]) for k, v in data.others.items()}

    if batch_axis != 0:
        if data.lengths is not None:
            raise InputError(f"{data.source}: per-sample lengths are not supported for time-first models here")
        for i in range(0, n, batch_size):
            idx = np.arange(i, min(i + batch_size, n))
            yield np.ascontiguousarray(np.take(data.x, idx, axis=batch_axis)), None, others(idx)
        return
    if data.lengths is None or (data.lengths == data.x.shape[1]).all():
        for i in range(0, n, batch_size):
            idx = np.arange(i, min(i + batch_size, n))
            yield data.x[i : i + batch_size], None, others(idx)
        return
    for length in np.unique(data.lengths):
        idx = np.flatnonzero(data.lengths == length)
        for i in range(0, len(idx), batch_size):
            part = idx[i : i + batch_size]
            yield (np.ascontiguousarray(data.x[part, : int(length)]), np.full(len(part), int(length), np.int64),
                   others(part))


def with_other_inputs(data: Dataset, names: list[str]) -> Dataset:
    """``data`` with the arrays of a multi-input model's other inputs (``names``) read from its .npz."""
    from ..runtime.io import read_npz_inputs

    others = read_npz_inputs(data.source, names, inputs=["x", *names])
    for name, array in others.items():
        if len(array) != len(data.x):
            raise InputError(f"{data.source}: '{name}' has {len(array)} samples, 'x' has {len(data.x)}")
    return Dataset(data.x, data.y, data.lengths, data.source, others)


def make_feed(session: Any, x: np.ndarray, lengths: np.ndarray | None,
              others: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """A feed for every graph input of an edgeseq ``Session``: data (the sequence, then any other inputs by
    name), lengths (if any), zero states."""
    data_inputs = session.data_inputs()
    others = others or {}
    missing = [i.name for i in data_inputs[1:] if i.name not in others]
    if missing:
        raise InputError(f"the model also takes {', '.join(missing)}; the calibration .npz needs an array for each")
    spec = data_inputs[0]
    feed = {spec.name: session.check_input(x, spec)}
    for other in data_inputs[1:]:
        feed[other.name] = session.check_input(others[other.name], other)
    if lengths is not None and session.lengths_input:
        feed[session.lengths_input] = lengths
    return session.with_defaults(feed)


class CalibrationReader:
    """An ``onnxruntime.quantization.CalibrationDataReader`` over a :class:`Dataset`.

    ``one_batch`` feeds everything in a single run: onnxruntime's histogram calibrators (entropy,
    percentile) fail when runs have different shapes (microsoft/onnxruntime#18792).
    """

    def __init__(self, session: Any, data: Dataset, batch_size: int = CALIBRATION_BATCH, one_batch: bool = False) -> None:
        if one_batch:
            if data.variable_length:
                raise InputError(f"{data.source}: entropy/percentile calibration needs equal-length samples "
                                 "(onnxruntime issue #18792); use --calibration-method minmax")
            batch_size = max(1, len(data))
        axis = 1 if session.card.get("layout") == "time_first" else 0
        self._feeds = [make_feed(session, x, lengths, others) for x, lengths, others in batches(data, batch_size, axis)]
        self._pos = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._pos >= len(self._feeds):
            return None
        self._pos += 1
        return self._feeds[self._pos - 1]

    def rewind(self) -> None:
        self._pos = 0

    def __len__(self) -> int:
        return len(self._feeds)

"""Batch inference from files: read an input file, run a Session, write the outputs atomically.

>>> infer_file("model.onnx", "x.npy", "y.npy")      # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from .io import read_input, write_output
from .session import Session


@dataclass
class InferResult:
    outputs: np.ndarray
    samples: int
    provider: str
    seconds: float
    written: str | None


def infer_file(
    model: str | Path,
    input_path: str | Path,
    output: str | Path | None = None,
    device: str = "auto",
    batch_size: int = 256,
    threads: int | None = None,
    allow_nonfinite: bool = False,
    session: Session | None = None,
    log: Callable[[str], None] | None = None,
) -> InferResult:
    """Run ``model`` over every sample in ``input_path``; write to ``output`` (or return text when None)."""
    import time

    session = session or Session(model, device=device, threads=threads, batch_size=batch_size,
                                 allow_nonfinite=allow_nonfinite)
    batch = read_input(input_path)
    x = batch.x
    spec = session.data_inputs()[0]
    if x.ndim == spec.rank - 1 and Path(input_path).suffix.lower() != ".csv":
        x = x[None]  # a single unbatched sequence
    start = time.perf_counter()
    y = session.predict(x, lengths=batch.lengths, batch_size=batch_size)
    seconds = time.perf_counter() - start
    written = write_output(output, y) if output is not None else None
    return InferResult(y, len(y), session.providers[0], seconds, written)

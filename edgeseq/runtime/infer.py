"""Batch inference from files in bounded memory: read chunks, run a Session, write outputs as they come.

A C-order ``.npy`` input is read a few MiB at a time and the output file is written chunk by
chunk to a temporary file that is renamed into place only when complete, so a job over
millions of sequences needs about as much memory as one chunk, and an error, Ctrl-C or
SIGTERM (see :func:`edgeseq.runtime.io.sigterm_as_interrupt`) leaves no partial output.

>>> infer_file("model.onnx", "x.npy", "y.npy")      # doctest: +SKIP
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import numpy as np

from ..errors import InputError
from .io import CHUNK_BYTES, InputSource, format_lines, open_input, open_output
from .session import MAX_LENGTH, Session, TensorSpec, check_shape

Chunk = tuple[int, np.ndarray, "np.ndarray | None"]


@dataclass
class InferResult:
    """What :func:`infer_file` did; ``outputs`` is None when they went to a file or a text stream."""

    outputs: np.ndarray | None
    samples: int
    provider: str
    seconds: float
    written: str | None
    device_reason: str = ""


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
    *,
    text_out: TextIO | None = None,
    progress: Callable[[int, int], None] | None = None,
    max_length: int = MAX_LENGTH,
) -> InferResult:
    """Run ``model`` over every sample in ``input_path``.

    With ``output`` the results go to that file (.npy/.json/.csv), written atomically; with
    ``text_out`` they are printed there as one JSON array per line, after the whole input has
    been checked (so a bad value prints nothing); otherwise they are returned in ``outputs``.
    ``progress(done, total)`` is called after each chunk.

    >>> infer_file("model.onnx", "x.npy", "y.npy", device="cpu").samples     # doctest: +SKIP
    1000000
    """
    session = session or Session(model, device=device, threads=threads, batch_size=batch_size,
                                 allow_nonfinite=allow_nonfinite, max_length=max_length)
    data = session.data_inputs()
    if len(data) != 1:
        raise InputError(f"the model takes {len(data)} data inputs; infer reads one array per file, use Session.run")
    spec = data[0]
    started = time.perf_counter()
    with open_input(input_path) as source:
        total, chunks = _plan(source, spec, session, batch_size)
        if text_out is not None:
            for start, x, _ in chunks():
                session.check_input(x, spec, offset=start)
        collected: list[np.ndarray] = []
        if output is not None:
            with open_output(output, total) as writer:
                for y in _run(session, chunks, batch_size, progress, total):
                    writer.write(y)
            written: str | None = str(output)
        else:
            written = None
            for y in _run(session, chunks, batch_size, progress, total):
                if text_out is not None:
                    text_out.write(format_lines(y) + "\n")
                else:
                    collected.append(y)
            if text_out is not None:
                text_out.flush()
    outputs = None if output is not None or text_out is not None else np.concatenate(collected, axis=0)
    return InferResult(outputs, total, session.providers[0], time.perf_counter() - started, written,
                       session.device_reason)


def _plan(source: InputSource, spec: TensorSpec, session: Session,
          batch_size: int) -> tuple[int, Callable[[], Iterator[Chunk]]]:
    """How many samples the input has, and a function yielding ``(first sample, x, lengths)`` chunks."""
    batch_axis = session._batch_axis()
    single = len(source.shape) == spec.rank - 1 and source.path.suffix.lower() != ".csv"
    if not single:
        # the whole input's shape, checked before reading any data (a zero-stride view costs no memory)
        check_shape(np.lib.stride_tricks.as_strided(np.zeros(1, source.dtype), source.shape, (0,) * len(source.shape)),
                    spec)
    seq_axis = session._seq_axis()
    if single and seq_axis > batch_axis:
        seq_axis -= 1  # the file has no batch axis
    if 0 <= seq_axis < len(source.shape):
        session.check_length(spec, source.shape[seq_axis])
    if not single and batch_axis == 0:
        rows = source.default_rows(batch_size)
        return len(source), lambda: source.chunks(rows)
    x = source.read_all()
    lengths = source.lengths
    if single:
        x, lengths = np.expand_dims(x, batch_axis), None  # one unbatched sequence
    check_shape(x, spec)
    n = x.shape[batch_axis]
    per_sample = max(1, x.nbytes // max(1, n))
    rows = max(1, CHUNK_BYTES // per_sample)
    rows = max(batch_size, rows - rows % batch_size) if rows >= batch_size else rows

    def slices() -> Iterator[Chunk]:
        for start in range(0, n, rows):
            index = [slice(None)] * x.ndim
            index[batch_axis] = slice(start, start + rows)
            yield start, x[tuple(index)], None if lengths is None else lengths[start : start + rows]

    return n, slices


def _run(session: Session, chunks: Callable[[], Iterator[Chunk]], batch_size: int,
         progress: Callable[[int, int], None] | None, total: int) -> Iterator[np.ndarray]:
    done = 0
    for start, x, lengths in chunks():
        for y in session.iter_predict(x, lengths, batch_size, offset=start):
            done += len(y)
            yield y
        if progress is not None:
            progress(done, total)

"""Batch inference from files in bounded memory: read chunks, run a Session, write outputs as they come.

A C-order ``.npy`` input is read a few MiB at a time and the output file is written chunk by
chunk to a temporary file that is renamed into place only when complete, so a job over
millions of sequences needs about as much memory as one chunk, and an error, Ctrl-C or
SIGTERM (see :func:`edgeseq.signals.sigterm_as_interrupt`) leaves no partial output.

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
from .checks import TensorSpec, check_shape
from .io import (
    CHUNK_BYTES,
    InputSource,
    format_lines,
    npz_names,
    open_input,
    open_output,
    read_npz_inputs,
    refuse_overwrite,
    write_npz,
)
from .session import MAX_LENGTH, Session

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

    With ``output`` the results go to that file (.npy/.json/.csv; .npz holds every output), written atomically; with
    ``text_out`` they are printed there as one JSON array per line, after the whole input has
    been checked (so a bad value prints nothing); otherwise they are returned in ``outputs``.
    ``progress(done, total)`` is called after each chunk.

    >>> infer_file("model.onnx", "x.npy", "y.npy", device="cpu").samples     # doctest: +SKIP
    1000000
    """
    refuse_overwrite(output, "-o", {"the input": input_path, "the model": model})
    session = session or Session(model, device=device, threads=threads, batch_size=batch_size,
                                 allow_nonfinite=allow_nonfinite, max_length=max_length)
    data = session.data_inputs()
    started = time.perf_counter()
    every_output = output is not None and Path(output).suffix.lower() == ".npz"
    names = [o.name for o in session.data_outputs()]
    if len(names) > 1 and not every_output and log is not None:
        log(f"note: the model has {len(names)} outputs ({', '.join(names)}); this writes the first, {names[0]!r}; "
            "give -o FILE.npz to write them all")
    names = names if every_output else names[:1]
    axes = [session.batch_axis_of(n) for n in names]
    if len(data) != 1:
        total, pieces = _plan_several(session, data, input_path, batch_size, names, progress, log)
        outputs, written = _deliver(pieces, names, total, output, text_out, axes)
    elif session._unbatched:  # one sequence per call: each line (row) of the input alone
        seqs = _sequences(input_path, data[0])
        y = session.predict(seqs)
        outputs, written = _deliver(iter([[y]]), names[:1], len(seqs), output, text_out, [0])
        total = len(seqs)
    else:
        spec = data[0]
        with open_input(input_path) as source:
            try:
                total, chunks = _plan(source, spec, session, batch_size)
            except InputError as exc:
                if not source.hint:
                    raise
                raise InputError(f"{exc}{source.hint}") from None
            if text_out is not None:  # every value checked before anything is printed
                for start, x, _ in chunks():
                    session.check_input(x, spec, offset=start)
            outputs, written = _deliver(_run(session, chunks, batch_size, progress, total, names), names, total,
                                        output, text_out, axes)
    return InferResult(outputs, total, session.providers[0], time.perf_counter() - started, written,
                       session.device_reason)


def _sequences(input_path: str | Path, spec: TensorSpec) -> list[np.ndarray]:
    """The input file as separate sequences: a .jsonl line each, each sample of a batch, or the one sequence."""
    with open_input(input_path) as source:
        x, lengths = source.read_all(), source.lengths
    if lengths is not None:
        return [x[i, : int(n)] for i, n in enumerate(lengths)]
    return [x] if x.ndim == spec.rank else list(x)


def _deliver(pieces: Iterator[list[np.ndarray]], names: list[str], total: int, output: str | Path | None,
             text_out: TextIO | None, axes: list[int]) -> tuple[np.ndarray | None, str | None]:
    """Write the pieces (one array per name, samples along ``axes``) to ``output`` or ``text_out``, or return
    them joined: (outputs, written path). ``.npz`` holds every name; other files and text get the first."""
    if output is not None and Path(output).suffix.lower() == ".npz":
        parts = list(pieces)
        return None, write_npz(output, {n: np.concatenate([p[k] for p in parts], axis=axes[k])
                                        for k, n in enumerate(names)})
    axis = axes[0]
    if output is not None:
        with open_output(output, total) as writer:
            if axis == 0:  # written as it comes
                for ys in pieces:
                    writer.write(ys[0])
            else:  # samples along another axis (a time-first model's (steps, batch, ...)): joined, then written
                whole = np.concatenate([ys[0] for ys in pieces], axis=axis)
                writer.total = whole.shape[0]  # the file's first axis
                writer.write(whole)
        return None, str(output)
    collected: list[np.ndarray] = []
    for ys in pieces:
        if text_out is not None:
            text_out.write(format_lines(np.moveaxis(ys[0], axis, 0)) + "\n")  # a line per sample
        else:
            collected.append(ys[0])
    if text_out is not None:
        text_out.flush()
        return None, None
    return np.concatenate(collected, axis=axis), None


def _plan(source: InputSource, spec: TensorSpec, session: Session,
          batch_size: int) -> tuple[int, Callable[[], Iterator[Chunk]]]:
    """How many samples the input has, and a function yielding ``(first sample, x, lengths)`` chunks."""
    batch_axis = session._batch_axis()
    # a spectrogram model's (batch, 1, time, bins) or (batch, 1, bins, time): rows are time steps, the 1 is added
    channel = (source.path.suffix.lower() in (".csv", ".jsonl") and spec.rank == 4 and len(source.shape) == 3
               and batch_axis == 0 and spec.shape[1] == 1 and session._seq_axis() in (2, 3))
    single = len(source.shape) == spec.rank - 1 and source.path.suffix.lower() != ".csv" and not channel
    if single and spec.rank == 4 and spec.shape[1] == 1 and source.shape[0] != 1 and batch_axis == 0:
        raise InputError(f"{source.path}: holds {tuple(source.shape)}, and the model takes "
                         f"[{', '.join(map(str, spec.shape))}]: add the channel axis, np.expand_dims(x, 1)")
    # .csv/.jsonl hold a step per row; a (batch, channels, seq) file takes them transposed
    steps_last = (source.path.suffix.lower() in (".csv", ".jsonl") and (batch_axis, session._seq_axis()) == (0, 2)
                  and spec.rank == 3 and len(source.shape) == 3)
    shape = (source.shape[0], source.shape[2], source.shape[1]) if steps_last else source.shape
    if channel:
        n, t, f = source.shape
        shape = (n, 1, t, f) if session._seq_axis() == 2 else (n, 1, f, t)
    # a .csv of token ids (or any [batch, seq] input): one value per row, read as (1, T, 1)
    one_column = (source.path.suffix.lower() == ".csv" and spec.rank == 2 and len(source.shape) == 3)
    if one_column:
        if source.shape[2] != 1:
            raise InputError(f"{source.path}: input {spec.name!r} takes one value per step, but the .csv has "
                             f"{source.shape[2]} columns; write one value per row (a row is a step)")
        shape = (1, source.shape[1]) if batch_axis == 0 else (source.shape[1], 1)
    if not single:
        # the whole input's shape, checked before reading any data (a zero-stride view costs no memory)
        check_shape(np.lib.stride_tricks.as_strided(np.zeros(1, source.dtype), shape, (0,) * len(shape)), spec)
    seq_axis = session._seq_axis()
    if single and seq_axis > batch_axis:
        seq_axis -= 1  # the file has no batch axis
    if 0 <= seq_axis < len(shape):
        session.check_length(spec, shape[seq_axis])
    if not single and batch_axis == 0 and not steps_last and not one_column and not channel:
        rows = source.default_rows(batch_size)
        return len(source), lambda: source.chunks(rows)
    x = source.read_all()
    lengths = source.lengths
    if steps_last:
        x = np.ascontiguousarray(np.swapaxes(x, 1, 2))
    if channel:
        x = np.ascontiguousarray((x if session._seq_axis() == 2 else np.swapaxes(x, 1, 2))[:, None])
    if one_column:
        x = np.expand_dims(x[0, :, 0], batch_axis)
    if source.path.suffix.lower() == ".jsonl" and batch_axis == 1 and not single:
        x = np.ascontiguousarray(np.swapaxes(x, 0, 1))  # a line per sample: side by side for a time-first model
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


def _plan_several(session: Session, data: list[TensorSpec], input_path: str | Path, batch_size: int, names: list[str],
                  progress: Callable[[int, int], None] | None,
                  log: Callable[[str], None] | None = None) -> tuple[int, Iterator[list[np.ndarray]]]:
    """A model with several inputs, read from one .npz (an array per input name, samples along the batch axis,
    and ``lengths`` when the file has a lengths input): the sample count and the outputs ``names``, a batch at
    a time."""
    lengths_name = session._lengths_name
    arrays = read_npz_inputs(input_path, [d.name for d in data], optional=[lengths_name] if lengths_name else [])
    others = [n for n in npz_names(input_path) if n not in arrays]
    if "lengths" in others:  # running the padding as data would give a different answer without a word
        raise InputError(f"{input_path}: holds 'lengths', but this model has no lengths input (its inputs: "
                         f"{', '.join(d.name for d in data)}), so padded steps would count as data; export it with "
                         "--lengths, or give sequences of one length per file and drop 'lengths'")
    if others and log is not None:
        log(f"note: {input_path}: ignored array(s) {', '.join(others)}, which are not inputs of the model")
    lengths = arrays.pop(lengths_name) if lengths_name and lengths_name in arrays else None
    axes = {n: session.batch_axis_of(n) for n in arrays}
    sizes = {n: a.shape[axes[n]] if a.ndim > axes[n] else None for n, a in arrays.items()}
    if len(set(sizes.values())) != 1 or None in sizes.values():
        listed = ", ".join(f"{n} {tuple(a.shape)} (samples on axis {axes[n]})" for n, a in arrays.items())
        raise InputError(f"{input_path}: the inputs need the same number of samples; got {listed}")
    total = next(iter(sizes.values()))
    for spec in data:  # every value checked before anything is written
        arrays[spec.name] = session.check_input(arrays[spec.name], spec)
    if lengths is not None:
        if lengths.shape != (total,):
            raise InputError(f"{input_path}: 'lengths' needs one value per sample, shape ({total},); got {lengths.shape}")
        arrays[lengths_name] = lengths  # its range is checked by Session.run
        axes[lengths_name] = 0

    def runs() -> Iterator[list[np.ndarray]]:
        for start in range(0, total, batch_size):
            part = {n: np.take(a, range(start, min(total, start + batch_size)), axis=axes[n]) for n, a in arrays.items()}
            result = session.run(part, outputs=names)
            yield [result[n] for n in names]
            if progress is not None:
                progress(min(total, start + batch_size), total)

    return total, runs()


def _run(session: Session, chunks: Callable[[], Iterator[Chunk]], batch_size: int,
         progress: Callable[[int, int], None] | None, total: int, names: list[str]) -> Iterator[list[np.ndarray]]:
    done, axis = 0, session.batch_axis_of(names[0])
    for start, x, lengths in chunks():
        for ys in session.iter_outputs(x, lengths, batch_size, offset=start, outputs=names):
            done += ys[0].shape[axis] if ys[0].ndim else 1
            yield ys
        if progress is not None:
            progress(done, total)

"""Read model inputs from .npy/.npz/.csv/.jsonl and write outputs atomically.

>>> batch = read_input("x.npy")            # doctest: +SKIP
>>> write_output("y.npy", batch.x)         # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from ..errors import InputError

INPUT_SUFFIXES = (".npy", ".npz", ".csv", ".jsonl")
OUTPUT_SUFFIXES = (".npy", ".json", ".csv")


@dataclass
class InputBatch:
    """Arrays read from an input file: ``x`` (batch first) and optional per-sample ``lengths``."""

    x: np.ndarray
    lengths: np.ndarray | None = None


def _fail(path: Path, what: str) -> InputError:
    return InputError(f"{path}: {what}")


def read_input(path: str | Path, mmap: bool = False) -> InputBatch:
    """Read an input file by extension; raise :class:`InputError` naming the problem and the fix."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in INPUT_SUFFIXES:
        raise _fail(path, f"unsupported input type {suffix or '(none)'!r}; use one of {', '.join(INPUT_SUFFIXES)}")
    if not path.exists():
        raise _fail(path, "no such file")
    if path.is_dir():
        raise _fail(path, "is a directory, expected a file")
    if path.stat().st_size == 0:
        raise _fail(path, "file is empty")
    readers = {".npy": _read_npy, ".npz": _read_npz, ".csv": _read_csv, ".jsonl": _read_jsonl}
    if suffix == ".npy":
        return _read_npy(path, mmap)
    return readers[suffix](path)


def _read_npy(path: Path, mmap: bool = False) -> InputBatch:
    try:
        x = np.load(path, allow_pickle=False, mmap_mode="r" if mmap else None)
    except ValueError as exc:
        if "pickle" in str(exc).lower():
            raise _fail(path, "holds Python objects (pickled); save a numeric array instead") from None
        raise _fail(path, f"not a valid .npy file ({exc}); re-save it with numpy.save") from None
    except (OSError, EOFError) as exc:
        raise _fail(path, f"not a valid .npy file ({exc}); re-save it with numpy.save") from None
    return InputBatch(_check_numeric(path, x))


def _read_npz(path: Path) -> InputBatch:
    try:
        with np.load(path, allow_pickle=False) as data:
            if "x" not in data.files:
                raise _fail(path, f"has no array named 'x' (found: {', '.join(data.files) or 'none'}); save with numpy.savez(path, x=...)")
            x = data["x"]
            lengths = data["lengths"] if "lengths" in data.files else None
    except InputError:
        raise
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise _fail(path, f"not a valid .npz file ({exc}); re-save it with numpy.savez") from None
    x = _check_numeric(path, x)
    if lengths is not None:
        lengths = _check_lengths(path, lengths, x)
    return InputBatch(x, lengths)


def _check_numeric(path: Path, x: np.ndarray) -> np.ndarray:
    if x.dtype.kind not in "biuf":
        raise _fail(path, f"array has dtype {x.dtype}, expected numbers")
    if x.ndim == 0:
        raise _fail(path, "array is a scalar; expected (batch, seq, ...)")
    return x


def _check_lengths(path: Path, lengths: np.ndarray, x: np.ndarray) -> np.ndarray:
    lengths = np.asarray(lengths)
    if lengths.dtype.kind not in "iu" or lengths.ndim != 1 or len(lengths) != len(x):
        raise _fail(path, f"'lengths' must be 1-D integers, one per sample ({len(x)}); got shape {lengths.shape} dtype {lengths.dtype}")
    if x.ndim >= 2 and (lengths.min(initial=1) < 1 or lengths.max(initial=0) > x.shape[1]):
        raise _fail(path, f"'lengths' must be between 1 and the padded length {x.shape[1]}")
    return lengths.astype(np.int64)


def _parse_number(path: Path, text: str, where: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise _fail(path, f"{where}: {text.strip()!r} is not a number") from None


def _read_csv(path: Path) -> InputBatch:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise _fail(path, "is not a UTF-8 text CSV file") from None
    rows = [r for r in csv.reader(io.StringIO(text)) if any(c.strip() for c in r)]
    if not rows:
        raise _fail(path, "has no data rows")
    start = 0
    if all(_not_number(c) for c in rows[0]):
        start = 1  # a header line
    if len(rows) <= start:
        raise _fail(path, "has a header but no data rows")
    width = len(rows[start])
    values = []
    for i, row in enumerate(rows[start:], start=start + 1):
        if len(row) != width:
            raise _fail(path, f"row {i} has {len(row)} columns, expected {width} like the first row")
        values.append([_parse_number(path, c, f"row {i} column {j + 1}") for j, c in enumerate(row)])
    x = np.asarray(values, dtype=np.float64)[None]  # one sequence: (1, T, F)
    return InputBatch(x)


def _not_number(cell: str) -> bool:
    try:
        float(cell)
        return False
    except ValueError:
        return True


def _read_jsonl(path: Path) -> InputBatch:
    seqs: list[np.ndarray] = []
    with path.open(encoding="utf-8", errors="strict") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise _fail(path, f"line {lineno}: invalid JSON ({exc.msg})") from None
            if isinstance(obj, dict):
                if "x" not in obj:
                    raise _fail(path, f"line {lineno}: object has no 'x' key")
                obj = obj["x"]
            try:
                arr = np.asarray(obj)
            except ValueError:
                raise _fail(path, f"line {lineno}: ragged rows (time steps with different feature counts)") from None
            if arr.dtype == object:
                raise _fail(path, f"line {lineno}: ragged rows (time steps with different feature counts)")
            if arr.dtype.kind not in "biuf":
                raise _fail(path, f"line {lineno}: values must be numbers")
            if arr.ndim == 0 or arr.shape[0] == 0:
                raise _fail(path, f"line {lineno}: zero-length sequence; every sequence needs at least one step")
            if seqs and arr.shape[1:] != seqs[0].shape[1:]:
                raise _fail(path, f"line {lineno}: steps have shape {arr.shape[1:]}, but line 1 has {seqs[0].shape[1:]}")
            seqs.append(arr)
    if not seqs:
        raise _fail(path, "has no sequences")
    return pad_sequences(seqs)


def pad_sequences(seqs: list[np.ndarray]) -> InputBatch:
    """Zero-pad sequences of different lengths to one batch; ``lengths`` is None when all are equal."""
    lengths = np.array([len(s) for s in seqs], dtype=np.int64)
    dtype = np.result_type(*[s.dtype for s in seqs])
    x = np.zeros((len(seqs), int(lengths.max()), *seqs[0].shape[1:]), dtype=dtype)
    for i, s in enumerate(seqs):
        x[i, : len(s)] = s
    return InputBatch(x, None if (lengths == lengths[0]).all() else lengths)


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it over ``path`` only when the block succeeds."""
    path = Path(path)
    directory = path.parent if str(path.parent) else Path(".")
    if not directory.is_dir():
        raise InputError(f"{path}: output folder {directory} does not exist")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + path.suffix, dir=directory)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def write_output(path: str | Path | None, y: np.ndarray) -> str:
    """Write ``y`` to ``path`` (.npy/.json/.csv, atomically) or return it as text lines when path is None."""
    if path is None:
        return format_lines(y)
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in OUTPUT_SUFFIXES:
        raise InputError(f"{path}: unsupported output type {suffix or '(none)'!r}; use one of {', '.join(OUTPUT_SUFFIXES)}")
    with atomic_path(path) as tmp:
        if suffix == ".npy":
            with open(tmp, "wb") as fh:
                np.save(fh, y)
        elif suffix == ".json":
            tmp.write_text(json.dumps(y.tolist()) + "\n", encoding="utf-8")
        else:
            flat = y.reshape(len(y), -1) if y.ndim > 1 else y[:, None]
            with open(tmp, "w", newline="", encoding="utf-8") as fh:
                csv.writer(fh).writerows(flat.tolist())
    return str(path)


def format_lines(y: np.ndarray) -> str:
    """One JSON array per sample, one sample per line."""
    return "\n".join(json.dumps(row.tolist() if isinstance(row, np.ndarray) else row) for row in y)

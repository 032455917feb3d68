"""Read model inputs from .npy/.npz/.csv/.jsonl and write outputs atomically, in chunks when big.

Every malformed file ends in :class:`InputError` naming the file, the problem and the fix;
outputs go to a temporary file beside the target and are renamed into place only when
complete, so an error, Ctrl-C or SIGTERM never leaves a half-written output.

>>> batch = read_input("x.npy")            # doctest: +SKIP
>>> write_output("y.npy", batch.x)         # doctest: +SKIP
>>> with open_input("big.npy") as src, open_output("y.npy", len(src)) as out:   # doctest: +SKIP
...     for start, x, _ in src.chunks(4096):
...         out.write(x[:, -1])
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import os
import struct
import tempfile
import zipfile
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from ..errors import InputError

INPUT_SUFFIXES = (".npy", ".npz", ".csv", ".jsonl")
OUTPUT_SUFFIXES = (".npy", ".json", ".csv")
CHUNK_BYTES = 2 << 20  # rows read from a .npy at a time: about this many bytes
_MAX_JSONL_DIMS = 16  # nesting of one JSONL sequence (numpy allows 64 dims, padding adds one)

# What numpy's and zipfile's parsers raise on a malformed file (besides ValueError/OSError).
_PARSE_ERRORS = (ValueError, OSError, EOFError, TypeError, KeyError, SyntaxError, OverflowError, UnicodeDecodeError,
                 RecursionError, NotImplementedError, RuntimeError, struct.error, zlib.error, zipfile.BadZipFile)


@dataclass
class InputBatch:
    """Arrays read from an input file: ``x`` (batch first) and optional per-sample ``lengths``."""

    x: np.ndarray
    lengths: np.ndarray | None = None
    hint: str = ""  # said with a shape error, e.g. a CSV whose first column looks like a pandas index


def _fail(path: Path, what: str) -> InputError:
    return InputError(f"{path}: {what}")


def _check_file(path: Path) -> str:
    suffix = path.suffix.lower()
    if str(path) == "-":
        raise InputError("--input - (stdin) is not read as a file; save the data as .npy/.npz/.csv/.jsonl, "
                         "or pipe one step per line into --stream")
    if suffix not in INPUT_SUFFIXES:
        raise _fail(path, f"unsupported input type {suffix or '(none)'!r}; use one of {', '.join(INPUT_SUFFIXES)}")
    if not path.exists():
        raise _fail(path, "no such file")
    if path.is_dir():
        raise _fail(path, "is a directory, expected a file")
    if path.stat().st_size == 0:
        raise _fail(path, "file is empty")
    return suffix


def read_input(path: str | Path, mmap: bool = False) -> InputBatch:
    """Read an input file by extension; raise :class:`InputError` naming the problem and the fix.

    ``mmap=True`` maps a .npy file instead of loading it (pages are read when used).
    """
    path = Path(path)
    suffix = _check_file(path)
    if suffix == ".npy":
        return _read_npy(path, mmap)
    readers = {".npz": _read_npz, ".csv": _read_csv, ".jsonl": _read_jsonl}
    return readers[suffix](path)


# ------------------------------------------------------------------------------------------ .npy
@dataclass(frozen=True)
class NpyHeader:
    """What a .npy header says, checked against the file's size."""

    shape: tuple[int, ...]
    dtype: np.dtype
    fortran_order: bool
    data_offset: int


def _parse_header(fh: IO[bytes]) -> tuple[tuple[int, int], tuple[int, ...], bool, np.dtype]:
    """Magic, shape, order and dtype of a .npy stream; any failure of numpy's parser becomes ValueError."""
    try:
        version = np.lib.format.read_magic(fh)
    except Exception as exc:  # noqa: BLE001 - numpy's parser raises many kinds on hostile bytes
        raise ValueError(f"no NumPy header ({exc})") from None
    reader = _header_reader(version)
    if reader is None:
        raise ValueError(f"format version {version[0]}.{version[1]} is not supported by this numpy")
    try:
        shape, fortran, dtype = reader(fh)
    except Exception as exc:  # noqa: BLE001 - e.g. tokenize.TokenError, SyntaxError, TypeError from the header
        raise ValueError(f"corrupt header ({str(exc)[:120]})") from None
    return version, tuple(shape), bool(fortran), np.dtype(dtype)


def _header_reader(version: tuple[int, int]) -> Any:
    fmt = np.lib.format
    readers = {(1, 0): fmt.read_array_header_1_0, (2, 0): fmt.read_array_header_2_0}
    if version in readers:
        return readers[version]
    try:  # version 3.0 (utf-8 field names) has no public reader
        from numpy.lib._format_impl import _read_array_header  # type: ignore[attr-defined]
    except ImportError:
        return None
    return lambda fh: _read_array_header(fh, version)


def read_npy_header(path: str | Path) -> NpyHeader:
    """Parse and check a .npy header without reading the data: refuses pickles and truncated files."""
    path = Path(path)
    with open(path, "rb") as fh:
        if fh.read(6) != b"\x93NUMPY":
            raise _fail(path, "is not a .npy file (no NumPy header); save arrays with numpy.save")
        fh.seek(0)
        try:
            _, shape, fortran, dtype = _parse_header(fh)
        except ValueError as exc:
            raise _fail(path, f"is not a valid .npy file: {exc}; re-save it with numpy.save") from None
        offset = fh.tell()
    if dtype.hasobject:
        raise _fail(path, "holds Python objects (pickled), which are never loaded; save a numeric array instead")
    expected = math.prod(shape) * dtype.itemsize
    available = path.stat().st_size - offset
    if available < expected:
        raise _fail(path, f"is truncated: its header says shape {tuple(shape)} of {dtype} ({expected} bytes) but only "
                          f"{max(available, 0)} bytes follow; the file was not fully written, re-create it")
    return NpyHeader(tuple(int(d) for d in shape), dtype, bool(fortran), offset)


def _read_npy(path: Path, mmap: bool = False) -> InputBatch:
    header = read_npy_header(path)
    if not mmap:
        _check_fits_memory(path, math.prod(header.shape) * header.dtype.itemsize)
    try:
        x = np.load(path, allow_pickle=False, mmap_mode="r" if mmap and math.prod(header.shape) else None)
    except MemoryError:
        raise _fail(path, f"is too large to load into memory ({header.shape}); 'edgeseq infer' reads .npy files in "
                          "chunks, from Python use read_input(path, mmap=True)") from None
    except _PARSE_ERRORS as exc:
        raise _fail(path, f"not a valid .npy file ({str(exc)[:160]}); re-save it with numpy.save") from None
    return InputBatch(_check_numeric(path, x))


# ------------------------------------------------------------------------------------------ .npz
def _read_npz(path: Path) -> InputBatch:
    arrays = _npz_arrays(path, ["x"], ["lengths"], "save with numpy.savez(path, x=...)",
                         "save 'x' as a .npy file, which is read in chunks")
    x = _check_numeric(path, arrays["x"])
    lengths = arrays.get("lengths")
    if lengths is not None:
        lengths = _check_lengths(path, lengths, x)
    return InputBatch(x, lengths)


def read_npz_inputs(path: str | Path, names: list[str], inputs: list[str] | None = None,
                    optional: list[str] | None = None) -> dict[str, np.ndarray]:
    """Arrays ``names`` (and those of ``optional`` present) of an .npz (for models with several inputs),
    checked like single inputs.

    >>> read_npz_inputs("batch.npz", ["x", "meta"])["meta"].shape      # doctest: +SKIP
    (1000, 3)
    """
    path = Path(path)
    every = inputs or names  # every input of the model, for the messages (``names`` may be some of them)
    if _check_file(path) != ".npz":
        raise _fail(path, f"the model takes {len(every)} inputs ({', '.join(every)}); give them as one .npz "
                          f"file: numpy.savez(path, {', '.join(f'{n}=...' for n in every)})")
    listed = ", ".join(every)
    arrays = _npz_arrays(path, names, optional or [], f"the model's inputs are {listed}", "run it in parts")
    return {n: _check_numeric(path, a) for n, a in arrays.items()}


def npz_names(path: str | Path) -> list[str]:
    """Names of the arrays in an .npz (its members without ``.npy``); [] when it cannot be read."""
    try:
        with zipfile.ZipFile(path) as zf:
            return [Path(i.filename).stem for i in zf.infolist() if i.filename.endswith(".npy")]
    except (OSError, zipfile.BadZipFile):
        return []


def _npz_arrays(path: Path, required: list[str], optional: list[str], fix_missing: str,
                fix_too_big: str) -> dict[str, np.ndarray]:
    """The ``required`` (and present ``optional``) arrays of an .npz, each header checked before reading."""
    try:
        with zipfile.ZipFile(path) as zf:
            members = {Path(info.filename).stem: info for info in zf.infolist() if info.filename.endswith(".npy")}
            missing = [n for n in required if n not in members]
            if missing:
                raise _fail(path, f"has no array named {', '.join(map(repr, missing))} (found: "
                                  f"{', '.join(members) or 'none'}); {fix_missing}")
            return {n: _read_member(path, zf, members[n]) for n in [*required, *optional] if n in members}
    except InputError:
        raise
    except MemoryError:
        raise _fail(path, f"is too large to load into memory; {fix_too_big}") from None
    except _PARSE_ERRORS as exc:
        raise _fail(path, f"not a valid .npz file ({str(exc)[:160]}); re-save it with numpy.savez") from None


def _read_member(path: Path, zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> np.ndarray:
    """One array of an .npz, its header checked against the member's size before any allocation."""
    with zf.open(info) as fh:
        _, shape, fortran, dtype = _parse_header(fh)  # type: ignore[arg-type]
        if dtype.hasobject:
            raise _fail(path, f"array {info.filename!r} holds Python objects (pickled), which are never loaded; "
                              "save numeric arrays instead")
        nbytes = math.prod(shape) * dtype.itemsize
        _check_fits_memory(path, nbytes, f"array {info.filename!r}")
        if nbytes > info.file_size:
            raise _fail(path, f"array {info.filename!r} is truncated (header says {nbytes} bytes, the member has "
                              f"{info.file_size}); re-save it with numpy.savez")
        flat = np.empty(math.prod(shape), dtype=dtype)  # writable, like np.load's arrays
        raw = flat.view(np.uint8) if nbytes else np.empty(0, np.uint8)
        done = 0
        while done < nbytes:
            block = fh.read(min(1 << 20, nbytes - done))
            if not block:
                raise _fail(path, f"array {info.filename!r} is truncated; re-save it with numpy.savez")
            raw[done : done + len(block)] = np.frombuffer(block, np.uint8)
            done += len(block)
    return flat.reshape(shape, order="F" if fortran else "C")


def _check_numeric(path: Path, x: np.ndarray) -> np.ndarray:
    _check_kind(path, x.dtype, x.shape)
    return x


def _check_kind(path: Path, dtype: np.dtype, shape: tuple[int, ...]) -> None:
    if dtype.kind not in "biuf":
        raise _fail(path, f"array has dtype {dtype}, expected numbers")
    if len(shape) == 0:
        raise _fail(path, "array is a scalar; expected (batch, seq, ...)")


def _check_fits_memory(path: Path, nbytes: int, what: str = "the array") -> None:
    try:
        physical = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return
    if nbytes > physical // 2:
        raise _fail(path, f"{what} needs {nbytes / 2**30:.1f} GiB, more than half of this machine's memory; "
                          "save it as a .npy file, which 'edgeseq infer' reads in chunks")


def _check_lengths(path: Path, lengths: np.ndarray, x: np.ndarray) -> np.ndarray:
    """``lengths`` checked against ``x``: one per sample along axis 0 (batch first), or along axis 1 for a
    time-first model's data, (steps, samples, ...), when only that reading fits."""
    lengths = np.asarray(lengths)
    time_first = (x.ndim >= 2 and lengths.ndim == 1 and len(lengths) != len(x) and len(lengths) == x.shape[1]
                  and lengths.size > 0 and lengths.max() <= x.shape[0])
    # the time axis is the model's to say (a spectrogram's is axis 2 or 3): here, only the longest one can bound it
    samples, steps = (x.shape[1], x.shape[0]) if time_first else (len(x), max(x.shape[1:]) if x.ndim > 1 else 0)
    if lengths.dtype.kind not in "iu" or lengths.ndim != 1 or len(lengths) != samples:
        raise _fail(path, f"'lengths' must be 1-D integers, one per sample ({len(x)}); "
                          f"got shape {lengths.shape} dtype {lengths.dtype}")
    if x.ndim < 2:
        raise _fail(path, f"'lengths' needs 'x' with a sequence axis, got shape {x.shape}")
    if lengths.size and (lengths.min() < 1 or lengths.max() > steps):
        raise _fail(path, f"'lengths' must be between 1 and the padded length {steps}; "
                          f"got {lengths.min()}..{lengths.max()}")
    return lengths.astype(np.int64)


# ---------------------------------------------------------------------------------- .csv .jsonl
def _parse_number(path: Path, text: str, where: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise _fail(path, f"{where}: {text.strip()[:40]!r} is not a number") from None


def _read_csv(path: Path) -> InputBatch:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise _fail(path, "is not a UTF-8 text CSV file") from None
    try:
        rows = [r for r in csv.reader(io.StringIO(text)) if any(c.strip() for c in r)]
    except csv.Error as exc:
        raise _fail(path, f"is not a readable CSV file ({exc})") from None
    if not rows:
        raise _fail(path, "has no data rows")
    start = 0
    if all(_not_number(c) for c in rows[0]) or _pandas_header(rows):
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
    hint = ""
    if x.shape[2] > 1 and np.array_equal(x[0, :, 0], np.arange(x.shape[1])) and (start == 0 or not rows[0][0].strip()):
        hint = ("; its first column counts 0, 1, 2, ... like a pandas index: if that is not a feature, "
                "save with df.to_csv(path, index=False)")
    return InputBatch(x, hint=hint)


def _pandas_header(rows: list[list[str]]) -> bool:
    """Whether the first row is pandas' header for integer column names: "0,1,2,..." (``index=False``) or
    ",0,1,..." (with the index column), over data that is not all whole numbers. Read as data, it was a
    first time step of 0, 1, 2, ... that nothing reported."""
    first = [c.strip() for c in rows[0]]
    names = first[1:] if first and first[0] == "" else first
    if len(names) < 2 or names != [str(i) for i in range(len(names))]:
        return False
    if first[0] == "":
        return True  # an empty first cell is never data
    return any(not c.strip().lstrip("-").isdigit() for row in rows[1:] for c in row)


def _not_number(cell: str) -> bool:
    try:
        float(cell)
        return False
    except ValueError:
        return True


def _read_jsonl(path: Path) -> InputBatch:
    seqs: list[np.ndarray] = []
    try:
        with path.open(encoding="utf-8-sig", errors="strict") as fh:
            for lineno, line in enumerate(fh, start=1):
                if line.strip():
                    seqs.append(_jsonl_sequence(path, lineno, line, seqs[0] if seqs else None))
    except UnicodeDecodeError:
        raise _fail(path, "is not a UTF-8 text file; JSONL needs one JSON array per line") from None
    if not seqs:
        raise _fail(path, "has no sequences")
    batch = pad_sequences(seqs)
    if seqs[0].ndim >= 2:  # for a token model this is one nesting too many: say what a line is
        batch.hint = ("; a .jsonl line is one sequence: [id, id, ...] of token ids, or [[f1, f2, ...], ...] "
                      "of steps of features")
    return batch


def _jsonl_sequence(path: Path, lineno: int, line: str, first: np.ndarray | None) -> np.ndarray:
    where = f"line {lineno}"
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as exc:
        raise _fail(path, f"{where}: invalid JSON ({exc.msg})") from None
    except RecursionError:
        raise _fail(path, f"{where}: JSON nested too deeply") from None
    if isinstance(obj, dict):
        if "x" not in obj:
            raise _fail(path, f"{where}: object has no 'x' key")
        obj = obj["x"]
    if not isinstance(obj, list):
        raise _fail(path, f"{where}: expected a JSON array of time steps, got {type(obj).__name__}")
    if ("true" in line or "false" in line) and _holds_bool(obj):  # numpy would read true as 1
        raise _fail(path, f"{where}: true/false is not a number; write 1/0")
    try:
        arr = np.asarray(obj)
    except (ValueError, TypeError, OverflowError, RecursionError):
        raise _fail(path, f"{where}: ragged rows (time steps with different feature counts)") from None
    if arr.dtype == object:
        raise _fail(path, f"{where}: ragged rows or values that are not plain numbers")
    if arr.dtype.kind not in "biuf":
        raise _fail(path, f"{where}: values must be numbers")
    if arr.ndim > _MAX_JSONL_DIMS:
        raise _fail(path, f"{where}: arrays nested {arr.ndim} deep; a sequence is a list of steps (numbers or lists)")
    if arr.shape[0] == 0 or arr.size == 0:
        raise _fail(path, f"{where}: empty sequence; every sequence needs at least one step with values")
    if first is not None and arr.shape[1:] != first.shape[1:]:
        raise _fail(path, f"{where}: steps have shape {arr.shape[1:]}, but the first sequence has {first.shape[1:]}")
    return arr


def _holds_bool(obj: Any) -> bool:
    return isinstance(obj, bool) or (isinstance(obj, list) and any(_holds_bool(v) for v in obj))


def pad_sequences(seqs: list[np.ndarray], axis: int = 0) -> InputBatch:
    """Zero-pad sequences of different lengths (along each one's ``axis``, its time axis) to one batch,
    stacked on a new first axis; ``lengths`` is None when all are equal."""
    lengths = np.array([s.shape[axis] for s in seqs], dtype=np.int64)
    dtype = np.result_type(*[s.dtype for s in seqs])
    shape = list(seqs[0].shape)
    shape[axis] = int(lengths.max())
    x = np.zeros((len(seqs), *shape), dtype=dtype)
    for i, s in enumerate(seqs):
        where: list[Any] = [i] + [slice(None)] * s.ndim
        where[1 + axis] = slice(0, s.shape[axis])
        x[tuple(where)] = s
    return InputBatch(x, None if (lengths == lengths[0]).all() else lengths)


# ------------------------------------------------------------------------------- chunked input
class InputSource:
    """An input file read in chunks of samples: a C-order .npy is never loaded whole.

    >>> with open_input("x.npy") as src:          # doctest: +SKIP
    ...     for start, x, lengths in src.chunks(4096): ...
    """

    def __init__(self, path: Path, shape: tuple[int, ...], dtype: np.dtype, lengths: np.ndarray | None = None,
                 array: np.ndarray | None = None, header: NpyHeader | None = None, hint: str = "") -> None:
        self.path, self.shape, self.dtype, self.lengths, self.hint = path, shape, dtype, lengths, hint
        self._array, self._header = array, header
        self._fh: IO[bytes] | None = open(path, "rb") if header is not None else None

    def __len__(self) -> int:
        return self.shape[0]

    def __enter__(self) -> InputSource:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    @property
    def row_bytes(self) -> int:
        return math.prod(self.shape[1:]) * self.dtype.itemsize

    def read(self, start: int, stop: int) -> np.ndarray:
        """Samples ``start:stop`` along the first axis, as an array in memory."""
        stop = min(stop, len(self))
        if self._array is not None:
            return np.asarray(self._array[start:stop])
        assert self._fh is not None and self._header is not None
        count = (stop - start) * math.prod(self.shape[1:])
        self._fh.seek(self._header.data_offset + start * self.row_bytes)
        data = np.fromfile(self._fh, dtype=self.dtype, count=count)
        if data.size != count:
            raise _fail(self.path, "became shorter while it was being read; re-create it")
        return data.reshape((stop - start, *self.shape[1:]))

    def read_all(self) -> np.ndarray:
        """The whole input (a .npy file is memory-mapped rather than loaded)."""
        if self._array is not None:
            return self._array
        return _read_npy(self.path, mmap=True).x

    def chunks(self, rows: int) -> Iterator[tuple[int, np.ndarray, np.ndarray | None]]:
        """Yield ``(start, x, lengths)`` for consecutive chunks of at most ``rows`` samples."""
        for start in range(0, len(self), rows):
            x = self.read(start, start + rows)
            lengths = None if self.lengths is None else self.lengths[start : start + len(x)]
            yield start, x, lengths

    def default_rows(self, multiple: int = 1) -> int:
        """Rows per chunk: about :data:`CHUNK_BYTES`, rounded down to a multiple of ``multiple``."""
        rows = max(1, CHUNK_BYTES // max(1, self.row_bytes))
        return max(multiple, rows - rows % multiple) if rows >= multiple else rows


def open_input(path: str | Path) -> InputSource:
    """Open an input file for chunked reading (only a C-order .npy is streamed; others are read whole)."""
    path = Path(path)
    suffix = _check_file(path)
    if suffix == ".npy":
        header = read_npy_header(path)
        if not header.fortran_order and header.dtype.subdtype is None:
            _check_kind(path, header.dtype, header.shape)
            return InputSource(path, header.shape, header.dtype, header=header)
    batch = read_input(path, mmap=suffix == ".npy")
    return InputSource(path, batch.x.shape, batch.x.dtype, batch.lengths, array=batch.x, hint=batch.hint)


# ------------------------------------------------------------------------------------- outputs
def refuse_overwrite(output: str | Path | None, option: str, inputs: Mapping[str, Any]) -> None:
    """InputError when ``output`` names one of ``inputs`` ({what: path or REF}; a REF ``file.py:factory``
    counts as its file), so that no command writes its result over what it reads.

    >>> refuse_overwrite("net.py", "-o", {"the model": "net.py:build"})      # doctest: +SKIP
    InputError: net.py: -o would overwrite the model (net.py); choose another -o
    """
    if output is None:
        return
    for what, given in inputs.items():
        if given is None or not isinstance(given, (str, Path)):
            continue
        text = str(given)
        for candidate in dict.fromkeys([text, text.split(":", 1)[0]]):
            try:
                same = Path(output).samefile(candidate)
            except OSError:  # the output does not exist yet, or the candidate is not a file
                same = False
            if same:
                raise InputError(f"{output}: {option} would overwrite {what} ({candidate}); choose another {option}")


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it over ``path`` only when the block succeeds."""
    path = Path(path)
    directory = path.parent if str(path.parent) else Path(".")
    if not directory.is_dir():
        raise InputError(f"{path}: output folder {directory} does not exist")
    if path.is_dir():
        raise InputError(f"{path}: is a directory; give a file name for the output")
    if path.exists() and not path.is_file():  # renaming over /dev/null or a pipe would replace the device itself
        raise InputError(f"{path}: is not a regular file (a device or pipe); give a file name for the output")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + path.suffix, dir=directory)
    except OSError as exc:
        raise InputError(f"{path}: cannot write in {directory} ({exc.strerror})") from None
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        mode = path.stat().st_mode & 0o777 if path.exists() else 0o666 & ~_umask()
        yield tmp_path
        os.chmod(tmp_path, mode)  # after writing: the mode of a read-only file being replaced would block the write
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def _umask() -> int:
    """The process umask, read without changing it (Linux); 0o022 elsewhere."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return 0o022


class OutputWriter:
    """Append output chunks to an open file in the format its suffix names (.npy, .json, .csv)."""

    def __init__(self, fh: IO[bytes], suffix: str, total: int) -> None:
        self.fh, self.suffix, self.total, self.rows = fh, suffix, total, 0
        self._row_shape: tuple[int, ...] | None = None
        self._dtype: np.dtype | None = None
        self._text = io.TextIOWrapper(fh, encoding="utf-8", newline="", write_through=True) if suffix != ".npy" else None

    def write(self, y: np.ndarray) -> None:
        """Append ``y`` (samples along axis 0)."""
        y = np.asarray(y)
        if self._row_shape is None:
            self._start(y)
        if y.shape[1:] != self._row_shape or y.dtype != self._dtype:
            raise InputError(f"output chunk has shape {y.shape[1:]} {y.dtype}, earlier ones {self._row_shape} {self._dtype}")
        if self.rows + len(y) > self.total:
            raise InputError(f"more output rows than the {self.total} announced")
        if self.suffix == ".npy":
            self.fh.write(np.ascontiguousarray(y).tobytes())
        elif self.suffix == ".json":
            assert self._text is not None
            sep = ", " if self.rows else ""
            self._text.write(sep + ", ".join(json.dumps(r) for r in y.tolist()))
        else:
            assert self._text is not None
            flat = y.reshape(len(y), -1) if y.ndim > 1 else y[:, None]
            csv.writer(self._text).writerows(flat.tolist())
        self.rows += len(y)

    def _start(self, y: np.ndarray) -> None:
        self._row_shape, self._dtype = y.shape[1:], y.dtype
        if self.suffix == ".npy":
            header = {"descr": np.lib.format.dtype_to_descr(y.dtype), "fortran_order": False,
                      "shape": (self.total, *y.shape[1:])}
            try:
                np.lib.format.write_array_header_1_0(self.fh, header)
            except ValueError:  # header too long for format 1.0
                np.lib.format.write_array_header_2_0(self.fh, header)
        elif self.suffix == ".json":
            assert self._text is not None
            self._text.write("[")

    def finish(self) -> None:
        if self.rows != self.total:
            raise InputError(f"output has {self.rows} rows, expected {self.total}; nothing was written")
        if self.suffix == ".json":
            assert self._text is not None
            self._text.write("]\n")
        if self._text is not None:
            self._text.detach()


@contextlib.contextmanager
def open_output(path: str | Path, total: int) -> Iterator[OutputWriter]:
    """Write ``total`` output rows chunk by chunk; the file appears at ``path`` only when all are written.

    >>> with open_output("y.npy", total=len(x)) as out:     # doctest: +SKIP
    ...     out.write(y_part)
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in OUTPUT_SUFFIXES:
        raise InputError(f"{path}: unsupported output type {suffix or '(none)'!r}; use one of {', '.join(OUTPUT_SUFFIXES)} "
                         "(or .npz from edgeseq infer, for every output)")
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        writer = OutputWriter(fh, suffix, total)
        yield writer
        writer.finish()


def write_npz(path: str | Path, arrays: dict[str, np.ndarray]) -> str:
    """Write named arrays to an .npz, atomically (nothing appears at ``path`` unless all is written).

    >>> write_npz("out.npz", {"y0": logits, "y1": weights})      # doctest: +SKIP
    'out.npz'
    """
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:  # a file object, so numpy does not append its own ".npz"
            np.savez(fh, **arrays)
    return str(path)


def write_output(path: str | Path | None, y: np.ndarray) -> str:
    """Write ``y`` to ``path`` (.npy/.json/.csv, atomically) or return it as text lines when path is None."""
    if path is None:
        return format_lines(y)
    y = np.atleast_1d(np.asarray(y))
    with open_output(path, len(y)) as out:
        out.write(y)
    return str(path)


def format_lines(y: np.ndarray) -> str:
    """One JSON array per sample, one sample per line."""
    return "\n".join(json.dumps(np.asarray(row).tolist()) for row in y)

"""Session: run an exported ONNX file with ONNX Runtime, with input checks and batching.

>>> from edgeseq import Session
>>> s = Session("model.onnx", device="cpu")          # doctest: +SKIP
>>> y = s.predict(x)                                 # doctest: +SKIP
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ..card import card_from_metadata, read_card
from ..errors import InputError, ModelFileError
from .providers import DeviceChoice, resolve_device

_ORT_TO_NUMPY = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(int8)": np.int8,
    "tensor(uint8)": np.uint8,
    "tensor(bool)": np.bool_,
}
_FLOAT_EXACT_INT = 2**24  # integers up to this size are exact in float32


@dataclass(frozen=True)
class TensorSpec:
    """Name, numpy dtype and shape of a graph input or output; dims are ints or axis names."""

    name: str
    dtype: Any
    shape: tuple[int | str, ...]

    @property
    def rank(self) -> int:
        return len(self.shape)

    def describe(self) -> str:
        dims = ", ".join(str(d) for d in self.shape)
        return f"{self.name}: {np.dtype(self.dtype).name}[{dims}]"


def _spec(node: Any) -> TensorSpec:
    shape = tuple(d if isinstance(d, int) else (d or "?") for d in (node.shape or ()))
    return TensorSpec(node.name, _ORT_TO_NUMPY.get(node.type, np.float32), shape)


def open_model_file(path: str | Path) -> Path:
    """Check that ``path`` exists and looks like an ONNX file; return it as a Path."""
    path = Path(path)
    if not path.exists():
        raise ModelFileError(f"{path}: no such file; export one with 'edgeseq export'")
    if path.is_dir():
        raise ModelFileError(f"{path}: is a directory, expected an .onnx file")
    if path.stat().st_size == 0:
        raise ModelFileError(f"{path}: file is empty; re-export it with 'edgeseq export'")
    read_card(path)  # walks the protobuf; raises ModelFileError on a corrupt or non-ONNX file
    return path


def default_threads() -> int:
    """Intra-op threads: all cores, capped at 8 (recurrent kernels scale poorly beyond that)."""
    return max(1, min(8, os.cpu_count() or 1))


def session_options(threads: int | None = None, spinning: bool = False) -> Any:
    """ONNX Runtime session options tuned for small recurrent graphs."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads or default_threads()
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Spinning threads burn a core between calls; on small edge CPUs it costs more than it saves.
    opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    opts.log_severity_level = 3
    return opts


def create_inference_session(path: Path, choice: DeviceChoice, threads: int | None = None) -> Any:
    import onnxruntime as ort

    try:
        return ort.InferenceSession(str(path), sess_options=session_options(threads), providers=choice.providers)
    except Exception as exc:  # ORT raises its own exception types (Fail, InvalidGraph, ...)
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelFileError(f"{path}: ONNX Runtime cannot load this file: {msg[:300]}") from None


class Session:
    """An exported model ready to run: shape/dtype checks, batching, the active providers.

    >>> s = Session("model.onnx", device="cpu")     # doctest: +SKIP
    >>> s.predict(np.zeros((4, 50, 6), np.float32)).shape  # doctest: +SKIP
    (4, 4)
    """

    def __init__(
        self,
        path: str | Path,
        device: str = "auto",
        threads: int | None = None,
        batch_size: int = 256,
        allow_nonfinite: bool = False,
    ) -> None:
        self.path = open_model_file(path)
        self.device_choice = resolve_device(device)
        self.threads = threads
        self.batch_size = batch_size
        self.allow_nonfinite = allow_nonfinite
        self._sess = create_inference_session(self.path, self.device_choice, threads)
        self.inputs: list[TensorSpec] = [_spec(i) for i in self._sess.get_inputs()]
        self.outputs: list[TensorSpec] = [_spec(o) for o in self._sess.get_outputs()]
        self.card: dict[str, Any] = card_from_metadata(self._sess.get_modelmeta().custom_metadata_map)

    @property
    def providers(self) -> list[str]:
        """Execution providers ONNX Runtime actually activated for this session."""
        return list(self._sess.get_providers())

    @property
    def lengths_input(self) -> str | None:
        """Name of the graph input that takes per-sample lengths, if the file has one."""
        name = self.card.get("lengths_input")
        return name if name and any(i.name == name for i in self.inputs) else None

    def data_inputs(self) -> list[TensorSpec]:
        state = set(self.card.get("state_inputs", []))
        return [i for i in self.inputs if i.name != self.lengths_input and i.name not in state]

    # -- running -----------------------------------------------------------------------------
    def run(self, feed: Mapping[str, Any], outputs: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """Run one batch: ``feed`` maps input names to arrays; returns {output name: array}.

        >>> s.run({"x": x})["y"]         # doctest: +SKIP
        """
        specs = {i.name: i for i in self.inputs}
        unknown = sorted(set(feed) - set(specs))
        if unknown:
            raise InputError(f"unknown input(s) {', '.join(unknown)}; the model takes {', '.join(specs)}")
        missing = [n for n in specs if n not in feed]
        if missing:
            raise InputError(f"missing input(s) {', '.join(missing)}; the model takes {', '.join(s.describe() for s in self.inputs)}")
        prepared = {n: self.check_input(v, specs[n]) for n, v in feed.items()}
        names = list(outputs) if outputs else [o.name for o in self.outputs]
        try:
            values = self._sess.run(names, prepared)
        except Exception as exc:  # ORT's own runtime errors (shape mismatch inside the graph etc.)
            msg = str(exc).strip().splitlines()[0][:300]
            raise InputError(f"ONNX Runtime rejected the input: {msg}") from None
        return dict(zip(names, values))

    def predict(self, x: Any, lengths: Any = None, batch_size: int | None = None) -> np.ndarray:
        """First output for ``x`` (batch first), run in chunks of ``batch_size`` samples.

        ``lengths`` (one per sample) marks zero-padded steps so they do not change results.
        """
        data = self.data_inputs()
        if len(data) != 1:
            raise InputError(f"predict() takes one input, the model has {len(data)}; use run(feed)")
        spec = data[0]
        x = self.check_input(x, spec)
        batch_axis = self._batch_axis()
        n = x.shape[batch_axis]
        if n == 0:
            raise InputError("input has zero samples")
        if lengths is not None:
            lengths = self._check_lengths(lengths, x, n)
        step = batch_size or self.batch_size
        out_name = self.outputs[0].name
        chunks = []
        for start in range(0, n, step):
            sl = [slice(None)] * x.ndim
            sl[batch_axis] = slice(start, start + step)
            part = x[tuple(sl)]
            if lengths is None:
                chunks.append(self._run_chunk(spec, part, None, out_name))
            else:
                chunks.append(self._run_chunk(spec, part, lengths[start : start + step], out_name))
        return np.concatenate(chunks, axis=0) if len(chunks) > 1 else chunks[0]

    def _run_chunk(self, spec: TensorSpec, x: np.ndarray, lengths: np.ndarray | None, out: str) -> np.ndarray:
        feed: dict[str, np.ndarray] = {spec.name: np.ascontiguousarray(x)}
        if self.lengths_input:
            n, t = x.shape[self._batch_axis()], x.shape[self._seq_axis()]
            feed[self.lengths_input] = lengths if lengths is not None else np.full(n, t, np.int64)
            return self._sess.run([out], feed)[0]
        if lengths is None or (lengths == x.shape[self._seq_axis()]).all():
            return self._sess.run([out], feed)[0]
        return self._run_by_length(spec, x, lengths, out)

    def _run_by_length(self, spec: TensorSpec, x: np.ndarray, lengths: np.ndarray, out: str) -> np.ndarray:
        """Without a lengths input, run each group of equal-length samples unpadded."""
        ba, sa = self._batch_axis(), self._seq_axis()
        result: np.ndarray | None = None
        for length in np.unique(lengths):
            idx = np.flatnonzero(lengths == length)
            part = np.take(x, idx, axis=ba)
            part = np.take(part, np.arange(int(length)), axis=sa)
            y = self._sess.run([out], {spec.name: np.ascontiguousarray(part)})[0]
            if result is None:
                result = np.empty((len(lengths), *y.shape[1:]), dtype=y.dtype)
            result[idx] = y
        assert result is not None
        return result

    # -- checks ------------------------------------------------------------------------------
    def _layout(self) -> str:
        ins = self.card.get("inputs") or [{}]
        return ins[0].get("layout", "batch_first")

    def _batch_axis(self) -> int:
        return 1 if self._layout() == "time_first" else 0

    def _seq_axis(self) -> int:
        return 0 if self._layout() == "time_first" else 1

    def _check_lengths(self, lengths: Any, x: np.ndarray, n: int) -> np.ndarray:
        lengths = np.asarray(lengths)
        if lengths.ndim != 1 or len(lengths) != n or lengths.dtype.kind not in "iu":
            raise InputError(f"lengths must be {n} integers, one per sample; got shape {lengths.shape} dtype {lengths.dtype}")
        t = x.shape[self._seq_axis()]
        if lengths.min() < 1 or lengths.max() > t:
            raise InputError(f"lengths must be between 1 and the padded length {t}; got {lengths.min()}..{lengths.max()}")
        return lengths.astype(np.int64)

    def check_input(self, x: Any, spec: TensorSpec) -> np.ndarray:
        """Validate ``x`` against ``spec`` (rank, fixed dims, dtype, finite values) and cast it safely."""
        return check_array(x, spec, allow_nonfinite=self.allow_nonfinite)


def check_array(x: Any, spec: TensorSpec, allow_nonfinite: bool = False) -> np.ndarray:
    """Return ``x`` as an array the graph accepts, or raise :class:`InputError` saying what to change."""
    try:
        x = np.asarray(x)
    except ValueError:
        raise InputError(f"input {spec.name!r}: ragged data; all samples need the same shape (pad them)") from None
    if x.dtype.kind not in "biuf":
        raise InputError(f"input {spec.name!r}: dtype {x.dtype} is not numeric")
    if x.ndim != spec.rank:
        hint = " (add a batch axis, e.g. x[None])" if x.ndim == spec.rank - 1 else ""
        raise InputError(
            f"input {spec.name!r} expects rank {spec.rank} [{', '.join(map(str, spec.shape))}], "
            f"got shape {tuple(x.shape)}{hint}"
        )
    for axis, (want, got) in enumerate(zip(spec.shape, x.shape)):
        if isinstance(want, int) and want != got:
            raise InputError(
                f"input {spec.name!r} axis {axis} must be {want}, got {got} "
                f"(shape {tuple(x.shape)}; expected [{', '.join(map(str, spec.shape))}])"
            )
    if any(d == 0 for d in x.shape):
        raise InputError(f"input {spec.name!r} has an empty axis (shape {tuple(x.shape)}); every sequence needs at least one step")
    return _cast(x, spec, allow_nonfinite)


def _cast(x: np.ndarray, spec: TensorSpec, allow_nonfinite: bool) -> np.ndarray:
    want = np.dtype(spec.dtype)
    if want.kind == "f":
        if x.dtype.kind == "f" and not allow_nonfinite:
            bad = ~np.isfinite(x)
            if bad.any():
                pos = tuple(int(i) for i in np.argwhere(bad)[0])
                raise InputError(
                    f"input {spec.name!r} has NaN/Inf at index {pos} (sample {pos[0]}"
                    + (f", step {pos[1]}" if len(pos) > 2 else "")
                    + "); clean the data or pass allow_nonfinite / --allow-nonfinite"
                )
        if x.dtype.kind in "iu" and x.size and np.abs(x).max() >= _FLOAT_EXACT_INT:
            raise InputError(f"input {spec.name!r}: integers above 2**24 cannot be represented exactly as {want.name}")
        if x.dtype.kind == "b":
            raise InputError(f"input {spec.name!r}: boolean data given where {want.name} is expected")
        if x.dtype == np.float64 and x.size:
            finite = x[np.isfinite(x)]
            if finite.size and np.abs(finite).max() > np.finfo(want).max:
                raise InputError(f"input {spec.name!r}: values overflow {want.name}")
        return x.astype(want, copy=False)
    if want.kind in "iu":
        if x.dtype.kind == "f":
            if not np.all(np.isfinite(x)) or not np.all(x == np.round(x)):
                raise InputError(f"input {spec.name!r} expects integer ids ({want.name}); got non-integer floats")
        if x.dtype.kind == "b":
            raise InputError(f"input {spec.name!r}: boolean data given where {want.name} is expected")
        return x.astype(want, copy=False)
    return x.astype(want, copy=False)

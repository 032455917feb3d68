"""Run a streaming export chunk by chunk, carrying the recurrent state between calls.

A file exported with ``edgeseq export --streaming`` takes every recurrent layer's initial state as
extra inputs and returns its final state.  :class:`StreamingSession` keeps that state inside ONNX
Runtime buffers bound from one call's outputs to the next call's inputs (I/O binding, no numpy
round trip), :class:`StreamPool` serves many independent streams with one batched run per tick,
and :func:`stream_stdin` is ``edgeseq infer --stream``.

>>> s = StreamingSession("motion-stream.onnx", device="cpu")     # doctest: +SKIP
>>> for chunk in chunks:                                         # (batch, chunk_len, features)
...     y = s.step(chunk)                                        # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import functools
import json
import re
import threading
from collections.abc import Hashable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from ..errors import InputError, ModelFileError
from .session import Session, TensorSpec, check_array, default_threads

_MAX_PLANS = 8  # cached bindings per distinct chunk shape


@dataclass
class _StateSlot:
    key: str  # "<layer>.<h|c>", the key of StreamingSession.state
    parts: list[tuple[str, str]]  # (graph input, graph output); one per layer where the export split the state
    spec: TensorSpec  # the whole state, e.g. (layers, batch, hidden)
    batch_axis: int

    def shape(self, batch: int) -> tuple[int, ...]:
        return tuple(batch if a == self.batch_axis else int(d) for a, d in enumerate(self.spec.shape))

    def split(self, a: np.ndarray) -> list[np.ndarray]:
        """The whole state as the graph takes it: itself, or one piece per part along the first axis."""
        return [a] if len(self.parts) == 1 else [a[k : k + 1] for k in range(len(self.parts))]


class _Plan:
    """Input/output buffers and two I/O bindings (state A -> B, state B -> A) for one chunk shape."""

    def __init__(self, x: np.ndarray, lengths: np.ndarray | None, outputs: dict[str, np.ndarray],
                 static: dict[str, np.ndarray] | None = None) -> None:
        import onnxruntime as ort

        self.x = x
        self.lengths = lengths
        self.static = static or {}  # per-sample inputs without a time axis (e.g. metadata), copied in each call
        self.static_values = {n: ort.OrtValue.ortvalue_from_numpy(a) for n, a in self.static.items()}
        self.outputs = outputs
        self.first = next(iter(outputs.values()))
        self.x_value = ort.OrtValue.ortvalue_from_numpy(x)
        self.lengths_value = ort.OrtValue.ortvalue_from_numpy(lengths) if lengths is not None else None
        self.output_values = {n: ort.OrtValue.ortvalue_from_numpy(a) for n, a in outputs.items()}
        self.bindings: list[Any] = []


class StreamingSession:
    """Step a ``--streaming`` export chunk by chunk; the state carries over to the next call.

    ``step(x)`` takes a chunk laid out like the model's input, e.g. (batch, chunk_len, features), and
    returns the model's first output for that chunk: per-step outputs for the chunk's steps, or, for a
    model that reads ``out[:, -1]``, its output after the chunk's last step.  The state starts at zeros
    with the batch size of the first call; ``reset()`` starts over.

    Thread model: one stream is one sequence of calls, so an instance belongs to one thread at a time;
    a call made while another thread is inside ``step``/``reset``/``state`` raises :class:`InputError`
    instead of silently interleaving two threads' steps.  Use one instance per thread, or a
    :class:`StreamPool` (which serializes its callers) for many streams.

    >>> s = StreamingSession("motion-stream.onnx", device="cpu")     # doctest: +SKIP
    >>> s.step(np.zeros((1, 1, 6), np.float32)).shape                # doctest: +SKIP
    (1, 4)
    >>> saved = s.state; s.reset(); s.state = saved                  # doctest: +SKIP
    """

    def __init__(self, path: str | Path, device: str = "auto", threads: int | None = None,
                 allow_nonfinite: bool = False) -> None:
        # no memory arena: a step's tensors are tiny (session_options explains)
        self.session = Session(path, device=device, threads=threads or default_threads("stream"),
                               allow_nonfinite=allow_nonfinite, memory_arena=False)
        card = self.session.card
        state_in, state_out = card.get("state_inputs") or [], card.get("state_outputs") or []
        if not state_in or len(state_in) != len(state_out) or "streaming" not in card:
            raise ModelFileError(f"{self.session.path}: not a streaming export (no state inputs in its model card); "
                                 "export it with 'edgeseq export REF --streaming -o FILE.onnx'")
        data = self.session.data_inputs()
        entries = {e.get("name"): e for e in card.get("inputs") or [] if isinstance(e, dict)}
        timed = [d.name for d in data[1:] if (entries.get(d.name) or {}).get("seq_axis") is not None]
        if timed:
            raise ModelFileError(f"{self.session.path}: streaming takes one sequence input; "
                                 f"{', '.join(timed)} also has a time axis")
        self.input = data[0]
        self.static_inputs = data[1:]  # per-sample data without a time axis, given to every step by name
        self._dtype = np.dtype(self.input.dtype)
        self.allow_nonfinite = allow_nonfinite
        specs = {i.name: i for i in self.session.inputs}
        self._slots = []
        for layer in card["streaming"]["layers"]:
            for s in layer["states"]:
                # files written since the per-layer split list one input/output per layer ("parts")
                parts = [(p["input"], p["output"]) for p in s.get("parts") or [s]]
                first = specs[parts[0][0]]
                whole = (first if len(parts) == 1
                         else TensorSpec(s["input"], first.dtype, (len(parts), *first.shape[1:])))
                self._slots.append(_StateSlot(f"{layer['name']}.{s['name']}", parts, whole,
                                              int(s.get("batch_axis", 1))))
        self.output_names = [o.name for o in self.session.outputs if o.name not in set(state_out)]
        self.output_axes: dict[str, dict[str, int | None]] = {
            n: dict(card.get("output_axes", {}).get(n) or {"batch_axis": 0, "seq_axis": None})
            for n in self.output_names}
        self.batch_axis = self.session._batch_axis()
        self.seq_axis = self.session._seq_axis()
        choice = self.session.device_choice
        self._device = ("cuda", int(choice.device.split(":")[1])) if choice.is_cuda else ("cpu", 0)
        self._ort = self.session._sess  # the InferenceSession; Session owns its options and providers
        self._batch: int | None = None
        self._started = False
        self._parity = 0
        self._host: list[list[np.ndarray]] = []  # CPU: numpy arrays backing the state OrtValues
        self._values: list[list[Any]] = []  # [parity][slot] OrtValue
        self._plans: dict[tuple[int, ...], _Plan] = {}
        self._busy = threading.Lock()

    @contextlib.contextmanager
    def _exclusive(self) -> Iterator[None]:
        if not self._busy.acquire(blocking=False):
            self._refuse_concurrent()
        try:
            yield
        finally:
            self._busy.release()

    @staticmethod
    def _refuse_concurrent() -> None:
        raise InputError("this StreamingSession is already in use by another thread; use one "
                         "StreamingSession per thread, or a StreamPool for many streams")

    @property
    def allow_nonfinite(self) -> bool:
        """Whether NaN/Inf inputs are passed through instead of refused."""
        return self._allow_nonfinite

    @allow_nonfinite.setter
    def allow_nonfinite(self, value: bool) -> None:
        self._allow_nonfinite = bool(value)
        self._check_finite = self._dtype.kind == "f" and not value

    # -- state -------------------------------------------------------------------------------
    @property
    def state_names(self) -> list[str]:
        """Keys of :attr:`state`: ``"<layer>.h"`` (and ``"<layer>.c"`` for an LSTM)."""
        return [s.key for s in self._slots]

    @property
    def batch_size(self) -> int | None:
        """Batch size of the current state (None before the first call or after ``reset()``)."""
        return self._batch if self._started else None

    @property
    def state(self) -> dict[str, np.ndarray]:
        """A copy of the carried state {"<layer>.h": (layers, batch, hidden), ...}; {} before the first step."""
        if not self._started:
            return {}
        current = self._values[self._parity]
        if self._device[0] == "cpu":
            return {s.key: self._host[self._parity][i].copy() for i, s in enumerate(self._slots)}
        return {s.key: np.concatenate([v.numpy() for v in current[i]], axis=0) for i, s in enumerate(self._slots)}

    @state.setter
    def state(self, value: Mapping[str, Any]) -> None:
        want = set(self.state_names)
        if set(value) != want:
            got = ", ".join(map(str, value)) or "none"
            raise InputError(f"state needs exactly the keys {', '.join(self.state_names)}; got {got}")
        arrays = {s.key: np.asarray(value[s.key], dtype=s.spec.dtype) for s in self._slots}
        batch = None
        for s in self._slots:
            a = arrays[s.key]
            if a.ndim != len(s.spec.shape):
                raise InputError(f"state {s.key!r} must have rank {len(s.spec.shape)}, got shape {a.shape}")
            batch = a.shape[s.batch_axis] if batch is None else batch
            if a.shape != s.shape(batch):
                raise InputError(f"state {s.key!r} must have shape {s.shape(batch)}, got {a.shape}")
        assert batch is not None
        if batch < 1:
            raise InputError("state has an empty batch")
        with self._exclusive():
            self._allocate(batch)
            for i, s in enumerate(self._slots):
                self._write(self._parity, i, np.ascontiguousarray(arrays[s.key]))
            self._started = True

    def reset(self) -> None:
        """Start over: zero state, batch size taken from the next call."""
        with self._exclusive():
            self._reset()

    def _reset(self) -> None:
        for p in range(len(self._values)):
            for i in range(len(self._slots)):
                self._write(p, i, None)
        self._parity = 0
        self._started = False

    # -- running -----------------------------------------------------------------------------
    def step(self, x: Any, lengths: Any = None, **static: Any) -> np.ndarray:
        """Run one chunk and return the first output (a copy); see the class docstring.

        A model with per-sample inputs besides the sequence (``forward(x, meta)``) takes them by name
        at every step: ``s.step(chunk, meta=m)``.
        """
        # the hot path: the lock by hand, not through _exclusive() (a context manager costs ~0.8 us a call)
        if not self._busy.acquire(blocking=False):
            self._refuse_concurrent()
        try:
            return self._run(x, lengths, static).first.copy()
        finally:
            self._busy.release()

    def run_step(self, x: Any, lengths: Any = None, **static: Any) -> dict[str, np.ndarray]:
        """Run one chunk; return every data output by name (copies, safe to keep).

        ``lengths`` (files exported with ``--lengths`` too): how many of the chunk's steps each sample has;
        its remaining steps are padding and leave its state alone.
        """
        with self._exclusive():
            return {n: a.copy() for n, a in self._run(x, lengths, static).outputs.items()}

    def _checked_static(self, static: Mapping[str, Any], batch: int) -> dict[str, np.ndarray]:
        """The per-sample inputs besides the sequence, checked (names, shapes, values) for a batch of ``batch``."""
        want = [i.name for i in self.static_inputs]
        if set(static) != set(want):
            missing, unknown = sorted(set(want) - set(static)), sorted(set(static) - set(want))
            detail = "; ".join(filter(None, [f"missing {', '.join(missing)}" if missing else "",
                                             f"unknown {', '.join(unknown)}" if unknown else ""]))
            raise InputError(f"this model takes {', '.join(want) or 'no inputs'} besides the sequence at every step "
                             f"({detail})")
        out = {}
        for spec in self.static_inputs:
            a = check_array(static[spec.name], spec, self.allow_nonfinite)
            if a.shape[0] != batch:
                raise InputError(f"input {spec.name!r} has batch {a.shape[0]}, the chunk has {batch}")
            out[spec.name] = a
        return out

    def _run(self, x: Any, lengths: Any, static: Mapping[str, Any] | None = None) -> _Plan:
        if static or self.static_inputs:
            plan, x = self._run_static_plan(x, static or {})
        else:
            # hot path: an array of a shape and dtype already checked once needs only the finiteness test
            plan = self._plans.get(x.shape) if type(x) is np.ndarray and x.dtype == self._dtype else None
            if plan is not None and self._check_finite and not np.isfinite(x).all():
                plan = None  # the full check below names the bad value
            if plan is None:
                x = check_array(x, self.input, self.allow_nonfinite)
                self._ensure_batch(x.shape[self.batch_axis])
                plan = self._plans.get(x.shape) or self._plan(x.shape)
        np.copyto(plan.x, x)
        if lengths is not None:
            if plan.lengths is None:
                raise InputError("this file has no lengths input; export it with --streaming --lengths")
            plan.lengths[:] = self.session._check_lengths(lengths, x, x.shape[self.batch_axis])
        elif plan.lengths is not None:
            plan.lengths.fill(x.shape[self.seq_axis])
        try:
            self._ort.run_with_iobinding(plan.bindings[self._parity])
        except Exception as exc:  # ORT's runtime errors (shape mismatch inside the graph etc.)
            msg = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
            raise InputError(f"ONNX Runtime rejected the chunk of shape {x.shape}: {msg}") from None
        self._parity ^= 1
        self._started = True
        return plan

    def _run_static_plan(self, x: Any, static: Mapping[str, Any]) -> tuple[_Plan, np.ndarray]:
        """(plan, checked chunk) for a chunk with per-sample inputs besides the sequence, those copied in."""
        x = check_array(x, self.input, self.allow_nonfinite)
        batch = x.shape[self.batch_axis]
        values = self._checked_static(static, batch)
        self._ensure_batch(batch)
        key = (x.shape, *[(n, a.shape) for n, a in values.items()])
        plan = self._plans.get(key) or self._plan(x.shape, values, key)  # type: ignore[arg-type]
        for name, a in values.items():
            np.copyto(plan.static[name], a)
        return plan, x

    def _ensure_batch(self, batch: int) -> None:
        """State buffers for ``batch`` rows; a different batch mid-stream is refused (reset() first)."""
        if batch != self._batch:
            if self._started:
                raise InputError(f"chunk has batch {batch} but the carried state has batch {self._batch}; "
                                 "call reset() first (or keep the batch fixed)")
            self._allocate(batch)

    def run_with_state(self, x: Any, state: Mapping[str, Any] | None, **static: Any
                       ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """Stateless call: (outputs, final state) for ``x`` from ``state`` (zeros when None); self's state is untouched.

        >>> outs, state = s.run_with_state(chunk, None)          # doctest: +SKIP
        """
        x = check_array(x, self.input, self.allow_nonfinite)
        batch = x.shape[self.batch_axis]
        feed: dict[str, Any] = {self.input.name: x, **self._checked_static(static, batch)}
        for s in self._slots:
            value = np.zeros(s.shape(batch), s.spec.dtype) if state is None else np.asarray(state[s.key], s.spec.dtype)
            if value.shape != s.shape(batch):
                raise InputError(f"state {s.key!r} must have shape {s.shape(batch)}, got {value.shape}")
            feed.update({i: np.ascontiguousarray(v) for (i, _o), v in zip(s.parts, s.split(value))})
        if self.session.lengths_input:
            feed[self.session.lengths_input] = np.full(batch, x.shape[self.seq_axis], np.int64)
        names = self.output_names + [o for s in self._slots for _i, o in s.parts]
        values = self._ort.run(names, feed)
        outs = dict(zip(self.output_names, values))
        rest, new = values[len(self.output_names):], {}
        for s in self._slots:
            pieces, rest = rest[:len(s.parts)], rest[len(s.parts):]
            new[s.key] = pieces[0] if len(pieces) == 1 else np.concatenate(pieces, axis=0)
        return outs, new

    # -- buffers -----------------------------------------------------------------------------
    def _allocate(self, batch: int) -> None:
        if batch == self._batch and self._values:
            return
        import onnxruntime as ort

        self._batch, self._plans, self._parity = batch, {}, 0
        self._host, self._values = [], []
        for _ in range(2):
            if self._device[0] == "cpu":
                host = [np.zeros(s.shape(batch), s.spec.dtype) for s in self._slots]
                self._host.append(host)
                # one OrtValue per part, each over its slice of the host array (no copy on CPU)
                self._values.append([[ort.OrtValue.ortvalue_from_numpy(p) for p in s.split(a)]
                                     for s, a in zip(self._slots, host)])
            else:
                self._values.append([[ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(p), *self._device)
                                      for p in s.split(np.zeros(s.shape(batch), s.spec.dtype))]
                                     for s in self._slots])

    def _write(self, parity: int, i: int, value: np.ndarray | None) -> None:
        if self._device[0] == "cpu":
            target = self._host[parity][i]
            target[...] = 0 if value is None else value
        else:
            slot = self._slots[i]
            whole = np.zeros(slot.shape(self._batch or 1), slot.spec.dtype) if value is None else value
            for v, piece in zip(self._values[parity][i], slot.split(whole)):
                v.update_inplace(np.ascontiguousarray(piece))

    def _plan(self, shape: tuple[int, ...], static: dict[str, np.ndarray] | None = None, key: Any = None) -> _Plan:
        batch = shape[self.batch_axis]
        x = np.zeros(shape, self.input.dtype)
        lengths = np.full(batch, shape[self.seq_axis], np.int64) if self.session.lengths_input else None
        static = {n: np.zeros_like(a) for n, a in (static or {}).items()}
        outs, _ = self.run_with_state(x, None, **static)  # learns the output shapes
        plan = _Plan(x, lengths, {n: np.empty_like(a) for n, a in outs.items()}, static)
        for parity in (0, 1):
            binding = self._ort.io_binding()
            binding.bind_ortvalue_input(self.input.name, plan.x_value)
            for name, value in plan.static_values.items():
                binding.bind_ortvalue_input(name, value)
            if plan.lengths_value is not None:
                binding.bind_ortvalue_input(self.session.lengths_input, plan.lengths_value)
            for n, v in plan.output_values.items():
                binding.bind_ortvalue_output(n, v)
            for i, s in enumerate(self._slots):
                values = zip(s.parts, self._values[parity][i], self._values[1 - parity][i])
                for (name_in, name_out), v_in, v_out in values:
                    binding.bind_ortvalue_input(name_in, v_in)
                    binding.bind_ortvalue_output(name_out, v_out)
            plan.bindings.append(binding)
        if len(self._plans) >= _MAX_PLANS:
            self._plans.pop(next(iter(self._plans)))
        self._plans[shape if key is None else key] = plan
        return plan


def _locked(method: Any) -> Any:
    @functools.wraps(method)
    def wrapper(self: StreamPool, *args: Any, **kwargs: Any) -> Any:
        with self._lock:
            return method(self, *args, **kwargs)

    return wrapper


class StreamPool:
    """Many independent streams, one batched run per tick; streams join and leave at any time.

    Each stream sends its own chunk (chunk_len, features) or one step (features,); all streams in a
    tick send the same number of steps.  A tick with every stream reuses the bound state directly; a
    tick with some streams gathers and scatters their rows.  Membership changes apply at the next tick.

    >>> pool = StreamPool("motion-stream.onnx", device="cpu")        # doctest: +SKIP
    >>> a, b = pool.join(), pool.join()                              # doctest: +SKIP
    >>> out = pool.step({a: step_a, b: step_b})                      # {a: (4,), b: (4,)}  # doctest: +SKIP
    >>> pool.leave(a)                                                # doctest: +SKIP
    """

    def __init__(self, path: str | Path, device: str = "auto", threads: int | None = None,
                 allow_nonfinite: bool = False) -> None:
        self.stream = StreamingSession(path, device=device, threads=threads, allow_nonfinite=allow_nonfinite)
        self._static: dict[Hashable, dict[str, np.ndarray]] = {}  # per stream: its inputs besides the sequence
        self._stacked: dict[str, np.ndarray] = {}  # those, stacked in state-row order (rebuilt on membership changes)
        # serving threads may join/leave while another thread ticks: every public call takes this lock
        self._lock = threading.RLock()
        self._active: dict[Hashable, int] = {}  # stream key -> state row, as of the last tick
        self._members: dict[Hashable, None] = {}  # ordered set: membership after pending joins/leaves
        self._zero: set[Hashable] = set()
        self._dirty = False
        self._counter = 0

    @property
    def keys(self) -> list[Hashable]:
        """Stream keys in the row order :meth:`step_all` expects."""
        return list(self._members)

    def __len__(self) -> int:
        return len(self._members)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._members

    @_locked
    def join(self, key: Hashable | None = None, **static: Any) -> Hashable:
        """Add a stream (state zeros) and return its key (a new int when ``key`` is None).

        A model with inputs besides the sequence takes this stream's values once, by name, without a
        batch axis: ``pool.join("sensor-7", meta=m)``; every tick then passes them for the stream.
        """
        values = self._stream_static(static)
        if key is None:
            while self._counter in self._members:
                self._counter += 1
            key = self._counter
            self._counter += 1
        if key in self._members:
            raise InputError(f"stream {key!r} has already joined")
        self._members[key] = None
        self._static[key] = values
        self._zero.add(key)
        self._dirty = True
        return key

    def _stream_static(self, static: Mapping[str, Any]) -> dict[str, np.ndarray]:
        want = [i.name for i in self.stream.static_inputs]
        if set(static) != set(want):
            if not want:
                raise InputError(f"this model takes only the sequence; join() got {', '.join(static)}")
            raise InputError(f"join() needs this stream's {', '.join(want)} (the model's inputs besides the sequence), "
                             f"got {', '.join(static) or 'none'}")
        out = {}
        for spec in self.stream.static_inputs:
            a = np.asarray(static[spec.name])
            fixed = [d for d in spec.shape[1:]]
            if a.ndim != len(fixed) or any(isinstance(d, int) and d != n for d, n in zip(fixed, a.shape)):
                raise InputError(f"{spec.name!r} for one stream must have shape ({', '.join(map(str, fixed))}), "
                                 f"got {a.shape}")
            out[spec.name] = check_array(a[None], spec, self.stream.allow_nonfinite)[0]
        return out

    @_locked
    def leave(self, key: Hashable) -> None:
        """Remove a stream; its state is dropped."""
        if key not in self._members:
            raise InputError(f"stream {key!r} is not in the pool")
        del self._members[key]
        self._static.pop(key, None)
        self._zero.discard(key)
        self._dirty = True

    @_locked
    def reset(self, key: Hashable) -> None:
        """Start ``key`` over from a zero state."""
        if key not in self._members:
            raise InputError(f"stream {key!r} is not in the pool")
        self._zero.add(key)
        self._dirty = True

    @_locked
    def step(self, inputs: Mapping[Hashable, Any]) -> dict[Hashable, np.ndarray]:
        """Advance the streams in ``inputs`` by their chunk in one batched run; return {key: first output}."""
        if not inputs:
            return {}
        unknown = [k for k in inputs if k not in self._members]
        if unknown:
            raise InputError(f"stream(s) {', '.join(map(repr, unknown[:5]))} have not joined; call join() first")
        self._apply_membership()
        keys = list(inputs)
        active = self._active
        chunks = [self._per_stream(inputs[k], k) for k in keys]
        if len({c.shape for c in chunks}) > 1:
            raise InputError(f"all streams in a tick need chunks of one shape; got {sorted({c.shape for c in chunks})}")
        x = np.stack(chunks, axis=self.stream.batch_axis)
        rows = np.fromiter((active[k] for k in keys), np.int64, len(keys))
        if len(keys) == len(active):
            if (rows != np.arange(len(rows))).any():  # put the chunks in state-row order
                x = np.take(x, np.argsort(rows), axis=self.stream.batch_axis)
            y = self.stream.step(x, **self._stacked)
            return self._split(y, keys, rows)
        full = self.stream.state
        axis = {s.key: s.batch_axis for s in self.stream._slots}
        sub = {name: np.take(a, rows, axis=axis[name]) for name, a in full.items()}
        outs, new = self.stream.run_with_state(x, sub, **{n: a[rows] for n, a in self._stacked.items()})
        for name, a in new.items():
            np.moveaxis(full[name], axis[name], 0)[rows] = np.moveaxis(a, axis[name], 0)
        self.stream.state = full
        return self._split(outs[self.stream.output_names[0]], keys, np.arange(len(keys)))

    @_locked
    def step_all(self, x: Any) -> np.ndarray:
        """Advance every stream: ``x`` is laid out like the model input with streams in :attr:`keys` order."""
        self._apply_membership()
        if not self._active:
            raise InputError("the pool has no streams; join() some first")
        x = np.asarray(x)
        if x.ndim < 1 or x.ndim <= self.stream.batch_axis or x.shape[self.stream.batch_axis] != len(self._active):
            raise InputError(f"step_all needs one row per stream ({len(self._active)}) on axis "
                             f"{self.stream.batch_axis}; got shape {x.shape}")
        return self.stream.step(x, **self._stacked)

    # -- bookkeeping -------------------------------------------------------------------------
    def _apply_membership(self) -> None:
        if not self._dirty:
            return
        self._dirty = False
        old_rows = self._active
        new = list(self._members)
        self._stacked = {i.name: np.stack([self._static[k][i.name] for k in new]) for i in self.stream.static_inputs
                         } if new else {}
        if not new:
            self._active = {}
            self.stream.reset()
            return
        current = self.stream.state
        state = {}
        for slot in self.stream._slots:
            a = np.zeros(slot.shape(len(new)), slot.spec.dtype)
            keep = [(j, old_rows[k]) for j, k in enumerate(new) if k in old_rows and k not in self._zero]
            if current and keep:
                dst, src = zip(*keep)
                rows = np.moveaxis(current[slot.key], slot.batch_axis, 0)[list(src)]
                np.moveaxis(a, slot.batch_axis, 0)[list(dst)] = rows
            state[slot.key] = a
        self._zero.clear()
        self._active = {k: i for i, k in enumerate(new)}
        self.stream.state = state

    def _per_stream(self, x: Any, key: Hashable) -> np.ndarray:
        x = np.asarray(x)
        rank = len(self.input_shape) - 1  # one stream's chunk: the model input without its batch axis
        if x.ndim == rank - 1:
            x = x[None]  # one step
        if x.ndim != rank:
            raise InputError(f"stream {key!r}: expected a chunk of rank {rank} (steps, ...) or one step of rank "
                             f"{rank - 1}; got shape {x.shape}")
        return x

    @property
    def input_shape(self) -> tuple[int | str, ...]:
        return self.stream.input.shape

    def _split(self, y: np.ndarray, keys: list[Hashable], rows: np.ndarray) -> dict[Hashable, np.ndarray]:
        ba = self.stream.output_axes[self.stream.output_names[0]]["batch_axis"] or 0
        y = np.moveaxis(y, ba, 0)
        return dict(zip(keys, y[rows]))


# ----------------------------------------------------------------------------------------- stdin
_SPLIT = re.compile(r"[,\s]+")


def parse_step(text: str, lineno: int) -> list[float]:
    """One time step from a line: ``1.0,2,3`` / ``1 2 3`` or a JSON array ``[1.0, 2, 3]``."""
    if text.startswith("["):
        try:
            values = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InputError(f"stdin line {lineno}: invalid JSON array ({exc.msg})") from None
        values = np.asarray(values).ravel().tolist() if isinstance(values, list) else None
        if values is None or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            raise InputError(f"stdin line {lineno}: expected a JSON array of numbers")
        return values
    out = []
    for cell in _SPLIT.split(text.strip(", ")):
        try:
            out.append(float(cell))
        except ValueError:
            raise InputError(f"stdin line {lineno}: {cell!r} is not a number") from None
    return out


def stream_stdin(model: str | Path, stdin: TextIO | Iterable[str], stdout: TextIO, device: str = "auto",
                 threads: int | None = None, reset_on_blank: bool = False, allow_nonfinite: bool = False,
                 static: Mapping[str, Sequence[float]] | None = None) -> int:
    """Read one time step per line, write the model's output for it as one JSON array per line (flushed).

    With ``reset_on_blank`` an empty line starts a new sequence and is echoed as an empty line;
    otherwise empty lines are skipped.  A model that also takes per-sequence data (``forward(x, meta)``)
    gets it from ``static`` (``{"meta": [0.5, 1, 2]}``, ``--static meta=0.5,1,2``) or from a line holding a
    JSON object, ``{"meta": [0.5, 1, 2]}``, which applies to the steps after it.  Returns the number of
    steps run.

    >>> stream_stdin("motion-stream.onnx", sys.stdin, sys.stdout, device="cpu")   # doctest: +SKIP
    """
    session = StreamingSession(model, device=device, threads=threads, allow_nonfinite=allow_nonfinite)
    values = _static_values(session, static or {}, "--static")
    spec = session.input
    per_step = [d for a, d in enumerate(spec.shape) if a not in (session.batch_axis, session.seq_axis)]
    if not all(isinstance(d, int) for d in per_step):
        raise ModelFileError(f"{model}: the input's feature axes are not fixed ({spec.describe()}); cannot read steps")
    width = int(np.prod(per_step)) if per_step else 1
    out_axes = session.output_axes[session.output_names[0]]
    shape = [1 if a in (session.batch_axis, session.seq_axis) else int(d) for a, d in enumerate(spec.shape)]
    steps = 0
    for lineno, line in enumerate(stdin, start=1):
        text = line.strip()
        if not text:
            if reset_on_blank:
                session.reset()
                if not _emit(stdout, ""):
                    break
            continue
        if text.startswith("{"):
            values.update(_static_values(session, _json_object(text, lineno), f"stdin line {lineno}"))
            continue
        step_values = parse_step(text, lineno)
        if len(step_values) != width:
            raise InputError(f"stdin line {lineno}: expected {width} value(s) per step, got {len(step_values)}")
        missing = [i for i in session.static_inputs if i.name not in values]
        if missing:
            first = missing[0]
            raise InputError(
                f"stdin line {lineno}: this model also takes {first.name} ({_static_width(first)} value(s) per "
                f"sequence): pass --static {first.name}=v1,v2,... or send a line {{\"{first.name}\": [...]}} first")
        x = np.asarray(step_values).reshape(shape)
        y = session.step(x, **values)
        row = np.take(y, 0, axis=out_axes["batch_axis"] if out_axes["batch_axis"] is not None else 0)
        seq = out_axes["seq_axis"]
        if seq is not None:
            ba = out_axes["batch_axis"] if out_axes["batch_axis"] is not None else 0
            row = np.take(row, 0, axis=seq - (1 if seq > ba else 0))
        steps += 1
        if not _emit(stdout, json.dumps(np.asarray(row).tolist())):
            break
    return steps


def _static_width(spec: TensorSpec) -> int | str:
    dims = spec.shape[1:]
    return int(np.prod(dims)) if all(isinstance(d, int) for d in dims) else "?"


def _json_object(text: str, lineno: int) -> dict[str, Any]:
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"stdin line {lineno}: invalid JSON object ({exc.msg})") from None
    if not isinstance(obj, dict):
        raise InputError(f"stdin line {lineno}: expected a JSON object like {{\"meta\": [1, 2, 3]}}")
    return obj


def _static_values(session: StreamingSession, given: Mapping[str, Any], where: str) -> dict[str, np.ndarray]:
    """``given`` (name -> numbers) as one-sample arrays for the session's per-sequence inputs, checked."""
    specs = {i.name: i for i in session.static_inputs}
    if given and not specs:
        raise InputError(f"{where}: this model takes no input besides the sequence "
                         f"(got {', '.join(map(str, given))})")
    out = {}
    for name, raw in given.items():
        spec = specs.get(name)
        if spec is None:
            raise InputError(f"{where}: unknown input {name!r}; this model also takes {', '.join(specs)}")
        flat = np.asarray(raw, dtype=object).ravel().tolist() if isinstance(raw, (list, tuple)) else [raw]
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in flat):
            raise InputError(f"{where}: {name} must be numbers")
        width = _static_width(spec)
        if width != len(flat):
            raise InputError(f"{where}: {name} takes {width} value(s) per sequence ({spec.describe()}), got {len(flat)}")
        dims = [1, *(int(d) for d in spec.shape[1:])]
        out[name] = np.asarray(flat, dtype=spec.dtype).reshape(dims)
    return out


def _emit(stdout: TextIO, text: str) -> bool:
    """Write one line and flush; False when the reader has gone away (e.g. piped into head)."""
    try:
        stdout.write(text + "\n")
        stdout.flush()
        return True
    except BrokenPipeError:
        return False

"""Run a streaming export chunk by chunk, carrying the recurrent state between calls.

A file exported with ``edgeseq export --streaming`` takes every recurrent layer's initial state as
extra inputs and returns its final state.  :class:`StreamingSession` keeps that state inside ONNX
Runtime buffers bound from one call's outputs to the next call's inputs (I/O binding, no numpy
round trip).  Many streams at once: :class:`edgeseq.runtime.pool.StreamPool`; from the shell:
:func:`edgeseq.runtime.stdin.stream_stdin` (``edgeseq infer --stream``).

>>> s = StreamingSession("motion-stream.onnx", device="cpu")     # doctest: +SKIP
>>> for chunk in chunks:                                         # (batch, chunk_len, features)
...     y = s.step(chunk)                                        # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError, ModelFileError
from .checks import TensorSpec, check_array
from .ort import default_threads, run_failure
from .session import Session, initial_state

_MAX_PLANS = 8  # cached bindings per distinct chunk shape


@dataclass
class _StateSlot:
    key: str  # "<layer>.<h|c>", the key of StreamingSession.state
    parts: list[tuple[str, str]]  # (graph input, graph output); one per layer where the export split the state
    spec: TensorSpec  # the whole state, e.g. (layers, batch, hidden)
    batch_axis: int
    initial: np.ndarray | None = None  # a learned start state, batch axis of size 1 (None: zeros)

    def shape(self, batch: int) -> tuple[int, ...]:
        return tuple(batch if a == self.batch_axis else int(d) for a, d in enumerate(self.spec.shape))

    def fresh(self, batch: int) -> np.ndarray:
        """The state a stream starts from, for ``batch`` streams: zeros, or the model's learned initial state."""
        if self.initial is None:
            return np.zeros(self.shape(batch), self.spec.dtype)
        return np.broadcast_to(self.initial, self.shape(batch)).copy()  # a writable buffer of its own

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


def _state_array(value: Any, slot: _StateSlot) -> np.ndarray:
    """One state tensor as an array of the file's dtype; InputError for what cannot be one."""
    try:
        return np.asarray(value, dtype=slot.spec.dtype)
    except (TypeError, ValueError) as exc:
        raise InputError(f"state {slot.key!r} must be numbers, an array of shape like {slot.spec.shape}: "
                         f"{str(exc).splitlines()[0][:80]}") from None


class StreamingSession:
    """Step a ``--streaming`` export chunk by chunk; the state carries over to the next call.

    ``step(x)`` takes a chunk laid out like the model's input, e.g. (batch, chunk_len, features), and
    returns the model's first output for that chunk: per-step outputs for the chunk's steps, or, for a
    model that reads ``out[:, -1]``, its output after the chunk's last step.  The state starts at zeros
    (or at the model's learned initial state, when it passes one to its layers)
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

    def __reduce__(self) -> Any:
        # its state lives in ONNX Runtime buffers; a copy would silently start from zeros
        raise TypeError("a StreamingSession cannot be pickled or copied (it carries live stream state); create one per "
                        "process and move state as arrays: s.state / s.state = saved")

    def __init__(self, path: str | Path, device: str = "auto", threads: int | None = None,
                 allow_nonfinite: bool = False) -> None:
        # no memory arena: a step's tensors are tiny (session_options explains)
        self.session = Session(path, device=device, threads=threads or default_threads("stream"),
                               allow_nonfinite=allow_nonfinite, memory_arena=False)
        card = self.session.card
        state_in, state_out = card.get("state_inputs") or [], card.get("state_outputs") or []
        if not state_in or len(state_in) != len(state_out) or not card.get("streaming"):
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
        self._vocab: int | None = self.session._vocab.get(self.input.name)  # token ids must be 0..vocab-1
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
                                              int(s.get("batch_axis", 1)), initial_state(s, whole.dtype)))
        self.output_names = [o.name for o in self.session.outputs if o.name not in set(state_out)]
        self.output_axes: dict[str, dict[str, int | None]] = {
            n: dict((card.get("output_axes") or {}).get(n) or {"batch_axis": 0, "seq_axis": None})
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
        """A copy of the carried state {"<layer>.h": (layers, batch, hidden), ...}; {} before the first step
        (assigning {} back is ``reset()``)."""
        with self._exclusive():  # a step in another thread writes these buffers: refuse, never a torn copy
            if not self._started:
                return {}
            current = self._values[self._parity]
            if self._device[0] == "cpu":
                return {s.key: self._host[self._parity][i].copy() for i, s in enumerate(self._slots)}
            return {s.key: np.concatenate([v.numpy() for v in current[i]], axis=0) for i, s in enumerate(self._slots)}

    @state.setter
    def state(self, value: Mapping[str, Any]) -> None:
        if not value:  # what `state` gives before the first step: restoring it starts over
            self.reset()
            return
        arrays, batch = self.checked_state(value)
        with self._exclusive():
            self._allocate(batch)
            for i, s in enumerate(self._slots):
                self._write(self._parity, i, np.ascontiguousarray(arrays[s.key]))
            self._started = True

    def checked_state(self, value: Mapping[str, Any], batch: int | None = None) -> tuple[dict[str, np.ndarray], int]:
        """``value`` as arrays of the file's dtype and its batch size; InputError for what the file cannot take.

        ``batch`` (when given) is the batch size the state must have.
        """
        self._check_state_keys(value)
        arrays = {s.key: _state_array(value[s.key], s) for s in self._slots}
        if not self.allow_nonfinite:
            bad = [k for k, a in arrays.items() if not np.isfinite(a).all()]
            if bad:
                raise InputError(f"state {bad[0]!r} holds NaN/Inf (a corrupted save?); restore a clean state or "
                                 "reset(), or pass allow_nonfinite=True")
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
        return arrays, batch

    def _check_state_keys(self, value: Mapping[str, Any]) -> None:
        if set(value) != set(self.state_names):
            got = ", ".join(map(str, value)) or "none"
            raise InputError(f"state needs exactly the keys {', '.join(self.state_names)}; got {got}")

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
            a = check_array(static[spec.name], spec, self.allow_nonfinite, vocab_size=self.session._vocab.get(spec.name))
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
            if plan is not None and self._vocab is not None and (x.min() < 0 or x.max() >= self._vocab):
                plan = None  # (an id outside the embedding: -1 would read its last row)
            if plan is None:
                x = check_array(x, self.input, self.allow_nonfinite, vocab_size=self._vocab)
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
        except Exception as exc:  # ORT's runtime errors (shape mismatch inside the graph, no memory, ...)
            raise run_failure(exc, f"ONNX Runtime rejected the chunk of shape {x.shape}") from None
        self._parity ^= 1
        self._started = True
        return plan

    def _run_static_plan(self, x: Any, static: Mapping[str, Any]) -> tuple[_Plan, np.ndarray]:
        """(plan, checked chunk) for a chunk with per-sample inputs besides the sequence, those copied in."""
        x = check_array(x, self.input, self.allow_nonfinite, vocab_size=self._vocab)
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
        x = check_array(x, self.input, self.allow_nonfinite, vocab_size=self._vocab)
        batch = x.shape[self.batch_axis]
        feed: dict[str, Any] = {self.input.name: x, **self._checked_static(static, batch)}
        if state is not None:
            self._check_state_keys(state)
        for s in self._slots:
            value = s.fresh(batch) if state is None else _state_array(state[s.key], s)
            if value.shape != s.shape(batch):
                raise InputError(f"state {s.key!r} must have shape {s.shape(batch)}, got {value.shape}")
            feed.update({i: np.ascontiguousarray(v) for (i, _o), v in zip(s.parts, s.split(value))})
        if self.session.lengths_input:
            feed[self.session.lengths_input] = np.full(batch, x.shape[self.seq_axis], np.int64)
        names = self.output_names + [o for s in self._slots for _i, o in s.parts]
        try:
            values = self._ort.run(names, feed)
        except Exception as exc:  # ORT's runtime errors, as in _run
            raise run_failure(exc, f"ONNX Runtime rejected the chunk of shape {x.shape}") from None
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
                host = [s.fresh(batch) for s in self._slots]
                self._host.append(host)
                # one OrtValue per part, each over its slice of the host array (no copy on CPU)
                self._values.append([[ort.OrtValue.ortvalue_from_numpy(p) for p in s.split(a)]
                                     for s, a in zip(self._slots, host)])
            else:
                self._values.append([[ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(p), *self._device)
                                      for p in s.split(s.fresh(batch))]
                                     for s in self._slots])

    def _write(self, parity: int, i: int, value: np.ndarray | None) -> None:
        slot = self._slots[i]
        if self._device[0] == "cpu":
            target = self._host[parity][i]
            target[...] = (0 if slot.initial is None else slot.initial) if value is None else value
        else:
            whole = slot.fresh(self._batch or 1) if value is None else value
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

"""Many independent streams through one streaming export, one batched run per tick.

>>> pool = StreamPool("motion-stream.onnx", device="cpu")       # doctest: +SKIP
>>> a, b = pool.join(), pool.join()
>>> out = pool.step({a: step_a, b: step_b})                       # doctest: +SKIP
"""

from __future__ import annotations

import functools
import threading
from collections import Counter
from collections.abc import Hashable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from .checks import check_array
from .streaming import StreamingSession


def _locked(method: Any) -> Any:
    @functools.wraps(method)
    def wrapper(self: StreamPool, *args: Any, **kwargs: Any) -> Any:
        with self._lock:
            return method(self, *args, **kwargs)

    return wrapper


def _check_hashable(key: Any) -> None:
    if not isinstance(key, Hashable):
        raise InputError(f"a stream key must be hashable (a str, an int, a tuple), got {type(key).__name__}")


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

    def __reduce__(self) -> Any:
        # its state lives in ONNX Runtime buffers; a copy would silently start from zeros
        raise TypeError("a StreamPool cannot be pickled or copied (it carries live stream state); create one per process")

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
        self._restore: dict[Hashable, dict[str, np.ndarray]] = {}  # states given by set_state, applied at the next tick
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
        """Add a stream (its state at the start: zeros or the learned initial state) and return its key (a new int when ``key`` is None).

        A model with inputs besides the sequence takes this stream's values once, by name, without a
        batch axis: ``pool.join("sensor-7", meta=m)``; every tick then passes them for the stream.
        """
        values = self._stream_static(static)
        if key is not None:
            _check_hashable(key)
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
            timed = len(spec.shape) > 1 and isinstance(spec.shape[1], str)  # (batch, 3) meta has no steps to name
            out[spec.name] = check_array(a[None], spec, self.stream.allow_nonfinite, seq_axis=1 if timed else None,
                                         vocab_size=self.stream.session._vocab.get(spec.name))[0]
        return out

    @_locked
    def leave(self, key: Hashable) -> None:
        """Remove a stream; its state is dropped."""
        self._require(key)
        del self._members[key]
        self._static.pop(key, None)
        self._zero.discard(key)
        self._restore.pop(key, None)
        self._dirty = True

    @_locked
    def reset(self, key: Hashable) -> None:
        """Start ``key`` over from the start state (zeros or the learned initial state)."""
        self._require(key)
        self._zero.add(key)
        self._restore.pop(key, None)
        self._dirty = True

    @_locked
    def get_state(self, key: Hashable) -> dict[str, np.ndarray]:
        """A copy of one stream's state, laid out as :attr:`StreamingSession.state` with a batch of 1.

        Save it to resume the stream later, in this pool or another process's (:meth:`set_state`), or
        in a :class:`StreamingSession`.

        >>> saved = pool.get_state("user-7"); pool.leave("user-7")          # doctest: +SKIP
        >>> pool.join("user-7"); pool.set_state("user-7", saved)           # doctest: +SKIP
        """
        self._require(key)
        slots = self.stream._slots
        if key in self._restore:
            return {name: a.copy() for name, a in self._restore[key].items()}
        if key in self._zero or key not in self._active:
            return {s.key: s.fresh(1) for s in slots}
        full, row = self.stream.state, self._active[key]
        return {s.key: np.take(full[s.key], [row], axis=s.batch_axis) for s in slots}

    @_locked
    def set_state(self, key: Hashable, state: Mapping[str, Any]) -> None:
        """Continue ``key`` from ``state`` (one stream's, as :meth:`get_state` returns it) at its next tick."""
        self._require(key)
        try:
            arrays, _ = self.stream.checked_state(state, batch=1)
        except InputError as exc:
            raise InputError(f"stream {key!r}: {exc} (one stream's state, as get_state() returns it)") from None
        self._restore[key] = {name: a.copy() for name, a in arrays.items()}
        self._zero.discard(key)
        self._dirty = True

    def _require(self, key: Hashable) -> None:
        _check_hashable(key)
        if key not in self._members:
            raise InputError(f"stream {key!r} is not in the pool")

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
        shapes = Counter(c.shape for c in chunks)
        if len(shapes) > 1:
            common = shapes.most_common(1)[0][0]
            odd = [(k, c.shape) for k, c in zip(keys, chunks) if c.shape != common]
            raise InputError(f"stream {odd[0][0]!r} sent a chunk of shape {odd[0][1]}, the others {common} "
                             f"({len(odd)} stream(s) differ); every stream in a tick sends one shape, the model "
                             f"takes {self._per_stream_shape()} per stream")
        x = np.stack(chunks, axis=self.stream.batch_axis)
        rows = np.fromiter((active[k] for k in keys), np.int64, len(keys))
        try:
            if len(keys) == len(active):
                if (rows != np.arange(len(rows))).any():  # put the chunks in state-row order
                    x = np.take(x, np.argsort(rows), axis=self.stream.batch_axis)
                y = self.stream.step(x, **self._stacked)
                return self._split(y, keys, rows)
            full = self.stream.state
            axis = {s.key: s.batch_axis for s in self.stream._slots}
            sub = {name: np.take(a, rows, axis=axis[name]) for name, a in full.items()}
            outs, new = self.stream.run_with_state(x, sub, **{n: a[rows] for n, a in self._stacked.items()})
        except InputError:
            self._name_the_stream(keys, chunks)  # a NaN, a bad id, a wrong width: whose?
            raise
        for name, a in new.items():
            np.moveaxis(full[name], axis[name], 0)[rows] = np.moveaxis(a, axis[name], 0)
        self.stream.state = full
        return self._split(outs[self.stream.output_names[0]], keys, np.arange(len(keys)))

    @_locked
    def step_all(self, x: Any, keys: Any = None) -> np.ndarray:
        """Advance every stream: ``x`` is laid out like the model input with streams in :attr:`keys` order.

        Pass the ``keys`` you laid ``x`` out by when other threads may join or leave: a pool whose streams
        changed since then refuses the tick instead of giving one stream's rows to another.

        >>> keys = pool.keys; y = pool.step_all(rows_for(keys), keys=keys)      # doctest: +SKIP
        """
        if keys is not None and list(keys) != list(self._members):
            raise InputError(f"the pool's streams changed since these keys were read ({len(list(keys))} given, "
                             f"{len(self._members)} in the pool now); read pool.keys again and lay x out by them")
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
            a = slot.fresh(len(new))
            keep = [(j, old_rows[k]) for j, k in enumerate(new) if k in old_rows and k not in self._zero]
            if current and keep:
                dst, src = zip(*keep)
                rows = np.moveaxis(current[slot.key], slot.batch_axis, 0)[list(src)]
                np.moveaxis(a, slot.batch_axis, 0)[list(dst)] = rows
            for j, k in enumerate(new):
                if k in self._restore:
                    np.moveaxis(a, slot.batch_axis, 0)[j] = np.moveaxis(self._restore[k][slot.key], slot.batch_axis, 0)[0]
            state[slot.key] = a
        self._zero.clear()
        self._restore.clear()
        self._active = {k: i for i, k in enumerate(new)}
        self.stream.state = state

    def _name_the_stream(self, keys: list[Hashable], chunks: list[np.ndarray]) -> None:
        """Raise the error of the first stream whose chunk fails the input checks alone, naming its key."""
        stream = self.stream
        for key, chunk in zip(keys, chunks):
            try:
                check_array(np.expand_dims(chunk, stream.batch_axis), stream.input, stream.allow_nonfinite,
                            vocab_size=stream._vocab)
            except InputError as exc:
                raise InputError(f"stream {key!r}: {exc}") from None

    def _per_stream_shape(self) -> str:
        dims = [("steps" if a == self.stream.seq_axis else str(d)) for a, d in enumerate(self.input_shape)
                if a != self.stream.batch_axis]
        return f"({', '.join(dims)})"

    def _per_stream(self, x: Any, key: Hashable) -> np.ndarray:
        x = np.asarray(x)
        rank = len(self.input_shape) - 1  # one stream's chunk: the model input without its batch axis
        if x.ndim == rank - 1:  # one step: its time axis goes where the model has it (channels first: last)
            sa, ba = self.stream.seq_axis, self.stream.batch_axis
            x = np.expand_dims(x, sa - 1 if sa > ba else sa)
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

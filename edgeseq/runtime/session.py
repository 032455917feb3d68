"""Session: run an exported ONNX file with ONNX Runtime, with input checks and batching.

>>> from edgeseq import Session
>>> s = Session("model.onnx", device="cpu")          # doctest: +SKIP
>>> y = s.predict(x)                                 # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..card import card_from_metadata, forward_takes_lengths, recurrent_bytes_per_step
from ..errors import EdgeseqError, InputError
from .checks import TensorSpec, check_array, check_shape, positive_int, spec_of, thread_count, untorch
from .ort import create_inference_session, open_model_file, run_failure
from .providers import DeviceChoice, Placement, placement_of, resolve_device, settle_choice

# Memory of a recurrent run grows with batch x steps (ONNX Runtime keeps every step's gates and outputs):
MAX_LENGTH = 100_000  # longest sequence predict() accepts; Session(max_length=) / --max-length raise it
STEP_BUDGET = 1 << 18  # samples x steps per run; predict() runs fewer samples at a time for long sequences
# On the CPU, runs of at most this many samples x steps (but at least CPU_MIN_ROWS samples): ONNX Runtime's
# recurrent kernels keep every step's gates of the run, and past a few MB they fall out of cache. Measured
# (bench/README.md, "Run size and length-sorted runs"): fashion_lstm, 2000 x 28 steps: 138 ms at 256 samples per
# run, 119 ms at 73.
CPU_RUN_SAMPLE_STEPS = 2048
CPU_MIN_ROWS = 64
# ...and on the CPU at most this many bytes of kept gates and outputs per run (card.recurrent_bytes_per_step), so
# that a few long sequences do not grow ONNX Runtime's arena, which keeps its peak for the life of the session.
# fashion_lstm (5120 bytes per sample-step), 8 x 20000 steps: 13 samples per run peaked 491 MB over the start, 1
# sample 73 MB; at 1000 steps 13 to 64 samples per run take the same time, at 5000 steps 4 samples are 10% slower
# than 16 and 2 are 40% slower (bench/README.md, "Run size and length-sorted runs").
CPU_RUN_BYTES = 128 << 20
LENGTH_WINDOW_RUNS = 32  # variable lengths: samples sorted by length within windows of this many runs


def initial_state(state: dict[str, Any], dtype: Any = np.float32) -> np.ndarray | None:
    """One card state entry's learned start value with a batch axis of size 1 (None: it starts at zeros)."""
    if state.get("initial") is None:
        return None
    return np.expand_dims(np.asarray(state["initial"], dtype), int(state.get("batch_axis", 1)))


def initial_states(card: dict[str, Any]) -> dict[str, np.ndarray]:
    """Graph state input -> the learned state a sequence starts from (batch axis of size 1), from a streaming
    file's card; inputs missing here start at zeros.

    >>> initial_states({"streaming": {"layers": [{"states": [{"input": "rnn.h_in", "initial": [[0.5]]}]}]}})
    {'rnn.h_in': array([[[0.5]]], dtype=float32)}
    """
    out: dict[str, np.ndarray] = {}
    for layer in (card.get("streaming") or {}).get("layers") or []:
        for state in layer.get("states") or []:
            whole = initial_state(state)
            if whole is None:
                continue
            parts = [p["input"] for p in state.get("parts") or []] or [state["input"]]
            for k, name in enumerate(parts):
                out[name] = whole if len(parts) == 1 else whole[k : k + 1]
    return out


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
        io_binding: bool | None = None,
        max_length: int = MAX_LENGTH,
        memory_arena: bool = True,
    ) -> None:
        self.path = open_model_file(path)
        self._init_args = (str(self.path.absolute()), device, threads, memory_arena)  # a copy loads this file wherever
        self.max_length = positive_int(max_length, "max_length")
        self.threads = thread_count(threads)
        self.batch_size = positive_int(batch_size, "batch_size")
        self.allow_nonfinite = allow_nonfinite
        choice = resolve_device(device)
        self._sess = create_inference_session(self.path, choice, threads, memory_arena)
        self.placement: Placement | None = placement_of(self._sess)
        settled = settle_choice(choice, self._sess.get_providers(), self.placement)
        if settled.device != choice.device and "CUDAExecutionProvider" in self._sess.get_providers():
            self._sess = create_inference_session(self.path, settled, threads, memory_arena)  # auto: back to CPU
            self.placement = placement_of(self._sess)
        self.device_choice: DeviceChoice = settled
        # On CUDA, bind inputs/outputs on the device: one copy in, one copy out, no staging in between.
        self.io_binding = settled.is_cuda if io_binding is None else io_binding
        self.inputs: list[TensorSpec] = [spec_of(i) for i in self._sess.get_inputs()]
        self.outputs: list[TensorSpec] = [spec_of(o) for o in self._sess.get_outputs()]
        self.card: dict[str, Any] = card_from_metadata(self._sess.get_modelmeta().custom_metadata_map)
        self._step_bytes: int | None = None  # memory a run keeps per sample and step, read at the first long run
        self._index()

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        """Pickled (multiprocessing workers, ``copy.deepcopy``) as its arguments and current settings: the copy
        loads the same file (its absolute path, as of construction) again, so the file must be reachable there."""
        path, device, threads, memory_arena = self._init_args
        return (type(self), (path, device, threads, self.batch_size, self.allow_nonfinite, self.io_binding,
                             self.max_length, memory_arena))

    def _index(self) -> None:
        """Cache what every call needs from the card and the graph (read once, at load: each card
        look-up on the call path cost ~1 us, see bench/README.md "Session.predict")."""
        card = self.card
        name = card.get("lengths_input")
        self._lengths_name: str | None = name if name and any(i.name == name for i in self.inputs) else None
        state_in = set(card.get("state_inputs") or [])
        state_out = set(card.get("state_outputs") or [])
        self._data: list[TensorSpec] = [i for i in self.inputs
                                        if i.name != self._lengths_name and i.name not in state_in]
        self._data_names = frozenset(d.name for d in self._data)
        self._state_specs = [i for i in self.inputs if i.name in state_in]
        self._initial = initial_states(card)
        self._data_outputs = [o for o in self.outputs if o.name not in state_out]
        self._specs = {i.name: i for i in self.inputs}
        places: dict[str, list[tuple[str, int]]] = {}
        for i in self.inputs:
            for axis, dim in enumerate(i.shape):
                if isinstance(dim, str):
                    places.setdefault(dim, []).append((i.name, axis))
        # axis names that several inputs share (``batch`` in ``x`` and ``tgt``): run() checks they agree
        self._shared_dims = [(dim, at) for dim, at in places.items() if len({name for name, _ in at}) > 1]
        self._output_names = [o.name for o in self.outputs]
        steps = card.get("max_steps")  # the model's own longest length (a learned position table), if any
        self._max_steps: int | None = steps if isinstance(steps, int) and not isinstance(steps, bool) else None
        fewest = card.get("min_steps")  # and shortest (a kernel or pooling window over time)
        self._min_steps: int | None = fewest if isinstance(fewest, int) and not isinstance(fewest, bool) else None
        ins = card.get("inputs") or [{}]
        # inputs that hold each sample's length of a sequence input (forward(x, lengths, meta)): run() checks 1..steps
        axes_of = {e.get("name"): e.get("seq_axis") for e in ins if isinstance(e, dict)}
        self._lengths_of = [(e["name"], e["lengths_of"], axes_of.get(e["lengths_of"])) for e in ins
                            if isinstance(e, dict) and e.get("lengths_of") and isinstance(axes_of.get(e["lengths_of"]), int)]
        layout = ins[0].get("layout", "batch_first") if isinstance(ins[0], dict) else "batch_first"
        self._layout_name = layout
        self._ba, self._sa = (1, 0) if layout == "time_first" else (0, 1)
        first = ins[0] if isinstance(ins[0], dict) else {}
        ba, sa = first.get("batch_axis"), first.get("seq_axis")
        if isinstance(ba, int) and isinstance(sa, int) and ba != sa:  # e.g. a spectrogram's (batch, 1, bins, seq)
            self._ba, self._sa = ba, sa
        elif not card.get("inputs") and self._data:  # another exporter's file: its axis names, when it has them
            dims = [str(d).lower() if isinstance(d, str) else d for d in self._data[0].shape]
            named_ba = dims.index("batch") if "batch" in dims else None
            named_sa = next((dims.index(n) for n in ("seq", "sequence", "time", "steps") if n in dims), None)
            if named_ba is not None and named_sa is not None and named_ba != named_sa:
                self._ba, self._sa = named_ba, named_sa
                self._layout_name = "time_first" if (named_sa, named_ba) == (0, 1) else self._layout_name
        # forward(x, lengths) and --lengths files: their lengths input too (a streaming chunk may advance 0 steps)
        if (self._lengths_name and not self._state_specs and self._data
                and all(name != self._lengths_name for name, _, _ in self._lengths_of)):
            dims = self._data[0].shape  # a file being checked at export has no card layout yet: its axis names say
            seq = self._sa if card.get("inputs") else (dims.index("seq") if "seq" in dims else None)
            if seq is not None:
                self._lengths_of.append((self._lengths_name, self._data[0].name, seq))
        # exported from a model that takes one sequence per call: (seq,) or (seq, features), no batch axis
        self._unbatched = (len(self._data) == 1 and "batch_axis" in first and first.get("batch_axis") is None
                           and first.get("seq_axis") is not None)
        self._vocab = {d.name: self._card_vocab(d.name) for d in self._data}
        # predict()'s one-run path: the single data input's dtype, rank and fixed dims
        spec = self._data[0] if len(self._data) == 1 else None
        self._fast_spec = spec
        # the first output's time axis: the one named like the input's (None without one, or without a name)
        first_dims = self.outputs[0].shape if self.outputs else ()
        seq_name = spec.shape[self._sa] if spec is not None and self._sa < len(spec.shape) else None
        self._fast_time_axis = (first_dims.index(seq_name) if isinstance(seq_name, str) and seq_name in first_dims
                                else None)
        # a forward(x, lengths) file pads per-step outputs as the model does (zeros after each length, cut at the
        # longest); --lengths files hold each sample's last step already, so predict need not redo it
        self._pads_like_pytorch = self._lengths_name is not None and forward_takes_lengths(card)
        if spec is not None:
            self._fast_dtype = np.dtype(spec.dtype)
            self._fast_fixed = tuple((a, d) for a, d in enumerate(spec.shape) if isinstance(d, int))
            self._fast_vocab = self._vocab[spec.name]

    @property
    def providers(self) -> list[str]:
        """Execution providers ONNX Runtime actually activated for this session."""
        return list(self._sess.get_providers())

    @property
    def device(self) -> str:
        """Where the session runs: 'cpu' or 'cuda:N'."""
        return self.device_choice.device

    @property
    def device_reason(self) -> str:
        """Why this device: e.g. 'auto chose cpu: the installed onnxruntime is the CPU-only build (...)'."""
        return self.device_choice.reason

    @property
    def lengths_input(self) -> str | None:
        """Name of the graph input that takes per-sample lengths, if the file has one."""
        return self._lengths_name

    def batch_axis_of(self, name: str) -> int:
        """The axis along which input or output ``name`` holds samples: the one named like the first input's batch
        axis (a hand-exported ``h_n: [1, batch, 20]`` has it at 1), else the model card's, else the layout's."""
        spec = self._specs.get(name) or next((o for o in self.outputs if o.name == name), None)
        if spec is None:
            raise InputError(f"unknown input or output {name!r}")
        if name == self._lengths_name:
            return 0
        first = self._data[0].shape if self._data else ()
        batch = first[self._ba] if self._ba < len(first) else None
        if isinstance(batch, str) and batch in spec.shape:
            return spec.shape.index(batch)
        axes = (self.card.get("output_axes") or {}).get(name)
        if isinstance(axes, dict) and isinstance(axes.get("batch_axis"), int):
            return int(axes["batch_axis"])
        return self._ba if self._ba < len(spec.shape) else 0

    def data_inputs(self) -> list[TensorSpec]:
        """Inputs without the lengths input and the carried state of a streaming export."""
        return list(self._data)

    def data_outputs(self) -> list[TensorSpec]:
        """Outputs without the carried recurrent state of a streaming export."""
        return list(self._data_outputs)

    def with_defaults(self, feed: Mapping[str, Any]) -> dict[str, Any]:
        """``feed`` plus the inputs a caller may leave out: full lengths, and zero state (streaming files)."""
        feed = dict(feed)
        data = self._data
        x = feed.get(data[0].name) if data else None  # the sequence input comes first (forward(x, meta))
        if x is None or (not self._lengths_name and not self._state_specs):
            return feed
        shape = np.shape(x)
        n, t = shape[self._ba], shape[self._sa]
        if self._lengths_name and self._lengths_name not in feed:
            feed[self._lengths_name] = np.full(n, t, np.int64)
        for spec in self._state_specs:
            if spec.name not in feed:
                feed[spec.name] = self._start_state(spec, n)
        return feed

    def _start_state(self, spec: TensorSpec, batch: int) -> np.ndarray:
        """A streaming file's state input at the start of a sequence: zeros, or the model's learned state."""
        shape = [d if isinstance(d, int) else batch for d in spec.shape]
        initial = self._initial.get(spec.name)
        if initial is None:
            return np.zeros(shape, spec.dtype)
        return np.broadcast_to(initial.astype(spec.dtype, copy=False), shape).copy()

    # -- running -----------------------------------------------------------------------------
    def run(self, feed: Mapping[str, Any], outputs: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """Run one batch: ``feed`` maps input names to arrays; returns {output name: array}.

        >>> s.run({"x": x})["y"]         # doctest: +SKIP
        """
        specs = self._specs
        if not isinstance(feed, Mapping):
            raise InputError(f"run() takes a dict of inputs by name, {{{', '.join(repr(n) for n in specs)}: ...}}; got "
                             f"{type(feed).__name__} (predict(x) takes one array)")
        unknown = sorted(n for n in feed if n not in specs)
        if unknown:
            raise InputError(f"unknown input(s) {', '.join(unknown)}; the model takes {', '.join(specs)}")
        feed = self.with_defaults(feed)
        missing = [n for n in specs if n not in feed]
        if missing:
            raise InputError(f"missing input(s) {', '.join(missing)}; the model takes {', '.join(s.describe() for s in self.inputs)}")
        prepared = {n: self.check_input(v, specs[n]) for n, v in feed.items()}
        if (self._max_steps is not None or self._min_steps is not None) and self._data and self._data[0].name in prepared:
            self.check_length(self._data[0], prepared[self._data[0].name].shape[self._sa])
        self._check_shared_dims(prepared)
        for name, of, axis in self._lengths_of:
            value, steps = prepared.get(name), prepared[of].shape[axis] if of in prepared else None
            if value is not None and steps is not None and value.size and (value.min() < 1 or value.max() > steps):
                raise InputError(f"input {name!r} holds each sample's length of {of!r}, 1 to its {steps} steps; got "
                                 f"{value.min()}..{value.max()}")
        names = list(outputs) if outputs else self._output_names
        absent = [n for n in names if not isinstance(n, str) or n not in self._output_names]
        if absent:
            raise InputError(f"unknown output(s) {', '.join(map(repr, absent))}; the model gives "
                             f"{', '.join(self._output_names)}")
        try:
            values = self._sess.run(names, prepared)
        except Exception as exc:  # ORT's own runtime errors (shape mismatch inside the graph, no memory, ...)
            raise run_failure(exc, "ONNX Runtime rejected the input") from None
        return dict(zip(names, values))

    def _check_shared_dims(self, prepared: Mapping[str, np.ndarray]) -> None:
        """Inputs whose axes share a name (``batch`` in ``x`` and ``tgt``) must agree on its size; ONNX Runtime
        would otherwise fail deep inside the graph ("initial_h must have shape {1,3,32}")."""
        for dim, at in self._shared_dims:
            sizes = [(name, axis, prepared[name].shape[axis]) for name, axis in at
                     if name in prepared and axis < prepared[name].ndim]
            for name, axis, size in sizes[1:]:
                if size != sizes[0][2]:
                    raise InputError(f"inputs disagree on {dim!r}: {sizes[0][0]!r} has {sizes[0][2]} (axis "
                                     f"{sizes[0][1]}), {name!r} has {size} (axis {axis}); give them the same {dim}")

    def predict(self, x: Any, lengths: Any = None, batch_size: int | None = None) -> np.ndarray:
        """First output for ``x`` (batch first), run in chunks of at most ``batch_size`` samples.

        On the CPU a run holds at most ~2048 samples x steps (at least 64 samples), where ONNX Runtime's
        recurrent kernels stay in cache; samples of different lengths run sorted by length.

        ``lengths`` (one per sample) marks zero-padded steps so they do not change results.
        ``x`` may also be a list of sequences of different lengths (each ``(steps, features)``):
        they are padded and given their lengths, as if each ran alone; outputs with a time axis
        come back at the longest length, each sample's last valid step repeated over its padding.
        Long sequences run fewer samples at a time (on the CPU at most :data:`CPU_RUN_BYTES` of kept
        state per run), so memory stays bounded; sequences over ``max_length`` steps are refused.
        An empty batch gives an empty result.
        A Session may be shared by threads: ``predict`` and ``run`` keep no state between calls.

        >>> s.predict([np.zeros((5, 6), np.float32), np.zeros((9, 6), np.float32)]).shape  # doctest: +SKIP
        (2, 4)
        """
        if self._unbatched:
            return self._predict_each(x, lengths)
        if isinstance(x, (list, tuple)):
            if not x:
                raise InputError(f"input {self._data[0].name!r}: no sequences given (an empty list)")
            x, lengths = self._pad_ragged(x, lengths)
        y = self._predict_one_run(x, lengths, batch_size)
        if y is not None:
            return y
        if (type(x) is np.ndarray and len(self._data) == 1 and x.ndim == self._data[0].rank and x.ndim > self._ba
                and x.shape[self._ba] == 0):  # after the one-run path, which declines it: off the hot path
            return self._empty_result(x)
        chunks = list(self.iter_predict(x, lengths, batch_size))
        if len(chunks) == 1:
            return chunks[0]
        return np.concatenate(chunks, axis=self.batch_axis_of(self._output_names[0]))  # (steps, batch, ...) too

    def _empty_result(self, x: np.ndarray) -> np.ndarray:
        """predict() of a batch of no samples: the first output with no samples, shaped by one run of zeros."""
        one = list(x.shape)
        one[self._ba] = 1
        try:
            y = self.predict(np.zeros(one, x.dtype))
        except InputError as exc:  # a wrong width, an empty time axis: said of the array given
            raise InputError(str(exc).replace(str(tuple(one)), str(tuple(x.shape)))) from None
        return np.take(y, np.arange(0), axis=self.batch_axis_of(self._output_names[0]))

    def _predict_each(self, x: Any, lengths: Any = None) -> np.ndarray:
        """A model without a batch axis (one sequence per call): each sequence alone, outputs stacked along a
        new first axis; outputs of different lengths end in their last row, repeated (as predict pads)."""
        spec = self._data[0]
        if lengths is not None:  # a padded array of sequences (an eval set): each cut to its own length
            arr = np.asarray(untorch(x)) if not isinstance(x, (list, tuple)) else None
            if arr is None or arr.ndim != spec.rank + 1:
                raise InputError(f"input {spec.name!r} takes one sequence per call (no batch axis): give the "
                                 "sequences as a list, each at its own length, or a padded array with lengths")
            lengths = np.asarray(lengths)
            if lengths.shape != (len(arr),) or lengths.dtype.kind not in "iu" or lengths.min() < 1 \
                    or lengths.max() > arr.shape[1]:
                raise InputError(f"lengths must be {len(arr)} integers between 1 and the padded length "
                                 f"{arr.shape[1]}; got shape {lengths.shape}")
            x = [arr[i, : int(n)] for i, n in enumerate(lengths)]
        if isinstance(x, (list, tuple)):
            if not x:
                raise InputError(f"input {spec.name!r}: no sequences given")
            seqs = list(x)
        else:
            arr = np.asarray(untorch(x))
            if arr.ndim not in (spec.rank, spec.rank + 1):
                raise InputError(f"input {spec.name!r} takes one sequence per call, shape [{', '.join(map(str, spec.shape))}]"
                                 f"; got shape {arr.shape} (give one sequence, a list of them, or an array of them)")
            seqs = [arr] if arr.ndim == spec.rank else list(arr)
        name = self._data_outputs[0].name
        outs = [self.run({spec.name: seq})[name] for seq in seqs]
        if any(o.shape != outs[0].shape for o in outs):
            longest = max(len(o) for o in outs)
            outs = [_hold_last(o, 0, longest) for o in outs]
        return np.stack(outs)

    def iter_predict(self, x: Any, lengths: Any = None, batch_size: int | None = None,
                     offset: int = 0) -> Iterator[np.ndarray]:
        """Like :meth:`predict`, yielding the output in sample order a piece at a time (a run, or a window of
        length-sorted runs for samples of different lengths); ``offset`` numbers samples in errors.

        >>> for y in s.iter_predict(x, batch_size=64): ...      # doctest: +SKIP
        """
        for ys in self.iter_outputs(x, lengths, batch_size, offset, [self.outputs[0].name]):
            yield ys[0]

    def iter_outputs(self, x: Any, lengths: Any = None, batch_size: int | None = None, offset: int = 0,
                     outputs: Sequence[str] | None = None) -> Iterator[list[np.ndarray]]:
        """Like :meth:`iter_predict` for several outputs (default: every data output), one list per piece.

        >>> for logits, weights in s.iter_outputs(x, outputs=["y0", "y1"]): ...   # doctest: +SKIP
        """
        names = list(outputs) if outputs else [o.name for o in self.data_outputs()]
        unknown = [n for n in names if n not in self._output_names]
        if unknown:
            raise InputError(f"unknown output(s) {', '.join(unknown)}; the model gives {', '.join(self._output_names)}")
        if isinstance(x, (list, tuple)):
            x, lengths = self._pad_ragged(x, lengths)
        data = self.data_inputs()
        if len(data) != 1:
            raise InputError(f"predict() takes one input, the model has {len(data)}; use run(feed)")
        spec = data[0]
        x = check_shape(x, spec)
        batch_axis, seq_axis = self._batch_axis(), self._seq_axis()
        n = x.shape[batch_axis]
        steps = x.shape[seq_axis] if seq_axis < x.ndim else 1
        self.check_length(spec, steps)
        if lengths is not None:
            lengths = self._check_lengths(lengths, x, n)
        rows = self._rows(batch_size, steps)
        if lengths is None or (lengths == steps).all():
            for start in range(0, n, rows):
                sl = [slice(None)] * x.ndim
                sl[batch_axis] = slice(start, start + rows)
                part = self.check_input(x[tuple(sl)], spec, offset=offset + start)
                with self._ort_errors(offset + start, offset + start + part.shape[batch_axis] - 1):
                    ys = self._run_chunk(spec, part, None, names)
                yield ys
            return
        # Different lengths: sort each window of samples by length, so that a run holds one length (similar
        # lengths with a lengths input, trimmed to the longest), instead of many small runs per chunk.
        window = rows * LENGTH_WINDOW_RUNS
        for start in range(0, n, window):
            sl = [slice(None)] * x.ndim
            sl[batch_axis] = slice(start, start + window)
            part = self.check_input(x[tuple(sl)], spec, offset=offset + start)
            with self._ort_errors(offset + start, offset + start + part.shape[batch_axis] - 1):
                ys = self._run_bucketed(spec, part, lengths[start : start + window], names, batch_size)
            yield ys

    @contextlib.contextmanager
    def _ort_errors(self, first: int, last: int) -> Iterator[None]:
        """ONNX Runtime's own errors (a bad value deep in the graph, out of memory, ...) in one line (run_failure)."""
        try:
            yield
        except EdgeseqError:
            raise
        except Exception as exc:
            raise run_failure(exc, f"ONNX Runtime failed on samples {first}..{last}") from None

    def _rows(self, batch_size: int | None, steps: int) -> int:
        """Samples per run for sequences of ``steps``: the batch size, capped by memory and (CPU) by cache."""
        rows = min(positive_int(batch_size, "batch_size") or self.batch_size, STEP_BUDGET // max(1, steps))
        if not self.device_choice.is_cuda:
            rows = min(rows, max(CPU_MIN_ROWS, CPU_RUN_SAMPLE_STEPS // max(1, steps)))
            if rows * steps > CPU_RUN_SAMPLE_STEPS:  # past the cache-sized runs: read the file's figure once
                if self._step_bytes is None:
                    self._step_bytes = recurrent_bytes_per_step(self.path)
                if self._step_bytes:
                    rows = min(rows, CPU_RUN_BYTES // (self._step_bytes * max(1, steps)))
        return max(1, rows)

    def _predict_one_run(self, x: Any, lengths: Any, batch_size: int | None) -> np.ndarray | None:
        """predict() in one run for the common call -- a C-contiguous array of the input's dtype that
        fits one chunk -- with every check of the full path done cheaply; None when anything needs
        the full path (a cast, chunking, grouping by length, or an error message worth its cost)."""
        spec = self._fast_spec
        if spec is None or type(x) is not np.ndarray or x.dtype != self._fast_dtype:
            return None
        shape = x.shape
        if len(shape) != len(spec.shape) or 0 in shape or not x.flags.c_contiguous:
            return None
        for axis, want in self._fast_fixed:
            if shape[axis] != want:
                return None
        n = shape[self._ba]
        steps = shape[self._sa] if self._sa < len(shape) else 1
        if n == 0 or steps > min(self.max_length, self._max_steps or steps) or steps < (self._min_steps or 0) or (
                n > 1 and n > self._rows(batch_size, steps)):
            return None
        kind = x.dtype.kind
        if kind == "f":
            if not self.allow_nonfinite and not np.isfinite(x).all():
                return None
        elif kind in "iu" and self._fast_vocab is not None:
            if x.min() < 0 or x.max() >= self._fast_vocab:
                return None
        feed = {spec.name: x}
        if self._lengths_name:
            feed[self._lengths_name] = (np.full(n, steps, np.int64) if lengths is None
                                        else self._check_lengths(lengths, x, n))
        elif lengths is not None:
            return None
        for st in self._state_specs:
            feed[st.name] = self._start_state(st, n)
        try:
            y = self._run_one(feed, self._output_names[0])
        except Exception as exc:  # as in iter_predict: ORT's own errors
            raise run_failure(exc, f"ONNX Runtime failed on samples 0..{n - 1}") from None
        time_axis = self._fast_time_axis
        if lengths is not None and time_axis is not None and self._pads_like_pytorch:
            # a packed model's file ends at the longest sample with zeros after each one's length, as
            # pad_packed_sequence does; predict gives the padded length, each sample's last valid step held
            y = _hold_each(y, self._ba, time_axis, feed[self._lengths_name], steps)
        return y

    def _run_chunk(self, spec: TensorSpec, x: np.ndarray, lengths: np.ndarray | None,
                   outs: list[str]) -> list[np.ndarray]:
        feed: dict[str, np.ndarray] = self.with_defaults({spec.name: np.ascontiguousarray(x)})
        if self._lengths_name:
            n, t = x.shape[self._ba], x.shape[self._sa]
            feed[self._lengths_name] = lengths if lengths is not None else np.full(n, t, np.int64)
        return self._run_many(feed, outs)

    def _run_many(self, feed: dict[str, np.ndarray], outs: list[str]) -> list[np.ndarray]:
        if len(outs) == 1:
            return [self._run_one(feed, outs[0])]
        if not self.io_binding:
            return list(self._sess.run(outs, feed))
        binding = self._sess.io_binding()
        for name, value in feed.items():
            binding.bind_cpu_input(name, value)
        device_type, device_id = self.device_choice.ort_device
        for out in outs:
            binding.bind_output(out, device_type, device_id)
        self._sess.run_with_iobinding(binding)
        return list(binding.copy_outputs_to_cpu())

    def _run_one(self, feed: dict[str, np.ndarray], out: str) -> np.ndarray:
        if not self.io_binding:
            return self._sess.run([out], feed)[0]
        binding = self._sess.io_binding()
        for name, value in feed.items():
            binding.bind_cpu_input(name, value)
        device_type, device_id = self.device_choice.ort_device
        binding.bind_output(out, device_type, device_id)
        self._sess.run_with_iobinding(binding)
        return binding.copy_outputs_to_cpu()[0]

    def _run_bucketed(self, spec: TensorSpec, x: np.ndarray, lengths: np.ndarray, outs: list[str],
                      batch_size: int | None) -> list[np.ndarray]:
        """Run samples of different lengths sorted by length, each run trimmed to its longest sample.

        Without a lengths input a run holds one length only (padding would change results); with one,
        a run holds consecutive lengths and passes them on. Outputs with a time axis come back at the
        padded length, each sample's padded steps holding its last valid step (as files exported with
        ``--lengths`` do), so ``y[:, -1]`` is every sample's answer.
        """
        ba, sa = self._ba, self._sa
        order = np.argsort(lengths, kind="stable")
        runs: list[np.ndarray] = []
        i = 0
        while i < len(order):
            if self._lengths_name:
                end = min(len(order), i + self._rows(batch_size, int(lengths[order[i]])))
                end = min(end, i + self._rows(batch_size, int(lengths[order[end - 1]])))  # fits the longest too
            else:
                same = i + int(np.searchsorted(lengths[order[i:]], lengths[order[i]], side="right"))
                end = min(same, i + self._rows(batch_size, int(lengths[order[i]])))
            runs.append(order[i:end])
            i = end
        groups = []
        for idx in runs:
            longest = int(lengths[idx].max())
            part = np.take(np.take(x, idx, axis=ba), np.arange(longest), axis=sa)
            feed = self.with_defaults({spec.name: np.ascontiguousarray(part)})
            if self._lengths_name:
                feed[self._lengths_name] = lengths[idx].astype(np.int64)
            groups.append((idx, longest, self._run_many(feed, outs)))
        return self._assemble(spec, groups, len(lengths), x.shape[sa], outs, lengths)

    def _assemble(self, spec: TensorSpec, groups: list[tuple[np.ndarray, int, list[np.ndarray]]], n: int,
                  padded: int, outs: list[str], lengths: np.ndarray | None = None) -> list[np.ndarray]:
        """Outputs of runs over sample subsets (``(indices, run length, outputs)``) put back in sample order."""
        results = []
        for k, out in enumerate(outs):
            shapes = [(len(idx), length, ys[k].shape) for idx, length, ys in groups]
            out_ba, out_sa = self._output_axes(out, spec, shapes)
            first = groups[0][2][k]
            shape = list(first.shape)
            shape[out_ba] = n
            steps = padded
            if out_sa is not None and any(ys[k].shape[out_sa] != length for _idx, length, ys in groups):
                steps = max(ys[k].shape[out_sa] for _idx, _length, ys in groups)  # not step for step (pooled)
            if out_sa is not None:
                shape[out_sa] = steps
            result = np.empty(shape, dtype=first.dtype)
            for idx, length, ys in groups:
                y = ys[k]
                if out_sa is not None:
                    # step for step with the input (its run's longest length): each sample holds its own last step
                    aligned = self._pads_like_pytorch and lengths is not None and y.shape[out_sa] == length
                    y = _hold_each(y, out_ba, out_sa, lengths[idx], steps) if aligned else _hold_last(y, out_sa, steps)
                where: list[Any] = [slice(None)] * result.ndim
                where[out_ba] = idx
                result[tuple(where)] = y
            results.append(result)
        return results

    def _pad_ragged(self, x: list | tuple, lengths: Any = None) -> tuple[Any, Any]:
        """A list of sequences of different lengths -> (zero-padded batch, lengths); other input as it is."""
        try:
            seqs = [np.asarray(untorch(s)) for s in x]
        except (ValueError, TypeError, OverflowError, RecursionError):
            return x, lengths  # check_shape words the error
        if lengths is not None:
            if seqs and any(s.shape != seqs[0].shape for s in seqs):
                raise InputError("lengths= goes with one padded array; a list of sequences of different lengths "
                                 "carries its own lengths: drop lengths=")
            return x, lengths
        spec = self.data_inputs()[0] if len(self.data_inputs()) == 1 else None
        if not seqs or all(s.shape == seqs[0].shape for s in seqs):
            if seqs and spec is not None and self._ba == 1 and self._sa == 0 and seqs[0].ndim == spec.rank - 1:
                return np.stack(seqs, axis=1), None  # sequences side by side along a time-first model's batch axis
            return x, None
        if spec is None or not (self._ba == 0 or (self._ba, self._sa) == (1, 0)):
            return x, None
        axis = self._sa - 1 if self._ba == 0 else 0  # the time axis of one sequence (no batch axis)
        per_sample = [d for a, d in enumerate(spec.shape) if a != self._ba]
        dims = ["steps" if a == axis else str(d) for a, d in enumerate(per_sample)]
        step = f"({dims[0]},)" if len(dims) == 1 else f"({', '.join(dims)})"
        for i, seq in enumerate(seqs):
            fixed_ok = all(a == axis or not isinstance(want, int) or want == got
                           for a, (want, got) in enumerate(zip(per_sample, seq.shape)))
            if seq.ndim != spec.rank - 1 or not fixed_ok:
                raise InputError(f"input {spec.name!r}: sequence {i} has shape {tuple(seq.shape)}; each sequence in a "
                                 f"list must be {step}")
            if seq.shape[axis] == 0:
                raise InputError(f"input {spec.name!r}: sequence {i} is empty; every sequence needs at least one step")
        from .io import pad_sequences

        batch = pad_sequences(seqs, axis)
        x = batch.x if self._ba == 0 else np.ascontiguousarray(np.swapaxes(batch.x, 0, 1))  # time-first models
        return x, batch.lengths

    def _output_axes(self, out: str, spec: TensorSpec,
                     shapes: list[tuple[int, int, tuple[int, ...]]]) -> tuple[int, int | None]:
        """(batch axis, time axis or None) of output ``out``, from ``(samples, length, shape)`` of each group run:
        the axes named like the input's, else the ones whose sizes follow the samples and the lengths."""
        dims = next((o.shape for o in self.outputs if o.name == out), ())
        rank = len(shapes[0][2])

        def named(axis: int) -> int | None:
            name = spec.shape[axis] if axis < len(spec.shape) else None
            if not isinstance(name, str):
                return None
            for candidate in (name, f"{name}_out"):  # "seq_out": pooled over time, fewer steps than the input
                if candidate in dims:
                    return dims.index(candidate)
            return None

        def follows(index: int, exclude: int | None = None) -> int | None:
            if index == 1 and len({g[1] for g in shapes}) < 2:
                return None  # one length only: no evidence of a time axis
            return next((axis for axis in range(rank)
                         if axis != exclude and all(g[2][axis] == g[index] for g in shapes)), None)

        batch = named(self._ba)
        batch = batch if batch is not None else follows(0)
        batch = 0 if batch is None else batch
        seq = named(self._sa)
        if seq is None:
            seq = follows(1, exclude=batch)
        return batch, (seq if seq != batch else None)

    # -- checks ------------------------------------------------------------------------------
    def _layout(self) -> str:
        return self._layout_name

    def _batch_axis(self) -> int:
        return self._ba

    def _seq_axis(self) -> int:
        return self._sa

    def _check_lengths(self, lengths: Any, x: np.ndarray, n: int) -> np.ndarray:
        lengths = np.asarray(lengths)
        if lengths.ndim != 1 or len(lengths) != n or lengths.dtype.kind not in "iu":
            raise InputError(f"lengths must be {n} integers, one per sample; got shape {lengths.shape} dtype {lengths.dtype}")
        t = x.shape[self._seq_axis()]
        if lengths.min() < 1 or lengths.max() > t:
            raise InputError(f"lengths must be between 1 and the padded length {t}; got {lengths.min()}..{lengths.max()}")
        if self._min_steps is not None and lengths.min() < self._min_steps:
            i = int(np.argmin(lengths))
            raise InputError(f"sample {i} has {int(lengths[i])} steps; this model needs at least {self._min_steps} "
                             "(PyTorch fails below: a window over time longer than the sequence); pad it to that length")
        fixed = self._data[0].shape[self._seq_axis()] if self._data else None
        if isinstance(fixed, int) and (lengths != fixed).any():  # a file exported at one length
            i = int(np.flatnonzero(lengths != fixed)[0])
            raise InputError(f"this file runs at {fixed} steps only (its length axis is fixed); sample {i} has "
                             f"{int(lengths[i])} steps")
        return lengths.astype(np.int64)

    def check_length(self, spec: TensorSpec, steps: int) -> None:
        """Refuse sequences longer than ``max_length`` steps (memory grows with length), or than the model takes."""
        if self._max_steps is not None and steps > self._max_steps and spec is self._data[0]:
            raise InputError(f"input {spec.name!r} has sequences of {steps} steps; this model takes at most "
                             f"{self._max_steps} (its forward fails beyond, e.g. a learned table of "
                             f"{self._max_steps} positions): split or truncate them")
        if self._min_steps is not None and steps < self._min_steps and spec is self._data[0]:
            raise InputError(f"input {spec.name!r} has sequences of {steps} steps; this model needs at least "
                             f"{self._min_steps} (PyTorch fails below: a window over time longer than the sequence); "
                             "pad them to that length")
        if steps > self.max_length:
            raise InputError(
                f"input {spec.name!r} has sequences of {steps} steps, over the limit of {self.max_length} "
                "(memory grows with length); split them, or raise the limit with max_length= / --max-length"
            )

    def check_input(self, x: Any, spec: TensorSpec, offset: int = 0) -> np.ndarray:
        """Validate ``x`` against ``spec`` (rank, fixed dims, dtype, finite values, token ids) and cast it safely.

        ``offset`` is the number of ``x``'s first sample in a bigger input (for error messages).
        """
        if spec.name not in self._data_names:
            return check_array(x, spec, allow_nonfinite=self.allow_nonfinite, batch_axis=None, seq_axis=None)
        # a per-sample input without a time axis (forward(x, meta)'s meta: [batch, 3]) has no steps to name
        seq = self._sa if spec is self._data[0] or (self._sa < len(spec.shape) and isinstance(spec.shape[self._sa], str)) \
            else None
        return check_array(x, spec, allow_nonfinite=self.allow_nonfinite, vocab_size=self._vocab.get(spec.name),
                           batch_axis=self._ba, seq_axis=seq, offset=offset)

    def _vocab_size(self, name: str) -> int | None:
        """Token-id range of input ``name`` from the model card (ids must be in 0..vocab_size-1)."""
        return self._vocab[name] if name in self._vocab else self._card_vocab(name)

    def _card_vocab(self, name: str) -> int | None:
        entries = [e for e in self.card.get("inputs") or [] if isinstance(e, dict)]
        match = [e for e in entries if e.get("name") == name] or (entries if len(entries) == 1 else [])
        vocab = match[0].get("vocab_size") if match else None
        return int(vocab) if isinstance(vocab, int) and vocab > 0 else None


def _hold_each(y: np.ndarray, batch_axis: int, axis: int, lengths: np.ndarray, length: int) -> np.ndarray:
    """``y`` at ``length`` steps along ``axis``, where each sample (along ``batch_axis``) holds its last valid step
    (``lengths[i] - 1``) from its own length on."""
    moved = np.moveaxis(y, (batch_axis, axis), (0, 1))
    last = np.minimum(np.arange(length)[None, :], np.asarray(lengths, np.int64)[:, None] - 1)
    last = np.minimum(last, moved.shape[1] - 1).reshape(*last.shape, *[1] * (moved.ndim - 2))
    held = np.take_along_axis(moved, np.broadcast_to(last, (moved.shape[0], length, *moved.shape[2:])), axis=1)
    return np.moveaxis(held, (0, 1), (batch_axis, axis))


def _hold_last(y: np.ndarray, axis: int, length: int) -> np.ndarray:
    """``y`` extended along ``axis`` to ``length`` by repeating its last entry there (as padded steps hold
    the last valid step)."""
    short = length - y.shape[axis]
    if short <= 0:
        return y
    return np.concatenate([y, np.repeat(np.take(y, [y.shape[axis] - 1], axis=axis), short, axis=axis)], axis=axis)

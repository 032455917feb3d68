"""Export extras for sequences at the edge: carried recurrent state (streaming) and a ``lengths`` input.

*Streaming* wraps the unchanged user model: during export each ``nn.LSTM``/``nn.GRU``/``nn.RNN``
takes its initial state from an extra graph input and hands its final state to an extra output,
named ``<layer>.h_in`` / ``<layer>.h_out`` (and ``.c_in``/``.c_out`` for an LSTM's cell state).
Causal ``nn.Conv1d`` layers over time carry their left context the same way (``conv_state.py``).
The file is then stepped chunk by chunk against PyTorch on the whole sequence; a model that mixes
time steps in any other way (e.g. a centred Conv1d front-end) is refused.

*Lengths* adds an int64 ``lengths`` [batch] input by graph surgery: it feeds every recurrent node's
``sequence_lens`` (so padded steps never touch the state, and the reverse direction starts at each
sample's last valid step) and makes each node's per-step output hold the last valid step from there
on (``Y[t] = Y[min(t, len - 1)]``), so models reading ``out[:, -1]`` read the last valid step.

>>> export_with_extras("models/motion_lstm.py:build", "motion-stream.onnx", streaming=True)  # doctest: +SKIP
>>> export_with_extras("models/vowels_bigru.py:build", "vowels.onnx", lengths=True)         # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import inspect
import math
import re
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..card import set_card, update_card
from ..errors import EdgeseqError, ExportError, UnsupportedModelError, require
from ..inputs import InputInfo, InputSpec
from ..runtime.io import atomic_path
from ..tolerances import Tolerance, tolerance_for
from . import parity
from .cleanup import cleanup_record, node_count, simplify, split_layer_states
from .conv_state import ConvLayer, conv_layers
from .exporter import DEFAULT_OPSET, EXPORTERS, ExportResult, build_card, graph_problems, written_opset
from .layout import check_layout, detect_time_first
from .lengths import (
    LENGTHS_CHECK_LENGTH,
    LENGTHS_INPUT,
    add_lengths_input,
    check_lengths_layers,
    lengths_refusal,
    resolution_layers,
    sample_of_others,
    verify_lengths,
)
from .loading import model_and_source
from .packed import unpacked, verify_packed
from .projected import with_projected_lstms
from .signature import (
    card_axes,
    check_batch_not_fixed,
    check_not_frozen,
    check_supported,
    merged_axes,
    merged_axes_message,
    name_output_dims,
    output_axes,
    runnable_signature,
    runs_at_one_length_only,
)

STREAM_CHUNKS = (1, 3)  # plus the whole sequence
STREAM_CHECK_LENGTH = 17  # odd and not a multiple of 3: the last chunk is a partial one


# ------------------------------------------------------------------------------------ streaming
@dataclass
class RecurrentLayer:
    """One recurrent module whose state the streaming graph carries."""

    name: str
    kind: str  # "lstm" | "gru" | "rnn"
    module: Any
    num_layers: int
    hidden_size: int
    calls: int = 0
    # a learned initial state the model passes to the layer (the same for every sample): (layers, hidden) per state
    initial: list[Any] | None = None
    proj_size: int = 0  # a projected LSTM's h is proj_size wide (its c stays hidden_size)

    def state_size(self, which: str) -> int:
        return self.proj_size if which == "h" and self.proj_size else self.hidden_size

    @property
    def state_names(self) -> list[str]:
        return ["h", "c"] if self.kind == "lstm" else ["h"]

    def io_name(self, which: str, direction: str) -> str:
        return f"{self.name}.{which}_{direction}"

    def example_state(self, batch: int) -> list[Any]:
        import torch

        g = torch.Generator().manual_seed(1)
        return [0.1 * torch.randn((self.num_layers, batch, self.state_size(w)), generator=g) for w in self.state_names]

    def to_card(self, parts: dict[str, list[tuple[str, str]]] | None = None) -> dict[str, Any]:
        """The card's entry; ``parts`` (from :func:`~edgeseq.export.cleanup.split_layer_states`) lists the
        per-layer graph inputs/outputs of a state split along its first axis."""
        states = []
        for w in self.state_names:
            state = {"name": w, "input": self.io_name(w, "in"), "output": self.io_name(w, "out"),
                     "shape": [self.num_layers, "batch", self.state_size(w)], "batch_axis": 1}
            if self.initial is not None:  # a stream starts here instead of at zeros
                state["initial"] = self.initial[self.state_names.index(w)].tolist()
            if parts and state["input"] in parts:
                state["parts"] = [{"input": i, "output": o} for i, o in parts[state["input"]]]
            states.append(state)
        return {"name": self.name, "kind": self.kind, "num_layers": self.num_layers, "hidden_size": self.hidden_size,
                "states": states}


def recurrent_layers(model: Any, required: bool = True) -> list[RecurrentLayer]:
    """The model's recurrent modules, refusing ones that cannot stream (bidirectional, projections)."""
    import torch.nn as nn

    kinds = {nn.LSTM: "lstm", nn.GRU: "gru", nn.RNN: "rnn"}
    layers = []
    for name, module in model.named_modules():
        kind = next((k for cls, k in kinds.items() if isinstance(module, cls)), None)  # parametrized ones too
        if getattr(module, "is_projected_lstm", False):  # edgeseq's loop for nn.LSTM(proj_size>0)
            kind = "lstm"
        if kind is None:
            continue
        label = name or kind
        if module.bidirectional:
            raise UnsupportedModelError(
                f"refused --streaming: layer '{label}' is a bidirectional nn.{type(module).__name__}; its backward "
                "direction reads the sequence from the end, so it cannot run step by step. Export without "
                "--streaming (use --lengths for padded batches), or use a unidirectional layer"
            )
        layers.append(RecurrentLayer(label, kind, module, module.num_layers, module.hidden_size,
                                     proj_size=int(getattr(module, "proj_size", 0) or 0)))
    if not layers and required:
        from .scripted import cell_names

        cells = cell_names(model)
        if cells:
            raise UnsupportedModelError(
                f"refused --streaming: layer '{cells[0]}' is an nn.{type(model.get_submodule(cells[0])).__name__} stepped "
                "in a Python loop; its state lives in forward's local variables, which an exported file cannot take "
                "in or hand back. Export without --streaming, or step an nn.LSTM/nn.GRU over the sequence instead "
                "(a cell's weights load into a one-layer nn.LSTM/nn.GRU as weight_ih_l0, weight_hh_l0, bias_ih_l0, "
                "bias_hh_l0)")
        raise UnsupportedModelError(
            "refused --streaming: the model has no nn.LSTM/nn.GRU/nn.RNN layer (or causal nn.Conv1d over time), "
            "so there is no state to carry"
        )
    return layers


class _StateRouter:
    """Replaces each recurrent layer's forward so its state comes from, and goes back to, the wrapper."""

    def __init__(self, layers: list[RecurrentLayer], example_batch: int) -> None:
        self.layers = layers
        self.example_batch = example_batch
        self.incoming: dict[str, Any] = {}
        self.outgoing: dict[str, Any] = {}
        self.lengths: Any = None  # per-sample lengths of the chunk, for carried convolution context
        self.probing = False

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        for layer in self.layers:
            layer.module.forward = self._forward_for(layer)
        try:
            yield
        finally:
            for layer in self.layers:
                layer.module.__dict__.pop("forward", None)

    def _forward_for(self, layer: RecurrentLayer | ConvLayer) -> Callable[..., Any]:
        if isinstance(layer, ConvLayer):
            return self._conv_forward_for(layer)
        original = type(layer.module).forward.__get__(layer.module)

        def forward(input: Any, hx: Any = None) -> Any:
            if self.probing:
                self._probe(layer, input, hx)
            state = self.incoming[layer.name]
            out, new_state = original(input, state if layer.kind == "lstm" else state[0])
            self.outgoing[layer.name] = list(new_state) if layer.kind == "lstm" else [new_state]
            return out, new_state

        return forward

    def _conv_forward_for(self, layer: ConvLayer) -> Callable[..., Any]:
        def forward(input: Any) -> Any:
            if self.probing:
                layer.calls += 1
                if layer.calls > 1:
                    raise UnsupportedModelError(f"refused --streaming: layer '{layer.name}' runs {layer.calls} times in "
                                                "one forward; carried context needs each convolution to run once")
            out, new_state = layer.step(input, self.incoming[layer.name][0], self.lengths)
            self.outgoing[layer.name] = [new_state]
            return out

        return forward

    def _probe(self, layer: RecurrentLayer, input: Any, hx: Any) -> None:
        import torch
        from torch.nn.utils.rnn import PackedSequence

        layer.calls += 1
        if layer.calls > 1:
            raise UnsupportedModelError(
                f"refused --streaming: layer '{layer.name}' runs {layer.calls} times in one forward; a carried state "
                "needs each recurrent layer to run once per step"
            )
        if isinstance(input, PackedSequence):
            raise UnsupportedModelError(
                f"refused --streaming: layer '{layer.name}' receives a PackedSequence; streaming feeds fixed chunks, "
                "so call the model without lengths (padding) during export"
            )
        if input.dim() != 3:
            raise UnsupportedModelError(f"refused --streaming: layer '{layer.name}' gets an unbatched input "
                                        f"of shape {tuple(input.shape)}; streaming needs (batch, seq, features)")
        batch = input.shape[0] if layer.module.batch_first else input.shape[1]
        if batch != self.example_batch:
            raise UnsupportedModelError(
                f"refused --streaming: layer '{layer.name}' runs over a batch of {batch} rows for an input batch of "
                f"{self.example_batch}; its state cannot be carried per sample"
            )
        given = [hx] if isinstance(hx, torch.Tensor) else list(hx or [])
        per_sample = [t[:, 0].detach().clone() for t in given]
        same = all(torch.equal(t, first.unsqueeze(1).expand_as(t)) for t, first in zip(given, per_sample))
        seen = layer.initial
        if not same or (seen is not None and (len(seen) != len(per_sample) or not all(
                torch.equal(a, b) for a, b in zip(seen, per_sample)))):
            raise UnsupportedModelError(
                f"refused --streaming: the model passes layer '{layer.name}' an initial state that depends on the "
                "input; streaming starts each stream from one fixed state and carries it. Pass no state, zeros, or "
                "a learned state that is the same for every sample")
        layer.initial = per_sample


def _make_wrapper(model: Any, router: _StateRouter, n_data: int, arg_names: list[str], with_lengths: bool = False) -> Any:
    import torch.nn as nn

    class StreamingWrapper(nn.Module):
        """forward(*data, [lengths,] *states) -> (*model outputs, *final states)."""

        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, *args: Any) -> tuple[Any, ...]:
            router.lengths = args[n_data] if with_lengths else None
            flat = list(args[n_data + int(with_lengths):])
            for layer in router.layers:
                k = len(layer.state_names)
                router.incoming[layer.name], flat = flat[:k], flat[k:]
            out = parity.flatten_outputs(self.model(*args[:n_data]))
            states = [t for layer in router.layers for t in router.outgoing[layer.name]]
            return (*out, *states)

    # torch.export matches dynamic_shapes to forward's parameters by signature: spell out one per input
    params = [inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD) for n in arg_names]
    StreamingWrapper.forward.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD), *params])
    return StreamingWrapper().eval()


def _export_streaming_candidate(model: Any, spec: InputSpec, examples: list[Any], folder: Path, exporter: str,
                                opset: int | None, say: Callable[[str], None], lengths: bool = False
                                ) -> tuple[Path, str, int, list[Any], list[str], list[str], list[str]]:
    """Export the wrapped model; return (file, exporter, opset, layers, data outputs, attempts, names of the
    layers that mix time steps and carry no state)."""
    import torch

    from .exporter import _EXPORT_FUNCS, _error_text

    onnx = require("onnx", "export")
    info = spec.inputs[0]
    batch = int(examples[0].shape[info.batch_axis]) if info.batch_axis is not None else 1
    longer = [torch.from_numpy(np.ascontiguousarray(a)) for a in spec.random(batch, spec.example_length + 3, seed=3)]
    convs, mixing = conv_layers(model, examples, longer, batch)
    try:
        layers: list[Any] = [*recurrent_layers(model, required=not convs), *convs]
    except UnsupportedModelError as exc:
        if not mixing or convs:
            raise
        raise UnsupportedModelError(
            f"{exc}. Its layers over time ({', '.join(mixing[:4])}) are not plain causal nn.Conv1d: edgeseq carries "
            "the context of an nn.Conv1d that the model pads on the left (F.pad) or crops on the right (TCN "
            "chomp), not of one that pads, crops or strides in its own forward") from None
    if convs:
        say("carrying the left context of causal convolution(s) over time: "
            + ", ".join(f"'{c.name}' ({c.context} steps, {c.mode})" for c in convs))
    router = _StateRouter(layers, batch)
    states = {layer.name: layer.example_state(batch) for layer in layers}
    with router.installed(), torch.inference_mode():
        router.probing = True
        try:
            for layer in layers:
                router.incoming[layer.name] = [torch.zeros_like(t) for t in states[layer.name]]
            model(*examples)
            # again on other values: a learned initial state must not depend on the input
            for layer in layers:
                layer.calls = 0
                router.incoming[layer.name] = [torch.zeros_like(t) for t in states[layer.name]]
            model(*longer)
        finally:
            router.probing = False
    for layer in layers:  # zeros (or no state) are what a stream starts from anyway
        if isinstance(layer, RecurrentLayer) and not any(bool(torch.count_nonzero(t)) for t in layer.initial or []):
            layer.initial = None
    unused = [layer.name for layer in layers if layer.calls == 0]
    layers = [layer for layer in layers if layer.calls == 1]
    if unused:
        say(f"  layers never called in forward (no state carried): {', '.join(unused)}")
    router.layers = layers
    data_outputs = parity.output_names(model(*examples), [i.name for i in spec.inputs] + [LENGTHS_INPUT])
    state_infos = [InputInfo(layer.io_name(w, "in"), "float32", [layer.num_layers, batch, layer.state_size(w)],
                             batch_axis=1, seq_axis=None, dynamic={1: "batch"})
                   for layer in layers for w in layer.state_names]
    # with --lengths, a carried convolution context follows each sample's length: the wrapper takes the
    # lengths input itself (add_lengths_input then also wires it into the recurrent nodes)
    with_lengths = lengths and any(isinstance(layer, ConvLayer) for layer in layers)
    length_infos = [InputInfo(LENGTHS_INPUT, "int64", [batch], batch_axis=0, seq_axis=None,
                              dynamic={0: "batch"})] if with_lengths else []
    full_spec = InputSpec(list(spec.inputs) + length_infos + state_infos)
    wrapper = _make_wrapper(model, router, len(examples), [re.sub(r"\W", "_", n) for n in full_spec.names],
                            with_lengths)
    steps = int(examples[0].shape[info.seq_axis]) if info.seq_axis is not None else 1
    full_lengths = [torch.full((batch,), steps, dtype=torch.int64)] if with_lengths else []
    full_examples = list(examples) + full_lengths + [t for layer in layers for t in states[layer.name]]
    outputs = data_outputs + [layer.io_name(w, "out") for layer in layers for w in layer.state_names]
    order = ["torchscript", "dynamo"] if exporter == "auto" else [exporter]
    attempts: list[str] = []
    for name in order:
        version = opset or DEFAULT_OPSET[name]
        candidate = folder / f"stream-{name}.onnx"
        say(f"exporting the streaming graph with the {name} exporter (opset {version}) ...")
        try:
            with router.installed():
                _EXPORT_FUNCS[name](wrapper, full_examples, candidate, full_spec, outputs, version)
        except EdgeseqError:
            raise
        except Exception as exc:
            attempts.append(f"{name}: export failed: {_error_text(exc)}")
            say(f"  {attempts[-1]}")
            continue
        proto = onnx.load(str(candidate))
        try:
            onnx.checker.check_model(proto)
        except Exception as exc:
            attempts.append(f"{name}: invalid ONNX: {str(exc).splitlines()[0][:200]}")
            continue
        problems = graph_problems(proto, full_spec, model)
        missing = sorted(set(full_spec.names) - {i.name for i in proto.graph.input})
        if missing:
            problems.append(f"state input(s) {', '.join(missing)} were dropped from the graph")
        if problems:
            attempts.append(f"{name}: {'; '.join(problems)}")
            say(f"  {attempts[-1]}")
            continue
        return candidate, name, written_opset(proto) or version, layers, data_outputs, attempts, mixing
    raise ExportError("no exporter produced a streaming graph: " + " | ".join(attempts))


def _name_state_batch_dims(proto: Any, data: InputInfo, layers: list[Any]) -> None:
    """Spell out the state tensors' shapes: ``[layers, <the data input's batch dim>, size]`` (the exporters
    invent names for dims they cannot infer, e.g. of a reshaped convolution context)."""
    dims = next(i for i in proto.graph.input if i.name == data.name).type.tensor_type.shape.dim
    batch = dims[data.batch_axis].dim_param if data.batch_axis is not None else ""
    shapes = {layer.io_name(w, d): (layer.num_layers, layer.state_size(w))
              for layer in layers for w in layer.state_names for d in ("in", "out")}
    for value in [*proto.graph.input, *proto.graph.output]:
        state_dims = value.type.tensor_type.shape.dim
        if value.name not in shapes or len(state_dims) != 3:
            continue
        state_dims[0].dim_value, state_dims[2].dim_value = shapes[value.name]
        if batch:
            state_dims[1].dim_param = batch


def verify_streaming(path: str | Path, model: Any, spec: InputSpec, axes: dict[str, dict[str, int | None]],
                     chunks: Sequence[int] = STREAM_CHUNKS, length: int = STREAM_CHECK_LENGTH, batch: int = 3,
                     tol: Tolerance | None = None, seed: int = 0) -> parity.ParityReport:
    """Step a streaming file through one random sequence in chunks of each size (and whole) vs PyTorch.

    Outputs with a sequence axis are compared with PyTorch on the whole sequence (the chunk's steps);
    outputs without one (e.g. a head on ``out[:, -1]``) with PyTorch on the sequence up to the chunk's end.
    """
    import torch

    from ..runtime.streaming import StreamingSession

    tol = tol or tolerance_for("float32")
    info = spec.inputs[0]
    sa = info.seq_axis if info.seq_axis is not None else 1
    x, *static_arrays = spec.random(batch, length, seed=seed)  # static: per-sample inputs without a time axis
    static = dict(zip(spec.names[1:], static_arrays))
    prefix: dict[int, list[np.ndarray] | str] = {}

    def ref_at(end: int) -> list[np.ndarray] | str:
        if end not in prefix:
            try:
                with torch.inference_mode():
                    out = model(torch.from_numpy(np.ascontiguousarray(np.take(x, range(end), axis=sa))),
                                *[torch.from_numpy(a) for a in static_arrays])
                prefix[end] = [t.numpy() for t in parity.flatten_outputs(out)]
            except Exception as exc:  # the model itself rejects this length (e.g. a kernel longer than it)
                prefix[end] = f"PyTorch rejects length {end}: {str(exc).strip().splitlines()[0][:120]}"
        return prefix[end]

    whole = ref_at(length)
    session = StreamingSession(path, device="cpu", threads=1, allow_nonfinite=True)
    names = session.output_names
    for i, n in enumerate(names):  # a per-step output with fewer steps than the input: pooled or strided over time
        seq_axis = axes[n]["seq_axis"]
        if seq_axis is not None and not isinstance(whole, str) and whole[i].shape[seq_axis] != length:
            raise UnsupportedModelError(
                f"refused --streaming: output {n!r} has {whole[i].shape[seq_axis]} steps for {length} input steps"
                f"{resolution_layers(model)}: a chunk's outputs cannot line up with its steps; export without "
                "--streaming, or keep one output per step (stride 1, no pooling over time)")
    cases: list[parity.ParityCase] = []
    for chunk in sorted(set(chunks) | {length}):
        session.reset()
        worst = {n: parity.ParityCase(batch, chunk, n) for n in names}
        for start in range(0, length, chunk):
            end = min(start + chunk, length)
            try:
                got = session.run_step(np.take(x, range(start, end), axis=sa), **static)
            except EdgeseqError as exc:
                cases.append(parity.ParityCase(batch, chunk, "*", math.inf, math.inf, -math.inf, False,
                                               note=f"ONNX Runtime failed at step {end}: {exc}"[:240]))
                break
            for i, n in enumerate(names):
                seq_axis = axes[n]["seq_axis"]
                ref = whole if seq_axis is not None else ref_at(end)
                if isinstance(ref, str):
                    worst[n] = parity.ParityCase(batch, chunk, n, math.inf, math.inf, -math.inf, False, note=ref)
                    continue
                r = ref[i] if seq_axis is None else np.take(ref[i], range(start, end), axis=seq_axis)
                max_abs, max_rel, sqnr, ok, note = parity.compare(got[n], r, tol)
                case = worst[n]
                if (case.passed and not ok) or (case.passed == ok and max_abs > case.max_abs):
                    worst[n] = parity.ParityCase(batch, chunk, n, max_abs, max_rel, sqnr, ok,
                                                 note=note or ("" if ok else f"at step {end}"))
        else:
            cases.extend(worst.values())
    return parity.ParityReport(cases, tol.atol, tol.rtol, "float32", extra={"check": "streaming"})


def forgets_early_steps(path: str | Path, model: Any, spec: InputSpec, length: int = STREAM_CHECK_LENGTH,
                        seed: int = 0) -> str | None:
    """Why the stream cannot match a model whose answer at ``length`` steps ignores its first step, or None.

    Such a model (a window ``x[:, -16:]`` taken in ``forward``) passes the chunked comparison when the first
    step's trace in the state has decayed below the tolerance, as it does with untrained weights. Changing
    step 0 tells: PyTorch's last outputs stay bit-identical, the stream's move.
    """
    import torch

    from ..runtime.streaming import StreamingSession

    info = spec.inputs[0]
    sa = info.seq_axis if info.seq_axis is not None else 1
    x, *static_arrays = spec.random(2, length, seed=seed)
    other = x.copy()
    first = [slice(None)] * x.ndim
    first[sa] = slice(0, 1)
    other[tuple(first)] = spec.random(2, length, seed=seed + 1)[0][tuple(first)] * 3
    static = dict(zip(spec.names[1:], static_arrays))
    try:
        with torch.inference_mode():
            ref = [[t.numpy() for t in parity.flatten_outputs(
                model(torch.from_numpy(a), *[torch.from_numpy(s) for s in static_arrays]))] for a in (x, other)]
    except Exception:  # noqa: BLE001 - the chunked check already ran the model; nothing more to learn here
        return None
    if not all(np.array_equal(a, b) for a, b in zip(*ref)):
        return None  # step 0 reaches the answer, as it reaches a stream's state
    session = StreamingSession(path, device="cpu", threads=1, allow_nonfinite=True)
    streamed = []
    for a in (x, other):  # one step at a time: a chunk as long as the window would slice it like forward does
        session.reset()
        for t in range(length):
            outs = session.run_step(np.take(a, [t], axis=sa), **static)
        streamed.append([np.asarray(outs[n]) for n in session.output_names])
    moved = max(float(np.abs(a - b).max()) if a.size else 0.0 for a, b in zip(*streamed))
    scale = max(float(np.abs(r).max()) if r.size else 0.0 for r in ref[0])
    if moved <= 1e-6 * max(scale, 1.0):
        return None  # both forget it alike (strongly decaying state): nothing a stream would get wrong
    return (f"changing step 0 of a {length}-step sequence leaves PyTorch's outputs unchanged but moves the "
            f"stream's by {moved:.2g}")


def verify_streaming_lengths(path: str | Path, model: Any, spec: InputSpec, axes: dict[str, dict[str, int | None]],
                             chunk: int = 3, chunks: int = 4, batch: int = 3, tol: Tolerance | None = None,
                             seed: int = 0) -> parity.ParityReport:
    """Step a ``--streaming --lengths`` file in chunks where each sample advances by its own number of steps
    (the rest of its chunk is noise), against PyTorch on each sample's own steps so far."""
    import torch

    from ..runtime.streaming import StreamingSession

    tol = tol or tolerance_for("float32")
    info = spec.inputs[0]
    sa, ba = info.seq_axis if info.seq_axis is not None else 1, info.batch_axis or 0
    rng = np.random.default_rng(seed)
    x, *static_arrays = spec.random(batch, chunk * chunks, seed=seed)  # static: per-sample inputs (forward(x, meta))
    static = dict(zip(spec.names[1:], static_arrays))
    steps = rng.integers(1, chunk + 1, size=(chunks, batch))
    steps[0, 0] = chunk  # one sample uses whole chunks: the others must not disturb it
    session = StreamingSession(path, device="cpu", threads=1, allow_nonfinite=True)
    names = session.output_names
    own: list[list[np.ndarray]] = [[] for _ in range(batch)]
    cases: list[parity.ParityCase] = []
    for k in range(chunks):
        part = np.take(x, range(k * chunk, (k + 1) * chunk), axis=sa)
        outs = session.run_step(part, lengths=steps[k], **static)
        for b in range(batch):
            mine = np.take(np.take(part, [b], axis=ba), range(int(steps[k, b])), axis=sa)
            own[b].append(mine)
            whole = np.concatenate(own[b], axis=sa)
            others = sample_of_others(spec, [x, *static_arrays], b)
            with torch.inference_mode():
                tensors = [torch.from_numpy(np.ascontiguousarray(a)) for a in (whole, *others)]
                ref = [t.numpy() for t in parity.flatten_outputs(model(*tensors))]
            for i, n in enumerate(names):
                got = np.take(outs[n], [b], axis=axes[n]["batch_axis"] or 0)
                want, seq_axis = ref[i], axes[n]["seq_axis"]
                if seq_axis is not None:  # this chunk's valid steps vs the same steps of the whole
                    got = np.take(got, range(int(steps[k, b])), axis=seq_axis)
                    want = np.take(want, range(want.shape[seq_axis] - int(steps[k, b]), want.shape[seq_axis]),
                                   axis=seq_axis)
                max_abs, max_rel, sqnr, ok, note = parity.compare(got, want, tol)
                cases.append(parity.ParityCase(batch, chunk, n, max_abs, max_rel, sqnr, ok,
                                               note=note or ("" if ok else f"sample {b}, chunk {k + 1}")))
    return parity.ParityReport(cases, tol.atol, tol.rtol, "float32", extra={"check": "streaming-lengths"})


def _streaming_refusal(report: parity.ParityReport, mixing: list[str]) -> UnsupportedModelError:
    worst = report.worst
    if mixing:
        hint = (f"; layers that look across time steps: {', '.join(mixing[:4])} (a convolution over time streams "
                "only when it is causal: nn.Conv1d(padding=0) after F.pad(x, ((k-1)*dilation, 0)), or "
                "nn.Conv1d(padding=(k-1)*dilation) with its last (k-1)*dilation outputs dropped; a centred or strided "
                "one, or pooling over time, needs steps a chunk does not have)")
    else:
        hint = ("; the output at a step depends on later steps or on the whole window (for example scaling by the "
                "window's last value, or attention or pooling over the sequence)")
    what = worst.note if not math.isfinite(worst.max_abs) else f"max abs error {worst.max_abs:.3g} {worst.note}"
    return UnsupportedModelError(
        f"refused --streaming: stepping the model in chunks of {worst.length} changes output {worst.output!r} "
        f"vs PyTorch on the whole sequence ({what.strip()}){hint}. Export without --streaming"
    )


# ----------------------------------------------------------------------------------- entry point
def export_with_extras(
    ref_or_model: Any,
    output: str | Path,
    *,
    weights: str | Path | None = None,
    input_shape: Sequence[int] | None = None,
    dynamic_axes: Sequence[int] | None = None,
    time_first: bool | None = None,
    exporter: str = "auto",
    opset: int | None = None,
    check: bool = True,
    streaming: bool = False,
    lengths: bool = False,
    log: Callable[[str], None] | None = None,
    atol: float | None = None,
    rtol: float | None = None,
    allow_pickle: bool = False,
    source: str | None = None,
) -> ExportResult:
    """Export with carried state (``streaming``) and/or a ``lengths`` input, verified before writing.

    ``source``: the card's label for a model given already loaded (default: its reference, or class).

    >>> export_with_extras("models/motion_lstm.py:build", "m.onnx", streaming=True).card["state_inputs"]  # doctest: +SKIP
    ['lstm.h_in.0', 'lstm.h_in.1', 'lstm.c_in.0', 'lstm.c_in.1']
    """
    from .exporter import check_output_path, export

    check_output_path(output, ref_or_model, weights)

    require("torch", "export")
    onnx = require("onnx", "export")
    say = log or (lambda _msg: None)
    if exporter not in EXPORTERS:
        raise ExportError(f"unknown exporter {exporter!r}; choose one of {', '.join(EXPORTERS)}")
    if not streaming and not lengths:
        return export(ref_or_model, output, weights=weights, input_shape=input_shape, dynamic_axes=dynamic_axes,
                      time_first=time_first, exporter=exporter, opset=opset, check=check, log=log, atol=atol, rtol=rtol,
                      allow_pickle=allow_pickle)
    start = time.perf_counter()
    model, loaded_from = model_and_source(ref_or_model, weights, say, allow_pickle)
    source = source or loaded_from
    if time_first is None:
        time_first = detect_time_first(model, input_shape, dynamic_axes, say)
    packed_model = unpacked(model, time_first, input_shape, dynamic_axes)
    if packed_model is not None and not packed_model.packs:
        raise UnsupportedModelError(f"refused --{'streaming' if streaming else 'lengths'}: forward takes per-sample "
                                    f"lengths ({packed_model.packed_parameter!r}) and reads them itself; export it "
                                    "without the flag, which gives the file a lengths input read the same way")
    if packed_model is not None:  # forward(x, lengths) packs x: export forward(x) with a lengths input
        model, packed_model = packed_model, model
        model.probe = not streaming  # a streaming graph carries state instead; its lengths reach sequence_lens only
        say(f"note: forward packs its input with {model.packed_parameter!r} (pack_padded_sequence), which torch.onnx "
            "cannot trace: exported with a 'lengths' input instead (as --lengths), checked against forward's own "
            "packing")
        lengths = True
    check_supported(model, projections=not lengths)  # a projected LSTM streams as a loop; lengths need native nodes
    spec, examples = runnable_signature(model, input_shape, dynamic_axes, time_first, say)
    timed = [i.name for i in spec.inputs[1:] if i.seq_axis is not None]
    if len(spec.inputs) != 1 and timed:
        own = [i.name for i in spec.inputs[1:] if i.own_length]
        why = (f"{', '.join(own)} has a length of its own (an encoder-decoder's target?); export it without the flag"
               if own else f"{', '.join(timed)} also has a time axis")
        flag = "--streaming" if streaming else "--lengths"
        raise UnsupportedModelError(f"refused {flag}: it needs one sequence input, and {why}")
    if spec.inputs[0].batch_axis is None or spec.inputs[0].seq_axis is None:
        raise UnsupportedModelError("refused: --streaming/--lengths need dynamic batch and sequence axes; "
                                    "drop --dynamic-axes or include both")
    check_layout(model, spec, time_first, say)
    check_batch_not_fixed(model, spec)
    only = runs_at_one_length_only(model, spec)
    if only:
        raise UnsupportedModelError(
            f"refused --{'streaming' if streaming else 'lengths'}: the model runs at {spec.example_length} steps only "
            f"(PyTorch fails {only}), so it cannot take chunks or padded batches; export it without the flag "
            "(with a fixed length)")
    if lengths:
        check_lengths_layers(model)
    if streaming:
        check_not_frozen(model, spec)  # (without --streaming, export() below checks it)
    base_tol = tolerance_for("float32")
    tol = base_tol.overridden(atol, rtol)
    with tempfile.TemporaryDirectory(prefix="edgeseq-extras-") as tmp:
        folder = Path(tmp)
        report = None
        attempts: list[str] = []
        if streaming:
            candidate, used, version, layers, data_outputs, attempts, mixing = _export_streaming_candidate(
                with_projected_lstms(model, say), spec, examples, folder, exporter, opset, say, lengths)
            exported = onnx.load(str(candidate))
            _name_state_batch_dims(exported, spec.inputs[0], layers)
            base_card = build_card(spec, data_outputs, used, version, source, None, time_first)
            raw_nodes = node_count(exported)
        else:
            mixing = []
            base = folder / "base.onnx"
            result = export(model, base, input_shape=input_shape, dynamic_axes=dynamic_axes, time_first=time_first,
                            exporter=exporter, opset=opset, check=check, atol=atol, rtol=rtol,
                            log=lambda m: None if m.startswith("wrote ") else say(m))  # not the temp file
            used, attempts, report = result.exporter, result.attempts, result.report
            exported = onnx.load(str(base))
            base_card = dict(result.card, source=source)
            data_outputs = base_card["outputs"]
            raw_nodes = (base_card.get("graph_cleanup") or {}).get("nodes", [node_count(exported)])[0]
        axes_by_pos = output_axes(model, spec)
        axes = {n: axes_by_pos[i] for i, n in enumerate(data_outputs)}
        merged = merged_axes(axes)
        if merged:  # chunks and padded samples are cut along an axis that is not the time axis alone
            raise UnsupportedModelError(f"refused --{'streaming' if streaming else 'lengths'}: "
                                        f"{merged_axes_message(merged[0])}")
        base_report = report
        for clean in (True, False):  # the cleaned graph first; the graph as exported if only cleanup breaks it
            proto = onnx.ModelProto()
            proto.CopyFrom(exported)
            card = dict(base_card)
            by: list[str] = list((base_card.get("graph_cleanup") or {}).get("by", []))  # the base export's
            did = False
            if streaming:
                packed = [(st["input"], st["output"], layer.num_layers) for layer in layers
                          for st in layer.to_card()["states"]]
                parts = split_layer_states(proto, packed) if clean else {}
                if parts:
                    by.append("per-layer state")
                    did = True
                entries = [layer.to_card(parts) for layer in layers]
                states = [st for entry in entries for st in entry["states"]]
                card["state_inputs"] = [x["input"] for st in states for x in st.get("parts", [st])]
                card["state_outputs"] = [x["output"] for st in states for x in st.get("parts", [st])]
                card["streaming"] = {"layers": entries}
            if lengths:
                info = spec.inputs[0]
                count = add_lengths_input(proto, LENGTHS_INPUT, info.name, info.batch_axis or 0, reuse=True)
                say(f"added input {LENGTHS_INPUT!r} -> sequence_lens of {count} recurrent node(s)")
                card["lengths_input"] = LENGTHS_INPUT
                if packed_model is not None:
                    card["packed_by"] = model.packed_parameter  # forward's own lengths parameter
            if clean:
                proto, slim = simplify(proto, say)
                did = did or slim is not None
                by += [slim] if slim and slim not in by else []
            card["output_axes"] = {n: card_axes(a) for n, a in axes.items()}
            name_output_dims(proto, data_outputs, axes_by_pos, spec.inputs[0])
            card["graph_cleanup"] = cleanup_record(raw_nodes, proto, by)
            set_card(proto, card)
            candidate = folder / "final.onnx"
            onnx.save(proto, str(candidate))
            if not check:
                break
            report, refusal = _check_extras(candidate, model, spec, axes, streaming, lengths, base_report, tol, say,
                                            mixing, packed=packed_model)
            if refusal is None:
                break
            if not (clean and did):
                raise refusal
            say(f"  the cleaned graph ({', '.join(by)}) fails the check; checking the graph as exported ...")
        if by:
            say(f"graph cleanup ({', '.join(by)}): {raw_nodes} -> {node_count(proto)} nodes")
        summary = (dict(report.summary(), check=report.extra.get("check", "parity")) if report
                   else {"passed": None, "note": "skipped (--no-check)"})
        card = update_card(proto, parity=summary)
        out_path = Path(output)
        with atomic_path(out_path) as tmp_out:
            onnx.save(proto, str(tmp_out))
    say(f"wrote {out_path} ({out_path.stat().st_size / 1024:.0f} KiB) with the {used} exporter")
    return ExportResult(out_path, used, card, report, attempts, time.perf_counter() - start)


def _check_extras(path: Path, model: Any, spec: InputSpec, axes: dict[str, dict[str, int | None]], streaming: bool,
                  lengths: bool, base_report: parity.ParityReport | None, tol: Tolerance, say: Callable[[str], None],
                  mixing: list[str] | None = None, packed: Any = None
                  ) -> tuple[parity.ParityReport | None, EdgeseqError | None]:
    """Streaming and lengths checks of the file at ``path``: (report, None), or (None, the refusal to raise).
    ``packed``: the model whose ``forward(x, lengths)`` packs, to check the file against."""
    report = None if streaming else base_report
    if streaming:
        say(f"checking streaming: chunks of {', '.join(map(str, STREAM_CHUNKS))} and the whole sequence "
            f"({STREAM_CHECK_LENGTH} steps) vs PyTorch ...")
        report = verify_streaming(path, model, spec, axes, tol=tol)
        if not report.passed:
            return None, _streaming_refusal(report, mixing or [])
        window = forgets_early_steps(path, model, spec)
        if window:
            return None, UnsupportedModelError(
                f"refused --streaming: {window}: the model looks at a window of the latest steps (such as "
                "x[:, -16:]), while a stream carries every step it was given. Export without --streaming and run "
                "each window with Session.predict")
    if lengths:
        say(f"checking lengths: a padded batch vs each sample alone ({LENGTHS_CHECK_LENGTH} steps) ...")
        len_report = verify_lengths(path, model, spec, axes, tol=tol)
        if not len_report.passed:
            return None, (lengths_refusal(len_report, model) if packed is None else _packed_refusal(len_report))
        report = _merge(report, len_report)
    if packed is not None:
        say("checking the lengths input against forward's own packing (a padded batch, lengths 12, 11, 6, 1) ...")
        pk = verify_packed(path, packed, spec, axes, tol=tol)
        if not pk.passed:
            return None, _packed_refusal(pk)
        report = _merge(report, pk)
    if streaming and lengths:
        say("checking streaming with per-sample lengths: chunks where samples advance by different steps ...")
        mixed = verify_streaming_lengths(path, model, spec, axes, tol=tol)
        if not mixed.passed:
            worst = mixed.worst
            return None, UnsupportedModelError(
                f"refused --streaming --lengths: with per-sample lengths inside a chunk, output {worst.output!r} "
                f"differs from PyTorch on each sample's own steps ({worst.note or f'max abs error {worst.max_abs:.3g}'})"
                ". Export with --streaming (chunks of one length for every sample) or with --lengths")
        report = _merge(report, mixed)
    return report, None


def _packed_refusal(report: parity.ParityReport) -> UnsupportedModelError:
    worst = report.worst
    return UnsupportedModelError(
        f"refused: with a lengths input in place of forward's own packing, output {worst.output!r} differs for "
        f"{worst.note} (max abs error {worst.max_abs:.3g}): the result depends on the padded length itself (for "
        "example a mean over pad_packed_sequence's output, which ends at the longest sample: pass "
        "total_length=x.size(1) and divide by the lengths) or on the padding's values")


def _merge(a: parity.ParityReport | None, b: parity.ParityReport) -> parity.ParityReport:
    if a is None:
        return b
    label = f"{a.extra.get('check', 'parity')}+{b.extra.get('check', 'parity')}"
    return parity.ParityReport(a.cases + b.cases, b.atol, b.rtol, b.precision, extra={"check": label})

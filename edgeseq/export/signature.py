"""Work out a PyTorch model's input signature: declared, given on the command line, or inferred.

Order of precedence: ``input_shape`` argument > the model's ``example_inputs()`` method >
inference from the first layer (``nn.Embedding`` -> int64 ids, ``nn.LSTM``/``GRU``/``RNN``
-> ``input_size`` features, ``nn.Conv1d`` -> ``in_channels``, ``nn.Linear`` -> ``in_features``).

A model declares its own example input like this::

    class MyModel(nn.Module):
        def example_inputs(self):
            return (torch.zeros(2, 100, 6),)      # (batch, seq, features)
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

from ..errors import ExportError, UnsupportedModelError
from ..inputs import InputInfo, InputSpec

DEFAULT_EXAMPLE_LENGTH = 8
# a forward parameter that carries the recurrent state (``forward(x, hidden)``, ``forward(x, prev_state)``)
STATE_PARAMETER = re.compile(r"hidden|state|carry|^(h|hx|h0|h_0|hc|h_c)$", re.I)
DEFAULT_EXAMPLE_BATCH = 2


def first_layer(model: Any, skip: Any = None) -> Any | None:
    """The first leaf module that fixes the input's meaning (embedding, recurrent, conv, linear), ``skip`` aside."""
    import torch.nn as nn

    kinds = (nn.Embedding, nn.EmbeddingBag, nn.LSTM, nn.GRU, nn.RNN, nn.LSTMCell, nn.GRUCell, nn.RNNCell, nn.Conv1d,
             nn.Linear)
    names = {k.__name__ for k in kinds}
    for module in model.modules():
        # TorchScript keeps a submodule's class name in ``original_name`` and its size attributes
        if module is not skip and (isinstance(module, kinds) or getattr(module, "original_name", None) in names):
            return module
    return None


def embedding_reads_input(model: Any, embedding: Any, example: Any) -> bool | None:
    """Whether ``embedding`` looks up the model's input itself, rather than positions it builds (a learned
    position table over ``torch.arange(T)`` added to float features): one call, watching what it is given;
    None when the call failed before reaching it."""
    import torch

    seen: list[Any] = []
    hook = embedding.register_forward_pre_hook(lambda _m, args: seen.append(args[0] if args else None))
    try:
        with torch.inference_mode():
            model(example)
    except Exception:  # noqa: BLE001 - ids fed to a float model fail after the lookup; what it was given is known
        pass
    finally:
        hook.remove()
    if not seen:
        return None  # never reached: the model failed on ids before any lookup
    given = seen[0]
    if not isinstance(given, torch.Tensor):
        return False
    if given.untyped_storage().data_ptr() == example.untyped_storage().data_ptr():
        return True  # the input itself, or a view of it (reshaped, sliced)
    return given.numel() == example.numel() and bool(torch.equal(given.flatten(), example.flatten()))


def vocab_size(model: Any) -> int | None:
    import torch.nn as nn

    for module in model.modules():
        if isinstance(module, (nn.Embedding, nn.EmbeddingBag)) or getattr(module, "original_name", None) in (
                "Embedding", "EmbeddingBag"):
            return embedding_rows(module)
    return None


def embedding_rows(module: Any) -> int:
    """An embedding's row count; a traced TorchScript one keeps no ``num_embeddings``, only its weight."""
    rows = getattr(module, "num_embeddings", None)
    return int(rows) if rows is not None else int(module.weight.shape[0])


def check_supported(model: Any, projections: bool = True) -> None:
    """Refuse layers edgeseq cannot export, naming the layer.

    A projected LSTM (``proj_size > 0``) has no native ONNX node; plain exports write it as a loop
    (:mod:`edgeseq.export.projected`), but a carried state or a lengths input needs the native node
    (``projections=False``).
    """
    import torch.nn as nn

    for name, module in model.named_modules():
        kind = type(module).__module__
        if kind.startswith(("torch.ao.nn.quantized", "torch.nn.quantized", "torch.ao.nn.intrinsic.quantized")):
            raise UnsupportedModelError(
                f"refused: layer '{name or 'model'}' is {kind}.{type(module).__name__}, already quantized in PyTorch "
                "(torch.ao.quantization, e.g. quantize_dynamic), which torch.onnx cannot export: export the float "
                "model (before quantizing it), then quantize the file with edgeseq quantize (INT8 like quantize_dynamic, "
                "checked against the float model)")
        if isinstance(module, nn.LSTM) and getattr(module, "proj_size", 0) and not projections:
            raise UnsupportedModelError(
                f"layer '{name}' is nn.LSTM(proj_size={module.proj_size}): ONNX's LSTM operator has no projection, "
                "so --lengths, which needs the native LSTM node, cannot take it; export it without --lengths"
            )


def check_not_frozen(model: Any, spec: InputSpec) -> None:
    """Refuse a model that ignores the steps after some length in PyTorch itself (its length is frozen).

    The parity gate compares ONNX with PyTorch, so it cannot see a length frozen in the PyTorch
    model: ``torch.jit.trace`` of a loop over time, for one, unrolls it at the traced length and later
    steps are then silently ignored, in PyTorch and in the exported file alike.  The test: redrawing
    the steps after the example's length changes nothing at a longer length, though redrawing the
    example's own later steps changes its output.  Whole tails are redrawn,
    not one step: a model that max-pools over time may well ignore any single late step.
    """
    import torch

    from . import parity

    info = spec.inputs[0]
    if info.seq_axis is None or not info.dynamic:
        return
    short = max(spec.example_length, 1)
    long = 2 * short + 5

    def tail_matters(length: int, start: int) -> bool | None:
        arrays = spec.random(2, length, seed=11)
        changed = list(arrays)
        tail = [slice(None)] * arrays[0].ndim
        tail[info.seq_axis] = slice(start, length)
        changed[0] = arrays[0].copy()
        changed[0][tuple(tail)] = spec.random(2, length, seed=12)[0][tuple(tail)]
        try:
            with torch.inference_mode():
                a = parity.flatten_outputs(model(*[torch.from_numpy(x) for x in arrays]))
                b = parity.flatten_outputs(model(*[torch.from_numpy(x) for x in changed]))
        except Exception:  # noqa: BLE001 - a model that rejects this length is the parity gate's to report
            return None
        return any(x.shape != y.shape or not torch.equal(x, y) for x, y in zip(a, b))

    if tail_matters(short, short // 2) and tail_matters(long, short) is False:
        raise UnsupportedModelError(
            f"refused: the model ignores steps {short + 1}-{long} of a {long}-step input, though the late steps "
            f"of a {short}-step input change its output: its sequence length is frozen in PyTorch itself (for "
            "example torch.jit.trace unrolled a loop over time at one length), so every exported file would "
            "ignore late steps too. Save it with torch.jit.script, or export the Python model"
        )


def runs_at_one_length_only(model: Any, spec: InputSpec) -> str | None:
    """PyTorch's error at another length when the model runs at the example's length only, else None.

    Flattening every step into one ``nn.Linear`` (``fc(out.reshape(batch, -1))``) builds the length
    into the weights: such a model is exported with a fixed sequence length instead of a dynamic axis
    that would fail inside ONNX Runtime.  Both a shorter and a longer length must fail (a model that
    only rejects short inputs, like an unpadded convolution, keeps its dynamic axis).
    """
    info = spec.inputs[0]
    if info.seq_axis is None or info.seq_axis not in info.dynamic:
        return None
    short = spec.example_length
    errors = []
    for length in (short // 2 if short > 1 else 2, 2 * short + 5):
        error = _error_at(model, spec, 2, length)
        if error is None:
            return None
        errors.append(f"at {length} steps: {error}")
    return errors[0]


LONG_PROBE = 1024  # steps: a model that fails there but runs at its example length has a longest length


def longest_length(model: Any, spec: InputSpec) -> tuple[int, str] | None:
    """(the most steps the model runs on, PyTorch's error one step beyond) when it fails at
    :data:`LONG_PROBE` steps, else None. A learned position table (``nn.Embedding(32, d)`` over
    ``arange(x.size(1))``) runs up to its row count only; the file inherits that limit, which
    ``Session`` then states instead of ONNX Runtime's Gather error."""
    info = spec.inputs[0]
    if len(spec.inputs) != 1 or info.seq_axis is None or info.seq_axis not in info.dynamic:
        return None
    runs = max(spec.example_length, 1)
    if _error_at(model, spec, 1, LONG_PROBE) is None or _error_at(model, spec, 1, runs) is not None:
        return None
    fails = LONG_PROBE
    while fails - runs > 1:  # bisect: ~10 runs of at most LONG_PROBE steps at batch 1
        mid = (runs + fails) // 2
        if _error_at(model, spec, 1, mid) is None:
            runs = mid
        else:
            fails = mid
    return runs, str(_error_at(model, spec, 1, runs + 1))


def shortest_length(model: Any, spec: InputSpec) -> tuple[int, str] | None:
    """(the fewest steps the model runs on, PyTorch's error one step below) when that is more than 1, else
    None: a kernel or pooling window longer than the clip fails in PyTorch, while ONNX Runtime answers."""
    info = spec.inputs[0]
    if len(spec.inputs) != 1 or info.seq_axis is None or info.seq_axis not in info.dynamic:
        return None
    if _error_at(model, spec, 1, 1) is None:
        return None
    for steps in range(2, min(max(spec.example_length, 2), 64) + 1):
        if _error_at(model, spec, 1, steps) is None:
            return steps, str(_error_at(model, spec, 1, steps - 1))
    return None


def check_batch_not_fixed(model: Any, spec: InputSpec) -> None:
    """Refuse a model that runs at the example's batch size only (PyTorch fails at two others).

    The usual cause is a tensor of a fixed batch built in ``forward`` -- an initial state
    ``torch.zeros(1, 32, hidden)`` -- which no export can fix: the model itself must take the batch
    from its input.
    """
    info = spec.inputs[0]
    if info.batch_axis is None or info.batch_axis not in info.dynamic or info.batch_axis >= len(info.shape):
        return
    batch = int(info.shape[info.batch_axis])
    others = [b for b in (1, 2, 3, batch + 1) if b != batch][:2]
    length = spec.example_length
    errors = [_error_at(model, spec, b, length) for b in others]
    if all(errors):
        raise fixed_batch_refusal(batch, others[0], str(errors[0]))


_HIDDEN_SIZE = re.compile(r"Expected hidden(?:\[0\])? size \((\d+), (\d+), (\d+)\), got \[(\d+), (\d+), (\d+)\]")


def state_batch(failure: str) -> tuple[int, int] | None:
    """(batch the recurrent layer got, batch of the state it was given) from PyTorch's hidden-size error,
    when only the batch differs: an initial state built at a fixed batch in ``forward``."""
    m = _HIDDEN_SIZE.search(failure)
    if not m:
        return None
    want, got = [int(v) for v in m.groups()[:3]], [int(v) for v in m.groups()[3:]]
    return (want[1], got[1]) if want[0] == got[0] and want[2] == got[2] and want[1] != got[1] else None


def fixed_batch_refusal(batch: int, other: int, error: str) -> UnsupportedModelError:
    """The refusal for a model that runs at batch ``batch`` only (``error``: PyTorch's, at batch ``other``)."""
    why = ("assumes one sequence at a time (x.squeeze(0), a view with a fixed first dim): make it take a batch"
           if batch == 1 else f"builds a tensor of batch {batch}, such as an initial state torch.zeros(layers, "
           f"{batch}, hidden): build it from the input (x.size(0)) or pass no initial state")
    return UnsupportedModelError(f"refused: the model runs at batch {batch} only (PyTorch fails at batch "
                                 f"{other}: {error}); its forward probably {why}")


def _error_at(model: Any, spec: InputSpec, batch: int, length: int) -> str | None:
    """PyTorch's error (first line) running ``model`` on random inputs of that shape, or None if it runs."""
    import torch

    try:
        with torch.inference_mode():
            model(*[torch.from_numpy(a) for a in spec.random(batch, length, seed=5)])
    except Exception as exc:  # noqa: BLE001 - any failure in PyTorch itself counts
        return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
    return None


def output_axes(model: Any, spec: InputSpec) -> dict[int, dict[str, int | None]]:
    """For each model output (by position): which axis follows the batch and which the sequence length."""
    import torch

    from . import parity

    base = spec.fixed_length or max(spec.example_length, 4)
    own = {i.name: spec.length_of(i, base) for i in spec.inputs[1:] if i.own_length}
    # the length probe is twice the base and one more: a pooled axis (floor(T / 2)) may not move at base + 1
    probes = {"base": (2, base, own), "batch": (3, base, own), "seq": (2, 2 * base + 1, own), "one": (1, base, own)}
    if spec.fixed_length:
        probes["seq"] = probes["base"]  # one length only: no output axis follows it
    for name, steps in own.items():  # each input with a length of its own, varied alone
        probes[name] = (2, base, {**own, name: steps + 1})
    shapes = {}

    def run(b: int, t: int, lengths: dict[str, int]) -> list[tuple[int, ...]]:
        arrays = spec.random(b, t, seed=3, own_lengths=lengths)
        with torch.inference_mode():
            return [tuple(o.shape) for o in parity.flatten_outputs(model(*[torch.from_numpy(a) for a in arrays]))]

    for key, (b, t, lengths) in probes.items():
        try:
            shapes[key] = run(b, t, lengths)
        except Exception:  # noqa: BLE001 - a model with a longest length (a learned position table): one step more
            if key != "seq":
                raise
            shapes[key] = run(b, base + 1, lengths)
    axes: dict[int, dict[str, Any]] = {}
    for i, shape in enumerate(shapes["base"]):
        def changed(other: tuple[int, ...], shape: tuple[int, ...] = shape) -> int | None:
            diff = [a for a, (p, q) in enumerate(zip(shape, other)) if p != q]
            return diff[0] if len(diff) == 1 and len(other) == len(shape) else None

        axes[i] = {"batch_axis": changed(shapes["batch"][i]), "seq_axis": changed(shapes["seq"][i])}
        sa_out = axes[i]["seq_axis"]
        if sa_out is not None and shape[sa_out] != base:  # pooled or strided: its own number of steps
            axes[i]["seq_resampled"] = True
        if len(shapes["one"][i]) < len(shape):  # a bare .squeeze() took the batch axis with it
            axes[i]["drops_axes_at_batch_1"] = (shapes["one"][i], shape)
        follows = {name: changed(shapes[name][i]) for name in own}
        if any(a is not None for a in follows.values()):
            # an axis that follows another input's own length (a decoder's output follows its target)
            axes[i]["seq_of"] = {str(a): name for name, a in follows.items() if a is not None}
        # the other axes, where all runs agree: their sizes (a name the exporter made up becomes the number)
        taken = {axes[i]["batch_axis"], axes[i]["seq_axis"], *follows.values()}
        others = {a: d for a, d in enumerate(shape) if a not in taken
                  and all(len(shapes[k][i]) == len(shape) and shapes[k][i][a] == d for k in shapes if k != "one")}
        if others:
            axes[i]["fixed"] = {str(a): int(d) for a, d in others.items()}
    return axes


def card_axes(axes: dict[str, Any]) -> dict[str, int | None]:
    """An output's entry in the card's ``output_axes``: which axis follows the batch, which the length."""
    return {"batch_axis": axes.get("batch_axis"), "seq_axis": axes.get("seq_axis")}


def merged_axes(axes: dict[Any, dict[str, int | None]]) -> list[Any]:
    """Outputs (keys of ``axes``) whose batch and time share one axis, e.g. ``out.view(-1, hidden)``."""
    return [k for k, a in axes.items() if a.get("batch_axis") is not None and a.get("batch_axis") == a.get("seq_axis")]


def merged_axes_message(name: str) -> str:
    return (f"output {name!r} merges the batch and time axes into one (e.g. out.view(-1, hidden) before the head); "
            "nn.Linear applies to the last axis, so fc(out) keeps (batch, steps, classes)")


def name_input_dims(proto: Any, spec: InputSpec) -> bool:
    """Give the dynamic input axes the spec's names (``batch``, ``seq``), in place, wherever the exporter's
    own names for them appear (the dynamo exporter writes ``s77``, ``s27``, and outputs reuse them);
    returns whether anything was renamed."""
    rename: dict[str, str] = {}
    by_name = {i.name: i for i in proto.graph.input}
    for info in spec.inputs:
        graph_input = by_name.get(info.name)
        if graph_input is None:
            continue
        dims = graph_input.type.tensor_type.shape.dim
        for axis, wanted in info.dynamic.items():
            if axis < len(dims) and dims[axis].dim_param and dims[axis].dim_param != wanted:
                rename.setdefault(dims[axis].dim_param, wanted)
    if not rename:
        return False
    graph = proto.graph
    for value in [*graph.input, *graph.output, *graph.value_info]:
        for dim in value.type.tensor_type.shape.dim:
            if dim.dim_param in rename:
                dim.dim_param = rename[dim.dim_param]
    return True


def name_output_dims(proto: Any, names: Sequence[str], axes: dict[int, dict[str, int | None]], data: InputInfo) -> None:
    """Give each output's batch and sequence axes the data input's dim names (the exporters invent names such
    as ``Gemmy_dim_0``), so the file says which output axis follows which input axis."""
    dims = next((i for i in proto.graph.input if i.name == data.name), None)
    if dims is None:
        return
    in_dims = dims.type.tensor_type.shape.dim
    for i, name in enumerate(names):
        value = next((o for o in proto.graph.output if o.name == name), None)
        if value is None or i not in axes:
            continue
        out_dims = value.type.tensor_type.shape.dim
        for key, src in (("batch_axis", data.batch_axis), ("seq_axis", data.seq_axis)):
            axis = axes[i].get(key)
            if axis is None or src is None or axis >= len(out_dims) or not in_dims[src].dim_param:
                continue
            resampled = key == "seq_axis" and axes[i].get("seq_resampled")
            # a pooled time axis follows the input's but is not as long: a name of its own says so
            out_dims[axis].dim_param = f"{in_dims[src].dim_param}_out" if resampled else in_dims[src].dim_param
        input_names = {d.dim_param for v in proto.graph.input for d in v.type.tensor_type.shape.dim if d.dim_param}
        for axis, source in (axes[i].get("seq_of") or {}).items():
            if int(axis) < len(out_dims) and f"{source}_seq" in input_names:
                out_dims[int(axis)].dim_param = f"{source}_seq"  # follows that input's own length
        for axis, size in (axes[i].get("fixed") or {}).items():
            dim = out_dims[int(axis)] if int(axis) < len(out_dims) else None
            if dim is not None and dim.dim_param and dim.dim_param not in input_names:
                dim.dim_value = size  # replaces the exporter's made-up name (a oneof field)


def _axes(time_first: bool) -> tuple[int, int]:
    return (1, 0) if time_first else (0, 1)


def declared_examples(model: Any) -> Callable[[], Any] | None:
    """The model's own example inputs: its ``example_inputs()`` method, or the ``example_input_array``
    attribute PyTorch Lightning modules set (``self.example_input_array = torch.zeros(2, 100, 6)``)."""
    method = getattr(model, "example_inputs", None)
    if callable(method):
        return method
    array = getattr(model, "example_input_array", None)
    return (lambda: array) if array is not None else None


def infer_signature(
    model: Any,
    input_shape: Sequence[int] | None = None,
    dynamic_axes: Sequence[int] | None = None,
    time_first: bool = False,
) -> tuple[InputSpec, list[Any]]:
    """Return the input spec and example tensors for exporting ``model``."""
    import torch

    batch_axis, seq_axis = _axes(time_first)
    vocab = vocab_size(model)
    layer = first_layer(model)
    is_tokens = (isinstance(layer, (torch.nn.Embedding, torch.nn.EmbeddingBag))
                 or getattr(layer, "original_name", None) in ("Embedding", "EmbeddingBag"))
    if is_tokens and isinstance(layer, (torch.nn.Embedding, torch.nn.EmbeddingBag)) and declared_examples(model) is None:
        b, t = DEFAULT_EXAMPLE_BATCH, DEFAULT_EXAMPLE_LENGTH
        ids = _example([t, b] if time_first else [b, t], "int64", vocab)
        reads = embedding_reads_input(model, layer, ids)
        other = first_layer(model, skip=layer)
        if reads is None and other is not None and not isinstance(other, torch.nn.Embedding):
            # ids failed before any lookup (a Linear over the features first): do float features run?
            features = _features_of(other)
            floats = _example([t, b, features] if time_first else [b, t, features], "float32", None)
            reads = False if features and _failure(model, [floats]) is None else True
        if reads is False:  # a position table: the input is float features
            is_tokens, vocab = False, None
            layer = other

    required = forward_parameter_names(model, required=True)
    if (len(required) > 2 and declared_examples(model) is None and STATE_PARAMETER.search(required[1])
            and any(isinstance(m, (torch.nn.LSTM, torch.nn.GRU, torch.nn.RNN)) for m in model.modules())):
        raise ExportError(_state_input_message(required[1]))
    if (len(required) == 2 and declared_examples(model) is None
            and (STATE_PARAMETER.search(required[1]) or callable(getattr(model, "init_hidden", None)))):
        if not any(isinstance(m, (torch.nn.LSTM, torch.nn.GRU, torch.nn.RNN)) for m in model.modules()):
            raise ExportError(
                f"forward({', '.join(required)}) takes one step with a state the caller carries: give the model an "
                "example_inputs() method returning one example per input (for example 'return torch.zeros(1, N_INPUT), "
                "torch.zeros(1, N_HIDDEN)'), and edgeseq exports that step with the state as an input and an output")
        raise ExportError(
            f"forward's second input {required[1]!r} looks like the recurrent state the model is stepped with; "
            f"edgeseq carries state itself: give it a default, def forward(self, x, {required[1]}=None) (nn.LSTM/"
            "nn.GRU take None as zeros), then export (with --streaming to step through a sequence with "
            "StreamingSession)")
    numbers = _number_parameters(model, required[1:])
    if numbers:
        name, kind = numbers[0]
        example = {"bool": "False", "float": "1.0"}.get(kind, "4")
        raise ExportError(
            f"forward's {name!r} is a Python {kind}, not a tensor: give it a default (def forward(self, x, "
            f"{name}: {kind} = {example})); the file is exported at that value: a Python number is not an input of an "
            "ONNX file")
    if len(required) > 1 and declared_examples(model) is None:
        raise ExportError(
            f"forward takes {len(required)} inputs ({', '.join(required)}) and edgeseq can only guess one: give the "
            "model an example_inputs() method returning one example tensor per input, in that order (for example "
            "'return torch.zeros(2, 100, 6), torch.zeros(2, 3)'); README 'Several inputs'")

    if input_shape is not None:
        shape = list(input_shape)
        dtype = "int64" if is_tokens else "float32"
        examples = [_example(shape, dtype, vocab)]
        infos = [_info("x", dtype, shape, batch_axis, seq_axis, dynamic_axes, vocab)]
        return InputSpec(infos), examples

    declared = declared_examples(model)
    if declared is not None:
        try:
            examples = declared()
        except Exception as exc:
            raise ExportError(f"model.example_inputs() failed: {type(exc).__name__}: {exc}") from None
        if isinstance(examples, torch.Tensor):
            examples = [examples]
        examples = list(examples)
        nested = [i for i, t in enumerate(examples) if isinstance(t, (tuple, list))
                  and t and all(isinstance(u, torch.Tensor) for u in t)]
        if nested and _rnn_state_shapes(model):
            params = forward_parameter_names(model)
            name = params[nested[0]] if nested[0] < len(params) else f"input {nested[0]}"
            raise ExportError(_state_input_message(name))
        if not examples or not all(isinstance(t, torch.Tensor) for t in examples):
            where = "model.example_inputs()" if callable(getattr(model, "example_inputs", None)) else \
                "model.example_input_array"
            raise ExportError(f"{where} must be a tensor or a tuple of tensors")
        infos = []
        steps = examples[0].shape[seq_axis] if examples[0].dim() > seq_axis else None
        params = forward_parameter_names(model)
        batch = examples[0].shape[batch_axis] if examples[0].dim() > batch_axis else None
        batches = tuple(examples[0].shape[:2])  # either layout's batch
        states = _rnn_state_shapes(model)
        for i, t in enumerate(examples[1:], start=1):  # (layers, batch, hidden): a recurrent layer's start state
            if t.is_floating_point() and t.dim() == 3 and t.shape[1] in batches and (t.shape[0], t.shape[2]) in states:
                raise ExportError(_state_input_message(params[i] if i < len(params) else f"input {i}"))
        for i, t in enumerate(examples):
            name = "x" if i == 0 else _later_input_name(params, i)
            dtype = str(t.dtype).replace("torch.", "")
            sa = seq_axis if t.dim() >= 2 else None
            own = False
            ba = batch_axis if t.dim() >= 1 else None
            if i > 0 and batch is not None and ba is not None:  # its batch is the axis of x's batch size
                if ba >= t.dim() or t.shape[ba] != batch:
                    ba = next((a for a in range(t.dim()) if t.shape[a] == batch), None)
                    if ba is None:
                        raise ExportError(f"x's batch of {batch} (axis {batch_axis}) is on no axis of "
                                          f"{_later_input_name(params, i)} {tuple(t.shape)}: example_inputs() must "
                                          "give every input the same batch")
                    sa = None if sa == ba else sa
            if i > 0 and sa is not None and (t.shape[sa] != steps or _runs_with_x_alone_longer(model, examples,
                                                                                              seq_axis)):
                # a sequence of another length (an encoder-decoder's target) when the model takes it at other
                # lengths too; else static per-sample data, e.g. (batch, 3) -- also when its size happens to
                # equal the example's length, as long as x runs at another length without it
                own = dynamic_axes is None and _own_length(model, examples, i, sa, dtype)
                sa = sa if own else None
            axes = dynamic_axes if i == 0 or dynamic_axes is None else [a for a in dynamic_axes if a < t.dim()
                                                                        and (a == batch_axis or a == sa)]
            lengths_of = _lengths_of(examples, i, steps, params[i] if i < len(params) else "", batch_axis)
            if lengths_of:
                name = "lengths" if i < len(params) and params[i] == "lengths" else name
            ids = _token_range(model, examples, i) if dtype.startswith("int") and not lengths_of else None
            info = _info(name, dtype, list(t.shape), ba, sa, axes, ids)
            info.lengths_of = "x" if lengths_of else None
            if own:
                info.dynamic[sa] = f"{name}_seq"
            if t.is_floating_point() and t.numel() and bool(torch.isfinite(t).all()):
                # random parity inputs follow the declared example's range (e.g. positive prices)
                low, high = float(t.min()), float(t.max())
                if high > low and (low >= 0 or abs(low) > 10 or abs(high) > 10):
                    info.low, info.high = low, high
            infos.append(info)
        return InputSpec(infos), examples

    if layer is None:
        raise ExportError(
            "cannot infer the input shape (no Embedding/LSTM/GRU/RNN/Conv1d/Linear layer found); "
            "pass --input-shape B,T,F or give the model an example_inputs() method"
        )
    b, t = DEFAULT_EXAMPLE_BATCH, DEFAULT_EXAMPLE_LENGTH
    if is_tokens:
        shape = [t, b] if time_first else [b, t]
        dtype = "int64"
    else:
        features = _features_of(layer)
        t = t if features != t else t + 4  # a length unlike the feature count, so the two axes cannot be confused
        shape = [t, b, features] if time_first else [b, t, features]
        dtype = "float32"
    examples = [_example(shape, dtype, vocab)]
    return InputSpec([_info("x", dtype, shape, batch_axis, seq_axis, dynamic_axes, vocab)]), examples


def _say_if_features_are_free(model: Any, spec: InputSpec, examples: list[Any], log: Any) -> None:
    """A note when the guessed feature count is not fixed by any layer (the model also runs with one more):
    a Conv2d front-end that pools its bins away runs on any, so the guess, a later layer's size, may not be
    the user's data (a spectrogram's mel count), or that axis may even be time."""
    import torch

    info = spec.inputs[0]
    x = examples[0]
    if log is None or not info.dtype.startswith("float") or x.dim() != 3:
        return
    wider = torch.randn([*x.shape[:-1], x.shape[-1] + 1], generator=torch.Generator().manual_seed(0))
    if _failure(model, [wider]) is None:
        log(f"note: the model also runs with {x.shape[-1] + 1} features on the last axis, so no layer fixes that "
            f"count: exported x as [batch, seq, {x.shape[-1]}], a guess; if your data has another size there (mel "
            "bins), or its time is that axis, pass --input-shape (and --dynamic-axes) for it")


def _runs_with_x_alone_longer(model: Any, examples: list[Any], seq_axis: int) -> bool:
    """Whether the model runs with the first input a step longer and the others as they are: then an input
    whose size equals the example's length is not tied to it."""
    import torch

    x = examples[0]
    if x.dim() <= seq_axis:
        return False
    pad = torch.narrow(x, seq_axis, 0, 1)
    return _failure(model, [torch.cat([x, pad], dim=seq_axis), *examples[1:]]) is None


def _number_parameters(model: Any, names: Sequence[str]) -> list[tuple[str, str]]:
    """(name, type name) of those of forward's ``names`` annotated as a Python int, float or bool."""
    import inspect

    try:
        params = inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return []
    kinds = {int: "int", float: "float", bool: "bool", "int": "int", "float": "float", "bool": "bool"}
    return [(n, kinds[params[n].annotation]) for n in names
            if n in params and isinstance(params[n].annotation, (type, str)) and params[n].annotation in kinds]


def _rnn_state_shapes(model: Any) -> set[tuple[int, int]]:
    """(layers x directions, hidden) of every nn.LSTM/GRU/RNN: the shape of its state without the batch."""
    import torch

    shapes = set()
    for m in model.modules():
        if isinstance(m, (torch.nn.LSTM, torch.nn.GRU, torch.nn.RNN)):
            hidden = getattr(m, "proj_size", 0) or m.hidden_size
            shapes |= {(m.num_layers * (2 if m.bidirectional else 1), h) for h in (hidden, m.hidden_size)}
    return shapes


def _state_input_message(name: str) -> str:
    return (f"forward's input {name!r} is a recurrent layer's start state (layers, batch, hidden), whose batch is "
            f"its second axis; edgeseq carries state itself: give it a default, forward(self, x, {name}=None) "
            "(nn.LSTM/nn.GRU take None as zeros), and export with --streaming for a file that takes and returns the "
            "state (StreamingSession carries it), or without to start every sequence from zeros")


def check_axes_can_vary(model: Any, examples: list[Any], dynamic_axes: Sequence[int], time_first: bool) -> None:
    """Refuse a --dynamic-axes axis that the model cannot take at another size (the features a layer is built
    for): exported as dynamic, the file would claim sizes it fails at.  (A model that fails on the example
    itself is said elsewhere.)"""
    import torch

    if _failure(model, examples) is not None:
        return
    natural = _axes(time_first)  # the layout's batch and sequence axes: a fixed-length model is said otherwise

    def grown_failure(axis: int) -> str | None:
        grown = list(examples)
        size = list(grown[0].shape)
        size[axis] += 1
        grown[0] = (torch.zeros(size, dtype=grown[0].dtype) if not grown[0].is_floating_point()
                    else torch.randn(size, generator=torch.Generator().manual_seed(0)))
        return _failure(model, grown)

    seq = natural[1]
    if seq in dynamic_axes and seq < examples[0].dim():  # the named time axis may be the channels (batch, C, T)
        failure = grown_failure(seq)
        movable = [a for a in range(2, examples[0].dim()) if a not in dynamic_axes and grown_failure(a) is None]
        if failure is not None and movable:
            fix = ",".join(str(a) for a in sorted({*(a for a in dynamic_axes if a != seq), movable[0]}))
            raise ExportError(f"--dynamic-axes: axis {seq} ({examples[0].shape[seq]}) cannot vary (PyTorch fails at "
                              f"{examples[0].shape[seq] + 1}: {failure[:120]}), and axis {movable[0]} can: if that is "
                              f"the time axis (batch, channels, time), pass --dynamic-axes {fix}")
    for axis in dynamic_axes:
        if axis in natural or axis >= examples[0].dim():
            continue
        failure = grown_failure(axis)
        if failure is not None:
            raise ExportError(f"--dynamic-axes {axis}: axis {axis} of the input ({examples[0].shape[axis]}) cannot vary: "
                              f"PyTorch fails at {examples[0].shape[axis] + 1} ({failure[:160]}); the batch and sequence "
                              f"axes are {natural[0]} and {natural[1]}")


def runnable_signature(
    model: Any,
    input_shape: Sequence[int] | None = None,
    dynamic_axes: Sequence[int] | None = None,
    time_first: bool = False,
    log: Any = None,
) -> tuple[InputSpec, list[Any]]:
    """:func:`infer_signature`; when the model rejects a guessed example, the other reading it runs on: one
    sentence of token ids, clips of frames or spectrograms for a first Conv2d, channels first
    (:mod:`edgeseq.export.conv_inputs`), or for a one-feature guess ``(batch, length, 1)`` the univariate
    ``(batch, length)`` (a series split per step into ``nn.LSTMCell(1, H)``, or unsqueezed in ``forward``)."""
    spec, examples = infer_signature(model, input_shape, dynamic_axes, time_first)
    info = spec.inputs[0]
    guessed = input_shape is None and declared_examples(model) is None
    if input_shape is not None and not time_first and len(spec.inputs) == 1 and info.dtype.startswith("float"):
        from .conv_inputs import channels_first_reading

        found = channels_first_reading(model, list(input_shape), dynamic_axes, log)
        if found is not None:
            return found
    if not guessed or len(spec.inputs) != 1:
        return spec, examples
    if _failure(model, examples) is None:
        _say_if_features_are_free(model, spec, examples, log)
        return spec, examples
    # the guess fails: try the other readings of the first layer
    if info.dtype.startswith("int"):
        return _one_sentence(model, spec, examples, log) if len(info.shape) == 2 else (spec, examples)
    from .conv_inputs import channels_first_example, conv2d_example

    found = conv2d_example(model, time_first, dynamic_axes, log)
    if found is None and not time_first:
        found = channels_first_example(model, dynamic_axes, log)
    if found is not None:
        return found
    for features in features_forward_expects(_failure(model, examples) or "", info.shape) if not time_first else []:
        shape = [*info.shape[:-1], features]
        other = (InputSpec([_info("x", info.dtype, shape, *_axes(time_first), dynamic_axes, None)]),
                 [_example(shape, info.dtype, None)])
        if _failure(model, other[1]) is None:
            if log:
                log(f"note: forward adds or drops features before its first recurrent layer: it runs on "
                    f"{features} features, not the {info.shape[-1]} that layer takes; exported x as "
                    f"[batch, seq, {features}] (pass --input-shape to choose otherwise)")
            return other
    if len(info.shape) != 3 or info.shape[-1] != 1:
        return spec, examples
    shape = list(info.shape[:2])
    alternative = (InputSpec([_info("x", info.dtype, shape, *_axes(time_first), dynamic_axes, None)]),
                   [_example(shape, info.dtype, None)])
    failure = _failure(model, alternative[1])
    if failure is not None:
        # past the first layer but stopped by float64 tensors made in forward: the export's error says so
        return alternative if "Double" in failure and "Float" in failure else (spec, examples)
    if log:
        log("note: the model takes a univariate series (batch, length), not (batch, length, 1); exported input x "
            "as [batch, seq] (pass --input-shape to choose otherwise)")
    return alternative


_RNN_SIZE = re.compile(r"input\.size\(-1\) must be equal to input_size\. Expected (\d+), got (\d+)")


def rnn_input_sizes(failure: str) -> tuple[int, int] | None:
    """(size the recurrent layer takes, size it got) from PyTorch's input-size error, else None."""
    m = _RNN_SIZE.search(failure)
    return (int(m.group(1)), int(m.group(2))) if m else None


def features_forward_expects(failure: str, shape: Sequence[int]) -> list[int]:
    """Feature counts that may reach the first recurrent layer with the size it takes, when ``failure`` is
    PyTorch's input-size error: given F, the layer saw G and takes E. ``forward`` passing them through
    (G = F): E. Adding or dropping some (a time-index column): F + E - G. Scaling them (lag differences
    concatenated): F * E / G. Most likely first; [] when ``failure`` is another error."""
    sizes = rnn_input_sizes(failure)
    if sizes is None or len(shape) != 3:
        return []
    given, (wanted, got) = shape[-1], sizes
    found = [given + wanted - got]
    if (given * wanted) % got == 0:
        found.append(given * wanted // got)
    return [n for n in dict.fromkeys(found) if n >= 1 and n != given]


def _one_sentence(model: Any, spec: InputSpec, examples: list[Any], log: Any) -> tuple[InputSpec, list[Any]]:
    """For token ids that fail as (batch, length): the one sentence ``(length,)`` per call that models
    like PyTorch's LSTMTagger tutorial take (``embeds.view(len(sentence), 1, -1)``), when that runs."""
    info = spec.inputs[0]
    shape = [info.shape[info.seq_axis if info.seq_axis is not None else 1]]
    one = InputInfo(info.name, info.dtype, shape, None, 0, {0: "seq"}, info.vocab_size)
    sentence = [_example(shape, info.dtype, info.vocab_size)]
    if _failure(model, sentence) is not None:
        return spec, examples
    if log:
        log("note: the model takes one sequence of token ids per call, (length,), not a batch; exported input x "
            "as [seq] (Session.predict runs each sequence of a list alone)")
    return InputSpec([one]), sentence


def _failure(model: Any, examples: list[Any]) -> str | None:
    """Why the model fails on ``examples`` (None: it runs)."""
    import torch

    try:
        with torch.inference_mode():
            model(*examples)
    except Exception as exc:  # noqa: BLE001 - any failure: this example does not fit the model
        return f"{type(exc).__name__}: {exc}"
    return None


def _token_range(model: Any, examples: list[Any], i: int) -> int | None:
    """The id range of int input ``i``: the largest ``num_embeddings`` of the model's embeddings whose last
    id the model takes there (an encoder-decoder's target has its own vocabulary), else the example's max + 1."""
    import torch

    sizes = sorted({embedding_rows(m) for m in model.modules()
                    if isinstance(m, torch.nn.Embedding) or getattr(m, "original_name", None) == "Embedding"},
                   reverse=True)
    t = examples[i]
    for size in sizes:
        probe = list(examples)
        probe[i] = torch.full_like(t, size - 1)
        if len(sizes) == 1 or _failure(model, probe) is None:
            return size
    return int(t.max()) + 1 if t.numel() and int(t.min()) >= 0 else None


def _lengths_of(examples: list[Any], i: int, steps: int | None, parameter: str, batch_axis: int) -> bool:
    """Whether input ``i`` holds each sample's length of the first input (``forward(x, lengths, meta)``): one
    integer per sample, all in 1..steps, and named like lengths or reaching ``steps``. Parity then draws
    lengths that fit, not arbitrary integers a model would index out of range with."""
    t = examples[i]
    if steps is None or t.is_floating_point() or t.dim() != 1 or t.shape[0] != examples[0].shape[batch_axis]:
        return False
    low, high = int(t.min()), int(t.max())
    return 1 <= low and high <= steps and (bool(re.search(r"len", parameter, re.I)) or high == steps)


def _own_length(model: Any, examples: list[Any], i: int, axis: int, dtype: str) -> bool:
    """Whether input ``i`` is a sequence with a length of its own: a float ``(batch, steps, features)``
    or token ids ``(batch, steps)`` that the model also takes shorter and longer (the first input's
    length unchanged)."""
    import torch

    t = examples[i]
    if not (t.dim() >= 3 or (t.dim() == 2 and dtype.startswith("int"))):
        return False
    size = int(t.shape[axis])
    for other in {max(1, size // 2), size + 3} - {size}:
        index = [slice(None)] * t.dim()
        index[axis] = torch.arange(other) % size  # the example's own steps, repeated: ids stay in range
        changed = list(examples)
        changed[i] = t[tuple(index)]
        if _failure(model, changed) is not None:
            return False
    return True


def _features_of(layer: Any) -> int:
    for attr in ("input_size", "in_channels", "in_features"):
        if hasattr(layer, attr):
            return int(getattr(layer, attr))
    # traced TorchScript modules keep weights but not size attributes: (4H, F) for an LSTM, (out, F) for a Linear
    for name in ("weight_ih_l0", "weight_ih", "weight"):
        weight = getattr(layer, name, None)
        if weight is not None and getattr(weight, "dim", lambda: 0)() >= 2:  # a Conv1d's (out, in, k) too
            return int(weight.shape[1])
    raise ExportError("cannot infer the feature count; pass --input-shape B,T,F")


def forward_parameter_names(model: Any, required: bool = False) -> list[str]:
    """Names of ``model.forward``'s positional parameters (without ``self``; with ``required``, only those
    without a default), [] when not inspectable."""
    import inspect

    try:
        params = inspect.signature(model.forward).parameters.values()
    except (TypeError, ValueError):
        return []
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return [p.name for p in params if p.kind in kinds and not (required and p.default is not inspect.Parameter.empty)]


# Input names edgeseq gives a meaning of its own (the first input is always "x").
_RESERVED_NAMES = {"x", "lengths"}


def _later_input_name(params: list[str], i: int) -> str:
    """The i-th input's name (i >= 1): forward's parameter name (``meta``), else ``x{i}``."""
    name = params[i] if i < len(params) else ""
    ok = name.isidentifier() and name not in _RESERVED_NAMES and name not in params[:i] and not name.endswith(("_in", "_out"))
    return name if ok else f"x{i}"


def _info(name: str, dtype: str, shape: list[int], batch_axis: int | None, seq_axis: int | None,
          dynamic_axes: Sequence[int] | None, vocab: int | None) -> InputInfo:
    rank = len(shape)
    if batch_axis is not None and batch_axis >= rank:
        batch_axis = None
    if seq_axis is not None and seq_axis >= rank:
        seq_axis = None
    if dynamic_axes is not None:
        bad = [a for a in dynamic_axes if not 0 <= a < rank]
        if bad:
            raise ExportError(f"--dynamic-axes {bad} out of range for an input of rank {rank}")
        dyn = sorted(set(dynamic_axes))
        if batch_axis not in dyn:
            batch_axis = None
        rest = [a for a in dyn if a != batch_axis]
        seq_axis = seq_axis if seq_axis in rest else (rest[0] if rest else None)
        names = {a: ("batch" if a == batch_axis else "seq" if a == seq_axis else f"dim{a}") for a in dyn}
        return InputInfo(name, dtype, shape, batch_axis, seq_axis, names, vocab)
    return InputInfo(name, dtype, shape, batch_axis, seq_axis, {}, vocab)


def _example(shape: list[int], dtype: str, vocab: int | None) -> Any:
    import torch

    g = torch.Generator().manual_seed(0)
    if dtype.startswith("int"):
        return torch.randint(0, vocab or 2, shape, generator=g, dtype=torch.int64)
    return torch.randn(shape, generator=g)

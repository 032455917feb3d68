"""PyTorch ``nn.Module`` -> ONNX with dynamic batch/sequence axes, verified before it is written.

>>> from edgeseq.export import export
>>> result = export("models/motion_lstm.py:build", "motion.onnx")    # doctest: +SKIP
>>> result.exporter                                                  # doctest: +SKIP
'torchscript'
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
import tempfile
import time
import unittest.mock
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..card import set_card
from ..errors import EdgeseqError, ExportError, InputError, ParityError, UnsupportedModelError, require
from ..inputs import InputSpec
from ..runtime.io import atomic_path, refuse_overwrite
from . import parity
from .attention import exportable_attention
from .cleanup import cleanup_record, explicit_same_pads, loop_writes_carried_tensor, node_count, simplify
from .conv_inputs import conv2d_hint, frame_channels
from .layout import check_layout, detect_time_first
from .lengths import LENGTHS_INPUT
from .loading import model_and_source
from .packed import packs, unpacked, wire_lengths_probe
from .projected import projected_lstm_names, with_projected_lstms
from .scripted import cell_names, cells_phrase, script
from .signature import (
    card_axes,
    check_axes_can_vary,
    check_batch_not_fixed,
    check_not_frozen,
    check_supported,
    features_forward_expects,
    fixed_batch_refusal,
    forward_parameter_names,
    longest_length,
    merged_axes,
    merged_axes_message,
    name_input_dims,
    name_output_dims,
    output_axes,
    rnn_input_sizes,
    runnable_signature,
    runs_at_one_length_only,
    shortest_length,
    state_batch,
)
from .symbolics import cell_symbolics

EXPORTERS = ("auto", "torchscript", "dynamo")
RECURRENT_OPS = {"LSTM", "GRU", "RNN"}
DEFAULT_OPSET = {"torchscript": 17, "dynamo": 18}


@dataclass
class ExportResult:
    """What :func:`export` wrote and how it was verified."""

    path: Path
    exporter: str
    card: dict[str, Any]
    report: parity.ParityReport | None
    attempts: list[str] = field(default_factory=list)
    seconds: float = 0.0


def _quiet() -> contextlib.ExitStack:
    """Silence the exporters' warnings and log chatter (they go to stderr and confuse users)."""
    stack = contextlib.ExitStack()
    stack.enter_context(warnings.catch_warnings())
    warnings.simplefilter("ignore")
    for name in ("torch", "torch.onnx", "torch._dynamo", "torch.export", "torch._export", "onnxscript", "torch.fx",
                 "torch.__trace"):
        logger = logging.getLogger(name)
        previous = logger.level
        logger.setLevel(logging.ERROR)
        stack.callback(logger.setLevel, previous)
    stack.enter_context(contextlib.redirect_stdout(io.StringIO()))
    # the TorchScript exporter dumps its whole IR graph to C++ stderr when a pass fails ("Torch IR graph at
    # exception"): its logging switch is always on (torch checks the function object, not its value)
    import torch

    if hasattr(torch._C, "_jit_onnx_log"):
        stack.enter_context(unittest.mock.patch.object(torch._C, "_jit_onnx_log", lambda *args: None))
    return stack


def output_names_for(model: Any, examples: list[Any], inputs: Sequence[str] = ()) -> list[str]:
    """The file's output names (a returned dict's keys, else ``y``/``y0, y1, ...``); refuses non-tensor outputs."""
    import torch

    with torch.inference_mode():
        result = model(*examples)
    out = parity.flatten_outputs(result)
    loose = [(i, o) for i, o in enumerate(out) if not isinstance(o, torch.Tensor)]
    if loose:
        i, value = loose[0]
        raise UnsupportedModelError(
            f"refused: forward returns Python values, not only tensors (output {i} is {type(value).__name__} "
            f"{value!r:.40}, e.g. a decoded sequence built with .item()); an ONNX file outputs tensors computed from "
            "its inputs: return tensors, or export the network up to its scores and decode outside it")
    return parity.output_names(result, [*inputs, LENGTHS_INPUT])


def _export_torchscript(model: Any, examples: list[Any], path: Path, spec: InputSpec, outputs: list[str], opset: int) -> None:
    import torch

    dynamic = {i.name: dict(i.dynamic) for i in spec.inputs if i.dynamic}
    with _quiet(), cell_symbolics(opset), exportable_attention():
        torch.onnx.export(
            model, tuple(examples), str(path), dynamo=False, input_names=spec.names, output_names=outputs,
            dynamic_axes=dynamic, opset_version=opset, do_constant_folding=True,
        )


def _export_dynamo(model: Any, examples: list[Any], path: Path, spec: InputSpec, outputs: list[str], opset: int) -> None:
    import torch
    from torch.export import Dim

    _reset_rnn_dispatch_cache(torch)
    shapes = tuple({a: Dim.DYNAMIC for a in i.dynamic} or None for i in spec.inputs)
    with _quiet(), exportable_attention():
        program = torch.onnx.export(
            model, tuple(examples), dynamo=True, dynamic_shapes=shapes, input_names=spec.names,
            output_names=outputs, opset_version=opset, optimize=True,
        )
        program.save(str(path), external_data=False)


def _output_axes_or_none(model: Any, spec: InputSpec) -> dict[int, dict[str, int | None]] | None:
    """Which output axes follow the batch and the length (None when the model cannot say, e.g. fixed batch)."""
    try:
        return output_axes(model, spec)
    except Exception:  # noqa: BLE001 - naming output dims is a courtesy, never a reason to fail an export
        return None


def _shape_hint(spec: InputSpec) -> str:
    """``1,LENGTH,6``: the example's shape with batch 1 and the sequence length left to the user."""
    info = spec.inputs[0]
    dims = [str(d) for d in info.shape]
    if info.batch_axis is not None:
        dims[info.batch_axis] = "BATCH"
    if info.seq_axis is not None and info.seq_axis < len(dims):
        dims[info.seq_axis] = "LENGTH"
    return ",".join(dims) + " with the batch size and sequence length the model was built for"


def _is_torchscript(model: Any) -> bool:
    import torch

    return isinstance(model, torch.jit.ScriptModule)


def _reset_rnn_dispatch_cache(torch: Any) -> None:
    # torch.onnx swaps in while-loop LSTM/GRU decompositions during a dynamo export and restores the
    # originals afterwards without clearing the ops' dispatch caches, so every later export in the same
    # process specializes the sequence length ("tracing inferred a static shape").  Clearing fixes it.
    for op in (torch.ops.aten.lstm.input, torch.ops.aten.gru.input, torch.ops.aten.rnn_tanh.input,
               torch.ops.aten.rnn_relu.input):
        cache = getattr(op, "_dispatch_cache", None)
        if cache is not None:
            cache.clear()


def written_opset(proto: Any) -> int | None:
    """The default-domain opset an exported file declares."""
    return next((int(o.version) for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)


def check_output_path(output: str | Path, model_or_ref: Any, weights: str | Path | None) -> None:
    """Refuse an output that is not an .onnx name, or that would overwrite the model's source or weights."""
    if Path(output).suffix.lower() != ".onnx":
        raise InputError(f"{output}: the output must be an .onnx file (name it like model.onnx)")
    refuse_overwrite(output, "-o", {"the model": model_or_ref, "--weights": weights})


_UNSUPPORTED_OP = re.compile(r"Exporting the operator '([^']+)' to ONNX opset version (\d+) is not supported")


def _error_text(exc: BaseException) -> str:
    """The informative line of an exporter exception (torch.onnx wraps the cause in boilerplate)."""
    text = str(exc)
    marker = "## Exception summary"
    if marker in text:
        tail = [ln.strip() for ln in text.split(marker, 1)[1].splitlines() if ln.strip()]
        tail = [ln for ln in tail if not ln.startswith("(Refer to")]
        text = " ".join(tail)
    text = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    # torch's boilerplate and its dump of the IR value say nothing a user can act on
    for noise in (" Please feel free to request support", "  [Caused by the value"):
        text = text.split(noise, 1)[0]
    return text[:300]


_EXPORT_FUNCS: dict[str, Callable[..., None]] = {"torchscript": _export_torchscript, "dynamo": _export_dynamo}


def graph_problems(proto: Any, spec: InputSpec, model: Any) -> list[str]:
    """Structural checks: dynamic axes kept symbolic, recurrent layers kept as native nodes."""
    import torch.nn as nn

    problems = []
    by_name = {i.name: i for i in proto.graph.input}
    for info in spec.inputs:
        graph_input = by_name.get(info.name)
        if graph_input is None:
            problems.append(f"input {info.name!r} missing from the graph")
            continue
        dims = graph_input.type.tensor_type.shape.dim
        for axis, axis_name in info.dynamic.items():
            if axis < len(dims) and dims[axis].HasField("dim_value"):
                problems.append(
                    f"the {axis_name} axis (axis {axis}) of input {info.name!r} was frozen at {dims[axis].dim_value}"
                )
    ops = {n.op_type for n in proto.graph.node}
    has_rnn = any(isinstance(m, (nn.LSTM, nn.GRU, nn.RNN)) for m in model.modules())
    if has_rnn and not ops & RECURRENT_OPS and not any(n.op_type in {"Loop", "Scan"} for n in proto.graph.node):
        problems.append("the recurrent layers were unrolled instead of exported as native LSTM/GRU/RNN nodes")
    return problems


def _cell_hint(model: Any, exporter: str, script: str | None) -> str:
    cells = cell_names(model)
    what = (f"The model steps {', '.join(repr(c) for c in cells[:3])} in a Python loop" if cells else
            "The model's forward probably depends on the sequence length in Python (a loop over time steps or a "
            "shape used as a number)")
    if exporter == "dynamo":
        return f" {what}; --exporter torchscript (or auto) exports such a loop scripted, as an ONNX Loop."
    unrolled = f" {what}, which tracing unrolls to the example's length"
    if not cells and _calls_len(model):
        unrolled = (f" {what}: here len(x) in forward, a plain number to the tracer (x.size(0) stays symbolic),"
                    " or a loop that tracing unrolls to the example's length")
    if script == "compile":
        return (f"{unrolled}, and torch.jit.script could not compile forward (below): make it scriptable, or use "
                "nn.LSTM/nn.GRU over the whole sequence.")
    if script == "export":
        return (f"{unrolled}; torch.jit.script compiled forward but its export failed (below): rewrite the "
                "construct it names, or use nn.LSTM/nn.GRU over the whole sequence.")
    return f"{unrolled}; use nn.LSTM/nn.GRU over the whole sequence."


def _calls_len(model: Any) -> bool:
    """Whether the model's forward source calls ``len(...)``."""
    import inspect
    import re

    try:
        return bool(re.search(r"\blen\(", inspect.getsource(type(model).forward)))
    except (OSError, TypeError):
        return False


def _script_outcome(scripted: bool, attempts: list[str]) -> str | None:
    """How the scripted fallback ended: "compile" (torch.jit.script failed), "export" (its export or
    parity failed), or None (not tried)."""
    if any(a.startswith("torch.jit.script:") for a in attempts):
        return "compile"
    return "export" if scripted else None


def quick_lengths(example_length: int) -> list[int]:
    """Lengths for the export-time gate: 1, the example's, and a longer one (catches frozen/unrolled graphs)."""
    return sorted({1, max(2, example_length // 2), example_length, 2 * example_length + 5})


def export(
    model_or_ref: Any,
    output: str | Path,
    *,
    weights: str | Path | None = None,
    input_shape: Sequence[int] | None = None,
    dynamic_axes: Sequence[int] | None = None,
    time_first: bool | None = None,
    exporter: str = "auto",
    opset: int | None = None,
    check: bool = True,
    log: Callable[[str], None] | None = None,
    atol: float | None = None,
    rtol: float | None = None,
    allow_pickle: bool = False,
    streaming: bool = False,
    lengths: bool = False,
) -> ExportResult:
    """Export a model to ONNX with dynamic batch and sequence axes; never leaves a file that fails parity.

    ``model_or_ref`` is an ``nn.Module`` or a reference ``"file.py:factory"`` / ``"pkg.mod:factory"``.
    ``time_first``: the input is ``(seq, batch, ...)``; None (default) detects it (:func:`detect_time_first`).
    ``atol``/``rtol`` replace the parity gate's float32 tolerances (``edgeseq.tolerances``).
    ``allow_pickle`` accepts a whole pickled model as ``model_or_ref`` and Python objects in
    ``weights`` (unpickling runs code from the file: trusted files only).
    A model that keeps tensors as plain attributes gets a forward pre-hook that puts them back before
    every call (state stored on the module, :func:`~edgeseq.export.loading.restore_state_each_call`);
    an ``nn.Module`` you pass keeps that hook after the export.

    ``streaming`` and ``lengths`` are ``edgeseq export --streaming`` / ``--lengths``
    (:func:`edgeseq.export.stateful.export_with_extras`).

    >>> export("models/fashion_lstm.py:build", "fashion.onnx").exporter   # doctest: +SKIP
    'torchscript'
    >>> export("models/motion_lstm.py:build", "m.onnx", streaming=True).card["state_inputs"][0]  # doctest: +SKIP
    'lstm.h_in.0'
    """
    check_output_path(output, model_or_ref, weights)
    if streaming or lengths:
        from .stateful import export_with_extras

        return export_with_extras(model_or_ref, output, weights=weights, input_shape=input_shape,
                                  dynamic_axes=dynamic_axes, time_first=time_first, exporter=exporter, opset=opset,
                                  check=check, streaming=streaming, lengths=lengths, log=log, atol=atol, rtol=rtol,
                                  allow_pickle=allow_pickle)
    require("torch", "export")
    onnx = require("onnx", "export")
    say = log or (lambda _msg: None)
    if exporter not in EXPORTERS:
        raise ExportError(f"unknown exporter {exporter!r}; choose one of {', '.join(EXPORTERS)}")
    start = time.perf_counter()
    model, source = model_and_source(model_or_ref, weights, say, allow_pickle)
    if time_first is None:
        time_first = detect_time_first(model, input_shape, dynamic_axes, say)
    wrapper = unpacked(model, time_first, input_shape, dynamic_axes)
    if wrapper is not None and wrapper.packs:  # forward(x, lengths) packs x: as --lengths
        from .stateful import export_with_extras

        return export_with_extras(model, output, input_shape=input_shape, dynamic_axes=dynamic_axes,
                                  time_first=time_first, exporter=exporter, opset=opset, check=check, lengths=True,
                                  log=log, atol=atol, rtol=rtol, source=source)
    takes_lengths = None  # forward(x, lengths) reading its lengths without packing: the model as called
    if wrapper is not None:
        takes_lengths, model = model, wrapper
        say(f"note: forward takes per-sample lengths ({wrapper.packed_parameter!r}): exported with a 'lengths' "
            "input that forward reads as it does, checked against forward(x, lengths) on a padded batch")
    check_supported(model)
    spec, examples = runnable_signature(model, input_shape, dynamic_axes, time_first, say)
    try:
        outputs = output_names_for(model, examples, spec.names)
    except EdgeseqError:
        raise
    except Exception as exc:
        raise _example_failure(exc, model, spec, examples) from None
    if len(spec.inputs) > 1 and packs(model, examples):
        raise UnsupportedModelError(
            f"refused: forward packs a sequence (pack_padded_sequence) and takes {len(spec.inputs)} inputs "
            f"({', '.join(forward_parameter_names(model)[:len(spec.inputs)])}); edgeseq turns packing into a 'lengths' "
            "input for forward(x, lengths) only: read each sample's last valid step instead of packing "
            "(out[torch.arange(len(x)), lengths - 1]), which exports with a lengths input beside the other inputs, "
            "or export the part that packs as a model of its own, forward(x, lengths)")
    check_layout(model, spec, time_first, say)
    if dynamic_axes is not None:
        check_axes_can_vary(model, examples, dynamic_axes, time_first)
    check_batch_not_fixed(model, spec)
    only = runs_at_one_length_only(model, spec)
    if only and input_shape is not None and len(input_shape) >= 4 and dynamic_axes is None:
        # (batch, 1, time, mels) read with the default axes: axis 1 is a channel, not the time the user meant
        raise ExportError(
            f"--input-shape {','.join(map(str, input_shape))}: axis 1 ({input_shape[1]}) is read as the sequence, and "
            f"the model runs at no other size there (PyTorch fails {only}); name the batch and time axes with "
            "--dynamic-axes, e.g. --dynamic-axes 0,2 for (batch, channels, time, bins)")
    if only:
        spec = spec.with_fixed_length()
        say(f"note: the model runs at {spec.example_length} steps only (PyTorch fails {only}); exported with a "
            f"fixed sequence length of {spec.example_length}")
    else:
        check_not_frozen(model, spec)
    limit = None if only else longest_length(model, spec)
    floor = None if only else shortest_length(model, spec)
    if floor:
        say(f"note: the model needs at least {floor[0]} steps (PyTorch fails at {floor[0] - 1}: {floor[1][:100]}); "
            "the file refuses shorter sequences")
    if limit:
        say(f"note: the model runs on at most {limit[0]} steps (PyTorch fails at {limit[0] + 1}: {limit[1][:120]}); "
            "recorded in the file, where Session refuses longer sequences with that reason")
    order = ["torchscript", "dynamo"] if exporter == "auto" else [exporter]
    attempts: list[str] = []
    hints: list[str] = []  # per failed parity gate: the float32-rounding hint, or ''
    # what is exported: the model, or a copy whose projected LSTMs are loops; parity compares with the model
    exported = with_projected_lstms(model, say)
    if exported is not model:  # torch.export cannot trace the scripted loop: it would report a frozen length
        if exporter == "dynamo":
            raise UnsupportedModelError(f"projected LSTM(s) {', '.join(projected_lstm_names(model))} export as a "
                                        "loop through the TorchScript exporter only; use --exporter torchscript "
                                        "(or auto)")
        order = ["torchscript"]
    frozen = False
    scripted = False  # whether the loop-over-time fallback (torch.jit.script) was tried
    candidates: list[tuple[str, Any]] = [(name, exported) for name in order]
    traced = exported

    def next_candidate() -> tuple[str, Any] | None:
        nonlocal scripted
        if candidates:
            return candidates.pop(0)
        if frozen and not scripted and exporter != "dynamo" and not _is_torchscript(traced):
            # a Python loop over time was unrolled by tracing; scripting keeps it as a loop (an ONNX Loop)
            scripted = True
            module = script(traced, examples, attempts, say)
            if module is not None:
                return "torchscript", module
        return None

    with tempfile.TemporaryDirectory(prefix="edgeseq-export-") as tmp:
        while (item := next_candidate()) is not None:
            name, exported = item
            label = "scripted torchscript" if scripted else name
            candidate = Path(tmp) / f"{label.replace(' ', '-')}.onnx"
            version = opset or DEFAULT_OPSET[name]
            say(f"exporting with the {name} exporter (opset {version}){' from the scripted model' if scripted else ''} ...")
            try:
                _EXPORT_FUNCS[name](exported, examples, candidate, spec, outputs, version)
            except EdgeseqError:
                raise
            except Exception as exc:
                text = _error_text(exc)
                if any(k in text.lower() for k in ("constraint", "specializ", "guard", "static shape")):
                    frozen = True
                attempts.append(f"{label}: export failed: {text}")
                say(f"  {label} exporter failed: {text}")
                continue
            proto = onnx.load(str(candidate))
            written = written_opset(proto)
            if written is not None and written != version:  # the dynamo exporter writes 18 at least
                say(f"  the {name} exporter wrote opset {written}, not {version}")
                version = written
            renamed = name_input_dims(proto, spec)  # batch/seq, as the TorchScript exporter names them
            probed = bool(getattr(exported, "packed_parameter", None))  # packing's lengths, a last output
            if probed:
                wire_lengths_probe(proto, spec.inputs[0])
            padded = explicit_same_pads(proto)  # dilated 'same' convolutions, which ONNX Runtime refuses as auto_pad
            if renamed or probed or padded:  # the parity gate reads the file
                onnx.save(proto, str(candidate))
            try:
                onnx.checker.check_model(proto)
            except Exception as exc:
                attempts.append(f"{label}: invalid ONNX: {str(exc).splitlines()[0][:200]}")
                continue
            problems = graph_problems(proto, spec, exported)
            if problems:
                frozen = frozen or any("frozen" in p or "unrolled" in p for p in problems)
                attempts.append(f"{label}: {'; '.join(problems)}")
                say(f"  {label}: {'; '.join(problems)}")
                continue
            raw_nodes = node_count(proto)
            if not check and cell_names(model) and not any(n.op_type == "Loop" for n in proto.graph.node):
                say(f"warning: the model steps {', '.join(repr(c) for c in cell_names(model)[:3])} without an ONNX "
                    "Loop in the file: if forward loops over time, tracing unrolled it to the example's length "
                    "and the file is wrong at other lengths; without --no-check the parity gate would tell")
            cleaned, by = simplify(proto, say)
            report = None
            if check:
                lengths = [spec.fixed_length] if spec.fixed_length else quick_lengths(spec.example_length)
                batches = "batch 1,3 x " if spec.inputs[0].batch_axis is not None else ""  # one sequence per call
                say(f"checking parity with PyTorch ({batches}length {','.join(map(str, lengths))}) ...")
                report, cleaned, by = _measure_cleaned(proto, cleaned, by, candidate, model, spec, lengths, say,
                                                       atol, rtol)
                try:
                    parity.gate(report, f"{label} export", hint=False)
                except ParityError as exc:
                    hints.append(parity.rounding_hint(report))
                    fails = report.failures
                    if fails and not all(c.rounding_sized for c in fails):
                        # right at the example's length, wrong elsewhere: the length was baked into the graph
                        frozen = frozen or all(c.length != spec.example_length for c in fails)
                    attempts.append(" ".join(str(exc).split()))  # ONNX Runtime's texts may hold line breaks
                    say(f"  {attempts[-1]}")
                    continue
            proto = cleaned
            if by:
                say(f"graph cleanup ({by}): {raw_nodes} -> {node_count(proto)} nodes")
            card = build_card(spec, outputs, name, version, source, report, time_first)
            if limit:
                card["max_steps"] = limit[0]
            if floor:
                card["min_steps"] = floor[0]
            loops = "scripted" if scripted else "projected" if traced is not model else None
            axes = _complete_card(card, proto, model, spec, outputs, loops, say)
            card["graph_cleanup"] = cleanup_record(raw_nodes, proto, [by] if by else [])
            if takes_lengths is not None:
                card.update(lengths_input=LENGTHS_INPUT, lengths_parameter=model.packed_parameter)
            set_card(proto, card)
            if takes_lengths is not None and check:
                failed = _check_own_lengths(proto, Path(tmp), takes_lengths, spec, outputs, axes, atol, rtol, say)
                if failed:
                    attempts.append(f"{label}: {failed}")
                    continue
            out_path = Path(output)
            with atomic_path(out_path) as tmp_out:
                onnx.save(proto, str(tmp_out))
            say(f"wrote {out_path} ({out_path.stat().st_size / 1024:.0f} KiB) with the {name} exporter")
            return ExportResult(out_path, name, card, report, attempts, time.perf_counter() - start)
    specific = ""  # what is known to break both exporters, and its fix
    if packs(model, examples):
        specific = ("; forward packs its input (pack_padded_sequence) with lengths it computes itself, which torch.onnx "
                    "cannot trace: take them as forward's second argument, forward(x, lengths), and edgeseq exports "
                    "the model with a lengths input")
    elif _is_torchscript(model) and any(getattr(m, "original_name", "") == "MultiheadAttention"
                                        for m in model.modules()):
        specific = ("; a TorchScript file's nn.MultiheadAttention is compiled code that torch.onnx cannot export: "
                    "export the Python model instead (path/to/file.py:factory --weights weights.pt), where edgeseq "
                    "traces an exportable attention")
    missing_op = next((m for a in attempts if (m := _UNSUPPORTED_OP.search(a))), None)
    if missing_op and not specific:  # the cause; a frozen length from the other exporter is its side effect
        op, version = missing_op.group(1), missing_op.group(2)
        raise UnsupportedModelError(
            f"refused: PyTorch's ONNX export has no form for operator {op!r} at opset {version}, which the model "
            f"uses; rewrite that step with operators ONNX has, or try another --opset"
            f"{' (the dynamo exporter got past it but froze the sequence length)' if frozen else ''} "
            f"[{' | '.join(attempts)}]")
    if frozen and not specific:
        raise ExportError(
            f"refused: the sequence length is frozen or unrolled in the exported graph (exported at length "
            f"{spec.example_length}; other lengths fail or give wrong numbers)."
            f"{_cell_hint(model, exporter, _script_outcome(scripted, attempts))} [{' | '.join(attempts)}]"
        )
    hint = specific or (hints[0] if hints and len(hints) == len(attempts) and all(hints) else "")
    raise ExportError("no exporter produced a correct file: " + " | ".join(attempts) + hint)


_FLOAT64 = ("Double", "double", "float64", "get_mkldnn_dtype")


def _float64_made_in_forward(first: str) -> bool:
    """Whether PyTorch's error reads like float64 tensors meeting float32 ones: "Double and Float",
    "float != double", "get_mkldnn_dtype: unsupported data type" (a float64 h0 in an LSTM on the CPU)."""
    return any(word in first for word in _FLOAT64) and ("Float" in first or "float" in first or "mkldnn" in first)


def _example_failure(exc: BaseException, model: Any, spec: InputSpec, examples: list[Any]) -> ExportError:
    """The error for a model that fails on its example input, with the likely fix."""
    first = str(exc).splitlines()[0][:200] if str(exc).strip() else ""
    if _float64_made_in_forward(first):
        return ExportError(f"the model fails in float32: {type(exc).__name__}: {first}. Its forward builds float64 "
                           "tensors itself (dtype=torch.double), while edgeseq runs and exports models in float32: "
                           "create them with the input's dtype (torch.zeros(..., dtype=x.dtype) or x.new_zeros(...))")
    traced = (" (a TorchScript file traced at one length may run at that length only: save it with "
              "torch.jit.script, or export the Python model)") if _is_torchscript(model) else ""
    fixed = state_batch(first)
    if fixed is not None:  # an initial state built at one batch size in forward: no example shape will fix it
        return fixed_batch_refusal(fixed[1], fixed[0], first)
    if isinstance(exc, TypeError) and "positional argument" in first:  # forward(x, meta) given one input
        return ExportError(f"the model fails on its example input {[tuple(e.shape) for e in examples]}: "
                           f"{type(exc).__name__}: {first}; --input-shape describes one input: give the model an "
                           "example_inputs() method returning one example tensor per forward argument")
    hint = _shape_hint(spec)
    channels = frame_channels(model) if len(spec.inputs) == 1 else None
    features = features_forward_expects(first, spec.inputs[0].shape) if len(spec.inputs) == 1 else []
    if channels is not None:  # frames or spectrograms for a Conv2d, of a size edgeseq did not guess
        hint = conv2d_hint(channels)
    elif features:  # the first recurrent layer got another size; forward may add features (a time index, lags)
        dims = _shape_hint(spec).split(" ", 1)[0].split(",")
        hint = ",".join([*dims[:-1], str(features[0])])
        sizes = rnn_input_sizes(first)
        if sizes and spec.inputs[0].shape[-1] != sizes[1]:
            hint += " (forward adds or drops features before its first recurrent layer)"
    wanted = re.search(r"not enough values to unpack \(expected (\d+), got (\d+)\)", first)
    if wanted and int(wanted.group(2)) == len(spec.inputs[0].shape):  # forward unpacks more axes than given
        parts = ["BATCH", "LENGTH", *(f"D{k}" for k in range(1, int(wanted.group(1)) - 1))]
        hint += f" (forward unpacks {wanted.group(1)} axes from the input: give that many, e.g. {','.join(parts)})"
    return ExportError(f"the model fails on its example input {[tuple(e.shape) for e in examples]}: "
                       f"{type(exc).__name__}: {first}; pass --input-shape {hint}{traced}")


def _complete_card(card: dict[str, Any], proto: Any, model: Any, spec: InputSpec, outputs: list[str],
                   loops: str | None, say: Callable[[str], None]) -> dict[int, dict[str, int | None]] | None:
    """Add what the export learned to ``card`` (loops over time, output axes; their names go into ``proto``'s
    outputs too) and say what the user should know; returns the output axes by position."""
    if loops == "scripted" and not any(n.op_type == "Loop" for n in proto.graph.node):
        # scripted for another reason than a loop: a shape used as a number (len(out), x.size(1) in arithmetic)
        card["loops"] = {"layers": [], "why": "forward uses the sequence length as a number: exported scripted"}
        say("note: forward uses the sequence length as a Python number (len(x), x.size(1) in arithmetic), which "
            "tracing fixes at the example's; exported it scripted (torch.jit.script), where it stays the input's")
    elif loops == "scripted":
        card["loops"] = {"layers": cell_names(model) or ["forward"],
                         "why": "forward steps through time in a Python loop: exported scripted, as an ONNX Loop"}
        say(f"note: forward loops over time in Python{cells_phrase(model)}; exported it scripted "
            "(torch.jit.script) as an ONNX Loop over the input's length")
        if loop_writes_carried_tensor(proto):
            say("note: forward writes into a preallocated tensor inside its loop (outputs[t] = y): ONNX Runtime "
                "copies that whole tensor at every step, so time grows with the square of the length; appending "
                "each step to a list and torch.stack(...) after the loop avoids it")
    elif loops == "projected":
        card["loops"] = {"layers": projected_lstm_names(model),
                         "why": "nn.LSTM(proj_size>0): ONNX's LSTM operator has no projection"}
    axes = _output_axes_or_none(model, spec)
    for i, a in (axes or {}).items():
        if "drops_axes_at_batch_1" in a:
            one, two = a["drops_axes_at_batch_1"]
            raise UnsupportedModelError(
                f"refused: output {outputs[i]!r} loses an axis when the batch is 1 (shape {one} at batch 1, {two} at "
                f"batch 2): a bare .squeeze() in forward drops the batch axis too, so a batch of one comes back "
                f"without it; squeeze by position instead, e.g. .squeeze(-1)")
    for i in merged_axes(axes or {}):
        say(f"warning: {merged_axes_message(outputs[i])}; Session.predict reads its first axis as samples")
    if axes:
        name_output_dims(proto, outputs, axes, spec.inputs[0])
        card["output_axes"] = {n: card_axes(axes[i]) for i, n in enumerate(outputs) if i in axes}
    return axes


def _check_own_lengths(proto: Any, folder: Path, model: Any, spec: InputSpec, outputs: list[str],
                       axes: dict[int, dict[str, int | None]] | None, atol: float | None, rtol: float | None,
                       say: Callable[[str], None]) -> str | None:
    """The file (``proto``) on a padded batch with lengths vs ``model(x, lengths)``: None, or what differs."""
    import onnx

    from ..tolerances import tolerance_for
    from .packed import verify_packed

    path = folder / "own-lengths.onnx"
    onnx.save(proto, str(path))
    tol = tolerance_for("float32").overridden(atol, rtol)
    named = {n: (axes or {}).get(i, {"batch_axis": 0, "seq_axis": None}) for i, n in enumerate(outputs)}
    say("checking the lengths input against forward(x, lengths) (a padded batch, lengths 12, 11, 6, 1) ...")
    report = verify_packed(path, model, spec, named, tol=tol)
    if report.passed:
        return None
    worst = report.worst
    return (f"differs from forward(x, lengths) on a padded batch: output {worst.output!r}, {worst.note} (max abs "
            f"error {worst.max_abs:.3g})")


def _measure_cleaned(proto: Any, cleaned: Any, by: str | None, candidate: Path, model: Any, spec: InputSpec,
                     lengths: list[int], say: Callable[[str], None], atol: float | None = None,
                     rtol: float | None = None) -> tuple[parity.ParityReport, Any, str | None]:
    """Parity of the cleaned graph, and (report, graph, cleanup) of the graph to keep: the cleaned one
    unless it fails where the graph as exported (``candidate`` on disk) passes."""
    import onnx

    def measure(path: Path) -> parity.ParityReport:
        return parity.measure(path, model, spec, batch_sizes=(1, 3), lengths=lengths, atol=atol, rtol=rtol, device="cpu")

    if not by:
        return measure(candidate), proto, None
    clean_path = candidate.with_name(candidate.stem + ".clean.onnx")
    onnx.save(cleaned, str(clean_path))
    try:
        report = measure(clean_path)
    except EdgeseqError as exc:  # e.g. ONNX Runtime cannot load the cleaned graph: keep the graph as exported
        say(f"  the graph cleaned by {by} failed to run ({str(exc)[:160]}); keeping it as exported")
        return measure(candidate), proto, None
    if report.passed:
        return report, cleaned, by
    raw = measure(candidate)
    if raw.passed:
        say(f"  the graph cleaned by {by} fails parity where the graph as exported passes; keeping it as exported")
    return raw, proto, None


def build_card(spec: InputSpec, outputs: list[str], exporter: str, opset: int, source: str,
               report: parity.ParityReport | None, time_first: bool) -> dict[str, Any]:
    import onnx
    import onnxruntime
    import torch

    from .. import __version__

    return {
        "inputs": spec.to_card(),
        "outputs": outputs,
        "layout": "time_first" if time_first else "batch_first",
        "features": spec.inputs[0].features,
        "example_length": spec.example_length,
        "exporter": exporter,
        "opset": opset,
        "precision": "float32",
        "source": str(source),
        "versions": {
            "edgeseq": __version__, "torch": torch.__version__.split("+")[0], "onnx": onnx.__version__,
            "onnxruntime": onnxruntime.__version__,
        },
        "parity": report.summary() if report else {"passed": None, "note": "skipped (--no-check)"},
        "exported_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


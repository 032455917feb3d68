"""The ``lengths`` input: padded batches whose padding never changes a result.

Graph surgery on an exported file adds an int64 ``lengths`` [batch] input that feeds every recurrent
node's ``sequence_lens`` (so padded steps never touch the state, and the reverse direction starts at
each sample's last valid step) and makes each node's per-step output hold the last valid step from
there on (``Y[t] = Y[min(t, len - 1)]``), so models reading ``out[:, -1]`` read the last valid step.
:func:`verify_lengths` then proves it: a padded batch against each sample alone, unpadded, in PyTorch.

>>> add_lengths_input(proto)        # doctest: +SKIP
2
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ExportError, InputError, UnsupportedModelError, require
from ..inputs import InputSpec
from ..tolerances import Tolerance, tolerance_for
from . import parity

LENGTHS_INPUT = "lengths"
RECURRENT_NODE_OPS = ("LSTM", "GRU", "RNN")
LENGTHS_CHECK_LENGTH = 13
# layers that look across time steps; named in refusals when padding or stepping changes the result
TIME_MIXING = ("Conv1d", "Conv2d", "ConvTranspose1d", "MaxPool1d", "AvgPool1d", "AdaptiveAvgPool1d", "MaxPool2d", "AvgPool2d",
               "AdaptiveMaxPool1d", "MultiheadAttention", "TransformerEncoderLayer", "BatchNorm1d")


def layer_kind(module: Any) -> str:
    """The ``torch.nn`` class a layer is, by name: a parametrized layer (``weight_norm`` makes a
    ``ParametrizedConv1d``) counts as the class it wraps."""
    for cls in type(module).__mro__:
        if cls.__module__.startswith("torch.nn.") and not cls.__module__.startswith("torch.nn.utils"):
            return cls.__name__
    return type(module).__name__


def time_mixing_layers(model: Any) -> list[str]:
    """Names of layers that mix time steps outside the recurrent layers (e.g. a Conv1d front-end)."""
    return [f"'{n}' ({layer_kind(m)})" for n, m in model.named_modules() if layer_kind(m) in TIME_MIXING]


def resolution_layers(model: Any) -> str:
    """`` ('pool' (MaxPool1d) change the time resolution)``, naming the layers that may, or '' when none."""
    mixing = time_mixing_layers(model)
    return f" ({', '.join(mixing[:3])} change the time resolution)" if mixing else ""


def add_lengths_input(proto: Any, name: str = LENGTHS_INPUT, data_input: str | None = None,
                      batch_axis: int = 0, reuse: bool = False) -> int:
    """Add an int64 ``name`` [batch] input wired into every recurrent node; return how many nodes it feeds.

    ``sequence_lens`` makes padded steps leave the state alone; each node's per-step output ``Y`` is
    replaced by one that repeats the last valid step over the padding.
    """
    onnx = require("onnx", "export")
    from onnx import TensorProto, helper, numpy_helper

    graph = proto.graph
    nodes = [n for n in graph.node if n.op_type in RECURRENT_NODE_OPS and n.domain in ("", "ai.onnx")]
    if not nodes:
        raise UnsupportedModelError("refused --lengths: the graph has no native LSTM/GRU/RNN node to feed lengths to")
    if any(len(n.input) > 4 and n.input[4] for n in nodes):
        raise ExportError("refused --lengths: the graph's recurrent nodes already take sequence lengths")
    existing = any(i.name == name for i in graph.input)  # ``reuse``: an input the exported graph already reads
    if existing and not reuse:
        raise ExportError(f"refused --lengths: the graph already has an input named {name!r}")
    first = next(i for i in graph.input if data_input in (None, i.name))
    dims = first.type.tensor_type.shape.dim
    batch_dim = (dims[batch_axis].dim_param if batch_axis < len(dims) else "") or "batch"
    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 17)
    consumed = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}

    prefix = "edgeseq_lengths/"
    const = {"zero": np.array(0, np.int64), "one": np.array(1, np.int64)}
    for key, value in const.items():
        graph.initializer.append(numpy_helper.from_array(value, prefix + key))

    def unsqueeze(inp: str, out: str, axes: list[int]) -> Any:
        if opset >= 13:
            axes_name = f"{out}_axes"
            graph.initializer.append(numpy_helper.from_array(np.array(axes, np.int64), axes_name))
            return helper.make_node("Unsqueeze", [inp, axes_name], [out])
        return helper.make_node("Unsqueeze", [inp], [out], axes=axes)

    lens32, last = prefix + "lens_int32", prefix + "last_index"
    new_nodes = [
        helper.make_node("Cast", [name], [lens32], to=TensorProto.INT32),
        helper.make_node("Sub", [name, prefix + "one"], [last]),
    ]
    for k, node in enumerate(graph.node):
        if node not in nodes:
            new_nodes.append(node)
            continue
        while len(node.input) < 5:
            node.input.append("")
        node.input[4] = lens32
        new_nodes.append(node)
        y = node.output[0] if node.output else ""
        if not y or y not in consumed:
            continue
        # Y is [seq, dirs, batch, hidden] (layout 0) or [batch, seq, dirs, hidden] (layout 1)
        layout = next((a.i for a in node.attribute if a.name == "layout"), 0)
        t_axis, t_unsq, b_unsq = (1, [0, 2, 3], [1, 2, 3]) if layout == 1 else (0, [1, 2, 3], [0, 1, 3])
        p = f"{prefix}{k}/"
        raw = p + "Y_all"
        node.output[0] = raw
        new_nodes += [
            helper.make_node("Shape", [raw], [p + "shape"]),
            helper.make_node("Gather", [p + "shape", p + "t_axis"], [p + "steps"], axis=0),
            helper.make_node("Range", [prefix + "zero", p + "steps", prefix + "one"], [p + "t"]),
            unsqueeze(p + "t", p + "t4", t_unsq),
            unsqueeze(last, p + "last4", b_unsq),
            helper.make_node("Min", [p + "t4", p + "last4"], [p + "index"]),
            helper.make_node("Expand", [p + "index", p + "shape"], [p + "index_full"]),
            helper.make_node("GatherElements", [raw, p + "index_full"], [y], axis=t_axis),
        ]
        graph.initializer.append(numpy_helper.from_array(np.array(t_axis, np.int64), p + "t_axis"))
    del graph.node[:]
    graph.node.extend(new_nodes)
    if not existing:
        graph.input.append(helper.make_tensor_value_info(name, TensorProto.INT64, [batch_dim]))
    onnx.checker.check_model(proto)
    return len(nodes)


def sample_of_others(spec: InputSpec, arrays: list[np.ndarray], i: int) -> list[np.ndarray]:
    """Sample ``i`` of each input after the sequence (``forward(x, meta)``'s ``meta``), its batch axis kept."""
    return [np.take(a, [i], axis=info.batch_axis) if info.batch_axis is not None else a
            for a, info in zip(arrays[1:], spec.inputs[1:])]


def verify_lengths(path: str | Path, model: Any, spec: InputSpec, axes: dict[str, dict[str, int | None]],
                   length: int = LENGTHS_CHECK_LENGTH, tol: Tolerance | None = None, seed: int = 0
                   ) -> parity.ParityReport:
    """A zero-padded batch with lengths vs each sample alone, unpadded, in PyTorch.

    Zeros, as ``Session.predict`` pads and as the lengths contract says: a text model that masks its
    pooling with ``x != 0`` (padding id 0) is exact, and one that reads the padding still differs."""
    import torch

    from ..runtime.session import Session

    tol = tol or tolerance_for("float32")
    info = spec.inputs[0]
    sa = info.seq_axis if info.seq_axis is not None else 1
    ba = info.batch_axis if info.batch_axis is not None else 0
    lengths = np.array([length, 1, max(2, length // 2), length - 1], np.int64)
    arrays = spec.random(len(lengths), length, seed=seed)  # the sequence, then any per-sample inputs (forward(x, meta))
    x = arrays[0].copy()
    steps = np.arange(x.shape[sa]).reshape([-1 if a == sa else 1 for a in range(x.ndim)])
    per_sample = lengths.reshape([-1 if a == ba else 1 for a in range(x.ndim)])
    x[np.broadcast_to(steps >= per_sample, x.shape)] = 0  # the padding
    arrays = [x, *arrays[1:]]
    session = Session(path, device="cpu", threads=1, allow_nonfinite=True)
    names = [o.name for o in session.outputs if o.name not in set(session.card.get("state_outputs", []))]
    try:
        got = session.run({**dict(zip(spec.names, arrays)), session.card["lengths_input"]: lengths})
    except InputError as exc:
        if "sequence_lens" not in str(exc):
            raise
        raise UnsupportedModelError(
            f"refused --lengths: the recurrent layer gets fewer steps than the input has{resolution_layers(model)}, "
            "so a sample's length in input steps is not its length there; export without --lengths") from None
    for n in names:  # a per-step output with fewer steps than the input: pooled or strided over time
        o_sa = axes[n]["seq_axis"]
        if o_sa is not None and got[n].shape[o_sa] != length:
            raise UnsupportedModelError(
                f"refused --lengths: output {n!r} has {got[n].shape[o_sa]} steps for {length} input steps"
                f"{resolution_layers(model)}, so a sample's length does not say which of its steps are padding; "
                "export without --lengths")
    cases: list[parity.ParityCase] = []
    for i, n_steps in enumerate(lengths):
        sample = np.take(np.take(x, [i], axis=ba), range(int(n_steps)), axis=sa)
        others = sample_of_others(spec, arrays, i)
        with torch.inference_mode():
            tensors = [torch.from_numpy(np.ascontiguousarray(a)) for a in (sample, *others)]
            ref = [t.numpy() for t in parity.flatten_outputs(model(*tensors))]
        for j, n in enumerate(names):
            o_ba, o_sa = axes[n]["batch_axis"], axes[n]["seq_axis"]
            mine = np.take(got[n], [i], axis=o_ba) if o_ba is not None else got[n]
            if o_sa is not None:
                mine = np.take(mine, range(int(n_steps)), axis=o_sa)
            max_abs, max_rel, sqnr, ok, note = parity.compare(mine, ref[j], tol)
            cases.append(parity.ParityCase(len(lengths), int(n_steps), n, max_abs, max_rel, sqnr, ok,
                                           note=note or ("" if ok else f"sample {i} (length {n_steps} of {length})")))
    return parity.ParityReport(cases, tol.atol, tol.rtol, "float32", extra={"check": "lengths"})


def check_lengths_layers(model: Any) -> None:
    import torch.nn as nn

    for name, module in model.named_modules():
        if isinstance(module, (nn.LSTMCell, nn.GRUCell, nn.RNNCell)):
            raise UnsupportedModelError(f"refused --lengths: layer '{name}' is a {type(module).__name__} stepped in "
                                        "Python; lengths need nn.LSTM/nn.GRU over the whole sequence")


def lengths_refusal(report: parity.ParityReport, model: Any) -> UnsupportedModelError:
    worst = report.worst
    mixing = time_mixing_layers(model)
    hint = f" (layers that look across time steps: {', '.join(mixing[:4])})" if mixing else ""
    return UnsupportedModelError(
        f"refused --lengths: padded steps still change output {worst.output!r} for {worst.note} (max abs error "
        f"{worst.max_abs:.3g}): the model reads the padding outside its recurrent layers{hint}. Export without "
        "--lengths; Session.predict(x, lengths=...) then runs each length group unpadded"
    )
